"""Figures are written as non-empty PNGs (Agg canvas, no display needed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinit
from jaxinit import analysis

pytest.importorskip("matplotlib")
from jaxinit.app import plotting

PNG = b"\x89PNG\r\n\x1a\n"


def _fake_stats(seeds=6, layers=5, scale=1.0, grads=True):
    rng = np.random.default_rng(0)
    names = analysis._Names(f"Dense_{i}" for i in range(layers))
    a = lambda: scale * (1 + 0.1 * rng.standard_normal((seeds, layers)))  # noqa: E731
    return jaxinit.LayerStats(
        names, a() - 1, a(), a() - 1, a(), a() if grads else None, a()[:, 0] if grads else None
    )


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG)


def test_layer_stats_figure_with_predictions(tmp_path):
    results = {"he": _fake_stats(), "normal": _fake_stats(scale=1e3)}
    pred = jaxinit.predict("relu", 5)
    path = plotting.plot_layer_stats(results, tmp_path / "sub" / "a.png", predicted={"he": pred})
    assert path == tmp_path / "sub" / "a.png" and _is_png(path)


def test_layer_stats_figure_single_forward_only(tmp_path):
    path = plotting.plot_layer_stats(_fake_stats(grads=False), tmp_path / "b.png", title="t")
    assert _is_png(path)


def test_histograms(tmp_path):
    outs = {f"l{i}": np.random.default_rng(i).standard_normal((16, 8)) for i in range(10)}
    assert _is_png(plotting.plot_histograms(outs, tmp_path / "h.png", layers=6))
    assert _is_png(plotting.plot_histograms(outs, tmp_path / "h2.png", layers=["l0", "l9"]))
    with pytest.raises(ValueError, match=r"layers \['nope'\] not in outputs"):
        plotting.plot_histograms(outs, tmp_path / "h3.png", layers=["nope"])


def test_histograms_of_real_layer_outputs(tmp_path):
    import flax.linen as nn

    model = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(16), nn.relu, nn.Dense(4)])
    x = jax.random.normal(jax.random.key(0), (32, 8))
    outs = jaxinit.layer_outputs(model, x, compiler_options=jaxinit.analysis.FAST_COMPILE)
    assert list(outs) == ["layers_0", "layers_2", "layers_4"]
    assert outs["layers_0"].shape == (32, 16)
    assert _is_png(plotting.plot_histograms(outs, tmp_path / "r.png"))


def test_overflowed_seeds_are_counted_and_summarized_without_warnings():
    st = _fake_stats(seeds=4, layers=3)
    std = np.array(st.std)
    std[1:3, 2] = np.inf  # two seeds overflow at the last layer
    st = st._replace(std=std)
    assert st.nonfinite() == (2, "Dense_2")
    assert _fake_stats().nonfinite() == (0, None)
    band = st.summary()["std"]  # filterwarnings=error: no RuntimeWarning from inf
    assert np.isfinite(band.mean[:2]).all() and not np.isfinite(band.mean[2])


def _mean_band_fraction(ax, band):
    """The fraction of the axes' y-range that a band's [lo, hi] spans (in the axes' scale)."""
    to_axes = ax.transScale + ax.transLimits  # data -> axes fraction, any scale
    lo, hi = float(np.min(band.lo)), float(np.max(band.hi))
    (_, y0), (_, y1) = to_axes.transform([(1, lo), (1, hi)])
    return abs(y1 - y0)


def test_overflowed_init_does_not_flatten_the_others():
    # Standard-normal weights reach ~1e21; He stays ~1: He's mean band fills the mean panel
    # and the exploding init is drawn off scale, named under the panel.
    results = {"normal": _fake_stats(scale=1e21), "he": _fake_stats()}
    fig = plotting.layer_stats_figure(results, title="t")
    mean_ax, std_ax, _ = fig.axes[:3]
    he = results["he"].summary()
    assert _mean_band_fraction(mean_ax, he["mean"]) > 0.5
    assert "normal off scale from layer 1" in mean_ax.get_xlabel()
    # The std panel is logarithmic: the two inits lie far apart, neither on the other.
    assert std_ax.get_yscale() == "log"
    to_axes = std_ax.transScale + std_ax.transLimits
    normal = results["normal"].summary()["std"].mean
    (_, y_he), (_, y_normal) = to_axes.transform([(1, he["std"].mean[0]), (1, normal[0])])
    assert 0 <= y_he < 0.2 and 0.8 < y_normal <= 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:2] == ["normal", "he"] and any("off scale" in t for t in labels)


def test_overflowed_seeds_end_the_line_with_a_marker():
    st = _fake_stats(seeds=4, layers=6)
    std = np.array(st.std)
    std[1, 3:] = np.inf  # one seed overflows from the 4th layer
    results = {"normal": st._replace(std=std), "he": _fake_stats(layers=6)}
    fig = plotting.layer_stats_figure(results)
    std_ax = fig.axes[1]
    marks = [ln for ln in std_ax.get_lines() if ln.get_marker() == "x"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [4.0]
    normal_line = std_ax.get_lines()[0]
    y = np.asarray(normal_line.get_ydata(), float)
    assert np.isfinite(y[:3]).all() and np.isnan(y[3:]).all()  # drawn up to the last finite
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("inf/NaN" in t for t in labels)


@pytest.mark.parametrize("grads", [True, False])
def test_legend_is_outside_every_panel(grads, tmp_path):
    results = {
        name: _fake_stats(scale=s, grads=grads)
        for name, s in [("normal", 1e21), ("torch", 1e-3), ("xavier", 0.3), ("he", 1), ("lsuv", 1)]
    }
    pred = {"he": jaxinit.predict("relu", 5), "torch": jaxinit.predict("relu", 5, sigma_w=0.5)}
    fig = plotting.layer_stats_figure(results, predicted=pred, title="mlp on digits")
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()
        assert not box.overlaps(ax.get_tightbbox()), ax.get_title()  # nor labels and notes
    path = plotting.plot_layer_stats(results, tmp_path / "m.png", predicted=pred)
    assert _is_png(path) and path.stat().st_size < 300_000


def test_histogram_panels_follow_the_mapping_order(tmp_path):
    # Forward order of a 14-layer model: Dense_10 comes after Dense_9, not after Dense_1.
    names = [f"Dense_{i}" for i in range(13)] + ["head"]
    outs = {n: np.random.default_rng(i).standard_normal((16, 8)) for i, n in enumerate(names)}
    fig = plotting.histograms_figure(outs, layers=14)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()]
    assert titles == names
    fig = plotting.histograms_figure(outs, layers=5)  # spread evenly from first to last
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()]
    assert titles == ["Dense_0", "Dense_3", "Dense_6", "Dense_10", "head"]


def test_histograms_say_what_they_leave_out():
    x = np.ones((4, 8))
    x[0, :2] = np.inf
    fig = plotting.histograms_figure({"a": x, "b": np.full((2, 2), np.nan)})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["a\nmean 1, std 0; 2 inf/NaN left out", "b\nall 4 values inf/NaN"]


@pytest.mark.slow
def test_one_panel_per_measured_statistic(tmp_path):
    from jaxinit.app.models import MLP

    x = jax.random.normal(jax.random.key(0), (64, 16))
    st = jaxinit.layer_stats(MLP(depth=3, width=16), x, seeds=4, stats=["rms", "abs_max"])
    fig = plotting.layer_stats_figure({"he": st})
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 5 and all(ax.get_visible() for ax in fig.axes)
    assert titles[:3] == ["mean of layer output", "std of layer output", "std of d loss / d output"]
    assert titles[3:] == list(st.stats) and set(st.stats) == {"rms", "abs_max"}
    for name, ax in zip(titles[3:], fig.axes[3:], strict=True):
        (line,) = ax.get_lines()  # the seed mean per layer, computed here from the seeds
        want = np.asarray(st.stats[name], np.float64).mean(axis=0)
        np.testing.assert_allclose(line.get_ydata(), want, rtol=1e-12)
    # Without gradients, four panels: a two by two grid.
    forward = jaxinit.layer_stats(
        MLP(depth=3, width=16), x, seeds=4, stats=["rms", "abs_max"], grads=False
    )
    fig = plotting.layer_stats_figure(forward)
    assert [ax.get_title() for ax in fig.axes][2:] == list(forward.stats)
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes} == {(2, 2)}
    assert _is_png(plotting.plot_layer_stats({"he": st}, tmp_path / "x.png"))


def test_extra_statistics_that_can_be_negative_stay_linear():
    st = _fake_stats()
    signed = np.asarray(st.mean) - 0.5  # of both signs, spanning far over 100x in |value|
    signed[:, 0] = 1e-4
    st = st._replace(stats={"skew": signed, "big": np.exp(np.asarray(st.std) * 30)})
    fig = plotting.layer_stats_figure(st)
    scales = {ax.get_title(): ax.get_yscale() for ax in fig.axes}
    assert scales["skew"] == "linear" and scales["big"] == "log"
    fig = plotting.layer_stats_figure(st, log_std=False)
    assert {ax.get_yscale() for ax in fig.axes} == {"linear"}


def _fake_spp(seeds=5, blocks=6, scale=1.0):
    from jaxinit.diagnostics import SPP

    rng = np.random.default_rng(1)
    a = lambda: jnp.asarray(scale * (1 + 0.1 * rng.standard_normal((seeds, blocks))))  # noqa: E731
    return SPP(analysis._Names(f"block{i}" for i in range(blocks)), a(), a(), a(), a())


def test_spp_figure_panels_and_predictions(tmp_path):
    results = {"bn": _fake_spp(), "nf": _fake_spp(scale=3.0)}
    fig = plotting.spp_figure(results, predicted={"nf": {"var": np.arange(1.0, 7.0)}})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "average squared channel mean",
        "average channel variance",
        "residual branch variance",
        "branch variance / skip variance",
    ]
    assert len(fig.axes[1].lines) == 3  # two measured lines and the dashed prediction
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["bn", "nf", "predicted"]
    one = _fake_spp(seeds=1)
    one = one._replace(var=one.var[0])  # one series, no seed axis
    path = plotting.plot_spp(one, tmp_path / "spp.png")
    assert _is_png(path)
    with pytest.raises(ValueError, match=r"predicted has labels \['he'\]"):
        plotting.spp_figure(results, predicted={"he": {"var": [1.0]}})


def test_rank_collapse_figure(tmp_path):
    rng = np.random.default_rng(2)
    cos = {"post-LN": rng.uniform(size=(4, 3)), "pre-LN": rng.uniform(size=3)}
    fig = plotting.rank_collapse_figure(
        cos, qkv={"post-LN": rng.uniform(size=(4, 3))}, x=[6, 12, 24], xlabel="depth"
    )
    assert [ax.get_title() for ax in fig.axes] == ["token cosine", "||dL/dW_Q|| / ||dL/dW_V||"]
    assert fig.axes[0].get_xlabel() == "depth"
    drawn = np.asarray(fig.axes[0].lines[0].get_ydata(), np.float64)
    np.testing.assert_allclose(drawn, cos["post-LN"].mean(axis=0))
    assert _is_png(plotting.plot_rank_collapse(cos, tmp_path / "rc.png"))
    with pytest.raises(ValueError, match="3 values per seed but 2 x positions"):
        plotting.rank_collapse_figure(cos, x=[1, 2])
