"""jaxinit.recipes: the Recipe type and the residual/transformer recipes.

Each recipe is applied over 64 seeds (one ``jax.vmap`` of ``recipe.apply`` over keys) to a small
Flax model named as the reference code names its modules, and each parameter's std is compared,
with a tolerance from the sample (``tests/_stats.py``), with the closed form from the paper or
the reference code, re-typed here. Models are built abstractly (``eval_shape``) and every array
is set to ``SENTINEL``: a recipe redraws the parameters it selects, and the others must keep
it. Compiling each initializer's batched draw dominates the time, so the default tests use few
distinct (initializer, shape) pairs; the ResNet-110, T-Fixup, spectral and query-folding
checks and the 12-block NNX GPT are marked slow.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import assert_mean, assert_var
from flax import nnx

import jaxinit
from jaxinit.recipes.recipe import Recipe, Rule
from jaxinit.recipes.residual import (
    deepnorm,
    fixup,
    gpt2,
    layerscale,
    query_folding,
    rezero,
    skipinit,
    spectral,
    t_fixup,
    zero_init_residual,
)

# rbg keys: their batched draws compile about 3x faster than threefry's (compiling dominates
# these tests), and a recipe's statistics do not depend on the generator.
KEYS = jax.random.split(jax.random.key(0, impl="rbg"), 64)
TOKENS = jnp.zeros((1, 4), jnp.int32)


SENTINEL = 7.0  # every parameter before a recipe: one a recipe leaves keeps it


def _filled(tree):
    return jax.tree.map(lambda s: jnp.full(s.shape, SENTINEL, s.dtype), tree)


def _linen_filled(module, *args):
    """The module's variables, every array ``SENTINEL`` (abstract init: nothing compiles)."""
    return _filled(jax.eval_shape(module.init, jax.random.key(0), *args))


def _over_seeds(recipe, variables):
    """``recipe.apply`` for each of the 64 keys, in one ``jax.vmap`` (eager: each
    initializer's compiled draw is shared by every parameter of its shape)."""
    return jax.vmap(lambda k: recipe.apply(variables, k))(KEYS)


def _f64(x):
    return np.asarray(x, np.float64)


def _untouched(leaf):
    return bool(np.all(_f64(leaf) == SENTINEL))


# --------------------------------------------------------------------------------------------
# nanoGPT, linen and NNX, with nanoGPT's module names


class CausalSelfAttention(nn.Module):
    """nanoGPT's names (c_attn: fused q, k, v; c_proj); one head keeps the trace small."""

    d: int

    @nn.compact
    def __call__(self, x):
        q, k, v = jnp.split(nn.Dense(3 * self.d, name="c_attn")(x), 3, axis=-1)
        att = jax.nn.softmax(q @ k.swapaxes(-1, -2) / math.sqrt(self.d), axis=-1)
        return nn.Dense(self.d, name="c_proj")(att @ v)


class MLP(nn.Module):
    d: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.d, name="c_proj")(nn.gelu(nn.Dense(4 * self.d, name="c_fc")(x)))


class Block(nn.Module):
    d: int

    @nn.compact
    def __call__(self, x):
        x = x + CausalSelfAttention(self.d, name="attn")(nn.LayerNorm(name="ln_1")(x))
        return x + MLP(self.d, name="mlp")(nn.LayerNorm(name="ln_2")(x))


class GPT(nn.Module):
    n_layer: int = 12
    d: int = 32
    vocab: int = 16
    block: int = 16  # = vocab: wte and wpe share one compiled draw

    @nn.compact
    def __call__(self, idx):
        wte = nn.Embed(self.vocab, self.d, name="wte")
        x = wte(idx) + nn.Embed(self.block, self.d, name="wpe")(jnp.arange(idx.shape[1]))[None]
        for i in range(self.n_layer):
            x = Block(self.d, name=f"h_{i}")(x)
        return wte.attend(nn.LayerNorm(name="ln_f")(x))  # lm_head tied to wte, as nanoGPT


class GPTNNX(nnx.Module):
    def __init__(self, n_layer=12, d=32, vocab=16, block=16, *, rngs):
        self.wte = nnx.Embed(vocab, d, rngs=rngs)
        self.wpe = nnx.Embed(block, d, rngs=rngs)
        self.h = nnx.List([_NNXBlock(d, rngs) for _ in range(n_layer)])
        self.ln_f = nnx.LayerNorm(d, rngs=rngs)


class _NNXBlock(nnx.Module):
    def __init__(self, d, rngs):
        self.ln_1 = nnx.LayerNorm(d, rngs=rngs)
        self.attn = nnx.Dict(
            c_attn=nnx.Linear(d, 3 * d, rngs=rngs), c_proj=nnx.Linear(d, d, rngs=rngs)
        )
        self.ln_2 = nnx.LayerNorm(d, rngs=rngs)
        self.mlp = nnx.Dict(
            c_fc=nnx.Linear(d, 4 * d, rngs=rngs), c_proj=nnx.Linear(4 * d, d, rngs=rngs)
        )


GPT2_PROJ_STD = 0.0040825  # nanoGPT, 12 layers: 0.02 / math.sqrt(2 * 12), 5 digits


def _assert_std_each(params, target_var, what):
    """``assert_var`` on each parameter over the 64 seeds, and on all of them pooled."""
    for name, w in params.items():
        assert_var(_f64(w), target_var, f"Var[{what} {name}]")
    assert_var(np.concatenate([_f64(w).ravel() for w in params.values()]), target_var, what)


@pytest.mark.slow  # 9 s: a 12-layer init; the 2-layer NNX GPT-2 runs by default
def test_gpt2_linen_12_layers():
    variables = _linen_filled(GPT(), TOKENS)
    out = _over_seeds(gpt2(12), variables)["params"]
    assert abs(0.02 / math.sqrt(24) - GPT2_PROJ_STD) < 5e-8
    proj = {
        f"h_{i}/{m}": out[f"h_{i}"][m]["c_proj"]["kernel"]
        for i in range(12)
        for m in ("attn", "mlp")
    }
    _assert_std_each(proj, (0.02 / math.sqrt(2 * 12)) ** 2, "c_proj")
    assert_mean(np.concatenate([_f64(w).ravel() for w in proj.values()]), 0.0, "mean c_proj")
    other = {f"h_{i}/c_attn": out[f"h_{i}"]["attn"]["c_attn"]["kernel"] for i in range(12)}
    other |= {f"h_{i}/c_fc": out[f"h_{i}"]["mlp"]["c_fc"]["kernel"] for i in range(12)}
    other |= {e: out[e]["embedding"] for e in ("wte", "wpe")}
    _assert_std_each(other, 0.02**2, "kernel/embedding")
    for i in range(12):
        blk = out[f"h_{i}"]
        for m, n in (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj")):
            assert np.all(_f64(blk[m][n]["bias"]) == 0)
        for ln in ("ln_1", "ln_2"):
            assert np.all(_f64(blk[ln]["scale"]) == 1) and np.all(_f64(blk[ln]["bias"]) == 0)
    assert np.all(_f64(out["ln_f"]["scale"]) == 1) and np.all(_f64(out["ln_f"]["bias"]) == 0)
    # a parameter's draw depends on the key and its path only, not on the other rules
    path = "h_7/mlp/c_proj/kernel"
    alone = Recipe("one", (Rule(path, jaxinit.normal(0.02 / math.sqrt(24))),))
    again = _over_seeds(alone, variables)["params"]["h_7"]["mlp"]["c_proj"]["kernel"]
    np.testing.assert_array_equal(again, out["h_7"]["mlp"]["c_proj"]["kernel"])


@pytest.mark.parametrize(
    "n_layer", [2, pytest.param(12, marks=pytest.mark.slow)], ids=lambda n: f"{n}_layers"
)
def test_gpt2_nnx(n_layer):
    """gpt2(12) on an NNX GPT of ``n_layer`` blocks (the c_proj std depends on the recipe's
    n_layer only; the 12-block model is the slow case)."""
    abstract = nnx.eval_shape(lambda: GPTNNX(n_layer, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    state = _filled(state)
    recipe = gpt2(12)

    def one(key, state):
        model = nnx.merge(graphdef, state)
        assert recipe.apply(model, key) is None  # edited in place
        return nnx.state(model, nnx.Param)

    out = jax.vmap(one, in_axes=(0, None))(KEYS, state)
    proj = {
        f"h/{i}/{m}": out["h"][i][m]["c_proj"]["kernel"][...]
        for i in range(n_layer)
        for m in ("attn", "mlp")
    }
    _assert_std_each(proj, GPT2_PROJ_STD**2, "c_proj")
    other = {f"h/{i}/c_attn": out["h"][i]["attn"]["c_attn"]["kernel"][...] for i in range(n_layer)}
    other |= {e: out[e]["embedding"][...] for e in ("wte", "wpe")}
    _assert_std_each(other, 0.02**2, "kernel/embedding")
    for i in range(n_layer):
        assert np.all(_f64(out["h"][i]["ln_2"]["scale"][...]) == 1)
        assert np.all(_f64(out["h"][i]["mlp"]["c_proj"]["bias"][...]) == 0)


# --------------------------------------------------------------------------------------------
# DeepNet


class DeepNetLayer(nn.Module):
    """A torchscale-named post-LN encoder layer (FFN width d: fewer shapes to compile)."""

    d: int = 16

    @nn.compact
    def __call__(self, x):
        q, k, v = (nn.Dense(self.d, name=f"{n}_proj")(x) for n in "qkv")
        att = jax.nn.softmax(q @ k.swapaxes(-1, -2) / math.sqrt(self.d), -1) @ v
        x = nn.LayerNorm(name="self_attn_layer_norm")(x + nn.Dense(self.d, name="out_proj")(att))
        h = nn.Dense(self.d, name="fc2")(nn.relu(nn.Dense(self.d, name="fc1")(x)))
        return nn.LayerNorm(name="final_layer_norm")(x + h)


class DeepNet(nn.Module):
    layers: int = 2

    @nn.compact
    def __call__(self, idx):
        x = nn.Embed(16, 16, name="embed_tokens")(idx)
        for i in range(self.layers):
            x = DeepNetLayer(name=f"layers_{i}")(x)
        return x


def test_deepnorm_n100_beta_on_fc_v_out_only():
    variables = _linen_filled(DeepNet(), TOKENS)
    out = _over_seeds(deepnorm(100), variables)["params"]
    beta = (8 * 100) ** -0.25  # the paper's table, encoder-only (or decoder-only)
    assert abs(beta - 0.18803) < 5e-6

    def xavier_var(fan_in, fan_out, gain):  # torch.nn.init.xavier_normal_
        return gain**2 * 2.0 / (fan_in + fan_out)

    want = {
        "fc1": xavier_var(16, 16, beta),
        "fc2": xavier_var(16, 16, beta),
        "v_proj": xavier_var(16, 16, beta),
        "out_proj": xavier_var(16, 16, beta),
        "q_proj": xavier_var(16, 16, 1.0),
        "k_proj": xavier_var(16, 16, 1.0),
    }
    for name, var in want.items():
        _assert_std_each({i: out[f"layers_{i}"][name]["kernel"] for i in (0, 1)}, var, name)
    # nowhere else: every other parameter keeps its value
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        names = [p.key for p in path]
        if names[-1] == "kernel" and names[-2] in want:
            continue
        assert _untouched(leaf), "/".join(names)


# --------------------------------------------------------------------------------------------
# Fixup on a ResNet-110-shaped network (54 blocks, tiny channels)


class FixupBlock(nn.Module):
    """hongyi-zhang/Fixup's FixupBasicBlock (scalar parameters of shape ())."""

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        def scalar(name):  # the values do not matter: the tests fill every parameter
            return self.param(name, nn.initializers.zeros, ())

        def conv(name, s=1):
            return nn.Conv(self.planes, (3, 3), (s, s), padding=1, use_bias=False, name=name)

        out = conv("conv1", self.stride)(x + scalar("bias1a"))
        out = nn.relu(out + scalar("bias1b"))
        out = conv("conv2")(out + scalar("bias2a"))
        out = out * scalar("scale") + scalar("bias2b")
        if self.stride != 1:  # the reference's AvgPool2d(1, stride) and zero channels
            x = x[:, :: self.stride, :: self.stride]
            x = jnp.concatenate([x, jnp.zeros_like(x)], axis=-1)
        return nn.relu(out + x)


class FixupResNet(nn.Module):
    layers: tuple[int, ...] = (18, 18, 18)  # ResNet-110: 54 blocks
    width: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="conv1")(x)
        x = nn.relu(x + self.param("bias1", nn.initializers.zeros, ()))
        for s, n in enumerate(self.layers):
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                x = FixupBlock(self.width * 2**s, stride, name=f"layer{s + 1}_{b}")(x)
        x = x.mean(axis=(1, 2)) + self.param("bias2", nn.initializers.zeros, ())
        return nn.Dense(10, name="fc")(x)


def _check_fixup(out, n_blocks, scale, *, stem=True):
    branch = {}
    for name, block in out.items():
        if not name.startswith("layer"):
            continue
        w = _f64(block["conv1"]["kernel"])
        fan_out = 3 * 3 * w.shape[-1]  # PyTorch: weight.shape[0] * prod(weight.shape[2:])
        branch[name] = w / math.sqrt(2.0 / fan_out)
        assert np.all(_f64(block["conv2"]["kernel"]) == 0), name
        assert np.all(_f64(block["scale"]) == 1), name
        for b in ("bias1a", "bias1b", "bias2a", "bias2b"):
            assert np.all(_f64(block[b]) == 0), (name, b)
    assert len(branch) == n_blocks
    _assert_std_each(branch, scale**2, "conv1 / He std")
    assert np.all(_f64(out["fc"]["kernel"]) == 0) and np.all(_f64(out["fc"]["bias"]) == 0)
    assert np.all(_f64(out["bias1"]) == 0) and np.all(_f64(out["bias2"]) == 0)
    if not stem:  # others=(): layers outside the branches are left as they were
        assert _untouched(out["conv1"]["kernel"])
        return
    w = _f64(out["conv1"]["kernel"])
    assert_var(w, 2.0 / (3 * 3 * w.shape[-1]), "Var[stem]")  # He, fan_out, unscaled


@pytest.mark.slow
def test_fixup_resnet110():
    variables = _linen_filled(FixupResNet(), jnp.zeros((1, 8, 8, 3)))
    out = _over_seeds(fixup(54), variables)["params"]
    scale = 54 ** (-1 / (2 * 2 - 2))  # L^(-1/(2m-2)), m = 2
    assert abs(scale - 0.13608) < 5e-6
    _check_fixup(out, 54, scale)


def test_fixup_few_blocks():
    """The rules of the ResNet-110 test (slow) on 3 blocks of one stage: scale 3^(-1/2)."""
    variables = _linen_filled(FixupResNet(layers=(3,), width=4), jnp.zeros((1, 4, 4, 3)))
    out = _over_seeds(fixup(3, others=()), variables)["params"]
    _check_fixup(out, 3, 3**-0.5, stem=False)


# --------------------------------------------------------------------------------------------
# T-Fixup, spectral, query folding


class Attn(nn.Module):
    """fairseq/torchscale attention names: q_proj, k_proj, v_proj, out_proj."""

    d: int = 16

    @nn.compact
    def __call__(self, x):
        q, k, v = (nn.Dense(self.d, name=f"{n}_proj")(x) for n in "qkv")
        a = jax.nn.softmax(q @ k.swapaxes(-1, -2) / math.sqrt(self.d), -1) @ v
        return nn.Dense(self.d, name="out_proj")(a)


class TFixupLayer(nn.Module):
    """fairseq's decoder-layer names, without LayerNorm: self_attn, fc1, fc2."""

    d: int = 16

    @nn.compact
    def __call__(self, x):
        x = x + Attn(self.d, name="self_attn")(x)
        return x + nn.Dense(self.d, name="fc2")(nn.relu(nn.Dense(4 * self.d, name="fc1")(x)))


class TFixupDecoder(nn.Module):
    layers: int = 2
    d: int = 16

    @nn.compact
    def __call__(self, idx):
        x = nn.Embed(16, self.d, name="embed_tokens")(idx) * math.sqrt(self.d)
        for i in range(self.layers):
            x = TFixupLayer(self.d, name=f"layers_{i}")(x)
        return x


@pytest.mark.slow
def test_t_fixup_decoder_only():
    variables = _linen_filled(TFixupDecoder(), TOKENS)
    m = 6  # the recipe's M (the model has 2 layers: only the factor depends on M)
    recipe = t_fixup(decoder_layers=m)
    out = _over_seeds(recipe, variables)["params"]
    f = (9 * m) ** -0.25  # layer6ai-labs/T-Fixup, TransformerDecoderLayer.fixup_initialization

    def xavier_uniform_var(fan_in, fan_out, gain):  # torch.nn.init.xavier_uniform_
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return bound**2 / 3

    for i in (0, 1):
        layer = out[f"layers_{i}"]
        assert_var(layer["fc1"]["kernel"], xavier_uniform_var(16, 64, f), "fc1")
        assert_var(layer["fc2"]["kernel"], xavier_uniform_var(64, 16, f), "fc2")
        att = layer["self_attn"]
        assert_var(att["v_proj"]["kernel"], xavier_uniform_var(16, 16, f), "v_proj")
        assert_var(att["out_proj"]["kernel"], xavier_uniform_var(16, 16, f), "out_proj")
        assert_var(att["q_proj"]["kernel"], xavier_uniform_var(16, 16, 2**-0.5), "q_proj")
        assert np.all(_f64(att["v_proj"]["bias"]) == 0) and np.all(_f64(layer["fc1"]["bias"]) == 0)
    # fairseq Embedding: N(0, d^-1/2) times (9M)^(-1/4) (TransformerDecoder.__init__)
    assert_var(out["embed_tokens"]["embedding"], (16**-0.5 * f) ** 2, "embedding")


@pytest.mark.slow
def test_spectral_std():
    mlp = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(64)])
    variables = _linen_filled(mlp, jnp.zeros((1, 64)))
    out = _over_seeds(spectral(), variables)["params"]

    def std(fan_in, fan_out):  # Yang, Simon & Bernstein 2023, Parametrization 1
        return (1 / math.sqrt(fan_in)) * min(1.0, math.sqrt(fan_out / fan_in))

    assert_var(out["layers_0"]["kernel"], std(64, 16) ** 2, "Var[64 -> 16]")
    assert_var(out["layers_2"]["kernel"], std(16, 64) ** 2, "Var[16 -> 64]")
    assert _untouched(out["layers_0"]["bias"]) and _untouched(out["layers_2"]["bias"])


@pytest.mark.slow
def test_query_folding_on_flax_attention():
    mha = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=32)
    x = jnp.zeros((1, 3, 32))
    variables = _linen_filled(mha, x, x)
    out = _over_seeds(query_folding(8), variables)["params"]
    q = out["query"]["kernel"]
    assert q.shape == (64, 32, 4, 8)
    # t5x: query_init = kernel_init / sqrt(head_dim); Flax's kernel_init is lecun_normal,
    # Var = 1 / fan_in with fan_in = 32 (the input features)
    assert_var(q, 1 / 32 / 8, "Var[query]")
    assert np.all(_f64(out["query"]["bias"]) == 0)
    assert _untouched(out["key"]["kernel"]) and _untouched(out["out"]["kernel"])


def test_variance_laws_match_the_references():
    """Each rule's variance law (what jaxinit.audit reads) against the closed form re-typed
    from the paper or the reference code, for the settings the slow tests draw and more."""

    def law(recipe, path, fan_in, fan_out):
        rule = recipe.match(path)
        assert rule is not None, path
        return rule.init.variance(fan_in, fan_out)

    def xavier(fan_in, fan_out, gain):  # torch.nn.init.xavier_{normal,uniform}_
        return gain**2 * 2.0 / (fan_in + fan_out)

    close = pytest.approx
    assert law(gpt2(48), "h_0/attn/c_proj/kernel", 1600, 1600) == close((0.02 / 96**0.5) ** 2)
    # Fixup, ResNet-110: std sqrt(2 / (out * k * k)) * 54 ** -0.5 (fixup_resnet_cifar.py)
    assert law(fixup(54), "layer3_0/conv1/kernel", 9 * 32, 9 * 64) == close(2 / (9 * 64) / 54)
    # Fixup, bottleneck (m = 3): conv1 and conv2 * num_layers ** -0.25, conv3 zero
    r = fixup(16, 3)
    assert law(r, "layer1_0/conv2/kernel", 9 * 64, 9 * 64) == close(2 / (9 * 64) * 16**-0.5)
    assert r.match("layer1_0/conv3/kernel") == Rule(
        "*/**/conv3/kernel", jaxinit.zeros(), "0: the last layer of each residual branch"
    )
    # DeepNet, encoder-decoder: 0.87 (N^4 M)^(-1/16) and (12M)^(-1/4) (the paper's table)
    r = deepnorm(6, decoder_layers=18)
    enc, dec = 0.87 * (6**4 * 18) ** (-1 / 16), (12 * 18) ** -0.25
    assert law(r, "encoder/layers_1/fc2/kernel", 64, 16) == close(xavier(64, 16, enc))
    assert law(r, "decoder/layers_1/encoder_attn/v_proj/kernel", 16, 16) == close(
        xavier(16, 16, dec)
    )
    assert law(r, "decoder/layers_1/q_proj/kernel", 16, 16) == close(xavier(16, 16, 1.0))
    # T-Fixup, encoder-decoder: 0.67 N^(-1/4) (encoder), (9M)^(-1/4) (decoder), embeddings
    # N(0, d^-1/2 std) times (9N)^(-1/4) or (9M)^(-1/4) (layer6ai-labs/T-Fixup)
    r = t_fixup(6, 12)
    assert law(r, "encoder/layers_0/self_attn/out_proj/kernel", 16, 16) == close(
        xavier(16, 16, 0.67 * 6**-0.25)
    )
    assert law(r, "decoder/layers_0/fc1/kernel", 16, 64) == close(xavier(16, 64, 108**-0.25))
    assert law(r, "encoder/embed_tokens/embedding", 1000, 16) == close(16**-1 * 54**-0.5)
    assert law(r, "decoder/embed_tokens/embedding", 1000, 16) == close(16**-1 * 108**-0.5)
    assert law(r, "decoder/layers_3/self_attn/k_proj/kernel", 16, 16) == close(
        xavier(16, 16, 0.5**0.5)
    )
    # spectral: (1/fan_in) min(1, fan_out/fan_in); query folding: (1/fan_in) / head_dim
    assert law(spectral(), "a/kernel", 300, 100) == close(1 / 300 * 100 / 300)
    assert law(spectral(), "a/kernel", 100, 300) == close(1 / 100)
    assert law(query_folding(64), "attn/query/kernel", 512, 512) == close(1 / 512 / 64)


# --------------------------------------------------------------------------------------------
# residual gates and zero-init residual, combined with |


class GatedBlock(nn.Module):
    """torchvision's BasicBlock names (bn1, bn2), CaiT's gamma_1/gamma_2, ReZero's resweight
    and a SkipInit gate."""

    @nn.compact
    def __call__(self, x):
        y = nn.BatchNorm(use_running_average=True, name="bn1")(nn.Dense(4, name="fc_a")(x))
        y = nn.BatchNorm(use_running_average=True, name="bn2")(nn.Dense(4, name="fc_b")(y))
        g1 = self.param("gamma_1", nn.initializers.ones, (4,))
        g2 = self.param("gamma_2", nn.initializers.ones, (4,))
        r = self.param("resweight", nn.initializers.ones, ())
        a = self.param("skip_gain", nn.initializers.ones, ())
        return x + r * a * (g1 * g2)[None] * y


def test_gates_and_zero_init_residual():
    variables = _linen_filled(GatedBlock(), jnp.zeros((1, 4)))
    recipe = zero_init_residual() | rezero() | layerscale(depth=24) | skipinit()
    out = recipe.apply(variables, jax.random.key(0))
    p = out["params"]
    assert np.all(_f64(p["bn2"]["scale"]) == 0) and _untouched(p["bn1"]["scale"])
    assert np.all(_f64(p["resweight"]) == 0) and np.all(_f64(p["skip_gain"]) == 0)
    # CaiT: 1e-5 at depth 24 (cait_S24: init_scale=1e-5), 0.1 up to 18, 1e-6 beyond 24
    for g in ("gamma_1", "gamma_2"):
        assert np.all(p[g] == np.float32(1e-5))
    for depth, eps in ((12, 0.1), (18, 0.1), (36, 1e-6)):
        gates = layerscale(depth=depth).apply(variables, jax.random.key(0))["params"]
        assert np.all(gates["gamma_1"] == np.float32(eps)), depth
    assert np.all(layerscale(0.5).apply(variables, jax.random.key(0))["params"]["gamma_2"] == 0.5)
    assert _untouched(p["fc_a"]["kernel"]) and _untouched(p["bn2"]["bias"])
    assert out["batch_stats"] is variables["batch_stats"]  # other collections untouched


# --------------------------------------------------------------------------------------------
# the Recipe type


def test_first_match_wins_and_override():
    base = Recipe("base", (Rule("**/kernel", jaxinit.ones()), Rule("**", jaxinit.zeros())))
    head = Recipe("head", (Rule("layers_2/kernel", jaxinit.constant(3.0)),))
    mlp = nn.Sequential([nn.Dense(3), nn.relu, nn.Dense(2)])
    variables = _linen_filled(mlp, jnp.zeros((1, 2)))
    assert [r.where for r in base.paths(variables).values()] == ["**", "**/kernel"] * 2
    both = base | head
    assert both.name == "base | head" and both == base.then(head)
    assert [r.where for r in both.rules] == ["layers_2/kernel", "**/kernel", "**"]
    p = both.apply(variables, jax.random.key(0))["params"]
    assert np.all(_f64(p["layers_0"]["kernel"]) == 1) and np.all(_f64(p["layers_2"]["kernel"]) == 3)
    assert np.all(_f64(p["layers_0"]["bias"]) == 0) and np.all(_f64(p["layers_2"]["bias"]) == 0)
    assert both.match("layers_0/bias") == base.rules[1] and head.match("layers_0/bias") is None
    # a pattern in both: the later recipe's rule only
    again = base | Recipe("again", (Rule("**/kernel", jaxinit.constant(2.0)),))
    assert [r.where for r in again.rules] == ["**/kernel", "**"]
    assert again.rules[0].init == jaxinit.constant(2.0)


def test_printed_table():
    text = str(gpt2(12))
    lines = text.splitlines()
    assert lines[0] == "Recipe gpt2(n_layer=12)"
    assert lines[1].split() == ["pattern", "init", "why"]
    assert set(lines[2].replace(" ", "")) == {"-"}
    rows = lines[3 : lines.index("")]
    assert len(rows) == len(gpt2(12).rules) == 5
    first = rows[0]
    assert first.startswith("**/c_proj/kernel ")
    assert f"jaxinit.normal(stddev={0.02 / math.sqrt(24)!r}, mean=0.0)" in first
    assert "sqrt(24)" in first
    assert rows[2].startswith("**/embedding (optional)")
    assert "  https://github.com/karpathy/nanoGPT/blob/master/model.py" in lines
    assert any(line.startswith("Notes: ") for line in lines)
    # a non-jaxinit initializer is shown by name
    custom = Recipe("c", (Rule("**", jax.nn.initializers.zeros, "jax"),))
    assert "jax.nn.initializers.zeros" in str(custom)


def test_errors():
    mlp = nn.Sequential([nn.Dense(3), nn.relu, nn.Dense(2)])
    variables = _linen_filled(mlp, jnp.zeros((1, 2)))
    key = jax.random.key(0)
    missing = Recipe("r", (Rule("**/kernel", jaxinit.zeros()), Rule("**/c_proj/w", jaxinit.ones())))
    with pytest.raises(
        ValueError,
        match=r"rules\[1\] \(where='\*\*/c_proj/w'.*matches no parameter.*'layers_0/bias'",
    ):
        missing.apply(variables, key)
    with pytest.raises(ValueError, match=r"rules\[1\]"):
        missing.paths(variables)
    optional = Recipe(
        "r", (Rule("**/kernel", jaxinit.zeros()), Rule("**/w", jaxinit.ones(), optional=True))
    )
    assert np.all(_f64(optional.apply(variables, key)["params"]["layers_0"]["kernel"]) == 0)
    with pytest.raises(TypeError, match=r"rules\[0\] \(where='\*\*'\): init=3 is not callable"):
        Recipe("r", (Rule("**", 3),))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is not a Rule"):
        Recipe("r", ("**/kernel",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="where must be a non-empty glob"):
        Recipe("r", (Rule(["**/kernel"], jaxinit.zeros()),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        Recipe("r", ())
    with pytest.raises(ValueError, match=r"rules\[1\] repeats the pattern '\*\*' of rules\[0\]"):
        Recipe("r", (Rule("**", jaxinit.zeros()), Rule("**", jaxinit.ones())))
    ok = Recipe("r", (Rule("**", jaxinit.zeros()),))
    for bad in (0, jax.random.split(key, 2), None):
        with pytest.raises(TypeError, match=r"(?s)apply: key=.* is not a single PRNG key"):
            ok.apply(variables, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="linen module Sequential; pass its variables"):
        ok.apply(mlp, key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Recipe.then: other=.* must be a Recipe"):
        ok.then("x")  # type: ignore[arg-type]
    # the recipes' own arguments
    with pytest.raises(ValueError, match=r"gpt2: n_layer=0 must be an int >= 1"):
        gpt2(0)
    with pytest.raises(ValueError, match=r"gpt2: std=-0.02 must be finite and > 0"):
        gpt2(12, -0.02)
    with pytest.raises(TypeError, match=r"gpt2: residual_out=3 is not supported"):
        gpt2(12, residual_out=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fixup: m=1 must be an int >= 2"):
        fixup(54, 1)
    with pytest.raises(ValueError, match="layerscale: give exactly one of init_value="):
        layerscale()
    with pytest.raises(ValueError, match="t_fixup: give encoder_layers="):
        t_fixup()
    with pytest.raises(ValueError, match=r"deepnorm_constants: decoder_layers=0"):
        deepnorm(6, decoder_layers=0)
