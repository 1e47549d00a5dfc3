"""Benchmark jaxinit's random initializers called eagerly, as ``flax`` calls a ``kernel_init``
inside an un-jitted ``model.init``: the first call of a (configuration, shape) compiles its
program, later calls run it.

On CPU a jaxinit initializer draws its random bits from the one-kernel threefry hash of
``jaxinit._prng`` (the same numbers as the key's own draws). In one run, per initializer and
shape, alternating their order:

- **jaxinit**: the initializer called with ``jax.random.key(seed)``;
- **JAX's hash**: the same initializer with the same key data under an implementation jaxinit
  does not rewrap, so its bits come from JAX's own lowering of threefry (a loop of rounds over
  whole arrays on CPU). The two outputs must be equal bit for bit;
- **jax.nn** (the anchor): the ``jax.nn.initializers`` function of the same name, called with
  the same key, as Flax's defaults are. Its laws differ in places (its ``he_normal`` is a
  truncated normal), so its numbers are not compared.

First call: one call on a shape not yet compiled (trace, compile and run). Steady: median of
``--repeats`` later calls. Prints a table (rich) and one JSON line (``{"bench": "init", ...}``).
``--quick`` runs two initializers on small shapes. Usage: ``python experiments/bench_init.py
[--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

if __package__ in (None, ""):  # run from a clone without installing
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench_lsuv import _cpu_jiffies, _median_time, header

import jaxinit
from jaxinit import _prng

# name: (jaxinit initializer, jax.nn.initializers counterpart)
INITS: dict[str, tuple[Callable, Callable]] = {
    "he_normal": (jaxinit.he_normal(), jax.nn.initializers.he_normal()),
    "glorot_uniform": (jaxinit.glorot_uniform(), jax.nn.initializers.glorot_uniform()),
    "lecun_normal": (jaxinit.lecun_normal(), jax.nn.initializers.lecun_normal()),
    "truncated_normal": (
        jaxinit.truncated_normal(0.02),
        jax.nn.initializers.truncated_normal(0.02),
    ),
    "orthogonal": (jaxinit.orthogonal(), jax.nn.initializers.orthogonal()),
}
# A Dense kernel, a 3x3 convolution's, GPT-2's MLP kernel.
SHAPES = ((512, 512), (3, 3, 64, 128), (768, 3072))
QUICK_INITS = ("he_normal", "truncated_normal")
QUICK_SHAPES = ((64, 96), (3, 3, 8, 16))


def _first_and_steady(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    return first, _median_time(fn, repeats), out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="jaxinit's initializers, called eagerly.")
    parser.add_argument("--quick", action="store_true", help="two initializers, small shapes")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: use at least 1.")
    names = QUICK_INITS if args.quick else tuple(INITS)
    shapes = QUICK_SHAPES if args.quick else SHAPES

    key = jax.random.key(0)
    jax_hash_key = jax.random.wrap_key_data(jax.random.key_data(key), impl=_prng.JAX_LOWERING)
    jax.block_until_ready(jaxinit.zeros()(key, (2,)))  # the backend's own start-up, untimed
    start = _cpu_jiffies()
    rows = []
    for i, name in enumerate(names):
        ours, anchor = INITS[name]
        for shape in shapes:
            arms = {
                "jaxinit": lambda o=ours, s=shape: o(key, s),
                "jax_hash": lambda o=ours, s=shape: o(jax_hash_key, s),
                "jax_nn": lambda a=anchor, s=shape: a(key, s),
            }
            order = list(arms) if i % 2 == 0 else list(reversed(arms))
            row: dict[str, Any] = {"init": name, "shape": list(shape)}
            outs = {}
            for arm in order:
                first, steady, outs[arm] = _first_and_steady(arms[arm], args.repeats)
                row[f"{arm}_first_s"], row[f"{arm}_steady_s"] = first, steady
            row["equal_to_jax_hash"] = bool(
                np.array_equal(np.asarray(outs["jaxinit"]), np.asarray(outs["jax_hash"]))
            )
            rows.append(row)
    end = _cpu_jiffies()
    steal = None
    if start is not None and end is not None and end[1] > start[1]:
        steal = (end[0] - start[0]) / (end[1] - start[1])

    totals = {
        arm: {
            "first_s": sum(r[f"{arm}_first_s"] for r in rows),
            "steady_s": sum(r[f"{arm}_steady_s"] for r in rows),
        }
        for arm in ("jaxinit", "jax_hash", "jax_nn")
    }
    result = {
        **header("init", args.quick),
        "repeats": args.repeats,
        "steal": steal,
        "rows": rows,
        "totals": totals,
    }

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Eager initializer calls on {result['backend']} ({result['device']}): first call "
        f"(trace + compile + run) and steady call (median of {args.repeats})"
    )
    cols = ["init", "shape"]
    for arm in ("jaxinit", "JAX's hash", "jax.nn"):
        cols += [f"{arm} first", f"{arm} steady"]
    for col in (*cols, "= JAX's hash"):
        table.add_column(col, justify="right")

    def cells(r: dict[str, Any]) -> list[str]:
        out = []
        for arm in ("jaxinit", "jax_hash", "jax_nn"):
            out += [f"{r[f'{arm}_first_s']:.3f} s", f"{r[f'{arm}_steady_s'] * 1e3:.2f} ms"]
        return out

    for r in rows:
        table.add_row(
            r["init"], "x".join(map(str, r["shape"])), *cells(r), str(r["equal_to_jax_hash"])
        )
    table.add_row(
        "all",
        "",
        *cells({f"{a}_{k}": v for a, t in totals.items() for k, v in t.items()}),
        str(all(r["equal_to_jax_hash"] for r in rows)),
    )
    Console(width=200).print(table)
    if steal is not None:
        print(f"steal: {steal:.1%} of the CPU time during the run")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
