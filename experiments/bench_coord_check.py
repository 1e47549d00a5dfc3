"""Benchmark jaxinit.coord_check against microsoft/mup's ``get_coord_data`` on the same MLP.

The model is mup's example MLP (``examples/MLP``): Dense(3072 -> w), ReLU, Dense(w -> w), ReLU,
readout Dense(w -> 10), no biases, LeCun-normal init, zero readout, μP with base width 128.
Widths 2^7..2^11, a batch of 64 N(0, 1) inputs with random labels (the same distribution on
both sides), the mean |x| of every layer at every step. Three configurations:

- ``sgd8``: 8 seeds x 3 steps, SGD lr 0.1;
- ``adam8``: 8 seeds x 3 steps, Adam lr 1e-3;
- ``sgd64``: 64 seeds x 10 steps, SGD lr 0.1.

For each: jaxinit end to end (one ``coord_check`` call: tracing, compiling one program per
width, running), jaxinit's compiled programs alone (the same programs called again), and mup's
``get_coord_data`` end to end (one call; PyTorch has nothing to compile) in PyTorch's own
environment (``torch==2.13.0``; ``mup==1.0.0`` installed with ``--no-deps``, plus ``pandas``),
named by ``--torch-python`` or ``JAXINIT_TORCH_PYTHON``; without one that column is skipped.

Prints a table and one JSON line (``{"bench": "coord_check", ...}``). ``--quick`` runs widths
2^5..2^7 with 2 seeds (for CI). Usage: ``python experiments/bench_coord_check.py [--quick]
[--torch-python PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from bench_lsuv import header

import jaxinit
from jaxinit import _prng
from jaxinit.recipes import coord_check as cc_module
from jaxinit.recipes import mup


class MLP(nn.Module):
    """mup's example MLP, without biases."""

    width: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width, use_bias=False)(x))
        x = nn.relu(nn.Dense(self.width, use_bias=False)(x))
        return nn.Dense(10, use_bias=False)(x)


def _configs(quick: bool) -> dict[str, dict[str, Any]]:
    widths = [2**k for k in (range(5, 8) if quick else range(7, 12))]
    base = dict(widths=widths, base=widths[0], batch=64, d_in=3072)
    seeds = 2 if quick else 8
    return {
        "sgd8": dict(base, optimizer="sgd", lr=0.1, seeds=seeds, steps=3),
        "adam8": dict(base, optimizer="adam", lr=1e-3, seeds=seeds, steps=3),
        "sgd64": dict(base, optimizer="sgd", lr=0.1, seeds=4 if quick else 64, steps=10),
    }


def bench_jax(cfg: dict[str, Any]) -> dict[str, Any]:
    x = jax.random.normal(jax.random.key(1), (cfg["batch"], cfg["d_in"]))
    y = jax.random.randint(jax.random.key(2), (cfg["batch"],), 0, 10)
    common = dict(
        seeds=cfg["seeds"],
        steps=cfg["steps"],
        optimizer=cfg["optimizer"],
        learning_rate=cfg["lr"],
        readout_zero_init=True,
        base_width=cfg["base"],
    )
    t = time.perf_counter()
    check = jaxinit.coord_check(MLP, x, y, widths=cfg["widths"], **common)
    end_to_end = time.perf_counter() - t

    # The compiled programs alone: build and compile each width's program as coord_check
    # does, run it once, then time a second run.
    def shapes(w):
        return jax.eval_shape(MLP(w).init, jax.random.key(0), x)

    keys = jax.random.split(_prng.for_backend(jax.random.key(0)), cfg["seeds"])  # as coord_check
    family = cc_module._Family(MLP, x)
    compiled = 0.0
    for w in cfg["widths"]:
        roles = mup.roles(shapes(cfg["base"]), shapes(cfg["widths"][1]), shapes(w))
        program, _ = family.program(
            w,
            roles,
            "mup",
            cfg["optimizer"],
            cfg["lr"],
            1.0,
            True,
            "abs_mean",
            None,
            cfg["steps"],
            False,
            seed_batch=1 if jax.default_backend() == "cpu" else cfg["seeds"],  # coord_check's
        )
        program = program.lower(keys, x, y).compile(compiler_options=cc_module._compile_options())
        jax.block_until_ready(program(keys, x, y))
        t = time.perf_counter()
        jax.block_until_ready(program(keys, x, y))
        compiled += time.perf_counter() - t
    return {
        "end_to_end_s": end_to_end,
        "compiled_s": compiled,
        "max_abs_exponent_t3": float(np.nanmax(np.abs(check.exponents()[-1]))),
        **bare_floor(cfg),
    }


def _flops(cfg: dict[str, Any]) -> float:
    """Matmul FLOPs of the configuration's training: per width, seed and step a forward (2 B
    fan_in fan_out per layer) and a backward (twice that, less the first layer's input
    gradient)."""
    b, d = cfg["batch"], cfg["d_in"]
    per_step = sum(
        2 * b * (3 * (d * w + w * w + w * 10) - d * w) for w in cfg["widths"]
    )  # fmt: skip
    return float(per_step * cfg["seeds"] * cfg["steps"])


def bare_floor(cfg: dict[str, Any]) -> dict[str, Any]:
    """What XLA itself needs for the configuration's arithmetic on this machine: the same
    three matmuls, ReLUs, loss, backward and SGD/Adam update in plain jax.numpy, on
    parameters drawn outside the program (no Flax, no statistics, no initialization, no
    μP multipliers), ``lax.scan`` over steps, and over seeds either ``vmap`` or ``lax.map``
    (one seed after another), whichever is faster at each width; the compiled programs' time
    summed over widths. An implementation on XLA that does this arithmetic runs no faster,
    so mup's time over this is about the largest speed-up XLA can show against it here. Also
    one 2048^3 matmul's rate, the machine's dense float32 peak as XLA reaches it."""
    import optax

    x = jax.random.normal(jax.random.key(1), (cfg["batch"], cfg["d_in"]))
    y = jax.random.randint(jax.random.key(2), (cfg["batch"],), 0, 10)
    opt = optax.sgd(cfg["lr"]) if cfg["optimizer"] == "sgd" else optax.adam(cfg["lr"])

    def loss(ws):
        h = jax.nn.relu(jax.nn.relu(x @ ws[0]) @ ws[1])
        return optax.softmax_cross_entropy_with_integer_labels(h @ ws[2], y).mean()

    def train(ws):
        def step(carry, _):
            ws, state = carry
            updates, state = opt.update(jax.grad(loss)(ws), state, ws)
            return (optax.apply_updates(ws, updates), state), None

        return jax.lax.scan(step, (ws, opt.init(ws)), None, length=cfg["steps"])[0][0]

    programs = {
        "vmap": jax.jit(jax.vmap(train)),
        "map": jax.jit(lambda ws: jax.lax.map(train, ws)),
    }
    totals = dict.fromkeys(programs, 0.0)
    total = 0.0
    for w in cfg["widths"]:
        shapes = [(cfg["d_in"], w), (w, w), (w, 10)]
        ws = [
            jax.random.normal(jax.random.key(i), (cfg["seeds"], *s)) / np.sqrt(s[0])
            for i, s in enumerate(shapes)
        ]
        best = float("inf")
        for name, program in programs.items():
            jax.block_until_ready(program(ws))
            t = min(_timed(lambda ws=ws, program=program: program(ws)) for _ in range(2))
            totals[name] += t
            best = min(best, t)
        total += best
    a = jax.random.normal(jax.random.key(3), (2048, 2048))
    mm = jax.jit(lambda a: a @ a)
    jax.block_until_ready(mm(a))
    peak = 2 * 2048**3 / min(_timed(lambda: mm(a)) for _ in range(5))
    flops = _flops(cfg)
    return {"floor_s": total, "floor_vmap_s": totals["vmap"], "floor_map_s": totals["map"],
            "gflop": flops / 1e9, "floor_gflops": flops / total / 1e9,
            "matmul_peak_gflops": peak / 1e9}  # fmt: skip


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


_TORCH_HELP = (
    "PyTorch runs in its own environment: python -m venv torch-env && torch-env/bin/pip "
    "install torch==2.13.0 pandas && torch-env/bin/pip install --no-deps mup==1.0.0, then pass "
    "--torch-python torch-env/bin/python (or set JAXINIT_TORCH_PYTHON)"
)


def bench_torch(cfg: dict[str, Any], python: str | None) -> dict[str, Any] | str:
    if not python:
        return f"skipped: {_TORCH_HELP}"
    worker = pathlib.Path(__file__).with_name("_torch_coord_check.py")
    done = subprocess.run([python, str(worker), json.dumps(cfg)], capture_output=True, text=True)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small widths (for CI)")
    parser.add_argument(
        "--torch-python",
        default=os.environ.get("JAXINIT_TORCH_PYTHON"),
        help="the Python of an environment with torch==2.13.0, pandas and mup==1.0.0",
    )
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        **header("coord_check", args.quick),
        "configs": {},
    }
    for name, cfg in _configs(args.quick).items():
        entry = {
            "config": cfg,
            "jaxinit": bench_jax(cfg),
            "mup": bench_torch(cfg, args.torch_python),
        }
        if isinstance(entry["mup"], dict):
            m, j = entry["mup"]["end_to_end_s"], entry["jaxinit"]
            entry["speedup_end_to_end"] = m / j["end_to_end_s"]
            entry["speedup_compiled"] = m / j["compiled_s"]
            entry["speedup_floor"] = m / j["floor_s"]
        result["configs"][name] = entry

    print(
        f"coord check benchmark on {result['backend']} ({result['device']}), jax {jax.__version__}"
    )
    head = [
        "config",
        "widths x seeds x steps",
        "jaxinit end to end",
        "jaxinit compiled",
        "mup",
        "mup / end to end",
        "mup / compiled",
        "XLA floor",
        "mup / floor",
    ]
    rows = []
    for name, e in result["configs"].items():
        c, j, m = e["config"], e["jaxinit"], e["mup"]
        row = [
            name,
            f"{len(c['widths'])} x {c['seeds']} x {c['steps']}",
            f"{j['end_to_end_s']:.2f} s",
            f"{j['compiled_s']:.2f} s",
        ]
        if isinstance(m, dict):
            row += [
                f"{m['end_to_end_s']:.2f} s",
                f"{e['speedup_end_to_end']:.2f}x",
                f"{e['speedup_compiled']:.1f}x",
            ]
        else:
            row += ["-", "-", "-"]
        row.append(f"{j['floor_s']:.2f} s ({j['floor_gflops']:.0f} GFLOP/s)")
        row.append(f"{e['speedup_floor']:.1f}x" if isinstance(m, dict) else "-")
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for r in [head, *rows]:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    peak = max(e["jaxinit"]["matmul_peak_gflops"] for e in result["configs"].values())
    print(
        f"XLA floor: the bare training's compiled programs; one 2048^3 matmul: {peak:.0f} GFLOP/s"
    )
    for name, e in result["configs"].items():
        if isinstance(e["mup"], str):
            print(f"mup column for {name}: {e['mup']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
