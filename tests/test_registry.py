"""Invariants every public initializer keeps: shape, dtype, determinism, jit/vmap, zero size.

``REGISTRY`` holds one configured instance of every public initializer with a shape it accepts;
``test_registry_is_complete`` makes sure a new public factory cannot be added without an entry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinit
from jaxinit import _prng
from jaxinit._base import Init


@dataclass(frozen=True)
class Entry:
    init: jaxinit.Initializer
    shape: tuple[int, ...]
    random: bool = True  # the output depends on the key
    complex_ok: bool = True  # complex64 is accepted
    any_dtype: bool = False  # integer dtypes are accepted (fills)
    factory: str = ""  # the public factory name, when not the registry key


# Shapes and configurations are those of the per-module tests (Dense (256, 512), conv
# (3, 3, 64, 128), ...): a jaxinit initializer compiles one program per (configuration, shape,
# dtype), shared across test files, so the invariants here cost little beyond jit and vmap.
DENSE, CONV = (256, 512), (3, 3, 64, 128)

REGISTRY: dict[str, Entry] = {
    "constant": Entry(jaxinit.constant(2.0), DENSE, random=False, any_dtype=True),
    "zeros": Entry(jaxinit.zeros(), DENSE, random=False, any_dtype=True),
    "ones": Entry(jaxinit.ones(), DENSE, random=False, any_dtype=True),
    "normal": Entry(jaxinit.normal(0.3, mean=0.2), DENSE),
    "uniform": Entry(jaxinit.uniform(-0.3, 0.7), DENSE, complex_ok=False),
    "truncated_normal": Entry(jaxinit.truncated_normal(0.3), DENSE),
    "variance_scaling_conv": Entry(
        jaxinit.variance_scaling(2.0, "fan_avg", "truncated_normal"),
        CONV,
        factory="variance_scaling",
    ),
    "lecun_normal": Entry(jaxinit.lecun_normal(), DENSE),
    "lecun_uniform": Entry(jaxinit.lecun_uniform(), DENSE),
    "glorot_normal": Entry(jaxinit.glorot_normal(gain=5 / 3), DENSE),
    "glorot_uniform": Entry(jaxinit.glorot_uniform(), DENSE),
    "he_normal": Entry(jaxinit.he_normal(mode="fan_out"), DENSE),
    "he_uniform": Entry(jaxinit.he_uniform(activation="leaky_relu", negative_slope=0.2), DENSE),
    "torch_default": Entry(jaxinit.torch_default(), DENSE),
    "orthogonal": Entry(jaxinit.orthogonal(), (128, 256)),
    "delta_orthogonal": Entry(jaxinit.delta_orthogonal(1.5), (3, 3, 16, 32)),
    "identity": Entry(jaxinit.identity(2.0), (6, 10), random=False),
    "identity_conv": Entry(jaxinit.identity(), (3, 3, 8, 8), random=False, factory="identity"),
    "sparse": Entry(jaxinit.sparse(0.9), DENSE, complex_ok=False),
    "zero_hadamard": Entry(jaxinit.zero_hadamard(), (96, 200), random=False, complex_ok=False),
    "id_init": Entry(jaxinit.id_init(), (96, 200), random=False, complex_ok=False),
    "id_init_noise": Entry(
        jaxinit.id_init(1.0, 0.01), (3, 3, 16, 8), complex_ok=False, factory="id_init"
    ),
    "torch_bias_default": Entry(jaxinit.torch_bias_default(fan_in=4), (2**17,), complex_ok=False),
    "prior_bias": Entry(
        jaxinit.prior_bias([10, 5, 5, 100, 100]), (5,), random=False, complex_ok=False
    ),
}

NAMES = sorted(REGISTRY)
RANDOM = [n for n in NAMES if REGISTRY[n].random]
KEY = jax.random.key(1)
EPS32 = float(jnp.finfo(jnp.float32).eps)


def _factories() -> dict[str, object]:
    """Every public callable of jaxinit that returns an Initializer (the factories)."""
    return {
        name: obj
        for name, obj in vars(jaxinit).items()
        if not name.startswith("_") and callable(obj) and hasattr(obj, "__wrapped__")
    }


def _zero_size(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape with no input features (axis -2), or an empty bias for rank 1."""
    if len(shape) == 1:
        return (0,)
    return (*shape[:-2], 0, shape[-1])


def test_registry_is_complete():
    """Every public factory has an entry; aliases (xavier_*, kaiming_*) are the same function
    objects as glorot_*/he_* and are covered by them."""
    covered = {getattr(jaxinit, e.factory or n) for n, e in REGISTRY.items()}
    missing = {name for name, f in _factories().items() if f not in covered}
    assert not missing, f"public initializers without a REGISTRY entry: {sorted(missing)}"
    for name, entry in REGISTRY.items():
        assert isinstance(entry.init, jaxinit.Initializer), name
        assert isinstance(entry.init, Init), name


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_default_dtype(name):
    e = REGISTRY[name]
    w = e.init(KEY, e.shape)
    assert w.shape == e.shape
    assert w.dtype == jnp.float32
    assert bool(jnp.isfinite(w).all())
    # A shape can be any sequence of ints: list and NumPy ints as well as a tuple.
    w2 = e.init(KEY, [np.int64(d) for d in e.shape])
    np.testing.assert_array_equal(w2, w)


# Low precision and complex outputs are checked statistically per family in the module tests
# (test_basic, test_variance_scaling, test_orthogonal, ...); here, for every entry, under -m slow
# (each dtype compiles a new program).
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_dtypes(name):
    e = REGISTRY[name]
    for dtype in (jnp.bfloat16, jnp.float16):
        w = e.init(KEY, e.shape, dtype)
        assert w.dtype == dtype and w.shape == e.shape
        assert bool(jnp.isfinite(w).all())


@pytest.mark.parametrize("name", [n for n in NAMES if not REGISTRY[n].complex_ok])
def test_complex_dtype_rejected(name):
    """Initializers without a complex version say so, naming the dtype."""
    with pytest.raises(TypeError, match=r"dtype=complex64 is complex, which .* does not support"):
        REGISTRY[name].init(KEY, REGISTRY[name].shape, jnp.complex64)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].complex_ok])
def test_complex_dtype(name):
    e = REGISTRY[name]
    w = e.init(KEY, e.shape, jnp.complex64)
    assert w.dtype == jnp.complex64 and w.shape == e.shape
    assert bool(jnp.isfinite(w).all())


@pytest.mark.parametrize("name", NAMES)
def test_integer_dtype(name):
    """Random weights cannot be integers: every initializer but the fills refuses, naming the
    dtype and what is accepted."""
    e = REGISTRY[name]
    if e.any_dtype:
        w = e.init(KEY, e.shape, jnp.int32)
        assert w.dtype == jnp.int32
        return
    with pytest.raises(TypeError, match=r"dtype=int32 is not supported; use a floating dtype"):
        e.init(KEY, e.shape, jnp.int32)
    with pytest.raises(TypeError, match=r"dtype=bool is not supported"):
        e.init(KEY, e.shape, jnp.bool_)


@pytest.mark.parametrize("name", NAMES)
def test_negative_dimension(name):
    e = REGISTRY[name]
    bad = (*e.shape[:-1], -1)
    with pytest.raises(ValueError, match=r"shape=\(.*-1,?\) has a negative dimension"):
        e.init(KEY, bad)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=str)
@pytest.mark.parametrize("name", [n for n in NAMES if n != "prior_bias"])
def test_zero_size_shape(name, dtype):
    """Zero-size shapes give empty arrays of the requested dtype (also under jit). prior_bias
    is excluded: its shape is fixed by the number of classes (see test_bias)."""
    e = REGISTRY[name]
    shape = _zero_size(e.shape)
    w = e.init(KEY, shape, dtype)
    assert w.shape == shape and w.dtype == dtype and w.size == 0
    wj = jax.eval_shape(lambda k: e.init(k, shape, dtype), KEY)
    assert wj.shape == shape and wj.dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_key(name):
    e = REGISTRY[name]
    a, b = e.init(jax.random.key(7), e.shape), e.init(jax.random.key(7), e.shape)
    np.testing.assert_array_equal(a, b)
    if e.random:
        d = e.init(jax.random.key(8), e.shape)
        assert not np.array_equal(a, d), "a different key gave the same draw"


@pytest.mark.parametrize("name", ["normal", "orthogonal", "sparse"])
def test_raw_uint32_key(name):
    """The legacy raw uint32 key (jax.random.PRNGKey) is accepted and gives the draw of the
    typed key with the same seed."""
    e = REGISTRY[name]
    np.testing.assert_array_equal(
        e.init(jax.random.PRNGKey(7), e.shape), e.init(jax.random.key(7), e.shape)
    )


@pytest.mark.parametrize("name", RANDOM)
def test_rejects_non_key(name):
    e = REGISTRY[name]
    with pytest.raises(TypeError, match=r"key=0 is not a PRNG key"):
        e.init(0, e.shape)


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_eager(name):
    """jit and eager agree to a few float32 ulps (DESIGN.md). An outer jit may fuse ``std * z``
    differently from the eager call, so we allow 10 ulps of each value (``rtol = 10 eps``) plus
    10 ulps of the array's scale for values near zero. (Eager calls are themselves compiled,
    so in practice they agree bitwise.)"""
    e = REGISTRY[name]
    eager = np.asarray(e.init(KEY, e.shape))
    jitted = np.asarray(jax.jit(e.init, static_argnums=1)(KEY, e.shape))
    scale = np.abs(eager).max()
    np.testing.assert_allclose(jitted, eager, rtol=10 * EPS32, atol=10 * EPS32 * scale)


_DRAWS_BY_DEFAULT = ("normal", "truncated_normal", "orthogonal", "sparse")


@pytest.mark.parametrize(
    "name",
    [n if n in _DRAWS_BY_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in RANDOM],
)
def test_random_initializers_draw_what_jax_threefry_draws(name):
    e = REGISTRY[name]
    # the same key data drawn through JAX's lowering of threefry (tests/test_prng.py checks it)
    reference = jax.random.wrap_key_data(jax.random.key_data(KEY), impl=_prng.JAX_LOWERING)
    for key in (KEY, jax.random.key_data(KEY)):  # a typed key and a raw one
        np.testing.assert_array_equal(e.init(key, e.shape), e.init(reference, e.shape))

    # On CPU the draws come from the one-kernel hash (JAX's runs its rounds in a loop there).
    def draws_fused(key):
        return f"key<{_prng.TAG}>" in str(jax.make_jaxpr(lambda k: e.init(k, e.shape))(key))

    assert draws_fused(KEY) == (jax.default_backend() == "cpu")
    assert not draws_fused(reference)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_matches_loop_bitwise(name):
    """``jax.vmap`` over keys gives exactly the arrays a Python loop over the same keys does,
    bitwise, on CPU: the batched program computes each element with the same operations."""
    e = REGISTRY[name]
    keys = jax.random.split(KEY, 4)
    batched = jax.vmap(lambda k: e.init(k, e.shape))(keys)
    assert batched.shape == (4, *e.shape)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], e.init(keys[i], e.shape))


@pytest.mark.parametrize("name", sorted(_factories()))
def test_factory_called_as_initializer(name):
    """``jaxinit.he_normal(key, shape)`` (what Flax does with ``kernel_init=jaxinit.he_normal``,
    no parentheses) fails with a message saying to call the factory first."""
    factory = _factories()[name]
    real = factory.__wrapped__.__name__  # aliases (xavier_*, kaiming_*) report glorot_*/he_*
    for key in (jax.random.key(0), jax.random.PRNGKey(0)):
        with pytest.raises(TypeError, match=rf"{real} is a factory, not an initializer"):
            factory(key, (3, 4))
        with pytest.raises(TypeError, match=rf"kernel_init=jaxinit\.{real}\("):
            factory(key, (3, 4), jnp.float32)


@pytest.mark.parametrize("name", NAMES)
def test_repr_names_the_factory(name):
    e = REGISTRY[name]
    factory = e.factory or name
    # Aliases (xavier_*, kaiming_*) are the same factory as glorot_*/he_*.
    expected = getattr(jaxinit, factory).__wrapped__.__name__
    assert repr(e.init).startswith(f"jaxinit.{expected}(")


def test_signatures_are_documented():
    """Every public factory has a docstring with an Example (run as a doctest)."""
    for name, f in _factories().items():
        doc = inspect.getdoc(f) or ""
        assert "Example:" in doc, f"{name} has no doctest example"


@pytest.mark.parametrize("name", ["normal", "truncated_normal", "he_uniform", "orthogonal"])
def test_x64_default_dtype_and_precision(name):
    """Under jax_enable_x64, dtype=None means float64 and the draw is made in float64 (values
    not representable in float32 appear)."""
    e = REGISTRY[name]
    with jax.enable_x64(True):
        w = np.asarray(e.init(KEY, e.shape))
    assert w.dtype == np.float64
    assert (w.astype(np.float32).astype(np.float64) != w).any()
