"""Test-session set-up, loaded before any jaxinit module is imported.

Eight host devices let the sharded code paths run on a plain CPU; rank promotion raises so that
broadcasting mistakes fail loudly. XLA compiles the session's programs with LLVM at -O1 instead
of its default -O3: the suite's time is mostly XLA compiling small programs, and -O1 took it
from 265 s to 230 s on two workers (2-core AMD EPYC). XLA optimizes the same programs at both
levels; -O3 also vectorizes loops, which can reorder the sums XLA emits itself and change their
last bits. ``tests/test_compile_options.py`` checks that the optimized programs are the same,
that the random draws are bit for bit the default's (and that -O0, which rounds them
differently, is caught), and that the test files comparing programs exactly pass under the
default too.

When the development checkout has ``../shared/data`` beside it, the data loaders look there
(``JAXINIT_DATA``), unless the caller set ``JAXINIT_DATA`` already (even to an empty value,
which means: nowhere).
"""

import os
import pathlib
import shutil
import tempfile

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=1"
)
# One OpenBLAS thread (LAPACK behind jnp.linalg.qr, NumPy, SciPy): with more threads than free
# cores its spinning workers slow a 576x128 QR from 3 ms to over 0.5 s. Set before NumPy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_SHARED_DATA = pathlib.Path(__file__).resolve().parent.parent / "shared" / "data"
if "JAXINIT_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["JAXINIT_DATA"] = str(_SHARED_DATA)

import jax  # noqa: E402  (after the environment above is set)

jax.config.update("jax_numpy_rank_promotion", "raise")
# One compilation cache for the session and its pytest-xdist workers (they inherit this
# process's environment): many tests build the same models, and a program compiled once (same
# HLO, same options) is then loaded instead of compiled again. The folder is made by the
# process that starts the session and removed when it ends.
if "JAXINIT_TEST_XLA_CACHE" not in os.environ:
    os.environ["JAXINIT_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxinit-xla-cache-")
    _OWN_CACHE = os.environ["JAXINIT_TEST_XLA_CACHE"]
jax.config.update("jax_compilation_cache_dir", os.environ["JAXINIT_TEST_XLA_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_sessionfinish(session, exitstatus):
    if "_OWN_CACHE" in globals():
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
