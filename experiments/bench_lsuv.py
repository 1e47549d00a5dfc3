"""Benchmark jaxinit.lsuv against one jitted forward pass and against PyTorch's ``lsuv`` package.

Models: the 50 x 512 ReLU MLP on a batch of 256 N(0, 1) vectors, unrolled (``mlp``) and with
layers 2-50 as one ``nn.scan`` (``mlp_scan``, ``models.MLP(scan=True)``), and fastai's
init-article convnet on a batch of 64 images 128 x 128 x 3 (N(0, 1) pixels). For each:

- first call: trace + compile + run of ``jaxinit.lsuv`` (the cost a user pays once);
- compile: first call minus the steady-state LSUV time;
- LSUV and forward (the jitted ``module.apply`` on the same batch): ``--repeats`` calls of each
  after compilation, interleaved (LSUV, forward, LSUV, forward, ...); then the same for LSUV in
  place and the forward; each column is the median of its calls;
- ratio: LSUV / forward, i.e. how many forward passes the pass costs: the median over the
  pairs of one LSUV call and the forward call right after it. On a shared machine whose speed
  drifts (a virtual machine whose host takes CPU time, reported as ``steal``), both calls of a
  pair run at the same speed, so the ratio does not depend on when each column was timed (the
  JSON's ``ratio_range`` bounds it: fastest LSUV / slowest forward, slowest LSUV / fastest
  forward);
- in place / forward: the same ratio for ``lsuv(..., donate=True)``, which writes the result
  into the given parameters' buffers, as PyTorch's ``lsuv`` rescales its model in place (each
  call gets a copy of the parameters, made untimed). The rest of LSUV / forward is the cost of
  writing the result into fresh memory;
- faults: the median count of minor page faults per LSUV call, into new arrays / in place (each
  a 4 KiB page of fresh memory touched for the first time; from ``getrusage``). The two modes
  are timed in separate loops because an in-place call's freed result, between two calls into
  new arrays, lets the allocator return those pages to the OS;
- steal: the share of the CPU time the hypervisor took from this machine while the LSUV and
  forward calls ran (from ``/proc/stat``; absent where the kernel does not report it);
- PyTorch: ``lsuv.lsuv_with_singlebatch`` (package defaults: orthonormal pre-init, std_tol 0.1, 10
  attempts; verbose off) on the same architecture, one call on a fresh model, and the median
  PyTorch forward time. PyTorch runs in its own environment (``torch==2.13.0``,
  ``lsuv==0.3.0``), named by ``--torch-python`` or ``JAXINIT_TORCH_PYTHON``; without one the
  column is skipped with a message;
- ``--breakdown``: where LSUV's time goes (forward; + per-layer reduction; + output scaling;
  full LSUV, which also writes the rescaled parameters).
- ``--profile``: a ``jax.profiler`` trace of the compiled LSUV program and of the forward,
  read back with ``jax.profiler.ProfileData``: milliseconds per call for each kind of XLA
  operation (matmul/conv, reductions, output scaling, parameter writes, scalar work) and for
  the Python side.

Prints a table and one JSON line (``{"bench": "lsuv", ...}``). ``--quick`` runs small versions
(for CI). Usage: ``python experiments/bench_lsuv.py [--quick] [--repeats N] [--no-torch]
[--torch-python PATH] [--breakdown] [--profile]``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import jaxinit
from jaxinit import models


def header(bench: str, quick: bool) -> dict[str, Any]:
    """The fields every benchmark's JSON line starts with: which benchmark, and on what."""
    dev = jax.devices()[0]
    return {
        "bench": bench,
        "quick": quick,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "jax": jax.__version__,
        "machine": platform.machine(),
    }


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` (each waited for); the other
    benchmarks time their steady calls with it."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _minor_faults() -> int | None:
    """This process's minor page faults so far (each a page of fresh memory touched for the
    first time); None where ``resource`` is not available."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _interleaved_times(
    fns: list[Callable[[], Any]], repeats: int
) -> tuple[list[list[float]], list[list[int]]]:
    """``repeats`` timed calls of each function, interleaved: a, b, c, a, b, c, ...; and the
    minor page faults of each call (empty lists where they are not counted)."""
    times: list[list[float]] = [[] for _ in fns]
    faults: list[list[int]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out, flt in zip(fns, times, faults, strict=True):
            f = _minor_faults()
            t = time.perf_counter()
            jax.block_until_ready(fn())
            out.append(time.perf_counter() - t)
            g = _minor_faults()
            if f is not None and g is not None:
                flt.append(g - f)
    return times, faults


def _cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) CPU time of this machine since boot, from ``/proc/stat``; None where
    it is not reported."""
    try:
        fields = pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    counts = [int(f) for f in fields[:8]]
    return (counts[7], sum(counts)) if len(counts) == 8 else None


def _configs(quick: bool) -> dict[str, dict[str, Any]]:
    if quick:
        mlp = dict(depth=8, width=128, batch=64)
        return {"mlp": mlp, "mlp_scan": dict(mlp, scan=True), "convnet": dict(batch=8, size=32)}
    mlp = dict(depth=50, width=512, batch=256)
    return {"mlp": mlp, "mlp_scan": dict(mlp, scan=True), "convnet": dict(batch=64, size=128)}


def _jax_model(name: str, cfg: dict[str, Any]):
    key = jax.random.key(0)
    if name.startswith("mlp"):
        module = models.MLP(depth=cfg["depth"], width=cfg["width"], scan=cfg.get("scan", False))
        x = jax.random.normal(jax.random.key(1), (cfg["batch"], cfg["width"]))
    else:
        module = models.ConvNet()
        x = jax.random.normal(jax.random.key(1), (cfg["batch"], cfg["size"], cfg["size"], 3))
    variables = jax.jit(module.init)(key, x)
    return module, variables, x


def bench_jax(name: str, cfg: dict[str, Any], repeats: int) -> dict[str, Any]:
    module, variables, x = _jax_model(name, cfg)
    jax.block_until_ready(variables)
    t = time.perf_counter()
    new, report = jaxinit.lsuv(module, variables, x)
    jax.block_until_ready(new)
    first = time.perf_counter() - t
    forward = jax.jit(module.apply)
    jax.block_until_ready(forward(variables, x))
    # In place (donate=True): each call consumes a copy of the parameters, made untimed.
    copies = [jax.tree.map(jnp.copy, variables) for _ in range(repeats + 1)]
    jax.block_until_ready(jaxinit.lsuv(module, copies.pop(), x, donate=True))
    jiffies = _cpu_jiffies()
    # Each mode is paired with the forward in its own loop: freeing an in-place call's
    # result between two calls into new arrays lets the allocator hand those pages back to
    # the OS, and the next call faults them in again (see "faults" in the JSON).
    (lsuv_times, fwd_times), (lsuv_faults, _) = _interleaved_times(
        [lambda: jaxinit.lsuv(module, variables, x), lambda: forward(variables, x)], repeats
    )
    (donated_times, fwd2_times), (donated_faults, _) = _interleaved_times(
        [lambda: jaxinit.lsuv(module, copies.pop(), x, donate=True), lambda: forward(variables, x)],
        repeats,
    )
    after = _cpu_jiffies()
    steady = statistics.median(lsuv_times)
    out = {
        "layers": len(report.paths),
        "all_converged": report.all_converged,
        "first_call_s": first,
        "compile_s": max(first - steady, 0.0),
        "lsuv_s": steady,
        "forward_s": statistics.median(fwd_times + fwd2_times),
        "ratio": statistics.median(a / b for a, b in zip(lsuv_times, fwd_times, strict=True)),
        "ratio_range": [min(lsuv_times) / max(fwd_times), max(lsuv_times) / min(fwd_times)],
        "donated_s": statistics.median(donated_times),
        "donated_ratio": statistics.median(
            a / b for a, b in zip(donated_times, fwd2_times, strict=True)
        ),
    }
    if lsuv_faults and donated_faults:
        out["faults"] = {
            "lsuv": statistics.median(lsuv_faults),
            "donated": statistics.median(donated_faults),
        }
    if jiffies is not None and after is not None and after[1] > jiffies[1]:
        out["steal"] = (after[0] - jiffies[0]) / (after[1] - jiffies[1])
    return out


_TORCH_HELP = (
    "PyTorch runs in its own environment: python -m venv torch-env && torch-env/bin/pip "
    "install torch==2.13.0 lsuv==0.3.0, then pass --torch-python torch-env/bin/python (or set "
    "JAXINIT_TORCH_PYTHON)"
)


def bench_torch(
    name: str, cfg: dict[str, Any], repeats: int, python: str | None
) -> dict[str, Any] | str:
    """PyTorch's ``lsuv`` on the same model, in the interpreter ``python`` (its own
    environment; see ``_torch_lsuv.py``)."""
    if not python:
        return f"skipped: {_TORCH_HELP}"
    worker = pathlib.Path(__file__).with_name("_torch_lsuv.py")
    spec = json.dumps({"model": name, "repeats": repeats, **cfg})
    done = subprocess.run([python, str(worker), spec], capture_output=True, text=True)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def breakdown(name: str, cfg: dict[str, Any], repeats: int) -> dict[str, float]:
    """Where LSUV's time goes, by programs that each add one part of its work to the
    jitted forward pass: the per-layer mean/std reduction, then the scaling of each output
    (LSUV without writing parameters), then the full pass (which also writes every rescaled
    kernel and bias, and builds the report)."""
    module, variables, x = _jax_model(name, cfg)

    def reduce_only(v, x):
        def hook(path, y):
            m, s = jnp.mean(y), jnp.std(y)
            return y + 0 * (m + s)  # keeps the reduction, whose result the output depends on

        return jaxinit.probe.apply_with_hook(module, v, x, hook)

    def reduce_and_scale(v, x):
        return jaxinit.probe.apply_with_hook(module, v, x, lambda path, y: y / jnp.std(y))

    write = jax.jit(lambda v: jaxinit.tree.scale(v, "**", 1.001))
    write_donated = jax.jit(lambda v: jaxinit.tree.scale(v, "**", 1.001), donate_argnums=0)
    forward, reduced, scaled = (jax.jit(f) for f in (module.apply, reduce_only, reduce_and_scale))
    programs = {
        "forward": lambda v: forward(v, x),
        "forward + reduce": lambda v: reduced(v, x),
        "forward + reduce + scale output": lambda v: scaled(v, x),
        "rescale every parameter": write,
        "rescale every parameter, donated": write_donated,
        "LSUV": lambda v: jaxinit.lsuv(module, v, x),
        "LSUV, donated": lambda v: jaxinit.lsuv(module, v, x, donate=True),
    }
    out = {}
    for label, fn in programs.items():
        donated = "donated" in label
        # a donated call consumes its argument: each call gets its own copy, made untimed
        copies = [jax.tree.map(jnp.copy, variables) for _ in range(repeats + 1 if donated else 1)]
        jax.block_until_ready(fn(copies.pop() if donated else copies[0]))
        times = []
        for _ in range(repeats):
            arg = copies.pop() if donated else copies[0]
            jax.block_until_ready(arg)
            t = time.perf_counter()
            jax.block_until_ready(fn(arg))
            times.append(time.perf_counter() - t)
        out[label] = statistics.median(times)
    return out


def _op_kind(name: str) -> str | None:
    """The kind of work an XLA:CPU thunk does, from its name in the trace (None: a
    bookkeeping event, such as the executor waiting for its thunks)."""
    if name.startswith(("ThunkExecutor", "end:", "Slinky", "Threadpool", "$", "np.")):
        return None
    if name.startswith(("ynn_fusion", "dot", "convolution", "onednn", "xnn")):
        return "matmul / conv"
    if name.startswith("PjitFunction"):  # the jitted call's Python side (nests the rest)
        return "jit dispatch"
    if name.startswith(("CommonPjRt", "ParseArguments")):
        return None
    return re.sub(r"\.\d+$", "", name)


def profile(name: str, cfg: dict[str, Any], repeats: int) -> dict[str, dict[str, float]]:
    """Milliseconds per call of each kind of operation, from a ``jax.profiler`` trace of
    ``repeats`` calls (after warm-up) of LSUV and of the jitted forward."""
    module, variables, x = _jax_model(name, cfg)
    forward = jax.jit(module.apply)
    programs = {
        "forward": lambda: forward(variables, x),
        "LSUV": lambda: jaxinit.lsuv(module, variables, x)[0],
    }
    out = {}
    for label, fn in programs.items():
        for _ in range(2):
            jax.block_until_ready(fn())
        with tempfile.TemporaryDirectory() as where:
            with jax.profiler.trace(where):
                for _ in range(repeats):
                    jax.block_until_ready(fn())
            (path,) = glob.glob(f"{where}/**/*.xplane.pb", recursive=True)
            data = jax.profiler.ProfileData.from_file(path)
        ms: collections.Counter[str] = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                for event in line.events:
                    kind = _op_kind(event.name)
                    if kind is not None:
                        ms[kind] += event.duration_ns
        out[label] = {k: v / 1e6 / repeats for k, v in ms.most_common()}
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"
    return str(v)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models (for CI)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls (default 15; 5 with --quick)"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument(
        "--torch-python",
        default=os.environ.get("JAXINIT_TORCH_PYTHON"),
        help="the Python of an environment with torch==2.13.0 and lsuv==0.3.0 (default "
        "$JAXINIT_TORCH_PYTHON); without it the PyTorch column is skipped",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the parts of LSUV's work"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also trace LSUV and the forward (jax.profiler)"
    )
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (5 if args.quick else 15)
    if repeats < 5:
        parser.error(f"--repeats={repeats}: use at least 5 (the timings are medians).")
    result: dict[str, Any] = {
        **header("lsuv", args.quick),
        "repeats": repeats,
        "models": {},
    }
    for name, cfg in _configs(args.quick).items():
        entry: dict[str, Any] = {"config": cfg, "jaxinit": bench_jax(name, cfg, repeats)}
        if args.no_torch:
            entry["pytorch"] = "skipped: --no-torch"
        else:
            entry["pytorch"] = bench_torch(name, cfg, repeats, args.torch_python)
        if args.breakdown:
            entry["breakdown_s"] = breakdown(name, cfg, repeats)
        if args.profile:
            entry["profile_ms"] = profile(name, cfg, repeats)
        pt = entry["pytorch"]
        if isinstance(pt, dict):
            entry["first_call_vs_pytorch"] = entry["jaxinit"]["first_call_s"] / pt["lsuv_s"]
        result["models"][name] = entry

    where = f"{result['backend']} ({result['device']})"
    print(
        f"jaxinit.lsuv benchmark on {where}, jax {jax.__version__}, "
        f"median of {repeats} interleaved calls"
    )
    head = [
        "model",
        "first call",
        "compile",
        "LSUV",
        "forward",
        "LSUV/fwd",
        "in place/fwd",
        "faults",
        "steal",
        "PyTorch lsuv",
        "PyTorch fwd",
        "PT LSUV/fwd",
        "first/PT",
    ]
    rows = []
    for name, e in result["models"].items():
        j, pt = e["jaxinit"], e["pytorch"]
        row = [
            name,
            _fmt(j["first_call_s"]),
            _fmt(j["compile_s"]),
            _fmt(j["lsuv_s"]),
            _fmt(j["forward_s"]),
            f"{j['ratio']:.2f}x",
            f"{j['donated_ratio']:.2f}x",
            "{lsuv:.0f} / {donated:.0f}".format(**j["faults"]) if "faults" in j else "-",
            f"{j['steal']:.0%}" if "steal" in j else "-",
        ]
        if isinstance(pt, dict):
            row += [
                _fmt(pt["lsuv_s"]),
                _fmt(pt["forward_s"]),
                f"{pt['ratio']:.0f}x",
                f"{e['first_call_vs_pytorch']:.2f}x",
            ]
        else:
            row += ["-", "-", "-", "-"]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for r in [head, *rows]:
        cells = zip(r, widths, strict=True)
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))
    for name, e in result["models"].items():
        if "breakdown_s" in e:
            base = e["breakdown_s"]["forward"]
            parts = ", ".join(
                f"{label} {_fmt(t)} ({t / base:.2f}x)" for label, t in e["breakdown_s"].items()
            )
            print(f"breakdown {name}: {parts}")
    for name, e in result["models"].items():
        for label, kinds in e.get("profile_ms", {}).items():
            parts = ", ".join(f"{k} {v:.2f}" for k, v in kinds.items() if v >= 0.05)
            print(f"profile {name}, {label} (ms per call): {parts}")
    for name, e in result["models"].items():
        if isinstance(e["pytorch"], str):
            print(f"PyTorch column for {name}: {e['pytorch']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
