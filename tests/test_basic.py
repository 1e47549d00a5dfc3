"""Fills and plain distributions: constant, zeros, ones, normal, uniform, truncated_normal."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _stats import Z, as_f64, assert_ks, assert_mean, assert_second_moment, assert_var

import jaxinit

KEY = jax.random.key(0)
DENSE, CONV = (256, 512), (3, 3, 64, 128)
REAL = [jnp.float32, jnp.bfloat16, jnp.float16]
LOW = [jnp.bfloat16, jnp.float16]
# Probability mass of N(0, 1) truncated to (-2, 2): its standard deviation, from scipy.
TRUNC_STD = float(scipy.stats.truncnorm(-2, 2).std())


def dtype_id(dt) -> str:
    return np.dtype(dt).name


# ---------------------------------------------------------------------------------------------
# Fills


@pytest.mark.parametrize("dtype", [*REAL, jnp.complex64, jnp.int32], ids=dtype_id)
def test_zeros_ones_constant_values(dtype):
    shape = (4, 5)
    np.testing.assert_array_equal(jaxinit.zeros()(KEY, shape, dtype), np.zeros(shape))
    np.testing.assert_array_equal(jaxinit.ones()(KEY, shape, dtype), np.ones(shape))
    c = jaxinit.constant(3)(KEY, shape, dtype)
    assert c.dtype == dtype
    np.testing.assert_array_equal(c, np.full(shape, 3))


def test_constant_value_in_dtype():
    """The fill is the value rounded once to the output dtype."""
    for dt in REAL:
        c = jaxinit.constant(0.1)(KEY, (3,), dt)
        assert bool((c == jnp.asarray(0.1, dt)).all())
    z = jaxinit.constant(1 - 2j)(KEY, (2,), jnp.complex64)
    np.testing.assert_array_equal(z, np.full(2, 1 - 2j, np.complex64))


def test_constant_broadcasts_an_array():
    col = np.arange(4.0)
    w = jaxinit.constant(col)(KEY, (3, 4))
    np.testing.assert_array_equal(w, np.broadcast_to(col, (3, 4)))
    msg = r"value of shape \(4,\) does not broadcast to shape=\(3, 5\)"
    with pytest.raises(ValueError, match=msg):
        jaxinit.constant(col)(KEY, (3, 5))


def test_fills_ignore_the_key():
    """Fills never look at the key: the same for any key, and None is accepted."""
    for init in (jaxinit.zeros(), jaxinit.ones(), jaxinit.constant(2.5)):
        a = init(jax.random.key(0), (2, 3))
        np.testing.assert_array_equal(a, init(jax.random.key(1), (2, 3)))
        np.testing.assert_array_equal(a, init(None, (2, 3)))


def test_constant_validation():
    with pytest.raises(ValueError, match=r"constant: value=inf must be finite"):
        jaxinit.constant(math.inf)
    with pytest.raises(ValueError, match=r"constant: value=.*nan.* must be finite"):
        jaxinit.constant([1.0, math.nan])
    with pytest.raises(TypeError, match=r"constant: value='a' must be a number"):
        jaxinit.constant("a")


# ---------------------------------------------------------------------------------------------
# normal
#
# Each configuration below is drawn for a few (shape, dtype) pairs only: a jaxinit initializer
# compiles one program per (configuration, shape, dtype), shared by every test (and by
# test_registry, which uses the same configurations).

NORMAL = jaxinit.normal(0.3, mean=0.2)
UNIFORM = jaxinit.uniform(-0.3, 0.7)
TRUNC = jaxinit.truncated_normal(0.3)


@pytest.mark.parametrize(
    "shape,dtype",
    [(DENSE, jnp.float32), (DENSE, jnp.bfloat16), (DENSE, jnp.float16), (CONV, jnp.float32)],
    ids=str,
)
def test_normal_moments_and_ks(shape, dtype):
    """N(0.2, 0.3^2): mean, variance and E[w^2] = mean^2 + stddev^2 within Z standard errors,
    and KS against scipy.stats.norm (p > 1e-6). For bfloat16, the CDF step at one
    representable value (<= 0.002) is well below the KS critical distance for 131072 draws
    (0.0074)."""
    w = NORMAL(KEY, shape, dtype)
    assert w.dtype == dtype and w.shape == shape
    assert_mean(w, 0.2)
    assert_var(w, 0.09)
    assert_second_moment(w, 0.2**2 + 0.09)
    assert_ks(w, "norm", args=(0.2, 0.3), what=f"normal {dtype_id(dtype)}")


def test_normal_complex_is_circular():
    """Complex normal: mean + stddev * z with z circular, E|z|^2 = 1; so E|w - mean|^2 =
    stddev^2, and real and imaginary parts of z are independent N(0, 1/2)."""
    w = np.asarray(NORMAL(KEY, DENSE, jnp.complex64)).ravel().astype(np.complex128)
    assert_mean(w.real, 0.2, "mean of Re w")
    assert_mean(w.imag, 0.0, "mean of Im w")
    assert_second_moment(w - 0.2, 0.09)
    z = (w - 0.2) / 0.3
    for part in (z.real, z.imag):
        assert_var(part, 0.5)
        assert_ks(part * math.sqrt(2), "norm", what="Re/Im part")
    assert_mean(z.real * z.imag, 0.0, "E[Re z Im z]")  # uncorrelated parts


@pytest.mark.parametrize(
    "dtype,min_distinct", [(jnp.bfloat16, 1024), (jnp.float16, 8192)], ids=["bfloat16", "float16"]
)
def test_normal_low_precision_is_drawn_in_float32(dtype, min_distinct):
    """bf16/fp16 normals are drawn in float32 and cast (DESIGN.md "Low precision").

    Over 1e6 draws of N(0, 1):
    * distinct values: a normal made from a uniform drawn in bfloat16 (float16) has at most
      128 (1024) levels; drawn in float32 and rounded, the values fill every binade, thousands of
      distinct values. The bound is 8x the quantized count.
    * no mean bias: the mean is 0 within Z standard errors (a quantized bfloat16 uniform biases
      it by -0.012, 12 standard errors).
    * tails: |w| >= 4 has probability 6.33e-5, about 63 of 1e6 draws; the count must be within
      Z Poisson standard deviations of that (a bfloat16 uniform cannot reach beyond 2.9).
    """
    w = jaxinit.normal()(jax.random.key(3), (1000, 1000), dtype)
    assert w.dtype == dtype
    x = as_f64(w)
    assert len(np.unique(x)) > min_distinct
    assert_mean(x, 0.0)
    expected = x.size * 2 * scipy.stats.norm.sf(4.0)
    count = int((np.abs(x) >= 4).sum())
    assert abs(count - expected) <= Z * math.sqrt(expected), (count, expected)


def test_normal_validation():
    with pytest.raises(ValueError, match=r"normal: stddev=-1\.0 must be finite and >= 0"):
        jaxinit.normal(-1.0)
    with pytest.raises(ValueError, match=r"normal: stddev=nan must be finite"):
        jaxinit.normal(math.nan)
    with pytest.raises(ValueError, match=r"normal: stddev=inf must be finite"):
        jaxinit.normal(math.inf)
    with pytest.raises(ValueError, match=r"normal: mean=nan must be finite"):
        jaxinit.normal(1.0, mean=math.nan)
    with pytest.raises(TypeError, match=r"normal: stddev='x' is not a real number"):
        jaxinit.normal("x")


def test_normal_zero_stddev_is_the_mean():
    np.testing.assert_array_equal(jaxinit.normal(0.0, 0.5)(KEY, (3, 4)), np.full((3, 4), 0.5))


# ---------------------------------------------------------------------------------------------
# uniform


@pytest.mark.parametrize(
    "shape,dtype",
    [(DENSE, jnp.float32), (DENSE, jnp.bfloat16), (DENSE, jnp.float16), (CONV, jnp.float32)],
    ids=str,
)
def test_uniform_moments_and_ks(shape, dtype):
    """U[-0.3, 0.7): mean 0.2, variance 1/12 within Z standard errors; KS against
    scipy.stats.uniform(-0.3, 1.0) (p > 1e-6)."""
    w = UNIFORM(KEY, shape, dtype)
    assert w.dtype == dtype and w.shape == shape
    assert_mean(w, 0.2)
    assert_var(w, 1 / 12)
    assert_ks(w, "uniform", args=(-0.3, 1.0), what=f"uniform {dtype_id(dtype)}")


@pytest.mark.parametrize("dtype", REAL, ids=dtype_id)
@pytest.mark.parametrize("low,high", [(-0.3, 0.7), (-1.0, 1.0)], ids=str)
def test_uniform_bounds_in_output_dtype(low, high, dtype):
    """Every value lies in [low, high) after rounding to the output dtype.

    The float32 draws just below ``high`` round up to it in bfloat16/float16 unless clipped
    (for high = 1 in bfloat16, 1 draw in 1024 of U[-1, 1), so about 130 of 131072), so the
    check has teeth. Both ends are also reached: the gap between an end and the nearest of n
    draws exceeds t with probability (1 - t / L)^n ~ exp(-n t / L), below 1e-6 for
    t = 14 L / n; we allow that plus two spacings of the dtype at the bound.
    """
    w = as_f64(jaxinit.uniform(low, high)(KEY, DENSE, dtype))
    assert w.min() >= low and w.max() < high, (w.min(), w.max())
    gap = 14 * (high - low) / w.size + 2 * float(jnp.finfo(dtype).eps) * max(abs(low), abs(high))
    assert w.min() <= low + gap and w.max() >= high - gap, (w.min(), w.max(), gap)


def test_uniform_default_is_symmetric():
    """The default is U[-1, 1) (jax.nn.initializers.uniform's default is U[0, 0.01))."""
    w = jaxinit.uniform()(KEY, DENSE)
    assert_mean(w, 0.0)
    assert_var(w, 1 / 3)


def test_uniform_validation():
    with pytest.raises(ValueError, match=r"uniform: low=1\.0 must be < high=0\.0"):
        jaxinit.uniform(1.0, 0.0)
    with pytest.raises(ValueError, match=r"uniform: low=0\.5 must be < high=0\.5"):
        jaxinit.uniform(0.5, 0.5)
    with pytest.raises(ValueError, match=r"uniform: high=nan must be finite"):
        jaxinit.uniform(0.0, math.nan)
    with pytest.raises(ValueError, match=r"uniform: low=-inf must be finite"):
        jaxinit.uniform(-math.inf, 0.0)


# ---------------------------------------------------------------------------------------------
# truncated_normal


def test_truncated_std_in_docstring():
    """The docstring's value of the std of N(0, 1) cut at +-2, checked against scipy."""
    assert "0.8796256610" in jaxinit.truncated_normal.__doc__
    assert abs(TRUNC_STD - 0.8796256610) < 1e-10


@pytest.mark.parametrize(
    "shape,dtype",
    [(DENSE, jnp.float32), (DENSE, jnp.bfloat16), (DENSE, jnp.float16), (CONV, jnp.float32)],
    ids=str,
)
def test_truncated_normal_moments_and_ks(shape, dtype):
    """N(0, 0.3^2) cut at +-0.6: mean 0 and variance (0.3 * 0.8796...)^2 within Z standard
    errors, KS against scipy.stats.truncnorm(-2, 2, scale=0.3) (p > 1e-6), and every value
    strictly inside (-0.6, 0.6) in the output dtype (0.6 is not representable: the check is
    that rounding never lands on the nearest representable value outside)."""
    w = TRUNC(KEY, shape, dtype)
    assert w.dtype == dtype and w.shape == shape
    assert_mean(w, 0.0)
    assert_var(w, (0.3 * TRUNC_STD) ** 2)
    assert_ks(w, "truncnorm", args=(-2, 2, 0.0, 0.3), what=f"truncated {dtype_id(dtype)}")
    x = as_f64(w)
    assert x.max() < 0.6 and x.min() > -0.6


@pytest.mark.parametrize("cut", [(-1.0, 3.0), (0.5, 1.5)], ids=str)
def test_truncated_normal_asymmetric_cut(cut):
    """KS against scipy.stats.truncnorm(lower, upper, scale=stddev) and its mean and variance,
    for cuts that are not symmetric (p > 1e-6; Z standard errors)."""
    lower, upper = cut
    w = jaxinit.truncated_normal(0.3, lower, upper)(KEY, DENSE)
    ref = scipy.stats.truncnorm(lower, upper, scale=0.3)
    assert_ks(w, ref.cdf, what=f"truncated {cut}")
    assert_mean(w, ref.mean())
    assert_var(w, ref.var())
    x = as_f64(w)
    assert x.min() > 0.3 * lower and x.max() < 0.3 * upper


def test_truncated_normal_infinite_cut():
    """Infinite bounds are allowed: (-inf, inf) is the normal, (0, inf) the half-normal."""
    w = jaxinit.truncated_normal(0.3, -math.inf, math.inf)(KEY, DENSE)
    assert_ks(w, "norm", args=(0.0, 0.3), what="uncut truncated_normal")
    w = jaxinit.truncated_normal(1.0, 0.0, math.inf)(KEY, DENSE)
    assert_ks(w, "halfnorm", what="half-normal")
    assert float(w.min()) > 0


@pytest.mark.parametrize("dtype", REAL, ids=dtype_id)
def test_truncated_normal_strictly_inside_representable_bound(dtype):
    """With stddev = 1 the bounds +-2 are representable: about 1 in 2000 float32 draws lies
    within half a bfloat16 spacing of a bound (60 of 131072) and rounds onto it unless clipped;
    no value may equal or pass the bound."""
    x = as_f64(jaxinit.truncated_normal()(KEY, DENSE, dtype))
    assert x.max() < 2 and x.min() > -2, (x.min(), x.max())


def test_truncated_normal_complex():
    """Complex: circular, |w| < upper * stddev, and |w|^2 / stddev^2 is Exp(1) cut at upper^2
    (the modulus of a circular normal with E|z|^2 = 1), checked by KS against
    scipy.stats.truncexpon(b=4), with E|w|^2 = stddev^2 * its mean; the phase is uniform on
    (-pi, pi] (KS)."""
    w = np.asarray(TRUNC(KEY, DENSE, jnp.complex64)).ravel()
    r2 = np.abs(w.astype(np.complex128)) ** 2 / 0.09
    assert r2.max() < 4.0
    assert_ks(r2, "truncexpon", args=(4.0,), what="|w|^2")
    assert_ks(np.angle(w), "uniform", args=(-math.pi, 2 * math.pi), what="phase")
    assert_second_moment(w, 0.09 * scipy.stats.truncexpon(4.0).mean())


def test_truncated_normal_validation():
    with pytest.raises(ValueError, match=r"truncated_normal: lower=1\.0 must be < upper=1\.0"):
        jaxinit.truncated_normal(lower=1.0, upper=1.0)
    with pytest.raises(ValueError, match=r"lower=3\.0 must be < upper=2\.0"):
        jaxinit.truncated_normal(lower=3.0)
    with pytest.raises(ValueError, match=r"lower=nan must be < upper=2\.0"):
        jaxinit.truncated_normal(lower=math.nan)
    with pytest.raises(ValueError, match=r"truncated_normal: stddev=-0\.1 must be finite and >= 0"):
        jaxinit.truncated_normal(-0.1)
    with pytest.raises(ValueError, match=r"truncated_normal: stddev=nan must be finite"):
        jaxinit.truncated_normal(math.nan)
    with pytest.raises(ValueError, match=r"complex dtype=complex64 needs a symmetric cut"):
        jaxinit.truncated_normal(lower=-1.0, upper=2.0)(KEY, (3, 3), jnp.complex64)
