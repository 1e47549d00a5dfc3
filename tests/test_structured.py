"""identity (eye / Dirac conv kernel) and sparse (Martens 2010)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import as_f64, assert_ks, assert_mean, assert_second_moment

import jaxinit

KEY = jax.random.key(0)
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64]


def dtype_id(dt) -> str:
    return np.dtype(dt).name


def randn(shape) -> jax.Array:
    """A standard normal input, drawn flat (XLA:CPU compiles rank-4 draws slowly)."""
    return jaxinit.normal()(jax.random.key(1), (math.prod(shape),)).reshape(shape)


# ---------------------------------------------------------------------------------------------
# identity


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (10, 6)], ids=str)
def test_identity_dense(shape, dtype):
    """scale * eye(in, out), rectangular allowed: x @ W keeps the first min(in, out) features
    (times scale) and pads with zeros when out > in."""
    w = jaxinit.identity(2.0)(KEY, shape, dtype)
    assert w.dtype == dtype and w.shape == shape
    np.testing.assert_array_equal(np.asarray(w.astype(jnp.complex64)), 2.0 * np.eye(*shape))
    n_in, n_out = shape
    x = np.arange(3.0 * n_in).reshape(3, n_in)
    y = x @ np.asarray(jnp.real(w).astype(jnp.float32))
    k = min(n_in, n_out)
    np.testing.assert_array_equal(y[:, :k], 2.0 * x[:, :k])
    np.testing.assert_array_equal(y[:, k:], 0.0)


_SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


@pytest.mark.parametrize(
    "shape",
    [
        (3, 3, 8, 8),
        (5, 5, 4, 4),
        (1, 1, 4, 4),
        (2, 2, 4, 4),
        (4, 3, 4, 4),
        (3, 4, 4),
        (3, 3, 3, 4, 4),
    ],
    ids=str,
)
def test_identity_conv_same_padding_returns_input(shape):
    """A conv with the identity kernel and padding SAME returns its input exactly, for odd and
    even kernel sizes (the tap is (k - 1) // 2, where SAME puts the output's own position) and
    1-D, 2-D and 3-D convs."""
    w = jaxinit.identity()(KEY, shape)
    spatial = len(shape) - 2
    x = randn((2, *([5] * spatial), shape[-2]))
    y = jax.lax.conv_general_dilated(
        x, w, (1,) * spatial, "SAME", dimension_numbers=_SPECS[spatial]
    )
    np.testing.assert_array_equal(y, x)
    # Every tap but one is zero.
    assert int((np.asarray(w) != 0).sum()) == shape[-1]


def test_identity_conv_rectangular_channels():
    """in < out: the extra output channels are zero; in > out: the extra inputs are dropped."""
    x = randn((2, 5, 5, 4))
    conv = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=_SPECS[2]
    )
    y = conv(x, jaxinit.identity(0.5)(KEY, (3, 3, 4, 6)))
    np.testing.assert_array_equal(y[..., :4], 0.5 * x)
    np.testing.assert_array_equal(y[..., 4:], 0.0)
    y = conv(x, jaxinit.identity()(KEY, (3, 3, 4, 2)))
    np.testing.assert_array_equal(y, x[..., :2])


def test_identity_ignores_the_key():
    a = jaxinit.identity()(jax.random.key(0), (3, 3, 4, 4))
    np.testing.assert_array_equal(a, jaxinit.identity()(jax.random.key(1), (3, 3, 4, 4)))
    np.testing.assert_array_equal(a, jaxinit.identity()(None, (3, 3, 4, 4)))


def test_identity_validation():
    with pytest.raises(ValueError, match=r"identity needs rank >= 2 .* got shape \(5,\)\. For "):
        jaxinit.identity()(KEY, (5,))
    with pytest.raises(ValueError, match=r"identity: scale=0\.0 must be finite and > 0"):
        jaxinit.identity(0.0)
    with pytest.raises(TypeError, match=r"identity: dtype=int32 is not supported"):
        jaxinit.identity()(KEY, (3, 3), jnp.int32)


# ---------------------------------------------------------------------------------------------
# sparse


@pytest.mark.parametrize(
    "shape,sparsity,dtype",
    [
        ((256, 512), 0.9, jnp.float32),
        ((3, 3, 64, 128), 0.9, jnp.float32),
        ((256, 512), 0.9, jnp.bfloat16),
        ((256, 512), 0.9, jnp.float16),
        ((256, 512), 0.25, jnp.float32),
        ((256, 512), 0.0, jnp.float32),
        ((3, 4), 0.5, jnp.float32),
    ],
    ids=str,
)
def test_sparse_zero_count_per_unit(shape, sparsity, dtype):
    """Each output unit (last axis) has exactly ceil(sparsity * fan_in) zero incoming weights,
    fan_in being the product of the other axes."""
    w = np.asarray(jaxinit.sparse(sparsity)(KEY, shape, dtype).astype(jnp.float32))
    fan_in = math.prod(shape[:-1])
    zeros = (w.reshape(fan_in, shape[-1]) == 0).sum(axis=0)
    np.testing.assert_array_equal(zeros, math.ceil(sparsity * fan_in))


@pytest.mark.parametrize("shape", [(256, 512), (3, 3, 64, 128)], ids=str)
def test_sparse_statistics(shape):
    """E[w^2] = stddev^2 (1 - n_zero / fan_in) (Z standard errors); the non-zero weights are
    N(0, stddev^2) (KS, p > 1e-6); the zeroed positions are uniform: the fraction of units in
    which a given input is zeroed is the sparsity (a binomial mean, Z standard errors)."""
    sparsity, stddev = 0.75, 0.05
    w = np.asarray(jaxinit.sparse(sparsity, stddev)(KEY, shape)).reshape(-1, shape[-1])
    fan_in = w.shape[0]
    n_zero = math.ceil(sparsity * fan_in)
    assert_second_moment(w, stddev**2 * (1 - n_zero / fan_in))
    assert_ks(w[w != 0], "norm", args=(0.0, stddev), what="non-zero weights")
    for row in (0, fan_in // 2, fan_in - 1):
        assert_mean(w[row] == 0, n_zero / fan_in, f"P(w[{row}, j] = 0)")
    # Different units have different patterns.
    assert not np.array_equal(w[:, 0] == 0, w[:, 1] == 0)


def test_sparse_low_precision_values():
    """bf16: drawn in float32 and cast; the non-zero weights keep their variance."""
    w = as_f64(jaxinit.sparse(0.5, 0.05)(KEY, (256, 512), jnp.bfloat16))
    assert_second_moment(w[w != 0], 0.05**2)


def test_sparse_validation():
    with pytest.raises(ValueError, match=r"sparse: sparsity=1\.0 must be in \[0, 1\)"):
        jaxinit.sparse(1.0)
    with pytest.raises(ValueError, match=r"sparse: sparsity=-0\.1 must be in \[0, 1\)"):
        jaxinit.sparse(-0.1)
    with pytest.raises(ValueError, match=r"sparse: sparsity=nan must be finite"):
        jaxinit.sparse(math.nan)
    with pytest.raises(ValueError, match=r"sparse: stddev=-0\.01 must be finite and >= 0"):
        jaxinit.sparse(0.5, -0.01)
    with pytest.raises(ValueError, match=r"sparse needs rank >= 2 .*got shape \(8,\)\. For "):
        jaxinit.sparse(0.5)(KEY, (8,))
    with pytest.raises(TypeError, match=r"sparse: dtype=complex64 is complex"):
        jaxinit.sparse(0.5)(KEY, (8, 8), jnp.complex64)
