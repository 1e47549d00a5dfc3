"""Benchmark convolutions in loop bodies on XLA:CPU: as JAX traces them against the canonical
axis order that ``jaxinit.coord_check`` and ``jaxinit.layer_stats`` give them.

The program is the coordinate check's on its CNN (``jaxinit coord-check --model cnn``: two
3x3 ``Conv`` of ``width`` channels with ReLU, global mean pool, Dense(10) readout) on 32
scikit-learn digits (8 x 8 x 1): per seed (``lax.map``) the initialization and ``--steps``
SGD steps (``lax.scan``) of the cross-entropy, recording each step's loss and mean |x| of the
second convolution's output. In one run, per width:

- **as traced**: ``jax.jit(train)``. XLA:CPU reorders a convolution into its canonical axis
  order only at a program's top level, so the backward pass's two convolutions inside the loop
  run as a naive loop nest;
- **canonical**: ``jax.jit(jaxinit._conv_layout.canonical_convs(train))``, every convolution
  written in the canonical order with explicit transposes;
- compile (``lower().compile()``) and run (median of ``--repeats`` calls) of each, and the
  largest relative difference between their results.

Prints a table (rich) and one JSON line (``{"bench": "conv_layout", ...}``). ``--quick``
runs widths 16 and 32. Usage: ``python experiments/bench_conv_layout.py [--quick]
[--widths 64,128,256] [--seeds N] [--steps N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

if __package__ in (None, ""):  # run from a clone without installing
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench_lsuv import _median_time, header

import jaxinit
from jaxinit import _conv_layout

FULL = (64, 128, 256)
QUICK = (16, 32)


class CNN(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3), name="conv0")(x))
        h = nn.relu(nn.Conv(self.width, (3, 3), name="conv1")(x))
        return nn.Dense(10, name="head")(h.mean(axis=(1, 2))), jnp.mean(jnp.abs(h))


def _program(width: int, steps: int, lr: float = 0.1):
    model = CNN(width)
    opt = optax.sgd(lr)

    def train(keys, x, y):
        def one_seed(key):
            params = model.init(key, x)

            def loss_fn(p):
                logits, stat = model.apply(p, x)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), stat

            def step(carry, _):
                p, state = carry
                (loss, stat), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
                updates, state = opt.update(g, state, p)
                return (optax.apply_updates(p, updates), state), (loss, stat)

            return jax.lax.scan(step, (params, opt.init(params)), None, length=steps)[1]

        return jax.lax.map(one_seed, keys)

    return train


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Convolutions in loops on XLA:CPU.")
    parser.add_argument("--quick", action="store_true", help="widths 16 and 32")
    parser.add_argument("--widths", default=None, help="comma-separated (default 64,128,256)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    widths = QUICK if args.quick else FULL
    if args.widths:
        try:
            widths = tuple(int(w) for w in args.widths.split(","))
        except ValueError:
            parser.error(f"--widths={args.widths!r}: give comma-separated ints, e.g. 64,128,256")
        if min(widths) < 1:
            parser.error(f"--widths={args.widths!r}: every width must be >= 1")
    for name in ("seeds", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: use at least 1.")

    d = jaxinit.data.digits()
    x = jnp.asarray(d.x[:32].reshape(32, 8, 8, 1), jnp.float32)
    x = (x - x.mean()) / x.std()
    y = jnp.asarray(d.y[:32])
    keys = jax.random.split(jax.random.key(0), args.seeds)

    rows = []
    for w in widths:
        train = _program(w, args.steps)
        row: dict[str, Any] = {"width": w}
        outs = {}
        for name, fn in (("traced", train), ("canonical", _conv_layout.canonical_convs(train))):
            t = time.perf_counter()
            compiled = jax.jit(fn).lower(keys, x, y).compile()
            row[f"{name}_compile_s"] = time.perf_counter() - t
            outs[name] = jax.block_until_ready(compiled(keys, x, y))
            row[f"{name}_run_s"] = _median_time(lambda c=compiled: c(keys, x, y), args.repeats)
        row["max_rel_diff"] = max(
            float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))
            for a, b in zip(
                jax.tree.leaves(outs["canonical"]), jax.tree.leaves(outs["traced"]), strict=True
            )
        )
        row["speedup"] = row["traced_run_s"] / row["canonical_run_s"]
        rows.append(row)

    result = {
        **header("conv_layout", args.quick),
        "seeds": args.seeds,
        "steps": args.steps,
        "repeats": args.repeats,
        "rows": rows,
    }

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"CNN training in lax.map(seeds) x lax.scan(steps), {args.seeds} seeds x "
        f"{args.steps} SGD steps, on {result['backend']} ({result['device']}), median of "
        f"{args.repeats}"
    )
    for col in (
        "width",
        "traced compile",
        "traced run",
        "canonical compile",
        "canonical run",
        "speed-up",
        "max rel. diff",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["width"]),
            f"{r['traced_compile_s']:.2f} s",
            f"{r['traced_run_s']:.3f} s",
            f"{r['canonical_compile_s']:.2f} s",
            f"{r['canonical_run_s']:.3f} s",
            f"{r['speedup']:.1f}x",
            f"{r['max_rel_diff']:.1e}",
        )
    Console().print(table)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
