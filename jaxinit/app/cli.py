"""The ``jaxinit`` command: ``demo``, ``stats``, ``lsuv``, ``gain``, ``coord-check``, ``audit``.

A thin layer over :mod:`jaxinit.analysis`, :func:`jaxinit.lsuv`, :func:`jaxinit.coord_check`,
:mod:`jaxinit.app.report` (rich)
and :mod:`jaxinit.app.plotting` (matplotlib). Run ``jaxinit COMMAND --help`` for the options.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import sys
import tempfile
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
    "STATS_MODELS",
    "build_parser",
    "main",
]

INITS = ("normal", "torch", "xavier", "he", "lsuv")
INIT_HELP = (
    "normal: N(0, 1) weights; torch: PyTorch's default U(+-1/sqrt(fan_in)); xavier: Glorot "
    "normal; he: He normal; lsuv: orthogonal weights, then LSUV on the batch"
)
MODELS = ("mlp", "convnet")
STATS_MODELS = (*MODELS, "resnet", "transformer")
_HEADS = 4  # attention heads of ``stats --model transformer``
DATA = ("digits", "fashion-mnist", "mnist", "gaussian", "auto")
_IDX_DATA = ("fashion-mnist", "mnist", "auto")  # the --data choices that read --data-dir

# --quick changes these defaults only; an explicit option always wins.
_QUICK = {"seeds": 4, "depth": 4, "width": 32, "batch": 32}
# Seeds per compiled call. One call cannot be interrupted, so Ctrl-C waits at most for one
# group; the group's keys depend only on --seed and the group's index, so the numbers do not
# depend on --seeds, --chunk-size or the machine.
_GROUP = 8
_INT32_MAX = 2**31 - 1
_SEED_MAX = 2**32 - 1  # jax.random.key keeps 32 bits
_DEPTH_MAX = 10_000  # the MLP is unrolled: tracing and compile time grow with depth


# ------------------------------------------------------------------------------------------
# argument types: one-line argparse errors


def _int_at_least(low: int, high: int = _INT32_MAX) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{value} must be <= {high}")
        return value

    parse.__name__ = f"int in [{low}, {high}]"
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
        # dict.fromkeys: drop repeats (each would be run twice) and keep the order
        items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{text!r}: use a comma-separated subset of {', '.join(allowed)}"
            )
        return items

    parse.__name__ = "list"
    return parse


def _widths(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated widths, at least two distinct, each >= 1; sorted."""
    parse = _int_at_least(1)
    items = [t.strip() for t in text.split(",") if t.strip()]
    widths = tuple(sorted({parse(t) for t in items}))
    if len(widths) < 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: at least two distinct widths are needed, e.g. 64,128,256"
        )
    return widths


_widths.__name__ = "widths"


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
    if kind == "resnet":
        return models.ResNet(num_classes=classes, batch_norm=args.batch_norm, kernel_init=init)
    if kind == "transformer":
        return _row_transformer(args, init, classes)
    return models.ConvNet(num_classes=classes, kernel_init=init)


def _row_transformer(args: argparse.Namespace, init, classes: int):
    """``stats --model transformer``: each image's rows are its tokens, Dense(``width``)
    ``embed``, ``depth`` :class:`jaxinit.models.TransformerBlock` named ``block0`` ...
    (``--norm``; ``--scaled-residuals``: branch multiplier ``1/sqrt(depth)``), the mean over
    tokens and Dense(``classes``) ``head``."""
    import flax.linen as nn

    from . import models

    depth, width = args.depth, args.width
    alpha = depth**-0.5 if args.scaled_residuals else 1.0

    class RowTransformer(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
            x = x.reshape(*x.shape[:2], -1)  # (batch, rows, columns * channels)
            x = nn.Dense(width, kernel_init=init, name="embed")(x)
            for i in range(depth):
                x = models.TransformerBlock(
                    width, _HEADS, kernel_init=init, norm=args.norm, alpha=alpha, name=f"block{i}"
                )(x)
            return nn.Dense(classes, kernel_init=init, name="head")(x.mean(axis=1))

    return RowTransformer()


def _batch(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """(images (n, h, w, 1) standardized, labels or None, classes, description)."""
    from . import data

    name = args.data
    if name == "auto" and args.data_dir is not None:
        name = "fashion-mnist"  # an explicit folder must hold it: the loader's error names it
    elif name == "auto":
        try:
            found = data.available("fashion-mnist", "train")
        except ValueError as err:  # a bad JAXINIT_DATA_ONLY
            parser.error(str(err))
        if not found:
            name = "digits"
            if not args.quiet:
                where = ", ".join(str(d) for d in data.search_dirs("fashion-mnist")) or "nowhere"
                print(
                    f"jaxinit: --data auto: Fashion-MNIST not found in {where}; using digits",
                    file=sys.stderr,
                )
        else:
            name = "fashion-mnist"
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


def _wait(tree) -> None:
    """Wait for ``tree``'s arrays in short sleeps: a blocking wait inside XLA would hold
    Ctrl-C until the whole computation ends."""
    for leaf in jax.tree.leaves(tree):
        while not leaf.is_ready():
            time.sleep(0.01)


def _stats(kind, init_name, args, x, y, classes, *, advance=None):
    """``layer_stats`` over ``args.seeds`` seeds, in groups of :data:`_GROUP` seeds; group 0
    uses the key of ``--seed`` (the numbers of ``layer_stats(key=seed)`` for up to 8
    seeds), group ``j`` ``jax.random.fold_in`` of it with ``j``. ``advance(n)`` after each."""
    import jaxinit

    model = _model(kind, init_name, args, classes)
    xin = x.reshape(x.shape[0], -1) if kind == "mlp" else x
    select, stats = None, ()
    if kind == "transformer":  # per block, with the attention each block holds
        select = "block*"
        stats = ("token_cosine", "attention_entropy_mean", "attention_entropy_min")
    after: Callable[..., Any] | None = None
    if init_name == "lsuv":

        def lsuv_after(variables, batch):
            return jaxinit.lsuv(model, variables, batch)[0]

        after = lsuv_after

    base = jax.random.key(args.seed)
    labels = None if y is None else jnp.asarray(y)
    parts = []
    for group, start in enumerate(range(0, args.seeds, _GROUP)):
        n = min(_GROUP, args.seeds - start)
        st = jaxinit.layer_stats(
            model,
            xin,
            seeds=n,
            key=base if group == 0 else jax.random.fold_in(base, group),
            labels=labels,
            chunk_size=args.chunk_size or "auto",
            after_init=after,
            compiler_options=_compiler_options(args),
            select=select,
            stats=stats,
            apply_kwargs={"train": True} if getattr(args, "batch_norm", False) else None,
        )
        _wait(st)  # one group at a time: Ctrl-C is seen between groups
        parts.append(st)
        if advance is not None:
            advance(n)
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *a: jnp.concatenate(a), *parts)


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
        total = len(args.models) * len(args.inits) * args.seeds
        task = progress.add_task("layer_stats", total=total)
        for kind in args.models:
            for init_name in args.inits:
                progress.update(task, description=f"{kind} / {init_name}")
                results[kind][init_name] = _stats(
                    kind,
                    init_name,
                    args,
                    x,
                    y,
                    classes,
                    advance=lambda n: progress.advance(task, n),
                )
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
    written = []
    if not args.no_plots:
        from . import plotting

        hist_inits = _hist_inits(args)
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
    if args.spp:
        return _stats_spp(args, console, x, classes, what)
    with _progress(console) as progress:
        task = progress.add_task(f"{args.model} / {args.init}", total=args.seeds)
        started = time.perf_counter()
        st = _stats(
            args.model, args.init, args, x, y, classes, advance=lambda n: progress.advance(task, n)
        )
    pred = _mlp_prediction(args.init, args, x, classes) if args.model == "mlp" else None
    console.print(
        report.layers_table(
            st,
            predicted=pred,
            title=f"{_describe(args)}, {args.init} init, {escape(what)}: {st.seeds} seeds "
            f"({time.perf_counter() - started:.1f} s)",
        )
    )
    if args.plot:
        from . import plotting

        if args.model == "transformer":
            path = plotting.plot_rank_collapse(
                {f"{args.norm}-LN": st.stats["token_cosine"]},
                args.plot,
                xlabel="block",
                title=f"{_describe(args)}, {args.init} init: token cosine per block",
            )
        else:
            path = plotting.plot_layer_stats(
                {args.init: st}, args.plot, predicted={args.init: pred} if pred else None
            )
        console.print(f"wrote {escape(str(path))}")
    return 0


def _describe(args) -> str:
    if args.model == "transformer":
        scaled = ", residuals x 1/sqrt(depth)" if args.scaled_residuals else ""
        return f"transformer ({args.norm}-LN, depth {args.depth}, width {args.width}{scaled})"
    if args.model == "resnet":
        return f"resnet ({'BatchNorm' if args.batch_norm else 'no normalization'})"
    return args.model


def _spp_seeds(args, x: np.ndarray, classes: int, advance: Callable[[int], Any]):
    """Per-seed :func:`jaxinit.diagnostics.spp` of the ResNet, seeds as in :func:`_stats`
    (group ``j`` of :data:`_GROUP` seeds from ``fold_in(key(--seed), j)``)."""
    from .. import diagnostics

    model = _model("resnet", args.init, args, classes)
    xin = jnp.asarray(x)
    if args.batch_norm:
        branch, skip, kwargs = "bn2", "bn_proj", {"train": True}
    else:
        branch, skip, kwargs = "conv2", "proj", {}

    def one(key):
        variables = model.init(key, xin[:1])
        if args.init == "lsuv":
            import jaxinit

            variables = jaxinit.lsuv(model, variables, xin)[0]
        return diagnostics.spp(
            model, variables, xin, blocks="block*", branch=branch, skip=skip, **kwargs
        )

    run = jax.jit(jax.vmap(one), compiler_options=_compiler_options(args))
    base = jax.random.key(args.seed)
    parts = []
    for group, start in enumerate(range(0, args.seeds, _GROUP)):
        n = min(_GROUP, args.seeds - start)
        key = base if group == 0 else jax.random.fold_in(base, group)
        out = run(jax.random.split(key, n))
        _wait(out)  # one group at a time: Ctrl-C is seen between groups
        parts.append(out)
        advance(n)
    return parts[0] if len(parts) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *parts)


def _stats_spp(args, console, x: np.ndarray, classes: int, what: str) -> int:
    from rich.markup import escape

    from . import report

    with _progress(console) as progress:
        task = progress.add_task(f"spp {args.model} / {args.init}", total=args.seeds)
        started = time.perf_counter()
        s = _spp_seeds(args, x, classes, lambda n: progress.advance(task, n))
    level = 0.95
    table = report._table(
        f"signal propagation, {_describe(args)}, {args.init} init, {escape(what)}: "
        f"{args.seeds} seeds ({time.perf_counter() - started:.1f} s)",
        report._level_caption(level, args.seeds)
        + "; channel statistics of each block's output, branch: the residual branch's "
        "output, skip: the block's input (or its projection)",
    )
    report._column(table, "block", "left", style="cyan")
    columns = {
        "mean sq": s.mean_sq,
        "var": s.var,
        "branch var": s.branch_var,
        "skip var": s.skip_var,
        "branch/skip": s.branch_over_skip,
    }
    for name in columns:
        report._column(table, name)
    for i, block in enumerate(s.names):
        table.add_row(
            block, *(report._seed_band(np.asarray(v)[:, i], level) for v in columns.values())
        )
    console.print(table)
    if args.plot:
        from . import plotting

        path = plotting.plot_spp(
            {_describe(args): s}, args.plot, title=f"{_describe(args)}, {args.init} init"
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
    _wait(rep)
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


def _load_object(spec: str, option: str, parser: argparse.ArgumentParser) -> Any:
    """The object ``spec`` names: ``package.module:name`` (imported, with the current
    directory on the path) or ``path/to/file.py:name``; a usage error otherwise."""
    import importlib
    import importlib.util
    import os

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        parser.error(
            f"argument {option}: {spec!r} is not of the form module:name or file.py:name "
            "(e.g. mypkg.models:make_model)"
        )
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            path = Path(where)
            if not path.is_file():
                parser.error(f"argument {option}: no file {where!r}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            if mod_spec is None or mod_spec.loader is None:
                parser.error(f"argument {option}: cannot import {where!r}")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(where)
    except ImportError as err:
        parser.error(f"argument {option}: cannot import {where!r}: {err}")
    if not hasattr(module, name):
        parser.error(f"argument {option}: {where!r} has no attribute {name!r}")
    return getattr(module, name)


def _cmd_audit(args, parser) -> int:
    from jaxinit._flax.adapter import is_linen, is_nnx
    from jaxinit.recipes.audit import audit

    factory = _load_object(args.factory, "factory", parser)
    made = factory() if callable(factory) and not is_nnx(factory) else factory
    recipe = None
    if args.recipe is not None:
        recipe = _load_object(args.recipe, "--recipe", parser)
        if callable(recipe) and not hasattr(recipe, "rules"):
            recipe = recipe()
        if not hasattr(recipe, "rules"):
            parser.error(
                f"argument --recipe: {args.recipe!r} gives {type(recipe).__name__}, not a "
                "jaxinit Recipe"
            )
    if isinstance(made, tuple) and len(made) in (2, 3) and is_linen(made[0]):
        module, variables, *x = made
        result = audit(variables, recipe, module=module, x=x[0] if x else None)
    else:
        try:
            result = audit(made, recipe)
        except TypeError as err:
            parser.error(
                f"argument factory: {args.factory!r} returned {type(made).__name__}; it must "
                f"return an NNX model or (linen module, variables) ({err})"
            )
    if not args.quiet:
        print(result.table())
    return 1 if result.findings else 0


# The coordinate check: its models, its defaults (full, --quick) and its batch.
_COORD_MODELS = ("mlp", "cnn", "transformer")
_COORD_DEFAULTS = {"widths": ((64, 128, 256, 512, 1024), (32, 64, 128)), "seeds": (4, 2)}
_COORD_LR = {"sgd": 0.1, "adam": 1e-3}
_COORD_BATCH = 32  # examples (images, or byte sequences for the transformer)
_COORD_TOKENS = 32  # bytes per sequence
_COORD_STATS = ("abs_mean", "rms", "std", "abs_max")  # positive: log axes and exponents


def _text_batch(seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """:data:`_COORD_BATCH` random windows of the source of Python's ``argparse`` module:
    inputs (bytes 0..n-1) and next-byte labels (bytes 1..n)."""
    import inspect

    text = np.frombuffer(inspect.getsource(argparse).encode(), np.uint8)
    rng = np.random.default_rng(seed)
    starts = rng.choice(len(text) - _COORD_TOKENS - 1, size=_COORD_BATCH, replace=False)
    windows = np.stack([text[i : i + _COORD_TOKENS + 1] for i in starts]).astype(np.int32)
    what = f"argparse source bytes, {_COORD_BATCH} x {_COORD_TOKENS} tokens"
    return windows[:, :-1], windows[:, 1:], what


def _coord_problem(args, parser):
    """(make_model, x, labels, description) for ``--model``."""
    from . import models

    if args.model == "transformer":
        x, y, what = _text_batch(args.data_seed)
        base = args.widths[0] if args.param == "mup" else None
        return (
            functools.partial(models._ByteTransformer, base_width=base),
            jnp.asarray(x),
            jnp.asarray(y),
            what,
        )
    batch_args = argparse.Namespace(**{**vars(args), "batch": _COORD_BATCH})
    x, y, _, what = _batch(batch_args, parser)
    make = models._WidthMLP if args.model == "mlp" else models._WidthCNN
    return make, jnp.asarray(x, jnp.float32), jnp.asarray(y), what


def _coord_table(check, title: str):
    """Rich table: per layer and step, the seed mean at each width and the fitted exponent."""
    from rich.text import Text

    from . import report

    m, e = check.mean(), check.exponents()
    table = report._table(title)
    report._column(table, "layer", "left", style="cyan")
    report._column(table, "t")
    for w in check.widths:
        report._column(table, f"w={w}")
    report._column(table, "exponent", style="bold")
    for j, layer in enumerate(check.layers):
        for t in range(check.steps):
            cells = [report._num(float(m[i, t, j]), 3) for i in range(len(check.widths))]
            slope = f"{e[t, j]:+.2f}" if np.isfinite(e[t, j]) else "-"
            table.add_row(Text(layer if t == 0 else ""), str(t + 1), *cells, slope)
        if j < len(check.layers) - 1:
            table.add_section()
    return table


def _cmd_coord_check(args, parser) -> int:
    from rich.markup import escape

    import jaxinit

    from . import report

    console = report.console(quiet=args.quiet)
    make, x, y, what = _coord_problem(args, parser)
    console.print(
        f"[bold]jaxinit coord-check[/bold]: {args.model}, {args.param}, {args.optimizer} "
        f"lr {args.lr:g}, on {escape(what)}"
    )
    console.print(
        f"widths {', '.join(map(str, args.widths))}; {args.seeds} seeds; {args.steps} steps"
    )
    started = time.perf_counter()
    with console.status("training: one compiled program per width"):
        check = jaxinit.coord_check(
            make,
            x,
            y,
            widths=args.widths,
            seeds=args.seeds,
            steps=args.steps,
            parametrization=args.param,
            optimizer=args.optimizer,
            learning_rate=args.lr,
            readout_zero_init=args.readout_zero_init,
            stat=args.stat,
            key=args.seed,
        )
    seconds = time.perf_counter() - started
    stat = check.stat.replace("_", " ")
    console.print(_coord_table(check, f"{args.model}, {args.param}, {args.optimizer}: {stat}"))
    console.print(
        f"[dim]mean over {args.seeds} seeds; t: step (1: at initialization, before any "
        f"update); exponent: slope of log({stat}) against log(width), 0: width-independent, "
        "0.5: grows like sqrt(width), -: a zero statistic[/dim]"
    )
    e = check.exponents()
    later = e[1:] if check.steps > 1 else e
    if np.isfinite(later).any():
        t, j = np.unravel_index(np.nanargmax(np.abs(later)), later.shape)
        t += check.steps - len(later)
        console.print(
            f"largest |exponent|{' after step 1' if check.steps > 1 else ''}: "
            f"{e[t, j]:+.2f} ({escape(check.layers[j])}, t={t + 1})"
        )
    if args.plot:
        from . import plotting

        plotting.plot_coord_check(check, args.plot)
        console.print(f"wrote {escape(str(args.plot))}")
    console.print(f"done in {seconds:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------
# parser


def _common(
    p: argparse.ArgumentParser, *, seeds: int | None, depth: int, width: int, batch: int
) -> None:
    """The options of demo, stats and lsuv (lsuv: ``seeds=None``, one run, no seed options).

    Sizes default to None here and are filled in by :func:`_fill_defaults`, so that an
    explicit option can be told from a default and wins over ``--quick``."""
    defaults = {"depth": depth, "width": width, "batch": batch}
    if seeds is not None:
        defaults["seeds"] = seeds
    p.set_defaults(full_defaults=defaults)

    def default(name: str) -> str:
        return f"default {defaults[name]}; --quick: {_QUICK[name]}"

    p.add_argument(
        "--data",
        choices=DATA,
        default="digits",
        help="input batch: scikit-learn digits (default), fashion-mnist, mnist (test set), "
        "gaussian N(0, 1), or auto (fashion-mnist when found, else digits, said on stderr; "
        "with --data-dir, that folder must hold fashion-mnist)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory holding the IDX files (for --data fashion-mnist, mnist or auto)",
    )
    p.add_argument(
        "--batch", type=_int_at_least(1), default=None, help=f"batch size ({default('batch')})"
    )
    if seeds is not None:
        p.add_argument(
            "--seeds",
            type=_int_at_least(1),
            default=None,
            help=f"random inits ({default('seeds')}); run in groups of {_GROUP}, between "
            "which Ctrl-C stops the command",
        )
    p.add_argument("--seed", type=_int_at_least(0, _SEED_MAX), default=0, help="base random seed")
    p.add_argument(
        "--data-seed", type=_int_at_least(0, _SEED_MAX), default=0, help="batch sampling seed"
    )
    p.add_argument(
        "--depth",
        type=_int_at_least(1, _DEPTH_MAX),
        default=None,
        help=f"MLP hidden layers ({default('depth')})",
    )
    p.add_argument(
        "--width", type=_int_at_least(1), default=None, help=f"MLP width ({default('width')})"
    )
    if seeds is not None:
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
        "--quick",
        action="store_true",
        help="tiny defaults: "
        + ", ".join(f"{k} {v}" for k, v in _QUICK.items() if k in defaults)
        + "; an explicit option wins over --quick",
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
    demo.add_argument(
        "--out", default="jaxinit-report", help="directory for the figures and summary.json"
    )
    demo.add_argument(
        "--no-plots", action="store_true", help="skip the figures (summary.json is still written)"
    )

    stats = sub.add_parser(
        "stats",
        help="per-layer statistics of one model and init over seeds",
        description="Per-layer mean/std of outputs and gradient std over seeds, with the "
        "mean-field prediction for the MLP. " + INIT_HELP + ".",
    )
    _common(stats, seeds=32, depth=50, width=512, batch=256)
    stats.add_argument(
        "--model",
        choices=STATS_MODELS,
        default="mlp",
        help="mlp, convnet, resnet (a small ResNet; see --batch-norm, --spp) or transformer "
        "(each image's rows are its tokens; --depth blocks of --width features, 4 heads): "
        "token cosine and attention entropy per block",
    )
    stats.add_argument("--init", choices=INITS, default="he")
    stats.add_argument(
        "--spp",
        action="store_true",
        help="with --model resnet: signal propagation plots per residual block (channel "
        "mean squared, channel variance, branch and skip variance) instead of the layer table",
    )
    stats.add_argument(
        "--batch-norm",
        action="store_true",
        help="with --model resnet: BatchNorm after every conv (batch statistics)",
    )
    stats.add_argument(
        "--norm",
        choices=("pre", "post"),
        default=None,
        help="with --model transformer: pre-LayerNorm (default) or post-LayerNorm blocks",
    )
    stats.add_argument(
        "--scaled-residuals",
        action="store_true",
        help="with --model transformer: residual branches times 1/sqrt(depth)",
    )
    stats.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="write a figure here; the suffix names the format (.png, .pdf, .svg, ...)",
    )

    lsuv = sub.add_parser(
        "lsuv",
        help="run LSUV once on a built-in model and print its report",
        description="Run jaxinit.lsuv on a built-in model and a real batch; print the "
        "per-layer report. Exit status 1 if a layer did not converge.",
    )
    _common(lsuv, seeds=None, depth=50, width=512, batch=256)
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

    coord = sub.add_parser(
        "coord-check",
        help="the coordinate check of muP against SP on a built-in model",
        description="Train a built-in model for a few steps at several widths (jaxinit."
        "coord_check, one compiled program per width) and print each layer's statistic per "
        "step and width with its fitted exponent against width: about 0 everywhere under muP, "
        "growing with width under SP once training moves the weights.",
    )
    full, quick = _COORD_DEFAULTS["widths"]
    coord.add_argument(
        "--model",
        choices=_COORD_MODELS,
        default="mlp",
        help="mlp: mup's test MLP; cnn: two 3x3 convs; transformer: a byte-level causal "
        "language model on the source of argparse (default mlp)",
    )
    coord.add_argument("--param", choices=("mup", "sp"), default="mup", help="parametrization")
    coord.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    coord.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help=f"learning rate (default {_COORD_LR['sgd']:g} for sgd, {_COORD_LR['adam']:g} "
        "for adam)",
    )
    coord.add_argument(
        "--widths",
        type=_widths,
        default=None,
        help=f"comma-separated widths, at least two (default {','.join(map(str, full))}; "
        f"--quick: {','.join(map(str, quick))})",
    )
    coord.add_argument(
        "--seeds",
        type=_int_at_least(1),
        default=None,
        help=f"initializations per width (default {_COORD_DEFAULTS['seeds'][0]}; --quick: "
        f"{_COORD_DEFAULTS['seeds'][1]})",
    )
    coord.add_argument(
        "--steps", type=_int_at_least(1, 10_000), default=3, help="training steps (default 3)"
    )
    coord.add_argument(
        "--stat",
        choices=_COORD_STATS,
        default="abs_mean",
        help="the statistic of each layer's output (default abs_mean: mean |x|)",
    )
    coord.add_argument(
        "--readout-zero-init", action="store_true", help="zero the readout at initialization"
    )
    coord.add_argument(
        "--data",
        choices=tuple(d for d in DATA if d != "gaussian"),
        default=None,
        help=f"for mlp and cnn, the batch of {_COORD_BATCH} labelled images: digits "
        "(default), fashion-mnist, mnist or auto, as for the other commands",
    )
    coord.add_argument(
        "--data-dir",
        default=None,
        help="directory holding the IDX files (for --data fashion-mnist, mnist or auto)",
    )
    coord.add_argument(
        "--seed", type=_int_at_least(0, _SEED_MAX), default=0, help="base random seed"
    )
    coord.add_argument(
        "--data-seed",
        type=_int_at_least(0, _SEED_MAX),
        default=0,
        help="batch sampling seed (images, or text windows)",
    )
    coord.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="write the figure here (one panel per step); the suffix names the format",
    )
    coord.add_argument("--quiet", action="store_true", help="print nothing")
    coord.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny defaults: widths {','.join(map(str, quick))}, "
        f"{_COORD_DEFAULTS['seeds'][1]} seeds; an explicit option wins over --quick",
    )

    aud = sub.add_parser(
        "audit",
        help="audit a model's initialization, optionally against a recipe",
        description="Import FACTORY (module:name or file.py:name; a function of no arguments "
        "returning an NNX model, or (linen module, variables[, example input])), measure "
        "every parameter with jaxinit.audit (std, std*sqrt(fan_in), depth factor, truncation, "
        "zeros, identity, identical or correlated pairs), compare it with --recipe, and print "
        "the table and the findings. Exit status 1 if there are findings.",
    )
    aud.add_argument("factory", help="module:name of the model factory")
    aud.add_argument(
        "--recipe",
        default=None,
        help="module:name of a jaxinit Recipe, or of a function of no arguments returning one",
    )
    aud.add_argument("--quiet", action="store_true", help="print nothing; only the exit status")
    return parser


_COMMANDS = {
    "demo": _cmd_demo,
    "stats": _cmd_stats,
    "lsuv": _cmd_lsuv,
    "gain": _cmd_gain,
    "coord-check": _cmd_coord_check,
    "audit": _cmd_audit,
}


def _coord_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """coord-check's options left unset (``--quick``'s or the full defaults) and its
    conflicts: --data and --data-dir do not apply to the transformer."""
    if args.command != "coord-check":
        return
    for name, (full, quick) in _COORD_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.lr is None:
        args.lr = _COORD_LR[args.optimizer]
    if args.model == "transformer":
        given = [o for o, v in (("--data", args.data), ("--data-dir", args.data_dir)) if v]
        if given:
            parser.error(
                f"argument {given[0]}: --model transformer trains on the source of Python's "
                "argparse module; --data and --data-dir are for mlp and cnn"
            )
    elif args.data is None:
        args.data = "digits"
    _check_coord_memory(args, parser)


def _check_coord_memory(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse a widest model whose seeds cannot fit in memory, before any work: about four
    copies of the parameters (weights, gradients, optimizer state, update) and the
    activations of each step, for every seed at once."""
    w, n = max(args.widths), _COORD_BATCH
    pixels = 64 if args.data in (None, "digits") else 784
    if args.model == "mlp":
        params, acts = pixels * w + w * w + 10 * w, 4 * n * w
    elif args.model == "cnn":
        params, acts = 9 * w + 9 * w * w + 10 * w, 4 * n * pixels * w
    else:
        tokens = _COORD_TOKENS
        params = 12 * w * w + 2 * 256 * w + tokens * w
        acts = n * tokens * 16 * w + n * 4 * tokens * tokens
    need = 4 * args.seeds * (4 * params + 3 * args.steps * acts)
    have = _memory_bytes()
    if have is not None and need > have:
        parser.error(
            f"--widths up to {w} with --seeds {args.seeds} need about {need / 2**30:.1f} GiB; "
            f"about {have / 2**30:.1f} GiB is available: lower them"
        )


def _fill_defaults(args: argparse.Namespace) -> None:
    """Sizes left unset on the command line: ``--quick``'s when given, else the command's."""
    for name, full in getattr(args, "full_defaults", {}).items():
        if getattr(args, name) is None:
            setattr(args, name, _QUICK[name] if args.quick else full)


def _check_conflicts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Options that would be silently ignored are errors."""
    if not hasattr(args, "data"):
        return
    if args.data_dir is not None and args.data not in _IDX_DATA:
        parser.error(
            f"argument --data-dir: --data {args.data} does not read files; use --data-dir "
            f"with --data {', '.join(_IDX_DATA)}"
        )
    models = getattr(args, "models", None) or (args.model,)
    if "mlp" not in models and "transformer" not in models:
        given = [f"--{n}" for n in ("depth", "width") if n in args.explicit]
        if given:
            parser.error(
                f"argument {given[0]}: {' and '.join(given)} size the MLP; "
                f"--model {', '.join(models)} has fixed layers"
            )
    if args.command == "stats":
        _check_stats_options(args, parser)


def _check_stats_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``stats``' model options apply to one model each: any other use is an error."""
    for option, given, model in (
        ("--spp", args.spp, "resnet"),
        ("--batch-norm", args.batch_norm, "resnet"),
        ("--norm", args.norm is not None, "transformer"),
        ("--scaled-residuals", args.scaled_residuals, "transformer"),
    ):
        if given and args.model != model:
            parser.error(f"argument {option}: applies to --model {model}, not {args.model}")
    if args.norm is None:
        args.norm = "pre"
    if args.model == "transformer" and args.width % _HEADS:
        parser.error(
            f"argument --width: --model transformer splits --width over {_HEADS} heads; "
            f"{args.width} is not a multiple of {_HEADS}"
        )


def _check_memory(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse sizes whose single seed cannot fit in memory, before any work (else XLA may
    allocate for minutes, or the OS kill the process)."""
    if not hasattr(args, "batch"):
        return
    floats = args.batch * 28 * 28  # the input batch
    models = getattr(args, "models", None) or (args.model,)
    if "mlp" in models:
        w, d = args.width, args.depth
        params = 28 * 28 * w + (d - 1) * w * w + w * 10 + d * w + 10
        floats += params + 3 * args.batch * (d * w + 10)  # outputs, their grads, inputs
    if "convnet" in models:
        floats += 3 * args.batch * 28 * 28 * 4  # its outputs sum to ~4 images' pixels each
    need = 4 * floats
    have = _memory_bytes()
    if have is not None and need > have:
        sizes = f"--batch {args.batch}"
        if "mlp" in models:
            sizes += f", --width {args.width}, --depth {args.depth}"
        parser.error(
            f"{sizes} need about {need / 2**30:.1f} GiB for one seed; about "
            f"{have / 2**30:.1f} GiB is available: lower them"
        )


def _memory_bytes() -> int | None:
    """Memory the computation can use: the accelerator's limit, or the host's available
    memory on CPU; None where it cannot be read."""
    try:
        device = jax.devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            return stats.get("bytes_limit")
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, RuntimeError):
        pass
    return None


@functools.cache
def _figure_formats() -> tuple[str, ...]:
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def _hist_inits(args: argparse.Namespace) -> list[str]:
    return [n for n in ("normal", "he") if n in args.inits]


def _check_outputs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Every path the command will write, checked before any work: a folder that is a file,
    a file that is a folder, a figure suffix matplotlib cannot write, or a place that cannot
    be written is a one-line usage error. The check writes (and removes) a temporary file,
    since permissions alone miss read-only or special file systems."""
    if args.command == "demo":
        names = ["summary.json"]
        if not args.no_plots:
            for kind in args.models:
                names.append(f"{kind}_layers.png")
                names += [f"{kind}_{n}_histograms.png" for n in _hist_inits(args)]
        folder, files, option = args.out, names, "--out"
    elif args.command in ("stats", "coord-check") and args.plot is not None:
        suffix = Path(args.plot).suffix.lower().lstrip(".")
        if args.plot and suffix not in _figure_formats():
            parser.error(
                f"argument --plot: {args.plot!r} needs a figure suffix: "
                f".{', .'.join(_figure_formats())}"
            )
        folder, files, option = str(Path(args.plot).parent), [Path(args.plot).name], "--plot"
    else:
        return
    if not folder or not all(files):
        parser.error(f"argument {option}: an empty path")
    where = Path(folder)

    def fail(why: str) -> None:
        parser.error(f"argument {option}: cannot write {str(where)!r}: {why}")

    if where.exists() and not where.is_dir():
        fail("it is a file, not a directory")
    for name in files:
        if (where / name).is_dir():
            fail(f"{name} in it is a directory")
    created: list[Path] = []
    try:
        for folder_ in reversed([where, *where.parents]):
            if not folder_.is_dir():
                folder_.mkdir()
                created.append(folder_)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as err:
        fail(f"{err.strerror or err} ({err.filename or where})")
    finally:
        for folder_ in reversed(created):
            folder_.rmdir()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxinit`` console script; returns the exit status.

    Usage errors (bad options, missing or corrupt data, unwritable outputs, sizes that cannot
    fit in memory) print one line and exit 2, before any work; Ctrl-C ends the command with
    one line and status 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices[args.command]
    # before the defaults are filled in: None means not given
    args.explicit = {n for n in _QUICK if getattr(args, n, None) is not None}
    _fill_defaults(args)
    _coord_defaults(args, sub)
    _check_conflicts(args, sub)
    _check_outputs(args, sub)
    _check_memory(args, sub)
    try:
        return _COMMANDS[args.command](args, sub)
    except KeyboardInterrupt:
        print(f"jaxinit {args.command}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, jax.errors.JaxRuntimeError) as err:
        if not isinstance(err, MemoryError) and "RESOURCE_EXHAUSTED" not in str(err):
            raise
        sizes = (
            "--widths or --seeds"
            if args.command == "coord-check"
            else "--batch, --width, --depth or --chunk-size"
        )
        sub.error(f"out of memory; lower {sizes} ({str(err).splitlines()[0][:200]})")
        return 2  # parser.error exits with 2 itself


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
