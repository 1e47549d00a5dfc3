"""The ``jaxinit`` command: ``demo``, ``stats``, ``lsuv``, ``gain``.

A thin layer over :mod:`jaxinit.analysis`, :func:`jaxinit.lsuv`, :mod:`jaxinit.app.report` (rich)
and :mod:`jaxinit.app.plotting` (matplotlib). Run ``jaxinit COMMAND --help`` for the options.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DATA",
    "INITS",
    "INIT_HELP",
    "MODELS",
    "build_parser",
    "main",
]

INITS = ("normal", "torch", "xavier", "he", "lsuv")
INIT_HELP = (
    "normal: N(0, 1) weights; torch: PyTorch's default U(+-1/sqrt(fan_in)); xavier: Glorot "
    "normal; he: He normal; lsuv: orthogonal weights, then LSUV on the batch"
)
MODELS = ("mlp", "convnet")
DATA = ("digits", "fashion-mnist", "mnist", "gaussian", "auto")


# ------------------------------------------------------------------------------------------
# argument types: one-line argparse errors


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _float_above(low: float, *, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite float > ``low`` (``strict``) or >= ``low``."""
    op = ">" if strict else ">="

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{value} must be a finite number {op} {low:g}")
        return value

    parse.__name__ = f"float {op} {low:g}"
    return parse


_positive_float = _float_above(0, strict=True)
_nonneg_float = _float_above(0, strict=False)


def _choices_list(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use a comma-separated subset of {', '.join(allowed)}"
            )
        return items

    parse.__name__ = "list"
    return parse


# ------------------------------------------------------------------------------------------
# models, data, inits


def _initializer(name: str):
    import jaxinit

    return {
        "normal": jaxinit.normal(1.0),
        "torch": jaxinit.torch_default(),
        "xavier": jaxinit.glorot_normal(),
        "he": jaxinit.he_normal(),
        "lsuv": jaxinit.orthogonal(),
    }[name]


def _model(kind: str, init_name: str, args: argparse.Namespace, classes: int):
    from . import models

    init = _initializer(init_name)
    if kind == "mlp":
        return models.MLP(depth=args.depth, width=args.width, kernel_init=init, num_outputs=classes)
    return models.ConvNet(num_classes=classes, kernel_init=init)


def _batch(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """(images (n, h, w, 1) standardized, labels or None, classes, description)."""
    from . import data

    name = args.data
    if name == "auto":
        name = "fashion-mnist" if data.fashion_mnist_available(args.data_dir) else "digits"
    if name == "gaussian":
        x = jax.random.normal(jax.random.key(args.data_seed), (args.batch, 28, 28, 1))
        return np.asarray(x), None, 10, f"N(0, 1) inputs, batch {args.batch}"
    try:
        ds = data.load(name, "train" if name == "fashion-mnist" else "test", data_dir=args.data_dir)
    except (OSError, ValueError) as err:
        parser.error(str(err).replace("\n", " "))
    rng = np.random.default_rng(args.data_seed)
    idx = rng.choice(len(ds.y), size=min(args.batch, len(ds.y)), replace=False)
    ds = ds.standardized()
    return ds.x[idx], ds.y[idx], ds.num_classes, f"{ds.name}, batch {len(idx)} (standardized)"


def _sigma_w(init_name: str, fans: Sequence[tuple[int, int]]) -> list[float] | None:
    """Per-layer sigma_w = sqrt(fan_in Var(W)) from the init's variance law, for predict
    (None for LSUV: its scale comes from data)."""
    from ..meanfield import sigma_w

    if init_name == "lsuv":
        return None
    init = _initializer(init_name)
    return [sigma_w(init, fi, fo) for fi, fo in fans]


def _mlp_prediction(init_name: str, args, x: np.ndarray, classes: int):
    import jaxinit

    dims = [int(np.prod(x.shape[1:])), *([args.width] * args.depth), classes]
    fans = list(itertools.pairwise(dims))
    sw = _sigma_w(init_name, fans)
    if sw is None:
        return None
    return jaxinit.predict(
        "relu", len(fans), sigma_w=sw, input_var=float(np.mean(x**2)), widths=dims[1:]
    )


def _stats(kind, init_name, args, x, y, classes, *, seeds=None):
    import jaxinit

    model = _model(kind, init_name, args, classes)
    xin = x.reshape(x.shape[0], -1) if kind == "mlp" else x
    after: Callable[..., Any] | None = None
    if init_name == "lsuv":

        def lsuv_after(variables, batch):
            return jaxinit.lsuv(model, variables, batch)[0]

        after = lsuv_after

    return jaxinit.layer_stats(
        model,
        xin,
        seeds=seeds or args.seeds,
        key=args.seed,
        labels=None if y is None else jnp.asarray(y),
        chunk_size=args.chunk_size or "auto",
        after_init=after,
        compiler_options=_compiler_options(args),
    )


def _compiler_options(args) -> dict[str, Any] | None:
    """Fast XLA compiles on CPU (several times quicker; these programs run for seconds)."""
    from ..analysis import FAST_COMPILE

    if getattr(args, "optimize", False) or jax.default_backend() != "cpu":
        return None
    return FAST_COMPILE


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


# ------------------------------------------------------------------------------------------
# commands


def _cmd_demo(args, parser) -> int:
    from rich.markup import escape

    from . import report

    console = report.console(quiet=args.quiet)
    x, y, classes, what = _batch(args, parser)
    console.print(f"[bold]jaxinit demo[/bold]: {', '.join(args.models)} on {escape(what)}")
    console.print(f"inits {', '.join(args.inits)}; {args.seeds} seeds each")
    out = Path(args.out)
    results: dict[str, dict[str, Any]] = {m: {} for m in args.models}
    started = time.perf_counter()
    with _progress(console) as progress:
        task = progress.add_task("layer_stats", total=len(args.models) * len(args.inits))
        for kind in args.models:
            for init_name in args.inits:
                progress.update(task, description=f"{kind} / {init_name}")
                results[kind][init_name] = _stats(kind, init_name, args, x, y, classes)
                progress.advance(task)
    summary: dict[str, Any] = {"data": what, "seeds": args.seeds, "models": {}}
    for kind in args.models:
        console.print(report.compare_table(results[kind], title=f"{kind}: at initialization"))
        for name, st in results[kind].items():
            seeds, layer = st.nonfinite()
            if seeds:
                console.print(
                    f"[yellow]{kind} / {escape(name)}: float32 overflow (inf/NaN) from "
                    f"{escape(str(layer))} on {seeds} of {st.seeds} seeds[/yellow]"
                )
        summary["models"][kind] = {
            name: {
                "std_first": float(np.mean(st.std[:, 0])),
                "std_last": float(np.mean(st.std[:, -1])),
                "loss": float(np.mean(st.loss)) if st.loss is not None else None,
            }
            for name, st in results[kind].items()
        }
    if not args.no_plots:
        from . import plotting

        hist_inits = [n for n in ("normal", "he") if n in args.inits]
        written = []
        with _progress(console) as progress:
            task = progress.add_task("figures", total=len(args.models) * (1 + len(hist_inits)))
            for kind in args.models:
                progress.update(task, description=f"{kind} figures")
                preds = {}
                if kind == "mlp":
                    preds = {
                        n: p
                        for n in args.inits
                        if (p := _mlp_prediction(n, args, x, classes)) is not None
                    }
                path = plotting.plot_layer_stats(
                    results[kind],
                    out / f"{kind}_layers.png",
                    predicted=preds,
                    title=f"{kind} on {what.split(',')[0]}",
                )
                written.append(path.name)
                progress.advance(task)
                for init_name in hist_inits:
                    outs = _outputs(kind, init_name, args, x, classes)
                    path = plotting.plot_histograms(
                        outs,
                        out / f"{kind}_{init_name}_histograms.png",
                        title=f"{kind}, {init_name} init: layer outputs (seed {args.seed})",
                    )
                    written.append(path.name)
                    progress.advance(task)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        written.append("summary.json")
        console.print(f"wrote to {escape(str(out))}: {', '.join(written)}")
    console.print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _outputs(kind, init_name, args, x, classes):
    """One init's layer outputs, in forward order (the order the model calls its layers)."""
    import jaxinit

    model = _model(kind, init_name, args, classes)
    xin = x.reshape(x.shape[0], -1) if kind == "mlp" else x
    return jaxinit.layer_outputs(
        model, xin, key=args.seed, compiler_options=_compiler_options(args)
    )


def _cmd_stats(args, parser) -> int:
    from rich.markup import escape

    from . import report

    console = report.console(quiet=args.quiet)
    x, y, classes, what = _batch(args, parser)
    with _progress(console) as progress:
        task = progress.add_task(f"{args.model} / {args.init}", total=1)
        started = time.perf_counter()
        st = _stats(args.model, args.init, args, x, y, classes)
        jax.block_until_ready(st.std)
        progress.advance(task)
    pred = _mlp_prediction(args.init, args, x, classes) if args.model == "mlp" else None
    console.print(
        report.layers_table(
            st,
            predicted=pred,
            title=f"{args.model}, {args.init} init, {escape(what)}: {st.seeds} seeds "
            f"({time.perf_counter() - started:.1f} s)",
        )
    )
    if args.plot:
        from . import plotting

        path = plotting.plot_layer_stats(
            {args.init: st}, args.plot, predicted={args.init: pred} if pred else None
        )
        console.print(f"wrote {escape(str(path))}")
    return 0


def _cmd_lsuv(args, parser) -> int:
    from rich.markup import escape

    import jaxinit

    from . import report

    console = report.console(quiet=args.quiet)
    x, _, classes, what = _batch(args, parser)
    model = _model(args.model, args.init, args, classes)
    xin = x.reshape(x.shape[0], -1) if args.model == "mlp" else x
    variables = model.init(jax.random.key(args.seed), xin[:1])
    started = time.perf_counter()
    _, rep = jaxinit.lsuv(
        model,
        variables,
        jnp.asarray(xin),
        target_std=args.target_std,
        tol=args.tol,
        max_iters=args.max_iters,
        center=args.center,
    )
    jax.block_until_ready(rep.std_after)
    seconds = time.perf_counter() - started
    console.print(
        report.lsuv_table(
            rep,
            title=f"LSUV on {args.model} ({args.init} pre-init), {escape(what)}: {seconds:.2f} s "
            "incl. compile",
        )
    )
    return 0 if rep.all_converged else 1


def _cmd_gain(args, parser) -> int:
    import jaxinit

    from . import report

    console = report.console(quiet=args.quiet)
    rows = []
    for name in args.activations:
        try:
            g = jaxinit.gain(name, args.param)
        except (ValueError, TypeError) as err:
            parser.error(str(err))
        try:
            crit = jaxinit.critical_sigma_w(name, args.sigma_b, param=args.param)
        except ValueError:
            crit = None
        rows.append((name, g, crit))
    console.print(report.gain_table(rows, sigma_b=args.sigma_b))
    return 0


# ------------------------------------------------------------------------------------------
# parser


def _common(p: argparse.ArgumentParser, *, seeds: int, depth: int, width: int, batch: int):
    p.add_argument(
        "--data",
        choices=DATA,
        default="digits",
        help="input batch: scikit-learn digits (default), fashion-mnist, mnist (test set), "
        "gaussian N(0, 1), or auto (fashion-mnist when installed, else digits)",
    )
    p.add_argument("--data-dir", default=None, help="directory holding the IDX files")
    p.add_argument("--batch", type=_int_at_least(1), default=batch, help="batch size")
    p.add_argument("--seeds", type=_int_at_least(1), default=seeds, help="random inits")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="base random seed")
    p.add_argument("--data-seed", type=_int_at_least(0), default=0, help="batch sampling seed")
    p.add_argument("--depth", type=_int_at_least(1), default=depth, help="MLP hidden layers")
    p.add_argument("--width", type=_int_at_least(1), default=width, help="MLP width")
    p.add_argument(
        "--chunk-size",
        type=_int_at_least(1),
        default=None,
        help="seeds per vectorized chunk (default: automatic)",
    )
    p.add_argument(
        "--optimize",
        action="store_true",
        help="fully optimized XLA compile on CPU (slower to compile; default: fast compile)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.add_argument(
        "--quick", action="store_true", help="tiny settings (4 seeds, depth 4, width 32, batch 32)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxinit",
        description="Initialization toolkit for JAX/Flax: per-layer statistics over many "
        "random seeds, LSUV, gains.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="compare initializers on built-in models and real data",
        description="Compare standard-normal, PyTorch-default, Xavier, He and LSUV init on "
        "a deep MLP and fastai's convnet: per-layer activation and gradient statistics over "
        "seeds (rich tables), figures in --out. " + INIT_HELP + ".",
    )
    _common(demo, seeds=16, depth=20, width=256, batch=256)
    demo.add_argument(
        "--models", type=_choices_list(MODELS), default=MODELS, help="mlp,convnet (default both)"
    )
    demo.add_argument(
        "--inits", type=_choices_list(INITS), default=INITS, help=f"subset of {','.join(INITS)}"
    )
    demo.add_argument("--out", default="jaxinit-report", help="directory for figures")
    demo.add_argument("--no-plots", action="store_true", help="skip the figures")

    stats = sub.add_parser(
        "stats",
        help="per-layer statistics of one model and init over seeds",
        description="Per-layer mean/std of outputs and gradient std over seeds, with the "
        "mean-field prediction for the MLP. " + INIT_HELP + ".",
    )
    _common(stats, seeds=32, depth=50, width=512, batch=256)
    stats.add_argument("--model", choices=MODELS, default="mlp")
    stats.add_argument("--init", choices=INITS, default="he")
    stats.add_argument("--plot", default=None, metavar="PNG", help="write a figure here")

    lsuv = sub.add_parser(
        "lsuv",
        help="run LSUV once on a built-in model and print its report",
        description="Run jaxinit.lsuv on a built-in model and a real batch; print the "
        "per-layer report. Exit status 1 if a layer did not converge.",
    )
    _common(lsuv, seeds=1, depth=50, width=512, batch=256)
    lsuv.add_argument("--model", choices=MODELS, default="mlp")
    lsuv.add_argument("--init", choices=INITS[:-1], default="torch", help="pre-init")
    lsuv.add_argument("--target-std", type=_positive_float, default=1.0)
    lsuv.add_argument("--tol", type=_positive_float, default=1e-3)
    lsuv.add_argument("--max-iters", type=_int_at_least(1), default=10)
    lsuv.add_argument("--center", action="store_true", help="also zero the mean (fastai)")

    gain = sub.add_parser(
        "gain",
        help="gains and edge-of-chaos weight scales of activations",
        description="Print jaxinit.gain and jaxinit.critical_sigma_w for activations.",
    )
    gain.add_argument(
        "activations", nargs="*", default=["linear", "relu", "leaky_relu", "tanh", "gelu", "selu"]
    )
    gain.add_argument("--param", type=float, default=None, help="leaky_relu slope / elu alpha")
    gain.add_argument("--sigma-b", type=_nonneg_float, default=0.0, help="bias std")
    gain.add_argument("--quiet", action="store_true", help="print nothing")
    return parser


_COMMANDS = {"demo": _cmd_demo, "stats": _cmd_stats, "lsuv": _cmd_lsuv, "gain": _cmd_gain}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxinit`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        args.seeds, args.depth, args.width, args.batch = 4, 4, 32, 32
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices[args.command]
    return _COMMANDS[args.command](args, sub)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
