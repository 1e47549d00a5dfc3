"""prior_bias (class-prior output bias) and torch_bias_default."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import as_f64, assert_ks, assert_mean, assert_var

import jaxinit

KEY = jax.random.key(0)
COUNTS = np.array([10, 5, 5, 100, 100], dtype=np.float64)
P = COUNTS / COUNTS.sum()


def zero_kernel_logits(bias, n_in: int = 16) -> jax.Array:
    """Logits of a Dense layer with a zero kernel (jaxinit.zeros) on a random batch."""
    x = jaxinit.normal()(jax.random.key(1), (8, n_in))
    kernel = jaxinit.zeros()(KEY, (n_in, bias.shape[0]))
    return x @ kernel + bias[None, :]


# ---------------------------------------------------------------------------------------------
# prior_bias


def test_prior_bias_softmax_gives_class_proportions():
    """Counts [10, 5, 5, 100, 100], zero kernel: the softmax output is the class proportions
    for every example (bias log p; float32 rounding: rtol 1e-6)."""
    b = jaxinit.prior_bias(COUNTS.tolist())(KEY, (5,))
    assert b.shape == (5,) and b.dtype == jnp.float32
    probs = jax.nn.softmax(zero_kernel_logits(b), axis=-1)
    np.testing.assert_allclose(probs, np.broadcast_to(P, (8, 5)), rtol=1e-6)
    np.testing.assert_allclose(b, np.log(P), rtol=1e-6)


def test_prior_bias_softmax_accepts_probabilities_and_any_scale():
    """Counts or probabilities: only the proportions matter."""
    a = jaxinit.prior_bias(COUNTS.tolist())(KEY, (5,))
    np.testing.assert_array_equal(a, jaxinit.prior_bias(P.tolist())(KEY, (5,)))
    np.testing.assert_allclose(a, jaxinit.prior_bias((3 * COUNTS).tolist())(KEY, (5,)), rtol=1e-6)
    np.testing.assert_allclose(a, jaxinit.prior_bias(np.asarray(COUNTS))(KEY, (5,)), rtol=1e-6)


def test_prior_bias_sigmoid_gives_rates():
    """Sigmoid (multi-label): per-class positive rates in (0, 1); with a zero kernel each
    sigmoid output equals its rate (bias logit p)."""
    rates = P.tolist()
    b = jaxinit.prior_bias(rates, activation="sigmoid")(KEY, (5,))
    out = jax.nn.sigmoid(zero_kernel_logits(b))
    np.testing.assert_allclose(out, np.broadcast_to(P, (8, 5)), rtol=1e-6)
    np.testing.assert_allclose(b, np.log(P / (1 - P)), rtol=1e-6)
    # Rates need not sum to 1 (independent labels).
    b = jaxinit.prior_bias([0.9, 0.8, 0.01], activation="sigmoid")(KEY, (3,))
    np.testing.assert_allclose(jax.nn.sigmoid(b), [0.9, 0.8, 0.01], rtol=1e-6)


def test_logit_p_is_wrong_under_softmax():
    """The per-class logit log(p / (1 - p)) under softmax gives probabilities proportional to
    p / (1 - p): for the seed counts the two large classes get 0.473 each instead of 0.455 (as
    the docstring says), and the total variation distance to p is over 0.03."""
    wrong = jax.nn.softmax(jnp.log(P / (1 - P)))
    np.testing.assert_allclose(wrong[3:], [0.473, 0.473], atol=5e-4)
    np.testing.assert_allclose(P[3:], [0.455, 0.455], atol=5e-4)
    assert 0.5 * float(np.abs(np.asarray(wrong) - P).sum()) > 0.03
    assert "0.473" in jaxinit.prior_bias.__doc__ and "0.455" in jaxinit.prior_bias.__doc__


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float64], ids=str)
def test_prior_bias_dtypes(dtype):
    """The bias is log p rounded once to the dtype (computed in float64). float64 needs x64."""
    if dtype == jnp.float64:
        with jax.enable_x64(True):
            b = jaxinit.prior_bias(COUNTS.tolist())(KEY, (5,), dtype)
            assert b.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(b), np.log(P), rtol=1e-15)
        return
    b = jaxinit.prior_bias(COUNTS.tolist())(KEY, (5,), dtype)
    assert b.dtype == dtype
    np.testing.assert_array_equal(b, jnp.asarray(np.log(P), dtype))


def test_prior_bias_ignores_the_key():
    init = jaxinit.prior_bias(COUNTS.tolist())
    np.testing.assert_array_equal(init(jax.random.key(0), (5,)), init(None, (5,)))


@pytest.mark.parametrize(
    "counts,kwargs,exc,pattern",
    [
        (
            [10, 0, 5],
            {},
            ValueError,
            r"counts_or_probs=\[10\.0, 0\.0, 5\.0\] has entries \[0\.0\] <= 0; softmax needs every "
            r"class frequency > 0.*counts \+ 1",
        ),
        ([10, -2, 5], {}, ValueError, r"has entries \[-2\.0\] <= 0"),
        ([1.0, math.nan], {}, ValueError, r"counts_or_probs=\[1\.0, nan\] has a NaN or inf entry"),
        ([1.0, math.inf], {}, ValueError, r"has a NaN or inf entry"),
        ([], {}, ValueError, r"must be 1-D with one entry per class, got shape \(0,\)"),
        ([[1, 2], [3, 4]], {}, ValueError, r"must be 1-D .* got shape \(2, 2\)"),
        (["a", "b"], {}, TypeError, r"counts_or_probs=\['a', 'b'\] must be a sequence of numbers"),
        (
            [10, 5],
            {"activation": "sigmoid"},
            ValueError,
            r"counts_or_probs=\[10\.0, 5\.0\] must be per-class positive rates strictly inside "
            r"\(0, 1\) for activation='sigmoid'",
        ),
        ([0.5, 0.0], {"activation": "sigmoid"}, ValueError, r"strictly inside \(0, 1\)"),
        ([0.5, 1.0], {"activation": "sigmoid"}, ValueError, r"strictly inside \(0, 1\)"),
        (
            [1, 2],
            {"activation": "tanh"},
            ValueError,
            r"activation='tanh' is not supported; use one of \('softmax', 'sigmoid'\)",
        ),
    ],
)
def test_prior_bias_validation(counts, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        jaxinit.prior_bias(counts, **kwargs)


@pytest.mark.parametrize("shape", [(4,), (6,), (5, 1), (1, 5), (0,)], ids=str)
def test_prior_bias_shape_mismatch(shape):
    """The bias shape must be (num_classes,), also for an empty shape."""
    pattern = rf"shape={re.escape(str(shape))} does not match the 5 classes given; the bias "
    pattern += r"must have shape \(5,\)"
    with pytest.raises(ValueError, match=pattern):
        jaxinit.prior_bias(COUNTS.tolist())(KEY, shape)


def test_prior_bias_dtype_validation():
    with pytest.raises(TypeError, match=r"prior_bias: dtype=int32 is not supported"):
        jaxinit.prior_bias(COUNTS.tolist())(KEY, (5,), jnp.int32)


# ---------------------------------------------------------------------------------------------
# torch_bias_default

N = 2**17  # draws for the bias statistics


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=str)
def test_torch_bias_default_distribution(dtype):
    """U[-1/sqrt(fan_in), 1/sqrt(fan_in)): mean 0, variance b^2 / 3 (Z standard errors), KS
    against scipy.stats.uniform (p > 1e-6), and bounds [-b, b) in the output dtype. fan_in = 4
    makes b = 0.5 representable, so rounding onto b would be visible (about 1 in 1000 draws in
    bfloat16)."""
    b = 0.5
    w = jaxinit.torch_bias_default(fan_in=4)(KEY, (N,), dtype)
    assert w.dtype == dtype and w.shape == (N,)
    x = as_f64(w)
    assert_mean(x, 0.0)
    assert_var(x, b**2 / 3)
    assert_ks(x, "uniform", args=(-b, 2 * b), what="torch bias")
    assert x.min() >= -b and x.max() < b


def test_torch_bias_default_conv_fan_in():
    """For a conv kernel (3, 3, 64, 128) the layer's fan_in is 576: bound 1/24."""
    x = as_f64(jaxinit.torch_bias_default(fan_in=576)(KEY, (N,)))
    assert x.min() >= -1 / 24 and x.max() < 1 / 24 and x.max() > 0.99 / 24


@pytest.mark.parametrize("fan_in", [0, -3, 2.5, True, "8", None], ids=repr)
def test_torch_bias_default_bad_fan_in(fan_in):
    with pytest.raises(ValueError, match=rf"torch_bias_default: fan_in={re.escape(repr(fan_in))} "):
        jaxinit.torch_bias_default(fan_in)


def test_torch_bias_default_accepts_numpy_int():
    b = jaxinit.torch_bias_default(np.int64(100))(KEY, (10,))
    assert float(jnp.abs(b).max()) < 0.1
