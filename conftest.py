"""Test-session set-up, loaded before any jaxinit module is imported.

Eight host devices let the sharded code paths run on a plain CPU; rank promotion raises so
that broadcasting mistakes fail loudly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
