"""The selection grammar for parameter paths (``where=`` of :mod:`jaxinit.tree`).

One grammar with :func:`jaxinit.probe.compile_select` (its pattern matching is imported,
not copied): ``*`` matches within one ``"/"``-separated segment, ``?`` one character of a segment,
``**`` any number of characters including ``/``, and ``**/`` zero or more leading segments.

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

from collections.abc import Callable, Sequence
from typing import Any

from jaxinit.probe import pattern_predicate

Where = None | str | Sequence[str] | Callable[[str, Any], bool]

__all__ = ["Where", "compile_where"]


def compile_where(where: Where, *, name: str = "where") -> Callable[[str, Any], bool]:
    """``where`` (see the module docstring) as a predicate ``(path, value) -> bool``.

    Raises a TypeError naming ``name`` for anything else.

    Example:
      >>> from jaxinit._flax.select import compile_where
      >>> sel = compile_where(["**/kernel", "Dense_*/bias"])
      >>> [sel(p, None) for p in ("kernel", "a/b/kernel", "Dense_1/bias", "Dense_1", "a/bias")]
      [True, True, True, False, False]
    """
    if where is None:
        return lambda path, value: True
    matches = pattern_predicate(where)
    if matches is not None:
        return matches
    if callable(where):
        return lambda path, value: bool(where(path, value))
    raise TypeError(
        f"{name}={where!r} is not supported; use None (every parameter), a glob pattern over "
        "parameter paths such as '**/kernel' or 'Dense_*/bias', a sequence of patterns, or a "
        "predicate (path: str, value: jax.Array) -> bool."
    )
