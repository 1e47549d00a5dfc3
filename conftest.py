"""Test-session set-up, loaded before any jaxinit module is imported.

Eight host devices let the sharded code paths run on a plain CPU; rank promotion raises so
that broadcasting mistakes fail loudly. When the development checkout has ``../shared/data``
beside it, the data loaders look there (``JAXINIT_DATA``), unless the caller set
``JAXINIT_DATA`` already (even to an empty value, which means: nowhere).
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# One OpenBLAS thread (LAPACK behind jnp.linalg.qr, NumPy, SciPy): with more threads than free
# cores its spinning workers slow a 576x128 QR from 3 ms to over 0.5 s. Set before NumPy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_SHARED_DATA = pathlib.Path(__file__).resolve().parent.parent / "shared" / "data"
if "JAXINIT_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["JAXINIT_DATA"] = str(_SHARED_DATA)

import jax  # noqa: E402  (after the environment above is set)

jax.config.update("jax_numpy_rank_promotion", "raise")
