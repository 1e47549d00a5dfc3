"""jaxinit.meanfield with two inputs (the C-map) and the maps of residual, normalized and
transformer networks, against published closed forms re-typed here: neural-tangents' NNGP
kernels (arc-cosine for ReLU, Erf, GELU), (1 + 1/L)^L for 1/sqrt(L)-scaled ReLU ResNets,
De & Smith's l + 1, and scipy quadrature for the edge of chaos."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from _stats import assert_mean
from scipy import integrate, optimize, special

import jaxinit
from jaxinit import meanfield as mf

RTOL = 1e-6  # the brief's bar; the measured errors are near 1e-13

erf = jax.scipy.special.erf


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


# ---- neural-tangents' NNGP kernels, re-typed from neural_tangents/_src/stax/elementwise.py.
# Arguments are covariances: k11, k22 the variances of (u, v), k12 their covariance.


def nt_relu(k11, k22, k12):
    """ABRelu(0, 1): sqrt(k11 k22 - k12^2) / (2 pi) + (1 - theta / pi) / 2 k12."""
    root = math.sqrt(max(k11 * k22 - k12**2, 0.0))
    theta = math.atan2(root, k12)
    return root / (2 * math.pi) + (1 - theta / math.pi) / 2 * k12


def nt_erf(k11, k22, k12):
    """Erf(a=1, b=1, c=0): (2 / pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22)))."""
    return 2 / math.pi * math.asin(2 * k12 / math.sqrt((1 + 2 * k11) * (1 + 2 * k22)))


def nt_gelu(k11, k22, k12):
    """Gelu: nngp_ntk_fn with prod = k11 k22, prod_plus_1 = (k11 + 1)(k22 + 1)."""
    prod, prod_plus_1 = k11 * k22, (k11 + 1) * (k22 + 1)
    delta_squared = prod_plus_1 - k12**2
    delta = math.sqrt(delta_squared)
    angles = math.atan2(k12, delta)
    new = (k12**2 + prod * delta_squared) / (prod_plus_1 * delta)
    new += k12 * angles
    new /= 2 * math.pi
    return new + 0.25 * k12


def nt_gelu_diag(k):
    """Gelu's nngp_fn_diag (the variance), checked against nt_gelu(k, k, k) below."""
    root = math.sqrt(1.0 + 2.0 * k)
    new = k / ((k + 1.0) * root) + math.atan2(k, root) / 2
    return (new / math.pi + 0.25) * k


KERNELS = {"relu": (jax.nn.relu, nt_relu), "erf": (erf, nt_erf), "gelu": (_gelu, nt_gelu)}


def _nt_chain(kernel, depth, sw, sb, v, c0):
    """Dense/activation chain by the NT kernels: q and c of each Dense output."""
    k11, k12 = sw**2 * v + sb**2, sw**2 * c0 * v + sb**2
    q, c = [k11], [k12 / k11]
    for _ in range(depth - 1):
        k11, k12 = sw**2 * kernel(k11, k11, k11) + sb**2, sw**2 * kernel(k11, k11, k12) + sb**2
        q.append(k11)
        c.append(k12 / k11)
    return np.array(q), np.array(c)


def _rel(a, b):
    """Largest relative error (absolute where the reference is 0)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.where(b == 0, 1.0, np.abs(b))))


def _check_chain(name, sw, sb, depth=64, v=1.3, c0=0.2):
    fn, kernel = KERNELS[name]
    p = jaxinit.predict(fn, depth, sigma_w=sw, sigma_b=sb, input_var=v, input_corr=c0)
    q, c = _nt_chain(kernel, depth, sw, sb, v, c0)
    assert p.c is not None
    np.testing.assert_allclose(p.q, q, rtol=RTOL)
    # atol for c = 0 exactly (odd activations, no bias, orthogonal inputs): rounding only.
    np.testing.assert_allclose(p.c, c, rtol=RTOL, atol=1e-14)
    return max(_rel(p.q, q), _rel(p.c, c))


@pytest.mark.parametrize(
    ("name", "sw", "sb", "depth"),
    [("relu", 1.5, 0.2, 24), ("erf", 1.8, 0.1, 16), ("gelu", 1.3, 0.3, 16)],
)
def test_q_and_c_over_depth_equal_neural_tangents(name, sw, sb, depth):
    """Depth 64 for every activation, on a grid, is the slow test below."""
    _check_chain(name, sw, sb, depth)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_q_and_c_over_depth_equal_neural_tangents_on_a_grid(name):
    """Depth 1..64 on a (sigma_w, sigma_b, input correlation) grid. GELU stops at
    sigma_w = sqrt(2): beyond, q grows like 2^l and the reference's (k + 1)^2 - k12^2
    cancels in float64 (at q ~ 1e19 it is 0)."""
    errors = {}
    sws = (0.8, 1.0, 1.4142135623730951) + ((2.0,) if name != "gelu" else ())
    for sw in sws:
        for sb in (0.0, 0.1, 0.5):
            for c0 in (-0.5, 0.0, 0.9):
                errors[(sw, sb, c0)] = _check_chain(name, sw, sb, c0=c0)
    print(f"{name}: max relative error {max(errors.values()):.3g}")


def test_gelu_kernel_reference_is_consistent():
    """The re-typed GELU kernel's cross form at k12 = k11 is its diagonal form."""
    for k in (0.1, 1.0, 7.0):
        assert nt_gelu(k, k, k) == pytest.approx(nt_gelu_diag(k), rel=1e-14)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_unequal_variances_and_negative_correlation(name):
    fn, kernel = KERNELS[name]
    act = mf.activation(fn)
    for q1, q2, c in [(2.0, 0.5, -0.7), (0.3, 4.0, 0.95), (1.0, 1.0, 1.0), (5.0, 1.0, -1.0)]:
        s = act.apply(mf.State(q1, c, q2=q2))
        k12 = c * math.sqrt(q1 * q2)
        assert s.q == pytest.approx(kernel(q1, q1, q1), rel=RTOL)
        assert s.q2 is not None and s.c is not None
        assert s.q2 == pytest.approx(kernel(q2, q2, q2), rel=RTOL)
        assert s.c * math.sqrt(s.q * s.q2) == pytest.approx(kernel(q1, q2, k12), rel=RTOL)


def test_dense_cross_moment_and_residual_fan_in_sum():
    """Dense: q12 -> sw^2 q12 + sb^2; a residual sum of independent branches adds kernels
    (neural-tangents' FanOut / FanInSum)."""
    s = mf.dense(1.5, 0.4).apply(mf.State(2.0, 0.3, q2=0.5))
    assert s.q2 is not None
    assert (s.q, s.q2) == pytest.approx((1.5**2 * 2 + 0.16, 1.5**2 * 0.5 + 0.16), rel=1e-15)
    assert s.c == pytest.approx((1.5**2 * 0.3 + 0.16) / math.sqrt(s.q * s.q2), rel=1e-15)
    block = mf.residual(mf.compose(mf.activation("relu"), mf.dense(1.2)), alpha=0.7)
    r = block.apply(mf.State(2.0, 0.3, q2=0.5))
    assert r.q2 is not None
    k12 = 0.3 * math.sqrt(2.0 * 0.5)
    q12 = k12 + 0.49 * 1.44 * nt_relu(2.0, 0.5, k12)
    assert r.q == pytest.approx(2.0 + 0.49 * 1.44 * 1.0, rel=1e-14)
    assert r.q2 == pytest.approx(0.5 + 0.49 * 1.44 * 0.25, rel=1e-14)
    assert r.c == pytest.approx(q12 / math.sqrt(r.q * r.q2), rel=1e-12)


def nt_relu_dot(k11, k22, k12):
    """ABRelu(0, 1)'s dot_sigma, E[relu'(u) relu'(v)] = 1/2 - theta / (2 pi): the derivative
    of the kernel in k12."""
    theta = math.atan2(math.sqrt(max(k11 * k22 - k12**2, 0.0)), k12)
    return 0.5 - theta / (2 * math.pi)


def test_relu_chi_1_is_the_slope_of_the_arc_cosine_c_map():
    """C'(1) of a layer act -> dense(sw, sb): with c = k12 / k, d c_out / d c at c = 1 is
    sw^2 dot_sigma(1) k / (sw^2 K(k, k, k) + sb^2)."""
    sw, sb, depth = 1.3, 0.5, 6
    p = jaxinit.predict("relu", depth, sigma_w=sw, sigma_b=sb, input_var=2.0)
    assert p.chi_1 is not None
    for layer in range(1, depth):
        k = p.q[layer - 1]
        slope = sw**2 * nt_relu_dot(k, k, k) * k / (sw**2 * nt_relu(k, k, k) + sb**2)
        assert p.chi_1[layer] == pytest.approx(slope, rel=1e-12)
    assert p.chi_1[0] == pytest.approx(sw**2 * 2.0 / (sw**2 * 2.0 + sb**2), rel=1e-14)


def _expect(fn):
    pdf = lambda z: fn(z) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return integrate.quad(pdf, -np.inf, np.inf, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def test_chi_1_is_one_at_the_critical_sigma_w_of_tanh():
    sb = 0.3
    sw = jaxinit.critical_sigma_w("tanh", sb)
    # Independent: the fixed point of q -> sw^2 E[tanh^2] + sb^2 and sw^2 E[sech^4] there.
    q_star: float = optimize.brentq(  # pyright: ignore[reportAssignmentType]
        lambda q: sw**2 * _expect(lambda z: np.tanh(math.sqrt(q) * z) ** 2) + sb**2 - q,
        0.01,
        10.0,
        xtol=1e-15,
    )
    # sech(x)^4 = (2 e^-|x| / (1 + e^-2|x|))^4, without overflow.
    chi = sw**2 * _expect(
        lambda z: (
            (
                2
                * np.exp(-abs(math.sqrt(q_star) * z))
                / (1 + np.exp(-2 * abs(math.sqrt(q_star) * z)))
            )
            ** 4
        )
    )
    assert chi == pytest.approx(1.0, rel=1e-8)
    p = jaxinit.predict("tanh", 80, sigma_w=sw, sigma_b=sb, input_var=q_star)
    assert p.chi_1 is not None
    np.testing.assert_allclose(p.chi_1[40:], 1.0, rtol=1e-8)  # once q has converged
    # The C-map through the two-input maps has slope 1 at c = 1 (to O(eps)).
    layer = mf.compose(mf.activation("tanh"), mf.dense(sw, sb))
    eps = 1e-4
    out = layer.apply(mf.State(q_star, 1 - eps))
    assert out.c is not None
    assert (1 - out.c) / eps == pytest.approx(1.0, abs=1e-3)


def test_residual_relu_net_with_inverse_sqrt_depth_branches():
    """He-initialized ReLU branches x + L^-1/2 W relu(x): q_L / q_0 = (1 + 1/L)^L."""
    for depth in (4, 64):
        block = mf.residual(mf.compose(mf.activation("relu"), mf.dense(2**0.5)), alpha=depth**-0.5)
        q = mf.compose(*[block] * depth).apply(mf.State(1.7)).q
        assert q / 1.7 == pytest.approx((1 + 1 / depth) ** depth, rel=1e-12)
    assert round(q / 1.7, 4) == 2.6973


def test_pre_norm_growth_is_linear_with_slope_alpha_squared_v():
    alpha, sw, sb = 0.3, 1.2, 0.1
    branch = mf.compose(mf.layer_norm(), mf.dense(sw, sb), mf.activation("tanh"), mf.dense(0.9))
    steps = mf.trace(mf.compose(*[mf.residual(branch, alpha)] * 12), mf.State(2.5))
    # v: the branch's output second moment for a unit input, by scipy.
    v = 0.81 * _expect(lambda z: np.tanh(math.sqrt(sw**2 + sb**2) * z) ** 2)
    q = np.array([s.state.q for s in steps])
    np.testing.assert_allclose(q, 2.5 + alpha**2 * v * np.arange(1, 13), rtol=1e-10)


def test_pre_ln_transformer_grows_linearly_post_ln_stays_at_one():
    tokens, alpha, sw = 16, 0.5, 2**0.5
    pre = mf.transformer_block(tokens, activation="relu", sigma_w=sw, alpha=alpha)
    post = mf.transformer_block(tokens, norm="post", activation="relu", sigma_w=sw)
    # Per block: attention adds alpha^2 sw^4 / T (uniform attention, uncorrelated tokens),
    # the MLP alpha^2 sw^2 (sw^2 / 2): both branches see a unit input.
    slope = alpha**2 * (sw**4 / tokens + sw**4 / 2)
    q = [s.state.q for s in mf.trace(mf.compose(*[pre] * 8), 1.0)][1::2]
    np.testing.assert_allclose(q, 1.0 + slope * np.arange(1, 9), rtol=1e-12)
    q = [s.state.q for s in mf.trace(mf.compose(*[post] * 4), 3.0)]
    np.testing.assert_allclose(q[1::2], 1.0, rtol=1e-12)


def test_bn_resnet_skip_variance_grows_like_l_plus_one():
    """De & Smith 2020: x_{l+1} = x_l + W relu(BN(x_l)) with He W gives Var(x_l) = l + 1."""
    block = mf.residual(mf.compose(mf.batch_norm(), mf.activation("relu"), mf.dense(2**0.5)))
    steps = mf.trace(mf.compose(*[block] * 20), 1.0)
    np.testing.assert_allclose([s.state.q for s in steps], np.arange(2, 22), rtol=1e-12)


def test_norms_keep_the_cosine():
    x = mf.State(4.0, 0.5, mean=1.0, q2=9.0, mean2=-1.0)
    s = mf.layer_norm().apply(x)
    centered = (0.5 * 6.0 + 1.0) / math.sqrt((4.0 - 1.0) * (9.0 - 1.0))
    assert (s.q, s.q2, s.mean, s.mean2) == (1.0, 1.0, 0.0, 0.0)
    assert s.c == pytest.approx(centered, rel=1e-15)
    r = mf.rms_norm().apply(x)
    assert (r.q, r.q2, r.c) == pytest.approx((1.0, 1.0, 0.5), rel=1e-15)
    assert (r.mean, r.mean2) == pytest.approx((0.5, -1 / 3), rel=1e-15)
    assert mf.layer_norm(1e-6).apply(mf.State(1.0)).q == pytest.approx(1 / (1 + 1e-6), rel=1e-15)


def test_attention_and_pooling_maps_match_a_random_network():
    """Uniform attention (value/output projections, mean over T tokens) and 2-window average
    pooling of correlated positions, on random wide weights; one number per seed."""
    rng = np.random.default_rng(0)
    n, tokens, c, sv, so = 128, 6, 0.4, 1.3, 0.8
    cov = np.full((tokens, tokens), c) + (1 - c) * np.eye(tokens)
    chol = np.linalg.cholesky(cov)
    q_att, q_pool = [], []
    for _ in range(30):
        x = chol @ rng.standard_normal((tokens, n))  # tokens with pairwise correlation c
        wv, wo = rng.standard_normal((2, n, n)) / math.sqrt(n)
        y = (x.mean(axis=0) @ (sv * wv)) @ (so * wo)
        q_att.append(np.mean(y**2))
        q_pool.append(np.mean(x[:2].mean(axis=0) ** 2))
    want_att = (sv * so) ** 2 * (1 + (tokens - 1) * c) / tokens
    s = mf.attention(tokens, sv, so).apply(mf.State(1.0, c))
    assert s.q == pytest.approx(want_att, rel=1e-14) and s.c == 1.0
    _assert_close(q_att, s.q)
    p = mf.avg_pool(2, spatial_corr=c).apply(mf.State(1.0))
    _assert_close(q_pool, p.q)


def _assert_close(samples, target):
    assert_mean(samples, target)


def test_batch_norm_decorrelates_an_exchangeable_batch():
    rng = np.random.default_rng(1)
    batch, n, c = 5, 4096, 0.7
    cov = np.full((batch, batch), c) + (1 - c) * np.eye(batch)
    x = np.linalg.cholesky(cov) @ rng.standard_normal((batch, n))
    y = (x - x.mean(axis=0)) / x.std(axis=0)
    cos = np.mean(y[0] * y[1]) / math.sqrt(np.mean(y[0] ** 2) * np.mean(y[1] ** 2))
    s = mf.batch_norm(batch).apply(mf.State(1.0, c))
    assert s.c == pytest.approx(-1 / (batch - 1), rel=1e-15)
    assert abs(cos - s.c) < 5 / math.sqrt(n)  # the empirical pairwise mean is exactly -1/(B-1)
    assert mf.batch_norm().apply(mf.State(1.0, c)).c == 0.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: mf.batch_norm(1), r"batch_norm: batch_size=1 must be an int >= 2 or None"),
        (lambda: mf.avg_pool(0), r"avg_pool: window=0 must be an int >= 1"),
        (lambda: mf.avg_pool(3, 1.5), r"avg_pool: spatial_corr=1.5 must be in \[-0.5, 1\]"),
        (lambda: mf.attention(0), r"attention: tokens=0 must be an int >= 1"),
        (lambda: mf.transformer_block(4, norm="mid"), r"norm='mid' is not supported"),
        (lambda: mf.residual(mf.dense(1.0), skip=math.nan), r"skip=nan must be a finite"),
        (lambda: jaxinit.predict("relu", 2, input_corr=1.5), r"input_corr=1.5 must be in"),
        (lambda: mf.layer_norm(-1.0), r"layer_norm: epsilon=-1.0 must be a finite number"),
    ],
)
def test_errors_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_predicted_correlation_matches_a_wide_random_network(name="relu", sb=0.3):
    """Per seed, the cosine of two inputs' pre-activations after three Dense layers of width
    256 (NumPy weights and biases), against predict's c. The inputs have second moment 1 and
    cosine 0.3 exactly."""
    fn = {"relu": lambda x: np.maximum(x, 0), "erf": special.erf}[name]
    n, sw, c0 = 256, 1.4, 0.3
    rng = np.random.default_rng(2)
    a, b = np.linalg.qr(rng.standard_normal((n, 2)))[0].T * math.sqrt(n)
    x = np.stack([a, c0 * a + math.sqrt(1 - c0**2) * b])
    cos = []
    for _ in range(16):
        h = x
        for layer in range(3):
            w = rng.standard_normal((n, n)) * sw / math.sqrt(n)
            h = (fn(h) if layer else h) @ w + sb * rng.standard_normal(n)
        cos.append(np.sum(h[0] * h[1]) / math.sqrt(np.sum(h[0] ** 2) * np.sum(h[1] ** 2)))
    act = {"relu": "relu", "erf": erf}[name]
    p = jaxinit.predict(act, 3, sigma_w=sw, sigma_b=sb, input_var=1.0, input_corr=c0)
    assert p.c is not None
    assert_mean(cos, float(p.c[-1]), f"cosine after 3 layers ({name})")


@pytest.mark.slow
def test_residual_and_pre_ln_maps_inside_the_flax_seed_band():
    """A linen network of two residual ReLU blocks, two pre-LN blocks and a head, width 1024,
    256 seeds: each Dense output's predicted std lies inside layer_stats' 95% seed band."""
    import flax.linen as nn

    width, alpha = 1024, 0.5
    he, lecun = jaxinit.he_normal(), jaxinit.lecun_normal()

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            for norm in (False, False, True, True):
                h = nn.LayerNorm(epsilon=1e-6)(x) if norm else x
                h = nn.Dense(width, kernel_init=he)(h)
                x = x + alpha * nn.Dense(width, kernel_init=lecun)(nn.relu(h))
            return nn.Dense(width, kernel_init=lecun)(x)

    x = jax.random.normal(jax.random.key(3), (16, width))
    st = jaxinit.layer_stats(Net(), x, seeds=256, key=1, grads=False)
    sw1, sw2 = mf.sigma_w(he, width, width), mf.sigma_w(lecun, width, width)
    assert sw1 == pytest.approx(2**0.5) and sw2 == pytest.approx(1.0)
    maps, blocks = [], []
    for norm in (False, False, True, True):
        first = (mf.layer_norm(1e-6),) if norm else ()
        branch = mf.compose(*first, mf.dense(sw1), mf.activation("relu"), mf.dense(sw2))
        maps.append(mf.residual(branch, alpha))
        blocks.append(branch)
    # Predicted Dense outputs: each block's two Dense layers (from the block's input), the head.
    state, want = mf.State(float(jnp_mean_sq(x))), []
    for block, branch in zip(maps, blocks, strict=True):
        steps = mf.trace(branch, state)
        want += [s.state.q for s in steps if isinstance(s.map, mf.DenseMap)]
        state = block.apply(state)
    want.append(mf.dense(sw2).apply(state).q)
    band = st.summary()["std"]
    pred = np.sqrt(want)
    assert len(st.names) == len(pred)
    assert np.all((band.lo <= pred) & (pred <= band.hi)), (band, pred)


def jnp_mean_sq(x):
    return np.mean(np.asarray(x, np.float64) ** 2)
