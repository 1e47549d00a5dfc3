"""jaxinit.diagnostics: token cosine, SPP statistics, attention entropy, q/k/v gradient ratios,
against independent references (NumPy re-typings of the formulas, Flax's own attention and its
sown weights, linen's capture_intermediates, a hand-written forward pass, jax.grad)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import linen_outputs
from flax import nnx

import jaxinit
from jaxinit import diagnostics as dg
from jaxinit.models import NNXResNet, NNXTransformerBlock, ResNet, TransformerBlock

XT = jax.random.normal(jax.random.key(0), (3, 6, 16))  # (batch, tokens, dim)
XI = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))  # images, channels last


def _close(got, want, err_msg: str = "") -> None:
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=err_msg)


def _np_token_cosine(y) -> float:
    """Mean over batch entries of the mean over i != j of cos(x_i, x_j), by a double loop;
    a zero vector has cosine 0."""
    y = np.asarray(y, np.float64)
    y = y.reshape(-1, *y.shape[-2:])
    per = []
    for entry in y:
        t = len(entry)
        total = 0.0
        for i in range(t):
            for j in range(t):
                if i == j:
                    continue
                ni, nj = np.linalg.norm(entry[i]), np.linalg.norm(entry[j])
                total += 0.0 if ni == 0 or nj == 0 else entry[i] @ entry[j] / (ni * nj)
        per.append(total / (t * (t - 1)))
    return float(np.mean(per))


def _np_spp(y) -> tuple[float, float]:
    """timm's avg_sq_ch_mean and avg_ch_var (torch.var: unbiased), channels last."""
    y = np.asarray(y, np.float64).reshape(-1, np.shape(y)[-1])
    return float(np.mean(y.mean(axis=0) ** 2)), float(np.mean(y.var(axis=0, ddof=1)))


def _np_entropy(weights) -> np.ndarray:
    """Per-head mean over batch and queries of -sum_k w log w, 0 log 0 = 0."""
    w = np.asarray(weights, np.float64)  # (batch, heads, q, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(w > 0, w * np.log(w), 0.0).sum(-1)
    return h.mean(axis=(0, 2))


# ------------------------------------------------------------------------------------------
# statistics


def test_token_cosine_equals_pairwise_loop_and_limits():
    y = np.array(jax.random.normal(jax.random.key(2), (2, 3, 5, 4)), np.float32)
    y[0, 1, 2] = 0.0  # a zero token
    y[1, 0] += 3.0  # correlated tokens
    same = np.broadcast_to(y[:1, :1, :1], y.shape)  # every token one vector

    @jax.jit
    def cosines(y, same):
        return (
            dg.token_cosine(y),
            dg.token_cosine(y[1, 2]),  # 2-D: the batch's examples are the tokens
            dg.token_cosine(same * 1e30),  # no overflow or underflow of the norms
            dg.token_cosine(same * 1e-30),
            dg.token_cosine(y * 0.0),
            dg.token_cosine(y[:, :, :1]),  # one token
            dg.token_cosine(y[0, 0, 0]),  # one axis
        )

    got = cosines(jnp.asarray(y), jnp.asarray(same))
    _close(got[0], _np_token_cosine(y))
    _close(got[1], _np_token_cosine(y[1, 2]))
    _close(got[2:4], [1.0, 1.0])
    assert float(got[4]) == 0.0 and np.isnan(got[5]) and np.isnan(got[6])


def test_channel_statistics_equal_timm_formulas():
    rng = np.random.default_rng(3)
    y = rng.standard_normal((4, 3, 3, 5)) * np.arange(1, 6) + np.arange(5)
    y = y.astype(np.float32)
    one = jnp.asarray(y[:1, :1, 0])  # one value per channel

    got = jax.jit(lambda y: (dg.channel_mean_sq(y), dg.channel_var(y), dg.channel_var(one)))(y)
    mean_sq, var = _np_spp(y)
    _close(got[:2], [mean_sq, var])
    assert np.isnan(got[2])


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_statistics_by_name_in_measure_equal_capture():
    model = TransformerBlock(dim=16, num_heads=2)
    variables = model.init(jax.random.key(4), XT)
    names = ("token_cosine", "channel_mean_sq", "channel_var", "in_token_cosine")
    m = jaxinit.measure(model, variables, XT, stats=names, select=("attn", "mlp_out"))
    captured = linen_outputs(model, variables, XT)
    for path in ("attn", "mlp_out"):
        y = captured[path][0]
        mean_sq, var = _np_spp(y)
        _close(m[path]["token_cosine"], _np_token_cosine(y))
        _close(m[path]["channel_mean_sq"], mean_sq)
        _close(m[path]["channel_var"], var)
    ln1 = captured["ln1"][0]  # the attention layer's input
    _close(m["attn"]["in_token_cosine"], _np_token_cosine(ln1))


# ------------------------------------------------------------------------------------------
# attention


def _linen_attn(**kwargs):
    return nn.MultiHeadDotProductAttention(2, qkv_features=8, **kwargs)


@pytest.mark.parametrize(
    "dropout", [0.0, pytest.param(0.5, marks=pytest.mark.slow)], ids=["no-dropout", "dropout"]
)
def test_linen_attention_fn_is_bitwise_flax(dropout):
    base = _linen_attn(dropout_rate=dropout, deterministic=False)
    ours = _linen_attn(dropout_rate=dropout, deterministic=False, attention_fn=dg.attention_fn())
    variables = base.init(jax.random.key(5), XT)
    mask = nn.make_causal_mask(jnp.ones(XT.shape[:2]))
    rngs = {"dropout": jax.random.key(6)}
    want, got = jax.jit(
        lambda v: (base.apply(v, XT, mask=mask, rngs=rngs), ours.apply(v, XT, mask=mask, rngs=rngs))
    )(variables)
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_nnx_attention_fn_equals_flax():
    kw: dict[str, Any] = dict(num_heads=2, in_features=16, qkv_features=8, decode=False)
    base = nnx.MultiHeadAttention(**kw, rngs=nnx.Rngs(0))
    ours = nnx.MultiHeadAttention(**kw, attention_fn=dg.attention_fn(), rngs=nnx.Rngs(0))
    mask = nnx.make_causal_mask(jnp.ones(XT.shape[:2]))
    _close(ours(XT, mask=mask), base(XT, mask=mask))


def test_linen_entropy_equals_numpy_of_flax_weights():
    model = TransformerBlock(dim=8, num_heads=4, mlp_ratio=1)
    x = XT[:, :, :8]
    variables = jax.jit(model.init)(jax.random.key(7), x)
    names = ("attention_entropy", "attention_entropy_mean", "attention_entropy_min")
    m = jax.jit(lambda v: jaxinit.measure(model, v, x, stats=names, select=("attn", "")))(variables)
    # Flax's own sown weights, from an independent apply of the attention layer; and the
    # entropy that attention_fn sows when the module asks for its weights
    flax_attn = nn.MultiHeadDotProductAttention(4, qkv_features=8)
    ours = nn.MultiHeadDotProductAttention(4, qkv_features=8, attention_fn=dg.attention_fn())

    def reference(params):
        h = nn.LayerNorm().apply({"params": params["ln1"]}, x)
        sown = []
        for attn in (flax_attn, ours):
            _, state = attn.apply(
                {"params": params["attn"]}, h, sow_weights=True, mutable=["intermediates"]
            )
            sown.append(state["intermediates"])
        return sown[0]["attention_weights"][0], sown[1]["attention_entropy"][0]

    weights, sown = jax.jit(reference)(variables["params"])
    want = _np_entropy(weights)
    _close(m["attn"]["attention_entropy"], want)
    _close(m[""]["attention_entropy"], want)  # the block holds it
    _close(m["attn"]["attention_entropy_mean"], want.mean())
    _close(m["attn"]["attention_entropy_min"], want.min())
    _close(sown, want)


def test_nnx_entropy_equals_numpy_of_flax_weights_and_model_is_untouched():
    model = NNXTransformerBlock(dim=16, num_heads=4, rngs=nnx.Rngs(1))
    default = model.attn.attention_fn
    m = jax.jit(
        lambda x: jaxinit.measure(model, x, stats=("attention_entropy",), select=dg.is_attention)
    )(XT)
    assert model.attn.attention_fn is default
    h = model.ln1(XT)
    q, k = model.attn.query(h), model.attn.key(h)  # (batch, tokens, heads, head_dim)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    _close(m["attn"]["attention_entropy"], _np_entropy(weights))


def test_entropy_of_uniform_and_masked_rows():
    uniform = jnp.full((2, 3, 4, 5), 0.2)  # (batch, heads, q, k)
    _close(dg.attention_entropy(uniform), np.full(3, np.log(5)))
    onehot = jax.nn.one_hot(jnp.zeros((2, 3, 4), int), 5)
    np.testing.assert_array_equal(dg.attention_entropy(onehot), np.zeros(3))


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_layer_stats_take_attention_means_and_refuse_per_head():
    model = TransformerBlock(dim=16, num_heads=2)
    st = jaxinit.layer_stats(
        model,
        XT,
        seeds=2,
        grads=False,
        select=dg.is_attention,
        stats=("attention_entropy_mean", "token_cosine"),
    )
    assert st.names == ("attn",) and st.stats["attention_entropy_mean"].shape == (2, 1)
    assert bool(((st.stats["attention_entropy_mean"] > 0) & (st.stats["token_cosine"] < 1)).all())
    with pytest.raises(TypeError, match="attention_entropy_mean"):
        jaxinit.layer_stats(
            model, XT, seeds=2, grads=False, select="attn", stats=("attention_entropy",)
        )


# ------------------------------------------------------------------------------------------
# signal propagation plots


class _DenseRes(nn.Module):
    """Three residual blocks of Dense layers, the second with a projection on its skip."""

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate((6, 8, 8)):
            x = _DenseBlock(width, name=f"block{i}")(x)
        return x


class _DenseBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(self.width, name="fc2")(jax.nn.relu(nn.Dense(self.width, name="fc1")(x)))
        if x.shape[-1] != self.width:
            x = nn.Dense(self.width, name="proj")(x)
        return jax.nn.relu(x + y)


@pytest.mark.slow  # 5 s: three jit/vmap compiles of a ResNet
def test_spp_equals_captured_outputs_under_jit_and_vmap():
    model = _DenseRes()
    x = jax.random.normal(jax.random.key(12), (16, 6))
    keys = jax.random.split(jax.random.key(13), 2)
    stacked = jax.vmap(lambda k: model.init(k, x))(keys)
    s = jax.jit(
        jax.vmap(lambda v: dg.spp(model, v, x, blocks="block*", branch="fc2", skip="proj"))
    )(stacked)
    assert s.names == ("block0", "block1", "block2") and s.var.shape == (2, 3)
    for seed in range(2):
        variables = jax.tree.map(lambda a, seed=seed: a[seed], stacked)
        out = linen_outputs(model, variables, x)
        block_in = x
        for i, b in enumerate(s.names):
            mean_sq, var = _np_spp(out[b][0])
            skip = out[f"{b}/proj"][0] if f"{b}/proj" in out else block_in
            _close(s.mean_sq[seed, i], mean_sq)
            _close(s.var[seed, i], var)
            _close(s.branch_var[seed, i], _np_spp(out[f"{b}/fc2"][0])[1])
            _close(s.skip_var[seed, i], _np_spp(skip)[1])
            block_in = out[b][0]


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_spp_linen_equals_captured_outputs_and_vmaps():
    model = ResNet(widths=(4, 8, 8))
    variables = model.init(jax.random.key(8), XI)
    s = dg.spp(model, variables, XI, blocks="block*", branch="conv2", skip="proj")
    out = linen_outputs(model, variables, XI)
    assert s.names == ("block0", "block1", "block2")
    block_in = jax.nn.relu(out["stem"][0])
    for i, b in enumerate(s.names):
        mean_sq, var = _np_spp(out[b][0])
        skip = out[f"{b}/proj"][0] if f"{b}/proj" in out else block_in
        _close(s.mean_sq[i], mean_sq)
        _close(s.var[i], var)
        _close(s.branch_var[i], _np_spp(out[f"{b}/conv2"][0])[1])
        _close(s.skip_var[i], _np_spp(skip)[1])
        block_in = out[b][0]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), variables, model.init(jax.random.key(9), XI))
    both = jax.jit(
        jax.vmap(lambda v: dg.spp(model, v, XI, blocks="block*", branch="conv2", skip="proj"))
    )(stacked)
    assert both.names == s.names and both.var.shape == (2, 3)
    _close(both.var[0], s.var)


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_spp_nnx_equals_hand_written_forward():
    model = NNXResNet(3, widths=(4, 4, 8), rngs=nnx.Rngs(2))
    s = dg.spp(model, XI, blocks="blocks/*", branch="conv2")
    h = jax.nn.relu(model.stem(XI))
    for i, block in enumerate(model.blocks):
        branch = block.conv2(jax.nn.relu(block.conv1(h)))
        skip = h if block.proj is None else block.proj(h)
        out = jax.nn.relu(branch + skip)
        _close(s.var[i], _np_spp(out)[1])
        _close(s.branch_var[i], _np_spp(branch)[1])
        _close(s.skip_var[i], _np_spp(h)[1])  # skip=None: the input
        h = out
    np.testing.assert_allclose(s.branch_over_skip, s.branch_var / s.skip_var)


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_spp_errors_name_the_argument():
    model = ResNet(widths=(4, 4, 4))
    variables = model.init(jax.random.key(8), XI)
    with pytest.raises(ValueError, match=r"block 'block0' has no layer 'conv9'"):
        dg.spp(model, variables, XI, blocks="block*", branch="conv9")
    with pytest.raises(ValueError, match="blocks='nope' matched no layer"):
        dg.spp(model, variables, XI, blocks="nope", branch="conv2")
    with pytest.raises(ValueError, match="branch='/conv2'"):
        dg.spp(model, variables, XI, blocks="block*", branch="/conv2")


# ------------------------------------------------------------------------------------------
# q/k/v gradient ratios


def test_qkv_grad_ratios_equal_jax_grad_norms_under_jit_and_vmap():
    model = TransformerBlock(dim=8, num_heads=2, mlp_ratio=1)
    x = XT[:2, :4, :8]
    keys = jax.random.split(jax.random.key(14), 2)
    stacked = jax.jit(jax.vmap(lambda k: model.init(k, x)["params"]))(keys)

    def loss(p, x):
        out = model.apply({"params": p}, x)
        assert isinstance(out, jax.Array)
        return jnp.mean(out**2)

    def both(p):
        return dg.qkv_grad_ratios(loss, p, x), jax.grad(loss)(p, x)["attn"]

    ratios, grads = jax.jit(jax.vmap(both))(stacked)
    for seed in range(2):
        norm = {
            n: np.linalg.norm(np.asarray(g["kernel"][seed], np.float64)) for n, g in grads.items()
        }
        _close(ratios["attn"]["q_over_v"][seed], norm["query"] / norm["value"])
        _close(ratios["attn"]["k_over_v"][seed], norm["key"] / norm["value"])


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_qkv_grad_ratios_equal_jax_grad_norms_and_vmap():
    model = TransformerBlock(dim=16, num_heads=2)
    params = model.init(jax.random.key(10), XT)["params"]

    def loss(p, x):
        out = model.apply({"params": p}, x)
        assert isinstance(out, jax.Array)
        return jnp.mean(out**2)

    r = dg.qkv_grad_ratios(loss, params, XT)
    g = jax.grad(loss)(params, XT)["attn"]
    norm = {n: np.linalg.norm(np.asarray(g[n]["kernel"], np.float64)) for n in g}
    _close(r["attn"]["q_over_v"], norm["query"] / norm["value"])
    _close(r["attn"]["k_over_v"], norm["key"] / norm["value"])
    other = model.init(jax.random.key(11), XT)["params"]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), params, other)
    both = jax.jit(jax.vmap(lambda p: dg.qkv_grad_ratios(loss, p, XT)))(stacked)
    _close(both["attn"]["q_over_v"][0], r["attn"]["q_over_v"])
    _close(both["attn"]["k_over_v"][1], dg.qkv_grad_ratios(loss, other, XT)["attn"]["k_over_v"])


@pytest.mark.slow  # convolution/transformer compiles; a fast variant runs by default
def test_qkv_grad_ratios_nnx_state_and_errors():
    model = NNXTransformerBlock(dim=16, num_heads=2, rngs=nnx.Rngs(3))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, x):
        return jnp.mean(nnx.merge(graphdef, p, rest)(x) ** 2)

    r = dg.qkv_grad_ratios(loss, params, XT)
    g = jax.grad(loss)(params, XT)
    q, v = (
        np.linalg.norm(np.asarray(g["attn"][n]["kernel"].get_value())) for n in ("query", "value")
    )
    _close(r["attn"]["q_over_v"], q / v)
    with pytest.raises(ValueError, match="no attention layer"):
        dg.qkv_grad_ratios(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(3)})
