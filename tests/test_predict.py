"""jaxinit.predict and jaxinit.critical_sigma_w against closed forms and brute force."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special

import jaxinit

RTOL = 1e-12  # the quadrature is exact to rounding for these integrands


@pytest.mark.parametrize(("sigma_w", "sigma_b", "input_var"), [(2**0.5, 0.0, 1.0), (1.3, 0.4, 2.5)])
def test_relu_chain_closed_form(sigma_w, sigma_b, input_var):
    p = jaxinit.predict("relu", 12, sigma_w=sigma_w, sigma_b=sigma_b, input_var=input_var)
    q = [sigma_w**2 * input_var + sigma_b**2]
    for _ in range(11):
        q.append(sigma_w**2 * q[-1] / 2 + sigma_b**2)
    q = np.array(q)
    np.testing.assert_allclose(p.q, q, rtol=RTOL)
    np.testing.assert_allclose(p.std, np.sqrt(q), rtol=RTOL)
    # ReLU of N(0, q): mean sqrt(q / 2pi), second moment q / 2.
    np.testing.assert_allclose(p.post_mean, np.sqrt(q / (2 * np.pi)), rtol=RTOL)
    np.testing.assert_allclose(p.post_std, np.sqrt(q / 2 - q / (2 * np.pi)), rtol=RTOL)
    np.testing.assert_allclose(p.chi, np.full(12, sigma_w**2 / 2), rtol=RTOL)
    np.testing.assert_allclose(p.grad_var, (sigma_w**2 / 2) ** np.arange(11, -1, -1), rtol=RTOL)


def test_he_relu_preserves_variance_over_fifty_layers():
    p = jaxinit.predict("relu", 50)  # default sigma_w = gain("relu") = sqrt(2)
    np.testing.assert_allclose(p.q, np.full(50, 2.0), rtol=RTOL)
    np.testing.assert_allclose(p.grad_var, np.ones(50), rtol=RTOL)


@pytest.mark.parametrize("sigma_w", [0.5, 1.0, 1.5])
def test_linear_chain_closed_form(sigma_w):
    p = jaxinit.predict("linear", 9, sigma_w=sigma_w, sigma_b=0.2)
    q = [sigma_w**2 + 0.04]
    for _ in range(8):
        q.append(sigma_w**2 * q[-1] + 0.04)
    np.testing.assert_allclose(p.q, q, rtol=RTOL)
    np.testing.assert_allclose(p.post_mean, np.zeros(9), atol=1e-12)
    np.testing.assert_allclose(p.post_std, np.sqrt(q), rtol=RTOL)
    np.testing.assert_allclose(p.grad_var, sigma_w ** (2 * np.arange(8, -1, -1)), rtol=RTOL)


def test_leaky_relu_and_callable_agree_with_closed_form():
    slope = 0.2
    for act, param in [("leaky_relu", slope), (lambda x: jax.nn.leaky_relu(x, slope), None)]:
        p = jaxinit.predict(act, 4, sigma_w=1.1, param=param)
        m2 = (1 + slope**2) / 2
        q = 1.21 * (1.21 * m2) ** np.arange(4)
        np.testing.assert_allclose(p.q, q, rtol=RTOL)
        np.testing.assert_allclose(p.chi, np.full(4, 1.21 * m2), rtol=RTOL)


def test_tanh_matches_direct_quadrature():
    p = jaxinit.predict("tanh", 3, sigma_w=1.7, sigma_b=0.3, input_var=0.8)
    q1 = 1.7**2 * 0.8 + 0.09
    e2 = _expect(lambda z: np.tanh(math.sqrt(q1) * z) ** 2)
    ed = _expect(lambda z: (1 - np.tanh(math.sqrt(q1) * z) ** 2) ** 2)
    assert p.q[0] == pytest.approx(q1, rel=RTOL)
    assert p.q[1] == pytest.approx(1.7**2 * e2 + 0.09, rel=1e-9)
    assert p.chi[0] == pytest.approx(1.7**2 * ed, rel=1e-9)


def test_widths_scale_backward_pass_only():
    p = jaxinit.predict("linear", 3, sigma_w=1.0, widths=[100, 200, 10])
    np.testing.assert_allclose(p.q, np.ones(3), rtol=RTOL)
    # g_l = chi g_{l+1} width_{l+1} / width_l.
    np.testing.assert_allclose(p.grad_var, [0.1, 0.05, 1.0], rtol=RTOL)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, r"depth=0 must be an int >= 1"),
        ({"depth": 2.5}, r"depth=2.5"),
        ({"sigma_w": -1.0}, r"sigma_w=-1.0 must be a finite number >= 0"),
        ({"sigma_b": math.nan}, r"sigma_b=nan"),
        ({"input_var": math.inf}, r"input_var=inf"),
        ({"activation": "relux"}, r"activation='relux' is not a known name"),
        ({"activation": "tanh", "param": 0.1}, r"param=0.1"),
        ({"widths": [4, 4]}, r"widths=\[4, 4\] must be 3 positive ints"),
    ],
)
def test_predict_rejects_bad_arguments(kwargs, match):
    args = {"activation": "relu", "depth": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        jaxinit.predict(**args)


def test_predict_rejects_non_differentiable_callable():
    with pytest.raises(TypeError, match="JAX-differentiable"):
        jaxinit.predict(lambda x: np.maximum(np.asarray(x), 0), 2)


@pytest.mark.parametrize(
    ("activation", "param", "sigma_w2"),
    [
        ("relu", None, 2.0),
        ("linear", None, 1.0),
        ("leaky_relu", 0.3, 2 / 1.09),
        ("tanh", None, 1.0),
    ],
)
def test_critical_sigma_w_known_values(activation, param, sigma_w2):
    assert jaxinit.critical_sigma_w(activation, 0.0, param=param) ** 2 == pytest.approx(
        sigma_w2, rel=1e-9
    )


def test_critical_sigma_w_relu_ignores_bias():
    assert jaxinit.critical_sigma_w("relu", 0.5) == pytest.approx(2**0.5, rel=1e-12)


def _expect(fn):
    """E[fn(z)], z ~ N(0, 1), by adaptive quadrature (independent of jaxinit's rule)."""
    pdf = lambda z: fn(z) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return integrate.quad(pdf, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def _brute_force_critical(phi, dphi, sigma_b, lo, hi):
    """Bisection over sigma_w of chi(q*(sigma_w)) - 1, with q* found by brentq."""

    def q_star(sw):
        g = lambda q: sw**2 * _expect(lambda z: phi(math.sqrt(q) * z) ** 2) + sigma_b**2 - q  # noqa: E731
        hi = 1.0
        while g(hi) > 0:
            hi *= 2
            assert hi < 1e6, f"no stable fixed point for sigma_w={sw}"
        return optimize.brentq(g, sigma_b**2, hi, xtol=1e-14)

    def chi_minus_one(sw):
        q = q_star(sw)
        return sw**2 * _expect(lambda z: dphi(math.sqrt(q) * z) ** 2) - 1

    return optimize.bisect(chi_minus_one, lo, hi, xtol=1e-10)


def test_critical_sigma_w_tanh_matches_brute_force():
    want = _brute_force_critical(np.tanh, lambda x: 1 - np.tanh(x) ** 2, 0.3, 1.0, 2.0)
    assert jaxinit.critical_sigma_w("tanh", 0.3) == pytest.approx(want, rel=1e-7)
    # The callable path agrees with the named one.
    assert jaxinit.critical_sigma_w(jnp.tanh, 0.3) == pytest.approx(want, rel=1e-7)


@pytest.mark.parametrize("activation", ["tanh", "elu", "gelu"])
def test_critical_sigma_w_is_a_fixed_point_with_unit_chi(activation):
    sw, sb = jaxinit.critical_sigma_w(activation, 0.5), 0.5
    # Iterate the map long enough to reach q* (slowly: its slope there is near 1), then chi
    # must be 1 there.
    p = jaxinit.predict(activation, 1000, sigma_w=sw, sigma_b=sb)
    assert p.q[-1] == pytest.approx(p.q[-2], rel=1e-6)
    assert p.chi[-1] == pytest.approx(1.0, abs=1e-3)


def test_critical_sigma_w_gelu_matches_brute_force():
    gelu = lambda x: x * special.ndtr(x)  # noqa: E731
    dgelu = lambda x: special.ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    want = _brute_force_critical(gelu, dgelu, 0.5, 1.3, 1.405)
    assert jaxinit.critical_sigma_w("gelu", 0.5) == pytest.approx(want, rel=1e-7)


def test_critical_sigma_w_reports_missing_edge_of_chaos():
    with pytest.raises(ValueError, match=r"activation=.*has no edge of chaos"):
        jaxinit.critical_sigma_w("softplus", 0.0)
    with pytest.raises(ValueError, match=r"only at unstable fixed points"):
        jaxinit.critical_sigma_w("gelu", 0.1)
    with pytest.raises(ValueError, match=r"sigma_b=-0.1 must be a finite number >= 0"):
        jaxinit.critical_sigma_w("tanh", -0.1)
