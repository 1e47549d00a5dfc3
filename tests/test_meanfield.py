"""jaxinit.meanfield: per-layer maps against closed forms, independent quadrature and a wide
random network; predict and critical_sigma_w are built on them."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from _stats import assert_mean
from scipy import integrate, optimize

import jaxinit
from jaxinit import meanfield as mf

RTOL = 1e-12


def _expect(fn):
    """E[fn(z)], z ~ N(0, 1), by adaptive quadrature (independent of jaxinit's rule)."""
    pdf = lambda z: fn(z) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return integrate.quad(pdf, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def test_public_objects_are_shared():
    assert jaxinit.predict is mf.predict
    assert jaxinit.critical_sigma_w is mf.critical_sigma_w
    assert jaxinit.Prediction is mf.Prediction


def test_dense_map():
    s = mf.dense(1.5, 0.2).apply(mf.State(2.0, chi=3.0, mean=0.7))
    assert s == mf.State(1.5**2 * 2.0 + 0.04, None, 3.0 * 1.5**2, 0.0)


def test_relu_map_closed_form():
    q = 3.0
    s = mf.activation("relu").apply(mf.State(q))
    assert s.q == pytest.approx(q / 2, rel=RTOL)
    assert s.mean == pytest.approx(math.sqrt(q / (2 * math.pi)), rel=RTOL)
    assert s.chi == pytest.approx(0.5, rel=RTOL)


def test_tanh_map_matches_independent_quadrature():
    q = 1.7
    s = mf.activation(jax.numpy.tanh).apply(mf.State(q, chi=2.0))
    u = lambda z: math.sqrt(q) * z  # noqa: E731
    assert s.q == pytest.approx(_expect(lambda z: np.tanh(u(z)) ** 2), rel=1e-9)
    assert s.mean == pytest.approx(0.0, abs=1e-12)
    assert s.chi == pytest.approx(2.0 * _expect(lambda z: (1 - np.tanh(u(z)) ** 2) ** 2), rel=1e-9)
    assert mf.activation("tanh") == mf.activation("tanh")


def test_compose_flattens_and_trace_records_each_map():
    layer = mf.compose(mf.dense(1.3, 0.1), mf.activation("relu"))
    net = mf.compose(layer, layer, mf.dense(0.5))
    assert len(net.maps) == 5
    steps = mf.trace(net, 2.0)
    assert [s.map for s in steps] == list(net.maps)
    assert steps[-1].state == net.apply(mf.State(2.0))
    assert steps[-1].state.chi == pytest.approx(math.prod(s.chi for s in steps), rel=RTOL)
    # ReLU chain by hand.
    q1 = 1.69 * 2.0 + 0.01
    q2 = 1.69 * q1 / 2 + 0.01
    assert [s.state.q for s in steps[0::2]] == pytest.approx([q1, q2, 0.25 * q2 / 2], rel=RTOL)
    assert mf.trace(mf.dense(2.0), mf.State(1.0))[0].state.q == 4.0


def test_predict_is_the_composed_chain():
    sws, sb = [1.1, 1.4, 0.9], 0.3
    p = jaxinit.predict("gelu", 3, sigma_w=sws, sigma_b=sb, input_var=0.6)
    act = mf.activation("gelu")
    steps = mf.trace(mf.compose(*(m for sw in sws for m in (mf.dense(sw, sb), act))), 0.6)
    np.testing.assert_array_equal(p.q, [s.state.q for s in steps[0::2]])
    np.testing.assert_array_equal(p.post_mean, [s.state.mean for s in steps[1::2]])
    np.testing.assert_array_equal(
        p.chi, [d.chi * a.chi for d, a in zip(steps[::2], steps[1::2], strict=True)]
    )


def test_critical_sigma_w_is_a_unit_chi_fixed_point_of_the_layer_map():
    sw, sb = jaxinit.critical_sigma_w("tanh", 0.3), 0.3
    # The map from one pre-activation to the next: q -> sigma_w^2 E[tanh^2] + sigma_b^2.
    layer = mf.compose(mf.activation("tanh"), mf.dense(sw, sb))
    q_star = optimize.brentq(lambda q: layer.apply(mf.State(q)).q - q, 0.1, 10.0, xtol=1e-14)
    assert layer.apply(mf.State(q_star)).chi == pytest.approx(1.0, rel=1e-7)


def test_residual_linear_branch_closed_form():
    alpha, sw, sb = 0.5, 1.2, 0.1
    block = mf.residual(mf.dense(sw, sb), alpha)
    s = mf.compose(block, block, block).apply(mf.State(2.0))
    q = 2.0
    for _ in range(3):
        q = q + alpha**2 * (sw**2 * q + sb**2)
    assert s.q == pytest.approx(q, rel=RTOL)
    assert s.chi == pytest.approx((1 + alpha**2 * sw**2) ** 3, rel=RTOL)


def _relu_residual_closed_form(q0, sw, alpha):
    """Two blocks x + alpha relu(W x) from a zero-mean input: q and mean after each."""
    qb1, mb1 = sw**2 * q0 / 2, math.sqrt(sw**2 * q0 / (2 * math.pi))
    q1, m1 = q0 + alpha**2 * qb1, alpha * mb1
    qb2, mb2 = sw**2 * q1 / 2, math.sqrt(sw**2 * q1 / (2 * math.pi))
    return q1 + 2 * alpha * m1 * mb2 + alpha**2 * qb2, m1 + alpha * mb2


def test_residual_relu_branch_closed_form():
    sw, alpha = 2**0.5, 1.0
    block = mf.residual(mf.compose(mf.dense(sw), mf.activation("relu")), alpha)
    s = mf.compose(block, block).apply(mf.State(1.0))
    q2, m2 = _relu_residual_closed_form(1.0, sw, alpha)
    assert (s.q, s.mean) == pytest.approx((q2, m2), rel=RTOL)
    assert s.chi == pytest.approx((1 + alpha**2 * sw**2 / 2) ** 2, rel=RTOL)


def test_residual_relu_branch_matches_a_wide_random_network():
    """Per seed, the mean of y^2 over a 1024-wide, 16-input batch through two residual ReLU
    blocks, and the gradient's second-moment ratio through the first block."""
    n, batch, sw, alpha = 1024, 16, 2**0.5, 1.0
    rng = np.random.default_rng(0)
    q_est, chi_est = [], []
    for _ in range(12):
        x = rng.standard_normal((batch, n))
        w1, w2 = rng.standard_normal((2, n, n)) * sw / math.sqrt(n)
        pre1 = x @ w1
        y1 = x + alpha * np.maximum(pre1, 0)
        y2 = y1 + alpha * np.maximum(y1 @ w2, 0)
        q_est.append(np.mean(y2**2))
        g = rng.standard_normal((batch, n))
        g_in = g + alpha * ((pre1 > 0) * g) @ w1.T
        chi_est.append(np.mean(g_in**2) / np.mean(g**2))
    block = mf.residual(mf.compose(mf.dense(sw), mf.activation("relu")), alpha)
    assert_mean(q_est, mf.compose(block, block).apply(mf.State(1.0)).q, "q after two blocks")
    assert_mean(chi_est, block.apply(mf.State(1.0)).chi, "chi of one block")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: mf.dense(-1.0), ValueError, r"dense: sigma_w=-1.0 must be a finite number >= 0"),
        (lambda: mf.dense(1.0, math.nan), ValueError, r"dense: sigma_b=nan"),
        (lambda: mf.activation("relux"), ValueError, r"activation: activation='relux' is not"),
        (lambda: mf.activation(3), TypeError, r"activation=3 must be a name or a callable"),
        (lambda: mf.activation(jax.nn.relu, 0.1), ValueError, r"param= applies to named"),
        (lambda: mf.compose(), ValueError, r"compose: needs at least one map"),
        (lambda: mf.compose(mf.dense(1.0), 3), TypeError, r"compose: maps\[1\]=3 is not"),
        (
            lambda: mf.residual(mf.activation("relu")),
            ValueError,
            r"residual: branch=.* must contain a dense\(...\) or attention",
        ),
        (lambda: mf.residual(mf.dense(1.0), math.inf), ValueError, r"alpha=inf must be a finite"),
        (lambda: mf.trace(mf.dense(1.0), -1.0), ValueError, r"trace: state=-1.0 must be"),
        (
            lambda: mf.dense(1.0).apply(mf.State(1.0, c=1.5)),
            ValueError,
            r"dense: state.c=1.5 must be a correlation in \[-1, 1\]",
        ),
    ],
)
def test_errors_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()
