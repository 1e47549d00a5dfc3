"""One interface over Flax linen variables and NNX models: parameter leaves by path.

A parameter's path is its module path and its name joined by ``"/"``: ``"Dense_0/kernel"``,
``"block/conv/bias"``, ``"layers/3/kernel"`` (the fourth element of an ``nnx.List``),
``"kernel"`` (a parameter of the root module). Only parameters are seen: the ``params``
collection of linen variables, the ``nnx.Param`` variables of an NNX model (subclasses
included). Batch statistics, RNG state, caches and any other collection are never read or
written.

Order: :meth:`Adapter.leaves` lists paths sorted segment by segment in natural order (runs of
digits compare as numbers, so ``Dense_2`` comes before ``Dense_10`` and ``layers/2`` before
``layers/10``; other characters compare by code point, as ``sorted`` does). The order depends
on the names only, so it is the same for linen variables before and after ``jax.jit`` (which
returns dicts sorted) and for an NNX model and its linen twin.

An NNX parameter shared by several modules (tied weights) is one leaf, under the path
:func:`flax.nnx.iter_graph` sees first.

- :class:`LinenAdapter` is pure: :meth:`~LinenAdapter.set` returns new variables of the same
  mapping type (dict stays dict, FrozenDict stays FrozenDict); the other collections are the
  very same objects, and within ``params`` the untouched subtrees are too. Boxed parameters
  (``nn.Partitioned``, ``nn.LogicallyPartitioned``) are read unboxed and written back into
  their box, so the sharding metadata is kept.
- :class:`NNXAdapter` edits the model in place through ``nnx.Variable.set_value`` (metadata
  such as ``nnx.with_partitioning`` sharding is kept) and returns None.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import flax.errors
import flax.linen as nn
import jax
import numpy as np
from flax import nnx
from flax.core import FrozenDict, meta

#: What Flax raises when a module asks for a PRNG stream the call did not pass.
InvalidRngError = flax.errors.InvalidRngError

__all__ = [
    "Adapter",
    "LinenAdapter",
    "NNXAdapter",
    "Static",
    "adapter_for",
    "apply_params",
    "is_linen",
    "is_nnx",
    "merge_model",
    "model_args",
    "natural_key",
    "split_model",
    "update_model",
]

_DIGITS = re.compile(r"(\d+)")


def is_linen(model: Any) -> bool:
    """Whether ``model`` is a Flax linen module."""
    return isinstance(model, nn.Module)


def is_nnx(model: Any) -> bool:
    """Whether ``model`` is a Flax NNX module."""
    return isinstance(model, nnx.Module)


def model_args(fn: str, model: Any, args: tuple[Any, ...]) -> tuple[Any, Any]:
    """``(variables, x)`` from the positional arguments after ``model`` of a function called
    as ``fn(module, variables, x)`` for linen or ``fn(model, x)`` for NNX (``variables`` is
    None); a TypeError naming ``fn`` for anything else. Linen variables must be a mapping
    with a ``params`` collection."""
    if is_linen(model):
        if len(args) != 2:
            raise TypeError(
                f"{fn}: a linen module takes (module, variables, x), as in {fn}(module, "
                f"variables, x, ...); got {len(args)} positional argument(s) after the module."
            )
        variables, x = args
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ValueError(
                f"{fn}: variables must be the dict returned by module.init (with a 'params' "
                f"collection); got {type(variables).__name__}"
                + (f" with collections {list(variables)}" if isinstance(variables, Mapping) else "")
                + "."
            )
        return variables, x
    if is_nnx(model):
        if len(args) != 1:
            raise TypeError(
                f"{fn}: an NNX model takes (model, x), as in {fn}(model, x, ...); got "
                f"{len(args)} positional argument(s) after the model (its parameters live in "
                "the model)."
            )
        return None, args[0]
    raise TypeError(
        f"{fn}: model of type {type(model).__name__} is not a Flax module; pass a "
        f"flax.linen.Module ({fn}(module, variables, x)) or a flax.nnx.Module ({fn}(model, x))."
    )


def nnx_rngs(key: Any) -> nnx.Rngs:
    """``nnx.Rngs`` of one key (or int seed), for a model built inside a traced program."""
    return nnx.Rngs(key)


def nnx_eval_shape(fn: Any) -> Any:
    """``nnx.eval_shape(fn)``: abstract NNX models (and outputs) without computing anything."""
    return nnx.eval_shape(fn)


def nnx_split_params(model: Any) -> tuple[Any, Any, Any]:
    """``(graphdef, params, rest)`` of an NNX model (``nnx.split(model, nnx.Param, ...)``)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest


def nnx_merge(graphdef: Any, params: Any, rest: Any) -> Any:
    """The NNX model of :func:`nnx_split_params`' parts."""
    return nnx.merge(graphdef, params, rest)


def dot_product_attention(query: Any, key: Any, value: Any, *, linen: bool, **kwargs: Any) -> Any:
    """Flax's ``dot_product_attention``: linen's (``linen=True``) or NNX's, which round
    differently; each module calls its own."""
    fn = nn.dot_product_attention if linen else nnx.dot_product_attention
    return fn(query, key, value, **kwargs)


# keywords linen's Module.apply takes itself, next to the model's own
_LINEN_APPLY = ("mutable", "rngs", "method", "capture_intermediates")


def check_call_kwargs(fn: str, model: Any, kwargs: Mapping[str, Any]) -> None:
    """A keyword argument the model's ``__call__`` does not take, as a ValueError naming it
    and the parameters it does take (the model itself would raise a TypeError from deep inside
    the trace). Nothing is checked for a ``__call__`` taking ``**kwargs``."""
    if not kwargs:
        return
    try:
        params = inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes = [n for n, p in list(params.items())[1:] if p.kind in named]  # less self
    own = _LINEN_APPLY if is_linen(model) else ()
    for key in kwargs:
        if key not in takes and key not in own:
            extra = f", or linen's apply keywords {list(own)}" if own else ""
            raise ValueError(
                f"{fn}: keyword argument {key}={_short(kwargs[key])} is not a parameter of "
                f"{type(model).__name__}.__call__, which takes {takes}{extra}."
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_SCOPE_ERRORS = tuple(
    getattr(flax.errors, name)
    for name in (
        "ScopeParamNotFoundError",
        "ScopeCollectionNotFound",
        "ScopeParamShapeError",
        "ScopeVariableNotFoundError",
    )
    if hasattr(flax.errors, name)
)


@contextlib.contextmanager
def variables_fit(fn: str) -> Iterator[None]:
    """Flax's errors for variables that do not fit the module (a missing parameter or
    collection, a wrong shape), re-raised as a ValueError naming ``fn``'s ``variables``."""
    try:
        yield
    except _SCOPE_ERRORS as err:
        message = str(err).split(" (https://")[0].rstrip(".")
        raise ValueError(
            f"{fn}: variables do not fit the module: {message}. Pass the variables that "
            "module.init returned for this very module."
        ) from err


def natural_key(path: str) -> tuple[tuple[Any, ...], ...]:
    """Sort key of a ``"/"``-joined path: per segment, text runs as text, digit runs as ints.

    Example:
      >>> from jaxinit._flax.adapter import natural_key
      >>> sorted(["Dense_10/kernel", "Dense_2/kernel", "Dense_2/bias"], key=natural_key)
      ['Dense_2/bias', 'Dense_2/kernel', 'Dense_10/kernel']
    """
    return tuple(
        tuple(int(t) if i % 2 else t for i, t in enumerate(_DIGITS.split(segment)))
        for segment in path.split("/")
    )


class Adapter:
    """The parameters of a linen or NNX target, by path (see the module docstring)."""

    kind: Literal["linen", "nnx"]
    target: Any

    def leaves(self) -> list[tuple[str, jax.Array]]:
        """``(path, value)`` of every parameter, values unboxed, in natural path order."""
        raise NotImplementedError

    def paths(self) -> list[str]:
        """Every parameter path, in natural order."""
        return [p for p, _ in self.leaves()]

    def get(self, path: str) -> jax.Array:
        """The (unboxed) value of the parameter at ``path``; KeyError if there is none."""
        raise NotImplementedError

    def set(self, updates: Mapping[str, Any]) -> Any:
        """Write ``{path: value}``: linen returns new variables, NNX edits in place and
        returns None. Each value must have the shape of the parameter it replaces."""
        raise NotImplementedError

    def owner(self, path: str) -> Any:
        """The module owning the parameter at ``path`` where it is known (NNX), else None."""
        return None

    def describe(self) -> str:
        """A few words naming the target, for error messages."""
        raise NotImplementedError

    def _check_update(self, path: str, old: Any, new: Any) -> None:
        old_shape, new_shape = tuple(np.shape(old)), tuple(np.shape(new))
        if old_shape != new_shape:
            raise ValueError(
                f"the new value of {path!r} has shape {new_shape}, but the parameter has shape "
                f"{old_shape}; parameter edits keep shapes."
            )


def _unbox(x: Any) -> Any:
    return x.unbox() if isinstance(x, meta.AxisMetadata) else x


def _is_collection(x: Any) -> bool:
    return isinstance(x, Mapping)


class LinenAdapter(Adapter):
    """Linen ``variables``: a mapping with a ``params`` collection (pure edits)."""

    kind = "linen"

    def __init__(self, variables: Mapping[str, Any]):
        self.target = variables
        flat: dict[str, Any] = {}

        def walk(node: Any, prefix: str) -> None:
            for key, child in node.items():
                path = f"{prefix}/{key}" if prefix else str(key)
                if _is_collection(child):
                    walk(child, path)
                else:
                    flat[path] = child

        walk(variables["params"], "")
        self._flat = {p: flat[p] for p in sorted(flat, key=natural_key)}

    def leaves(self) -> list[tuple[str, jax.Array]]:
        return [(p, _unbox(v)) for p, v in self._flat.items()]

    def get(self, path: str) -> jax.Array:
        return _unbox(self._flat[path])

    def set(self, updates: Mapping[str, Any]) -> Any:
        for path, value in updates.items():
            self._check_update(path, self.get(path), value)
        pending = dict(updates)

        def rebuild(node: Any, prefix: str) -> Any:
            out, changed = {}, False
            for key, child in node.items():
                path = f"{prefix}/{key}" if prefix else str(key)
                if _is_collection(child):
                    new = rebuild(child, path)
                elif path in pending:
                    value = pending.pop(path)
                    new = (
                        child.replace_boxed(value)
                        if isinstance(child, meta.AxisMetadata)
                        else value
                    )
                else:
                    new = child
                changed = changed or new is not child
                out[key] = new
            return _like(node, out) if changed else node

        params = rebuild(self.target["params"], "")
        if pending:
            raise KeyError(f"no linen parameter at {sorted(pending)}")
        if isinstance(self.target, FrozenDict):
            return self.target.copy({"params": params})
        out = dict(self.target)
        out["params"] = params
        return _like(self.target, out)

    def describe(self) -> str:
        return f"the linen variables (collections {list(self.target)})"


def _like(like: Any, items: dict[str, Any]) -> Any:
    """``items`` as the mapping type of ``like`` (FrozenDict stays frozen; others as dict)."""
    return FrozenDict(items) if isinstance(like, FrozenDict) else items


class NNXAdapter(Adapter):
    """An NNX model: its ``nnx.Param`` variables (edits in place)."""

    kind = "nnx"

    def __init__(self, model: nnx.Module):
        self.target = model
        nodes: dict[tuple[Any, ...], Any] = {}
        found: dict[str, tuple[nnx.Variable, tuple[Any, ...]]] = {}
        for parts, node in nnx.iter_graph(model):
            parts = tuple(parts)
            nodes[parts] = node
            if isinstance(node, nnx.Param):
                found["/".join(str(p) for p in parts)] = (node, parts)
        self._nodes = nodes
        self._vars = {p: found[p] for p in sorted(found, key=natural_key)}

    def leaves(self) -> list[tuple[str, jax.Array]]:
        return [(p, v.get_value()) for p, (v, _) in self._vars.items()]

    def get(self, path: str) -> jax.Array:
        return self._vars[path][0].get_value()

    def set(self, updates: Mapping[str, Any]) -> None:
        for path, value in updates.items():
            self._check_update(path, self.get(path), value)
        for path, value in updates.items():
            self._vars[path][0].set_value(value)

    def owner(self, path: str) -> Any:
        parts = self._vars[path][1][:-1]
        while parts and not isinstance(self._nodes.get(parts), nnx.Module):
            parts = parts[:-1]
        return self._nodes.get(parts, self.target)

    def describe(self) -> str:
        return f"the NNX model {type(self.target).__name__}"


def adapter_for(target: Any, *, name: str = "target") -> Adapter:
    """The adapter of ``target``: linen variables or an NNX model.

    Raises:
      TypeError: ``target`` is neither (naming ``name``, what it is and what is accepted).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxinit._flax.adapter import adapter_for
      >>> variables = nn.Dense(3).init(jax.random.key(0), jnp.ones((1, 2)))
      >>> ad = adapter_for(variables)
      >>> ad.kind, ad.paths()
      ('linen', ['bias', 'kernel'])
    """
    if isinstance(target, nnx.Module):
        return NNXAdapter(target)
    if isinstance(target, Mapping):
        params = target.get("params")
        if _is_collection(params):
            return LinenAdapter(target)
        hint = (
            f"it has the collections {list(target)[:8]} but no 'params'; pass the whole "
            "variables ({'params': ...}), e.g. {'params': params}"
        )
    elif isinstance(target, nn.Module):
        hint = (
            f"it is the linen module {type(target).__name__}; pass its variables "
            "(module.init(key, x)) instead"
        )
    else:
        hint = f"got {type(target).__name__}"
    raise TypeError(
        f"{name} is neither linen variables (a mapping with a 'params' collection) nor an NNX "
        f"model (an nnx.Module): {hint}."
    )


# --------------------------------------------------------------------------------------------
# a model as static structure + array state (for jit), one convention for linen and NNX


class Static:
    """The static half of :func:`split_model`, a ``jax.jit`` static argument: hashed by value
    when the object allows (equal linen modules share a compiled program), else by identity
    (e.g. ``nn.Sequential``, which holds a list)."""

    def __init__(self, kind: str, obj: Any, frozen: bool = False):
        self.kind, self.obj, self.frozen = kind, obj, frozen
        try:
            self._hash = hash((kind, obj, frozen))
            self._by_value = True
        except TypeError:
            self._hash = hash((kind, id(obj), frozen))
            self._by_value = False

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Static) or (self.kind, self.frozen, self._by_value) != (
            other.kind,
            other.frozen,
            other._by_value,
        ):
            return False
        if not self._by_value:
            return self.obj is other.obj
        try:
            return type(self.obj) is type(other.obj) and bool(self.obj == other.obj)
        except Exception:
            return self.obj is other.obj


def split_model(model: Any, variables: Any = None) -> tuple[Static, Any]:
    """``(static, state)`` of a linen module with its variables (state: the variables as a
    dict) or of an NNX model (``variables`` None; state: ``nnx.split``'s state)."""
    if is_linen(model):
        frozen = isinstance(variables, FrozenDict)
        state = variables.unfreeze() if isinstance(variables, FrozenDict) else dict(variables)
        return Static("linen", model, frozen), state
    graphdef, state = nnx.split(model)
    return Static("nnx", graphdef), state


def merge_model(static: Static, state: Any) -> tuple[Any, Any]:
    """The inverse of :func:`split_model`: ``(module, variables)`` for linen, ``(model,
    None)`` for NNX (a new model object holding ``state``)."""
    if static.kind == "linen":
        return static.obj, state
    return nnx.merge(static.obj, state), None


def update_model(static: Static, model: Any, target: Any) -> Any:
    """What a jitted pass returns after editing the :mod:`jaxinit.tree` ``target`` of a
    merged model: linen, the variables (frozen again if they came frozen); NNX, the model's
    whole state (its other variables unchanged, so that a pass that donated the state gives
    every array back), for :func:`apply_params` outside the jit."""
    if static.kind == "linen":
        return FrozenDict(target) if static.frozen else target
    return nnx.state(model)


def state_of(static: Static, model: Any, target: Any) -> Any:
    """The state of a merged model as :func:`split_model` gives it (linen: the variables
    ``target``; NNX: the model's state), copied: an NNX state shares its variables with the
    model, so that later in-place edits of the model would show in it."""
    return jax.tree.map(lambda a: a, target if static.kind == "linen" else nnx.state(model))


def apply_params(model: Any, params: Any) -> None:
    """Write the parameter state returned by :func:`update_model` into an NNX model."""
    nnx.update(model, params)
