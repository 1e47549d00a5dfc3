"""Path-based parameter edits for Flax linen and NNX: ``paths``, ``get``, ``scale``,
``shift``, ``reinit``, ``zero``.

A parameter is named by its module path and its name joined by ``"/"``: ``"Dense_0/kernel"``,
``"block/conv/bias"``, ``"layers/3/kernel"`` (the fourth element of an ``nnx.List``),
``"kernel"`` for a parameter of the root module.

**Targets.** Linen targets are variables (a mapping with a ``params`` collection, as
``module.init`` returns); every edit returns new variables of the same mapping type and never
mutates its input, so it runs under ``jax.jit``, ``jax.vmap`` and ``jax.grad``. NNX targets are
models (``nnx.Module``); edits write the ``nnx.Param`` variables in place and return None.
Call them on a plain model, or inside ``nnx.jit`` / ``nnx.grad`` with the model as an argument
(under a bare ``jax.jit`` an NNX edit would store tracers in the model). Only parameters are
edited: other linen collections (``batch_stats``, ...) are returned as the very same objects,
and NNX BatchNorm statistics and RNG state are never touched.

**Selection.** ``where`` selects parameters with the grammar of ``select`` (one glob compiler
with :func:`jaxinit.probe.compile_select`), applied to *parameter* paths:

- ``None``: every parameter;
- a glob pattern matched against the whole path: ``*`` within one segment, ``?`` one character
  of a segment, ``**`` across segments, ``**/`` zero or more leading segments:
  ``"**/kernel"`` (every kernel), ``"Dense_*/bias"``, ``"block*/**"`` (everything under the
  modules ``block*``). ``"Dense_0"`` alone names a module, not a parameter, and selects nothing;
- a sequence of patterns (any matches);
- a predicate ``where(path: str, value: jax.Array) -> bool``, called with each parameter's path
  and value, e.g. ``lambda path, w: w.ndim >= 2``.

A ``where`` that selects nothing is an error listing the available paths.

**Order.** :func:`paths` and :func:`get` list parameters sorted segment by segment in natural
order (digit runs compare as numbers: ``Dense_2`` before ``Dense_10``, ``layers/2`` before
``layers/10``; other characters by code point, as ``sorted`` does). The order depends on the
names only, so it is the same before and after ``jax.jit`` and for linen and NNX twins. An NNX
parameter shared by several modules (tied weights) is listed, and edited, once.

**Dtypes.** Every edit keeps each parameter's dtype (and shape); ``scale``/``shift`` compute in
the promoted dtype of the parameter and the factor, then cast back.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from ._checks import check_key
from ._flax.adapter import Adapter, adapter_for
from ._flax.select import Where, compile_where

if TYPE_CHECKING:
    from flax import nnx

__all__ = ["get", "path_key", "paths", "reinit", "scale", "shift", "zero"]

Variables = Mapping[str, Any]
_SHOWN = 8  # paths listed in an error message


# --------------------------------------------------------------------------------------------
# selection


def _select(adapter: Adapter, where: Where, *, fn: str) -> list[tuple[str, jax.Array]]:
    pred = compile_where(where, name="where")
    leaves = adapter.leaves()
    chosen = [(p, v) for p, v in leaves if pred(p, v)]
    if chosen:
        return chosen
    if not leaves:
        raise ValueError(f"{fn}: {adapter.describe()} have no parameters.")
    shown = ", ".join(repr(p) for p, _ in leaves[:_SHOWN])
    more = f", ... ({len(leaves)} in all)" if len(leaves) > _SHOWN else ""
    raise ValueError(
        f"{fn}: where={where!r} matches no parameter of {adapter.describe()}; its parameters "
        f"are {shown}{more}. Patterns match whole parameter paths (module path/name): use "
        "'**/kernel' for every kernel, 'Dense_0/*' for the parameters of Dense_0."
    )


def _amount(value: Any, arg: str, fn: str) -> jax.Array:
    try:
        out = jnp.asarray(value)
    except TypeError as err:
        raise TypeError(
            f"{fn}: {arg}={value!r} is not a number or an array; use a scalar or an array "
            "broadcastable to every selected parameter."
        ) from err
    if not jnp.issubdtype(out.dtype, jnp.number):
        raise TypeError(
            f"{fn}: {arg} has dtype {out.dtype}; use a real or complex number or array."
        )
    # A concrete inf or NaN would turn parameters into inf/NaN silently; a traced amount (a
    # factor being optimized under jit/grad) cannot be checked here.
    if not isinstance(out, Tracer) and not bool(jnp.all(jnp.isfinite(out))):
        raise ValueError(f"{fn}: {arg}={value!r} is not finite; use finite numbers.")
    return out


def _amounts(value: Any, arg: str, fn: str) -> Callable[[str], jax.Array]:
    """``path -> amount``: one amount for every path, or one per path from a mapping."""
    if isinstance(value, Mapping):
        amounts = {p: _amount(v, f"{arg}[{p!r}]", fn) for p, v in value.items()}

        def lookup(path: str) -> jax.Array:
            if path not in amounts:
                raise ValueError(
                    f"{fn}: {arg} is a mapping with no entry for {path!r}, which where= "
                    f"selects; give one for every selected parameter, e.g. "
                    f"tree.{fn}(target, list({arg}s), {arg}s)."
                )
            return amounts[path]

        return lookup
    amount = _amount(value, arg, fn)
    return lambda path: amount


def _fitting(amount: jax.Array, w: jax.Array, path: str, arg: str, fn: str) -> jax.Array:
    """``amount``, checked to broadcast to ``w``'s shape without enlarging it."""
    shape = tuple(np.shape(w))
    try:
        ok = np.broadcast_shapes(amount.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: {arg} has shape {amount.shape}, which does not broadcast to the parameter "
            f"{path!r} of shape {shape}; use a scalar, or an array broadcastable to the shape "
            "of every selected parameter without enlarging it."
        )
    return amount


@functools.partial(jax.jit, static_argnums=0)
def _combine(op: Callable[[Any, Any], jax.Array], w: Any, amount: jax.Array) -> jax.Array:
    """``op(w, amount)``, ``amount`` broadcast to ``w``'s shape, in the dtype ``jax.numpy``
    would give. A jit: an edit of many parameters inside a traced program (LSUV's pass) then
    traces it once per parameter shape, not once per parameter."""
    lax = jax.lax
    dtype = jnp.result_type(w, amount)
    shape = np.shape(w)
    if amount.shape != shape:
        dims = tuple(range(len(shape) - amount.ndim, len(shape)))
        amount = lax.broadcast_in_dim(amount, shape, dims)
    return op(lax.convert_element_type(w, dtype), lax.convert_element_type(amount, dtype))


def _edit(target: Any, where: Where, fn: str, new: Callable[[str, jax.Array], Any]) -> Any:
    adapter = adapter_for(target, name="target")
    chosen = _select(adapter, where, fn=fn)
    updates = {}
    for path, w in chosen:
        v, dtype = new(path, w), jnp.result_type(w)
        # already a strongly typed jax array of the parameter's dtype: no conversion to trace
        done = isinstance(v, jax.Array) and v.dtype == dtype and not v.weak_type
        updates[path] = v if done else jnp.asarray(v).astype(dtype)
    return adapter.set(updates)


# --------------------------------------------------------------------------------------------
# public functions


def paths(target: Variables | nnx.Module, where: Where = None) -> list[str]:
    """The paths of the parameters of ``target`` that ``where`` selects, in natural order.

    Args:
      target: Linen variables (a mapping with a ``params`` collection) or an NNX model.
      where: ``None`` (every parameter), a glob pattern over parameter paths, a sequence of
        patterns, or a predicate ``(path, value) -> bool`` (see the module docstring).

    Returns:
      A list of ``"/"``-joined parameter paths.

    Raises:
      TypeError: ``target`` is neither linen variables nor an NNX model, or ``where`` is not
        a pattern, a sequence of patterns or a predicate.
      ValueError: ``where`` selects no parameter (the message lists the available paths).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxinit import tree
      >>> mlp = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> variables = mlp.init(jax.random.key(0), jnp.ones((1, 4)))
      >>> tree.paths(variables)
      ['layers_0/bias', 'layers_0/kernel', 'layers_2/bias', 'layers_2/kernel']
      >>> tree.paths(variables, "**/kernel")
      ['layers_0/kernel', 'layers_2/kernel']
    """
    adapter = adapter_for(target, name="target")
    if where is None:
        return adapter.paths()
    return [p for p, _ in _select(adapter, where, fn="paths")]


def get(target: Variables | nnx.Module, where: Where) -> dict[str, jax.Array]:
    """The selected parameters' values, ``{path: array}`` in natural path order (unboxed).

    Args:
      target: Linen variables or an NNX model.
      where: The parameters to read (see :func:`paths`).

    Returns:
      A dict from parameter path to value.

    Raises:
      TypeError: as :func:`paths`.
      ValueError: ``where`` selects no parameter.

    Example:
      >>> import flax.nnx as nnx
      >>> from jaxinit import tree
      >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
      >>> {p: v.shape for p, v in tree.get(model, "*").items()}
      {'bias': (3,), 'kernel': (4, 3)}
    """
    adapter = adapter_for(target, name="target")
    return dict(_select(adapter, where, fn="get"))


@overload
def scale(target: nnx.Module, where: Where, factor: Any) -> None: ...
@overload
def scale(target: Variables, where: Where, factor: Any) -> Variables: ...
def scale(target: Any, where: Where, factor: Any) -> Any:
    """Multiply the selected parameters by ``factor``: ``w -> w * factor``.

    Differentiable in ``factor`` (linen: ``jax.grad`` w.r.t. ``factor`` of a loss of the
    result; NNX: inside ``nnx.grad``), so a data-driven init can optimize it.

    Args:
      target: Linen variables or an NNX model.
      where: The parameters to scale (see :func:`paths`).
      factor: A scalar, or an array that broadcasts to the shape of every selected parameter
        without enlarging it (e.g. shape ``(out,)`` for Dense kernels and biases), or a
        mapping from parameter path to such a factor, with an entry for every selected
        parameter (one edit of many parameters with different factors:
        ``tree.scale(variables, list(factors), factors)``).

    Returns:
      Linen: new variables (same mapping type; other collections are the same objects).
      NNX: None (the model is edited in place).

    Raises:
      TypeError: a bad ``target`` or ``where``, or a non-numeric ``factor``.
      ValueError: ``where`` selects nothing, or ``factor``'s shape does not fit a parameter.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxinit import tree
      >>> variables = nn.Dense(3).init(jax.random.key(0), jnp.ones((1, 2)))
      >>> scaled = tree.scale(variables, "kernel", 2.0)
      >>> bool(jnp.all(scaled["params"]["kernel"] == 2 * variables["params"]["kernel"]))
      True
      >>> grad = jax.grad(lambda s: tree.scale(variables, "kernel", s)["params"]["kernel"].sum())
      >>> bool(jnp.allclose(grad(1.0), variables["params"]["kernel"].sum()))
      True
    """
    f = _amounts(factor, "factor", "scale")
    return _edit(
        target,
        where,
        "scale",
        lambda p, w: _combine(jax.lax.mul, w, _fitting(f(p), w, p, "factor", "scale")),
    )


@overload
def shift(target: nnx.Module, where: Where, delta: Any) -> None: ...
@overload
def shift(target: Variables, where: Where, delta: Any) -> Variables: ...
def shift(target: Any, where: Where, delta: Any) -> Any:
    """Add ``delta`` to the selected parameters: ``w -> w + delta``. Differentiable in
    ``delta``.

    Args:
      target: Linen variables or an NNX model.
      where: The parameters to shift (see :func:`paths`).
      delta: A scalar, or an array that broadcasts to every selected parameter's shape, or a
        mapping from parameter path to such a delta (an entry for every selected parameter).

    Returns:
      Linen: new variables. NNX: None (edited in place).

    Raises:
      TypeError: a bad ``target`` or ``where``, or a non-numeric ``delta``.
      ValueError: ``where`` selects nothing, or ``delta``'s shape does not fit a parameter.

    Example:
      >>> import flax.nnx as nnx, jax.numpy as jnp
      >>> from jaxinit import tree
      >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
      >>> tree.shift(model, "bias", jnp.array([1.0, 2.0, 3.0]))
      >>> model.bias[...].tolist()
      [1.0, 2.0, 3.0]
    """
    d = _amounts(delta, "delta", "shift")
    return _edit(
        target,
        where,
        "shift",
        lambda p, w: _combine(jax.lax.add, w, _fitting(d(p), w, p, "delta", "shift")),
    )


def path_key(key: jax.Array, path: str) -> jax.Array:
    """The key :func:`reinit` draws the parameter at ``path`` with:
    ``jax.random.fold_in(key, zlib.crc32(path.encode()))`` (stable across processes and
    machines, unlike Python's salted ``hash``).

    Args:
      key: A PRNG key (``jax.random.key`` or a raw ``jax.random.PRNGKey``).
      path: A parameter path.

    Returns:
      A key of the same kind as ``key``.

    Example:
      >>> import jax
      >>> from jaxinit import tree
      >>> k = tree.path_key(jax.random.key(0), "Dense_0/kernel")
      >>> bool(jax.random.key_data(k).tolist() == jax.random.key_data(
      ...     tree.path_key(jax.random.key(0), "Dense_0/kernel")).tolist())
      True
    """
    return jax.random.fold_in(key, np.uint32(zlib.crc32(path.encode("utf-8"))))


@overload
def reinit(target: nnx.Module, where: Where, init: Callable[..., Any], key: jax.Array) -> None: ...
@overload
def reinit(
    target: Variables, where: Where, init: Callable[..., Any], key: jax.Array
) -> Variables: ...
def reinit(target: Any, where: Where, init: Callable[..., Any], key: jax.Array) -> Any:
    """Draw the selected parameters afresh: ``w -> init(path_key(key, path), w.shape,
    w.dtype)``.

    Each parameter gets its own key derived from ``key`` and its path (:func:`path_key`), so
    the draw of a parameter does not depend on which others are selected or on their order.

    Args:
      target: Linen variables or an NNX model.
      where: The parameters to draw (see :func:`paths`).
      init: A jaxinit :class:`~jaxinit.Initializer` or any ``(key, shape, dtype) -> array``
        callable (``jax.nn.initializers`` too).
      key: A PRNG key.

    Returns:
      Linen: new variables. NNX: None (edited in place).

    Raises:
      TypeError: a bad ``target``, ``where`` or ``key``, or a non-callable ``init``.
      ValueError: ``where`` selects nothing, or ``init`` returns the wrong shape.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> import jaxinit
      >>> from jaxinit import tree
      >>> variables = nn.Dense(3).init(jax.random.key(0), jnp.ones((1, 2)))
      >>> fresh = tree.reinit(variables, "**/kernel", jaxinit.orthogonal(), jax.random.key(1))
      >>> w = fresh["params"]["kernel"]
      >>> w.shape, w.dtype, bool(jnp.allclose(w @ w.T, jnp.eye(2), atol=1e-5))
      ((2, 3), dtype('float32'), True)
    """
    if not callable(init):
        raise TypeError(
            f"reinit: init={init!r} is not callable; use a jaxinit initializer such as "
            "jaxinit.he_normal() or any (key, shape, dtype) -> array function."
        )
    check_key("reinit", key, single=True)

    def draw(path: str, w: jax.Array) -> jax.Array:
        shape = tuple(np.shape(w))
        out = init(path_key(key, path), shape, jnp.result_type(w))
        if tuple(np.shape(out)) != shape:
            raise ValueError(
                f"reinit: init returned shape {tuple(np.shape(out))} for {path!r}, whose shape "
                f"is {shape}; init must return an array of the shape it is given."
            )
        return out

    return _edit(target, where, "reinit", draw)


@overload
def zero(target: nnx.Module, where: Where) -> None: ...
@overload
def zero(target: Variables, where: Where) -> Variables: ...
def zero(target: Any, where: Where) -> Any:
    """Set the selected parameters to zero (zero-init residual branches, heads, biases).

    Args:
      target: Linen variables or an NNX model.
      where: The parameters to zero (see :func:`paths`).

    Returns:
      Linen: new variables. NNX: None (edited in place).

    Raises:
      TypeError: a bad ``target`` or ``where``.
      ValueError: ``where`` selects nothing.

    Example:
      >>> import flax.nnx as nnx, jax.numpy as jnp
      >>> from jaxinit import tree
      >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
      >>> tree.zero(model, "kernel")
      >>> bool(jnp.all(model.kernel[...] == 0)), model.kernel.dtype
      (True, dtype('float32'))
    """
    return _edit(target, where, "zero", lambda p, w: jnp.zeros_like(w))
