"""The interception engine behind :mod:`jaxinit.probe`: run a linen or NNX forward pass and
hand every selected layer call to a function (see the public module for the semantics).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import scope as _flax_scope
from flax.core import tracers as flax_tracers

from .adapter import adapter_for, is_linen, is_nnx
from .select import Select, compile_select

Hook = Callable[[str, Any], Any]

__all__ = [
    "COLLECTION",
    "Hook",
    "LayerCall",
    "apply_with_hook",
    "capture",
    "intercept",
    "layer_paths",
    "nnx_copy",
    "nnx_get",
]

_SLOT = "__jaxinit_slot__"  # linen: variable names in the _COLLECTION collection
_INPUT = "__jaxinit_input__"
_COLLECTION = "__jaxinit_probe__"
COLLECTION = _COLLECTION
"""The linen variable collection that carries values stored by :meth:`LayerCall.store` (and
:func:`intercept`'s ``inputs``). A layer stack under ``nn.scan`` is observed per iteration
when the scan carries it: ``variable_axes={"params": 0, jaxinit.probe.COLLECTION: 0}`` (or
``{True: 0}``); stored values then come out stacked along that axis."""
_NNX_SLOT = "_jaxinit_slot_"  # NNX: attribute prefix of slot Variables


# --------------------------------------------------------------------------------------------
# the run state (thread-local, trace-time Python only: strings and module identities, never
# array values, so nothing leaks out of nn.remat / nnx.remat)

_LOCAL = threading.local()


def _stack() -> list[Any]:
    if not hasattr(_LOCAL, "stack"):
        _LOCAL.stack = []
    return _LOCAL.stack


@contextlib.contextmanager
def _pushed(run: Any) -> Iterator[None]:
    stack = _stack()
    stack.append(run)
    try:
        yield
    finally:
        stack.pop()


def _suspended() -> contextlib.AbstractContextManager[None]:
    """Inside it, no run intercepts anything (used to rerun a layer with edited parameters)."""
    return _pushed(None)


def _top() -> Any:
    stack = _stack()
    return stack[-1] if stack else None


class _Run:
    def __init__(
        self,
        on_call: Callable[[LayerCall], Any],
        select: Callable[[str, Any], bool],
        inputs: Mapping[str, Any] | None = None,
    ):
        self.on_call = on_call
        self.select = select
        self.inputs = dict(inputs or {})
        self.active: list[Any] = []  # selected modules whose call is in progress
        # path -> the JAX traces (one per trace of a lifted transform's body) seen so far
        self.seen: dict[str, list[Any]] = {}
        self.stored: dict[str, Any] = {}  # path -> (parts, treedef) of stored slots


class LayerCall:
    """One call of a selected layer, handed to the ``on_call`` function of :func:`intercept`.

    Attributes:
      path: ``"/"``-joined module path.
      parts: the path as a tuple (NNX parts may be ints, e.g. list indices).
      module: the bound linen module or the NNX module (a private copy of the user's).
      args, kwargs: the arguments of the call.
      first: whether this is the first call of this layer in this forward pass (in a
        body that a lifted transform such as ``nn.scan`` traces more than once: in this
        trace).
    """

    def __init__(self, run, path, parts, module, fn, args, kwargs, first):
        self._run = run
        self.path = path
        self.parts = parts
        self.module = module
        self._fn = fn
        self.args = args
        self.kwargs = kwargs
        self.first = first

    def __call__(self) -> Any:
        """The layer's output from its own forward pass with its current parameters."""
        return self._fn(*self.args, **self.kwargs)

    def rerun(self, edit: Callable[[Any], Any]) -> Any:
        """The layer's output after ``edit`` has changed its parameters, on a copy.

        ``edit(target)`` gets the targets of :mod:`jaxinit.tree`, with parameter paths
        relative to this layer (``"kernel"``, ``"conv/bias"``): linen, the layer's own variables
        (it returns new ones); NNX, a copy of the layer (it edits it in place and returns
        None). Pure: nothing of the model is mutated, so it can run inside
        ``jax.lax.while_loop``; mutable state the layer updates (BatchNorm) is discarded."""
        if is_linen(self.module):
            unbound, variables = self.module.unbind()
            variables = edit(variables)
            with _suspended():
                out, _ = unbound.apply(variables, *self.args, mutable=True, **self.kwargs)
            return out
        model = nnx_copy(self.module)
        edit(model)
        with _suspended():
            return model(*self.args, **self.kwargs)

    def run_scaled(self, target: tuple[Any, ...], g: jax.Array, c: jax.Array) -> Any:
        """The layer's output when the kernel of the sublayer at relative path ``target``
        (``()``: the layer itself) is multiplied by ``g`` and its bias replaced by
        ``g * bias + c`` (``c`` is ignored when there is no bias); computed in float32 and cast
        back. :meth:`rerun` with that edit."""
        prefix = "".join(f"{p}/" for p in target)

        def edit(t: Any) -> Any:
            ad = adapter_for(t)
            names = [n for n in ("kernel", "bias") if f"{prefix}{n}" in ad.paths()]
            updates = {}
            for n in names:
                w = ad.get(prefix + n)
                new = w.astype(jnp.float32) * g + (c if n == "bias" else 0.0)
                updates[prefix + n] = new.astype(w.dtype)
            return ad.set(updates)

        return self.rerun(edit)

    def store(self, value: Any) -> None:
        """Keep a pytree of arrays for this layer in Flax state (linen: a variable collection;
        NNX: Variables on the module), which lifted transforms (``nn.remat``, ``nnx.remat``)
        carry out; :func:`intercept` returns it. A later store replaces it."""
        leaves, treedef = jax.tree.flatten(value)
        self._run.stored[self.path] = (self.parts, treedef)
        if is_linen(self.module):
            self.module.put_variable(_COLLECTION, _SLOT, value)
            return
        for i, leaf in enumerate(leaves):
            setattr(self.module, f"{_NNX_SLOT}{i}", _Slot(jnp.asarray(leaf)))

    def input(self) -> Any:
        """This layer's entry of :func:`intercept`'s ``inputs`` (None if it has none). Linen
        passes it in Flax state, so inside ``nn.scan`` (with :data:`COLLECTION` among its
        ``variable_axes``) each iteration gets its slice along the scanned axis."""
        if self.path not in self._run.inputs:
            return None
        if is_linen(self.module):
            value = self.module.get_variable(_COLLECTION, _INPUT)
            if value is None:
                raise _not_carried(f"Layer {self.path!r} cannot read its input.")
            return value
        return self._run.inputs[self.path]

    def load(self) -> Any:
        """The pytree last stored for this layer in this forward pass."""
        if is_linen(self.module):
            return self.module.get_variable(_COLLECTION, _SLOT)
        _, treedef = self._run.stored[self.path]
        leaves = [
            getattr(self.module, f"{_NNX_SLOT}{i}").get_value() for i in range(treedef.num_leaves)
        ]
        return jax.tree.unflatten(treedef, leaves)


class _Slot(nnx.Variable):
    """NNX Variable type holding values stored by :meth:`LayerCall.store`."""


def _dispatch(run: _Run, path, parts, module, fn, args, kwargs) -> Any:
    # A linen body traced twice by a lifted transform (nn.scan) is seen in two JAX traces:
    # each has its own first call. A shared layer called twice stays in one trace.
    trace = flax_tracers.current_trace() if is_linen(module) else None
    traces = run.seen.setdefault(path, [])
    first = not any(t == trace for t in traces)
    if first:
        traces.append(trace)
    run.active.append(module)
    try:
        return run.on_call(LayerCall(run, path, parts, module, fn, args, kwargs, first))
    finally:
        run.active.pop()


# --------------------------------------------------------------------------------------------
# linen


def _linen_interceptor(run: _Run):
    def interceptor(f, args, kwargs, context):
        module = context.module
        if (
            _top() is not run
            or context.method_name != "__call__"
            or any(m is module for m in run.active)
        ):
            return f(*args, **kwargs)
        parts = tuple(module.path)
        path = "/".join(parts)
        if not run.select(path, module):
            return f(*args, **kwargs)
        return _dispatch(run, path, parts, module, f, args, kwargs)

    return interceptor


def _with_probe_collection(mutable: Any) -> Any:
    if mutable is True or isinstance(mutable, _flax_scope.DenyList):
        return mutable
    if mutable is False or mutable is None:
        return [_COLLECTION]
    if isinstance(mutable, str):
        return [mutable, _COLLECTION]
    return [*mutable, _COLLECTION]


def _not_carried(detail: str) -> ValueError:
    return ValueError(
        "a selected layer runs inside a lifted transform (e.g. nn.scan) that does not carry "
        f"jaxinit's probe collection {_COLLECTION!r}: add it to the transform's variable_axes, "
        "e.g. variable_axes={'params': 0, jaxinit.probe.COLLECTION: 0} (or {True: 0}). " + detail
    )


def _nest(flat: Mapping[str, Any], leaf: str) -> dict[str, Any]:
    """``{path: value}`` as the nested linen collection ``{part: ... {leaf: value}}``."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for p in path.split("/") if path else ():
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _linen_intercept(module, variables, x, run: _Run, kwargs, want_slots: bool):
    kwargs = dict(kwargs)
    user_mutable = kwargs.pop("mutable", False)
    if run.inputs:
        variables = {**variables, _COLLECTION: _nest(run.inputs, _INPUT)}
        want_slots = True  # the collection must be mutable-or-given inside lifted transforms
    try:
        with _pushed(run), nn.intercept_methods(_linen_interceptor(run)):
            if not want_slots:
                return module.apply(variables, x, mutable=user_mutable, **kwargs), {}
            out, state = module.apply(
                variables, x, mutable=_with_probe_collection(user_mutable), **kwargs
            )
    except flax.errors.FlaxError as e:
        if _COLLECTION not in str(e):
            raise
        raise _not_carried(str(e).splitlines()[0]) from None
    state = dict(state)
    probe_state = state.pop(_COLLECTION, {})
    slots = {}
    for path, (parts, _) in run.stored.items():
        node = probe_state
        for p in parts:
            node = node[p]
        slots[path] = node[_SLOT]
    if user_mutable is False or user_mutable is None:
        return out, slots
    return (out, _same_mapping_type(variables, state)), slots


def _same_mapping_type(like: Any, state: Any) -> Any:
    """``state`` as the mapping type of ``like`` (a FrozenDict stays frozen), else as is."""
    if not isinstance(like, Mapping):
        return state
    mapping_type: Any = type(like)
    return mapping_type(state)


# --------------------------------------------------------------------------------------------
# NNX

_HOOKED: dict[type, type] = {}


def _hooked_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``__call__`` goes through the active run (if any)."""
    if getattr(cls, "_jaxinit_base", None) is not None:
        return cls
    if cls not in _HOOKED:
        base_call = cls.__call__

        def __call__(self, *args, **kwargs):
            run = _top()
            info = vars(self).get("_jaxinit_path")  # static: survives nnx.split / nnx.merge
            if not isinstance(run, _Run) or info is None or any(m is self for m in run.active):
                return base_call(self, *args, **kwargs)
            path, parts = info
            return _dispatch(
                run, path, parts, self, lambda *a, **k: base_call(self, *a, **k), args, kwargs
            )

        _HOOKED[cls] = type(
            cls.__name__,
            (cls,),
            {"__call__": __call__, "__module__": cls.__module__, "_jaxinit_base": cls},
        )
    return _HOOKED[cls]


def _nnx_modules(model: nnx.Module) -> list[tuple[tuple[Any, ...], nnx.Module]]:
    """Every module of ``model`` (each once, under its first path), root included."""
    return [(tuple(p), m) for p, m in nnx.iter_graph(model) if isinstance(m, nnx.Module)]


def nnx_copy(model: nnx.Module) -> nnx.Module:
    """A deep copy of an NNX module (its graph and state)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, state, copy=True)


def nnx_get(model: Any, parts: Sequence[Any]) -> Any:
    """The submodule of an NNX ``model`` at path ``parts``."""
    node = model
    for p in parts:
        node = node[p] if isinstance(p, int) else getattr(node, p)
    return node


def _nnx_intercept(model, x, run: _Run, kwargs):
    copy = nnx_copy(model)
    for parts, m in _nnx_modules(copy):
        path = "/".join(str(p) for p in parts)
        if run.select(path, m):
            m._jaxinit_path = (path, parts)  # pyright: ignore[reportAttributeAccessIssue]
            m.__class__ = _hooked_class(type(m))
    with _pushed(run):
        out = copy(x, **kwargs)
    slots = {}
    for path, (parts, treedef) in run.stored.items():
        m = nnx_get(copy, parts)
        leaves = [getattr(m, f"{_NNX_SLOT}{i}").get_value() for i in range(treedef.num_leaves)]
        slots[path] = jax.tree.unflatten(treedef, leaves)
    return out, slots


# --------------------------------------------------------------------------------------------
# public entry points


def intercept(
    model: Any,
    variables: Any,
    x: Any,
    on_call: Callable[[LayerCall], Any],
    *,
    select: Select = None,
    slots: bool = False,
    inputs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """Run the forward pass, replacing each selected layer call by ``on_call(call)``.

    ``on_call`` receives a :class:`LayerCall` and returns the output the forward pass continues
    with (``call()`` gives the layer's own output). Returns ``(output, stored)``: the model's
    output (linen: as ``model.apply(variables, x, **kwargs)`` returns it; NNX: ``model(x,
    **kwargs)``) and, when ``slots=True``, the pytrees stored with :meth:`LayerCall.store`, by
    path (otherwise ``{}``). ``inputs`` maps layer paths to pytrees of arrays that
    :meth:`LayerCall.input` hands to that layer's call (differentiable: e.g. perturbations of
    its output); inside ``nn.scan`` each iteration gets its slice.

    A linen layer stack under ``nn.scan`` whose ``variable_axes`` include :data:`COLLECTION`
    is seen once per trace of the body under one path; what it stores comes out stacked
    along the scanned axis.
    """
    if inputs is not None and not isinstance(inputs, Mapping):
        raise TypeError(f"intercept: inputs={inputs!r} must be a mapping path -> pytree.")
    run = _Run(on_call, compile_select(select), inputs)
    if is_linen(model):
        return _linen_intercept(model, variables, x, run, kwargs, slots)
    if is_nnx(model):
        if variables is not None:
            raise TypeError(
                "variables must be None for an NNX model (its state lives in the model); got "
                f"{type(variables).__name__}."
            )
        return _nnx_intercept(model, x, run, kwargs)
    raise TypeError(
        f"model of type {type(model).__name__} is not a Flax module; pass a flax.linen.Module "
        "(with its variables) or a flax.nnx.Module (with variables=None)."
    )


def apply_with_hook(
    model: Any, variables: Any, x: Any, hook: Hook, *, select: Select = None, **kwargs: Any
) -> Any:
    """Run the forward pass, replacing each selected layer's output ``y`` by ``hook(path, y)``.

    Layers are visited in forward order (at the end of their call, so a selected layer nested
    in another selected layer comes first); a layer called twice is hooked twice under the same
    path. Traceable: works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``. Values computed in a
    hook should be returned (or kept via :func:`capture`), not stored in Python containers: that
    leaks tracers out of ``nn.remat`` / ``nnx.remat`` and ``jax.checkpoint``.

    Args:
      model: a ``flax.linen.Module`` or a ``flax.nnx.Module``.
      variables: the linen variables; ``None`` for NNX.
      x: the input.
      hook: ``hook(path: str, y) -> y'``, ``y'`` of the same shape and dtype.
      select: which layers (see :mod:`jaxinit.probe`); default every layer owning a ``kernel``.
      **kwargs: passed to ``model.apply`` (linen; e.g. ``mutable=``, ``rngs=``) or to
        ``model(x, ...)`` (NNX).

    Returns:
      What ``model.apply(variables, x, **kwargs)`` (linen) or ``model(x, **kwargs)`` (NNX)
      returns. The NNX model is not mutated (the pass runs on a copy).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxinit.probe import apply_with_hook
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> variables = model.init(jax.random.key(0), x)
      >>> y = apply_with_hook(model, variables, x, lambda path, y: jnp.zeros_like(y))
      >>> bool((y == 0).all())
      True
    """
    if not callable(hook):
        raise TypeError(f"hook={hook!r} is not callable; pass hook(path: str, y) -> y.")
    out, _ = intercept(
        model, variables, x, lambda call: hook(call.path, call()), select=select, **kwargs
    )
    return out


def capture(
    model: Any,
    variables: Any,
    x: Any,
    fn: Callable[[Any], Any] | None = None,
    *,
    select: Select = None,
    **kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """Run the forward pass and return ``(output, {path: fn(y)})`` for the selected layers.

    ``fn`` (default: identity) maps a layer output to a pytree of arrays (e.g. its mean and
    std); values travel in Flax state, so this is safe under ``nn.remat``/``nnx.remat``. The
    dict is keyed by path (in forward order eagerly; ``jax.jit`` returns dicts with sorted keys,
    so use :func:`layer_paths` for the order); a layer called several times keeps the value of
    its first call.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxinit.probe import capture
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> variables = model.init(jax.random.key(0), x)
      >>> _, stds = capture(model, variables, x, jnp.std)
      >>> list(stds), stds["layers_2"].shape
      (['layers_0', 'layers_2'], ())
    """
    fn = (lambda y: y) if fn is None else fn

    def on_call(call: LayerCall) -> Any:
        y = call()
        if call.first:
            call.store(fn(y))
        return y

    out, stored = intercept(model, variables, x, on_call, select=select, slots=True, **kwargs)
    return out, stored


def layer_paths(
    model: Any, variables: Any, x: Any, *, select: Select = None, **kwargs: Any
) -> tuple[str, ...]:
    """The selected layers' paths in forward order (each once, at its first call).

    Runs the forward pass abstractly (``jax.eval_shape``): no computation is done. Layers that
    the forward pass never calls are not listed.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxinit.probe import layer_paths
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> x = jnp.ones((4, 3))
      >>> layer_paths(model, model.init(jax.random.key(0), x), x)
      ('layers_0', 'layers_2')
    """
    order: list[str] = []

    def on_call(call: LayerCall) -> Any:
        y = call()
        if call.first and call.path not in order:  # nn.scan traces its body twice
            order.append(call.path)
        return y

    jax.eval_shape(
        lambda v, x: intercept(model, v, x, on_call, select=select, **kwargs)[0], variables, x
    )
    return tuple(order)
