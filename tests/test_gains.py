"""gain(): PyTorch's table for the names it has, exact 1 / sqrt(E[phi(z)^2]) for the others and
for callables, checked against scipy.integrate.quad with NumPy/SciPy re-implementations."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

import jaxinit

SQRT_2_PI = math.sqrt(2 / math.pi)


def softplus(x):
    return np.logaddexp(0.0, x)


def hard_sigmoid(x):
    return np.clip(x + 3, 0, 6) / 6


# Independent float64 definitions (NumPy/SciPy, not JAX) and their kinks.
REFERENCE = {
    "gelu": (lambda x: x * scipy.special.ndtr(x), ()),
    "gelu_tanh": (lambda x: 0.5 * x * (1 + np.tanh(SQRT_2_PI * (x + 0.044715 * x**3))), ()),
    "silu": (lambda x: x * scipy.special.expit(x), ()),
    "swish": (lambda x: x * scipy.special.expit(x), ()),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), (0.0,)),
    "celu": (lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(np.minimum(x, 0))), (0.0,)),
    "softplus": (softplus, ()),
    "mish": (lambda x: x * np.tanh(softplus(x)), ()),
    "softsign": (lambda x: x / (1 + np.abs(x)), (0.0,)),
    "hard_tanh": (lambda x: np.clip(x, -1, 1), (-1.0, 1.0)),
    "relu6": (lambda x: np.clip(x, 0, 6), (0.0, 6.0)),
    "hard_sigmoid": (hard_sigmoid, (-3.0, 3.0)),
    "hard_silu": (lambda x: x * hard_sigmoid(x), (-3.0, 3.0)),
    "hard_swish": (lambda x: x * hard_sigmoid(x), (-3.0, 3.0)),
    "log_sigmoid": (lambda x: -softplus(-x), ()),
    "sin": (np.sin, ()),
}


def quad_gain(phi, kinks=()) -> float:
    """1 / sqrt(E[phi(z)^2]), z ~ N(0, 1), by scipy.integrate.quad split at the kinks (and 0),
    each piece to a relative accuracy of 1e-13."""
    pts = [-np.inf, *sorted({0.0, *kinks}), np.inf]
    total = 0.0
    for a, b in itertools.pairwise(pts):
        val, _ = scipy.integrate.quad(
            lambda x: float(phi(np.float64(x))) ** 2 * math.exp(-0.5 * x * x),
            a,
            b,
            epsabs=0.0,
            epsrel=1e-13,
            limit=500,
        )
        total += val
    return 1.0 / math.sqrt(total / math.sqrt(2 * math.pi))


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_named_gain_matches_quad(name):
    """Named activations outside PyTorch's table: 1 / sqrt(E[phi(z)^2]) to 1e-9 relative."""
    phi, kinks = REFERENCE[name]
    ref = quad_gain(phi, kinks)
    got = jaxinit.gain(name)
    assert math.isclose(got, ref, rel_tol=1e-9), (name, got, ref)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_elu_celu_alpha(alpha):
    """param= is alpha for elu and celu."""
    elu = lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))  # noqa: E731
    celu = lambda x: np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(np.minimum(x, 0) / alpha))  # noqa: E731
    assert math.isclose(jaxinit.gain("elu", alpha), quad_gain(elu), rel_tol=1e-9)
    assert math.isclose(jaxinit.gain("celu", alpha), quad_gain(celu), rel_tol=1e-9)


def test_known_closed_forms():
    """sin: E[sin(z)^2] = (1 - e^-2) / 2; relu (as a callable): E = 1/2; identity: 1."""
    assert math.isclose(jaxinit.gain("sin"), 1 / math.sqrt((1 - math.exp(-2)) / 2), rel_tol=1e-12)
    assert math.isclose(jaxinit.gain(jax.nn.relu), math.sqrt(2), rel_tol=1e-12)
    assert math.isclose(jaxinit.gain(lambda x: x), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize(
    "fn,ref",
    [
        (jax.nn.relu, math.sqrt(2)),
        (jnp.tanh, quad_gain(np.tanh)),
        (np.tanh, quad_gain(np.tanh)),
        (lambda x: np.maximum(x, 0.2 * x), math.sqrt(2 / 1.04)),
        (lambda x: np.clip(x, -1.0, 1.0), quad_gain(*REFERENCE["hard_tanh"])),
        (jax.nn.gelu, quad_gain(*REFERENCE["gelu_tanh"])),  # approximate=True by default
        (jax.nn.silu, quad_gain(*REFERENCE["silu"])),
    ],
    ids=["jax.nn.relu", "jnp.tanh", "np.tanh", "np_leaky_0.2", "np_clip", "jax.nn.gelu", "silu"],
)
def test_callable_gain(fn, ref):
    """Any callable (JAX or NumPy, evaluated in float64): the exact gain, to 1e-9 relative of
    the quad reference or closed form. Kinks at 0 and at multiples of 1/4 (panel edges) are
    integrated exactly."""
    assert math.isclose(jaxinit.gain(fn), ref, rel_tol=1e-9)


def test_exact_tanh_differs_from_torch_table():
    """jnp.tanh gives the exact gain 1.5925..., "tanh" PyTorch's 5/3 (documented)."""
    exact = jaxinit.gain(jnp.tanh)
    assert math.isclose(exact, quad_gain(np.tanh), rel_tol=1e-9)
    assert abs(exact - 1.5925) < 5e-5
    assert "(1.5925)" in jaxinit.gain.__doc__
    assert jaxinit.gain("tanh") == 5 / 3


@pytest.mark.parametrize(
    "name,param,value",
    [
        ("linear", None, 1.0),
        ("identity", None, 1.0),
        ("conv1d", None, 1.0),
        ("conv2d", None, 1.0),
        ("conv3d", None, 1.0),
        ("conv_transpose1d", None, 1.0),
        ("conv_transpose2d", None, 1.0),
        ("conv_transpose3d", None, 1.0),
        ("sigmoid", None, 1.0),
        ("tanh", None, 5.0 / 3),
        ("relu", None, math.sqrt(2.0)),
        ("leaky_relu", None, math.sqrt(2.0 / (1 + 0.01**2))),
        ("leaky_relu", 0.2, math.sqrt(2.0 / (1 + 0.2**2))),
        ("leaky_relu", 0, math.sqrt(2.0)),
        ("selu", None, 3.0 / 4),
    ],
)
def test_pytorch_table(name, param, value):
    """PyTorch's calculate_gain values, computed with PyTorch's formulas (exact equality)."""
    assert jaxinit.gain(name, param) == value


def test_default_is_linear():
    assert jaxinit.gain() == 1.0


@pytest.mark.parametrize(
    "args,exc,pattern",
    [
        (
            ("relux",),
            ValueError,
            r"gain: activation='relux' is not a known name; use one of \(.*'gelu'.*\) or pass the "
            r"activation function itself",
        ),
        (
            ("tanh", 0.5),
            ValueError,
            r"gain: param=0\.5 was given but activation='tanh' takes no parameter",
        ),
        (("leaky_relu", math.nan), ValueError, r"gain: param=nan must be a finite number"),
        (("elu", True), ValueError, r"gain: param=True must be a finite number"),
        ((jnp.tanh, 0.5), ValueError, r"param= applies to named activations only"),
        ((3,), TypeError, r"gain: activation=3 must be a name or a callable"),
        (
            (lambda x: np.sum(x),),
            ValueError,
            r"must map an array elementwise; an input of shape \(7,\) gave shape \(\)",
        ),
        ((lambda x: x.nonexistent(),), TypeError, r"could not be evaluated on a float64 array"),
        (
            (lambda x: 0 * x,),
            ValueError,
            r"gain: E\[phi\(z\)\^2\] = 0\.0 .* needs a finite, positive second moment",
        ),
        (
            (lambda x: jnp.exp(x * x),),
            ValueError,
            r"E\[phi\(z\)\^2\] is infinite .* does not converge",
        ),
        ((lambda x: jnp.exp(x * x / 4),), ValueError, r"is infinite .* does not decay"),
        (("elu", 1e300), ValueError, r"E\[phi\(z\)\^2\] = inf .* finite, positive"),
    ],
)
def test_gain_validation(args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        jaxinit.gain(*args)


def test_activation_names_have_one_source():
    """The ``ActivationName`` type lists exactly the names the gain table knows."""
    from typing import get_args

    from jaxinit import gains
    from jaxinit._types import ActivationName

    known = {*gains._TORCH_ONE, "tanh", "relu", "leaky_relu", "selu", *gains._NAMED}
    assert set(get_args(ActivationName)) == known == set(gains.ACTIVATIONS)


def test_erf_gain_is_the_closed_form():
    # E[erf(z)^2] = (2/pi) arcsin(2/3) for z ~ N(0, 1) (the arcsine kernel of Williams 1997 at
    # v1 = v2 = c = 1, as neural-tangents writes it)
    want = 1 / math.sqrt(2 / math.pi * math.asin(2 / 3))
    assert abs(jaxinit.gain("erf") / want - 1) < 1e-12
