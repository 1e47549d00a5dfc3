"""The selection grammar: layers by module path (``select=`` of :mod:`jaxinit.probe`,
:func:`jaxinit.lsuv`, :func:`jaxinit.measure`) and parameters by parameter path (``where=`` of
:mod:`jaxinit.tree`).

One glob language serves both: ``*`` matches within one ``"/"``-separated segment, ``?`` one
character of a segment, ``**`` any number of characters including ``/``, and ``**/`` zero or
more leading segments. ``select=None`` selects every layer owning a ``kernel`` parameter itself;
``where=None`` every parameter.

Layers are selected by their *module* path (``"Dense_0"``); parameters by their *parameter*
path, the module path and the parameter name joined by ``"/"`` (``"Dense_0/kernel"``,
``"layers/3/bias"``, ``"kernel"`` for a parameter of the root module). A pattern must match
the whole parameter path, so ``"Dense_0"`` selects nothing and ``"Dense_0/*"`` selects the
parameters of ``Dense_0``.

``where`` is one of:

- ``None``: every parameter;
- a glob pattern ``str``: ``"**/kernel"`` (every kernel), ``"Dense_*/bias"``, ``"block*/**"``;
- a sequence of patterns: a parameter is selected if any pattern matches;
- a predicate ``where(path: str, value: jax.Array) -> bool`` called with each parameter path
  and its (unboxed) value, e.g. ``lambda path, w: w.ndim >= 2``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .kinds import owns_kernel

Select = None | str | Sequence[str] | Callable[[str, Any], bool]
Where = None | str | Sequence[str] | Callable[[str, Any], bool]

__all__ = [
    "Select",
    "Where",
    "compile_select",
    "compile_where",
    "hashable_select",
    "pattern_predicate",
]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i, n = [], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out))


def pattern_predicate(patterns: object) -> Callable[[str, Any], bool] | None:
    """A glob pattern or a sequence of them as a predicate ``(path, _) -> bool`` (any pattern
    matching the whole path); None when ``patterns`` is neither. Patterns without a wildcard
    are looked up in a set and the others matched as one regular expression, so that a list
    of many exact paths (an edit of every layer) costs one lookup per path, not one match per
    pattern."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    elif not (isinstance(patterns, Sequence) and all(isinstance(s, str) for s in patterns)):
        return None
    exact = frozenset(p for p in patterns if "*" not in p and "?" not in p)
    globs = [p for p in patterns if p not in exact]
    if not globs:
        return lambda path, _: path in exact
    rx = re.compile("|".join(f"(?:{_glob_regex(p).pattern})" for p in globs))
    return lambda path, _: path in exact or rx.fullmatch(path) is not None


def _compile(
    spec: Any, default: Callable[[str, Any], bool], name: str, accepted: str
) -> Callable[[str, Any], bool]:
    """``spec`` (None, a pattern, patterns or a predicate) as a predicate ``(path, obj)``."""
    if spec is None:
        return default
    matches = pattern_predicate(spec)
    if matches is not None:
        return matches
    if callable(spec):
        return lambda path, obj: bool(spec(path, obj))
    raise TypeError(f"{name}={spec!r} is not supported; use {accepted}.")


def compile_select(select: Select, *, name: str = "select") -> Callable[[str, Any], bool]:
    """``select`` (see the module docstring) as a predicate ``(path, module) -> bool``.

    Raises a TypeError naming ``name`` for anything else.

    Example:
      >>> from jaxinit._flax.select import compile_select
      >>> sel = compile_select(["Dense_*", "**/conv"])
      >>> [sel(p, None) for p in ("Dense_3", "Dense_3/x", "conv", "a/b/conv", "a/conv2")]
      [True, False, True, True, False]
    """
    return _compile(
        select,
        lambda path, module: owns_kernel(module),
        name,
        "None (every layer owning a kernel), a glob pattern such as 'Dense_*' or '**/conv', a "
        "sequence of patterns, or a predicate (path: str, module) -> bool",
    )


def hashable_select(select: Select) -> Select:
    """``select`` with a sequence of patterns as a tuple, so that equal selections are equal
    static arguments and share a compiled program (a list would be hashed by identity, or not
    at all, and compile again on every call). Anything else is returned as is."""
    if (
        not isinstance(select, str | tuple)
        and isinstance(select, Sequence)
        and all(isinstance(s, str) for s in select)
    ):
        return tuple(select)
    return select


def compile_where(where: Where, *, name: str = "where") -> Callable[[str, Any], bool]:
    """``where`` (see the module docstring) as a predicate ``(path, value) -> bool``.

    Raises a TypeError naming ``name`` for anything else.

    Example:
      >>> from jaxinit._flax.select import compile_where
      >>> sel = compile_where(["**/kernel", "Dense_*/bias"])
      >>> [sel(p, None) for p in ("kernel", "a/b/kernel", "Dense_1/bias", "Dense_1", "a/bias")]
      [True, True, True, False, False]
    """
    return _compile(
        where,
        lambda path, value: True,
        name,
        "None (every parameter), a glob pattern over parameter paths such as '**/kernel' or "
        "'Dense_*/bias', a sequence of patterns, or a predicate (path: str, value: jax.Array) "
        "-> bool",
    )
