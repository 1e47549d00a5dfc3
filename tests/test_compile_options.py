"""The test session compiles with LLVM at -O1 (``conftest.py``) to save compile time. That is
only sound if -O1 computes what users get, XLA's default -O3: here the same results, on fixed
keys, come out bit for bit equal under both. A control shows the comparison can fail: -O0
rounds the random draws differently, and is caught."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from test_registry import REGISTRY

_DUMP = pathlib.Path(__file__).with_name("_compile_dump.py")


def _dump(tmp_path, level: int | None, *args: str) -> dict[str, np.ndarray]:
    """The dump's arrays from a fresh process: XLA's default options (``level=None``, no
    XLA_FLAGS at all) or ``--xla_backend_optimization_level=level``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if level is not None:
        env["XLA_FLAGS"] = f"--xla_backend_optimization_level={level}"
    out = tmp_path / f"O{level}{'-'.join(args)}.npz"
    subprocess.run([sys.executable, str(_DUMP), str(out), *args], env=env, check=True)
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def _differing(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]


@pytest.mark.slow
def test_o1_computes_bit_for_bit_what_the_default_computes(tmp_path):
    default = _dump(tmp_path, None)
    assert {k.split("/")[1] for k in default if k.startswith("init/")} == set(REGISTRY)
    tools = ("layer_stats", "lsuv", "measure", "predict", "critical_sigma_w")
    assert {k.split("/")[0] for k in default} == {"init", *tools}
    assert _differing(default, _dump(tmp_path, 1)) == []
    # The control: under -O0 the same key gives different normal draws.
    only = "normal"
    draws = {k: v for k, v in default.items() if k.startswith(f"init/{only}/")}
    assert _differing(draws, _dump(tmp_path, 0, "--only", only)) != []
