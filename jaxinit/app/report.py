"""Rich tables over :class:`jaxinit.LayerStats`, :class:`jaxinit.LSUVReport` and gains.

A thin layer: it formats, it computes nothing beyond :meth:`LayerStats.summary`. Tables fit
an 80-column terminal with one line per row: a statistic over seeds is one ``mean±h`` cell of
at most :data:`CELL` characters, where the central ``level`` of seeds lie within mean ± h, and
the level is stated once, in the caption. A per-layer table with statistics beyond the default
ones (``layer_stats(stats=...)``) may be wider; in a narrow terminal its cells then take two
lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..analysis import LayerStats
from ..meanfield import Prediction

__all__ = [
    "CELL",
    "compare_table",
    "console",
    "gain_table",
    "layers_table",
    "lsuv_table",
]

CELL = 12
"""Most characters of a ``mean±h`` cell (any float32 statistic fits)."""

_Justify = Literal["left", "right"]  # the rich ``JustifyMethod`` values used here


def _num(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits: fixed notation from 0.001 to 99999, e notation
    without exponent padding outside (``8.2e-5``, ``1.20e21``).

    >>> _num(1234.5, 3), _num(0.012149, 3), _num(-8.18e-5, 2), _num(1.2e21, 3), _num(1.0, 3)
    ('1230', '0.0121', '-8.2e-5', '1.20e21', '1.00')
    """
    if not math.isfinite(x):
        return str(float(x))  # inf, -inf, nan
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    exp = int(exponent)  # after rounding: 9.996 to 3 digits is 1.00e+01
    if not -3 <= exp <= 4:
        return f"{mantissa}e{exp}"
    decimals = digits - 1 - exp
    return f"{x:.{decimals}f}" if decimals >= 0 else f"{round(x, decimals):.0f}"


def _exp10(x: float) -> int:
    return math.floor(math.log10(abs(x)))


def _num_up(h: float, digits: int) -> str:
    """:func:`_num` of ``h > 0`` rounded up, so that ``mean ± h`` still covers the interval.

    >>> _num_up(0.149, 1), _num_up(0.149, 2), _num_up(460.0, 2), _num_up(5.5e21, 1)
    ('0.2', '0.15', '460', '6e21')
    """
    unit = 10.0 ** (_exp10(h) - digits + 1)
    return _num(math.ceil(h / unit * (1 - 1e-12)) * unit, digits)


def _pm(centre: float, lo: float, hi: float) -> str:
    """``centre±h`` in at most :data:`CELL` characters, with ``[lo, hi]`` inside
    ``centre ± h``: ``h`` is the larger distance from the rounded centre to ``lo`` or ``hi``,
    rounded up. ``h`` has 2 digits and the centre is rounded to the same place (at most 3
    digits), or fewer where the cell would be too wide. A non-finite centre (an overflowed
    seed) is shown alone: ``inf``, ``nan``.

    >>> _pm(1530.0, 1310.0, 1990.0), _pm(-0.0709, -0.423, 0.309), _pm(1.0, 1.0, 1.0)
    ('1530±460', '-0.07±0.38', '1.000±0')
    >>> _pm(-1.18e20, -5.58e21, 3.41e21), _pm(float("inf"), 1.0, float("inf"))
    ('-1e20±5.5e21', 'inf')
    >>> _pm(-1.23e-15, -1.24e-15, -1.22e-15)  # too wide with 3 digits: fewer, h covers them
    '-1e-15±3e-16'
    >>> _pm(1.94e-8, 1.2e-8, 2.8e-8), _pm(0.097, -0.5, 0.7), _pm(3e-4, -0.5, 0.6)
    ('1.9e-8±9e-9', '0.10±0.60', '0±0.60')
    """
    if not math.isfinite(centre):
        return _num(centre, 3)
    h = max(hi - centre, centre - lo, 0.0)
    if not math.isfinite(h):
        return f"{_num(centre, 3)}±{_num(h, 2)}"
    text = ""
    if h == 0:  # all seeds alike: h is the rounding of the centre
        for digits in (4, 3, 2, 1):
            shown = _num(centre, digits)
            half = abs(centre - float(shown))
            text = f"{shown}±{_num_up(half, 1) if half > 0 else '0'}"
            if len(text) <= CELL:
                break
        return text
    # h to 2 digits and the centre to the same place; where too wide, h to 1 digit and the
    # centre to fewer.
    for dh, fewer in ((2, 0), (1, 0), (1, 1), (1, 2)):
        unit = 10.0 ** (_exp10(h) - dh + 1)
        rounded = round(centre / unit) * unit
        if rounded == 0:
            shown = "0"
        else:
            digits = min(_exp10(rounded) - _exp10(unit) + 1, 3) - fewer
            shown = _num(rounded, max(digits, 1))
        half = max(hi - float(shown), float(shown) - lo, 0.0)
        text = f"{shown}±{_num_up(half, dh) if half > 0 else '0'}"
        if len(text) <= CELL:
            break
    return text


def _band(b, i: int) -> str:
    return _pm(float(b.mean[i]), float(b.lo[i]), float(b.hi[i]))


def _seed_band(values: np.ndarray, level: float) -> str:
    """The ``mean±h`` cell of per-seed values (inf/NaN seeds give an ``inf``/``nan`` cell)."""
    v = np.asarray(values, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the interpolation
        lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
        centre = float(v.mean())
    return _pm(centre, float(lo), float(hi))


def _table(title: str | None, caption: str | None = None) -> Table:
    """The house table: a rule under the header, no vertical lines, no outer padding."""
    return Table(
        title=title,
        caption=caption,
        title_style="bold",
        caption_style="dim",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


class _Folding:
    """A ``mean±h`` cell that, in a column narrower than itself, puts ``±h`` on a second line
    (rich wraps text only at spaces, and a cell cut elsewhere, ``0.009±0.`` over ``065``,
    misreads)."""

    def __init__(self, text: str):
        self.text = text
        centre, pm, h = text.partition("±")
        self.lines = [centre, pm + h] if pm else [text]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(max(map(len, self.lines)), len(self.text))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        fits = len(self.text) <= options.max_width
        yield Text(self.text if fits else "\n".join(self.lines), overflow="fold")


def _column(
    table: Table, header: str, justify: _Justify = "right", *, wrap: bool = False, **kwargs
) -> None:
    """Numbers never wrap (cells are at most :data:`CELL` wide) unless ``wrap`` (cells that
    are :class:`_Folding`); labels fold if too long."""
    table.add_column(header, justify=justify, no_wrap=justify == "right" and not wrap, **kwargs)


def _header(statistic: str) -> str:
    """A statistic's column header: its name with spaces (``grad std``, ``abs max``)."""
    return statistic.replace("_", " ")


def _level_caption(level: float, seeds: int | str) -> str:
    return f"mean over {seeds} seeds ± h: the central {100 * level:g}% of seeds lie in mean ± h"


def _nonfinite_note(cells: Sequence[str]) -> str:
    bad = any("inf" in c or "nan" in c for c in cells)
    return "; inf/nan: some seed overflowed float32" if bad else ""


def layers_table(
    stats: LayerStats,
    *,
    title: str | None = None,
    predicted: Prediction | None = None,
    level: float = 0.95,
) -> Table:
    """One row per layer: mean, std and gradient std over seeds (``mean±h`` cells), then each
    statistic asked for with ``layer_stats(stats=...)`` in that order, and the predicted std if
    given.

    Without extra statistics the table fits 80 columns with one line per row; with them it may
    be wider, and where the terminal is too narrow a cell puts its ``±h`` on a second line. The
    input statistics ``in_mean`` and ``in_std`` are left out: in a chain of layers they repeat
    the previous layer's output (:meth:`LayerStats.table` shows them).
    """
    s = stats.summary(level)
    extras = [c for c in stats.stats if c in s]
    cols = [c for c in ("mean", "std", "grad_std") if c in s] + extras
    rows = []
    for i, name in enumerate(stats.names):
        row = [_band(s[c], i) for c in cols]
        if predicted is not None:
            row.append(_num(float(predicted.std[i]), 3) if i < len(predicted.std) else "")
        rows.append((name, row))
    cells = [c for _, row in rows for c in row]
    caption = _level_caption(level, stats.seeds)
    for prefix, of in (("grad_", "of d loss / d output"), ("in_", "of the layer's input")):
        named = [_header(c) for c in cols if c.startswith(prefix)]
        if named:
            caption += f"; {', '.join(named)}: {of}"
    table = _table(
        title or f"per-layer statistics, {stats.seeds} seeds", caption + _nonfinite_note(cells)
    )
    _column(table, "layer", "left", style="cyan")
    # Extra statistics may make the table wider than the terminal: then a cell may take two
    # lines rather than be cut short.
    wrap = bool(extras)
    for c in cols:
        _column(table, _header(c), wrap=wrap)
    if predicted is not None:
        _column(table, "predicted std", wrap=wrap, style="magenta")
    for name, row in rows:
        table.add_row(Text(name), *(_Folding(c) if extras else c for c in row))
    return table


def compare_table(
    results: Mapping[str, LayerStats], *, title: str = "initializers", level: float = 0.95
) -> Table:
    """One row per initializer: first and last layer std, last layer mean, the gradient std
    ratio first/last layer, and the initial loss (``mean±h`` over seeds)."""
    rows = []
    for label, st in results.items():
        s = st.summary(level)
        row = [_band(s["std"], 0), _band(s["std"], -1), _band(s["mean"], -1)]
        if st.grad_std is not None and st.loss is not None:
            g = np.asarray(st.grad_std, np.float64)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                ratio = g[:, 0] / g[:, -1]
            row += [_seed_band(ratio, level), _seed_band(np.asarray(st.loss), level)]
        else:
            row += ["", ""]
        rows.append((label, row))
    seeds = "/".join(str(n) for n in sorted({st.seeds for st in results.values()})) or "0"
    cells = [c for _, row in rows for c in row]
    caption = (
        _level_caption(level, seeds) + "; grad ratio: std of d loss / d output, first layer "
        "over last" + _nonfinite_note(cells)
    )
    table = _table(title, caption)
    _column(table, "init", "left")
    for header in ("std first", "std last", "mean last", "grad ratio", "loss"):
        _column(table, header)
    for label, row in rows:
        table.add_row(Text(label), *row)
    return table


def lsuv_table(report, *, title: str = "LSUV") -> Table:
    """The per-layer LSUV report (path, iterations, std/mean before and after, converged)."""
    table = _table(title)
    _column(table, "layer", "left")
    for c in ("iters", "std before", "std after", "mean before", "mean after", "ok"):
        _column(table, c)
    for i, path in enumerate(report.paths):
        table.add_row(
            Text(path),
            str(int(report.iterations[i])),
            _num(float(report.std_before[i]), 4),
            _num(float(report.std_after[i]), 4),
            _num(float(report.mean_before[i]), 4),
            _num(float(report.mean_after[i]), 4),
            "yes" if bool(report.converged[i]) else "[red]no[/red]",
        )
    return table


def gain_table(rows: Sequence[tuple[str, float, float | None]], *, sigma_b: float = 0.0) -> Table:
    """``(activation, gain, critical sigma_w or None)`` rows; ``sigma_b``: the bias std the
    critical values are for."""
    table = _table(
        "gains",
        f"critical sigma_w: edge-of-chaos weight std x sqrt(fan_in) for sigma_b={sigma_b:g} "
        "(-: none)",
    )
    _column(table, "activation", "left", style="cyan")
    _column(table, "gain")
    _column(table, "He std x sqrt(fan_in)")
    _column(table, "critical sigma_w")
    for name, g, crit in rows:
        table.add_row(Text(name), f"{g:.6g}", f"{g:.6g}", "-" if crit is None else f"{crit:.6g}")
    return table


def console(*, quiet: bool = False) -> Console:
    """A rich console writing to stdout (``quiet``: discard output)."""
    return Console(quiet=quiet, highlight=False)
