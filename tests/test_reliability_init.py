"""Reliability: values an initializer's dtype cannot hold, mean-field moments that diverge,
deep predictions that reach a fixed point, and LSUV's tuple-returning blocks and ``rngs=``."""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxinit
from jaxinit import meanfield as mf

KEY = jax.random.key(0)
F8 = jnp.float8_e4m3fn

# --------------------------------------------------------------------------------------------
# fills: a value the cast would change in kind is refused


@pytest.mark.parametrize(
    ("value", "dtype", "match"),
    [
        (300, jnp.uint8, r"constant: value=300 does not fit dtype=uint8 .*wrap.* \[0, 255\]"),
        (-1, jnp.uint8, r"value=-1 does not fit dtype=uint8"),
        (128, jnp.int8, r"value=128 does not fit dtype=int8 .* \[-128, 127\]"),
        (0.5, jnp.int8, r"value=0\.5 does not fit dtype=int8 \(the cast would truncate it\)"),
        (2**70, jnp.int64, r"value=1\.18.*e\+21 does not fit dtype=int64"),
        (1e39, jnp.float32, r"value=1e\+39 does not fit dtype=float32 .* <= 3\.40282e\+38"),
        (70000.0, jnp.float16, r"value=70000\.0 does not fit dtype=float16 .* <= 65504"),
        (500.0, F8, r"value=500\.0 does not fit dtype=float8_e4m3fn .* <= 448"),
        (1 + 1j, jnp.float32, r"value=\(1\+1j\) does not fit dtype=float32 .*imaginary"),
        (2, jnp.bool_, r"value=2 does not fit dtype=bool .* 0, 1, True or False"),
        (np.array([1.0, 1e6]), jnp.float16, r"holds 1000000\.0, which does not fit"),
    ],
    ids=str,
)
def test_constant_refuses_what_the_cast_would_change(value, dtype, match):
    init = jaxinit.constant(value)
    with pytest.raises(ValueError, match=match):
        init(KEY, (2,), dtype)
    with pytest.raises(ValueError, match=match):  # static values: the check runs under jit
        jax.jit(lambda k: init(k, (2,), dtype))(KEY)


@pytest.mark.parametrize(
    ("value", "dtype", "want"),
    [
        (255, jnp.uint8, 255),
        (-128, jnp.int8, -128),
        (3.0, jnp.int8, 3),
        (True, jnp.bool_, True),
        (1 + 0j, jnp.float32, 1.0),
        (2**70, jnp.float32, float(np.float32(2**70))),
        (300.0, F8, 288.0),  # rounded to the nearest float8_e4m3fn value
        (65504.0, jnp.float16, 65504.0),
        (-3 + 2j, jnp.complex64, -3 + 2j),
    ],
    ids=str,
)
def test_constant_keeps_representable_values(value, dtype, want):
    w = jaxinit.constant(value)(KEY, (3,), dtype)
    assert w.dtype == jnp.dtype(dtype)
    assert np.all(np.asarray(w).astype(np.complex128) == want)


def test_zeros_in_a_dtype_without_zero():
    with pytest.raises(ValueError, match=r"zeros: value=0 does not fit dtype=float8_e8m0fnu"):
        jaxinit.zeros()(KEY, (2,), jnp.float8_e8m0fnu)


# --------------------------------------------------------------------------------------------
# draws: refused when their largest value passes the dtype's largest finite value


@pytest.mark.parametrize(
    ("init", "dtype", "match"),
    [
        (jaxinit.normal(1e5), jnp.float16, r"normal: stddev=100000\.0 lets values reach"),
        (jaxinit.normal(1e5), F8, r"beyond the largest finite float8_e4m3fn \(448\)"),
        (jaxinit.normal(1.0, -1e5), jnp.float16, r"normal: mean=-100000\.0 .* \|mean\| <="),
        (jaxinit.normal(1e38), jnp.complex64, r"normal: stddev=1e\+38 .* complex64"),
        (jaxinit.uniform(-1.0, 1e5), jnp.float16, r"uniform: high=100000\.0 lets values"),
        (jaxinit.uniform(-1e39, 0.0), jnp.float32, r"uniform: low=-1e\+39"),
        (jaxinit.truncated_normal(1e5), jnp.float16, r"truncated_normal: stddev=100000\.0"),
        (
            jaxinit.variance_scaling(1e12),
            jnp.float16,
            r"variance_scaling: scale=1000000000000\.0 .*shape=\(4, 4\)",
        ),
        (jaxinit.glorot_uniform(gain=1e5), jnp.float16, r"glorot_uniform: gain=100000\.0"),
        (jaxinit.he_normal(activation=lambda x: 1e-9 * x), jnp.float16, r"he_normal: activ"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v))[:40],
)
def test_draw_beyond_the_dtype_is_refused(init, dtype, match):
    with pytest.raises(ValueError, match=match):
        init(KEY, (4, 4), dtype)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda k: init(k, (4, 4), dtype))(KEY)


def test_normal_just_inside_the_limit_is_finite():
    """The limit the message states is the sampler's true reach: a stddev 1% inside it gives
    finite float16 draws over 200,000 samples; the stated limit itself is accepted."""
    with pytest.raises(ValueError, match=r"use \|stddev\| <= ([0-9.e+]+)") as err:
        jaxinit.normal(1e5)(KEY, (4,), jnp.float16)
    limit = float(str(err.value).split("<= ")[1].split(",")[0])
    jaxinit.normal(limit)(KEY, (4,), jnp.float16)
    w = jaxinit.normal(0.99 * limit)(KEY, (200_000,), jnp.float16)
    assert bool(jnp.isfinite(w).all())
    assert float(jnp.abs(w.astype(jnp.float32)).max()) > 4 * 0.99 * limit  # tails reached


def test_uniform_near_float32_max_is_drawn_around_its_midpoint():
    """``high - low`` overflows float32; the draw stays finite, inside [low, high), spread."""
    low, high = -3e38, 3e38
    w = np.asarray(jaxinit.uniform(low, high)(KEY, (100_000,)), np.float64)
    assert np.isfinite(w).all() and (w >= low).all() and (w < high).all()
    # U(-3e38, 3e38): mean 0, std 3e38 / sqrt(3); 5 sigma of the sample mean
    assert abs(w.mean()) <= 5 * 3e38 / math.sqrt(3) / math.sqrt(w.size)
    assert abs(w.std() / (3e38 / math.sqrt(3)) - 1) < 0.01


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: jaxinit.normal("2"), TypeError, r"normal: stddev='2' is not a real number"),
        (lambda: jaxinit.normal(True), TypeError, r"normal: stddev=True is not a real number"),
        (lambda: jaxinit.normal(np.array([2.0])), TypeError, r"stddev=array\(\[2\.\]\)"),
        (lambda: jaxinit.uniform(10**400), ValueError, r"uniform: low=inf must be finite"),
        (lambda: jaxinit.truncated_normal(lower="a"), TypeError, r"lower='a' is not a real"),
        (lambda: jaxinit.constant(None), TypeError, r"constant: value=None must be a number"),
    ],
    ids=["str", "bool", "array", "overflow", "str-bound", "none"],
)
def test_argument_types(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_traced_argument_is_named():
    with pytest.raises(TypeError, match=r"normal: stddev=.* is a traced value"):
        jax.jit(lambda s: jaxinit.normal(s)(KEY, (2,)))(2.0)
    with pytest.raises(TypeError, match=r"constant: value is a traced value"):
        jax.jit(lambda v: jaxinit.constant(v)(KEY, (2,)))(2.0)


def test_numpy_scalars_are_numbers():
    a = jaxinit.normal(np.float32(2.0))(KEY, (8,))
    b = jaxinit.normal(2.0)(KEY, (8,))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# property: every public factory x dtype x scale gives finite values in range, or a named error

_DTYPES = [jnp.float32, jnp.float16, jnp.bfloat16, F8, jnp.complex64, jnp.int8, jnp.uint8]
_SCALED = {
    "normal": lambda s: jaxinit.normal(s),
    "normal_mean": lambda s: jaxinit.normal(1.0, -s),
    "uniform": lambda s: jaxinit.uniform(-s, s),
    "truncated_normal": lambda s: jaxinit.truncated_normal(s),
    "truncated_one_sided": lambda s: jaxinit.truncated_normal(s, 1.0, math.inf),
    "variance_scaling": lambda s: jaxinit.variance_scaling(s * s),
    "variance_scaling_uniform": lambda s: jaxinit.variance_scaling(s * s, "fan_avg", "uniform"),
    "variance_scaling_truncated": lambda s: jaxinit.variance_scaling(
        s * s, "fan_out", "truncated_normal"
    ),
    "glorot_normal": lambda s: jaxinit.glorot_normal(gain=s),
    "he_uniform": lambda s: jaxinit.he_uniform(),
    "lecun_normal": lambda s: jaxinit.lecun_normal(),
    "torch_default": lambda s: jaxinit.torch_default(),
    "constant": lambda s: jaxinit.constant(s),
    "zeros": lambda s: jaxinit.zeros(),
    "ones": lambda s: jaxinit.ones(),
}
_ARG = r"(stddev|mean|low|high|scale|gain|value)="


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(sorted(_SCALED)),
    dtype=st.sampled_from(_DTYPES),
    exponent=st.floats(-3.0, 40.0),
    shape=st.sampled_from([(3, 5), (0, 4)]),
)
def test_finite_or_named_error(name, dtype, exponent, shape):
    scale = 10.0**exponent
    try:
        init = _SCALED[name](scale)
        w = init(KEY, shape, dtype)
    except ValueError as err:
        assert re.search(_ARG, str(err)), str(err)
        assert "does not fit" in str(err) or "lets values reach" in str(err), str(err)
        return
    except TypeError as err:  # random weights in an integer dtype, complex uniform
        assert "dtype=" in str(err), str(err)
        return
    assert w.shape == shape and w.dtype == jnp.dtype(dtype)
    if w.size and jnp.issubdtype(w.dtype, jnp.inexact):
        values = np.asarray(w.astype(jnp.complex64 if w.dtype == jnp.complex64 else jnp.float32))
        assert np.isfinite(values).all(), f"{name}({scale:g}) in {dtype}: non-finite values"


# --------------------------------------------------------------------------------------------
# mean field


def _exp_sq(z):
    return jnp.exp(z * z)


def test_predict_refuses_a_divergent_moment():
    """E[exp(z^2)^2] diverges for q >= 1/4: the check gain() makes, made at the layer's q."""
    with pytest.raises(ValueError, match=r"gain: E\[phi\(z\)\^2\] is infinite"):
        jaxinit.gain(_exp_sq)
    with pytest.raises(ValueError, match=r"predict: E\[phi\(sqrt\(q\) z\)\^2\] at q=1 is infin"):
        jaxinit.predict(_exp_sq, 3, sigma_w=1.0)


def test_predict_accepts_a_convergent_range():
    """Small q keeps exp(z^2)'s moments finite; compared with SciPy-free closed forms:
    E[exp(2 q z^2)] = 1 / sqrt(1 - 4q)."""
    p = jaxinit.predict(_exp_sq, 1, sigma_w=0.1, input_var=1.0)
    q = 0.01
    assert p.q[0] == pytest.approx(q, rel=1e-12)
    assert p.post_std[0] ** 2 + p.post_mean[0] ** 2 == pytest.approx(
        1 / math.sqrt(1 - 4 * q), rel=1e-10
    )


def test_critical_sigma_w_searches_only_finite_moments():
    with pytest.raises(ValueError, match=r"critical_sigma_w: .*\(beyond, the moments are infinite"):
        jaxinit.critical_sigma_w(_exp_sq)
    assert jaxinit.critical_sigma_w("tanh") == pytest.approx(1.0, abs=1e-9)


def _full(activation, depth, sigma_w, sigma_b=0.0):
    """predict's q, chi and grad_var by the maps themselves (trace of the composed chain)."""
    act = mf.activation(activation)
    steps = mf.trace(
        mf.compose(*[m for _ in range(depth) for m in (mf.dense(sigma_w, sigma_b), act)])
    )
    q = np.array([s.state.q for s in steps[0::2]])
    chi = np.array([d.chi * a.chi for d, a in zip(steps[0::2], steps[1::2], strict=True)])
    grad = np.ones(depth)
    for layer in range(depth - 2, -1, -1):
        grad[layer] = grad[layer + 1] * steps[2 * layer + 2].chi * steps[2 * layer + 1].chi
    return q, chi, grad


@pytest.mark.parametrize(
    ("activation", "sigma_w", "sigma_b"),
    [("tanh", 1.5, 0.0), ("tanh", 1.2, 0.3), ("relu", 2**0.5, 0.0), ("hard_tanh", 1.0, 0.1)],
)
def test_fixed_point_fill_equals_the_full_iteration(activation, sigma_w, sigma_b):
    depth = 120
    p = jaxinit.predict(activation, depth, sigma_w=sigma_w, sigma_b=sigma_b)
    q, chi, grad = _full(activation, depth, sigma_w, sigma_b)
    np.testing.assert_array_equal(p.q, q)  # a repeated q repeats everything after it
    np.testing.assert_array_equal(p.chi, chi)
    np.testing.assert_array_equal(p.grad_var, grad)


def test_deep_predict_fills_the_fixed_point():
    deep = jaxinit.predict("tanh", 10**6, sigma_w=1.5)
    short = jaxinit.predict("tanh", 300, sigma_w=1.5)
    np.testing.assert_array_equal(deep.q[:300], short.q)
    assert np.all(deep.q[300:] == short.q[-1])
    assert np.all(deep.chi[300:] == short.chi[-1]) and deep.grad_var.shape == (10**6,)


def test_per_layer_sigma_w_fills_only_where_it_stops_changing():
    sws = [1.5] * 80 + [1.2] * 40
    p = jaxinit.predict("tanh", 120, sigma_w=sws)
    act = mf.activation("tanh")
    steps = mf.trace(mf.compose(*[m for sw in sws for m in (mf.dense(sw), act)]))
    np.testing.assert_array_equal(p.q, [s.state.q for s in steps[0::2]])


def test_predict_names_itself_for_a_bad_param():
    with pytest.raises(ValueError, match=r"predict: param=inf must be a finite number"):
        jaxinit.predict("elu", 3, param=math.inf)


# --------------------------------------------------------------------------------------------
# LSUV


class _TupleBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(8)(x)
        return nn.relu(y), jnp.mean(y)


class _TupleNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        y, _ = _TupleBlock()(x)
        return nn.Dense(4)(y)


class _DropoutNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(4)(nn.relu(x))


X = jax.random.normal(jax.random.key(1), (64, 8))


def test_lsuv_block_returning_a_tuple_is_named():
    model = _TupleNet()
    variables = model.init(KEY, X)
    with pytest.raises(
        ValueError,
        match=r"lsuv: select='_TupleBlock_0' selects '_TupleBlock_0', whose call returns a "
        r"tuple; a selected block must return one array.*'_TupleBlock_0/Dense_0'",
    ):
        jaxinit.lsuv(model, variables, X, select="_TupleBlock_0")


def test_lsuv_dropout_in_training_mode_takes_rngs():
    model = _DropoutNet()
    variables = model.init(KEY, X)
    rngs = {"dropout": jax.random.key(2)}
    new, report = jaxinit.lsuv(model, variables, X, train=True, rngs=rngs)
    assert report.all_converged
    # independent check: the model's own apply with the same rngs gives a unit-std output
    out = model.apply(new, X, train=True, rngs=rngs)
    assert abs(float(jnp.std(out)) - 1) < 1e-3
    again, _ = jaxinit.lsuv(model, variables, X, train=True, rngs={"dropout": 2})  # int seed
    jax.tree.map(np.testing.assert_array_equal, new, again)
    with pytest.raises(ValueError, match=r"lsuv: the model asks for a PRNG key .*rngs="):
        jaxinit.lsuv(model, variables, X, train=True)
    with pytest.raises(TypeError, match=r"lsuv: rngs\['dropout'\]='a' is not a PRNG key"):
        jaxinit.lsuv(model, variables, X, train=True, rngs={"dropout": "a"})


def test_lsuv_rngs_for_nnx_is_refused():
    from flax import nnx

    model = nnx.Linear(8, 4, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"lsuv: rngs= is passed to a linen module's apply"):
        jaxinit.lsuv(model, X, rngs={"dropout": KEY})


@pytest.mark.parametrize(
    ("init", "shape"),
    [
        (jaxinit.orthogonal(1e6), (4, 4)),
        (jaxinit.delta_orthogonal(1e6), (3, 3, 4, 4)),
        (jaxinit.identity(1e6), (4, 4)),
        (jaxinit.sparse(0.5, 1e5), (4, 4)),
    ],
)
def test_bounded_initializers_refuse_scales_beyond_the_dtype(init, shape):
    """|w| <= scale for orthogonal and identity matrices, and a normal draw reaches 5.42
    standard deviations: past float16's 65504, the cast would give inf."""
    with pytest.raises(ValueError, match="beyond the largest finite float16"):
        init(jax.random.key(0), shape, jnp.float16)
    assert np.all(np.isfinite(np.asarray(init(jax.random.key(0), shape, jnp.float32))))
