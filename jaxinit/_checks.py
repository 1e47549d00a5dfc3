"""Argument validation shared by every public function.

Each check raises with one message format, naming the function, the argument, the bad value
and what is accepted: ``"{fn}: {arg}={value} must be ..."``. The functions that call them pass
their own name (``fn``), so no caller ever rewrites another function's message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

__all__ = [
    "check_bool",
    "check_callable",
    "check_finite",
    "check_finite_batch",
    "check_int",
    "check_key",
    "check_number",
    "check_shape",
    "is_key",
    "is_typed_key",
    "short",
]


def short(x: Any) -> str:
    """``repr(x)``, cut to 60 characters for error messages."""
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def check_shape(fn: str, shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints (an int is a rank-1 shape)."""
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    try:
        dims = tuple(shape)
    except TypeError as err:
        raise TypeError(f"{fn}: shape={shape!r} is not a sequence of ints.") from err
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int | np.integer):
            raise TypeError(f"{fn}: shape={dims!r} must contain Python ints, got {d!r}.")
        if d < 0:
            raise ValueError(
                f"{fn}: shape={dims!r} has a negative dimension; dimensions must be >= 0."
            )
        out.append(int(d))
    return tuple(out)


def is_typed_key(x: Any) -> bool:
    dt = getattr(x, "dtype", None)
    return dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key)


def check_key(fn: str, key: Any, *, single: bool = False, arg: str = "key") -> jax.Array:
    """``key`` if it is a PRNG key: a typed ``jax.random.key`` (of shape ``()`` with
    ``single``) or a raw uint32 ``jax.random.PRNGKey`` of shape ``(2,)``; else a TypeError."""
    if is_typed_key(key) and (not single or key.shape == ()):
        return key
    if getattr(key, "dtype", None) == np.uint32 and getattr(key, "shape", None) == (2,):
        return key
    what = "a single PRNG key" if single else "a PRNG key"
    raise TypeError(
        f"{fn}: {arg}={short(key)} is not {what}; pass jax.random.key(seed) "
        "(or jax.random.PRNGKey(seed))."
    )


def is_key(x: Any) -> bool:
    """Whether ``x`` passes :func:`check_key`."""
    try:
        check_key("", x)
    except TypeError:
        return False
    return True


def check_finite(
    fn: str, arg: str, value: Any, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """``value`` as a float (anything ``float()`` takes), finite, and > 0 with ``positive``
    or >= 0 with ``nonnegative``."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{fn}: {arg}={short(value)} is not a real number.") from err
    if not math.isfinite(v):
        raise ValueError(f"{fn}: {arg}={v!r} must be finite.")
    if positive and not v > 0:
        raise ValueError(f"{fn}: {arg}={v!r} must be finite and > 0.")
    if nonnegative and not v >= 0:
        raise ValueError(f"{fn}: {arg}={v!r} must be finite and >= 0.")
    return v


def check_number(fn: str, arg: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a float if it is a real number (not a bool, not a string), finite and
    > 0 with ``positive``, else >= 0; a ValueError otherwise."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (number > 0 if positive else number >= 0):
            return number
    what = "> 0" if positive else ">= 0"
    raise ValueError(f"{fn}: {arg}={value!r} must be a finite number {what}.")


def check_int(fn: str, arg: str, value: Any, least: int) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``least``; a ValueError
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ValueError(f"{fn}: {arg}={value!r} must be an int >= {least}.")
    return int(value)


def check_bool(fn: str, arg: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (NumPy bools too); a TypeError otherwise."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{fn}: {arg}={value!r} must be True or False.")
    return bool(value)


def check_callable(fn: str, arg: str, value: Any, expected: str) -> Callable[..., Any]:
    """``value`` if it is callable; a TypeError saying what is ``expected`` otherwise."""
    if not callable(value):
        raise TypeError(f"{fn}: {arg}={short(value)} must be {expected}.")
    return value


@jax.jit
def _count_nonfinite(leaves: list[jax.Array]) -> jax.Array:
    return sum((jnp.sum(~jnp.isfinite(a)) for a in leaves), jnp.asarray(0))


def check_finite_batch(fn: str, x: Any, *, arg: str = "x") -> None:
    """A ValueError if a floating leaf of the batch ``x`` holds a NaN or inf.

    Counted where the data lives (on the device for jax arrays), so one number travels. A
    traced batch (the caller runs inside ``jit``/``vmap`` of the user's) cannot be checked
    here and is let through."""
    leaves = [
        leaf
        for leaf in jax.tree.leaves(x)
        if not isinstance(leaf, Tracer) and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    if not leaves:
        return
    with jax.ensure_compile_time_eval():  # a concrete batch is checked even under jit
        bad = _count_nonfinite([jnp.asarray(a) for a in leaves])
    if isinstance(bad, Tracer):
        return
    if int(bad):
        total = sum(int(np.size(a)) for a in leaves)
        raise ValueError(
            f"{fn}: {arg} contains {int(bad)} non-finite value(s) (NaN or inf) out of {total}; "
            "a finite batch is needed. Clean or re-draw the batch."
        )
