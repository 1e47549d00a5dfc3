"""Benchmark jaxinit.layer_stats: per-layer statistics of a deep MLP over many seeds.

Model: the 50 x 512 ReLU MLP (He normal kernels, zero biases) on a batch of
256 N(0, 1) vectors; per seed: initialize, run the batch, record each layer's output mean and
std (``grads=False``, the fastai article's measurement; one row adds the gradient std).

The model comes in two forms: ``unrolled`` (50 separate Dense layers: XLA compiles each
layer's random generation separately, and runs independent layers' generation concurrently)
and ``scan`` (``MLP(scan=True)``: layers 2-50 one ``nn.scan``, compiled once). Every
configuration runs in its own subprocess (so its peak resident memory is its own) and reports:

- ``first``: the first call (trace + compile + run), what a user waits for;
- ``run``: the call again with the compiled program cached (``compile`` = first - run); for
  the largest seed count only the first call is made (end to end);
- seeds/s = seeds / run; peak RSS of the subprocess.

Configurations: one ``jax.jit(jax.vmap)`` program chunked with ``jax.lax.map`` (``--chunk``,
default ``"auto"``: cache-sized chunks on CPU) for each form; the scan form with the seed axis
split over ``--devices`` CPU devices (default one per core, via
``--xla_force_host_platform_device_count``), chunk 1, with and without gradients; unchunked
(one vmap over all seeds: memory grows with the seeds); a Python loop over a jitted per-seed
function for each form (``layer_stats(seeds=1)`` per key: structure and program are cached,
so each iteration is one compiled call); PyTorch's per-seed loop (``nn.Linear`` stack,
``kaiming_normal_``, forward hooks recording mean/std) when torch is installed.

The floor: random generation alone (``jax.random.normal`` of one seed's parameters at the
fastest rate measured here: one flat draw, vmapped over keys, or layer by layer) plus the
forward's matmul FLOPs at the float32 matmul peak measured here (a 2048^3 ``jnp.dot``).
``floor x`` = time per seed / floor. Generation and matmuls can overlap on a multi-core CPU,
so the printed overlapped floor (the larger of the two) is the tighter bound. Prints a table
and one JSON line (``{"bench": "sweep", ...}``).

Usage: ``python experiments/bench_sweep.py [--quick] [--seeds 100 1000] [--chunk auto]
[--loop-seeds 50] [--devices N] [--no-torch]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any


def _median(fn, repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call (compilation)."""
    import jax
    from bench_lsuv import _median_time

    jax.block_until_ready(fn())
    return _median_time(fn, repeats)


def _setup(cfg: dict[str, Any]):
    import jax

    import jaxinit
    from jaxinit import models

    model = models.MLP(
        depth=cfg["depth"],
        width=cfg["width"],
        kernel_init=jaxinit.he_normal(),
        scan=cfg.get("scan", False),
    )
    x = jax.random.normal(jax.random.key(1), (cfg["batch"], cfg["width"]))
    return model, x


def _params_per_seed(cfg: dict[str, Any]) -> int:
    return cfg["depth"] * (cfg["width"] * cfg["width"] + cfg["width"])


def _flops_per_seed(cfg: dict[str, Any]) -> float:
    return 2.0 * cfg["batch"] * cfg["depth"] * cfg["width"] * cfg["width"]


# ------------------------------------------------------------------------------------------
# one configuration per subprocess


def run_peak(cfg: dict[str, Any]) -> dict[str, Any]:
    """float32 matmul peak (large square and the layer's shape) and threefry normals/s."""
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n))
    dot = jax.jit(jnp.dot)
    big = 2 * n**3 / _median(lambda: dot(a, a), 10)
    h = jax.random.normal(jax.random.key(0), (cfg["batch"], cfg["width"]))
    w = jax.random.normal(jax.random.key(1), (cfg["width"], cfg["width"]))
    layer = 2 * cfg["batch"] * cfg["width"] ** 2 / _median(lambda: dot(h, w), 50)
    count = _params_per_seed(cfg)
    gen = jax.jit(lambda k: jax.random.normal(k, (count,)))
    rng = count / _median(lambda: gen(jax.random.key(3)), 10)
    # Batched over keys, as in a vmapped chunk.
    keys = jax.random.split(jax.random.key(4), 8)
    batched = jax.jit(jax.vmap(lambda k: jax.random.normal(k, (count,))))
    rng_batched = keys.shape[0] * count / _median(lambda: batched(keys), 5)
    # Layer by layer, as the model draws them: one cache-sized kernel per layer, the layers'
    # draws independent (XLA runs them concurrently on the CPU's cores).
    shape = (cfg["width"], cfg["width"])
    per_layer = jax.jit(
        lambda k: [jax.random.normal(kk, shape) for kk in jax.random.split(k, cfg["depth"])]
    )
    rng_layers = (
        cfg["depth"] * shape[0] * shape[1] / _median(lambda: per_layer(jax.random.key(5)), 10)
    )
    # The time split for one seed, compiled: the model's init (its random generation) and its
    # forward pass alone.
    model, xb = _setup(cfg)
    init = jax.jit(lambda k: model.init(k, xb[:1]))
    init_s = _median(lambda: init(jax.random.key(6)), 10)
    variables = init(jax.random.key(6))
    apply = jax.jit(model.apply)
    forward_s = _median(lambda: apply(variables, xb), 10)
    return {
        "init_s": init_s,
        "forward_s": forward_s,
        "forward_gflops": _flops_per_seed(cfg) / forward_s / 1e9,
        "peak_gflops": big / 1e9,
        "layer_gflops": layer / 1e9,
        "normals_per_s_single": rng,
        "normals_per_s_batched": rng_batched,
        "normals_per_s_layers": rng_layers,
        "normals_per_s": max(rng, rng_batched, rng_layers),  # the floor uses the fastest
    }


def run_vmap(cfg, seeds: int, chunk: int | None, grads: bool, twice: bool, devices: int):
    import jax

    import jaxinit

    model, x = _setup(cfg)
    mesh = None
    if devices > 1:
        mesh = jax.make_mesh((devices,), ("seeds",))

    def call():
        st = jaxinit.layer_stats(
            model, x, seeds=seeds, key=0, chunk_size=chunk, grads=grads, mesh=mesh
        )
        return jax.block_until_ready(st.std)

    t = time.perf_counter()
    std = call()
    first = time.perf_counter() - t
    out = {"first": first, "std_last": float(std[:, -1].mean())}
    if twice:
        t = time.perf_counter()
        call()
        out["run"] = time.perf_counter() - t
    return out


def run_loop(cfg, seeds: int) -> dict[str, Any]:
    import jax

    import jaxinit

    model, x = _setup(cfg)
    keys = jax.random.split(jax.random.key(0), seeds + 1)
    t = time.perf_counter()
    jax.block_until_ready(jaxinit.layer_stats(model, x, seeds=1, key=keys[0], grads=False).std)
    first = time.perf_counter() - t
    t = time.perf_counter()
    stds = [
        jax.block_until_ready(jaxinit.layer_stats(model, x, seeds=1, key=k, grads=False).std)
        for k in keys[1:]
    ]
    run = time.perf_counter() - t
    return {"first": first, "run": run, "std_last": float(sum(s[0, -1] for s in stds) / seeds)}


def run_torch(cfg, seeds: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    layers = torch.nn.Sequential(
        *[torch.nn.Linear(cfg["width"], cfg["width"]) for _ in range(cfg["depth"])]
    )
    stats: list[Any] = []

    def hook(module, inputs, output):
        stats.append(torch.stack([output.mean(), output.std(unbiased=False)]))

    for layer in layers:
        layer.register_forward_hook(hook)
    x = torch.randn(cfg["batch"], cfg["width"])

    def one_seed(seed: int):
        torch.manual_seed(seed)
        with torch.no_grad():
            for layer in layers:
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                torch.nn.init.zeros_(layer.bias)
            stats.clear()
            h = x
            for layer in layers:
                h = torch.relu(layer(h))
            return torch.stack(stats)

    t = time.perf_counter()
    one_seed(0)
    first = time.perf_counter() - t
    t = time.perf_counter()
    last = [float(one_seed(s + 1)[-1, 1]) for s in range(seeds)]
    return {"first": first, "run": time.perf_counter() - t, "std_last": sum(last) / seeds}


def _child(args) -> None:
    cfg = json.loads(args.cfg)
    what = cfg.pop("what")
    if what == "peak":
        out = run_peak(cfg)
    elif what == "vmap":
        out = run_vmap(cfg, cfg["seeds"], cfg["chunk"], cfg["grads"], cfg["twice"], cfg["devices"])
    elif what == "loop":
        out = run_loop(cfg, cfg["seeds"])
    else:
        out = run_torch(cfg, cfg["seeds"])
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(out))


def _spawn(cfg: dict[str, Any], devices: int = 1) -> dict[str, Any]:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    flags = " ".join(f for f in flags.split() if "force_host_platform_device_count" not in f)
    if devices > 1:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = flags.strip()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"bench_sweep: configuration {cfg} failed:\n{proc.stderr[-3000:]}")


# ------------------------------------------------------------------------------------------


def _chunk_arg(text: str) -> int | str:
    """``--chunk``: ``auto`` or a positive int."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 'auto' or an int >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model and seed counts")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seed counts")
    parser.add_argument(
        "--chunk", type=_chunk_arg, default="auto", help="seeds per vmapped chunk (int or 'auto')"
    )
    parser.add_argument("--loop-seeds", type=int, default=None, help="seeds in the loops")
    parser.add_argument(
        "--devices",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU devices for the mesh rows (default: one per core)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        args.cfg = args.child
        _child(args)
        return 0

    import jax

    base = (
        dict(depth=8, width=128, batch=64) if args.quick else dict(depth=50, width=512, batch=256)
    )
    seed_counts = sorted(args.seeds or ([8, 32] if args.quick else [100, 1000]))
    loop_seeds = args.loop_seeds or (8 if args.quick else 50)
    small = seed_counts[0]
    backend = jax.default_backend()
    on_cpu = backend == "cpu"

    chunk = args.chunk
    peak = _spawn({**base, "what": "peak"})
    rows: list[dict[str, Any]] = []

    def vmap_row(name, seeds, chunk, grads=False, twice=True, devices=1, scan=False):
        cfg = {**base, "what": "vmap", "seeds": seeds, "chunk": chunk, "grads": grads}
        r = _spawn({**cfg, "twice": twice, "devices": devices, "scan": scan}, devices=devices)
        # One call: end to end (trace + compile + run); twice: the second call is the run.
        r.setdefault("run", None)
        r["total"], r["done"] = r["first"], seeds
        rows.append({"config": name, "seeds": seeds, "grads": grads, **r})

    for seeds in seed_counts:
        vmap_row(f"unrolled, chunk {chunk}", seeds, chunk, twice=seeds == small)
    vmap_row(f"scan, chunk {chunk}", small, chunk, scan=True)
    mesh = on_cpu and args.devices > 1
    if mesh:
        for seeds in seed_counts:
            vmap_row(
                f"scan, chunk 1, over {args.devices} CPU devices",
                seeds,
                1,
                twice=seeds == small,
                devices=args.devices,
                scan=True,
            )
    grads_devices = args.devices if mesh else 1
    vmap_row(
        f"scan, chunk 1{f', {grads_devices} devices' if mesh else ''}, +grads",
        small,
        1,
        grads=True,
        devices=grads_devices,
        scan=True,
    )
    vmap_row("scan, unchunked", small, None, scan=True)
    loops = [
        ("loop over jitted per-seed fn, unrolled", "loop", False),
        ("loop over jitted per-seed fn, scan", "loop", True),
    ]
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            loops.append(("PyTorch per-seed loop", "torch", False))
        except ImportError:
            print("torch not installed: PyTorch row skipped (pip install torch)")
    for name, what, scan in loops:
        r = _spawn({**base, "what": what, "seeds": loop_seeds, "scan": scan})
        # The loops' first seed (compile) and the rest: end to end covers seeds + 1.
        r["total"], r["done"] = r["first"] + r["run"], loop_seeds + 1
        rows.append({"config": name, "seeds": loop_seeds + 1, **r})

    rng_s = _params_per_seed(base) / peak["normals_per_s"]
    fwd_s = _flops_per_seed(base) / (peak["peak_gflops"] * 1e9)
    for row in rows:
        flops = _flops_per_seed(base) * (2 if row.get("grads") else 1)
        floor = rng_s + flops / (peak["peak_gflops"] * 1e9)
        per_seed = row["total"] / row["done"]
        row["seeds_per_s"] = 1 / per_seed  # end to end
        row["floor_ratio"] = per_seed / floor
        steady = None
        if row["run"] is not None:
            steady = row["run"] / (row["done"] - 1 if "loop" in row["config"] else row["done"])
        row["steady_seeds_per_s"] = None if steady is None else 1 / steady
        row["steady_floor_ratio"] = None if steady is None else steady / floor

    # "x loop": against the faster of the two per-seed JAX loops.
    loop_rate = max(r["seeds_per_s"] for r in rows if r["config"].startswith("loop"))
    torch_rate = next((r["seeds_per_s"] for r in rows if r["config"].startswith("PyTorch")), None)
    print(
        f"\nper-layer stats, {base['depth']} x {base['width']} ReLU MLP, batch {base['batch']}, "
        f"backend {backend} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs"
    )
    print(
        f"float32 matmul peak {peak['peak_gflops']:.1f} GFLOP/s (2048^3), "
        f"{peak['layer_gflops']:.1f} GFLOP/s at the layer shape; threefry "
        f"{peak['normals_per_s_single'] / 1e6:.1f} M normals/s (one key), "
        f"{peak['normals_per_s_batched'] / 1e6:.1f} M/s (vmapped over 8 keys), "
        f"{peak['normals_per_s_layers'] / 1e6:.1f} M/s (layer by layer)"
    )
    print(
        f"floor per seed: random generation {rng_s * 1e3:.1f} ms + forward at peak "
        f"{fwd_s * 1e3:.1f} ms = {(rng_s + fwd_s) * 1e3:.1f} ms "
        f"({1 / (rng_s + fwd_s):.2f} seeds/s); with generation and forward overlapped on "
        f"the cores: {max(rng_s, fwd_s) * 1e3:.1f} ms"
    )
    print(
        f"time split, one seed compiled (unrolled): init (random generation) "
        f"{peak['init_s'] * 1e3:.1f} ms, forward {peak['forward_s'] * 1e3:.1f} ms "
        f"({peak['forward_gflops']:.1f} GFLOP/s, "
        f"{100 * peak['forward_gflops'] / peak['peak_gflops']:.0f}% of the matmul peak)\n"
    )

    def opt(v, f):
        return "-" if v is None else format(v, f)

    header = (
        f"{'configuration':<44} {'seeds':>6} {'first s':>8} {'total s':>8} {'seeds/s':>8} "
        f"{'x loop':>7} {'floor x':>8} {'steady/s':>9} {'floor x':>8} "
        f"{'RSS GiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['config']:<44} {r['seeds']:>6} {r['first']:>8.2f} {r['total']:>8.2f} "
            f"{r['seeds_per_s']:>8.2f} {r['seeds_per_s'] / loop_rate:>7.2f} "
            f"{r['floor_ratio']:>8.2f} {opt(r['steady_seeds_per_s'], '9.2f'):>9} "
            f"{opt(r['steady_floor_ratio'], '8.2f'):>8} "
            f"{r['peak_rss_gib']:>8.2f}"
        )
    print(
        "\nfirst: the first call (for loops: the first seed), trace + compile + run; total and "
        "seeds/s: end to end; floor x: time per seed / (random generation + matmul FLOPs at "
        "the 2048^3 peak); steady/s and its floor x: the compiled program alone (second "
        "call; loops: after the first seed)."
    )
    if torch_rate:
        print(f"PyTorch loop: {torch_rate:.2f} seeds/s")
    print(
        json.dumps(
            {
                "bench": "sweep",
                "backend": backend,
                "device": jax.devices()[0].device_kind,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "jax": jax.__version__,
                "model": base,
                "peak": peak,
                "floor_s_per_seed": rng_s + fwd_s,
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
