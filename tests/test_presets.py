"""Presets read from real codebases: a tiny Flax model gets each preset, and every parameter's
spread over its elements and 256 seeds equals the value re-typed from the reference code.

Reference values (d = 16, heads = 2, head_dim = 8, d_ff = 32, vocab = 32; see each preset's
docstring for the file and function they come from):

- MaxText / T5X: ``nd_dense_init(1.0, "fan_in", ...)`` / ``variance_scaling(1.0, 'fan_in',
  ...)``: query ``1/sqrt(d * head_dim)``, key/value ``1/sqrt(d)``, out ``1/sqrt(heads *
  head_dim)``, MLP ``1/sqrt(fan_in)`` (truncated at 2 standard deviations and rescaled by
  ``0.87962566103423978``), embedding ``normal(stddev=1.0)``;
- nanodo / big_vision: Flax ``xavier_uniform`` on the flat ``DenseGeneral`` kernel,
  ``U(+-sqrt(6 / (fan_in + fan_out)))``;
- OLMo-core: ``torch.nn.init.trunc_normal_(std=0.02, a=-3 std, b=3 std)``, whose standard
  deviation is ``0.02 * scipy.stats.truncnorm(-3, 3).std()``.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _stats import assert_mean, assert_var

from jaxinit import compute_fans
from jaxinit.basic import ones as jaxinit_ones
from jaxinit.basic import zeros as jaxinit_zeros
from jaxinit.recipes import presets
from jaxinit.recipes.presets import Patterns

D, HEADS, HEAD_DIM, FF, VOCAB, LENGTH, SEEDS = 16, 2, 8, 32, 32, 8, 256
TRUNC2 = 0.87962566103423978  # std of N(0, 1) cut at +-2 (jax variance_scaling's constant)


class TinyLM(nn.Module):
    """A 2-block pre-norm decoder named as jaxinit's byte transformer."""

    gated: bool = False
    tied: bool = False
    bias: bool = False
    pos: bool = True
    relpos: bool = False

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(VOCAB, D, name="embed")
        x = embed(tokens)
        if self.pos:
            x = x + nn.Embed(LENGTH, D, name="pos")(jnp.arange(tokens.shape[1]))[None]
        if self.relpos:
            table = self.param("rel_embedding", nn.initializers.zeros, (HEADS, 32))
            x = x + table.sum()
        for i in range(2):
            h = nn.RMSNorm(name=f"block{i}_ln1")(x)
            x = x + nn.MultiHeadDotProductAttention(
                HEADS, qkv_features=HEADS * HEAD_DIM, use_bias=self.bias, name=f"block{i}_attn"
            )(h, h)
            h = nn.RMSNorm(name=f"block{i}_ln2")(x)
            u = nn.Dense(FF, use_bias=self.bias, name=f"block{i}_mlp_in")(h)
            if self.gated:
                u = u * nn.silu(nn.Dense(FF, use_bias=self.bias, name=f"block{i}_mlp_gate")(h))
            x = x + nn.Dense(D, use_bias=self.bias, name=f"block{i}_mlp_out")(nn.gelu(u))
        x = nn.RMSNorm(name="ln_f")(x)
        return embed.attend(x) if self.tied else nn.Dense(VOCAB, name="head")(x)


class TinyViT(nn.Module):
    """big_vision's ViT layout: patch conv ``embedding``, ``pos_embedding``, LayerNorm blocks
    with biased attention and MLP, zero-initialized ``head``."""

    @nn.compact
    def __call__(self, image):
        x = nn.Conv(D, (4, 4), strides=(4, 4), padding="VALID", name="embedding")(image)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        x = x + self.param("pos_embedding", nn.initializers.zeros, (1, h * w, c))
        for i in range(2):
            y = nn.LayerNorm(name=f"block{i}_ln1")(x)
            x = x + nn.MultiHeadDotProductAttention(HEADS, name=f"block{i}_attn")(y, y)
            y = nn.LayerNorm(name=f"block{i}_ln2")(x)
            y = nn.Dense(D, name=f"block{i}_mlp_out")(
                nn.gelu(nn.Dense(FF, name=f"block{i}_mlp_in")(y))
            )
            x = x + y
        return nn.Dense(10, name="head")(nn.LayerNorm(name="norm")(x).mean(axis=1))


def draws(model, x, recipe) -> dict[str, np.ndarray]:
    """{parameter path: (SEEDS, *shape) array}: the recipe applied with SEEDS keys (one jitted
    vmap over keys), to variables whose shapes come from ``eval_shape`` (no Flax init runs)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    variables = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)
    keys = jax.random.split(jax.random.key(42), SEEDS)
    out = jax.jit(jax.vmap(lambda k: recipe.apply(variables, k)))(keys)
    flat = jax.tree_util.tree_flatten_with_path(out["params"])[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in flat}


def check(params: dict[str, np.ndarray], expected: list[tuple[str, str, float]]) -> None:
    """Every parameter matches exactly one ``(regex, kind, value)`` line, and its elements over
    all seeds (pooled over the blocks) have that spread: ``kind`` is ``const`` (every element
    equals ``value``), ``normal``, ``trunc2`` (cut at 2 std, rescaled), ``trunc3`` (cut at
    3 std of the untruncated ``value / truncnorm(-3, 3).std()``), or ``uniform``."""
    groups: dict[int, list[np.ndarray]] = {}
    for path, v in params.items():
        groups.setdefault(line_of(path, expected), []).append(v.ravel())
    assert sorted(groups) == list(range(len(expected))), "a reference line matched nothing"
    for i, (rx, kind, value) in enumerate(expected):
        w = np.concatenate(groups[i]).astype(np.float64)
        if kind == "const":
            np.testing.assert_array_equal(w, value, err_msg=rx)
            continue
        assert_mean(w, 0.0, f"{rx} mean")
        assert_var(w, value**2, f"{rx} Var")
        bound = {
            "normal": np.inf,
            "trunc2": 2 * value / TRUNC2,
            "trunc3": 3 * value / scipy.stats.truncnorm(-3, 3).std(),
            "uniform": math.sqrt(3) * value,
        }[kind]
        assert np.abs(w).max() <= bound * (1 + 1e-6), f"{rx}: |w| beyond {bound}"


TOKENS = jnp.zeros((1, LENGTH), jnp.int32)
IMAGE = jnp.zeros((1, 8, 8, 3))
ATT = r"block\d_attn/"
OLMO_STD = 0.02 * scipy.stats.truncnorm(-3, 3).std()

# preset name: (model, input, recipe, [(path regex, kind, std or constant)])
CASES = {
    "maxtext": (
        TinyLM(gated=True),
        TOKENS,
        lambda: presets.maxtext(D, HEAD_DIM),
        [
            (r"embed/embedding", "normal", 1.0),
            (r"pos/embedding", "normal", 1.0),
            (ATT + "query/kernel", "normal", 1 / math.sqrt(D) / math.sqrt(HEAD_DIM)),
            (ATT + "(key|value)/kernel", "normal", 1 / math.sqrt(D)),
            (ATT + "out/kernel", "normal", 1 / math.sqrt(HEADS * HEAD_DIM)),
            (r"block\d_mlp_(in|gate)/kernel", "trunc2", 1 / math.sqrt(D)),
            (r"block\d_mlp_out/kernel", "trunc2", 1 / math.sqrt(FF)),
            (r"head/kernel", "trunc2", 1 / math.sqrt(D)),
            (r"head/bias", "const", 0.0),
            (r".*/scale", "const", 1.0),
        ],
    ),
    "t5x": (
        TinyLM(gated=True, pos=False, relpos=True),
        TOKENS,
        lambda: presets.t5x(D, HEAD_DIM),
        [
            (r"embed/embedding", "normal", 1.0),
            (r"rel_embedding", "uniform", math.sqrt(2 / (HEADS + 32))),
            (ATT + "query/kernel", "normal", 1 / math.sqrt(D * HEAD_DIM)),
            (ATT + "(key|value)/kernel", "normal", 1 / math.sqrt(D)),
            (ATT + "out/kernel", "normal", 1 / math.sqrt(HEADS * HEAD_DIM)),
            (r"block\d_mlp_(in|gate)/kernel", "trunc2", 1 / math.sqrt(D)),
            (r"block\d_mlp_out/kernel", "trunc2", 1 / math.sqrt(FF)),
            (r"head/kernel", "trunc2", 1 / math.sqrt(D)),
            (r"head/bias", "const", 0.0),
            (r".*/scale", "const", 1.0),
        ],
    ),
    "nanodo": (
        TinyLM(tied=True),
        TOKENS,
        lambda: presets.nanodo(D),
        [
            (r"(embed|pos)/embedding", "normal", 1 / math.sqrt(D)),
            (
                ATT + "(query|key|value|out)/kernel",
                "uniform",
                math.sqrt(2 / (D + HEADS * HEAD_DIM)),
            ),
            (r"block\d_mlp_(in|out)/kernel", "uniform", math.sqrt(2 / (D + FF))),
            (r".*/scale", "const", 1.0),
        ],
    ),
    "big_vision_vit": (
        TinyViT(),
        IMAGE,
        lambda: presets.big_vision_vit(D, patterns=Patterns(pos="**/pos_embedding")),
        [
            (r"embedding/kernel", "trunc2", 1 / math.sqrt(4 * 4 * 3)),
            (r"pos_embedding", "normal", 1 / math.sqrt(D)),
            (ATT + "(query|key|value|out)/kernel", "uniform", math.sqrt(2 / (D + D))),
            (r"block\d_mlp_(in|out)/kernel", "uniform", math.sqrt(2 / (D + FF))),
            (r"block\d_mlp_(in|out)/bias", "normal", 1e-6),
            (r"head/kernel", "const", 0.0),
            (r"(embedding|head|block\d_attn/\w+|.*ln\d|norm)/bias", "const", 0.0),
            (r".*/scale", "const", 1.0),
        ],
    ),
    "olmo_core": (
        TinyLM(gated=True, pos=False, bias=True),
        TOKENS,
        presets.olmo_core,
        [
            (r"embed/embedding", "trunc3", OLMO_STD),
            (ATT + "(query|key|value|out)/kernel", "trunc3", OLMO_STD),
            (r"block\d_mlp_(in|gate|out)/kernel", "trunc3", OLMO_STD),
            (r"head/kernel", "trunc3", OLMO_STD),
            (r".*/bias", "const", 0.0),
            (r".*/scale", "const", 1.0),
        ],
    ),
}


def line_of(path: str, expected: list[tuple[str, str, float]]) -> int:
    hits = [i for i, (rx, _, _) in enumerate(expected) if re.fullmatch(rx, path)]
    assert len(hits) == 1, f"{path} matches lines {hits} of the reference table"
    return hits[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_preset_rules_give_the_reference_values(name):
    """Without drawing: every parameter of the tiny model is won by a rule, and that rule's
    initializer has the reference spread by its variance law (at the parameter's shape and
    Flax fans), or is the reference constant; every line of the table is used."""
    model, x, make, expected = CASES[name]
    recipe = make()
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    params = {"/".join(str(getattr(k, "key", k)) for k in p): s.shape for p, s in flat}
    won = recipe.paths({"params": shapes})
    assert sorted(won) == sorted(params), "parameters no rule of the preset wins"
    used = set()
    for path, shape in params.items():
        i = line_of(path, expected)
        used.add(i)
        _, kind, value = expected[i]
        init = won[path].init
        if kind == "const":
            assert init == (jaxinit_ones() if value == 1.0 else jaxinit_zeros()), (path, init)
            continue
        fans = compute_fans(shape) if len(shape) >= 2 else (1, 1)  # a bias: no fans
        law = init.variance(*fans, shape=shape)
        np.testing.assert_allclose(law, value**2, rtol=1e-9, err_msg=f"{path}: {init!r}")
    assert used == set(range(len(expected))), "a reference line matched no parameter"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_preset_draws_have_the_reference_spread(name):
    """The recipe drawn with 256 keys (one jitted vmap): per parameter kind, the mean is 0 and
    the variance the reference one within sample-derived tolerances, truncated and uniform
    draws stay inside their bounds, constants are exact."""
    model, x, make, expected = CASES[name]
    check(draws(model, x, make()), expected)


def test_rules_cite_their_source_and_validate_arguments():
    """Every rule says where its value comes from; bad arguments name themselves."""
    for recipe in (
        presets.maxtext(D, HEAD_DIM),
        presets.t5x(D, HEAD_DIM),
        presets.nanodo(D),
        presets.big_vision_vit(D),
        presets.olmo_core(),
    ):
        assert recipe.references and all(r.why for r in recipe.rules), recipe.name
    with pytest.raises(ValueError, match="maxtext: d_model=0"):
        presets.maxtext(0, 8)
    with pytest.raises(ValueError, match=r"olmo_core: std=-0\.02 must be finite and > 0"):
        presets.olmo_core(-0.02)
    with pytest.raises(TypeError, match=r"nanodo: patterns=.* is not a Patterns"):
        presets.nanodo(D, patterns={"embed": "x"})  # pyright: ignore[reportArgumentType]
