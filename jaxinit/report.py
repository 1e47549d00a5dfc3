"""Rich tables over :class:`jaxinit.LayerStats`, :class:`jaxinit.LSUVReport` and gains.

A thin layer: it formats, it computes nothing beyond :meth:`LayerStats.summary`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from .analysis import LayerStats, Prediction


def _band(b, i: int) -> str:
    return f"{b.mean[i]:.3g} [{b.lo[i]:.3g}, {b.hi[i]:.3g}]"


def layers_table(
    stats: LayerStats,
    *,
    title: str | None = None,
    predicted: Prediction | None = None,
    level: float = 0.95,
) -> Table:
    """One row per layer: mean, std and gradient std over seeds (mean [interval])."""
    s = stats.summary(level)
    table = Table(title=title or f"per-layer statistics, {stats.seeds} seeds", title_style="bold")
    table.add_column("layer", style="cyan")
    cols = [c for c in ("mean", "std", "grad_std") if c in s]
    for c in cols:
        table.add_column(f"{c} [{100 * level:g}%]", justify="right")
    if predicted is not None:
        table.add_column("predicted std", justify="right", style="magenta")
    for i, name in enumerate(stats.names):
        row = [name, *(_band(s[c], i) for c in cols)]
        if predicted is not None:
            row.append(f"{predicted.std[i]:.3g}" if i < len(predicted.std) else "")
        table.add_row(*row)
    return table


def compare_table(
    results: Mapping[str, LayerStats], *, title: str = "initializers", level: float = 0.95
) -> Table:
    """One row per initializer: first and last layer std, last layer mean, the gradient std
    ratio first/last layer, and the initial loss (mean [interval] over seeds)."""
    table = Table(title=title, title_style="bold")
    for name, just in [
        ("init", "left"),
        ("std, first layer", "right"),
        ("std, last layer", "right"),
        ("mean, last layer", "right"),
        ("grad std first/last", "right"),
        ("loss", "right"),
    ]:
        table.add_column(name, justify=just)
    for label, st in results.items():
        s = st.summary(level)
        row = [label, _band(s["std"], 0), _band(s["std"], -1), _band(s["mean"], -1)]
        if st.grad_std is not None:
            g = np.asarray(st.grad_std, np.float64)
            loss = np.asarray(st.loss, np.float64)
            # Overflowed seeds give inf/NaN cells, shown as such (the caller reports them).
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                ratio = g[:, 0] / g[:, -1]
                lo, hi = np.quantile(ratio, [(1 - level) / 2, (1 + level) / 2])
                row.append(f"{ratio.mean():.3g} [{lo:.3g}, {hi:.3g}]")
                lo, hi = np.quantile(loss, [(1 - level) / 2, (1 + level) / 2])
                row.append(f"{loss.mean():.3g} [{lo:.3g}, {hi:.3g}]")
        else:
            row += ["", ""]
        table.add_row(*row)
    return table


def lsuv_table(report, *, title: str = "LSUV") -> Table:
    """The per-layer LSUV report (path, iterations, std/mean before and after, converged)."""
    table = Table(title=title, title_style="bold")
    for c in ("layer", "iters", "std before", "std after", "mean before", "mean after", "ok"):
        table.add_column(c, justify="left" if c == "layer" else "right")
    for i, path in enumerate(report.paths):
        table.add_row(
            path,
            str(int(report.iterations[i])),
            f"{float(report.std_before[i]):.4g}",
            f"{float(report.std_after[i]):.4g}",
            f"{float(report.mean_before[i]):.4g}",
            f"{float(report.mean_after[i]):.4g}",
            "yes" if bool(report.converged[i]) else "[red]no[/red]",
        )
    return table


def gain_table(rows: Sequence[tuple[str, float, float | None]]) -> Table:
    """``(activation, gain, critical sigma_w or None)`` rows."""
    table = Table(title="gains", title_style="bold")
    table.add_column("activation", style="cyan")
    table.add_column("gain", justify="right")
    table.add_column("He std x sqrt(fan_in)", justify="right")
    table.add_column("critical sigma_w (sigma_b=0)", justify="right")
    for name, g, crit in rows:
        table.add_row(name, f"{g:.6g}", f"{g:.6g}", "-" if crit is None else f"{crit:.6g}")
    return table


def console(*, quiet: bool = False) -> Console:
    """A rich console writing to stdout (``quiet``: discard output)."""
    return Console(quiet=quiet, highlight=False)
