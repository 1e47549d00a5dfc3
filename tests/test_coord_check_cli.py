"""``jaxinit coord-check`` and its figure: the PNG has one panel per step, the command prints
its table in process, and bad ``--widths`` are one-line errors. The CNN and transformer runs
compile for tens of seconds on two cores, so they are slow tests; their roles (what makes them
runnable) are checked here from abstract shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinit.app import cli, models, plotting
from jaxinit.recipes import mup
from jaxinit.recipes.coord_check import CoordCheck

PNG = b"\x89PNG\r\n\x1a\n"


def _check(steps=3, zero_readout=True):
    """A CoordCheck of made-up numbers: a flat layer, one growing like sqrt(width), and a
    readout that is 0 at step 1."""
    widths, seeds = (32, 64, 128), 2
    w = np.asarray(widths, np.float64)[:, None, None]
    values = np.ones((len(widths), seeds, steps, 3))
    values[..., 0] *= 0.8
    values[..., 1] *= 0.5 * np.sqrt(w / 32)
    values[..., 2] *= 0.1 * (w / 32)
    values[:, 1] *= 1.1  # the second seed
    if zero_readout:
        values[:, :, 0, 2] = 0.0
    loss = np.zeros((len(widths), seeds, steps))
    return CoordCheck(
        widths, ("Dense_0", "Dense_1", "head"), "abs_mean", values, loss, "sp", "sgd", 0.1
    )


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_figure_has_one_axes_per_step(tmp_path, steps):
    path = tmp_path / "sub" / "coord.png"
    fig = plotting.plot_coord_check(_check(steps), path)
    assert path.read_bytes()[:8] == PNG
    assert [ax.get_title() for ax in fig.axes] == [f"t = {t + 1}" for t in range(steps)]
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "sp, sgd lr 0.1" in fig._suptitle.get_text()


def test_figure_skips_a_zero_statistic():
    fig = plotting.plot_coord_check(_check(3))  # no path: nothing written
    first, second = fig.axes[:2]
    assert len(first.get_lines()) == 2  # the readout is 0 at step 1: not drawn
    assert len(second.get_lines()) == 3
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["Dense_0 (+0.00)", "Dense_1 (+0.50)", "head (+1.00)"]


def test_mlp_in_process_prints_the_table_and_writes_the_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    png = tmp_path / "mlp.png"
    argv = ["coord-check", "--quick", "--widths", "16,32", "--steps", "2", "--plot", str(png)]
    assert cli.main([*argv, "--param", "sp"]) == 0
    text = capsys.readouterr().out
    for word in ("w=16", "w=32", "exponent", "Dense_0", "Dense_1", "head", "largest |exponent|"):
        assert word in text, text
    rows = [line.split() for line in text.splitlines() if line.startswith(("Dense", "head"))]
    assert [r[0] for r in rows] == ["Dense_0", "Dense_1", "head"]
    assert png.read_bytes()[:8] == PNG


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_cnn_and_transformer_in_process(model, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    argv = ["coord-check", "--quick", "--model", model, "--widths", "8,16", "--steps", "2"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "w=8" in text and "head" in text
    assert ("block0_attn/query" if model == "transformer" else "conv1") in text


def test_transformer_roles_grow_heads_along_their_dimension():
    tokens = jnp.zeros((2, 8), jnp.int32)

    def shapes(width):
        return jax.eval_shape(models._ByteTransformer(width).init, jax.random.key(0), tokens)

    roles = mup.roles(shapes(32), shapes(33), shapes(128))
    for name in ("query", "key", "value", "out"):
        assert roles[f"block0_attn/{name}/kernel"].role == "hidden"
        assert roles[f"block0_attn/{name}/kernel"].m_in == 4
    assert roles["embed/embedding"].role == "embedding"
    assert roles["head/kernel"].role == "output" and roles["head/kernel"].m_in == 4


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        ("64", "'64': at least two distinct widths are needed"),
        ("64,64", "'64,64': at least two distinct widths are needed"),
        ("64,abc", "argument --widths: 'abc' is not an integer"),
        ("0,64", "argument --widths: 0 must be >= 1"),
        ("64,-8", "argument --widths: -8 must be >= 1"),
    ],
)
def test_bad_widths_are_one_line_errors(widths, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["coord-check", "--widths", widths])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("jaxinit coord-check")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "transformer", "--data", "mnist"], "argument --data: --model transformer"),
        (["--data", "digits", "--data-dir", "."], "argument --data-dir: --data digits"),
        (["--plot", "figure.xyz"], "argument --plot: 'figure.xyz' needs a figure suffix"),
        (["--stat", "mean"], "argument --stat: invalid choice: 'mean'"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["coord-check", "--quick", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1], err
