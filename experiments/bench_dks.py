"""Benchmark jaxinit.activation_transform.transform against google-deepmind/dks.

Cases (those of dks's tests, on its ResNet-101-style ``subnet_max_func``: blocks (3, 4, 23, 3),
three maps per residual branch, shortcut weight 0.6, a map on the shortcut of each group's
first block; ``c_slope_1_target=1.2``, ``c_val_0_target=0.75``, ``c_curve_target=0.2``):
TAT softplus, TAT tanh + softplus (the slow ones in dks), and the piecewise-linear cases DKS
relu, DKS leaky_relu, TAT leaky_relu.

For each case:

- jaxinit first call: trace + compile + run of one ``jax.jit`` program returning the
  transforms of the case's activations (float64, ``jax_enable_x64``);
- jaxinit: median of ``--repeats`` calls after compilation (targets passed as arguments, so
  a changed target does not recompile);
- dks: median of ``--dks-repeats`` calls of ``dks.base.activation_transform.
  _get_activations_params`` (what ``get_transformed_activations`` runs), in dks 0.1.2's own
  environment, named by ``--dks-python`` or ``JAXINIT_DKS_PYTHON`` (default
  ``/work/dks-env/bin/python``), run as a subprocess in the same run; without one the column
  is skipped with a message. One warm-up call loads dks's quadrature roots first;
- speedup: dks / jaxinit; max rel diff: the largest relative difference between the two
  parameter sets (|diff| for values below 1e-9, e.g. dks's Leaky ReLU input_shift of 6e-13).

Prints a table and one JSON line (``{"bench": "dks", ...}``). ``--quick`` runs the two
piecewise-linear cases, with
1 dks call and 3 jaxinit calls each (for CI). Usage: ``python experiments/bench_dks.py [--quick]
[--repeats N] [--dks-repeats N] [--no-dks] [--dks-python PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from bench_lsuv import _median_time

CASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("TAT", ("softplus",)),
    ("TAT", ("tanh", "softplus")),
    ("DKS", ("relu",)),
    ("DKS", ("leaky_relu",)),
    ("TAT", ("leaky_relu",)),
)
QUICK_CASES = (("DKS", ("relu",)), ("TAT", ("leaky_relu",)))
DKS_PARAMS = {"c_slope_1_target": 1.2}
TAT_PARAMS = {"c_val_0_target": 0.75, "c_curve_target": 0.2}

# The subnetwork maximizing function, shared (as source) with the dks subprocess; MAX is
# jnp.maximum for jaxinit (traced) and Python's max for dks.
SUBNET_SRC = """
def subnet_max_func(x, r_fn, shortcut_weight=0.6):
    blocks_per_group = (3, 4, 23, 3)
    res_branch_subnetwork_x = r_fn(r_fn(r_fn(x)))
    for i in range(4):
        for j in range(blocks_per_group[i]):
            res_x = r_fn(r_fn(r_fn(x)))
            shortcut_x = r_fn(x) if (j == 0) else x
            x = shortcut_weight**2 * shortcut_x + (1.0 - shortcut_weight**2) * res_x
    x = r_fn(x)
    return MAX(x, res_branch_subnetwork_x)
"""

DKS_SCRIPT = """
import json, statistics, sys, time
import logging
logging.disable(logging.WARNING)
from dks.base import activation_transform as at
MAX = max
{subnet}
cases = json.loads(sys.argv[1]); repeats = int(sys.argv[2])
kw = dict(dks_params={dks}, tat_params={tat}, subnet_max_func=subnet_max_func)
at._get_activations_params(activation_names=("softplus",), method="DKS", **kw)  # load roots
out = []
for method, names in cases:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        p = at._get_activations_params(activation_names=tuple(names), method=method, **kw)
        times.append(time.perf_counter() - t)
    p = {{k: {{kk: float(vv) for kk, vv in v.items()}} for k, v in p.items()}}
    out.append({{"time_s": statistics.median(times), "params": p}})
print(json.dumps(out))
"""


def _subnet_max_func() -> Callable[..., Any]:
    scope: dict[str, Any] = {"MAX": jnp.maximum}
    exec(SUBNET_SRC, scope)  # the same source text dks runs
    return scope["subnet_max_func"]


def run_jaxinit(method: str, names: Sequence[str], repeats: int) -> dict[str, Any]:
    from jaxinit.activation_transform import transform

    subnet = _subnet_max_func()

    @jax.jit
    def solve(c_slope_1, c_val_0, c_curve):
        return {
            n: transform(
                n,
                method,  # type: ignore[arg-type]
                subnet_max_func=subnet,
                dks_params={"c_slope_1_target": c_slope_1},
                tat_params={"c_val_0_target": c_val_0, "c_curve_target": c_curve},
            )
            for n in names
        }

    args = (
        DKS_PARAMS["c_slope_1_target"],
        TAT_PARAMS["c_val_0_target"],
        TAT_PARAMS["c_curve_target"],
    )
    t = time.perf_counter()
    out = jax.block_until_ready(solve(*args))
    first = time.perf_counter() - t
    steady = _median_time(lambda: solve(*args), repeats)
    params = {n: {k: float(v) for k, v in tr.as_dict().items()} for n, tr in out.items()}
    converged = all(bool(tr.converged) for tr in out.values())
    return {"first_s": first, "time_s": steady, "params": params, "converged": converged}


def run_dks(
    python: str, cases: Sequence[tuple[str, tuple[str, ...]]], repeats: int
) -> list[dict[str, Any]] | None:
    script = DKS_SCRIPT.format(
        subnet=textwrap.dedent(SUBNET_SRC), dks=repr(DKS_PARAMS), tat=repr(TAT_PARAMS)
    )
    proc = subprocess.run(
        [python, "-c", script, json.dumps([[m, list(n)] for m, n in cases]), str(repeats)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(f"dks run failed ({python}):\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_rel_diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    worst = 0.0
    for name, params in b.items():
        for k, v in params.items():
            d = abs(a[name][k] - v)
            worst = max(worst, d if abs(v) < 1e-9 else d / abs(v))
    return worst


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="Benchmark jaxinit's DKS/TAT solver against dks.")
    ap.add_argument("--quick", action="store_true", help="two cheap cases, one repeat")
    ap.add_argument("--repeats", type=int, default=None, help="jaxinit calls per case")
    ap.add_argument("--dks-repeats", type=int, default=None, help="dks calls per case")
    ap.add_argument("--no-dks", action="store_true", help="skip the dks column")
    ap.add_argument(
        "--dks-python",
        default=os.environ.get("JAXINIT_DKS_PYTHON", "/work/dks-env/bin/python"),
        help="python of an environment with dks==0.1.2",
    )
    args = ap.parse_args(argv)
    cases = QUICK_CASES if args.quick else CASES
    repeats = args.repeats or (3 if args.quick else 20)
    dks_repeats = args.dks_repeats or (1 if args.quick else 3)

    # A context, not jax.config.update: a caller that runs main() in its own process (the
    # tests) keeps float32 afterwards.
    with jax.enable_x64(True):
        rows = [run_jaxinit(m, n, repeats) for m, n in cases]
    dks_rows: list[dict[str, Any]] | None = None
    if args.no_dks:
        print("dks: skipped (--no-dks)")
    elif not os.path.exists(args.dks_python):
        print(f"dks: skipped ({args.dks_python} not found; set --dks-python)")
    else:
        dks_rows = run_dks(args.dks_python, cases, dks_repeats)

    header = (
        f"{'case':<22}{'jaxinit first (s)':>19}{'jaxinit (ms)':>14}{'dks (ms)':>11}"
        f"{'speedup':>9}{'max rel diff':>14}"
    )
    print(header)
    print("-" * len(header))
    results = []
    for i, ((method, names), row) in enumerate(zip(cases, rows, strict=True)):
        case = f"{method} {'+'.join(names)}"
        entry: dict[str, Any] = {
            "case": case,
            "jaxinit_first_s": row["first_s"],
            "jaxinit_s": row["time_s"],
            "converged": row["converged"],
        }
        dks_ms = speed = diff = "-"
        if dks_rows is not None:
            d = dks_rows[i]
            entry["dks_s"] = d["time_s"]
            entry["speedup"] = d["time_s"] / row["time_s"]
            entry["max_rel_diff"] = max_rel_diff(row["params"], d["params"])
            dks_ms = f"{1e3 * d['time_s']:.1f}"
            speed = f"{entry['speedup']:.0f}x"
            diff = f"{entry['max_rel_diff']:.1e}"
        results.append(entry)
        print(
            f"{case:<22}{row['first_s']:>19.2f}{1e3 * row['time_s']:>14.2f}{dks_ms:>11}"
            f"{speed:>9}{diff:>14}"
        )
    record = {
        "bench": "dks",
        "quick": args.quick,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "cases": results,
    }
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
