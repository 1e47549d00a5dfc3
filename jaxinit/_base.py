"""Machinery shared by every initializer: the callable type, the factory guard, dtype and
shape checks, and the sampling dtype used for low precision."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _prng
from ._checks import check_int, check_key, check_shape, is_key, is_typed_key, short
from ._types import DTypeLike

VarianceLaw = Callable[[int, int, tuple[int, ...] | None], float]
"""``(fan_in, fan_out, shape or None) -> Var(w)``: an initializer's variance law."""

Fits = Callable[[tuple[int, ...], np.dtype], object]
"""``(shape, dtype) -> None``: raises a ValueError if the values an initializer would give for
``shape`` do not fit in ``dtype`` (see :func:`check_reach`, :func:`check_fill`)."""

_ACCEPTED_DTYPES = "a floating dtype (float32, float64, bfloat16, float16) or complex64/complex128"


def default_dtype() -> np.dtype:
    """float32, or float64 when ``jax_enable_x64`` is on."""
    return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def resolve_dtype(
    name: str, dtype: DTypeLike | None, *, complex_ok: bool = True, any_dtype: bool = False
) -> np.dtype:
    """The dtype an initializer returns, checked to be floating (or complex if allowed)."""
    if dtype is None:
        return default_dtype()
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name}: dtype={dtype!r} is not a dtype; use {_ACCEPTED_DTYPES}.") from err
    if any_dtype:
        return dt
    if jnp.issubdtype(dt, jnp.floating):
        if not float(jnp.finfo(dt).min) < 0:
            raise TypeError(
                f"{name}: dtype={dt} has no negative values or zero (an exponent-only "
                f"scale format), so it cannot hold weights; use {_ACCEPTED_DTYPES}."
            )
        return dt
    if jnp.issubdtype(dt, jnp.complexfloating):
        if complex_ok:
            return dt
        raise TypeError(
            f"{name}: dtype={dt} is complex, which {name} does not support; use a "
            "floating dtype (float32, float64, bfloat16, float16)."
        )
    raise TypeError(
        f"{name}: dtype={dt} is not supported; use {_ACCEPTED_DTYPES}. "
        "Random weights cannot be represented in an integer or boolean dtype."
    )


def sample_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype random draws are made in before casting to ``dtype``.

    bfloat16/float16 are drawn in float32 (so draws keep their tails and have no quantization
    bias), float64/complex128 in themselves (under x64), other complex types in complex64.
    """
    if dtype in (np.dtype(np.float64), np.dtype(np.complex128)):
        return dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return np.dtype(np.complex64)
    return np.dtype(np.float32)


# Thin wrappers over jax.random in the initializers' argument order. Draws are made in the
# weight's own shape, never flattened and reshaped: under a sharded jit XLA then generates
# each shard on its device, with values bitwise equal to the unsharded draw (a flat draw
# reshaped differs by an ulp when sharded).


def random_normal(key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)`` behind an optimization barrier.

    ``jax.random.normal`` ends in ``sqrt(2) * erfinv(u)``; without the barrier XLA may fold a
    following ``stddev *`` into that constant in one compilation (e.g. a sharded jit with an
    explicit mesh) and not in another, so the same key gave values an ulp apart."""
    return jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype))


def random_uniform(
    key: jax.Array,
    shape: tuple[int, ...],
    dtype: DTypeLike,
    minval: float = 0.0,
    maxval: float = 1.0,
) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``.

    Where ``maxval - minval`` overflows ``dtype`` (bounds near its largest value, e.g.
    ``-3e38`` and ``3e38`` in float32), ``minval + u (maxval - minval)`` would be inf: the
    draw is then made around the midpoint, from half-widths that fit."""
    if maxval - minval > float(jnp.finfo(dtype).max):
        half, mid = maxval / 2 - minval / 2, minval / 2 + maxval / 2
        return mid + half * jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    return jax.random.uniform(key, shape, dtype, minval, maxval)


def random_truncated_normal(
    key: jax.Array, lower: float, upper: float, shape: tuple[int, ...], dtype: DTypeLike
) -> jax.Array:
    """``jax.random.truncated_normal(key, lower, upper, shape, dtype)``."""
    return jax.random.truncated_normal(key, lower, upper, shape, dtype)


def real_dtype(dtype: np.dtype) -> np.dtype:
    """float32 for complex64, float64 for complex128, else ``dtype`` itself."""
    return np.dtype(jnp.finfo(dtype).dtype)


def factory(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Guard a factory against being used as an initializer.

    ``nn.Dense(4, kernel_init=jaxinit.he_normal)`` (without parentheses) makes Flax call
    ``he_normal(key, shape, dtype)``; the guard turns that into a message saying what to write.
    """

    required = any(
        p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in inspect.signature(fn).parameters.values()
    )
    call = f"jaxinit.{fn.__name__}({'...' if required else ''})"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # A typed key is never a factory argument; a raw uint32 key of shape (2,) could be
        # (``constant(np.array([1, 2], np.uint32))``), so it counts only when a shape follows.
        first = args[0] if args else None
        if args and is_key(first) and (len(args) >= 2 or is_typed_key(first)):
            raise TypeError(
                f"{fn.__name__} is a factory, not an initializer: it was called with a PRNG key. "
                f"Call it first, e.g. kernel_init={call}, then init(key, shape)."
            )
        return fn(*args, **kwargs)

    return wrapper


class Init:
    """An :class:`~jaxinit.Initializer` built by a jaxinit factory.

    Calling it checks the key, shape and dtype, runs ``check(shape)`` (the initializer's own
    shape requirements: rank, axes, number of classes), returns an empty array for zero-size
    shapes and otherwise calls ``sample(key, shape, dtype)`` compiled with ``jax.jit`` (shape
    and dtype static). Compiling the whole draw makes an eager call one XLA program instead of
    one per operation (much faster on first use) and makes eager and jitted calls agree
    bitwise; under an outer ``jit``/``vmap`` it is inlined as usual.

    ``fits(shape, dtype)``, when given, refuses (ValueError) a draw or fill whose values do not
    fit in the output dtype, before anything is computed: the cast to ``dtype`` is where an
    overflow would turn into inf, NaN (float8) or a wrapped integer.

    ``ident`` is a hashable value that determines what ``sample`` computes (default: ``name``
    and ``params``). Initializers with equal ``ident`` compare equal and share compiled
    programs, so a model whose layers each make their own ``he_normal()`` compiles the draw
    once per shape, and ``lecun_normal() == variance_scaling(1.0)``. ``repr`` shows the factory
    call that made it.
    """

    # ``__weakref__`` lets ``jax.jit(init)`` cache on the initializer object.
    __slots__ = (
        "__weakref__",
        "_any_dtype",
        "_check",
        "_complex_ok",
        "_fits",
        "_ident",
        "_name",
        "_params",
        "_random",
        "_sample",
        "_variance",
    )

    def __init__(
        self,
        name: str,
        sample: Callable[[jax.Array | None, tuple[int, ...], np.dtype], jax.Array],
        params: dict[str, Any],
        *,
        complex_ok: bool = True,
        random: bool = True,
        any_dtype: bool = False,
        check: Callable[[tuple[int, ...]], object] | None = None,
        ident: Hashable = None,
        variance: VarianceLaw | None = None,
        fits: Fits | None = None,
    ):
        self._name = name
        self._variance = variance
        self._fits = fits
        self._check = check
        self._sample = sample
        self._params = params
        self._complex_ok = complex_ok
        self._random = random
        self._any_dtype = any_dtype
        self._ident = (name, tuple(params.items())) if ident is None else ident
        hash(self._ident)  # fail here, not inside jit, if a factory passes an unhashable ident

    def __call__(
        self, key: jax.Array, shape: Sequence[int], dtype: DTypeLike | None = None
    ) -> jax.Array:
        name = self._name
        if self._random:
            check_key(name, key)
        shape = check_shape(name, shape)
        dt = resolve_dtype(name, dtype, complex_ok=self._complex_ok, any_dtype=self._any_dtype)
        if self._check is not None:
            self._check(shape)
        if math.prod(shape) == 0:
            return jnp.zeros(shape, dt)
        if self._fits is not None:  # static values only, so it also runs under jit
            self._fits(shape, dt)
        if self._random:
            # The same numbers as the key's own draws, from a hash that compiles and runs
            # faster on CPU (see jaxinit._prng).
            return _sample_random(self, _prng.for_backend(key), shape, dt)
        # The key is ignored and may be anything (None, an int): keep it out of the trace.
        return _sample_fixed(self, shape, dt)

    def variance(self, fan_in: int, fan_out: int, *, shape: Sequence[int] | None = None) -> float:
        """The variance ``Var(w)`` of one weight element, as the initializer's law gives it.

        For a kernel whose elements are not identically distributed (``delta_orthogonal``,
        ``identity``) it is the average over the elements, so ``fan_in * variance`` is the
        signal gain ``sigma_w^2`` of mean-field theory in every case
        (:func:`jaxinit.meanfield.sigma_w`). Each initializer's docstring states its law;
        laws that do not use the fans ignore them.

        Args:
          fan_in: The weight's fan-in, an int >= 1, as :func:`jaxinit.compute_fans` gives it
            (for a conv kernel it includes the receptive field).
          fan_out: The weight's fan-out, an int >= 1.
          shape: The weight's shape, for laws that need more than the fans (``orthogonal``
            of a conv kernel); other laws ignore it.

        Returns:
          ``Var(w)`` as a Python float.

        Raises:
          ValueError: If a fan is not an int >= 1, or the initializer has no variance law
            (``prior_bias``: its values come from data).

        Example:
          >>> import jaxinit
          >>> round(jaxinit.he_normal().variance(256, 512) * 256, 12)  # 2 / fan_in
          2.0
          >>> jaxinit.uniform(-1.0, 1.0).variance(256, 512)  # (high - low)^2 / 12
          0.3333333333333333
        """
        name = self._name
        fans = [
            check_int(f"{name}.variance", arg, value, 1)
            for arg, value in (("fan_in", fan_in), ("fan_out", fan_out))
        ]
        dims = None if shape is None else check_shape(f"{name}.variance", shape)
        if self._variance is None:
            raise ValueError(
                f"{name} has no variance law; compute sqrt(fan_in * Var(w)) from samples."
            )
        return float(self._variance(fans[0], fans[1], dims))

    @property
    def name(self) -> str:
        """The factory's name, as ``repr`` shows it: ``"he_normal"``, ``"zeros"``.

        Example:
          >>> import jaxinit
          >>> jaxinit.he_normal().name, jaxinit.truncated_normal(0.02).name
          ('he_normal', 'truncated_normal')
        """
        return self._name

    @property
    def params(self) -> dict[str, Any]:
        """The factory's arguments, as ``repr`` shows them (a new dict on each access).

        Example:
          >>> import jaxinit
          >>> jaxinit.truncated_normal(0.02).params
          {'stddev': 0.02, 'lower': -2.0, 'upper': 2.0}
        """
        return dict(self._params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"jaxinit.{self._name}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Init) and self._ident == other._ident

    def __hash__(self) -> int:
        return hash(self._ident)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _sample_random(init: Init, key: jax.Array, shape: tuple[int, ...], dtype: np.dtype):
    return init._sample(key, shape, dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sample_fixed(init: Init, shape: tuple[int, ...], dtype: np.dtype):
    return init._sample(None, shape, dtype)


def dtype_interval(
    lo: float, hi: float, dtype: np.dtype, *, open_lo: bool, open_hi: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest values of ``dtype`` inside the interval from ``lo`` to ``hi``
    (each end open or closed), as 0-d arrays of ``dtype``. Clipping to them after a cast keeps
    a sample inside the interval in the output dtype, where rounding could push it onto or past
    a bound."""
    dt = real_dtype(dtype)
    # Infinite bounds become the dtype's largest finite values: float8 types have no inf
    # (casting one gives NaN, and a NaN bound would make every sample NaN).
    top = float(jnp.finfo(dt).max)
    a = np.asarray(min(max(lo, -top), top)).astype(dt)
    b = np.asarray(min(max(hi, -top), top)).astype(dt)
    up, down = np.asarray(top).astype(dt), np.asarray(-top).astype(dt)
    if float(a) < lo or (open_lo and float(a) == lo):
        a = np.nextafter(a, up)
    if float(b) > hi or (open_hi and float(b) == hi):
        b = np.nextafter(b, down)
    return a, b


def clip_into(
    x: jax.Array,
    lo: float,
    hi: float,
    dtype: np.dtype,
    *,
    open_lo: bool = True,
    open_hi: bool = True,
) -> jax.Array:
    """Cast ``x`` to ``dtype`` and keep it inside the interval from ``lo`` to ``hi``."""
    a, b = dtype_interval(lo, hi, dtype, open_lo=open_lo, open_hi=open_hi)
    return jnp.clip(x.astype(dtype), jnp.asarray(a), jnp.asarray(b))


# --------------------------------------------------------------------------------------------
# what fits in a dtype: every initializer's values are checked against the dtype they are cast
# to, from the static arguments, before anything is drawn


def _solve_tail(p: float) -> float:
    """The z >= 0 with ``P(Z > z) = p`` for a standard normal Z (bisection on erfc)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 0.5 * math.erfc(mid / math.sqrt(2)) > p else (lo, mid)
    return hi


# The sampler's extreme values are computed to ~1e-12; the margin covers the rounding of
# erfinv/ndtri in the sampling dtype (a few ulps).
_MARGIN = 1 + 1e-3


@functools.lru_cache(maxsize=8)
def normal_reach(sd: np.dtype) -> float:
    """The largest ``|z|`` ``jax.random.normal`` can return when drawing in the real dtype
    ``sd``: it maps a uniform draw in ``[nextafter(-1, 0), 1)`` through ``sqrt(2) erfinv``, so
    the extreme is ``sqrt(2) erfinv(-1 + ulp)``: 5.42 for float32, 8.29 for float64."""
    ulp = 1.0 + float(np.nextafter(np.asarray(-1.0, sd), np.asarray(0.0, sd)))
    return _solve_tail(ulp / 2) * _MARGIN


@functools.lru_cache(maxsize=8)
def tail_reach(sd: np.dtype) -> float:
    """The largest ``|z|`` a one-sided truncated draw (inverse CDF of a probability >= the
    smallest normal number of ``sd``) can return: 12.95 for float32, 37.5 for float64."""
    return _solve_tail(float(jnp.finfo(sd).tiny)) * _MARGIN


def largest(dtype: np.dtype) -> float:
    """The largest finite value of ``dtype`` (of its real part for complex dtypes), as the
    arrays made with it hold it (float64 is float32 without ``jax_enable_x64``)."""
    dt = np.dtype(jax.dtypes.canonicalize_dtype(real_dtype(dtype)))
    return float(jnp.finfo(dt).max)


def check_reach(
    name: str,
    dtype: np.dtype,
    reach: float,
    arg: str,
    value: Any,
    limit: float | None,
    shape: tuple[int, ...] | None = None,
) -> None:
    """A ValueError if values up to ``reach`` in magnitude (what ``arg=value`` lets the draw
    reach, for ``shape`` when the reach depends on it) exceed the largest finite value of
    ``dtype``, where the cast would give inf (NaN in float8 types without inf). ``limit`` is the
    largest ``arg`` the dtype accepts, for the message."""
    top = largest(dtype)
    if reach <= top:
        return
    where = "" if shape is None else f" for shape={shape}"
    dt = np.dtype(dtype).name
    use = f"|{arg}| <= {limit:.4g}, or a wider dtype" if limit is not None else "a wider dtype"
    raise ValueError(
        f"{name}: {arg}={short(value)} lets values reach {reach:.4g} in magnitude{where}, "
        f"beyond the largest finite {dt} ({top:.6g}), where the cast would give inf or NaN; "
        f"for dtype={dt} use {use}."
    )


def bounded_by(name: str, scale: float) -> Fits:
    """The ``fits`` of an initializer whose values never exceed ``|scale|`` in magnitude
    (orthogonal and identity matrices times ``scale``)."""

    def fits(shape: tuple[int, ...], dtype: np.dtype) -> None:
        check_reach(name, dtype, abs(scale), "scale", scale, largest(dtype))

    return fits


def check_fill(name: str, arr: np.ndarray, dtype: np.dtype) -> None:
    """A ValueError unless every element of ``arr`` is kept by a cast to ``dtype``: integers in
    range for integer dtypes (not fractions, which the cast would truncate), 0 or 1 for bool,
    real values for real dtypes, and values within the dtype's finite range for floating and
    complex dtypes (rounding to the nearest representable value is allowed)."""
    dt = np.dtype(dtype)
    shown = repr(arr.item()) if arr.ndim == 0 else f"<array of shape {arr.shape}>"
    kind = arr.dtype.kind

    def refuse(bad: Any, accepted: str, why: str) -> ValueError:
        at = "" if arr.ndim == 0 else f" holds {bad!r}, which"
        return ValueError(
            f"{name}: value={shown}{at} does not fit dtype={dt.name} ({why}); it takes {accepted}."
        )

    if kind == "c" and dt.kind != "c":
        nonzero = np.imag(arr) != 0
        if np.any(nonzero):
            bad = complex(arr[nonzero].flat[0])
            raise refuse(bad, "real values", "the cast drops the imaginary part")
        arr = np.real(arr)
        kind = arr.dtype.kind
    if dt.kind == "c":
        parts = [np.real(arr), np.imag(arr)] if kind == "c" else [arr]
        arr, kind = np.concatenate([np.ravel(p).astype(np.float64) for p in parts]), "f"
    if arr.size == 0:
        return
    if dt == np.bool_:
        bad = arr[(arr != 0) & (arr != 1)]
        if bad.size:
            raise refuse(bad.flat[0].item(), "0, 1, True or False", "the cast makes it True")
        return
    if dt.kind in "iu":
        info = jnp.iinfo(dt)
        accepted = f"integers in [{info.min}, {info.max}]"
        if kind == "f":
            frac = arr[arr != np.round(arr)]
            if frac.size:
                raise refuse(frac.flat[0].item(), accepted, "the cast would truncate it")
            # 2**bits is exact in float64, so a strict bound keeps rounded values out
            out = arr[(arr < float(info.min)) | (arr >= float(info.max) + 1)]
            first = None if not out.size else out.flat[0].item()
        else:
            low, high = int(arr.min()), int(arr.max())
            first = low if low < info.min else (high if high > info.max else None)
        if first is not None:
            raise refuse(first, accepted, "the cast would wrap it around")
        return
    values = arr.astype(np.float64) if kind != "f" else arr
    top = largest(dt)
    least = float(jnp.finfo(dt).min)  # > 0 for float8_e8m0fnu, which has no zero
    low_ok = -top if least < 0 else least
    out = values[(values < low_ok) | (values > top)]
    if out.size:
        if least > 0:
            accepted = f"values in [{least:.6g}, {top:.6g}] (no zero or negative values)"
        else:
            accepted = f"values of magnitude <= {top:.6g}"
        raise refuse(out.flat[0].item(), accepted, "the cast would give inf or NaN")
