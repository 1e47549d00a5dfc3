"""Figures (matplotlib, the optional ``plot`` extra): per-layer statistics with seed bands,
measured beside predicted, and per-layer activation histograms. PNG files.

A thin layer over :class:`jaxinit.LayerStats`, :class:`jaxinit.Prediction` and
:func:`jaxinit.layer_outputs`; it uses matplotlib's object API (no pyplot state) and the Agg
canvas, so it works without a display and inside tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .analysis import LayerStats, Prediction

try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jaxinit.plotting needs matplotlib: pip install matplotlib (or jaxinit[plot])."
    ) from err


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=fig.dpi)
    return path


def plot_layer_stats(
    results: Mapping[str, LayerStats] | LayerStats,
    path: str | os.PathLike,
    *,
    predicted: Mapping[str, Prediction] | Prediction | None = None,
    title: str | None = None,
    level: float = 0.95,
    log_std: bool | None = None,
) -> Path:
    """Per-layer mean, std and gradient std over seeds, one line + band per initializer.

    Args:
      results: ``{label: LayerStats}`` (or one LayerStats), all for the same layers.
      path: PNG file to write (directories are created).
      predicted: ``{label: Prediction}`` drawn dashed on the std panel (and, relative to
        the measured last layer, on the gradient panel).
      title: Figure title.
      level: Coverage of the seed band (quantiles of the per-seed values).
      log_std: Log scale for the std panels; default: when values span over 100x.

    Returns:
      The path written.
    """
    if isinstance(results, LayerStats):
        results = {"": results}
    if isinstance(predicted, Prediction):
        predicted = {next(iter(results)): predicted}
    predicted = predicted or {}
    panels = ["mean", "std"] + (
        ["grad_std"] if any(r.grad_std is not None for r in results.values()) else []
    )
    fig = Figure(figsize=(4.2 * len(panels), 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = [f"C{i}" for i in range(10)]
    for (label, st), color in zip(results.items(), colors * 10, strict=False):
        s = st.summary(level)
        layers = np.arange(1, len(st.names) + 1)
        for ax, field in zip(axes, panels, strict=True):
            if field not in s:
                continue
            b = s[field]
            ax.plot(layers, b.mean, color=color, label=label or None, lw=1.6)
            ax.fill_between(layers, b.lo, b.hi, color=color, alpha=0.2, lw=0)
        pred = predicted.get(label)
        if pred is not None:
            n = min(len(pred.std), len(layers))
            axes[1].plot(
                layers[:n],
                pred.std[:n],
                "--",
                color=color,
                lw=1.2,
                label=f"{label} predicted" if label else "predicted",
            )
            if "grad_std" in panels and st.grad_std is not None:
                last = float(np.mean(np.asarray(st.grad_std)[:, n - 1]))
                rel = pred.grad_std[:n] / pred.grad_std[n - 1]
                axes[2].plot(layers[:n], rel * last, "--", color=color, lw=1.2)
    titles = {
        "mean": "mean of layer output",
        "std": "std of layer output",
        "grad_std": "std of d loss / d output",
    }
    for ax, field in zip(axes, panels, strict=True):
        ax.set_title(titles[field], fontsize=10)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        if field != "mean":
            values = np.concatenate(
                [
                    np.ravel(getattr(r, field))
                    for r in results.values()
                    if getattr(r, field) is not None
                ]
            )
            values = values[np.isfinite(values) & (values > 0)]
            use_log = log_std
            if use_log is None:
                use_log = values.size > 0 and values.max() / values.min() > 100
            if use_log:
                ax.set_yscale("log")
    if any(results) or predicted:
        axes[min(1, len(axes) - 1)].legend(fontsize=8)
    seeds = {r.seeds for r in results.values()}
    band = f"bands: central {100 * level:g}% of {'/'.join(map(str, sorted(seeds)))} seeds"
    fig.suptitle(f"{title}  ({band})" if title else band, fontsize=11)
    return _save(fig, path)


def plot_histograms(
    outputs: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    layers: Sequence[str] | int = 8,
    bins: int = 60,
    title: str | None = None,
) -> Path:
    """Histograms of layer outputs (one panel per layer), e.g. from
    :func:`jaxinit.layer_outputs`.

    Args:
      outputs: ``{path: array}`` in forward order.
      path: PNG file to write.
      layers: Paths to show, or how many, spread evenly from first to last.
      bins: Histogram bins.
      title: Figure title.
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
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, chosen, strict=False):
        v = np.asarray(outputs[name], np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size:  # one filled step artist per panel (ax.hist draws a patch per bin)
            counts, edges = np.histogram(v, bins=bins)
            ax.stairs(counts, edges, fill=True, color="C0", alpha=0.85)
        ax.set_title(
            f"{name}\nmean {v.mean():.3g}, std {v.std():.3g}" if v.size else name, fontsize=8
        )
        ax.tick_params(labelsize=7)
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)
