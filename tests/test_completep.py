"""CompleteP (depth) and NNX models in jaxinit.mup and jaxinit.coord_check: the depth factors
against their closed forms (Dey et al. 2025; nanoGPT-mup's ``configure_optimizers``), Adam's
per-parameter ε and decoupled decay against optax's own ``adam``/``adamw``, the depth
coordinate check (each block's output at its relative depth stays within (1/1.2, 1.2) of depth
2's under alpha = 1 and drifts at alpha = 0), and μP on an NNX model."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxinit
from jaxinit.recipes import mup
from jaxinit.recipes.coord_check import coord_check


class Block(nn.Module):
    """A pre-LN residual MLP block: ``x + multiplier * W2 gelu(W1 LN(x))``."""

    width: int
    multiplier: float

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(4 * self.width)(nn.LayerNorm()(x)))
        return x + self.multiplier * nn.Dense(self.width)(h)


def residual_net(alpha, width=64):
    class Net(nn.Module):
        depth: int

        @nn.compact
        def __call__(self, x):
            x = nn.Dense(width)(x)
            m = mup.branch_multiplier(self.depth, alpha)  # base depth 1: L^-alpha
            for i in range(self.depth):
                x = Block(width, m, name=f"block_{i}")(x)
            return nn.Dense(10, name="head")(nn.LayerNorm()(x))

    return Net


@pytest.fixture(scope="module")
def batch():
    d = jaxinit.data.digits()
    x = jnp.asarray(d.x[:64].reshape(64, -1), jnp.float32)
    return (x - x.mean()) / x.std(), jnp.asarray(d.y[:64])


def _roles(depth, width, base_width=64, base_depth=1):
    net = residual_net(1.0)
    x = jnp.ones((2, 64))

    def shapes(w, d):
        return jax.eval_shape(residual_net(1.0, w)(d).init, jax.random.key(0), x)

    del net
    return mup.roles(
        shapes(base_width, depth),
        shapes(base_width + 1, depth),
        shapes(width, depth),
        blocks="block_*/**",
        depth_mult=depth / base_depth,
    )


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_depth_factors_are_the_closed_forms(alpha):
    r = _roles(depth=8, width=256)
    hidden = "block_3/Dense_0/kernel"
    assert r[hidden].block and r[hidden].m_depth == 8 and r[hidden].role == "hidden"
    assert not r["Dense_0/kernel"].block and r["head/kernel"].role == "output"
    adam = mup.lr_factors(r, "completep", "adam", alpha=alpha)
    sgd = mup.lr_factors(r, "completep", "sgd", alpha=alpha)
    eps = mup.eps_factors(r, "completep", alpha=alpha)
    # nanoGPT-mup: hidden weights lr * (1/m_w) * m_L^(alpha-1), eps * (1/m_w) * m_L^-alpha
    assert adam[hidden] == pytest.approx(0.25 * 8 ** (alpha - 1), rel=1e-12)
    assert eps[hidden] == pytest.approx(0.25 * 8**-alpha, rel=1e-12)
    # block LayerNorm scale: lr * m_L^(alpha-1) (its width factor is 1 under Adam)
    assert adam["block_3/LayerNorm_0/scale"] == pytest.approx(8 ** (alpha - 1), rel=1e-12)
    # SGD: mu-P's m_out/m_in = 1 for a square hidden kernel, times m_L^(2 alpha - 1)
    assert sgd[hidden] == pytest.approx(8 ** (2 * alpha - 1), rel=1e-12)
    # outside the blocks: mu-P's factors, embedding/readout eps * 1/m_w
    assert adam["Dense_0/kernel"] == 1.0 and adam["head/kernel"] == pytest.approx(0.25)
    assert eps["Dense_0/kernel"] == pytest.approx(0.25) and eps["head/kernel"] == 0.25
    assert mup.branch_multiplier(8, alpha) == pytest.approx(8**-alpha, rel=1e-15)


def _leafwise(flat, grads_seq, lrs, epss, decays=None):
    """optax's adam (adamw with ``decays``), one parameter at a time with its own rates."""
    out = {}
    for name, p in flat.items():
        if decays is None:
            opt = optax.adam(lrs[name], eps=epss[name])
        else:
            opt = optax.adamw(lrs[name], eps=epss[name], weight_decay=decays[name])
        state = opt.init(p)
        for g in grads_seq:
            u, state = opt.update(g[name], state, p)
            p = optax.apply_updates(p, u)
        out[name] = p
    return out


@pytest.mark.slow
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_eps_and_decoupled_decay_match_optax_per_parameter(decoupled):
    r = _roles(depth=2, width=128)
    params = jax.tree.map(
        lambda s: jax.random.normal(jax.random.key(s.size % 97), s.shape), _shapes_params(r)
    )
    flat = {"/".join(str(k.key) for k in path): v for path, v in _flat(params)}
    grads_seq = [
        {n: 1e-4 * jax.random.normal(jax.random.key(i), v.shape) for n, v in flat.items()}
        for i in range(3)
    ]
    lr, eps, wd = 1e-2, 1e-6, 0.1 if decoupled else 0.0
    opt = mup.optimizer(
        r,
        params,
        "completep",
        "adam",
        learning_rate=lr,
        eps=eps,
        weight_decay=wd,
        decoupled_weight_decay=decoupled,
    )
    state, p = opt.init(params), params
    for g in grads_seq:
        u, state = opt.update(_unflat(params, g), state, p)
        p = optax.apply_updates(p, u)
    lrf = mup.lr_factors(r, "completep", "adam")
    width = mup.lr_factors(r, "completep", "adam", alpha=1.0)  # alpha=1: no depth lr factor
    epsf = mup.eps_factors(r, "completep")
    want = _leafwise(
        flat,
        grads_seq,
        {n: lr * lrf[n] for n in flat},
        {n: eps * epsf[n] for n in flat},
        # adamw decays by lr_p * wd_p * w, with wd_p = wd / (width part of the lr factor)
        {n: wd / width[n] for n in flat} if decoupled else None,
    )
    got = dict(_flat(p))
    for path, v in got.items():
        name = "/".join(str(k.key) for k in path)
        np.testing.assert_allclose(v, want[name], rtol=2e-5, atol=1e-7, err_msg=name)


def _shapes_params(r):
    tree = {}
    for path, role in r.items():
        node = tree
        *head, last = path.split("/")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = jax.ShapeDtypeStruct(role.shape, jnp.float32)
    return tree


def _flat(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _unflat(like, flat):
    paths = [p for p, _ in _flat(like)]
    leaves = [flat["/".join(str(k.key) for k in p)] for p in paths]
    return jax.tree_util.tree_unflatten(jax.tree.structure(like), leaves)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_completep_updates_at_base_width_and_depth_are_sp_bit_for_bit(kind):
    r = _roles(depth=2, width=64, base_depth=2)  # base width and depth: every factor is 1
    params = jax.tree.map(lambda s: jnp.ones(s.shape), _shapes_params(r))
    grads = jax.tree.map(lambda p: 1e-3 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
    got, want = [], []
    for name, out in (("completep", got), ("sp", want)):
        opt = mup.optimizer(r, params, name, kind, learning_rate=0.1, weight_decay=0.01)

        @jax.jit  # one program per parametrization (eagerly, every update operation compiles)
        def three_steps(p, opt=opt):
            state = opt.init(p)
            for _ in range(3):
                u, state = opt.update(grads, state, p)
                p = optax.apply_updates(p, u)
            return p

        out.append(three_steps(params))
    jax.tree.map(np.testing.assert_array_equal, got[0], want[0])


@pytest.mark.slow
def test_completep_at_base_width_and_depth_is_sp_bit_for_bit(batch):
    x, y = batch
    kw: dict[str, Any] = dict(depths=(1, 2), seeds=2, steps=3, optimizer="adam", learning_rate=1e-2)
    net = residual_net(0.5)
    sp = coord_check(net, x, y, parametrization="sp", select="block_*", **kw)
    cp = coord_check(
        net,
        x,
        y,
        parametrization="completep",
        alpha=0.5,
        blocks="block_*/**",
        select="block_*",
        base_depth=1,
        **kw,
    )
    # depth 1 is the base depth: every CompleteP factor is 1
    np.testing.assert_array_equal(cp.values[0], sp.values[0])
    np.testing.assert_array_equal(cp.loss[0], sp.loss[0])
    assert not np.array_equal(cp.loss[1], sp.loss[1])  # depth 2: lr x 2^-0.5 in the blocks


def _relative_blocks(cc):
    """Per depth, the output statistic of the blocks at relative depth 1/2 and 1 (the blocks
    of depth 2), ``(n_depths, steps, 2)``."""
    out = []
    for i, depth in enumerate(cc.widths):
        idx = [cc.layers.index(f"block_{k * depth // 2 - 1}") for k in (1, 2)]
        out.append(cc.mean()[i][:, idx])
    return np.stack(out)


def _depth_check(batch, alpha, depths):
    x, y = batch
    return coord_check(
        residual_net(alpha),
        x,
        y,
        depths=depths,
        seeds=2,
        steps=3,
        parametrization="completep",
        optimizer="adam",
        learning_rate=1e-2,
        alpha=alpha,
        blocks="block_*/**",
        select="block_*",
    )


@pytest.mark.slow
def test_depth_check_alpha_1_holds_and_alpha_0_drifts_small(batch):
    held = _relative_blocks(_depth_check(batch, 1.0, (2, 8)))
    ratio = held[1] / held[0]
    assert np.all((1 / 1.2 < ratio) & (ratio < 1.2)), ratio
    drift = _relative_blocks(_depth_check(batch, 0.0, (2, 8)))
    assert np.max(drift[1] / drift[0]) > 1.2


@pytest.mark.slow
def test_depth_check_alpha_1_holds_over_depths_2_to_64(batch):
    depths = (2, 4, 8, 16, 32, 64)
    held = _relative_blocks(_depth_check(batch, 1.0, depths))
    ratio = held / held[0]
    assert np.all((1 / 1.2 < ratio) & (ratio < 1.2)), ratio
    drift = _relative_blocks(_depth_check(batch, 0.0, depths))
    assert np.max(drift[-1] / drift[0]) > 1.2


class NNXMLP(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.inp = nnx.Linear(64, width, rngs=rngs)
        self.hid = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hid(nnx.relu(self.inp(x)))))


def test_nnx_roles_and_coord_check(batch):
    x, y = batch
    base = nnx.eval_shape(lambda: NNXMLP(64, nnx.Rngs(0)))
    delta = nnx.eval_shape(lambda: NNXMLP(65, nnx.Rngs(0)))
    target = nnx.eval_shape(lambda: NNXMLP(256, nnx.Rngs(0)))
    r = mup.roles(base, delta, target)
    assert {p: v.role for p, v in r.items()} == {
        "inp/kernel": "input",
        "inp/bias": "vector",
        "hid/kernel": "hidden",
        "hid/bias": "vector",
        "out/kernel": "output",
        "out/bias": "fixed",
    }
    assert "out/kernel" in r.table()
    cc = coord_check(
        lambda width, rngs: NNXMLP(width, rngs),
        x,
        y,
        widths=(128, 512),
        seeds=3,
        steps=3,
        optimizer="adam",
        learning_rate=1e-3,
        readout_zero_init=True,
    )
    assert cc.layers == ("inp", "hid", "out")
    assert np.all(cc.values[:, :, 0, -1] == 0)
    ratio = cc.ratio()[1:]
    assert np.all((1 / 1.2 < ratio) & (ratio < 1.2)), ratio


def test_depth_and_alpha_errors(batch):
    x, y = batch
    net = residual_net(1.0)
    with pytest.raises(ValueError, match="exactly one of them"):
        coord_check(net, x, y, widths=(1, 2), depths=(1, 2))
    with pytest.raises(ValueError, match=r"alpha=1.5; a depth exponent in \[0, 1\]"):
        coord_check(net, x, y, depths=(1, 2), parametrization="completep", alpha=1.5)
    with pytest.raises(ValueError, match="blocks glob 'nope/\\*\\*' matches no parameter"):
        coord_check(net, x, y, depths=(1, 2), parametrization="completep", blocks="nope/**")
    with pytest.raises(ValueError, match="depth_mult=0"):
        mup.branch_multiplier(0)
