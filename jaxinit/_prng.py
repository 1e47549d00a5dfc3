"""Threefry keys whose random bits compile to one kernel on CPU.

Every random initializer draws through it on CPU, and so do jaxinit's measurement programs
(:func:`jaxinit.layer_stats`, :func:`jaxinit.coord_check`), which initialize a model per seed
inside the compiled program. On CPU, JAX lowers the threefry hash as a loop of five passes over
the counters, and each pass reads and writes whole arrays: a draw of 3072 x 2048 normals runs
at about 50 M/s on a 2-core machine. The same hash written out round by round fuses into one
elementwise kernel that keeps the state in registers: about 190 M/s. It also compiles in about
half the time, which is most of an eager initializer call's first run.

:data:`UNROLLED` is a key implementation with the same key data, seeding, splitting and
folding as JAX's ``threefry2x32`` and that hash for the random bits, so every draw from one
of its keys equals, bit for bit, the draw from the threefry key with the same data
(``tests/test_prng.py`` checks it against ``jax.random``). :func:`for_backend` rewraps a
threefry key where that pays: on CPU, and only where JAX draws partitionable threefry bits
(``jax_threefry_partitionable``, JAX's default), which is the scheme written here.
"""

from __future__ import annotations

import math

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
from jax import lax

_THREEFRY = jex_random.threefry_prng_impl
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
    return lax.shift_left(x, np.uint32(d)) | lax.shift_right_logical(x, np.uint32(32 - d))


def _threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), as ``jax.random`` computes it."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = x1 ^ _rotate_left(x2, r)
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _counters(shape: tuple[int, ...]) -> jax.Array:
    """The low 32 bits of each element's row-major index; the caller keeps sizes below 2**32,
    where the high 32 bits are zero."""
    lo = lax.full(shape, np.uint32(0), np.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        iota = lax.broadcasted_iota(np.uint32, shape, axis)
        lo = lo + (iota if stride == 1 else iota * np.uint32(stride))
        stride *= shape[axis]
    return lo


def _partitionable() -> bool:
    # a context-managed flag: JAX reads it as an attribute, which its Config type does not declare
    return bool(jax.config.jax_threefry_partitionable)  # pyright: ignore[reportAttributeAccessIssue]


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    if not _partitionable() or math.prod(shape) >= 2**32:
        return _THREEFRY.random_bits(key, bit_width, shape)
    lo = _counters(shape)
    b1, b2 = _threefry2x32(key[0], key[1], lax.full(shape, np.uint32(0), np.uint32), lo)
    dtype = _UINT[bit_width]
    if bit_width == 64:
        hi = lax.convert_element_type(b1, dtype)
        return lax.shift_left(hi, np.uint64(32)) | lax.convert_element_type(b2, dtype)
    if bit_width == 32:
        return b1 ^ b2
    return lax.convert_element_type(b1 ^ b2, dtype)


TAG = "threefry2x32_fused"

UNROLLED = jex_random.define_prng_impl(
    key_shape=(2,),
    seed=_THREEFRY.seed,
    split=_THREEFRY.split,
    random_bits=_random_bits,
    fold_in=_THREEFRY.fold_in,
    name="threefry2x32 with one-kernel random bits",
    tag=TAG,
)


# JAX's threefry under another tag, which :func:`for_backend` leaves alone: its draws are JAX's
# own lowering of the hash, the reference the tests and ``experiments/bench_init.py`` compare with.
JAX_LOWERING = jex_random.define_prng_impl(
    key_shape=(2,),
    seed=_THREEFRY.seed,
    split=_THREEFRY.split,
    random_bits=_THREEFRY.random_bits,
    fold_in=_THREEFRY.fold_in,
    name="JAX's threefry2x32 under a tag jaxinit does not rewrap",
    tag="threefry2x32_jax_lowering",
)


def is_unrolled(key: jax.Array) -> bool:
    """Whether ``key`` (a typed key array) is of :data:`UNROLLED`."""
    return str(jax.random.key_impl(key)) == TAG


def for_backend(key: jax.Array, backend: str | None = None) -> jax.Array:
    """``key`` as an :data:`UNROLLED` key with the same data where ``backend`` (default:
    JAX's default backend) is CPU and ``key`` is a threefry key drawing partitionable bits (a
    typed key, or a raw ``uint32`` key while threefry is JAX's default implementation);
    otherwise ``key`` itself. Draws from either give the same numbers."""
    if (backend or jax.default_backend()) != "cpu" or not _partitionable():
        return key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != "threefry2x32":
            return key
        return jax.random.wrap_key_data(jax.random.key_data(key), impl=UNROLLED)
    # a raw key is drawn from with JAX's default implementation
    if jax.config.jax_default_prng_impl != "threefry2x32":  # pyright: ignore[reportAttributeAccessIssue]
        return key
    return jax.random.wrap_key_data(key, impl=UNROLLED)
