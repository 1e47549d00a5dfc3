"""Bad or extreme input a user can pass gives a correct result or an error naming the argument,
the value and what is accepted; references are computed here (NumPy, optax), never from
jaxinit's own report."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxinit
from jaxinit import models

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (32, 8))
MLP = models.MLP(depth=3, width=16, num_outputs=5)
VARIABLES = MLP.init(KEY, X)


# --------------------------------------------------------------------------------------------
# batches


@pytest.mark.parametrize(
    "call",
    [
        lambda x: jaxinit.lsuv(MLP, VARIABLES, x),
        lambda x: jaxinit.measure(MLP, VARIABLES, x),
        lambda x: jaxinit.layer_stats(MLP, x, seeds=2),
    ],
    ids=["lsuv", "measure", "layer_stats"],
)
def test_empty_and_non_finite_batches_are_named(call):
    with pytest.raises(ValueError, match=r"x has an empty array of shape \(0, 8\)"):
        call(X[:0])
    with pytest.raises(ValueError, match=r"x contains 1 non-finite value\(s\) .* out of 256"):
        call(X.at[3, 4].set(jnp.nan))


def test_layer_stats_takes_one_array():
    with pytest.raises(TypeError, match=r"layer_stats: x must be one array, .* got a dict"):
        jaxinit.layer_stats(MLP, {"x": X}, seeds=2)


def test_lsuv_of_a_batch_at_1e18_is_normalized():
    big = X * 1e18
    new, report = jaxinit.lsuv(MLP, VARIABLES, big)
    assert report.all_converged and not report.dead.any()
    # independent: float64 std of each layer's output on the returned weights
    _, state = MLP.apply(new, big, capture_intermediates=True)
    for path in report.paths:
        y = np.asarray(state["intermediates"][path]["__call__"][0], np.float64)
        assert abs(y.std() - 1) < 1e-4, path


def test_lsuv_max_iters_must_fit_its_counter():
    with pytest.raises(ValueError, match=r"max_iters=10000000000 must be an int >= 1 and <= "):
        jaxinit.lsuv(MLP, VARIABLES, X, max_iters=10**10)


# --------------------------------------------------------------------------------------------
# labels, outputs and losses


@pytest.mark.parametrize("bad", [5, -1])
def test_labels_outside_the_classes_are_named(bad):
    labels = jnp.zeros(32, jnp.int32).at[7].set(bad)
    with pytest.raises(ValueError, match=rf"labels holds {bad}, outside \[0, 5\)"):
        jaxinit.layer_stats(MLP, X, seeds=2, labels=labels)
    with pytest.raises(ValueError, match=rf"measure: labels holds {bad}"):
        jaxinit.measure(MLP, VARIABLES, X, stats=("grad_std",), labels=labels)


class _Seq(nn.Module):
    @nn.compact
    def __call__(self, x):  # (B, T, F) -> (B, T, V)
        return nn.Dense(7)(nn.relu(nn.Dense(16)(x)))


@pytest.mark.slow  # 15 s on 2 cores; the label-shape rule is also checked by coord_check's tests
def test_sequence_labels_take_the_output_shape_less_its_last_axis():
    x = jax.random.normal(jax.random.key(2), (4, 6, 8))
    labels = jax.random.randint(jax.random.key(3), (4, 6), 0, 7)
    model = _Seq()
    variables = model.init(KEY, x)
    m = jaxinit.measure(model, variables, x, stats=("grad_std",), labels=labels)
    logits = model.apply(variables, x)
    want = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    np.testing.assert_allclose(m.loss, want, rtol=1e-6)
    st = jaxinit.layer_stats(model, x, seeds=2, labels=labels)
    assert st.loss is not None and np.isfinite(np.asarray(st.loss)).all()
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(4, 6\)"):
        jaxinit.layer_stats(model, x, seeds=2, labels=labels[:, 0])


def test_a_custom_loss_takes_float_targets():
    targets = jax.random.normal(jax.random.key(4), (32, 5))
    mse = lambda out, t: jnp.mean((out - t) ** 2)  # noqa: E731
    m = jax.jit(
        lambda v: jaxinit.measure(MLP, v, X, stats=("grad_std",), labels=targets, loss=mse)
    )(VARIABLES)
    want = jax.jit(lambda v: mse(MLP.apply(v, X), targets))(VARIABLES)
    np.testing.assert_allclose(m.loss, want, rtol=1e-6)


class _Pair(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        return h, nn.Dense(3)(h)


def test_a_tuple_output_needs_a_loss():
    model = _Pair()
    with pytest.raises(TypeError, match=r"model returns a tuple.* pass loss="):
        jaxinit.layer_stats(model, X, seeds=2)
    st = jaxinit.layer_stats(model, X, seeds=2, loss=lambda out, _: jnp.sum(out[1] ** 2))
    assert st.grad_std is not None and np.isfinite(np.asarray(st.grad_std)).all()


def test_after_init_may_return_lsuv_tuple():
    lsuv = jaxinit.layer_stats(MLP, X, seeds=2, after_init=lambda v, x: jaxinit.lsuv(MLP, v, x))
    first = jaxinit.layer_stats(MLP, X, seeds=2, after_init=lambda v, x: jaxinit.lsuv(MLP, v, x)[0])
    np.testing.assert_array_equal(lsuv.std, first.std)
    np.testing.assert_allclose(lsuv.std, 1.0, atol=1e-4)
    with pytest.raises(TypeError, match=r"after_init must return the new linen variables"):
        jaxinit.layer_stats(MLP, X, seeds=2, after_init=lambda v, x: 3)


# --------------------------------------------------------------------------------------------
# keys and options


@pytest.mark.slow
def test_integer_seeds_beyond_32_bits_are_refused_not_aliased():
    for key in (2**32, 2**40, 2**64, -1):
        with pytest.raises(ValueError, match=rf"key={key} must be an int >= 0 and <= 4294967295"):
            jaxinit.layer_stats(MLP, X, seeds=2, key=key)
    top = jaxinit.layer_stats(MLP, X, seeds=2, key=2**32 - 1)
    same = jaxinit.layer_stats(MLP, X, seeds=2, key=jax.random.key(2**32 - 1))
    np.testing.assert_array_equal(top.std, same.std)


def test_mesh_axes_must_be_names():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("seeds",))
    with pytest.raises(TypeError, match=r"mesh_axes=5 must be a mesh axis name"):
        jaxinit.layer_stats(MLP, X, seeds=2, mesh=mesh, mesh_axes=5)


def test_scalars_may_be_zero_dimensional_arrays():
    np.testing.assert_array_equal(
        jaxinit.predict("relu", depth=3, sigma_w=jnp.array(1.5)).q,
        jaxinit.predict("relu", depth=3, sigma_w=1.5).q,
    )
    assert jaxinit.gain("leaky_relu", np.float32(0.25)) == jaxinit.gain("leaky_relu", 0.25)


def test_mean_field_scales_whose_squares_overflow_are_named():
    with pytest.raises(ValueError, match=r"predict: sigma_w=1e\+200 must be a finite number"):
        jaxinit.predict("relu", depth=3, sigma_w=1e200)


# --------------------------------------------------------------------------------------------
# low-precision dtypes

_FLOAT8 = [jnp.float8_e4m3fn, jnp.float8_e4m3fnuz, jnp.float8_e5m2, jnp.bfloat16, jnp.float16]
_CLIPPED = {
    "uniform": (jaxinit.uniform(), 1 / np.sqrt(3)),
    "he_uniform": (jaxinit.he_uniform(), np.sqrt(2 / 64)),
    "glorot_uniform": (jaxinit.glorot_uniform(), np.sqrt(2 / 128)),
    "torch_default": (jaxinit.torch_default(), np.sqrt(1 / (3 * 64))),
    "truncated_normal": (jaxinit.truncated_normal(0.5), 0.5 * 0.8796256610),
    "truncated_normal(-inf, inf)": (jaxinit.truncated_normal(0.5, -np.inf, np.inf), 0.5),
}


@pytest.mark.parametrize("dtype", _FLOAT8, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(_CLIPPED))
def test_clipped_initializers_in_low_precision_have_the_law_std(dtype, name):
    init, want = _CLIPPED[name]
    w = np.asarray(init(KEY, (64, 64), dtype), np.float64)
    assert np.isfinite(w).all()
    # 4096 draws: the sample std's standard error is below 2% of sigma for these laws; rounding
    # to the dtype's mantissa (3 bits for e4m3) moves each value by at most 1/16 relative
    mantissa = jnp.finfo(dtype).nmant
    tol = 5 * 0.02 + 2.0 ** -(mantissa + 1)
    assert abs(w.std() / want - 1) <= tol, (w.std(), want)


def test_a_dtype_without_negative_values_is_refused():
    with pytest.raises(TypeError, match=r"dtype=float8_e8m0fnu has no negative values or zero"):
        jaxinit.uniform()(KEY, (4, 4), jnp.float8_e8m0fnu)


# --------------------------------------------------------------------------------------------
# truncation in the far tail


@pytest.mark.parametrize(
    ("lower", "upper"),
    [(5.5, 1e6), (6.0, np.inf), (10.0, 11.0), (-3.0, -2.5), (0.0, 2.0), (-np.inf, -7.0)],
)
def test_one_sided_truncation_matches_scipy(lower, upper):
    from scipy import stats

    n = 20_000
    init = jaxinit.truncated_normal(1.0, lower, upper)
    w = np.asarray(init(KEY, (n,)), np.float64)
    ref = stats.truncnorm(lower, upper)
    assert lower < w.min() and w.max() < upper
    # 5 standard errors of the sample mean and of the sample std (the std's doubled: a
    # truncated law's kurtosis differs from the normal's, which sqrt(2n) assumes)
    assert abs(w.mean() - ref.mean()) <= 5 * ref.std() / np.sqrt(n)
    assert abs(w.std() - ref.std()) <= 5 * ref.std() / np.sqrt(2 * n) * 2
    np.testing.assert_allclose(init.variance(1, 1), ref.var(), rtol=1e-9)


def test_a_cut_beyond_what_float32_resolves_is_refused():
    with pytest.raises(ValueError, match=r"a cut at 14.0 standard deviations .* within 12"):
        jaxinit.truncated_normal(1.0, 14.0, np.inf)(KEY, (4,))
