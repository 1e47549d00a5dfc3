"""jaxinit._prng: the fused threefry key draws what jax.random's threefry key draws, bit for
bit, and compiles its bits to one kernel where JAX's CPU lowering loops."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinit import _prng

SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (257, 3)]


def _fused(key):
    return jax.random.wrap_key_data(jax.random.key_data(key), impl=_prng.UNROLLED)


def test_hash_known_answers():
    # Random123's known-answer vectors for threefry2x32 with 20 rounds (kat_vectors), the
    # ones jax's random tests use.
    cases = [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, count, expected in cases:
        k1, k2, x1, x2 = (jnp.uint32(v) for v in (*key, *count))
        out = tuple(int(v) for v in _prng._threefry2x32(k1, k2, x1, x2))
        assert out == expected


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.uint16, jnp.uint32])
def test_bits_equal_threefry(dtype):
    key = jax.random.key(11)
    for shape in SHAPES:
        want = jax.random.bits(key, shape, dtype)
        got = jax.jit(lambda k, s=shape: jax.random.bits(k, s, dtype))(_fused(key))
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_distributions_split_fold_in_and_vmap_equal_threefry():
    key = jax.random.key(3)
    fused = _fused(key)

    def draws(k):
        a, b = jax.random.split(jax.random.fold_in(k, 7))
        return (
            jax.random.normal(a, (33, 17)),
            jax.random.truncated_normal(b, -2.0, 2.0, (5, 9)),
            jax.random.uniform(b, (8,), minval=-1.0, maxval=1.0),
            jax.random.randint(a, (6, 4), 0, 1000),
            jax.random.permutation(b, 50),
            jax.random.orthogonal(a, 6),
        )

    for got, want in zip(jax.jit(draws)(fused), draws(key), strict=True):
        np.testing.assert_array_equal(got, want)
    # under vmap, each key draws its own numbers, as a loop over the keys does
    keys = jax.random.split(fused, 4)
    batched = jax.vmap(lambda k: jax.random.normal(k, (3, 5)))(keys)
    for i, k in enumerate(jax.random.split(key, 4)):
        np.testing.assert_array_equal(batched[i], jax.random.normal(k, (3, 5)))


def test_flax_inits_equal_threefry():
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(24)(x))
            return nn.Dense(3, kernel_init=nn.initializers.orthogonal())(x)

    x = jnp.ones((2, 10))
    key = jax.random.key(5)
    want = MLP().init(key, x)
    got = MLP().init(_fused(key), x)
    jax.tree.map(np.testing.assert_array_equal, got, want)

    a = nnx.Linear(10, 12, rngs=nnx.Rngs(_fused(key)))
    b = nnx.Linear(10, 12, rngs=nnx.Rngs(key))
    np.testing.assert_array_equal(a.kernel[...], b.kernel[...])


def test_fused_bits_have_no_loop_on_cpu():
    # JAX's CPU lowering of threefry runs its rounds in a while loop over whole arrays; the
    # fused key's bits are one elementwise computation
    def hlo(key):
        fn = jax.jit(lambda k: jax.random.bits(k, (64, 48)))
        return fn.lower(key).compile().as_text()

    key = jax.random.key(0, impl="threefry2x32")
    assert " while(" in hlo(jax.device_put(key, jax.devices("cpu")[0]))
    assert " while(" not in hlo(jax.device_put(_fused(key), jax.devices("cpu")[0]))


def test_for_backend():
    key = jax.random.key(2)
    fused = _prng.for_backend(key, "cpu")
    assert _prng.is_unrolled(fused) and not _prng.is_unrolled(key)
    np.testing.assert_array_equal(jax.random.key_data(fused), jax.random.key_data(key))
    # elsewhere JAX's own lowering is already unrolled: the key is returned as given
    assert _prng.for_backend(key, "gpu") is key
    rbg = jax.random.key(2, impl="rbg")
    assert _prng.for_backend(rbg, "cpu") is rbg
    with jax.threefry_partitionable(False):
        assert _prng.for_backend(key, "cpu") is key
    # a raw uint32 key is drawn from with JAX's default implementation
    raw = jax.random.PRNGKey(2)
    np.testing.assert_array_equal(jax.random.key_data(_prng.for_backend(raw, "cpu")), raw)
    assert _prng.is_unrolled(_prng.for_backend(raw, "cpu"))
    with jax.default_prng_impl("rbg"):
        raw_rbg = jax.random.PRNGKey(2)
        assert _prng.for_backend(raw_rbg, "cpu") is raw_rbg


def test_jax_lowering_reference_is_jax_threefry_and_left_alone():
    key = jax.random.key(5)
    ref = jax.random.wrap_key_data(jax.random.key_data(key), impl=_prng.JAX_LOWERING)
    assert _prng.for_backend(ref, "cpu") is ref
    np.testing.assert_array_equal(jax.random.bits(ref, (9, 4)), jax.random.bits(key, (9, 4)))
    # JAX's CPU lowering: the rounds in a loop
    cpu_ref = jax.device_put(ref, jax.devices("cpu")[0])
    hlo = jax.jit(lambda k: jax.random.bits(k, (64, 48))).lower(cpu_ref).compile().as_text()
    assert " while(" in hlo


def test_fallbacks_are_jax_threefry():
    key = jax.random.key(9)
    fused = _fused(key)
    # JAX's other (non-partitionable) bit layout: the fused key defers to JAX
    with jax.threefry_partitionable(False):
        np.testing.assert_array_equal(
            jax.random.normal(fused, (5, 7)), jax.random.normal(key, (5, 7))
        )
    # 2**32 elements or more: the high counter word is not zero; JAX's hash is used (on CPU,
    # its rounds in a loop), lowered only: the array is never made
    cpu_key = jax.device_put(fused, jax.devices("cpu")[0])

    def lowered(shape):
        return jax.jit(lambda k: jax.random.bits(k, shape)).lower(cpu_key).as_text()

    assert "stablehlo.while" in lowered((2**16, 2**16))
    assert "stablehlo.while" not in lowered((2**8, 2**8))
