"""Fills and plain distributions: constant, zeros, ones, normal, uniform, truncated_normal."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
from jax.core import Tracer

from ._base import (
    Init,
    check_fill,
    check_reach,
    clip_into,
    factory,
    largest,
    normal_reach,
    random_normal,
    random_truncated_normal,
    random_uniform,
    real_dtype,
    sample_dtype,
    tail_reach,
)
from ._checks import check_finite
from ._types import Initializer


@factory
def constant(value: Any) -> Initializer:
    """Fill with ``value`` (a number, or an array that broadcasts to the shape).

    Any dtype is accepted, integers included. The key is ignored. Variance law:
    ``init.variance(fan_in, fan_out) == 0`` (every element is ``value``, the mean).

    The value must survive the cast to the dtype: floating and complex values are rounded to
    the nearest representable number but must lie within the dtype's finite range (``300`` in
    ``float8_e4m3fn``, whose largest value is 448, is fine; ``70000`` in ``float16`` is
    refused); integer dtypes take whole numbers within their range (``300`` in ``uint8``, which
    would wrap, and ``0.5`` in ``int8``, which would truncate, are refused); ``bool`` takes 0
    and 1; a real dtype takes no imaginary part. Otherwise a ValueError names the value and
    the dtype when the initializer is called.

    Args:
      value: A finite real or complex number, or an array-like of them.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> b = jaxinit.constant(0.1)(jax.random.key(0), (3,))
      >>> b.shape, b.dtype, bool((b == jax.numpy.float32(0.1)).all())
      ((3,), dtype('float32'), True)
    """
    if isinstance(value, Tracer):
        raise TypeError(
            "constant: value is a traced value; constant takes a concrete number or array. "
            "Call it outside jax.jit, or use jaxinit.ones() and multiply."
        )
    arr = np.asarray(value)
    if arr.dtype == object and all(
        isinstance(v, int) and not isinstance(v, bool) for v in arr.flat
    ):  # Python ints beyond int64/uint64: their exact values, compared with the dtype's range
        arr = arr.astype(np.float64) if arr.size else arr.astype(np.int64)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"constant: value={value!r} must be a number or an array of numbers.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"constant: value={value!r} must be finite (no NaN or inf).")
    shown = arr.item() if arr.ndim == 0 else f"array of shape {arr.shape}"
    return _fill("constant", arr, {"value": shown})


def _fill(name: str, arr: np.ndarray, params: dict[str, Any]) -> Initializer:
    ident = (name, arr.dtype.str, arr.shape, arr.tobytes())  # the exact value, not its display

    def sample(key, shape, dtype):
        try:
            np.broadcast_shapes(arr.shape, shape)
        except ValueError as err:
            raise ValueError(
                f"{name}: value of shape {arr.shape} does not broadcast to shape={shape}."
            ) from err
        # a complex value with no imaginary part (check_fill refuses any other) as its real part
        real = np.real(arr) if arr.dtype.kind == "c" and np.dtype(dtype).kind != "c" else arr
        return jnp.broadcast_to(jnp.asarray(real, dtype), shape)

    return Init(
        name,
        sample,
        params,
        random=False,
        any_dtype=True,
        ident=ident,
        variance=lambda fan_in, fan_out, shape: 0.0,
        fits=lambda shape, dtype: check_fill(name, arr, dtype),
    )


@factory
def zeros() -> Initializer:
    """Fill with 0 (any dtype; the key is ignored). The usual bias initializer. Variance 0.

    Example:
      >>> import jax, jaxinit
      >>> b = jaxinit.zeros()(jax.random.key(0), (2, 3))
      >>> b.shape, b.dtype, bool((b == 0).all())
      ((2, 3), dtype('float32'), True)
    """
    return _fill("zeros", np.asarray(0), {})


@factory
def ones() -> Initializer:
    """Fill with 1 (any dtype; the key is ignored), e.g. for normalization scales. Variance 0
    (mean 1).

    Example:
      >>> import jax, jaxinit
      >>> g = jaxinit.ones()(jax.random.key(0), (4,), jax.numpy.bfloat16)
      >>> g.shape, g.dtype, bool((g == 1).all())
      ((4,), dtype(bfloat16), True)
    """
    return _fill("ones", np.asarray(1), {})


@factory
def normal(stddev: float = 1.0, mean: float = 0.0) -> Initializer:
    """Normal ``N(mean, stddev^2)``, not truncated.

    Low-precision dtypes are drawn in float32 and cast, so bfloat16/float16 samples have the
    full tails and no quantization bias. For complex dtypes the draw is ``mean + stddev * z``
    with ``z`` circular complex normal, ``E|z|^2 = 1`` (real and imaginary parts each of
    variance 1/2). Variance law: ``init.variance(fan_in, fan_out) == stddev**2`` (``E|w -
    mean|^2`` for complex dtypes; the fans are ignored).

    Every draw is finite in every dtype: the sampler's draws are bounded (``|z| <= 5.42`` in
    float32, 8.30 in float64), so a ``mean`` and ``stddev`` whose largest draw ``|mean| + 5.42
    stddev`` is beyond the dtype's largest finite value (e.g. ``stddev=1e5`` in float16, whose
    largest value is 65504) are refused with a ValueError when the initializer is called.

    Args:
      stddev: Standard deviation, finite and >= 0.
      mean: Mean, finite.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.normal(0.02)(jax.random.key(0), (512, 512), jax.numpy.bfloat16)
      >>> w.dtype, bool(abs(w.astype(float).std() - 0.02) < 1e-3)
      (dtype(bfloat16), True)
    """
    stddev = check_finite("normal", "stddev", stddev, nonnegative=True)
    mean = check_finite("normal", "mean", mean)

    def sample(key, shape, dtype):
        z = random_normal(key, shape, sample_dtype(dtype))
        return (mean + stddev * z).astype(dtype)

    def fits(shape, dtype):
        z = normal_reach(real_dtype(sample_dtype(dtype)))
        if jnp.issubdtype(dtype, jnp.complexfloating):
            z /= math.sqrt(2)  # each part has variance 1/2
        top = largest(dtype)
        if abs(mean) > top:
            check_reach("normal", dtype, abs(mean), "mean", mean, top)
        reach = abs(mean) + stddev * z
        check_reach("normal", dtype, reach, "stddev", stddev, (top - abs(mean)) / z)

    return Init(
        "normal",
        sample,
        {"stddev": stddev, "mean": mean},
        variance=lambda fan_in, fan_out, shape: stddev**2,
        fits=fits,
    )


@factory
def uniform(low: float = -1.0, high: float = 1.0) -> Initializer:
    """Uniform ``U[low, high)``, symmetric ``U[-1, 1)`` by default.

    Unlike ``jax.nn.initializers.uniform(scale)`` (``U[0, scale)``), the default is centred, as
    weights need. Samples are drawn in float32 and lie in ``[low, high)`` in the output dtype.
    Real dtypes only. Variance law: ``init.variance(fan_in, fan_out) == (high - low)**2 / 12``
    (the fans are ignored). Bounds beyond the dtype's largest finite value (e.g. ``high=1e5``
    in float16) are refused with a ValueError when the initializer is called: the samples
    would otherwise be clipped to that value.

    Args:
      low: Lower bound, finite.
      high: Upper bound, finite and > ``low``.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.uniform(-0.5, 0.5)(jax.random.key(0), (1000,))
      >>> bool((w >= -0.5).all() and (w < 0.5).all())
      True
    """
    low = check_finite("uniform", "low", low)
    high = check_finite("uniform", "high", high)
    if not low < high:
        raise ValueError(f"uniform: low={low!r} must be < high={high!r}.")

    def sample(key, shape, dtype):
        u = random_uniform(key, shape, sample_dtype(dtype), low, high)
        return clip_into(u, low, high, dtype, open_lo=False, open_hi=True)

    def fits(shape, dtype):
        arg, value = ("low", low) if abs(low) > abs(high) else ("high", high)
        check_reach("uniform", dtype, abs(value), arg, value, largest(dtype))

    return Init(
        "uniform",
        sample,
        {"low": low, "high": high},
        complex_ok=False,
        variance=lambda fan_in, fan_out, shape: (high - low) ** 2 / 12,
        fits=fits,
    )


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) if math.isfinite(x) else 0.0


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def truncated_moments(lower: float, upper: float) -> tuple[float, float]:
    """Mean and standard deviation of N(0, 1) truncated to (lower, upper)."""
    if lower >= 0:  # the upper tail, by symmetry from the lower one (no 1 - ... cancelling)
        mean, std = truncated_moments(-upper, -lower)
        return -mean, std
    z = _cdf(upper) - _cdf(lower)
    pa, pb = _phi(lower), _phi(upper)
    mean = (pa - pb) / z
    la = lower * pa if math.isfinite(lower) else 0.0
    ub = upper * pb if math.isfinite(upper) else 0.0
    var = 1 + (la - ub) / z - mean**2
    return mean, math.sqrt(var)


def complex_truncated_std(c: float) -> float:
    """sqrt(E|z|^2) of a circular complex normal with E|z|^2 = 1 cut at |z| < c."""
    e = math.exp(-c * c)
    return math.sqrt(1 - c * c * e / (1 - e)) if math.isfinite(c) else 1.0


def draw_truncated(
    key: jax.Array, lower: float, upper: float, shape: tuple[int, ...], dtype: np.dtype
) -> jax.Array:
    """N(0, 1) cut to (lower, upper) (complex: |z| < upper, circular, E|z|^2 = 1 before the
    cut), drawn in the sampling dtype, not yet cast."""
    sd = sample_dtype(dtype)
    if jnp.issubdtype(sd, jnp.complexfloating):
        real = np.dtype(jnp.finfo(sd).dtype)
        kr, kp = jax.random.split(key)
        u = random_uniform(kr, shape, real)
        r = jnp.sqrt(-jnp.log1p(-u * -math.expm1(-upper * upper)))
        theta = random_uniform(kp, shape, real, 0.0, 2 * math.pi)
        return (r * jnp.exp(1j * theta)).astype(sd)
    if lower < 0 < upper:
        return random_truncated_normal(key, lower, upper, shape, sd)
    return _one_sided_truncated(key, lower, upper, shape, sd)


def _one_sided_truncated(
    key: jax.Array, lower: float, upper: float, shape: tuple[int, ...], sd: np.dtype
) -> jax.Array:
    """N(0, 1) cut to an interval on one side of 0, by the inverse CDF of its lower tail: a
    cut at [5.5, inf) is sampled as minus a cut at (-inf, -5.5], whose CDF values (1.9e-8
    and 0) are exact in float32, where the upper tail's (1 - 1.9e-8 and 1) round to 1 and
    collapse the interval."""
    flip = lower >= 0
    lo, hi = (-upper, -lower) if flip else (lower, upper)
    p_lo, p_hi = _cdf(lo), _cdf(hi)
    tiny = float(jnp.finfo(sd).tiny)
    if p_hi < 2**10 * tiny:
        bound = lower if flip else upper
        raise ValueError(
            f"truncated_normal: a cut at {bound!r} standard deviations leaves a probability "
            f"of {p_hi:.3g} beyond it, below what {sd.name} sampling resolves; use a cut "
            f"within {-_tail_limit(tiny):.0f} standard deviations of 0."
        )
    u = random_uniform(key, shape, sd, p_lo, p_hi)
    # a draw at p_lo = 0 would be -inf: keep u inside the open interval
    u = jnp.maximum(u, jnp.asarray(max(p_lo, tiny), sd))
    z = jax.scipy.special.ndtri(u)
    return -z if flip else z


def _tail_limit(tiny: float) -> float:
    """The most negative x whose lower-tail probability is still >= 2**10 * tiny."""
    lo, hi = -40.0, 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _cdf(mid) < 2**10 * tiny else (lo, mid)
    return hi


@factory
def truncated_normal(stddev: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> Initializer:
    """``N(0, stddev^2)`` cut at ``lower * stddev`` and ``upper * stddev``.

    Samples lie strictly inside the cut in the output dtype. The cut shrinks the spread: the
    resulting standard deviation is ``stddev * s`` with ``s^2 = 1 + (a phi(a) - b phi(b)) / Z -
    ((phi(a) - phi(b)) / Z)^2``, ``a = lower``, ``b = upper``, ``Z = Phi(b) - Phi(a)``; for the
    default cut at +-2, ``s = 0.8796256610``. (Use :func:`variance_scaling` with
    ``distribution="truncated_normal"`` for a truncated normal rescaled to an exact variance.)
    Complex dtypes need a symmetric cut and bound the modulus: ``|w| < upper * stddev``.
    Variance law: ``init.variance(fan_in, fan_out) == (stddev * s)**2`` (real dtypes; the
    fans are ignored). A ``stddev`` whose cut (or, for an infinite cut, the sampler's
    largest draw: 5.42 standard deviations in float32, 12.96 for a one-sided cut) lies beyond
    the dtype's largest finite value is refused with a ValueError when the initializer is
    called: the samples would otherwise be clipped to that value.

    Args:
      stddev: Standard deviation before truncation, finite and >= 0.
      lower: Lower cut in units of ``stddev``.
      upper: Upper cut in units of ``stddev``, > ``lower``.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.truncated_normal(0.02)(jax.random.key(0), (256, 256))
      >>> bool((abs(w) < 0.04).all())
      True
    """
    stddev = check_finite("truncated_normal", "stddev", stddev, nonnegative=True)
    lower = check_finite("truncated_normal", "lower", lower, nonfinite_ok=True)
    upper = check_finite("truncated_normal", "upper", upper, nonfinite_ok=True)
    if math.isnan(lower) or math.isnan(upper) or not lower < upper:
        raise ValueError(
            f"truncated_normal: lower={lower!r} must be < upper={upper!r} "
            "(both in units of stddev; infinite bounds are allowed)."
        )

    def sample(key, shape, dtype):
        if jnp.issubdtype(dtype, jnp.complexfloating):
            if lower != -upper:
                raise ValueError(
                    f"truncated_normal: complex dtype={dtype} needs a symmetric "
                    f"cut (lower == -upper), got lower={lower}, upper={upper}."
                )
            return (stddev * draw_truncated(key, lower, upper, shape, dtype)).astype(dtype)
        z = stddev * draw_truncated(key, lower, upper, shape, dtype)
        if stddev == 0:
            return z.astype(dtype)
        return clip_into(z, lower * stddev, upper * stddev, dtype)

    def fits(shape, dtype):
        sd = real_dtype(sample_dtype(dtype))
        if jnp.issubdtype(dtype, jnp.complexfloating):
            z = min(upper, normal_reach(sd))
        else:
            z = min(
                max(abs(lower), abs(upper)),
                normal_reach(sd) if lower < 0 < upper else tail_reach(sd),
            )
        check_reach("truncated_normal", dtype, stddev * z, "stddev", stddev, largest(dtype) / z)

    s = truncated_moments(lower, upper)[1]
    return Init(
        "truncated_normal",
        sample,
        {"stddev": stddev, "lower": lower, "upper": upper},
        variance=lambda fan_in, fan_out, shape: (stddev * s) ** 2,
        fits=fits,
    )
