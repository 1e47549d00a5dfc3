"""Figures (matplotlib, the optional ``plot`` extra): per-layer statistics with seed bands,
measured beside predicted, per-layer activation histograms, the coordinate check, signal
propagation plots and rank collapse. PNG files.

A thin layer over :class:`jaxinit.LayerStats`, :class:`jaxinit.Prediction`,
:func:`jaxinit.layer_outputs` and what :func:`jaxinit.coord_check` returns; it uses
matplotlib's object API (no pyplot state) and the Agg canvas, so it works without a display and
inside tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis import Band, LayerStats
from ..meanfield import Prediction

if TYPE_CHECKING:
    from ..recipes.coord_check import CoordCheck

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jaxinit.app.plotting needs matplotlib: pip install matplotlib (or jaxinit[plot])."
    ) from err

__all__ = [
    "OFF_SCALE",
    "histograms_figure",
    "layer_stats_figure",
    "plot_coord_check",
    "plot_histograms",
    "plot_layer_stats",
    "plot_rank_collapse",
    "plot_spp",
    "rank_collapse_figure",
    "spp_figure",
]


_BASE = ("mean", "std", "grad_std")  # the panels every figure has (grad_std: if measured)

OFF_SCALE = 100.0
"""On the mean panel, an initializer whose largest |mean| exceeds this many times the typical
layer std (the lower median over initializers of each one's largest std) is drawn off scale:
up to the layer where it leaves the range of the others, marked there."""


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    return path


def _finite(values) -> np.ndarray:
    """float64 copy with inf/NaN as NaN (gaps in lines; matplotlib draws NaN as nothing)."""
    v = np.array(values, np.float64)
    v[~np.isfinite(v)] = np.nan
    return v


def _largest(*arrays) -> float:
    """The largest finite |value| (0 if none)."""
    v = np.abs(np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays]))
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else 0.0


def _off_scale(summaries: Mapping[str, Mapping[str, Band]]) -> list[str]:
    """Labels whose mean panel values exceed :data:`OFF_SCALE` x the typical layer std."""
    stds = sorted(_largest(s["std"].mean, s["std"].hi) for s in summaries.values())
    stds = [v for v in stds if v > 0]
    if len(summaries) < 2 or not stds:
        return []
    typical = stds[(len(stds) - 1) // 2]
    return [
        label
        for label, s in summaries.items()
        if _largest(s["mean"].mean, s["mean"].lo, s["mean"].hi) > OFF_SCALE * typical
    ]


def _mark(ax, x: float, top: bool, marker: str, color: str) -> None:
    """A marker on the top (or bottom) edge of ``ax`` at data ``x``."""
    ax.plot(
        [x],
        [1.0 if top else 0.0],
        marker=marker,
        ms=7,
        mew=2,
        color=color,
        ls="none",
        transform=ax.get_xaxis_transform(),
        clip_on=False,
        zorder=5,
    )


def _series(ax, layers: np.ndarray, band: Band, color: str) -> bool:
    """The seed-mean line and band up to the last finite layer; an ``x`` on the top edge at
    the first non-finite layer. Returns whether there was one."""
    centre, lo, hi = _finite(band.mean), _finite(band.lo), _finite(band.hi)
    ax.plot(layers, centre, color=color, lw=1.6)
    ok = ~(np.isnan(centre) | np.isnan(lo) | np.isnan(hi))
    ax.fill_between(layers, lo, hi, where=ok, color=color, alpha=0.2, lw=0)
    bad = np.flatnonzero(np.isnan(centre))
    if bad.size:
        _mark(ax, float(layers[bad[0]]), True, "x", color)
    return bool(bad.size)


def _off_scale_series(ax, layers: np.ndarray, band: Band, color: str) -> tuple[int, bool]:
    """The seed-mean line of an off-scale series, up to the first layer outside the axes'
    current y-range (or non-finite), marked there with a triangle (or an ``x``). Returns the
    index of that layer and whether it is non-finite."""
    low, high = ax.get_ylim()
    centre = np.array(band.mean, np.float64)
    finite = np.isfinite(centre)
    out = np.flatnonzero(~finite | (centre < low) | (centre > high))
    k = int(out[0]) if out.size else len(centre)
    y = _finite(centre)
    ax.plot(layers[: k + 1], y[: k + 1], color=color, lw=1.6)
    if k < len(centre):
        if finite[k]:
            _mark(
                ax,
                float(layers[k]),
                bool(centre[k] > high),
                "^" if centre[k] > high else "v",
                color,
            )
        else:
            _mark(ax, float(layers[k]), True, "x", color)
    return k, bool(k < len(centre) and not finite[k])


def layer_stats_figure(
    results: Mapping[str, LayerStats] | LayerStats,
    *,
    predicted: Mapping[str, Prediction] | Prediction | None = None,
    title: str | None = None,
    level: float = 0.95,
    log_std: bool | None = None,
) -> Figure:
    """The figure that :func:`plot_layer_stats` saves (same arguments, less ``path``).

    Returns:
      A matplotlib ``Figure`` on an Agg canvas: one Axes per panel (mean, std, gradient std
      if measured, then each statistic asked for with ``layer_stats(stats=...)``, titled with
      its name), the legend in ``fig.legends``.
    """
    if isinstance(results, LayerStats):
        results = {"": results}
    if isinstance(predicted, Prediction):
        predicted = {next(iter(results)): predicted}
    predicted = dict(predicted or {})
    panels = ["mean", "std"] + (
        ["grad_std"] if any(r.grad_std is not None for r in results.values()) else []
    )
    panels += list(dict.fromkeys(name for r in results.values() for name in r.stats))
    # One row of up to three panels (four: a square two by two), more rows beyond.
    cols = 2 if len(panels) == 4 else min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.9 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in grid[len(panels) :]:
        ax.remove()
    axes = dict(zip(panels, grid, strict=False))
    summaries = {label: st.summary(level) for label, st in results.items()}
    colors = {label: f"C{i % 10}" for i, label in enumerate(results)}
    off = _off_scale(summaries)
    overflow = False
    for field, ax in axes.items():
        for label, st in results.items():
            if field in summaries[label] and not (field == "mean" and label in off):
                layers = np.arange(1, len(st.names) + 1)
                overflow |= _series(ax, layers, summaries[label][field], colors[label])
    for label, pred in predicted.items():
        st, color = results[label], colors[label]
        n = min(len(pred.std), len(st.names))
        layers = np.arange(1, n + 1)
        axes["std"].plot(layers, _finite(pred.std[:n]), "--", color=color, lw=1.2)
        if "grad_std" in axes and st.grad_std is not None and n:
            last = float(np.mean(np.asarray(st.grad_std, np.float64)[:, n - 1]))
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                rel = np.asarray(pred.grad_std[:n], np.float64) / float(pred.grad_std[n - 1])
            if math.isfinite(last) and last > 0:  # else: no measured anchor, no dashed line
                axes["grad_std"].plot(layers, _finite(rel * last), "--", color=color, lw=1.2)
    notes = []
    if off:
        ax = axes["mean"]
        ax.set_ylim(ax.get_ylim())  # the range of the other initializers
        for label in off:
            layers = np.arange(1, len(results[label].names) + 1)
            k, nonfinite = _off_scale_series(ax, layers, summaries[label]["mean"], colors[label])
            overflow |= nonfinite
            if not nonfinite and k < len(layers):
                band = summaries[label]["mean"]
                top = _largest(band.mean, band.lo, band.hi)
                notes.append(f"{label} off scale from layer {k + 1} (|mean| to {top:.1g})")
    titles = {
        "mean": "mean of layer output",
        "std": "std of layer output",
        "grad_std": "std of d loss / d output",
    }
    for field, ax in axes.items():
        ax.set_title(titles.get(field, field), fontsize=10, pad=9)  # room for edge markers
        ax.set_xlabel("layer" if field != "mean" or not notes else "layer\n" + "\n".join(notes))
        ax.grid(alpha=0.3)
        if field != "mean":
            values = np.concatenate([np.ravel(v) for v in _values(results, field)])
            values = values[np.isfinite(values)]
            # A statistic that can be zero or negative (an extra one) stays on a linear axis.
            positive = field in titles or bool((values > 0).all())
            values = values[values > 0]
            use_log = log_std
            if use_log is None:
                use_log = values.size > 0 and values.max() / values.min() > 100
            if use_log and positive:
                ax.set_yscale("log")
    handles = _legend_handles(results, colors, bool(predicted), overflow, bool(off))
    if len(handles) > 1:  # below the panels, covering none of them
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    seeds = {r.seeds for r in results.values()}
    band = f"bands: central {100 * level:g}% of {'/'.join(map(str, sorted(seeds)))} seeds"
    fig.suptitle(f"{title}  ({band})" if title else band, fontsize=11)
    return fig


def _values(results: Mapping[str, LayerStats], field: str) -> list[np.ndarray]:
    """Each result's per-seed values of a statistic, where measured."""
    found = []
    for r in results.values():
        v = r.stats.get(field) if field not in _BASE else getattr(r, field)
        if v is not None:
            found.append(np.asarray(v, np.float64))
    return found


def _legend_handles(results, colors, predicted: bool, overflow: bool, off: bool) -> list:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=colors[label], lw=1.6, label=label or "measured") for label in results
    ]
    if predicted:
        handles.append(Line2D([], [], color="0.35", ls="--", lw=1.2, label="predicted"))
    if overflow:
        handles.append(
            Line2D(
                [],
                [],
                color="0.35",
                marker="x",
                mew=2,
                ls="none",
                label="first layer with inf/NaN (float32 overflow)",
            )
        )
    if off:
        handles.append(
            Line2D(
                [],
                [],
                color="0.35",
                marker="^",
                ls="none",
                label="mean off scale from here (▲ above, ▼ below)",
            )
        )
    return handles


def plot_layer_stats(
    results: Mapping[str, LayerStats] | LayerStats,
    path: str | os.PathLike,
    *,
    predicted: Mapping[str, Prediction] | Prediction | None = None,
    title: str | None = None,
    level: float = 0.95,
    log_std: bool | None = None,
) -> Path:
    """Per-layer mean, std and gradient std over seeds, one line + band per initializer, and
    a panel for each statistic asked for with ``layer_stats(stats=...)``.

    Overflowed seeds do not hide the others: a line stops at the first layer where its seed
    mean is inf/NaN, marked ``x`` on the panel's top edge; on the mean panel an initializer far
    off the others' scale (see :data:`OFF_SCALE`) is drawn up to where it leaves their range,
    marked with a triangle and named under the panel. The legend sits below the panels.

    Args:
      results: ``{label: LayerStats}`` (or one LayerStats), all for the same layers.
      path: PNG file to write (directories are created).
      predicted: ``{label: Prediction}`` drawn dashed on the std panel (and, relative to
        the measured last layer, on the gradient panel).
      title: Figure title.
      level: Coverage of the seed band (quantiles of the per-seed values).
      log_std: Log scale for the std panels and for the extra statistics' panels whose values
        are all positive; default: when values span over 100x.

    Returns:
      The path written.
    """
    fig = layer_stats_figure(
        results, predicted=predicted, title=title, level=level, log_std=log_std
    )
    return _save(fig, path)


def histograms_figure(
    outputs: Mapping[str, np.ndarray],
    *,
    layers: Sequence[str] | int = 8,
    bins: int = 60,
    title: str | None = None,
) -> Figure:
    """The figure that :func:`plot_histograms` saves (same arguments, less ``path``).

    Returns:
      A matplotlib ``Figure`` on an Agg canvas; its visible Axes are the chosen layers in
      order, each titled with the layer's path.
    """
    names = list(outputs)
    if isinstance(layers, int):
        k = max(1, min(layers, len(names)))
        idx = np.unique(np.round(np.linspace(0, len(names) - 1, k)).astype(int))
        chosen = [names[i] for i in idx]
    else:
        unknown = [n for n in layers if n not in outputs]
        if unknown:
            raise ValueError(f"plot_histograms: layers {unknown} not in outputs {names}.")
        chosen = list(layers)
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, chosen, strict=False):
        v = np.asarray(outputs[name], np.float64).ravel()
        bad = int(np.count_nonzero(~np.isfinite(v)))
        v = v[np.isfinite(v)]
        if v.size:  # one filled step artist per panel (ax.hist draws a patch per bin)
            counts, edges = np.histogram(v, bins=bins)
            ax.stairs(counts, edges, fill=True, color="C0", alpha=0.85)
            line = f"mean {v.mean():.3g}, std {v.std():.3g}"
            if bad:
                line += f"; {bad} inf/NaN left out"
        else:
            line = f"all {bad} values inf/NaN"
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{name}\n{line}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_histograms(
    outputs: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    layers: Sequence[str] | int = 8,
    bins: int = 60,
    title: str | None = None,
) -> Path:
    """Histograms of layer outputs (one panel per layer), e.g. from
    :func:`jaxinit.layer_outputs`, in the mapping's order.

    Args:
      outputs: ``{path: array}`` in forward order (panels follow the mapping's order).
      path: PNG file to write.
      layers: Paths to show, or how many, spread evenly from first to last.
      bins: Histogram bins.
      title: Figure title.

    Returns:
      The path written.
    """
    return _save(histograms_figure(outputs, layers=layers, bins=bins, title=title), path)


def plot_coord_check(check: CoordCheck, path: str | os.PathLike | None = None) -> Figure:
    """The coordinate check as microsoft/mup's ``plot_coord_data`` draws it: one panel per
    step, the statistic against width on log-log axes, one line per layer.

    Each line is the seed mean of a layer's statistic (what :meth:`CoordCheck.mean` and the
    table show), coloured by depth (viridis, first layer dark, readout light), with a band
    from the smallest to the largest seed's value. A flat line is a width-independent layer;
    the legend gives each layer's fitted exponent (:meth:`CoordCheck.exponents`) at the last
    step. A value that is 0 or not finite (a zero-initialized readout at step 1) is left out of
    its line rather than put on the log axis; a layer with none left is not drawn in that
    panel.

    Args:
      check: what :func:`jaxinit.coord_check` returned.
      path: a file to write the figure to (its suffix names the format; folders are created);
        None: write nothing.

    Returns:
      A matplotlib ``Figure`` on an Agg canvas, one Axes per step (titled ``t = 1`` ...), the
      legend in ``fig.legends``.
    """
    from matplotlib import colormaps
    from matplotlib.ticker import NullLocator

    values = np.asarray(check.values, np.float64)  # (widths, seeds, steps, layers)
    _, seeds, steps, n_layers = values.shape
    shown = np.where(np.isfinite(values) & (values > 0), values, np.nan)
    mean = np.asarray(check.mean(), np.float64)
    mean = np.where(np.all(np.isfinite(shown), axis=1) & (mean > 0), mean, np.nan)
    # min and max over the seeds left (NaN where none is)
    lo = np.min(np.where(np.isnan(shown), np.inf, shown), axis=1)
    hi = np.max(np.where(np.isnan(shown), -np.inf, shown), axis=1)
    lo, hi = np.where(np.isinf(lo), np.nan, lo), np.where(np.isinf(hi), np.nan, hi)
    exponents = np.asarray(check.exponents(), np.float64)[-1]
    widths = np.asarray(check.widths, np.float64)
    cols = min(steps, 4)
    rows = math.ceil(steps / cols)
    fig = Figure(figsize=(3.6 * cols, 3.3 * rows + 0.3 * math.ceil(n_layers / 3)), dpi=100)
    fig.set_layout_engine("constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax in grid[steps:]:
        ax.remove()
    cmap = colormaps["viridis"]
    colors = [cmap(0.9 * j / max(n_layers - 1, 1)) for j in range(n_layers)]
    handles: list = [None] * n_layers  # each layer's first line drawn, for the legend
    for t, ax in enumerate(grid[:steps]):
        for j in range(n_layers):
            if np.isnan(mean[:, t, j]).all():
                continue
            (line,) = ax.plot(widths, mean[:, t, j], "o-", color=colors[j], lw=1.5, ms=3)
            ok = ~(np.isnan(lo[:, t, j]) | np.isnan(hi[:, t, j]))
            ax.fill_between(widths, lo[:, t, j], hi[:, t, j], where=ok, color=colors[j], alpha=0.2)
            handles[j] = handles[j] or line
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(widths, [str(w) for w in check.widths], fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"t = {t + 1}", fontsize=10)
        ax.set_xlabel("width")
        ax.grid(alpha=0.3, which="both")
    grid[0].set_ylabel(check.stat.replace("_", " "))
    labelled = []
    for j, line in enumerate(handles):
        if line is None:
            continue
        e = exponents[j]
        line.set_label(f"{check.layers[j]} ({e:+.2f})" if np.isfinite(e) else check.layers[j])
        labelled.append(line)
    if labelled:
        fig.legend(
            handles=labelled,
            loc="outside lower center",
            ncols=min(3, len(labelled)),
            fontsize=8,
            frameon=False,
            title=f"layer (exponent at t = {steps})",
            title_fontsize=8,
        )
    fig.suptitle(
        f"coordinate check: {check.parametrization}, {check.optimizer} lr "
        f"{check.learning_rate:g}  (line: mean, band: min to max over {seeds} seeds)",
        fontsize=10,
    )
    if path is not None:
        _save(fig, path)
    return fig


# ------------------------------------------------------------------------------------------
# signal propagation plots and rank collapse

_SPP_PANELS = (
    ("mean_sq", "average squared channel mean"),
    ("var", "average channel variance"),
    ("branch_var", "residual branch variance"),
    ("branch_over_skip", "branch variance / skip variance"),
)


def _per_seed(values, what: str) -> np.ndarray:
    """``values`` as float64 ``(seeds, points)``: one row for a 1-D series, the leading axes
    (seeds, e.g. from ``jax.vmap``) flattened otherwise."""
    v = np.asarray(values, np.float64)
    if v.ndim == 0:
        raise ValueError(f"{what}: got a scalar; pass one value per block or layer.")
    return v.reshape(-1, v.shape[-1])


def _band(v: np.ndarray, level: float) -> Band:
    with np.errstate(invalid="ignore", over="ignore"):
        centre = v.mean(axis=0)
        lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return Band(centre, lo, hi)


def _positive(*arrays) -> bool:
    v = np.concatenate([np.ravel(a) for a in arrays])
    v = v[np.isfinite(v)]
    return bool(v.size) and bool((v > 0).all()) and float(v.max() / v.min()) > 100


def spp_figure(
    results: Mapping[str, Any] | Any,
    *,
    predicted: Mapping[str, Mapping[str, Any]] | None = None,
    title: str | None = None,
    level: float = 0.95,
) -> Figure:
    """The figure that :func:`plot_spp` saves (same arguments, less ``path``).

    Returns:
      A matplotlib ``Figure`` on an Agg canvas: four Axes (average squared channel mean,
      average channel variance, residual branch variance, branch / skip variance, each
      against the block index), the legend in ``fig.legends``.
    """
    from ..diagnostics import SPP

    if isinstance(results, SPP):
        results = {"": results}
    predicted = dict(predicted or {})
    unknown = [label for label in predicted if label not in results]
    if unknown:
        raise ValueError(
            f"plot_spp: predicted has labels {unknown} that are not in results "
            f"{list(results)}; key each prediction by its measured configuration's label."
        )
    fig = Figure(figsize=(4.0 * len(_SPP_PANELS), 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(_SPP_PANELS), squeeze=False).ravel()
    colors = {label: f"C{i % 10}" for i, label in enumerate(results)}
    for ax, (field, name) in zip(axes, _SPP_PANELS, strict=True):
        drawn = []
        for label, s in results.items():
            v = _per_seed(getattr(s, field), "plot_spp")
            blocks = np.arange(1, v.shape[1] + 1)
            _series(ax, blocks, _band(v, level), colors[label])
            drawn.append(v)
            pred = predicted.get(label, {})
            if field in pred:
                p = _finite(pred[field])
                n = min(len(p), len(blocks))
                ax.plot(blocks[:n], p[:n], "--", color=colors[label], lw=1.2)
                drawn.append(p[None, :n])
        if drawn and _positive(*drawn):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("residual block")
    handles = [_line(colors[label], "-", label or "measured") for label in results] + (
        [_line("0.3", "--", "predicted")] if predicted else []
    )
    if len(handles) > 1 or predicted:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _line(color: str, style: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, ls=style, lw=1.6, label=label)


def plot_spp(
    results: Mapping[str, Any] | Any,
    path: str | os.PathLike,
    *,
    predicted: Mapping[str, Mapping[str, Any]] | None = None,
    title: str | None = None,
    level: float = 0.95,
) -> Path:
    """Signal propagation plots (Brock et al. 2021): per residual block, the average squared
    channel mean, the average channel variance, the residual branch's variance and its ratio
    to the skip path's, one line per configuration (seed mean, with a ``level`` band over
    seeds when the arrays carry a leading seed axis, e.g. from ``jax.vmap`` over seeds).

    Args:
      results: ``{label: SPP}`` (or one :class:`jaxinit.diagnostics.SPP`), from
        :func:`jaxinit.diagnostics.spp`.
      path: The file to write (its suffix names the format; folders are created).
      predicted: ``{label: {field: per-block values}}`` drawn dashed beside the measured
        line of that label; fields ``mean_sq``, ``var``, ``branch_var``, ``branch_over_skip``.
      title: Figure title.
      level: Coverage of the seed band.

    Returns:
      The path written.
    """
    return _save(spp_figure(results, predicted=predicted, title=title, level=level), path)


def rank_collapse_figure(
    cosine: Mapping[str, Any],
    *,
    qkv: Mapping[str, Any] | None = None,
    x: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
    xlabel: str = "layer",
    title: str | None = None,
    level: float = 0.95,
) -> Figure:
    """The figure that :func:`plot_rank_collapse` saves (same arguments, less ``path``).

    Returns:
      A matplotlib ``Figure`` on an Agg canvas: one Axes (token cosine), two with ``qkv``
      (then the query/key gradient ratio), the legend in ``fig.legends``.
    """
    panels = [("token cosine", cosine)] + ([("||dL/dW_Q|| / ||dL/dW_V||", qkv)] if qkv else [])
    fig = Figure(figsize=(4.6 * len(panels), 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    labels: list[str] = [str(k) for k in dict.fromkeys([*cosine, *(qkv or {})])]
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    for ax, (name, series) in zip(axes, panels, strict=True):
        for label, values in series.items():
            if isinstance(values, LayerStats):
                if "token_cosine" not in values.stats:
                    raise ValueError(
                        f"plot_rank_collapse: {label!r} is a LayerStats without token_cosine; "
                        "measure it with layer_stats(stats=('token_cosine',))."
                    )
                values = values.stats["token_cosine"]
            v = _per_seed(values, "plot_rank_collapse")
            if x is None:
                xs = np.arange(1, v.shape[1] + 1)
            else:
                xs = np.asarray(x[label] if isinstance(x, Mapping) else x, np.float64)
            if len(xs) != v.shape[1]:
                raise ValueError(
                    f"plot_rank_collapse: {label!r} has {v.shape[1]} values per seed but "
                    f"{len(xs)} x positions; pass one x per value."
                )
            _series(ax, xs, _band(v, level), colors[label])
            ax.plot(xs, _finite(v.mean(axis=0)), "o", color=colors[label], ms=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
    axes[0].set_ylim(top=max(1.02, axes[0].get_ylim()[1]))
    fig.legend(
        handles=[_line(colors[label], "-", label) for label in labels],
        loc="outside lower center",
        ncols=min(len(labels), 6),
    )
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_rank_collapse(
    cosine: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    qkv: Mapping[str, Any] | None = None,
    x: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
    xlabel: str = "layer",
    title: str | None = None,
    level: float = 0.95,
) -> Path:
    """Rank collapse (Noci et al. 2022): the token cosine against layer (or depth), one line
    per configuration (seed mean, with a ``level`` band over seeds), and optionally the
    query (or key) to value gradient-norm ratio in a second panel.

    Args:
      cosine: ``{label: values}``: ``(layers,)`` or ``(seeds, layers)`` token cosines (from
        :func:`jaxinit.measure`, a ``jax.vmap`` over seeds, or a :class:`jaxinit.LayerStats`
        measured with ``stats=("token_cosine",)``).
      path: The file to write (its suffix names the format; folders are created).
      qkv: ``{label: values}`` of :func:`jaxinit.diagnostics.qkv_grad_ratios`' ``q_over_v``
        (or ``k_over_v``), the same shapes.
      x: The x positions (layer indices or model depths), shared or per label; default
        ``1, 2, ...``.
      xlabel: The x axis label (``"depth"`` when each point is a model).
      title: Figure title.
      level: Coverage of the seed band.

    Returns:
      The path written.
    """
    fig = rank_collapse_figure(cosine, qkv=qkv, x=x, xlabel=xlabel, title=title, level=level)
    return _save(fig, path)
