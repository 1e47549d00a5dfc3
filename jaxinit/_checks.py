"""Argument validation shared by every public function.

Each check raises with one message format, naming the function, the argument, the bad value
and what is accepted: ``"{fn}: {arg}={value} must be ..."``. The functions that call them pass
their own name (``fn``), so no caller ever rewrites another function's message.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

__all__ = [
    "check_bool",
    "check_callable",
    "check_compiler_options",
    "check_finite",
    "check_finite_batch",
    "check_int",
    "check_key",
    "check_loss_inputs",
    "check_number",
    "check_seed",
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


def _traced(fn: str, arg: str, value: Any) -> TypeError:
    return TypeError(
        f"{fn}: {arg}={short(value)} is a traced value; {fn} takes static Python numbers "
        "(they fix what is compiled), so call it outside jax.jit/jax.vmap, or scale its "
        "result by the traced value instead."
    )


def check_finite(
    fn: str,
    arg: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    nonfinite_ok: bool = False,
) -> float:
    """``value`` as a float if it is one real number (a Python or NumPy int or float, a 0-d
    array, any ``numbers.Real`` but a bool), finite (any float with ``nonfinite_ok``: the
    caller checks infinities and NaN itself), and > 0 with ``positive`` or >= 0 with
    ``nonnegative``; a TypeError for anything else (strings, arrays of more than one element,
    traced values)."""
    if isinstance(value, Tracer):
        raise _traced(fn, arg, value)
    v = _real_scalar(value)
    if v is None and isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    if v is None:
        raise TypeError(f"{fn}: {arg}={short(value)} is not a real number.")
    if not math.isfinite(v) and not nonfinite_ok:
        raise ValueError(f"{fn}: {arg}={v!r} must be finite.")
    if positive and not v > 0:
        raise ValueError(f"{fn}: {arg}={v!r} must be finite and > 0.")
    if nonnegative and not v >= 0:
        raise ValueError(f"{fn}: {arg}={v!r} must be finite and >= 0.")
    return v


def _real_scalar(value: object) -> float | None:
    """``value`` as a float if it is one real number: a Python or NumPy int or float, or a
    0-d NumPy or JAX array of such a dtype (not a bool, not a string); else None."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        try:
            return float(value)
        except OverflowError:  # an int beyond float64, e.g. 10**400
            return math.inf if value > 0 else -math.inf
    if isinstance(value, np.ndarray | jax.Array) and not isinstance(value, Tracer):
        dtype = value.dtype
        real = jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
        if value.ndim == 0 and real:
            return float(value)
    return None


def check_number(
    fn: str,
    arg: str,
    value: object,
    *,
    positive: bool = False,
    signed: bool = False,
    most: float = math.inf,
) -> float:
    """``value`` as a float if it is one real number (a Python or NumPy scalar, or a 0-d
    array), finite, <= ``most`` in magnitude, and > 0 with ``positive``, any sign with
    ``signed``, else >= 0; a ValueError otherwise."""
    if isinstance(value, Tracer):
        raise _traced(fn, arg, value)
    number = _real_scalar(value)
    if number is not None and math.isfinite(number) and abs(number) <= most:
        if signed or (number > 0 if positive else number >= 0):
            return number
    what = "" if signed else (" > 0" if positive else " >= 0")
    bound = "" if math.isinf(most) else f" of magnitude <= {most:g}"
    raise ValueError(f"{fn}: {arg}={short(value)} must be a finite number{what}{bound}.")


def check_int(fn: str, arg: str, value: Any, least: int, most: int | None = None) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``least`` (and <= ``most``);
    a ValueError otherwise."""
    bad = isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least
    if bad or (most is not None and value > most):
        upper = "" if most is None else f" and <= {most}"
        raise ValueError(f"{fn}: {arg}={short(value)} must be an int >= {least}{upper}.")
    return int(value)


def check_seed(fn: str, key: Any) -> jax.Array:
    """A single PRNG key from ``key``: an int seed in [0, 2**32) (larger ints would alias:
    ``jax.random.key`` keeps 32 bits of the seed), a typed key of shape ``()`` or a raw
    ``PRNGKey``."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        seed = check_int(fn, "key", key, 0, 2**32 - 1)
        return jax.random.key(seed)
    if getattr(key, "dtype", None) is None:
        raise TypeError(
            f"{fn}: key={short(key)} must be an int or a jax.random.key (one key; "
            "jax.random.PRNGKey also works)."
        )
    key = check_key(fn, key, single=True)
    return key if is_typed_key(key) else jax.random.wrap_key_data(jnp.asarray(key))


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


def check_loss_inputs(fn: str, out: Any, labels: Any, *, custom_loss: bool) -> Any:
    """The labels for a model whose (abstract) output is ``out``, checked for the default
    loss: one array of logits, integer labels of shape ``out.shape[:-1]`` with values in
    ``[0, classes)``. A custom loss takes any labels (float targets too) and any output."""
    if custom_loss:
        return labels if labels is None else jax.tree.map(jnp.asarray, labels)
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        kind = type(out).__name__
        raise TypeError(
            f"{fn}: the model returns a {kind}, and the default loss needs one array of "
            "logits; pass loss=lambda out, labels: <scalar> that reduces the output."
        )
    if labels is None:
        return None
    labels = jnp.asarray(labels)
    want, classes = tuple(out.shape[:-1]), out.shape[-1]
    if labels.shape != want or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: labels must be integers of shape {want} for the default loss (softmax "
            f"cross-entropy over the last axis of the output, of shape {tuple(out.shape)}), "
            f"each in [0, {classes}); got {labels.dtype} {labels.shape}. For other targets "
            "pass loss=."
        )
    if labels.size and not isinstance(labels, Tracer):
        values = np.asarray(labels)  # concrete, even inside a caller's jit
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{fn}: labels holds {bad}, outside [0, {classes}): the model's output has "
                f"{classes} classes on its last axis."
            )
    return labels


@jax.jit
def _count_nonfinite(leaves: list[jax.Array]) -> jax.Array:
    return sum((jnp.sum(~jnp.isfinite(a)) for a in leaves), jnp.asarray(0))


def _on_host(leaf: Any) -> bool:
    """Whether NumPy can count ``leaf``'s non-finite values where it lies: a host array, or a
    jax array on CPU devices, of a NumPy float dtype. Counting those needs no compiled
    program (whose compile would dominate a first call); anything else is counted on its
    device."""
    if np.dtype(jnp.result_type(leaf)) not in (np.float16, np.float32, np.float64):
        return False
    if not isinstance(leaf, jax.Array):
        return True
    return all(d.platform == "cpu" for d in leaf.devices())


def check_finite_batch(fn: str, x: Any, *, arg: str = "x") -> None:
    """A ValueError if the batch ``x`` has an empty array, or a floating leaf of it holds a
    NaN or inf.

    Counted where the data lives: by NumPy for host arrays and jax arrays on CPU (no
    program to compile), on the device otherwise, so one number travels. A
    traced batch (the caller runs inside ``jit``/``vmap`` of the user's) cannot be checked
    here and is let through."""
    for leaf in jax.tree.leaves(x):
        if np.size(leaf) == 0:
            raise ValueError(
                f"{fn}: {arg} has an empty array of shape {np.shape(leaf)}; statistics need "
                "at least one example."
            )
    leaves = [
        leaf
        for leaf in jax.tree.leaves(x)
        if not isinstance(leaf, Tracer) and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    if not leaves:
        return
    bad = sum(int(np.count_nonzero(~np.isfinite(np.asarray(a)))) for a in leaves if _on_host(a))
    device = [a for a in leaves if not _on_host(a)]
    if device:
        with jax.ensure_compile_time_eval():  # a concrete batch is checked even under jit
            count = _count_nonfinite([jnp.asarray(a) for a in device])
        if isinstance(count, Tracer):
            return
        bad += int(count)
    if bad:
        total = sum(int(np.size(a)) for a in leaves)
        raise ValueError(
            f"{fn}: {arg} contains {bad} non-finite value(s) (NaN or inf) out of {total}; "
            "a finite batch is needed. Clean or re-draw the batch."
        )


def check_compiler_options(fn: str, options: Mapping[str, Any] | None) -> None:
    """Options XLA does not know, as a ValueError naming them, before any tracing: XLA checks
    them only when it compiles (a trivial program here, milliseconds)."""
    if not options:
        return
    try:
        jax.jit(lambda: jnp.zeros(()), compiler_options=dict(options)).lower().compile()
    except Exception as err:  # XLA's runtime error type differs across jax versions
        raise ValueError(
            f"{fn}: compiler_options={short(options)} is refused by XLA "
            f"({str(err).splitlines()[0]}); pass options of XLA's compiler for this backend, "
            "or None."
        ) from err
