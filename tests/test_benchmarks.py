"""The benchmark scripts run: each ``--quick`` in-process, returning its JSON summary.

These check that a benchmark still runs and reports what it names, not its timings (which
belong in BENCHMARKS.md, from a quiet machine). The PyTorch columns need their own environment
(``--torch-python``) and are skipped here with a message."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest


def test_audit(load, capsys):
    result = load("bench_audit").main(["--quick", "--repeats", "1"])
    assert result["bench"] == "audit" and result["findings"] == []
    assert result["audit_s"] > 0 and result["ratio"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bench"] == "audit"


@pytest.mark.slow  # 6 s: twelve first calls
def test_init(load, capsys):
    result = load("bench_init").main(["--quick", "--repeats", "1"])
    assert [r["init"] for r in result["rows"]] == ["he_normal"] * 2 + ["truncated_normal"] * 2
    # the one-kernel hash draws what JAX's lowering of threefry draws
    assert all(r["equal_to_jax_hash"] for r in result["rows"])
    assert all(t["first_s"] > 0 and t["steady_s"] > 0 for t in result["totals"].values())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bench"] == "init"


@pytest.mark.slow  # 20 s: two compiles of two widths' training
def test_conv_layout(load):
    result = load("bench_conv_layout").main(["--widths", "8,16", "--seeds", "2", "--repeats", "1"])
    assert [r["width"] for r in result["rows"]] == [8, 16]
    for row in result["rows"]:
        # the two programs compute the same training, up to float rounding
        assert row["max_rel_diff"] < 1e-4
        assert np.isfinite(row["speedup"]) and row["canonical_run_s"] > 0


@pytest.mark.slow  # 10 s
def test_dks(load):
    result = load("bench_dks").main(["--quick"])
    assert result["bench"] == "dks"


@pytest.mark.slow  # 50 s
def test_sweep(load):
    assert load("bench_sweep").main(["--quick"]) == 0


@pytest.mark.slow  # about a minute: LSUV and the forward on small models, no PyTorch
def test_lsuv(load):
    result = load("bench_lsuv").main(["--quick"])
    assert result["bench"] == "lsuv"
    for name, entry in result["models"].items():
        j = entry["jaxinit"]
        assert j["all_converged"], name
        for key in ("lsuv_s", "forward_s", "donated_s", "ratio", "donated_ratio"):
            assert np.isfinite(j[key]) and j[key] > 0, (name, key, j[key])
        if sys.platform == "linux":
            assert set(j["faults"]) == {"lsuv", "donated"}, (name, j["faults"])
            assert all(v >= 0 for v in j["faults"].values()), (name, j["faults"])


@pytest.mark.slow  # about a minute: three configurations at widths 2^5..2^7, no PyTorch
def test_coord_check(load):
    result = load("bench_coord_check").main(["--quick"])
    assert result["bench"] == "coord_check"
