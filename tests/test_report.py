"""The rich tables fit an 80-column terminal with one line per row, for the values the demo
meets: tiny, huge (1e21) and overflowed (inf/NaN) seeds."""

import io
import itertools
import math
import re

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

import jaxinit
from jaxinit import analysis
from jaxinit.app import report

WIDTH = 80
F32_MAX = float(np.finfo(np.float32).max)


def _render(table: Table, width: int = WIDTH) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().splitlines()


def assert_fits(table: Table, width: int = WIDTH) -> list[str]:
    """No line wider than ``width``; the body is one header line, the rule under it and
    exactly one line per row (title and caption may wrap; cells may not)."""
    lines = _render(table, width)
    text = "\n".join(lines)
    assert max(map(len, lines)) <= width, text
    assert "…" not in text, text
    title, caption = table.title, table.caption
    table.title = table.caption = None
    try:
        body = _render(table, width)
    finally:
        table.title, table.caption = title, caption
    assert len(body) == 2 + table.row_count, "\n".join(body)
    return lines


def _f32(values: np.ndarray) -> np.ndarray:
    """float32 as a float32 forward pass gives it: beyond the range, inf (no cast warning)."""
    v = np.asarray(values, np.float64)
    return np.where(np.abs(v) > F32_MAX, np.sign(v) * np.inf, v).astype(np.float32)


def _chain(std1, factor, grad1, *, loss, seeds=16, layers=21, seed=0):
    """LayerStats of a ReLU chain whose output std scales by ``factor`` per layer, with
    seed-to-seed noise; overflow (beyond float32) turns into inf, as in a real run."""
    rng = np.random.default_rng(seed)
    growth = factor ** np.arange(layers)
    std = std1 * growth * np.exp(0.1 * rng.standard_normal((seeds, layers)))
    mean = std * 0.3 * rng.standard_normal((seeds, layers))
    grad = grad1 / growth * np.exp(0.2 * rng.standard_normal((seeds, layers)))
    names = analysis._Names([*(f"Dense_{i}" for i in range(layers - 1)), "head"])
    return jaxinit.LayerStats(
        names,
        _f32(mean),
        _f32(std),
        _f32(mean),
        _f32(std),
        _f32(grad),
        _f32(np.full(seeds, loss) * np.exp(0.1 * rng.standard_normal(seeds))),
    )


def demo_results(layers=21):
    """The full demo's MLP: standard normal explodes (1e21, then inf), PyTorch's default and
    Xavier vanish, He and LSUV keep the scale."""
    normal = _chain(8.0, 11.3, 1e17, loss=1.3e22, layers=layers)
    std = np.array(normal.std)
    std[:, 15:] = np.inf  # the std of values ~1e21 overflows float32
    mean = np.array(normal.mean)
    mean[3:, 18:] = np.nan
    grad = np.array(normal.grad_std)
    grad[:, :2] = np.inf  # backward through the overflowed layers
    normal = normal._replace(std=std, mean=mean, grad_std=grad)
    return {
        "normal": normal,
        "torch": _chain(0.58, 0.41, 3e-12, loss=2.3, layers=layers, seed=1),
        "xavier": _chain(0.63, 0.71, 1e-7, loss=2.3, layers=layers, seed=2),
        "he": _chain(1.41, 1.0, 1e-4, loss=3.0, layers=layers, seed=3),
        "lsuv": _chain(1.0, 1.0, 1e-4, loss=2.7, layers=layers, seed=4),
    }


def test_demo_compare_table_fits_80_columns():
    table = report.compare_table(demo_results(), title="mlp: at initialization")
    lines = assert_fits(table)
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] != []}
    assert rows["normal"][2] == "inf" and rows["normal"][4] == "inf"  # std last, grad ratio
    centre, h = (float(t) for t in rows["he"][1].split("±"))  # He: std 1.41 at layer 1
    assert abs(centre - 1.41) < 0.2 and 0 < h < 1
    text = "\n".join(lines)
    assert "central 95% of seeds" in text and "16 seeds" in text
    assert "inf/nan: some seed overflowed float32" in " ".join(text.split())


def test_compare_table_without_gradients_and_odd_labels():
    results = {k: v._replace(grad_std=None, loss=None) for k, v in demo_results().items()}
    results["[red]x[/red]"] = results.pop("he")  # a label is text, not markup
    lines = assert_fits(report.compare_table(results))
    assert any(line.startswith("[red]x[/red]") for line in lines)


@pytest.mark.parametrize("predicted", [False, True])
def test_layers_table_fits_80_columns(predicted):
    st = demo_results(layers=50)["normal"]
    pred = jaxinit.predict("relu", 50, sigma_w=math.sqrt(256)) if predicted else None
    lines = assert_fits(report.layers_table(st, predicted=pred, title="mlp, normal init"))
    assert sum(line.startswith("Dense_") for line in lines) == 49


def test_lsuv_table_fits_80_columns():
    import types

    n = 12
    paths = (*(f"ConvNet_0/Conv_{i}" for i in range(n - 1)), "head")
    rng = np.random.default_rng(0)
    rep = types.SimpleNamespace(
        paths=paths,
        iterations=np.arange(n),
        std_before=rng.uniform(1e-9, 1e21, n),
        std_after=1 + 1e-4 * rng.standard_normal(n),
        mean_before=-rng.uniform(1e-9, 1e21, n),
        mean_after=-1e-7 * rng.uniform(size=n),
        converged=np.arange(n) % 5 != 0,
    )
    lines = assert_fits(report.lsuv_table(rep, title="LSUV on convnet (torch pre-init)"))
    assert sum(" no" in line for line in lines) == 3


def test_gain_table_fits_80_columns():
    rows = [("leaky_relu", 1.41407, 1.41407), ("softplus", 1.0, None), ("selu", 0.75, 1.0)]
    lines = assert_fits(report.gain_table(rows, sigma_b=0.05))
    assert "sigma_b=0.05" in " ".join(lines)


MAGNITUDES = [0.0, 1e-45, 3e-38, 1e-9, 1.234e-5, 0.0123, 0.9996, 1.0, 2.3, 1530.0, 1e21, F32_MAX]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_every_float32_band_fits_one_cell(sign):
    for centre, h in itertools.product(MAGNITUDES, MAGNITUDES):
        text = report._pm(sign * centre, sign * centre - h, sign * centre + h / 3)
        assert len(text) <= report.CELL, (centre, h, text)


def test_a_cell_covers_its_interval():
    """``centre ± h`` holds ``[lo, hi]`` (up to the parsing of the printed decimals)."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        centre = float(rng.choice([-1, 1]) * 10 ** rng.uniform(-12, 22))
        lo = centre - 10 ** rng.uniform(-14, 23)
        hi = centre + 10 ** rng.uniform(-14, 23)
        text = report._pm(centre, lo, hi)
        c, h = (float(t) for t in text.split("±"))
        slack = 1e-9 * (abs(lo) + abs(hi))
        assert c - h <= lo + slack and c + h >= hi - slack, (centre, lo, hi, text)


def test_nonfinite_cells():
    assert report._pm(float("inf"), 0.0, float("inf")) == "inf"
    assert report._pm(float("nan"), float("nan"), float("nan")) == "nan"
    assert report._pm(-float("inf"), -float("inf"), 1.0) == "-inf"


@pytest.fixture(scope="module")
def extra_stats():
    import jax

    from jaxinit.app.models import MLP

    x = jax.random.normal(jax.random.key(0), (64, 16))
    return jaxinit.layer_stats(
        MLP(depth=3, width=16), x, seeds=4, stats=["rms", "abs_max", "grad_rms", "in_abs_mean"]
    )


def _cells(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Headers and ``{layer: cells}`` of a rendered one-line-per-row layers table."""
    (head,) = [line for line in lines if line.startswith("layer ")]
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("Dense_")}
    return [h.strip() for h in head.split("  ") if h.strip()], rows


def test_layers_table_has_a_column_per_extra_statistic(extra_stats):
    st = extra_stats
    extras = ["rms", "abs_max", "grad_rms", "in_abs_mean"]
    assert sorted(st.stats) == sorted(extras)
    headers, rows = _cells(_render(report.layers_table(st), width=200))
    # The default columns first, then the extras in the order LayerStats holds them.
    assert headers == ["layer", "mean", "std", "grad std", *(s.replace("_", " ") for s in st.stats)]
    assert list(rows) == list(st.names)
    for name in ("rms", "abs_max"):
        v = np.asarray(st.stats[name], np.float64)  # (seeds, layers), computed here
        centre = v.mean(axis=0)
        lo, hi = np.quantile(v, [0.025, 0.975], axis=0)
        column = headers.index(name.replace("_", " ")) - 1
        for i, layer in enumerate(st.names):
            text = rows[layer][column]
            c, h = (float(t) for t in text.split("±"))
            slack = 1e-6 * (abs(lo[i]) + abs(hi[i]))
            assert c - h <= lo[i] + slack and c + h >= hi[i] - slack, (name, layer, text)
            assert abs(c - centre[i]) <= h / 2, (name, layer, text, centre[i])
            assert text == report._pm(centre[i], lo[i], hi[i]), (name, layer, text)
    text = " ".join(" ".join(_render(report.layers_table(st), width=200)).split())
    assert "grad std, grad rms: of d loss / d output; in abs mean: of the layer's input" in text


def test_a_table_with_extras_folds_cells_without_cutting_them(extra_stats):
    # Too wide for 80 columns: a cell puts its ±h on a second line, never cut short.
    wide = _cells(_render(report.layers_table(extra_stats), width=200))[1]
    lines = _render(report.layers_table(extra_stats), width=WIDTH)
    assert max(map(len, lines)) <= WIDTH and "…" not in "\n".join(lines)
    for layer in extra_stats.names:
        (k,) = [i for i, line in enumerate(lines) if line.startswith(f"{layer} ")]
        rest = range(k + 1, len(lines))
        more = next((j for j in rest if not lines[j].startswith(" ")), len(lines))
        assert more == k + 2, lines[k:more]  # each row here takes two lines
        by_end: dict[int, str] = {}
        for line in lines[k:more]:
            for m in re.finditer(r"\S+", line):
                by_end[m.end()] = by_end.get(m.end(), "") + m.group()
        assert [by_end[e] for e in sorted(by_end)][1:] == wide[layer], lines[k:more]
