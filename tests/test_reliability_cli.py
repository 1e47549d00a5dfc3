"""The command and the IDX loader under bad input: every failure is one line and exit status 2
before any work (130 for Ctrl-C), never a traceback or a silently ignored option."""

import argparse
import gzip
import os
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxinit
from jaxinit.app import cli, data


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_dataset(directory, *, corrupt_images=False):
    directory.mkdir(parents=True, exist_ok=True)
    images = np.arange(10 * 28 * 28, dtype=np.uint8).reshape(10, 28, 28)
    labels = np.arange(10, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        blob = bytearray(gzip.compress(_idx_bytes(images)))
        if corrupt_images:
            blob[len(blob) // 2] ^= 0xFF
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(bytes(blob))
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(labels))
        )


def _usage_error(argv, capsys) -> str:
    """Run ``main(argv)``; assert exit 2 with one ``jaxinit ...: error:`` line; return it."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("jaxinit") and "error:" in last, err
    return last


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts its work (loads data or runs a model)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the command started its work before rejecting its arguments")

    monkeypatch.setattr(cli, "_batch", forbidden)
    monkeypatch.setattr(jaxinit, "layer_stats", forbidden)


@pytest.fixture
def captured(monkeypatch):
    """Replace the commands by stubs that record their parsed arguments."""
    seen = {}

    def stub(args, parser):
        seen["args"] = args
        return 0

    monkeypatch.setattr(cli, "_COMMANDS", dict.fromkeys(cli._COMMANDS, stub))
    return seen


# ------------------------------------------------------------------------------------------
# output paths: checked up front, in one place


QUICK_DEMO = ["demo", "--quick", "--models", "mlp", "--inits", "he"]
QUICK_STATS = ["stats", "--quick", "--data", "gaussian"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*QUICK_STATS, "--plot", "{tmp}/out.txt"], "needs a figure suffix: .avif, .eps"),
        ([*QUICK_STATS, "--plot", "{tmp}/figure"], "needs a figure suffix"),
        ([*QUICK_STATS, "--plot", "{tmp}/folder.png"], "folder.png in it is a directory"),
        ([*QUICK_STATS, "--plot", "{tmp}/file.txt/a.png"], "it is a file, not a directory"),
        ([*QUICK_STATS, "--plot", "{tmp}/report/mlp_layers.png"], "is a directory"),
        ([*QUICK_STATS, "--plot", ""], "argument --plot"),
        ([*QUICK_DEMO, "--out", "{tmp}/file.txt"], "it is a file, not a directory"),
        ([*QUICK_DEMO, "--out", "{tmp}/file.txt/sub"], "cannot write"),
        ([*QUICK_DEMO, "--out", "{tmp}/report"], "mlp_layers.png in it is a directory"),
        ([*QUICK_DEMO, "--out", ""], "argument --out: an empty path"),
    ],
    ids=[
        "plot-txt",
        "plot-no-suffix",
        "plot-is-dir",
        "plot-under-file",
        "plot-name-is-dir",
        "plot-empty",
        "out-is-file",
        "out-under-file",
        "out-file-is-dir",
        "out-empty",
    ],
)
def test_bad_output_paths_fail_before_any_work(argv, message, tmp_path, capsys, no_work):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "report" / "mlp_layers.png").mkdir(parents=True)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert message in _usage_error(argv, capsys)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_unwritable_output_place_fails_before_any_work(capsys, no_work):
    # /proc refuses new entries even to root, for whom permission bits do not apply.
    last = _usage_error([*QUICK_STATS, "--plot", "/proc/jaxinit-test/a.png"], capsys)
    assert "cannot write '/proc/jaxinit-test'" in last


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_folder_fails_before_any_work(tmp_path, capsys, no_work):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert "cannot write" in _usage_error([*QUICK_DEMO, "--out", str(ro / "r")], capsys)
    finally:
        ro.chmod(0o700)


def test_output_check_leaves_no_folders_behind(tmp_path, captured):
    assert cli.main([*QUICK_STATS, "--plot", str(tmp_path / "new" / "sub" / "a.pdf")]) == 0
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# --quick changes defaults only


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["stats"], {"seeds": 32, "depth": 50, "width": 512, "batch": 256}),
        (["stats", "--quick"], {"seeds": 4, "depth": 4, "width": 32, "batch": 32}),
        (["stats", "--quick", "--seeds", "7"], {"seeds": 7, "depth": 4, "batch": 32}),
        (["stats", "--depth", "6", "--quick", "--batch=40"], {"depth": 6, "batch": 40}),
        (["demo", "--quick", "--width", "8"], {"seeds": 4, "width": 8}),
        (["lsuv", "--quick", "--depth", "3"], {"depth": 3, "width": 32, "batch": 32}),
        (["lsuv"], {"depth": 50, "width": 512, "batch": 256}),
    ],
)
def test_explicit_sizes_win_over_quick(argv, want, captured):
    assert cli.main(argv) == 0
    args = captured["args"]
    assert {k: getattr(args, k) for k in want} == want


def test_quick_help_says_explicit_options_win(capsys):
    with pytest.raises(SystemExit):
        cli.main(["stats", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "an explicit option wins over --quick" in text
    assert "random inits (default 32; --quick: 4)" in text


def test_quick_run_keeps_explicit_seeds_and_depth(capsys):
    assert cli.main([*QUICK_STATS, "--seeds", "5", "--depth", "2", "--width", "4"]) == 0
    text = capsys.readouterr().out
    assert "5 seeds" in text and "Dense_1" in text and "Dense_2" not in text


def test_seed_numbers_do_not_depend_on_seeds():
    # 10 seeds run as groups of 8 and 2, joined; seed i is the same in a 2-seed run, and
    # up to one group the numbers are those of jaxinit.layer_stats(key=--seed).
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    args = argparse.Namespace(depth=1, width=4, seed=3, chunk_size=None, optimize=False)

    def std(seeds):
        a = argparse.Namespace(**vars(args), seeds=seeds)
        return np.asarray(cli._stats("mlp", "he", a, x, None, 3).std)

    ten = std(10)
    assert ten.shape == (10, 2)
    np.testing.assert_allclose(std(2), ten[:2], rtol=1e-5)
    model = cli._model("mlp", "he", args, 3)
    direct = jaxinit.layer_stats(
        model, x, seeds=2, key=3, compiler_options=cli._compiler_options(args)
    )
    np.testing.assert_allclose(ten[:2], direct.std, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# --data-dir and --data auto


def test_auto_with_a_missing_data_dir_is_an_error(capsys, monkeypatch):
    monkeypatch.setattr(jaxinit, "layer_stats", None)
    last = _usage_error(
        ["stats", "--quick", "--data", "auto", "--data-dir", "/nonexistent"], capsys
    )
    assert "'/nonexistent' is not a directory" in last and "train-images-idx3-ubyte" in last


def test_auto_with_an_empty_data_dir_names_the_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(jaxinit, "layer_stats", None)
    last = _usage_error(["stats", "--quick", "--data", "auto", "--data-dir", str(tmp_path)], capsys)
    assert str(tmp_path) in last
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte (.gz or raw) not found" in last


def test_data_dir_one_level_up_is_named(tmp_path, capsys):
    _write_dataset(tmp_path / "fashion-mnist")
    last = _usage_error(["stats", "--data", "fashion-mnist", "--data-dir", str(tmp_path)], capsys)
    assert f"fashion-mnist/ is inside: pass '{tmp_path / 'fashion-mnist'}'" in last


def test_auto_without_data_dir_falls_back_to_digits_on_stderr(monkeypatch, capsys):
    monkeypatch.setenv(data.ENV_ONLY, "1")
    monkeypatch.delenv(data.ENV_DIRS, raising=False)
    args = argparse.Namespace(data="auto", data_dir=None, quiet=False, batch=4, data_seed=0)
    x, _, classes, what = cli._batch(args, cli.build_parser())
    assert what.startswith("digits") and x.shape == (4, 8, 8, 1) and classes == 10
    assert "--data auto: Fashion-MNIST not found in nowhere; using digits" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["stats", "--data", "auto"], {"JAXINIT_DATA_ONLY": "2"}, "JAXINIT_DATA_ONLY='2'"),
        (["stats", "--data", "gaussian", "--data-dir", "/x"], {}, "--data gaussian does not"),
        (["lsuv", "--data-dir", "/x"], {}, "--data digits does not read files"),
    ],
)
def test_data_options_that_cannot_apply_are_errors(argv, env, message, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(jaxinit, "layer_stats", None)
    assert message in _usage_error(argv, capsys)


def test_corrupt_gzip_dataset_is_a_one_line_error(tmp_path, capsys):
    _write_dataset(tmp_path, corrupt_images=True)
    last = _usage_error(
        ["stats", "--quick", "--data", "fashion-mnist", "--data-dir", str(tmp_path)], capsys
    )
    assert "train-images-idx3-ubyte.gz" in last and "bad gzip stream" in last


# ------------------------------------------------------------------------------------------
# the IDX loader: every corruption is an IDXError (a ValueError)


_SMALL = [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.arange(7, dtype=np.uint8),
    (np.arange(6, dtype=np.int16) - 3).reshape(3, 2),
]
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    which=st.integers(0, len(_SMALL) - 1),
    gz=st.booleans(),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "set", "truncate", "append"]), st.integers(0, 10**6)),
        min_size=1,
        max_size=3,
    ),
    value=st.integers(0, 255),
)
def test_corrupt_idx_loads_correctly_or_raises_idx_error(tmp_path, which, gz, edits, value):
    arr = _SMALL[which]
    raw = _idx_bytes(arr, _CODES[arr.dtype])
    blob = bytearray(gzip.compress(raw, mtime=0) if gz else raw)
    for op, at in edits:
        i = at % max(len(blob), 1)
        if op == "flip" and blob:
            blob[i] ^= 1 << (at % 8)
        elif op == "set" and blob:
            blob[i] = value
        elif op == "truncate":
            del blob[i:]
        elif op == "append":
            blob += bytes([value]) * (1 + at % 3)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(bytes(blob))
    try:
        out = data.read_idx(path)
    except data.IDXError as err:
        assert str(path) in str(err)
        return
    # Loaded: consistent with its own header; a gzip stream's CRC leaves only the original.
    assert isinstance(out, np.ndarray) and out.dtype.isnative
    if gz:
        np.testing.assert_array_equal(out, arr)
    else:
        assert out.size * out.dtype.itemsize == len(blob) - 4 - 4 * out.ndim


def test_every_single_byte_change_of_a_gzipped_idx_is_caught(tmp_path):
    arr = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    blob = gzip.compress(_idx_bytes(arr), mtime=0)
    path = tmp_path / "a.gz"
    other = 0
    for i in range(len(blob)):
        for v in (0x00, 0xFF, blob[i] ^ 0x10):
            path.write_bytes(blob[:i] + bytes([v]) + blob[i + 1 :])
            try:
                np.testing.assert_array_equal(data.read_idx(path), arr)
            except data.IDXError:
                pass
            except Exception:
                other += 1
    assert other == 0


# ------------------------------------------------------------------------------------------
# Ctrl-C


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_ends_with_130_and_one_line(monkeypatch, capsys):
    monkeypatch.setattr(jaxinit, "layer_stats", _interrupt)
    assert cli.main(QUICK_STATS) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "jaxinit stats: interrupted"


def test_ctrl_c_between_seed_groups(tmp_path, monkeypatch, capsys):
    real, calls = jaxinit.layer_stats, []

    def second_group_interrupted(*args, **kwargs):
        calls.append(kwargs["seeds"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(jaxinit, "layer_stats", second_group_interrupted)
    argv = ["demo", "--quick", "--seeds", "20", "--depth", "1", "--width", "4"]
    argv += ["--models", "mlp", "--inits", "he", "--no-plots", "--out", str(tmp_path)]
    assert cli.main(argv) == 130
    assert calls == [8, 8]
    assert "interrupted" in capsys.readouterr().err


def test_waiting_for_results_is_interruptible(monkeypatch):
    # The wait polls in sleeps (where Python sees Ctrl-C), never one blocking XLA call.
    class Pending:
        def is_ready(self):
            return False

        def block_until_ready(self):
            raise AssertionError("blocking wait")

    monkeypatch.setattr(jax.tree, "leaves", lambda tree: [Pending()])
    monkeypatch.setattr(cli.time, "sleep", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        cli._wait(object())


@pytest.mark.slow
def test_sigint_stops_a_long_stats_run_promptly(tmp_path):
    argv = [sys.executable, "-m", "jaxinit.app.cli", "stats", "--data", "gaussian"]
    argv += ["--seeds", "100000", "--depth", "8", "--width", "256", "--batch", "256"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # imports, compile, a few groups
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - sent < 20
    assert "Traceback" not in err and "jaxinit stats: interrupted" in err


# ------------------------------------------------------------------------------------------
# adversarial options


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stats", "--seed", "4294967296"], "--seed: 4294967296 must be <= 4294967295"),
        (["stats", "--data-seed", "99999999999"], "--data-seed: 99999999999 must be <="),
        (["stats", "--seeds", "10000000000000"], "--seeds: 10000000000000 must be <="),
        (["stats", "--seeds", "nan"], "--seeds: 'nan' is not an integer"),
        (["stats", "--batch", "-3"], "--batch: -3 must be >= 1"),
        (["stats", "--depth", "100000000"], "--depth: 100000000 must be <= 10000"),
        (["lsuv", "--max-iters", "10000000000000"], "--max-iters: 10000000000000 must be"),
        (["lsuv", "--target-std", "nan"], "--target-std: nan must be a finite number > 0"),
        (["lsuv", "--seeds", "3"], "unrecognized arguments: --seeds 3"),
        (["lsuv", "--chunk-size", "3"], "unrecognized arguments: --chunk-size 3"),
        (["lsuv", "--optimize"], "unrecognized arguments: --optimize"),
        (["stats", "--model", "convnet", "--depth", "9"], "--depth: --depth size the MLP"),
        (["lsuv", "--model", "convnet", "--width", "9"], "--model convnet has fixed layers"),
        (["demo", "--models", "convnet", "--depth", "3", "--width", "3"], "--depth and --width"),
        (["demo", "--inits", " , "], "use a comma-separated subset"),
        (["gain", "leaky_relu", "--param", "nan"], "param=nan must be a finite number"),
        (["gain", "--sigma-b", "inf"], "--sigma-b: inf must be a finite number >= 0"),
        (["gain", ""], "is not a known name"),
        (
            [*QUICK_STATS, "--width", "10000000", "--depth", "3"],
            "GiB for one seed; about 16.0 GiB is available",
        ),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys, no_work, monkeypatch):
    monkeypatch.setattr(cli, "_memory_bytes", lambda: 16 * 2**30)
    assert message in _usage_error(argv, capsys)


def test_out_of_memory_at_run_time_is_a_one_line_error(monkeypatch, capsys):
    def exhausted(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9 GiB")

    monkeypatch.setattr(jaxinit, "layer_stats", exhausted)
    assert "out of memory; lower --batch" in _usage_error(QUICK_STATS, capsys)


def test_no_plots_still_writes_summary_and_repeats_run_once(tmp_path, capsys, monkeypatch):
    real, calls = jaxinit.layer_stats, []
    monkeypatch.setattr(jaxinit, "layer_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    argv = ["demo", "--quick", "--depth", "1", "--width", "4"]
    argv += ["--models", "mlp,mlp", "--inits", "he, he"]
    assert cli.main([*argv, "--no-plots", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert len(calls) == 1 and "summary.json" in capsys.readouterr().out
