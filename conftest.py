"""Test-session set-up, loaded before any jaxinit module is imported.

Eight host devices let the sharded code paths run on a plain CPU; rank promotion raises so
that broadcasting mistakes fail loudly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# One OpenBLAS thread (LAPACK behind jnp.linalg.qr, NumPy, SciPy): with more threads than free
# cores its spinning workers slow a 576x128 QR from 3 ms to over 0.5 s. Set before NumPy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
