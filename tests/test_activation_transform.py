"""jaxinit.activation_transform against google-deepmind/dks and closed forms.

References, each independent of jaxinit:
- the golden values of dks's ``tests/test_activation_transform.py`` (dks 0.1.2), typed here;
- for ReLU and Leaky ReLU, the local Q/C quantities in closed form (Gaussian moments of a
  shifted normal, Stein's lemma for Q'(1)), solved with SciPy;
- the arc-cosine kernel (Cho & Saul 2009) and SciPy quadrature for the Gaussian integrals.

dks integrates with one 100,000-node Gauss-Legendre rule on [-10, 10] that straddles the
ReLU kink; its ReLU and shifted Leaky ReLU goldens therefore carry that rule's error (up to
about 3e-5 relative). With the default ``quadrature="exact"`` those entries are compared with
the exact root (closed form, 1e-9) and with dks within the measured size of dks's own error,
which ``test_relu_golden_is_off_by_dks_quadrature`` shows from the closed form. With
``quadrature="dks"`` (dks's rule and dks's solver, MINPACK's hybr) every golden, those
included, is compared at 1e-6 relative; the rule itself is checked against SciPy's
``roots_legendre`` and by its exactness on polynomials.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.special
from scipy.stats import norm

from jaxinit.activation_transform import (
    Quadrature,
    _hybr,
    _legendre_rule,
    gaussian_mean,
    gaussian_mean_2d,
    leaky_relu_c_map,
    transform,
)

RTOL = 1e-6
# dks's golden values that its kink-straddling quadrature moves (see the module docstring):
# measured |golden - exact| / |exact| is 2.1e-5 (ReLU) and 2.7e-6 (shifted Leaky ReLU).
DKS_KINK_RTOL = 3e-5

DKS_PARAMS = {"c_slope_1_target": 1.2}
TAT_PARAMS = {"c_val_0_target": 0.75, "c_curve_target": 0.2}


def resnet_subnet_max(x, r_fn, shortcut_weight=0.6):
    """dks's test network (ResNet-101 layout), with jnp.maximum in place of max."""
    blocks_per_group = (3, 4, 23, 3)
    res_branch_subnetwork_x = r_fn(r_fn(r_fn(x)))
    for i in range(4):
        for j in range(blocks_per_group[i]):
            res_x = r_fn(r_fn(r_fn(x)))
            shortcut_x = r_fn(x) if (j == 0) else x
            x = shortcut_weight**2 * shortcut_x + (1.0 - shortcut_weight**2) * res_x
    x = r_fn(x)
    return jnp.maximum(x, res_branch_subnetwork_x)


def resnet_subnet_max_py(x, r_fn, shortcut_weight=0.6):
    """The same function in plain Python floats, as dks wrote it (for SciPy references)."""
    blocks_per_group = (3, 4, 23, 3)
    res_branch_subnetwork_x = r_fn(r_fn(r_fn(x)))
    for i in range(4):
        for j in range(blocks_per_group[i]):
            res_x = r_fn(r_fn(r_fn(x)))
            shortcut_x = r_fn(x) if (j == 0) else x
            x = shortcut_weight**2 * shortcut_x + (1.0 - shortcut_weight**2) * res_x
    x = r_fn(x)
    return max(x, res_branch_subnetwork_x)


def mlp4(x, r_fn):
    for _ in range(4):
        x = r_fn(x)
    return x


def rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


# --- closed forms for phi_hat(x) = os * (leaky(alpha x + beta; a) + osh), x ~ N(0, 1) --------


def leaky_local(alpha, beta, a, c_val_0=0.0):
    """(output_shift, output_scale, Q'(1), C'(1)) in closed form, with C(0) = c_val_0."""
    t = beta / alpha
    p = norm.cdf(t)
    e1p = beta * p + alpha * norm.pdf(t)  # E[y 1{y>0}], y ~ N(beta, alpha^2)
    e2p = (beta**2 + alpha**2) * p + alpha * beta * norm.pdf(t)
    e1 = e1p + a * (beta - e1p)
    e2 = e2p + a * a * (beta**2 + alpha**2 - e2p)
    osh = math.sqrt(c_val_0) - e1
    os_ = 1.0 / math.sqrt(e2 + 2 * osh * e1 + osh**2)
    c_slope = os_**2 * alpha**2 * (p + a * a * (1 - p))
    # Stein: E[g x] = E[g'], with phi'' = (1 - a) delta(y) contributing osh (1 - a) pdf(t)/alpha.
    q_slope = c_slope + os_**2 * alpha * osh * (1 - a) * norm.pdf(t)
    return osh, os_, q_slope, c_slope


def brentq(fn, lo, hi) -> float:
    root: Any = scipy.optimize.brentq(fn, lo, hi, xtol=1e-15)
    return float(root)


def dks_solve_increasing(fn, target, input_, min_, max_, tol=1e-8, max_eval=100):
    """dks's ``_solve_increasing`` (dks/base/activation_transform.py), re-typed."""
    for _ in range(max_eval):
        value = fn(input_)
        if abs(value - target) < tol:
            return input_
        if value > target:
            max_ = input_
            input_ = 0.5 * (input_ + min_)
        elif value < target:
            min_ = input_
            input_ = input_ * 2 if math.isinf(max_) else 0.5 * (input_ + max_)
    raise AssertionError("no solution")


def local_slope_target(c_slope_1_target):
    """dks's local C'(1) target: its bisection on the maximal slope function, in Python."""
    return dks_solve_increasing(
        lambda x: resnet_subnet_max_py(1.0, lambda y: x * y), c_slope_1_target, 1.1, 1.0, math.inf
    )


def relu_dks_transform(c_slope_1_target):
    """ReLU under DKS on dks's test network; ``tol=1e-14`` makes the bisection for the local
    target exact (dks stops at 1e-8, which moves the result by ~1e-9 here)."""
    return transform(
        "relu",
        "DKS",
        subnet_max_func=resnet_subnet_max,
        dks_params={"c_slope_1_target": c_slope_1_target},
        tol=1e-14,
    )


def relu_dks_rule_transform(c_slope_1_target, tol=None):
    """The same with dks's quadrature and (by default) dks's bisection tolerance."""
    return transform(
        "relu",
        "DKS",
        subnet_max_func=resnet_subnet_max,
        dks_params={"c_slope_1_target": c_slope_1_target},
        tol=tol,
        quadrature="dks",
    )


@pytest.fixture(scope="module")
def relu_dks():
    with jax.enable_x64(True):
        return relu_dks_transform(1.2)


# --- the two goldens quoted in issue 14 ------------------------------------------------------


def test_relu_dks_golden(relu_dks):
    t = relu_dks
    assert bool(t.converged)
    assert float(t.input_shift) == 1.0
    assert rel(t.output_shift, -1.000373858553784) <= RTOL
    # the exact root (closed form, the local target by brentq): to 1e-9
    target = brentq(lambda x: resnet_subnet_max_py(1.0, lambda y: x * y) - 1.2, 1.0, 1.1)
    alpha = brentq(lambda s: leaky_local(s, 1.0, 0.0)[3] - target, 0.2, 0.6)
    _, os_exact, _, _ = leaky_local(alpha, 1.0, 0.0)
    assert rel(t.input_scale, alpha) <= 1e-9
    assert rel(t.output_scale, os_exact) <= 1e-9
    # dks's golden, within the error of dks's quadrature at the ReLU kink
    assert rel(t.input_scale, 0.3685360046708044) <= DKS_KINK_RTOL
    assert rel(t.output_scale, 2.721729988761473) <= DKS_KINK_RTOL


def test_relu_golden_is_off_by_dks_quadrature():
    """At dks's golden input scale the exact C'(1) misses the local target by ~5e-7: the golden
    is the root of dks's quadrature, not of the exact equations."""
    target = local_slope_target(1.2)
    golden = leaky_local(0.3685360046708044, 1.0, 0.0)[3]
    assert 1e-7 < abs(golden - target) < 1e-6
    # and the C'(1) integral by adaptive SciPy quadrature agrees with the closed form
    a, b = 0.3685360046708044, 1.0
    _, os_, _, c_slope = leaky_local(a, b, 0.0)
    quad = scipy.integrate.quad(lambda x: os_**2 * a**2 * norm.pdf(x), -b / a, np.inf)[0]
    assert abs(quad - c_slope) < 1e-12


@pytest.mark.slow
def test_relu_dks_golden_with_dks_quadrature():
    with jax.enable_x64(True):
        t = relu_dks_rule_transform(1.2)
    assert bool(t.converged)
    assert float(t.input_shift) == 1.0
    assert rel(t.input_scale, 0.3685360046708044) <= RTOL
    assert rel(t.output_scale, 2.721729988761473) <= RTOL
    assert rel(t.output_shift, -1.000373858553784) <= RTOL


@pytest.mark.slow
def test_dks_quadrature_jits_and_differentiates():
    """Under jit, the same root; the gradient is that of dks's discretized conditions (the
    root moves smoothly between node crossings of the kink), so a small central difference
    agrees with it (``tol=1e-14``: an exact local target, as in the exact-mode test)."""
    c, h = 1.2, 1e-7
    with jax.enable_x64(True):
        eager = relu_dks_rule_transform(c, 1e-14)
        jitted = jax.jit(relu_dks_rule_transform, static_argnums=1)(c, 1e-14)
        grad = float(jax.grad(lambda c: relu_dks_rule_transform(c, 1e-14).input_scale)(c))
        up, down = (float(relu_dks_rule_transform(v, 1e-14).input_scale) for v in (c + h, c - h))
    assert bool(jitted.converged)
    np.testing.assert_allclose(jitted.input_scale, eager.input_scale, rtol=1e-12)
    assert grad > 0
    assert rel(grad, (up - down) / (2 * h)) <= 1e-5


def test_leaky_relu_tat_golden():
    with jax.enable_x64(True):
        t = transform("leaky_relu", "TAT", subnet_max_func=resnet_subnet_max, tat_params=TAT_PARAMS)
        assert bool(t.converged)
        assert rel(t.negative_slope, 0.6291800290346146) <= RTOL
        assert rel(t.output_scale, 1.196996549778802) <= RTOL
        assert float(t.input_scale) == 1.0 and float(t.input_shift) == 0.0


# --- jit, gradients, errors ------------------------------------------------------------------


def test_jit_matches_eager(relu_dks):
    with jax.enable_x64(True):
        jitted = jax.jit(relu_dks_transform)(1.2)
    assert bool(jitted.converged)
    for k in ("input_scale", "input_shift", "output_shift", "output_scale"):
        np.testing.assert_allclose(getattr(jitted, k), getattr(relu_dks, k), rtol=1e-12)


def test_gradient_matches_central_difference(relu_dks):
    """d input_scale / d c_slope_1_target through both solves (bisection, Newton), float64."""
    c, h = 1.2, 1e-5
    with jax.enable_x64(True):
        grad = float(jax.grad(lambda c: relu_dks_transform(c).input_scale)(c))
        up, down = (float(relu_dks_transform(v).input_scale) for v in (c + h, c - h))
    fd = (up - down) / (2 * h)
    assert grad > 0  # a larger C'(1) target moves the ReLU's kink closer
    assert rel(grad, fd) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "key"), [("DKS", "c_slope_1_target"), ("TAT", "c_curve_target")]
)
def test_gradient_two_and_three_parameter_solves(method, key):
    """Reverse mode through the 2- (DKS) and 3-parameter (TAT) Newton solves, softplus."""
    value = {"c_slope_1_target": 1.5, "c_curve_target": 0.3}[key]

    def f(c):
        dks, tat = ({key: c}, None) if method == "DKS" else (None, {key: c})
        t = transform(
            "softplus", method, subnet_max_func=mlp4, dks_params=dks, tat_params=tat, tol=1e-14
        )
        return jnp.stack([t.input_scale, t.input_shift, t.output_shift, t.output_scale])

    h = 1e-5
    with jax.enable_x64(True):
        jac, (up, down) = jax.jit(
            lambda c: (jax.jacrev(f)(c), jax.vmap(f)(jnp.stack([c + h, c - h])))
        )(value)
        jac, fd = np.asarray(jac), (np.asarray(up) - np.asarray(down)) / (2 * h)
    np.testing.assert_allclose(jac, fd, rtol=1e-6)


def test_max_in_subnet_func_is_explained():
    with pytest.raises(TypeError, match=r"jnp\.maximum"):
        transform("relu", "DKS", subnet_max_func=resnet_subnet_max_py)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activation": "relu", "method": "dks"}, "method='dks'"),
        ({"activation": "relu", "method": "DKS", "quadrature": "DKS"}, "quadrature='DKS'"),
        ({"activation": "relux", "method": "DKS"}, "activation='relux'"),
        ({"activation": "relu", "method": "TAT"}, "not supported with method='TAT'"),
        ({"activation": "tanh", "method": "DKS", "dks_params": {"c_slope": 1.2}}, "c_slope"),
        ({"activation": "tanh", "method": "DKS", "dks_params": {"c_slope_1_target": 1.0}}, "> 1"),
        ({"activation": "tanh", "method": "DKS"}, "subnet_max_func"),
        (
            {"activation": "leaky_relu", "method": "TAT", "tat_params": {"c_val_0_target": 2}},
            "0, 1",
        ),
    ],
)
def test_errors_name_the_argument(kwargs, match):
    kwargs = dict(kwargs)
    if "subnet" not in match:
        kwargs["subnet_max_func"] = mlp4
    with pytest.raises(ValueError, match=match):
        transform(kwargs.pop("activation"), kwargs.pop("method"), **kwargs)


# --- quadrature --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2000, 2001])
def test_legendre_rule_matches_scipy_and_is_exact(n):
    """The O(n) rule behind ``quadrature="dks"``, at a size SciPy's eigenvalue method handles.

    Nodes: both rules place them within an ulp or two of 1 of the true roots, so 4 eps.
    Weights: SciPy's come from P_{n-1} and P_n' by an n-step recurrence (rounding up to about
    n eps relative, growing towards +-1 as 1 - x^2 shrinks), so |x| <= 0.9 and 10 n eps.
    Exactness: sum w P_j(x) = 2 delta_j0 for every degree j < 2n (P_j by the stable
    recurrence, error ~ sqrt(j) eps per term; sum of |w| = 2), and not for j = 2n.
    """
    eps = np.finfo(np.float64).eps
    x, w = _legendre_rule(n)
    xr, wr = scipy.special.roots_legendre(n)
    assert np.all(np.diff(x) > 0)
    assert np.max(np.abs(x - xr)) <= 4 * eps
    inner = np.abs(xr) <= 0.9
    assert np.max(np.abs(w - wr)[inner] / wr[inner]) <= 10 * n * eps
    p_prev, p = np.zeros(n), np.ones(n)
    moments = [w @ p]
    for j in range(2 * n):
        p_prev, p = p, ((2 * j + 1) * x * p - j * p_prev) / (j + 1)
        moments.append(w @ p)
    moments = np.asarray(moments)
    moments[0] -= 2.0
    assert np.max(np.abs(moments[: 2 * n])) <= 4 * math.sqrt(2 * n) * eps
    assert abs(moments[2 * n]) > 1e-3  # degree 2n is not integrated exactly


def test_gaussian_mean_kink_aware_matches_scipy():
    with jax.enable_x64(True):
        k = 0.37
        got = jax.jit(
            lambda k: gaussian_mean(lambda z: jnp.maximum(z - k, 0.0) ** 2 + jnp.tanh(z), kinks=k)
        )(k)
    ref = scipy.integrate.quad(lambda z: (z - k) ** 2 * norm.pdf(z), k, np.inf, epsabs=0)[0]
    assert rel(got, ref) <= 1e-12


def test_gaussian_mean_2d_matches_arccos_kernel_and_leaky_c_map():
    a = 0.3
    cs = np.array([-1.0, -0.7, 0.0, 0.45, 0.95, 1.0])

    def kernels(c):
        relu = lambda x: jnp.maximum(x, 0.0)  # noqa: E731
        leaky = lambda x: jnp.where(x < 0, a * x, x)  # noqa: E731
        return (
            gaussian_mean_2d(relu, relu, c, kinks1=(0.0,), kinks2=(0.0,)),
            gaussian_mean_2d(leaky, leaky, c, kinks1=(0.0,), kinks2=(0.0,)),
            leaky_relu_c_map(c, a),
        )

    with jax.enable_x64(True):
        k_relu, k_leaky, c_map = map(np.asarray, jax.jit(jax.vmap(kernels))(jnp.asarray(cs)))
    theta = np.arccos(cs)
    arccos = (np.sin(theta) + (np.pi - theta) * cs) / (2 * np.pi)  # Cho & Saul, n = 1
    np.testing.assert_allclose(k_relu, arccos, rtol=0, atol=1e-9)
    # TAT's Leaky ReLU C map; E[phi^2] = (1 + a^2) / 2 for unit inputs
    closed = ((1 - a) ** 2 * arccos * 2 + 2 * a * cs) / (1 + a**2)
    np.testing.assert_allclose(k_leaky / ((1 + a * a) / 2), closed, rtol=0, atol=1e-9)
    np.testing.assert_allclose(c_map, closed, rtol=0, atol=1e-12)


def test_hybr_port_follows_scipy_hybr():
    """``quadrature="dks"`` solves with a port of MINPACK's hybr; from each start it must reach
    what ``scipy.optimize.root(method="hybr")`` reaches, root or failure point, since on dks's
    kinked conditions that choice picks the root. Both run the same float64 arithmetic up to
    rounding (different QR routines), far below hybr's own resolution (xtol = 1.5e-8)."""

    def fn(x, xp):  # two roots, reached from different starts; (0, 0) and (10, 0) fail
        return xp.stack([x[0] ** 2 + x[1] ** 2 - 4.0, xp.exp(x[0]) + x[1] - 1.0])

    starts = np.array([[1.0, 1.0], [3.0, -3.0], [-2.0, 2.5], [0.0, 0.0], [10.0, 0.0]])
    with jax.enable_x64(True):
        solve = jax.vmap(lambda s: _hybr(lambda x: fn(x, jnp), s))
        xs, oks = map(np.asarray, jax.jit(solve)(jnp.asarray(starts)))
    roots = set()
    for start, x, ok in zip(starts, xs, oks, strict=True):
        sol: Any = scipy.optimize.root(lambda x: fn(x, np), start, method="hybr")
        assert bool(ok) == bool(sol.success), start
        np.testing.assert_allclose(x, sol.x, rtol=1e-9, atol=1e-12)
        if ok:
            roots.add(round(float(x[0]), 6))
    assert len(roots) == 2 and not oks.all()  # both roots and the failures are compared


# --- every golden of dks's tests (slow: one compile per case) ---------------------------------

PARAM_GOLDENS = {
    ("softplus", "DKS"): {
        "input_scale": 0.18761008168267976,
        "input_shift": 0.40688063442262007,
        "output_shift": -0.9213466151411376,
        "output_scale": 8.878672543665223,
    },
    ("tanh", "DKS"): {
        "input_scale": 0.07461073057540868,
        "input_shift": 0.5566915199964182,
        "output_shift": -0.5034378768692127,
        "output_scale": 18.002635964442558,
    },
    ("leaky_relu", "DKS"): {
        "negative_slope": 0.8761257073473065,
        "input_shift": -6.372924855154692e-13,
        "output_shift": -0.049418692997275034,
        "output_scale": 1.0651832705682147,
    },
    ("softplus", "TAT"): {
        "input_scale": 0.15011489794748328,
        "input_shift": 0.5374599901127068,
        "output_shift": -0.996481014465811,
        "output_scale": 10.54880187880574,
    },
    ("tanh", "TAT"): {
        "input_scale": 0.0580205218578313,
        "input_shift": 0.5218639804099805,
        "output_shift": -0.4796430704354356,
        "output_scale": 22.36066261763117,
    },
    ("gelu", "DKS"): {
        "input_scale": 0.07036271496383567,
        "input_shift": 0.2586837248593587,
        "output_shift": -0.15758328114374964,
        "output_scale": 20.249573305194307,
    },
    ("gelu_exact", "DKS"): {
        "input_scale": 0.07043253126531114,
        "input_shift": 0.259489297927707,
        "output_shift": -0.15815378961903598,
        "output_scale": 20.21158902315857,
    },
}


QUADRATURES = ["exact", "dks"]


@pytest.mark.slow
@pytest.mark.parametrize("quadrature", QUADRATURES)
@pytest.mark.parametrize(("name", "method"), sorted(PARAM_GOLDENS), ids=str)
def test_parameter_goldens(name, method, quadrature):
    with jax.enable_x64(True):
        t = transform(
            name,
            method,
            subnet_max_func=resnet_subnet_max,
            dks_params=DKS_PARAMS,
            tat_params=TAT_PARAMS,
            quadrature=quadrature,
        )
    assert bool(t.converged)
    got = t.as_dict()
    for key, want in PARAM_GOLDENS[name, method].items():
        if abs(want) < 1e-9:  # dks's Leaky ReLU input_shift is 0 up to its solver's noise
            assert abs(float(got[key])) <= 1e-9, (key, float(got[key]))
        else:
            assert rel(got[key], want) <= RTOL, (key, float(got[key]), want)


VALUE_DKS = {"c_slope_1_target": 12.0, "local_q_slope_target": 0.97}
VALUE_TAT = {"c_val_0_target": 0.95, "c_curve_target": 4.5}
VALUE_GOLDENS = [
    ("softplus", "DKS", (0.5205088334781294, -0.6970897398761904)),
    ("tanh", "DKS", (0.6910746968773931, -0.5122335409369118)),
    ("softplus", "TAT", (0.6923574763139374, -0.4935166367766701)),
    ("leaky_relu", "TAT", (0.7954047194402861, -0.2955187511683813)),
    ("gelu", "TAT", (0.6922557817568101, -0.491992384704867)),
    ("gelu_exact", "TAT", (0.6922429517529013, -0.49198103131465193)),
    ("tanh", "untransformed", (0.5370495669980353, -0.5370495669980353)),
    ("softplus", "untransformed", (1.0374879504858856, 0.4374879504858857)),
    ("relu", "untransformed", (0.6, 0.0)),
    ("leaky_relu", "untransformed", (0.6, -0.006)),
]


def value_transform(name, method, quadrature: Quadrature = "exact"):
    return transform(
        name,
        method,
        subnet_max_func=resnet_subnet_max,
        dks_params=VALUE_DKS,
        tat_params=VALUE_TAT,
        quadrature=quadrature,
    )


@pytest.mark.slow
@pytest.mark.parametrize("quadrature", QUADRATURES)
@pytest.mark.parametrize(("name", "method", "want"), VALUE_GOLDENS, ids=str)
def test_value_goldens(name, method, want, quadrature):
    with jax.enable_x64(True):
        t = value_transform(name, method, quadrature)
        y = np.asarray(t(jnp.array([0.6, -0.6])))
    for got, w in zip(y, want, strict=True):
        assert abs(got - w) <= RTOL * abs(w), (got, w)


@pytest.mark.slow
@pytest.mark.parametrize("quadrature", QUADRATURES)
def test_value_golden_tanh_tat_is_the_mirror_solution(quadrature):
    """dks's solver found the root with input_shift < 0 here; jaxinit reports its mirror,
    phi_mirror(x) = -phi_hat(-x), the same network up to signs."""
    with jax.enable_x64(True):
        t = value_transform("tanh", "TAT", quadrature)
        assert float(t.input_shift) > 0
        y = np.asarray(-t(jnp.array([-0.6, 0.6])))
    for got, w in zip(y, (0.6860178437500071, -0.49030275427738146), strict=True):
        assert abs(got - w) <= RTOL * abs(w), (got, w)


KINKED_VALUE_GOLDENS = [
    ("relu", (0.6053339463256114, -0.6486764456443863)),
    ("leaky_relu", (0.5628988987673328, -0.6649764416535503)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "want"), KINKED_VALUE_GOLDENS)
def test_value_goldens_kinked_against_closed_form(name, want):
    """The exact root (closed form + SciPy) to 1e-9, dks's value within its kink error."""
    with jax.enable_x64(True):
        t = value_transform(name, "DKS")
        y = np.asarray(t(jnp.array([0.6, -0.6])))
    target = local_slope_target(12.0)
    if name == "relu":
        alpha = brentq(lambda s: leaky_local(s, 1.0, 0.0)[3] - target, 0.3, 1.5)
        beta, a = 1.0, 0.0
    else:

        def eqs(v):
            _, _, q, c = leaky_local(1.0, v[1], v[0])
            return [q - 0.97, c - target]

        sol: Any = scipy.optimize.fsolve(eqs, [0.5, 0.1], xtol=1e-14)
        a, beta = float(sol[0]), float(sol[1])
        alpha = 1.0
        assert rel(t.negative_slope, a) <= 1e-9
    osh, os_, _, _ = leaky_local(alpha, beta, a)
    assert rel(t.input_scale, alpha) <= 1e-9
    assert rel(t.input_shift, beta) <= 1e-9
    for x, got, w in zip((0.6, -0.6), y, want, strict=True):
        z = alpha * x + beta
        exact = os_ * ((z if z >= 0 else a * z) + osh)
        assert rel(got, exact) <= 1e-9
        assert rel(got, w) <= DKS_KINK_RTOL


@pytest.mark.slow
@pytest.mark.parametrize(("name", "want"), KINKED_VALUE_GOLDENS)
def test_value_goldens_kinked_with_dks_quadrature(name, want):
    """With dks's rule (and so dks's solver), dks's kinked value goldens to 1e-6."""
    with jax.enable_x64(True):
        t = value_transform(name, "DKS", "dks")
        y = np.asarray(t(jnp.array([0.6, -0.6])))
    assert bool(t.converged)
    for got, w in zip(y, want, strict=True):
        assert rel(got, w) <= RTOL, (got, w)


@pytest.mark.slow
def test_transformed_maps_meet_the_dks_conditions(relu_dks):
    """The returned activation's own local maps, by the 1-D and 2-D quadratures:
    Q(1) = 1, C(0) = 0 (DKS) and C(1) = 1."""
    with jax.enable_x64(True):
        q1, c0, c1 = jax.jit(lambda t: (t.q_map(1.0), t.c_map(0.0), t.c_map(1.0)))(relu_dks)
        q1, c0, c1 = float(q1), float(c0), float(c1)
    assert abs(q1 - 1) <= 1e-12
    assert abs(c0) <= 1e-12
    assert abs(c1 - 1) <= 1e-12


def test_mean_field_maps_take_a_transformed_activation_with_its_kink():
    # DKS shifts ReLU's kink to -input_shift / input_scale; the mean-field activation map
    # takes the TransformedActivation itself (it has arrays, so no hash) and integrates across
    # that kink: its q map against scipy's quad split at the kink
    from jaxinit import gains
    from jaxinit import meanfield as mf

    def chain(x, r_fn):
        for _ in range(4):
            x = r_fn(x)
        return x

    t = transform("relu", "DKS", subnet_max_func=chain)
    kink = -float(t.input_shift) / float(t.input_scale)
    assert gains.activation_kinks(t) == (kink,)
    q = mf.activation(t).apply(mf.State(1.0)).q

    def f(z):
        return float(t(jnp.float32(z))) ** 2 * norm.pdf(z)

    ref = scipy.integrate.quad(f, -np.inf, kink)[0] + scipy.integrate.quad(f, kink, np.inf)[0]
    assert abs(q - ref) < 1e-6  # t runs in float32 in the reference
