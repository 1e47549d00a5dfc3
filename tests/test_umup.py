"""jaxinit.recipes.umup against unit-scaling's rules and closed forms: the multipliers Flax
layers apply, unit scale at initialization (mean-field variances by scipy.integrate.quad), the
τ-weighted residual formulas, the learning-rate table of ``unit_scaling/tests/test_optim.py``,
Adam's first step, and a coordinate check of u-μP against SP."""

from __future__ import annotations

import functools
import itertools
import math
from typing import cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.special
from _stats import assert_mean, assert_var
from flax import nnx

import jaxinit
from jaxinit.recipes import mup, umup

F32 = float(jnp.finfo(jnp.float32).eps)


def normal(seed, shape, std=1.0):
    """``N(0, std^2)`` test data and weights from NumPy, float32: JAX's samplers (and Flax's
    init through them) take seconds to compile per shape on CPU."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32) * np.float32(std)


def _stacked_params(shapes, seeds, seed, std):
    """Parameters of ``seeds`` networks (a leading axis) with the structure of ``shapes``:
    kernels ``N(0, std(kernel_shape)^2)``, biases zero."""
    return {
        layer: {
            "kernel": normal((seed, i), (seeds, *d["kernel"].shape), std(d["kernel"].shape)),
            "bias": np.zeros((seeds, *d["bias"].shape), np.float32),
        }
        for i, (layer, d) in enumerate(shapes.items())
    }


def _shapes(module, *args):
    return jax.eval_shape(module.init, jax.random.key(0), *args)


# ------------------------------------------------------------------------------------------
# (a) the multiplier each Flax layer gets


def _closed(role, fan_in):
    return 1 / fan_in if role == "output" else 1 / math.sqrt(fan_in)


def test_flax_layers_apply_the_closed_form_multiplier():
    """Each layer with ``umup.dot_general(role)`` / ``umup.conv_general_dilated(role)`` gives
    the plain contraction (einsum, ``lax.conv_general_dilated``) of the same kernel times
    ``1/sqrt(fan_in)`` (input, hidden) or ``1/fan_in`` (output): linen Dense, DenseGeneral
    over two axes (fan-in 6 * 10) and Conv (window times input channels per group); NNX
    Linear, LinearGeneral and Conv. All in one compiled program."""
    x, img = normal(0, (4, 6, 10)), normal(1, (2, 8, 8, 6))
    k_dense, k_general = normal(2, (10, 7)), normal(3, (6, 10, 3, 5))
    k_conv = {g: normal(4 + g, (3, 3, 6 // g, 12)) for g in (1, 3)}

    def conv_ref(k, g):
        return jax.lax.conv_general_dilated(
            img, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=g,
        )  # fmt: skip

    @jax.jit
    def run(x, img, k_dense, k_general, k_conv):
        out = {}
        for role in umup.LAYER_ROLES:  # every role on Dense, one per other layer
            dense = nn.Dense(7, use_bias=False, dot_general=umup.dot_general(role))
            out[role, "Dense", 10] = dense.apply({"params": {"kernel": k_dense}}, x)
        dg = umup.dot_general
        general = nn.DenseGeneral((3, 5), axis=(-2, -1), use_bias=False, dot_general=dg("output"))
        out["output", "DenseGeneral", 60] = general.apply({"params": {"kernel": k_general}}, x)
        lin = nnx.Linear(10, 7, use_bias=False, dot_general=dg("hidden"), rngs=nnx.Rngs(0))
        lin.kernel[...] = k_dense
        out["hidden", "nnx.Linear", 10] = lin(x)
        lg = nnx.LinearGeneral(
            (6, 10), (3, 5), axis=(-2, -1), use_bias=False, dot_general=dg("input"),
            rngs=nnx.Rngs(0),
        )  # fmt: skip
        lg.kernel[...] = k_general
        out["input", "nnx.LinearGeneral", 60] = lg(x)
        convs: list[tuple[int, umup.LayerRole, umup.LayerRole]] = [
            (1, "hidden", "output"),
            (3, "output", "hidden"),
        ]
        for g, role, nnx_role in convs:
            cg = umup.conv_general_dilated
            conv = nn.Conv(12, (3, 3), feature_group_count=g, use_bias=False,
                           conv_general_dilated=cg(role))  # fmt: skip
            out[role, f"Conv/{g}", 54 // g] = conv.apply({"params": {"kernel": k_conv[g]}}, img)
            nc = nnx.Conv(6, 12, (3, 3), feature_group_count=g, use_bias=False,
                          conv_general_dilated=cg(nnx_role), rngs=nnx.Rngs(0))  # fmt: skip
            nc.kernel[...] = k_conv[g]
            out[nnx_role, f"nnx.Conv/{g}", 54 // g] = nc(img)
        refs = {
            "Dense": x @ k_dense,
            "DenseGeneral": jnp.einsum("bij,ijkl->bkl", x, k_general),
            **{f"Conv/{g}": conv_ref(k_conv[g], g) for g in (1, 3)},
        }
        return out, refs

    out, refs = run(x, img, k_dense, k_general, k_conv)
    assert len(out) == 10
    for (role, layer, fan_in), y in out.items():
        ref = np.asarray(refs[layer.removeprefix("nnx.").replace("Linear", "Dense")], np.float64)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(
            y, ref * _closed(role, fan_in), rtol=10 * F32, atol=10 * F32 * scale,
            err_msg=f"{layer} {role}",
        )  # fmt: skip


def test_dot_general_keeps_low_precision():
    x = jnp.ones((2, 16), jnp.bfloat16)
    kernel = normal(0, (16, 4))
    dense = nn.Dense(4, dtype=jnp.bfloat16, use_bias=False, dot_general=umup.dot_general("hidden"))
    y = jax.jit(dense.apply)({"params": {"kernel": kernel}}, x)
    assert y.dtype == jnp.bfloat16
    want = np.asarray(x, np.float64) @ np.asarray(kernel.astype(jnp.bfloat16), np.float64) / 4
    bf16 = float(jnp.finfo(jnp.bfloat16).eps)
    np.testing.assert_allclose(y.astype(np.float32), want, rtol=4 * bf16, atol=4 * bf16)


# ------------------------------------------------------------------------------------------
# (b) unit scale at initialization, against the mean-field recursion


def _gaussian_mean(f) -> float:
    """E[f(z)], z ~ N(0, 1), by quad split at 0."""
    pieces = (
        scipy.integrate.quad(
            lambda z: f(z) * math.exp(-0.5 * z * z), a, b, epsabs=0.0, epsrel=1e-12, limit=200
        )[0]
        for a, b in ((-np.inf, 0.0), (0.0, np.inf))
    )
    return sum(pieces) / math.sqrt(2 * math.pi)


def _library_scale(mult: float) -> float:
    """unit_scaling.functional.gelu/silu's output scale (an empirical model of 1/std)."""
    a = 1 / (1 + 0.25 / mult**2)
    return 2 ** (1 - a) * math.sqrt(2 / (1 - 1 / math.pi)) ** a


def _gelu_ref(x, mult=1.0):  # float64, independent of JAX
    return _library_scale(mult) * x * scipy.special.ndtr(mult * x)


def _silu_ref(x, mult=1.0):
    return _library_scale(mult) * x * scipy.special.expit(mult * x)


@pytest.mark.parametrize(("fn", "ref"), [(umup.gelu, _gelu_ref), (umup.silu, _silu_ref)])
def test_unit_scaled_activations(fn, ref):
    """The library's formula pointwise, and std 1 on N(0, 1) in both limits of ``mult``
    (``x`` as mult -> 0, the unit-std ReLU as mult -> inf), where its model is exact."""
    grid = np.linspace(-6, 6, 1201)
    for mult in (0.25, 1.0, 4.0):
        got = np.asarray(fn(jnp.asarray(grid, jnp.float32), mult), np.float64)
        np.testing.assert_allclose(got, ref(grid, mult), rtol=20 * F32, atol=20 * F32)
    for mult in (1e-4, 1e4):
        m1 = _gaussian_mean(lambda z, m=mult: ref(z, m))
        m2 = _gaussian_mean(lambda z, m=mult: ref(z, m) ** 2)
        assert abs(math.sqrt(m2 - m1 * m1) - 1) < 1e-3, (mult, m2 - m1 * m1)


class UnitMLP(nn.Module):
    """Four u-μP Dense layers, each followed by unit-scaled GELU; returns every layer's output
    and every activation's."""

    width: int

    @nn.compact
    def __call__(self, x):
        outs = []
        for i in range(4):
            role = "input" if i == 0 else "hidden"
            x = nn.Dense(self.width, kernel_init=umup.init(), dot_general=umup.dot_general(role))(x)
            x2 = umup.gelu(x)
            outs += [x, x2]
            x = x2
        return outs


@pytest.mark.parametrize("width", [256, 1024])
def test_depth_4_mlp_is_unit_scaled_at_init(width):
    """On unit-variance Gaussian input, each layer's mean square equals the mean-field value:
    a Dense output has the mean square of its input (1 for the first), an activation
    ``E[gelu_u(sqrt(q) z)^2]`` of its input's ``q`` (by quad). Given the previous layer,
    the first is exact in expectation; the second is biased by O(1/width), far below the
    tolerance, which comes from the spread over 16 seeds (networks and inputs).

    Unit-scaled GELU has unit *std* (the library's model), but a mean of 0.50, so its mean
    square is 1.33 and the next Dense's output variance too: the rms grows through depth,
    1, 1.15, 1.35, 1.62 for the four Dense outputs by the recursion."""
    seeds, batch, d_in = 16, 64, 128
    model = UnitMLP(width)
    x = normal(width, (seeds, batch, d_in))
    params = _stacked_params(_shapes(model, x[0])["params"], seeds, width, lambda _: 1.0)

    def one(p, x):
        outs = cast(list[jax.Array], model.apply({"params": p}, x))
        return jnp.stack([jnp.mean(o**2) for o in outs])

    ms = np.asarray(jax.jit(jax.vmap(one))(params, x))
    q, targets = 1.0, []
    for _ in range(4):
        post = _gaussian_mean(lambda z, q=q: _gelu_ref(math.sqrt(q) * z) ** 2)
        targets += [q, post]
        q = post
    for j, target in enumerate(targets):
        what = f"width {width}, {'Dense' if j % 2 == 0 else 'gelu'} {j // 2}: mean square"
        assert_mean(ms[:, j], target, what)


# ------------------------------------------------------------------------------------------
# (c) τ-weighted residuals


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0, 3.0])
def test_residual_add_is_the_closed_form_with_unit_variance(tau):
    r, s = jnp.asarray(normal(0, (2, 200_000)))
    branch, skip = umup.residual_split(r, tau)
    np.testing.assert_array_equal(branch, r)  # the split is the identity going forward
    np.testing.assert_array_equal(skip, r)
    out = umup.residual_add(r, s, tau)
    expected = (tau * np.asarray(r, np.float64) + np.asarray(s, np.float64)) / math.sqrt(
        1 + tau * tau
    )
    np.testing.assert_allclose(out, expected, rtol=10 * F32, atol=10 * F32)
    assert_var(out, 1.0, f"Var[residual_add(r, s, tau={tau})]")


@pytest.mark.parametrize("tau", [0.3, 1.0, 3.0])
def test_residual_backward_scales_are_the_library_s(tau):
    """f(x, a) = residual_add(a * branch, skip) of residual_split(x): d/dx is exact,
    ``(tau a + 1) / sqrt(1 + tau^2)``; the branch's parameter gets the unit-scaled
    gradient ``x``, the true ``tau x / sqrt(1 + tau^2)`` times ``sqrt(1 + tau^2) / tau``."""

    def f(x, a):
        branch, skip = umup.residual_split(x, tau)
        return umup.residual_add(a * branch, skip, tau)

    x, a = 0.7, 1.9
    value, (dx, da) = jax.value_and_grad(f, argnums=(0, 1))(x, a)
    d = math.sqrt(1 + tau * tau)
    np.testing.assert_allclose(float(dx), (tau * a + 1) / d, rtol=10 * F32)
    np.testing.assert_allclose(float(da), x, rtol=10 * F32)
    for v in (value, f(x, a)):  # under differentiation and without
        np.testing.assert_allclose(float(v), (tau * a * x + x) / d, rtol=10 * F32)


@pytest.mark.parametrize(("mult", "ratio"), [(1.0, 1.0), (0.5, 2.0), (2.0, 0.7)])
def test_residual_tau_contributions(mult, ratio):
    """Following the variance contributions through ``layers`` unit-preserving adds: every
    attention branch contributes alike, every MLP branch alike, attention : MLP totals are
    ``ratio^2``, and their mean is ``mult^2`` times the embedding's."""
    layers = 8
    contrib = [1.0]  # the embedding
    for i in range(layers):
        t2 = umup.residual_tau(i, layers, residual_mult=mult, residual_attn_ratio=ratio) ** 2
        contrib = [c / (1 + t2) for c in contrib] + [t2 / (1 + t2)]
    emb, attn, mlp = contrib[0], contrib[1::2], contrib[2::2]
    np.testing.assert_allclose(sum(contrib), 1.0, rtol=1e-12)
    np.testing.assert_allclose(attn, attn[0], rtol=1e-12)
    np.testing.assert_allclose(mlp, mlp[0], rtol=1e-12)
    np.testing.assert_allclose(sum(attn) / sum(mlp), ratio**2, rtol=1e-12)
    np.testing.assert_allclose((sum(attn) + sum(mlp)) / 2 / emb, mult**2, rtol=1e-12)


# ------------------------------------------------------------------------------------------
# (d) learning-rate and init tables


class Stack(nn.Module):
    """``test_scaled_parameters`` of unit_scaling/tests/test_optim.py: Embedding(2^8, d),
    three Linear(d, d, bias) in a DepthSequential, a readout Linear(d, 2^10) without bias."""

    width: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(2**8, self.width, name="embed")(tokens)
        for i in range(3):
            x = nn.Dense(self.width, name=f"stack_{i}")(x)
        return nn.Dense(2**10, use_bias=False, name="readout")(x)


def test_lr_factors_match_the_library_test_table():
    """The library's test expects, for d = 16: embedding 2^-2, stack weights 2^-2 / sqrt(3),
    stack biases 1 / sqrt(3), the readout 1. Here a bias also carries its kernel's forward
    multiplier 2^-2 (the library multiplies the bias by it in the forward pass, Flax does
    not; see the module docstring)."""
    tokens = jnp.zeros((1, 4), jnp.int32)
    roles = mup.roles(_shapes(Stack(16), tokens), _shapes(Stack(32), tokens))
    got = umup.lr_factors(roles, "adam", depth={"stack_*/*": 3})
    sqrt_d = math.sqrt(3)
    want = {"embed/embedding": 2**-2, "readout/kernel": 1.0}
    for i in range(3):
        want[f"stack_{i}/kernel"] = 2**-2 / sqrt_d
        want[f"stack_{i}/bias"] = 2**-2 / sqrt_d
    assert got.keys() == want.keys()
    for p, w in want.items():
        assert got[p] == pytest.approx(w, rel=1e-12), p
    assert umup.lr_factors(roles, "adamw", depth={"stack_*/*": 3}) == got
    assert umup.init_std(roles) == {p: 0.0 if p.endswith("bias") else 1.0 for p in want}


class MLP(nn.Module):
    """A u-μP MLP (``u``: unit-scaled ops; ``multipliers``: through ``dot_general``, else
    folded into the weights), or SP's (LeCun normal kernels, plain GELU)."""

    width: int
    u: bool = True
    multipliers: bool = True

    @nn.compact
    def __call__(self, x):
        def dense(features, role):
            if not self.u:
                return nn.Dense(features, kernel_init=jaxinit.lecun_normal())
            if not self.multipliers:
                return nn.Dense(features)
            return nn.Dense(features, kernel_init=umup.init(), dot_general=umup.dot_general(role))

        act = umup.gelu if self.u else (lambda h: jax.nn.gelu(h, approximate=False))
        h = act(dense(self.width, "input")(x))  # mup's test MLP: input, hidden, readout
        h = act(dense(self.width, "hidden")(h))
        return dense(10, "output")(h)


def _mlp_roles(width, u=True, d_in=64):
    x = jnp.ones((1, d_in))
    shapes = [_shapes(MLP(w, u), x) for w in (width // 2, width)]
    return mup.roles(shapes[0], shapes[1], shapes[1])


def test_lr_factors_of_a_small_mlp():
    roles = _mlp_roles(256)
    assert [roles[p].role for p in roles] == [
        "vector", "input", "vector", "hidden", "fixed", "output",
    ]  # fmt: skip
    want = {
        "Dense_0/bias": 1 / 8,  # the input kernel's multiplier 1/sqrt(64)
        "Dense_0/kernel": 1 / 8,  # 1/sqrt(fan_in = 64)
        "Dense_1/bias": 1 / 16,
        "Dense_1/kernel": 1 / 16,  # 1/sqrt(256)
        "Dense_2/bias": 1 / 256,  # the readout's multiplier 1/fan_in
        "Dense_2/kernel": 1.0,
    }
    assert umup.lr_factors(roles) == pytest.approx(want, rel=1e-12)
    # the multipliers folded into the weights: kernels' factors and stds times the multiplier
    mult = {"Dense_0": 1 / 8, "Dense_1": 1 / 16, "Dense_2": 1 / 256}
    absorbed = {p: f * mult[p[:7]] if p.endswith("kernel") else f for p, f in want.items()}
    assert umup.lr_factors(roles, absorbed=True) == pytest.approx(absorbed, rel=1e-12)
    stds = {p: mult[p[:7]] if p.endswith("kernel") else 0.0 for p in want}
    assert umup.init_std(roles, absorbed=True) == pytest.approx(stds, rel=1e-12)
    assert umup.init_std(roles) == {p: 1.0 if p.endswith("kernel") else 0.0 for p in want}


def _leaf(tree, path):
    for k in path:
        tree = tree[k.key]
    return np.asarray(tree, np.float64)


def test_optimizer_first_step_is_adam_sign_times_factor():
    """Adam's first step is ``g / (|g| + eps)``; each parameter moves by ``lr * factor`` times
    it, and weight decay enters as unit_scaling's independent decay. optax computes ``1 - b2``
    in float32, whose rounding error is float32's eps over ``1 - b2``: the tolerance."""
    roles = _mlp_roles(64)
    shapes = _shapes(MLP(64), jnp.ones((1, 64)))["params"]
    params = jax.tree.map(lambda s: normal(0, s.shape), shapes)
    grads = jax.tree.map(lambda s: normal(1, s.shape), shapes)
    factors = umup.lr_factors(roles)
    lr, wd, eps = 0.5, 0.1, 1e-8
    cases = list(itertools.product(("adam", "adamw"), (0.0, wd)))

    def path_of(path):
        return "/".join(k.key for k in path)

    @jax.jit
    def updates(params, grads):
        out = []
        for kind, weight_decay in cases:
            opt = umup.optimizer(roles, params, kind, learning_rate=lr, weight_decay=weight_decay)
            out.append(opt.update(grads, opt.init(params), params)[0])
        return out

    def adam_dir(g):
        return g / (np.abs(g) + eps)

    def expect(kind, weight_decay):
        def one(path, p, g):
            p, g, f = np.asarray(p, np.float64), np.asarray(g, np.float64), factors[path_of(path)]
            if kind == "adam":
                return -lr * f * adam_dir(g + weight_decay / (lr * f) * p)
            return -lr * f * adam_dir(g) - weight_decay * p

        return jax.tree_util.tree_map_with_path(one, params, grads)

    rtol = 10 * F32 / (1 - 0.999)
    for (kind, weight_decay), got in zip(cases, updates(params, grads), strict=True):
        want = expect(kind, weight_decay)
        for path, g in jax.tree_util.tree_leaves_with_path(got):
            f, p = factors[path_of(path)], np.abs(_leaf(params, path))
            w = _leaf(want, path)
            # the two terms of an AdamW update can cancel: relative to their sizes
            tol = rtol * (lr * f + weight_decay * p)
            assert np.all(np.abs(np.asarray(g, np.float64) - w) <= tol), (kind, path_of(path))


def test_bias_learning_rate_reproduces_the_library_bias_multiplier():
    """unit_scaling.functional.linear computes ``(x W + b) / sqrt(fan_in)`` and trains ``b``
    at Adam factor 1; a Flax Dense with :func:`umup.dot_general` adds ``b`` after the
    multiplier and :func:`umup.lr_factors` gives it ``1 / sqrt(fan_in)``. Three Adam steps
    give the same outputs (Adam ignores the gradient's scale; eps=0 removes its one trace)."""
    x, target = normal(0, (16, 64)), normal(1, (16, 32))
    dense = nn.Dense(32, kernel_init=umup.init(), dot_general=umup.dot_general("input"))
    params = {"kernel": normal(2, (64, 32)), "bias": np.zeros(32, np.float32)}
    roles = mup.roles(_shapes(nn.Dense(32), x), _shapes(nn.Dense(48), x), _shapes(dense, x))
    ours = umup.optimizer(roles, params, learning_rate=0.1, eps=0.0)

    def library_forward(p):
        return (x @ p["kernel"] + p["bias"][None]) / 8

    factors = {"kernel": 1 / 8, "bias": 1.0}  # lr_scale_func_adam: weight, bias

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def train(forward, opt, p, scale):
        state = opt.init(p)
        for _ in range(3):
            g = jax.grad(lambda p: jnp.mean((forward(p) - target) ** 2))(p)
            u, state = opt.update(g, state, p)
            u = jax.tree.map(lambda u, s: u * s, u, scale)
            p = optax.apply_updates(p, u)
        return forward(p)

    def our_forward(p):
        return dense.apply({"params": p}, x)

    got = train(our_forward, ours, params, {"kernel": 1.0, "bias": 1.0})
    want = train(library_forward, optax.adam(0.1, eps=0.0), params, factors)
    np.testing.assert_allclose(got, want, rtol=10 * F32, atol=10 * F32)


def test_absorbed_multipliers_train_alike():
    """abc-symmetry: the MLP with ``dot_general`` multipliers and the plain MLP whose kernels
    are those weights times the multipliers, trained with ``absorbed=True``, follow one
    trajectory under Adam with coupled decay, whose rate then scales by the multiplier squared
    (``eps`` ~ 0, its one trace; AdamW's decoupled decay is the same in both forms).
    With power-of-two multipliers (1/8, 1/8, 1/64) every product is exact in float32 too."""
    x, y = normal(0, (32, 64)), np.arange(32) % 10
    roles = _mlp_roles(64)
    shapes = _shapes(MLP(64), x)["params"]
    params = jax.tree.map(lambda s: normal(len(s.shape), s.shape), shapes)
    stds = umup.init_std(roles, absorbed=True)
    folded = {m: {k: v * stds[f"{m}/{k}"] if v.ndim == 2 else v for k, v in d.items()}
              for m, d in params.items()}  # fmt: skip

    def forward(model, p):
        return model.apply({"params": p}, x)

    def loss(model, p):
        return umup.softmax_cross_entropy(forward(model, p), y)

    @jax.jit
    def train(params, folded):
        out = []
        for multipliers, p in ((True, params), (False, folded)):
            model = MLP(64, multipliers=multipliers)
            opt = umup.optimizer(
                roles, p, "adam", learning_rate=0.5, weight_decay=0.1, absorbed=not multipliers,
                eps=1e-30,
            )  # fmt: skip

            def step(carry, _, model=model, opt=opt):
                p, state = carry
                u, state = opt.update(jax.grad(functools.partial(loss, model))(p), state, p)
                return (optax.apply_updates(p, u), state), None

            trained = jax.lax.scan(step, (p, opt.init(p)), None, length=3)[0][0]
            out.append(forward(model, trained))
        return out

    with_multipliers, folded_in = train(params, folded)
    np.testing.assert_allclose(folded_in, with_multipliers, rtol=10 * F32, atol=10 * F32)


# ------------------------------------------------------------------------------------------
# unit-scaled cross-entropy


def test_softmax_cross_entropy_value_and_unit_scaled_gradient():
    logits, labels, mult = normal(0, (8, 5)), np.arange(8) % 5, 2.0

    @jax.jit
    def run(logits):
        def loss(z, m):
            return umup.softmax_cross_entropy(z, labels, mult=m)

        flat = jax.grad(loss)(jnp.zeros_like(logits), 1.0)
        return loss(logits, mult), jax.grad(loss)(logits, mult), flat

    value, grad, flat = run(logits)
    z = mult * np.asarray(logits, np.float64)
    logp = scipy.special.log_softmax(z, axis=-1)
    np.testing.assert_allclose(value, -logp[np.arange(8), labels].mean(), rtol=10 * F32)
    want = 5 / math.sqrt(4) * (np.exp(logp) - np.eye(5)[labels])
    np.testing.assert_allclose(grad, want, rtol=50 * F32, atol=50 * F32)
    # at uniform logits each row's mean square is exactly 1
    np.testing.assert_allclose(np.mean(np.asarray(flat) ** 2, axis=-1), 1.0, rtol=10 * F32)


# ------------------------------------------------------------------------------------------
# (e) coordinate check: u-μP against SP, Adam, widths 256 and 1024

WIDTHS, STEPS = (256, 1024), 3
UMUP = dict(seeds=16, lr=0.5)
SP = dict(seeds=4, lr=1e-3)  # the Adam rate of test_mup's coordinate check


def _coords(width, u, digits, seeds, lr):
    """Mean |x| of each Dense output, averaged over ``seeds`` networks: at initialization
    (row 0) and after each of STEPS Adam steps (rows 1..STEPS)."""
    x, y = digits
    model = MLP(width, u)
    roles = _mlp_roles(width, u, x.shape[-1])

    def sp_loss(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss = umup.softmax_cross_entropy if u else sp_loss

    def loss_and_coords(p):
        z, state = model.apply(
            {"params": p}, x, capture_intermediates=lambda m, _: isinstance(m, nn.Dense)
        )
        inter = state["intermediates"]
        outs = [cast(jax.Array, inter[f"Dense_{i}"]["__call__"][0]) for i in range(3)]
        coords = [jnp.abs(o).mean() for o in outs]
        return loss(z, y), jnp.stack(coords)

    def run(p):
        # u-μP's per-parameter rates; SP: one rate for every parameter
        opt = umup.optimizer(roles, p, learning_rate=lr) if u else optax.adam(lr)

        def step(carry, _):  # measure, then update: the last update is not measured
            p, state = carry
            (_, coords), g = jax.value_and_grad(loss_and_coords, has_aux=True)(p)
            updates, state = opt.update(g, state, p)
            return (optax.apply_updates(p, updates), state), coords

        return jax.lax.scan(step, (p, opt.init(p)), None, length=STEPS + 1)[1]

    # u-μP: N(0, 1) kernels (unit_scaling's Linear); SP: LeCun normal, N(0, 1/fan_in)
    shapes = _shapes(model, x)["params"]
    params = _stacked_params(shapes, seeds, width, lambda s: 1.0 if u else s[0] ** -0.5)
    per_seed = jax.jit(jax.vmap(run))(params)
    return np.asarray(per_seed).mean(axis=0)  # (STEPS + 1, layers)


@pytest.fixture(scope="module")
def digits():
    d = jaxinit.data.digits()
    x = jnp.asarray(d.x[:32].reshape(32, -1), jnp.float32)
    return (x - x.mean()) / x.std(), jnp.asarray(d.y[:32])


@pytest.mark.slow  # 18 s: four trainings; the unit-scaled init is tested by default
def test_coord_check_umup_holds_and_sp_does_not(digits):
    """The criterion of mup's CoordCheckCase (tests/test_mup.py): each layer's mean |x| ratio
    between widths 1024 and 256 lies in (1/1.2, 1.2) after each of 3 Adam steps under u-μP.
    At initialization the hidden layers are unit-scaled, but the readout's output, whose
    multiplier is 1/fan_in on N(0, 1) weights, shrinks like 1/sqrt(width): ratio 1/2 in
    closed form, held to the same relative band. Under SP (Flax's default Dense, one Adam rate
    for all, 1e-3) the readout leaves the band by step 2."""
    bounds = (1 / 1.2, 1.2)
    u = _coords(WIDTHS[1], True, digits, **UMUP) / _coords(WIDTHS[0], True, digits, **UMUP)
    for t, layer in itertools.product(range(STEPS + 1), range(3)):
        want = 0.5 if (t, layer) == (0, 2) else 1.0
        lo, hi = want * bounds[0], want * bounds[1]
        assert lo < u[t, layer] < hi, ("u-μP", t, f"Dense_{layer}", u[t, layer])
    sp = _coords(WIDTHS[1], False, digits, **SP) / _coords(WIDTHS[0], False, digits, **SP)
    assert np.any(sp[1:3, 2] > bounds[1]), ("SP readout after steps 1, 2", sp[1:3, 2])


# ------------------------------------------------------------------------------------------
# bad input


def test_errors_name_the_argument_the_value_and_what_is_accepted():
    roles = _mlp_roles(64)
    params = _shapes(MLP(64), jnp.ones((1, 64)))["params"]
    accepted = r"\('input', 'hidden', 'output'\)"
    for fn in (umup.dot_general, umup.conv_general_dilated):
        with pytest.raises(ValueError, match=rf"role='hiden' is not supported; .*{accepted}"):
            fn("hiden")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=rf"multiplier: role='readout'.*{accepted}"):
        umup.multiplier("readout", 4)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="multiplier: fan_in=0 must be an int >= 1"):
        umup.multiplier("hidden", 0)
    sgd = r"'sgd' is not supported \(u-μP's SGD rule .*\); use one of \('adam', 'adamw'\)"
    with pytest.raises(ValueError, match=rf"lr_factors: optimizer={sgd}"):
        umup.lr_factors(roles, "sgd")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=rf"optimizer: kind={sgd}"):
        umup.optimizer(roles, params, "sgd", learning_rate=0.1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"optimizer: learning_rate=0 must be a finite number > 0"):
        umup.optimizer(roles, params, learning_rate=0)
    with pytest.raises(ValueError, match=r"depth key 'block_\*/\*' matches no parameter"):
        umup.lr_factors(roles, depth={"block_*/*": 2})
    with pytest.raises(ValueError, match=r"depth\['Dense_1/\*'\]=0 must be an int >= 1"):
        umup.lr_factors(roles, depth={"Dense_1/*": 0})
    with pytest.raises(ValueError, match="'Dense_1/kernel' is matched by two depth patterns"):
        umup.lr_factors(roles, depth={"Dense_1/*": 2, "Dense_1/kernel": 2})
    with pytest.raises(ValueError, match=r"residual_add: tau=-1 must be a finite number >= 0"):
        umup.residual_add(jnp.ones(2), jnp.ones(2), tau=-1)
    with pytest.raises(ValueError, match=r"residual_tau: index=4 must be an int >= 0 and <= 3"):
        umup.residual_tau(4, 4)
    with pytest.raises(ValueError, match=r"gelu: mult=0 must be a finite number > 0"):
        umup.gelu(jnp.ones(2), 0)
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) .* must be integers of shape"):
        umup.softmax_cross_entropy(jnp.ones((4, 5)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"need a last axis of >= 2 classes"):
        umup.softmax_cross_entropy(jnp.ones((4, 1)), jnp.zeros(4, jnp.int32))
