"""The jaxinit command, in process: --quick runs, --help, one-line argument errors."""

import json

import pytest
from _data import require

from jaxinit.app import cli


@pytest.mark.slow  # 40 s; CI runs `jaxinit demo --quick` from the wheel
def test_demo_quick_writes_tables_and_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "report"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("normal", "torch", "xavier", "he", "lsuv", "mlp: at initialization"):
        assert name in text
    # 80 columns, and one line per table row: each init starts one line per model's table.
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80, text
    for name in cli.INITS:
        assert sum(line.startswith(f"{name} ") for line in lines) == 2, text
    assert "mlp_layers.png" in text and "summary.json" in text
    for png in ("mlp_layers.png", "convnet_layers.png", "mlp_he_histograms.png"):
        assert (out / png).stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 4 and set(summary["models"]) == {"mlp", "convnet"}
    mlp = summary["models"]["mlp"]
    # Standard-normal weights blow the signal up by about sqrt(width) per layer; He keeps it.
    assert mlp["normal"]["std_last"] > 1e3 * mlp["he"]["std_last"]
    assert 0.5 < mlp["lsuv"]["std_last"] < 2


def test_stats_quick_with_plot(tmp_path, capsys):
    png = tmp_path / "s.png"
    args = ["stats", "--quick", "--data", "gaussian", "--init", "he", "--plot", str(png)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "predicted std" in text and "Dense_0" in text
    assert png.stat().st_size > 1000


def test_lsuv_quick(capsys):
    assert cli.main(["lsuv", "--quick", "--model", "mlp", "--center"]) == 0
    text = capsys.readouterr().out
    assert "LSUV on mlp" in text and "head" in text


def test_gain(capsys):
    assert cli.main(["gain", "relu", "tanh", "softplus"]) == 0
    text = capsys.readouterr().out
    assert "1.41421" in text and "1.66667" in text  # gain(relu), gain(tanh) = 5/3
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["softplus"][-1] == "-"  # no edge of chaos for softplus, sigma_b=0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--seeds", "0"], "argument --seeds: 0 must be >= 1"),
        (["demo", "--seeds", "many"], "argument --seeds: 'many' is not an integer"),
        (["demo", "--inits", "he,kaiming"], "argument --inits: 'he,kaiming': use a comma"),
        (["stats", "--model", "vit"], "argument --model: invalid choice: 'vit'"),
        (["lsuv", "--tol", "-1"], "argument --tol: -1.0 must be a finite number > 0"),
        (["gain", "relux"], "activation='relux' is not a known name"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_give_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("jaxinit")


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["stats", "--quick", "--data", "fashion-mnist", "--data-dir", str(tmp_path)])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train-images-idx3-ubyte" in last and str(tmp_path) in last


@pytest.mark.parametrize("command", ["demo", "stats", "lsuv", "gain", None])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"] if command else ["--help"])
    assert info.value.code == 0
    assert "usage: jaxinit" in capsys.readouterr().out


def test_auto_data_picks_fashion_mnist(capsys):
    require("fashion-mnist", "train")
    assert cli.main(["stats", "--quick", "--data", "auto", "--model", "mlp"]) == 0
    assert "fashion-mnist/train" in capsys.readouterr().out


def test_compare_table_shows_overflowed_seeds_without_numpy_warnings():
    # Standard-normal weights in a deep net overflow: the table shows inf cells (the demo
    # prints an overflow line) instead of emitting numpy RuntimeWarnings (inf - inf in
    # np.quantile's interpolation).
    import warnings

    import jax.numpy as jnp
    from rich.console import Console

    from jaxinit import analysis
    from jaxinit.app import report

    inf = float("inf")
    two = jnp.array([[1.0, inf], [1.0, 2.0]])
    st = analysis.LayerStats(
        ("a", "b"),
        two,
        two,
        jnp.zeros((2, 2)),
        jnp.zeros((2, 2)),
        jnp.array([[inf, 1.0], [inf, 1.0]]),
        jnp.array([inf, inf]),
    )
    console = Console(record=True, width=120)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        console.print(report.compare_table({"normal": st}))
    text = console.export_text()
    assert "inf" in text


def test_histograms_of_a_deep_mlp_in_forward_order():
    # jax.jit returns dicts with sorted keys (Dense_10 before Dense_2); the demo's
    # histograms follow the order the model calls its layers.
    import argparse

    import numpy as np

    from jaxinit.app import plotting

    args = argparse.Namespace(depth=13, width=8, seed=0, optimize=False)
    x = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    outs = cli._outputs("mlp", "he", args, x, 3)
    want = [f"Dense_{i}" for i in range(13)] + ["head"]
    assert list(outs) == want
    fig = plotting.histograms_figure(outs, layers=len(want))
    assert [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()] == want


@pytest.mark.slow  # a transformer's layer_stats compile; the option checks run by default
def test_stats_transformer_prints_token_cosine_and_attention_entropy(tmp_path, capsys):
    png = tmp_path / "rc.png"
    argv = ["stats", "--quick", "--model", "transformer", "--depth", "2", "--width", "8"]
    argv += ["--seeds", "2", "--batch", "4", "--data", "gaussian", "--plot", str(png)]
    assert cli.main([*argv, "--norm", "post", "--scaled-residuals"]) == 0
    text = capsys.readouterr().out
    for word in ("post-LN,", "1/sqrt(depth)),", "block0", "block1", "cosine", "entropy"):
        assert word in text
    assert png.stat().st_size > 1000


@pytest.mark.slow
def test_stats_resnet_spp(capsys):
    argv = ["stats", "--quick", "--model", "resnet", "--spp", "--seeds", "2", "--batch", "4"]
    assert cli.main([*argv, "--data", "gaussian"]) == 0
    text = capsys.readouterr().out
    assert "signal propagation, resnet (no normalization)" in text
    for word in ("block0", "block2", "mean sq", "branch var", "skip var", "branch/skip"):
        assert word in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--spp"], "argument --spp: applies to --model resnet, not mlp"),
        (
            ["--model", "resnet", "--norm", "post"],
            "argument --norm: applies to --model transformer",
        ),
        (["--model", "transformer", "--width", "10"], "10 is not a multiple of 4"),
        (["--model", "resnet", "--depth", "3"], "argument --depth: --depth size the MLP"),
    ],
)
def test_stats_diagnostics_option_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["stats", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
