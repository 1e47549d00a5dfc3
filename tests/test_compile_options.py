"""The test session compiles with LLVM at -O1 (``conftest.py``) to save compile time; users get
XLA's default, -O3. What that changes, checked here on fixed keys:

- XLA's own passes do not depend on LLVM's level: the optimized HLO of every program (the
  initializers' and the tools') is the same text at both, so the two compute the same
  operations in the same fusions.
- LLVM at -O3 also vectorizes loops. XLA marks the adds of a sum it emits as a loop of its own
  reassociable, so at -O3 such a sum may add its terms in another order and round its last bits
  differently (as -O3 itself does on a CPU of another vector width). Every initializer's draws
  (elementwise, no sum) are bit for bit equal; a control shows the comparison can fail: -O0
  rounds the random draws differently, and is caught.
- The test files that compare programs exactly (LSUV scanned against unrolled, ``measure``
  under ``vmap`` against a loop, the tree edits) pass under the default as well."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from test_registry import REGISTRY

_HERE = pathlib.Path(__file__).parent
_DUMP = _HERE / "_compile_dump.py"
_DEVICES = "--xla_force_host_platform_device_count=8"


def _env(level: int | None, *flags: str) -> dict[str, str]:
    """This environment with XLA's default options (``level=None``) or
    ``--xla_backend_optimization_level=level``, plus ``flags``; a child starts its own
    compilation cache, as the cache is not the subject here."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXINIT_TEST_XLA_CACHE")}
    given = [*flags, *([f"--xla_backend_optimization_level={level}"] if level is not None else [])]
    if given:
        env["XLA_FLAGS"] = " ".join(given)
    return env


def _dump(tmp_path, level: int | None, *args: str, hlo: bool = False) -> dict[str, np.ndarray]:
    """The dump's arrays from a fresh process; with ``hlo``, XLA also writes each program's
    optimized HLO to ``tmp_path / f"hlo-O{level}"``."""
    name = f"O{level}{'-'.join(args)}"
    flags = (f"--xla_dump_to={tmp_path / f'hlo-{name}'}",) if hlo else ()
    out = tmp_path / f"{name}.npz"
    subprocess.run(
        [sys.executable, str(_DUMP), str(out), *args], env=_env(level, *flags), check=True
    )
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def _optimized_hlo(folder: pathlib.Path) -> dict[str, str]:
    """Each program's HLO after XLA's passes, without its metadata (source lines, op names)."""
    return {
        p.name: re.sub(r", metadata=\{[^}]*\}", "", p.read_text())
        for p in sorted(folder.glob("*.cpu_after_optimizations.txt"))
    }


def _differing(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]


@pytest.mark.slow  # 67 s: three fresh processes
def test_o1_compiles_the_same_programs_and_draws_bit_for_bit_what_the_default_draws(tmp_path):
    default = _dump(tmp_path, None, hlo=True)
    assert {k.split("/")[1] for k in default if k.startswith("init/")} == set(REGISTRY)
    tools = ("layer_stats", "lsuv", "measure", "predict", "critical_sigma_w")
    assert {k.split("/")[0] for k in default} == {"init", *tools}
    o1 = _dump(tmp_path, 1, hlo=True)
    hlo_default, hlo_o1 = (
        _optimized_hlo(tmp_path / "hlo-ONone"),
        _optimized_hlo(tmp_path / "hlo-O1"),
    )
    assert len(hlo_default) >= 10 and hlo_default.keys() == hlo_o1.keys()
    assert [n for n in hlo_default if hlo_default[n] != hlo_o1[n]] == []
    draws = [k for k in default if k.startswith("init/")]
    assert _differing({k: default[k] for k in draws}, {k: o1[k] for k in draws}) == []
    # The control: under -O0 the same key gives different normal draws.
    only = "normal"
    draws_0 = {k: v for k, v in default.items() if k.startswith(f"init/{only}/")}
    assert _differing(draws_0, _dump(tmp_path, 0, "--only", only)) != []


@pytest.mark.slow  # 53 s on two workers
def test_the_exact_comparisons_hold_under_the_default_options():
    files = [str(_HERE / f) for f in ("test_lsuv.py", "test_measure.py", "test_tree.py")]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", *files]
    done = subprocess.run(cmd, env=_env(None, _DEVICES), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-2000:]
