"""μP's attention-logit scale: ``jaxinit.mup.attention_fn`` and ``dot_product_attention``
against an explicit softmax(q·k · scale) v written with einsum, and against Flax's own
attention at the base head dimension."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinit.recipes import mup


def _qkv(d, heads=3, length=5):
    keys = jax.random.split(jax.random.key(7), 3)
    return [jax.random.normal(k, (2, length, heads, d)) for k in keys]


def _reference(q, k, v, scale, mask=None):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.parametrize(("d", "base"), [(16, None), (64, 16)])
def test_scale_is_sqrt_base_over_d(d, base):
    q, k, v = _qkv(d)
    expected = (np.sqrt(base) if base else 1.0) / d
    assert mup.attention_scale(d, base) == pytest.approx(expected, rel=1e-15)
    got = mup.dot_product_attention(q, k, v, base_head_dim=base)
    np.testing.assert_allclose(got, _reference(q, k, v, expected), rtol=2e-5, atol=2e-6)


def test_base_head_dim_gives_flax_attention_and_the_mask_passes_through():
    q, k, v = _qkv(16)
    mask = nn.make_causal_mask(jnp.ones((2, 5)))
    got = mup.dot_product_attention(q, k, v, mask=mask, base_head_dim=16)
    np.testing.assert_array_equal(got, nnx.dot_product_attention(q, k, v, mask=mask))
    np.testing.assert_allclose(
        got, _reference(q, k, v, 1 / 4, mask[:, :, :, :] > 0), rtol=2e-5, atol=2e-6
    )


def test_attention_fn_in_linen_and_nnx_modules():
    x = jax.random.normal(jax.random.key(1), (2, 5, 32))
    # linen: the same parameters with the μP function at the base head dim equal Flax's default
    plain = nn.MultiHeadDotProductAttention(num_heads=4)
    variables = plain.init(jax.random.key(0), x)
    at_base = nn.MultiHeadDotProductAttention(num_heads=4, attention_fn=mup.attention_fn(8))
    np.testing.assert_array_equal(at_base.apply(variables, x), plain.apply(variables, x))
    wide = nn.MultiHeadDotProductAttention(num_heads=4, attention_fn=mup.attention_fn(2))
    assert not np.allclose(wide.apply(variables, x), plain.apply(variables, x))
    # NNX: the module's output is the explicit 1/d attention of its own projections
    attn = nnx.MultiHeadAttention(
        num_heads=4,
        in_features=32,
        decode=False,
        rngs=nnx.Rngs(0),
        attention_fn=mup.attention_fn(None),
    )
    out = attn(x)
    expected = attn.out(_reference(attn.query(x), attn.key(x), attn.value(x), 1 / 8))
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "8"])
def test_bad_base_head_dim_is_named(bad):
    with pytest.raises(ValueError, match=r"attention_fn: base_head_dim=.* must be an int >= 1"):
        mup.attention_fn(bad)
    with pytest.raises(ValueError, match=r"attention_scale: head_dim=.* must be an int >= 1"):
        mup.attention_scale(bad)


def test_linen_mask_and_dropout_reach_flax():
    # linen keeps only the keyword arguments an attention_fn's signature names: a causal mask
    # must still apply
    x = jax.random.normal(jax.random.key(1), (2, 5, 32))
    mask = nn.make_causal_mask(jnp.ones((2, 5)))
    plain = nn.MultiHeadDotProductAttention(num_heads=4)
    variables = plain.init(jax.random.key(0), x)
    at_base = nn.MultiHeadDotProductAttention(num_heads=4, attention_fn=mup.attention_fn(8))
    np.testing.assert_array_equal(
        at_base.apply(variables, x, mask=mask), plain.apply(variables, x, mask=mask)
    )
    assert not np.allclose(at_base.apply(variables, x, mask=mask), at_base.apply(variables, x))
    drop = nn.MultiHeadDotProductAttention(
        num_heads=4, dropout_rate=0.5, deterministic=False, attention_fn=mup.attention_fn(8)
    )
    rngs = {"dropout": jax.random.key(3)}
    np.testing.assert_array_equal(
        drop.apply(variables, x, rngs=rngs),
        nn.MultiHeadDotProductAttention(num_heads=4, dropout_rate=0.5, deterministic=False).apply(
            variables, x, rngs=rngs
        ),
    )
