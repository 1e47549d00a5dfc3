"""Every initializer reports its variance law: ``init.variance(fan_in, fan_out)`` against the
sample variance of a large draw (the independent reference) and against closed forms."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import as_f64, assert_var
from scipy import stats

import jaxinit
from jaxinit import meanfield

DENSE, CONV = (256, 512), (3, 3, 64, 128)
GAIN_LEAKY = 2 / (1 + 0.2**2)

# name -> (initializer, shape it is drawn in, closed form of Var(w) as a function of the fans)
RANDOM = {
    "normal": (jaxinit.normal(0.3, mean=0.2), DENSE, lambda fi, fo: 0.09),
    "uniform": (jaxinit.uniform(-0.3, 0.7), DENSE, lambda fi, fo: 1.0 / 12),
    "truncated_normal": (
        jaxinit.truncated_normal(0.3),
        DENSE,
        lambda fi, fo: 0.09 * stats.truncnorm.var(-2, 2),
    ),
    "truncated_normal_asymmetric": (
        jaxinit.truncated_normal(0.5, lower=-1.0, upper=2.5),
        DENSE,
        lambda fi, fo: 0.25 * stats.truncnorm.var(-1.0, 2.5),
    ),
    "lecun_normal": (jaxinit.lecun_normal(), DENSE, lambda fi, fo: 1 / fi),
    "lecun_uniform": (jaxinit.lecun_uniform(), CONV, lambda fi, fo: 1 / fi),
    "glorot_normal": (
        jaxinit.glorot_normal(gain=5 / 3),
        DENSE,
        lambda fi, fo: 25 / 9 * 2 / (fi + fo),
    ),
    "glorot_uniform": (jaxinit.glorot_uniform(), CONV, lambda fi, fo: 2 / (fi + fo)),
    "he_normal": (jaxinit.he_normal(), DENSE, lambda fi, fo: 2 / fi),
    "he_normal_fan_out": (jaxinit.he_normal(mode="fan_out"), CONV, lambda fi, fo: 2 / fo),
    "he_uniform_leaky": (
        jaxinit.he_uniform(activation="leaky_relu", negative_slope=0.2),
        DENSE,
        lambda fi, fo: GAIN_LEAKY / fi,
    ),
    "torch_default": (jaxinit.torch_default(), CONV, lambda fi, fo: 1 / (3 * fi)),
    "variance_scaling_fan_avg_truncated": (
        jaxinit.variance_scaling(2.0, "fan_avg", "truncated_normal"),
        CONV,
        lambda fi, fo: 2.0 / ((fi + fo) / 2),
    ),
    "variance_scaling_fan_geo_avg_uniform": (
        jaxinit.variance_scaling(0.5, "fan_geo_avg", "uniform"),
        CONV,
        lambda fi, fo: 0.5 / math.sqrt(fi * fo),
    ),
    "sparse": (jaxinit.sparse(0.9), DENSE, lambda fi, fo: 1e-4 * (1 - math.ceil(0.9 * fi) / fi)),
    "orthogonal": (jaxinit.orthogonal(2.0), (128, 512), lambda fi, fo: 4 / max(fi, fo)),
    "orthogonal_tall": (jaxinit.orthogonal(), (512, 128), lambda fi, fo: 1 / max(fi, fo)),
    "delta_orthogonal": (
        jaxinit.delta_orthogonal(1.5),
        (3, 3, 64, 128),
        lambda fi, fo: 2.25 / max(fi, fo),
    ),
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_sample_variance_matches_the_law(name):
    init, shape, closed = RANDOM[name]
    fi, fo = jaxinit.compute_fans(shape)
    law = init.variance(fi, fo)
    assert law == pytest.approx(closed(fi, fo), rel=1e-12)
    assert_var(init(jax.random.key(0), shape), law, f"{name}: Var(w)")


@pytest.mark.parametrize("name", ["orthogonal", "orthogonal_tall", "delta_orthogonal"])
def test_orthogonal_mean_square_is_exact(name):
    # The sum of squares of a (scaled) orthogonal matrix is fixed: the law holds to rounding.
    init, shape, _ = RANDOM[name]
    w = as_f64(init(jax.random.key(1), shape))
    law = init.variance(*jaxinit.compute_fans(shape))
    assert np.mean(w**2) == pytest.approx(law, rel=1e-5)


def test_orthogonal_conv_kernel_needs_its_shape():
    # A (3, 3, 4, 64) kernel: 36 rows, 64 columns, so E[w^2] = 1 / 64, while the fans
    # (36, 576) of a Dense kernel would say 1 / 576.
    init, shape = jaxinit.orthogonal(), (3, 3, 4, 64)
    fi, fo = jaxinit.compute_fans(shape)
    w = as_f64(init(jax.random.key(2), shape))
    assert init.variance(fi, fo, shape=shape) == 1 / 64
    assert np.mean(w**2) == pytest.approx(1 / 64, rel=1e-5)
    assert init.variance(fi, fo) == 1 / 576  # the Dense reading of the fans
    with pytest.raises(ValueError, match="column_axis=2 is out of range"):
        jaxinit.orthogonal(column_axis=2).variance(4, 4, shape=(4, 4))


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (3, 3, 8, 8), (3, 5, 4, 2)], ids=str)
def test_identity_reports_its_mean_square(shape):
    init = jaxinit.identity(2.0)
    w = as_f64(init(None, shape))
    law = init.variance(*jaxinit.compute_fans(shape))
    assert np.mean(w**2) == pytest.approx(law, rel=1e-12)


@pytest.mark.parametrize(
    "init", [jaxinit.zeros(), jaxinit.ones(), jaxinit.constant(0.5)], ids=["zeros", "ones", "c"]
)
def test_fills_have_zero_variance(init):
    w = init(None, DENSE)
    assert init.variance(*DENSE) == 0.0
    assert_var(w, 0.0, "Var(w)")


def test_torch_bias_default_uses_its_own_fan_in():
    init = jaxinit.torch_bias_default(fan_in=4)
    law = init.variance(1, 1)
    assert law == pytest.approx(1 / 12, rel=1e-12)  # U(-1/2, 1/2)
    assert_var(init(jax.random.key(3), (2**17,)), law, "Var(b)")


def test_fans_are_ignored_where_the_law_does_not_use_them():
    for init in (jaxinit.normal(0.3), jaxinit.uniform(), jaxinit.zeros()):
        assert init.variance(3, 7) == init.variance(700, 11)


def test_variance_errors_name_the_initializer_and_the_argument():
    with pytest.raises(ValueError, match="prior_bias has no variance law"):
        jaxinit.prior_bias([1, 2, 3]).variance(1, 3)
    with pytest.raises(ValueError, match=r"he_normal\.variance: fan_in=0 must be an int >= 1"):
        jaxinit.he_normal().variance(0, 4)
    with pytest.raises(ValueError, match=r"fan_out=2\.5 must be an int >= 1"):
        jaxinit.he_normal().variance(4, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fan_in=True must be an int >= 1"):
        jaxinit.normal().variance(True, 4)


FACTORIES = {
    "constant": (0.5,),
    "delta_orthogonal": (),
    "glorot_normal": (),
    "glorot_uniform": (),
    "he_normal": (),
    "he_uniform": (),
    "identity": (),
    "lecun_normal": (),
    "lecun_uniform": (),
    "normal": (),
    "ones": (),
    "orthogonal": (),
    "sparse": (0.5,),
    "torch_bias_default": (16,),
    "torch_default": (),
    "truncated_normal": (),
    "uniform": (),
    "variance_scaling": (1.0,),
    "zeros": (),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_weight_initializer_reports_a_law(name):
    init = getattr(jaxinit, name)(*FACTORIES[name])
    assert isinstance(init.variance(16, 32), float)


def test_sigma_w_from_the_law():
    assert meanfield.sigma_w(jaxinit.he_normal(), 784, 784) == pytest.approx(2**0.5, rel=1e-15)
    assert meanfield.sigma_w(jaxinit.lecun_normal(), 784, 10) == pytest.approx(1.0, rel=1e-15)
    assert meanfield.sigma_w(jaxinit.normal(1.0), 784, 784) == 28.0
    assert meanfield.sigma_w(jaxinit.glorot_normal(), 100, 300) ** 2 == pytest.approx(0.5)
    with pytest.raises(TypeError, match="is not a jaxinit initializer"):
        meanfield.sigma_w(jax.nn.initializers.he_normal(), 4, 4)


def test_complex_variance_scaling_law():
    # Complex variance scaling: E|w|^2 = scale / fan as well.
    init = jaxinit.he_normal()
    w = init(jax.random.key(4), DENSE, jnp.complex64)
    sq = np.abs(np.asarray(w, np.complex128)) ** 2
    law = init.variance(*DENSE)
    tol = 5 * sq.std(ddof=1) / math.sqrt(sq.size)
    assert abs(sq.mean() - law) <= tol
