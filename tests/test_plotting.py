"""Figures are written as non-empty PNGs (Agg canvas, no display needed)."""

import jax
import numpy as np
import pytest

import jaxinit
from jaxinit import analysis

pytest.importorskip("matplotlib")
from jaxinit import plotting

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
