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
import platform
import subprocess
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np

import jaxinit
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

    # The compiled programs alone: build each width's program as coord_check does, run it
    # once (compile), then time a second run.
    def shapes(w):
        return jax.eval_shape(MLP(w).init, jax.random.key(0), x)

    keys = jax.random.split(jax.random.key(0), cfg["seeds"])
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
        )
        jax.block_until_ready(program(keys, x, y))
        t = time.perf_counter()
        jax.block_until_ready(program(keys, x, y))
        compiled += time.perf_counter() - t
    return {
        "end_to_end_s": end_to_end,
        "compiled_s": compiled,
        "max_abs_exponent_t3": float(np.nanmax(np.abs(check.exponents()[-1]))),
    }


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
    dev = jax.devices()[0]
    result: dict[str, Any] = {
        "bench": "coord_check",
        "quick": args.quick,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "jax": jax.__version__,
        "machine": platform.machine(),
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
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for r in [head, *rows]:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    for name, e in result["configs"].items():
        if isinstance(e["mup"], str):
            print(f"mup column for {name}: {e['mup']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
