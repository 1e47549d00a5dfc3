"""Per-layer statistics of one forward (and backward) pass on given parameters.

:func:`measure` runs a Flax model once on a batch, on the parameters it is given (fresh from
``init``, after LSUV, after training steps), and records chosen statistics of each selected
layer's output, of its input, and of the loss gradient with respect to its output. Statistics
come by name from :data:`STATS` or as user functions. Everything is traced JAX, so
``measure`` runs under ``jax.jit`` and, for linen, under ``jax.vmap`` over stacked parameters
(seeds, training steps, widths of equal shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._checks import check_callable, check_finite_batch, check_loss_inputs
from ._flax import adapter as fa
from ._flax import attention as fattn
from ._flax.probe import LayerCall, intercept
from ._flax.select import Select, compile_select, hashable_select

Stat = Callable[[jax.Array], jax.Array]


def _rms(y: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(y)))


def token_cosine(y: jax.Array) -> jax.Array:
    """Mean pairwise cosine similarity between distinct tokens, averaged over batch entries.

    For ``y`` of shape ``(..., tokens, dim)`` with ``T`` tokens, each batch entry (every index
    of the leading axes) gives ``mean_{i != j} cos(x_i, x_j)``, computed exactly (no sampling)
    as ``(||sum_i u_i||^2 - sum_i ||u_i||^2) / (T (T - 1))`` with ``u_i = x_i / ||x_i||``;
    the result is the mean over batch entries. 1 means every token carries the same direction
    (rank collapse, Noci et al. 2022); about 0 means unrelated tokens. A zero vector has
    cosine 0 with every other vector (its ``u_i`` is 0; no epsilon enters: each vector is
    first divided by its largest absolute entry, so the norm neither overflows nor
    underflows). A 2-D ``(batch, dim)`` output is one entry whose tokens are the batch's
    examples: the mean input correlation of mean-field theory. NaN for fewer than 2 tokens or
    fewer than 2 axes.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxinit.diagnostics import token_cosine
      >>> float(token_cosine(jnp.ones((2, 5, 8))))  # every token the same direction
      1.0
    """
    if y.ndim < 2 or y.shape[-2] < 2:
        return jnp.float32(jnp.nan)
    t = y.shape[-2]
    x = y.reshape(-1, t, y.shape[-1]).astype(jnp.float32)
    top = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    x = x / jnp.where(top > 0, top, 1.0)
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    u = x / jnp.where(norm > 0, norm, 1.0)
    s = jnp.sum(u, axis=-2)
    pairs = jnp.sum(jnp.square(s), axis=-1) - jnp.sum(jnp.square(u), axis=(-2, -1))
    return jnp.mean(pairs / (t * (t - 1)))


def channel_mean_sq(y: jax.Array) -> jax.Array:
    """Average squared channel mean (Brock et al. 2021's signal propagation plots): channels
    are the last axis (Flax layout), ``mean_c (mean_{other axes} y[..., c])^2``; timm's
    ``avg_sq_ch_mean``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxinit.diagnostics import channel_mean_sq
      >>> float(channel_mean_sq(jnp.full((4, 3, 3, 2), 3.0)))
      9.0
    """
    axes = tuple(range(y.ndim - 1))
    return jnp.mean(jnp.square(jnp.mean(y, axis=axes)))


def channel_var(y: jax.Array) -> jax.Array:
    """Average channel variance (Brock et al. 2021's signal propagation plots): channels are
    the last axis, ``mean_c var_{other axes}(y[..., c])`` with the unbiased variance
    (``n - 1``, as timm's ``avg_ch_var`` with ``torch.var``); NaN with one value per channel.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxinit.diagnostics import channel_var
      >>> float(channel_var(jnp.array([[0.0, 1.0], [2.0, 1.0]])))
      1.0
    """
    axes = tuple(range(y.ndim - 1))
    n = math.prod(y.shape[:-1])
    if n < 2:
        return jnp.float32(jnp.nan)
    return jnp.mean(jnp.var(y, axis=axes, ddof=1))


#: Statistics by name, each a function of one float32 array to a scalar. ``measure`` applies
#: them to a layer's output (``mean``), its first positional input (``in_mean``) and the loss
#: gradient with respect to its output (``grad_std``, ``grad_rms``, ...: any name here with
#: a ``grad_`` prefix; the gradient has the output's shape). ``token_cosine`` is
#: :func:`token_cosine`, ``channel_mean_sq`` and ``channel_var`` are Brock et al.'s signal
#: propagation statistics (:func:`channel_mean_sq`, :func:`channel_var`).
STATS: dict[str, Stat] = {
    "mean": jnp.mean,
    "std": jnp.std,
    "rms": _rms,
    "abs_mean": lambda y: jnp.mean(jnp.abs(y)),
    "abs_max": lambda y: jnp.max(jnp.abs(y)),
    "token_cosine": token_cosine,
    "channel_mean_sq": channel_mean_sq,
    "channel_var": channel_var,
}

#: Attention statistics by name, each a function of the per-head attention entropy
#: ``(heads,)`` of the first attention call inside a selected layer (an attention layer, or a
#: block holding one); NaN for a layer that makes no attention call. The entropy comes from
#: :func:`jaxinit.diagnostics.attention_fn`, which attention layers with Flax's default
#: function use during the pass without any change to the model. ``attention_entropy`` is
#: per head (``measure`` only: ``layer_stats`` needs one number per layer);
#: ``attention_entropy_mean`` and ``attention_entropy_min`` reduce over heads.
ATTENTION_STATS: dict[str, Stat] = {
    "attention_entropy": lambda h: h,
    "attention_entropy_mean": jnp.mean,
    "attention_entropy_min": jnp.min,
}
_PREFIXES = ("in_", "grad_")

# A fixed random projection makes the default loss of an unlabelled output a scalar whose
# gradient is a standard normal vector, the same for every seed and call.
_PROJECTION_KEY = 0x5EED


@jax.tree_util.register_pytree_node_class
class Measurement:
    """What :func:`measure` returns: a pytree whose layer paths and statistic names are static,
    so it passes through ``jit`` and ``vmap`` and keeps the forward order of its layers.

    Attributes:
      layers: ``{path: {statistic: value}}`` in forward order. A value is a float32 scalar (with
        leading axes under ``vmap``), or has one entry per iteration for a layer stacked by
        ``nn.scan``.
      loss: The loss of the pass when gradient statistics were asked for, else None.
    """

    __slots__ = ("layers", "loss")

    def __init__(self, layers: dict[str, dict[str, jax.Array]], loss: jax.Array | None):
        self.layers = layers
        self.loss = loss

    @property
    def paths(self) -> tuple[str, ...]:
        """The measured layers, in forward order."""
        return tuple(self.layers)

    def __getitem__(self, path: str) -> dict[str, jax.Array]:
        return self.layers[path]

    def __repr__(self) -> str:
        names = sorted({n for v in self.layers.values() for n in v})
        return f"Measurement(paths={self.paths}, stats={tuple(names)}, loss={self.loss!r})"

    def tree_flatten(self):
        paths = tuple(self.layers)
        names = tuple(tuple(self.layers[p]) for p in paths)
        leaves = [self.layers[p][n] for p, ns in zip(paths, names, strict=True) for n in ns]
        return (leaves, self.loss), (paths, names)

    @classmethod
    def tree_unflatten(cls, aux, children) -> Measurement:
        paths, names = aux
        leaves, loss = children
        it = iter(leaves)
        return cls({p: {n: next(it) for n in ns} for p, ns in zip(paths, names, strict=True)}, loss)


def with_mutable(model: Any, variables: Any, apply_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``apply_kwargs`` for a linen pass: unless ``mutable=`` is given, every collection of
    ``variables`` besides ``params`` is mutable, so that a layer in training mode (BatchNorm
    with ``use_running_average=False``) can update its statistics; the pass normalizes with
    the batch's own statistics and the updates are discarded."""
    kwargs = dict(apply_kwargs)
    if "mutable" in kwargs or not fa.is_linen(model) or not isinstance(variables, Mapping):
        return kwargs
    collections = [c for c in variables if c != "params"]
    if collections:
        kwargs["mutable"] = collections
    return kwargs


def output_of(out: Any, apply_kwargs: Mapping[str, Any]) -> Any:
    """The model's output from what ``apply`` returned: with ``mutable=`` linen returns
    ``(output, state)``."""
    mutable = apply_kwargs.get("mutable", False)
    return out[0] if mutable not in (False, None) else out


def default_loss(out: jax.Array, labels: jax.Array | None) -> jax.Array:
    """Softmax cross-entropy with integer ``labels`` over the last axis of ``out``; without
    labels, ``sum(out * r)`` for a fixed standard-normal ``r``, so the gradient with respect
    to the output is ``r`` (unit variance)."""
    if labels is not None:
        logits = out.reshape(-1, out.shape[-1]).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels.reshape(-1)).mean()
    r = jax.random.normal(jax.random.key(_PROJECTION_KEY), out.shape, jnp.float32)
    return jnp.sum(out.astype(jnp.float32) * r)


def resolve_stats(
    stats: Sequence[str | tuple[str, Stat]] | Mapping[str, Stat], *, fn: str = "measure"
) -> dict[str, Stat]:
    """``stats`` as ``{name: function}``: names from :data:`STATS` (with an optional ``in_`` or
    ``grad_`` prefix), ``(name, function)`` pairs, or a mapping of user functions.

    Raises:
      ValueError: For an unknown name, a repeated name or an empty selection.
      TypeError: For an entry that is neither a name nor a (name, callable) pair.
    """
    items = list(stats.items()) if isinstance(stats, Mapping) else list(stats)
    if isinstance(stats, str) or not items:
        raise ValueError(
            f"{fn}: stats={stats!r} must be a non-empty sequence of statistic names, e.g. "
            "('mean', 'std', 'grad_std')."
        )
    out: dict[str, Stat] = {}
    for item in items:
        if isinstance(item, str) and item in ATTENTION_STATS:
            name, stat = item, ATTENTION_STATS[item]
        elif isinstance(item, str):
            base = item.removeprefix("in_").removeprefix("grad_")
            if base not in STATS:
                names = sorted(STATS)
                raise ValueError(
                    f"{fn}: stats entry {item!r} is not a known statistic; use one of "
                    f"{names}, each optionally prefixed by 'in_' or 'grad_', one of "
                    f"{sorted(ATTENTION_STATS)}, or a (name, function) pair."
                )
            name, stat = item, STATS[base]
        elif (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], str)
            and callable(item[1])
        ):
            name, stat = item
        else:
            raise TypeError(
                f"{fn}: stats entry {item!r} must be a statistic name or a (name, function) "
                "pair, the function mapping an array to a scalar."
            )
        if name in out:
            raise ValueError(f"{fn}: stats names {name!r} twice; each name once.")
        out[name] = stat
    return out


def _float(a: Any) -> jax.Array | None:
    if not isinstance(a, jax.Array) or not jnp.issubdtype(a.dtype, jnp.inexact) or not a.size:
        return None
    return a.astype(jnp.float32)


def _apply(
    fn: Stat, a: jax.Array | None, name: str = "statistic", caller: str = "measure"
) -> jax.Array:
    """A statistic of ``a``; NaN for an input that is not a non-empty float array."""
    if a is None:
        return jnp.float32(jnp.nan)
    return _scalar(caller, name, fn(a))


def _scalar(caller: str, name: str, value: Any) -> jax.Array:
    """``value`` as float32; a TypeError (at trace time) for anything but numbers. ``measure``
    keeps a statistic of any fixed shape (a histogram's counts); ``layer_stats`` needs one
    number, since its tables have one column per layer and a wider value would silently land
    in other layers' columns."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        shape, dtype = (), np.dtype(type(value))
    numeric = dtype is not None and jnp.issubdtype(dtype, jnp.number)
    if not numeric or (shape != () and caller == "layer_stats"):
        got = f"{dtype} of shape {shape}" if shape is not None else type(value).__name__
        wanted = (
            "one real number (a scalar)"
            if caller == "layer_stats"
            else "a real number or a fixed-shape array of them"
        )
        hint = (
            " For the attention entropy per layer use 'attention_entropy_mean' or "
            "'attention_entropy_min'; 'attention_entropy' (per head) is for jaxinit.measure."
            if name == "attention_entropy"
            else ""
        )
        raise TypeError(
            f"{caller}: statistic {name!r} returned {got}; a statistic maps an array to "
            f"{wanted}, e.g. ('p99', lambda y: jnp.quantile(y, 0.99)).{hint}"
        )
    return jnp.asarray(value, jnp.float32)


def _is_attention_stat(name: str, fn: Stat) -> bool:
    return ATTENTION_STATS.get(name) is fn


def _split(stat_fns: Mapping[str, Stat]) -> tuple[dict, dict, dict, dict]:
    """``stat_fns`` as (output, input, gradient, attention) statistics."""
    out, inp, grad, att = {}, {}, {}, {}
    for name, fn in stat_fns.items():
        if _is_attention_stat(name, fn):
            att[name] = fn
        else:
            (grad if name.startswith("grad_") else inp if name.startswith("in_") else out)[name] = (
                fn
            )
    return out, inp, grad, att


def record_pass(
    model: Any,
    variables: Any,
    x: Any,
    stat_fns: Mapping[str, Stat],
    *,
    select: Select,
    eps: Mapping[str, jax.Array] | None,
    apply_kwargs: Mapping[str, Any],
    caller: str = "measure",
) -> tuple[Any, dict[str, dict[str, jax.Array]]]:
    """One forward pass storing the output and input statistics of ``stat_fns`` at each
    selected layer's first call; ``eps[path]`` (a zero perturbation to differentiate by) is
    added to that layer's output. Returns ``(model output, {path: {name: value}})``."""
    out_fns, in_fns, _, att_fns = _split(stat_fns)

    def on_call(call: LayerCall):
        if att_fns:
            with fattn.collecting() as found:
                y = call()
        else:
            found, y = [], call()
        if call.first:
            yf = _float(y)
            xf = _float(call.args[0]) if call.args else None
            values = {n: _apply(f, yf, n, caller) for n, f in out_fns.items()}
            values |= {n: _apply(f, xf, n, caller) for n, f in in_fns.items()}
            entropy = found[0] if found else None
            values |= {n: _apply(f, entropy, n, caller) for n, f in att_fns.items()}
            call.store(values)
            if eps is not None:
                y = y + call.input().astype(y.dtype)
        return y

    if not att_fns:
        return intercept(
            model, variables, x, on_call, select=select, slots=True, inputs=eps, **apply_kwargs
        )
    with fattn.recording_defaults(model, fa.is_linen(model)) as recorded:
        return intercept(
            recorded, variables, x, on_call, select=select, slots=True, inputs=eps, **apply_kwargs
        )


def output_structure(
    model: Any,
    variables: Any,
    x: Any,
    *,
    select: Select,
    apply_kwargs: Mapping[str, Any],
    model_output: list[Any] | None = None,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], Any]]:
    """``{path: (stack shape, output shape, dtype)}`` of the selected layers, in forward order,
    from a shape-only pass (``jax.eval_shape``: nothing runs). The stack shape is ``()``, or
    ``(iterations,)`` for a layer inside ``nn.scan``. The model's own (abstract) output is
    appended to ``model_output`` when given."""
    found: dict[str, tuple[tuple[int, ...], Any]] = {}
    apply_kwargs = with_mutable(model, variables, apply_kwargs)

    def go(variables, x):
        def on_call(call: LayerCall):
            y = call()
            if call.first:
                found.setdefault(call.path, (tuple(y.shape), np.dtype(y.dtype)))
                call.store(jnp.zeros((), jnp.float32))
            return y

        out, stored = intercept(
            model, variables, x, on_call, select=select, slots=True, **apply_kwargs
        )
        return output_of(out, apply_kwargs), stored

    out, stored = jax.eval_shape(go, variables, x)
    if model_output is not None:
        model_output.append(out)
    return {p: (tuple(stored[p].shape), shape, dtype) for p, (shape, dtype) in found.items()}


def grad_stats(
    g: jax.Array,
    stack: tuple[int, ...],
    grad_fns: Mapping[str, Stat],
    caller: str = "measure",
) -> dict[str, jax.Array]:
    """Gradient statistics of one layer, one value per ``nn.scan`` iteration when stacked;
    each statistic gets the gradient in the layer output's shape."""
    rows = g.astype(jnp.float32).reshape((math.prod(stack), *g.shape[len(stack) :]))
    values = {
        n: jax.vmap(lambda r, n=n, f=f: _scalar(caller, n, f(r)))(rows) for n, f in grad_fns.items()
    }
    return {n: v.reshape(stack) for n, v in values.items()}


def measure(
    model: Any,
    *args: Any,
    stats: Sequence[str | tuple[str, Stat]] | Mapping[str, Stat] = ("mean", "std"),
    select: Select = None,
    labels: jax.Array | None = None,
    loss: Callable[[Any, jax.Array | None], jax.Array] | None = None,
    **apply_kwargs: Any,
) -> Measurement:
    """Per-layer statistics of one pass of ``model`` on ``x`` with the given parameters.

    Linen: ``measure(module, variables, x, ...)``. NNX: ``measure(model, x, ...)``; the model is
    not changed (the pass runs on a copy, BatchNorm statistics and RNG counts included).

    Statistics, per selected layer: a name from :data:`STATS` (``mean``, ``std``, ``rms``,
    ``abs_mean``, ``abs_max``, ``token_cosine``, ``channel_mean_sq``, ``channel_var``) is taken
    of the layer's output; with an ``in_`` prefix, of its first positional input; with a
    ``grad_`` prefix, of the gradient of the loss with respect to its output (one backward
    pass, added only when a ``grad_`` statistic is asked for). A name from
    :data:`ATTENTION_STATS` (``attention_entropy`` per head, ``attention_entropy_mean``,
    ``attention_entropy_min``) is taken of the attention entropy of the first attention call
    inside the layer (select attention layers with :func:`jaxinit.diagnostics.is_attention`,
    or blocks holding one); layers with Flax's default attention function report it with no
    change to the model (see :func:`jaxinit.diagnostics.attention_fn`). User
    functions come as ``(name, function)`` pairs or a mapping, the function taking the float32
    output to a scalar. A layer called several times (shared weights) is measured at its first
    call.

    Called outside ``jax.jit``, the pass is compiled as one program per model, statistics,
    selection, loss, keyword values and input shapes, and a repeat call runs that program.
    Keyword values holding arrays (linen's ``rngs=``, a mask) are traced arguments; a keyword
    value that cannot be hashed (a list) makes the pass run operation by operation instead.

    Args:
      model: A ``flax.linen.Module`` or a ``flax.nnx.Module``.
      *args: ``variables, x`` (linen) or ``x`` (NNX).
      stats: The statistics to record.
      select: Which layers: None (every layer owning a ``kernel``), a glob pattern, a sequence
        of patterns or a predicate ``(path, module) -> bool`` (see :mod:`jaxinit.probe`).
      labels: Integer class labels for the default loss (softmax cross-entropy over the last
        axis of the output), of shape ``output.shape[:-1]`` and each in ``[0, classes)``;
        without them the default loss is a fixed random projection. With ``loss=``, any
        targets that loss takes.
      loss: ``loss(output, labels) -> scalar`` in place of the default (needed when the
        model returns a tuple or a dict).
      **apply_kwargs: Passed to the model call (e.g. ``train=False``; ``mutable=`` for linen).

    Returns:
      A :class:`Measurement`: ``layers[path][name]`` and the loss (None without ``grad_``
      statistics).

    Raises:
      ValueError: For an unknown statistic or a selection that matches no layer.
      TypeError: For a model that is not a Flax module, or the wrong positional arguments.

    Example:
      >>> import jax, jaxinit
      >>> from jaxinit.models import MLP
      >>> model = MLP(depth=3, width=16)
      >>> x = jax.random.normal(jax.random.key(0), (8, 16))
      >>> variables = model.init(jax.random.key(1), x)
      >>> m = jaxinit.measure(model, variables, x, stats=("std", "in_std", "grad_rms"))
      >>> list(m.layers), sorted(m.layers["Dense_0"])
      (['Dense_0', 'Dense_1', 'Dense_2'], ['grad_rms', 'in_std', 'std'])
      >>> m.layers["Dense_2"]["std"].shape, m.loss.shape
      ((), ())
    """
    variables, x = fa.model_args("measure", model, args)
    if loss is not None:
        check_callable("measure", "loss", loss, "a callable (output, labels) -> scalar")
    check_finite_batch("measure", x)
    model_output: list[Any] = []
    stat_fns = resolve_stats(stats)
    compile_select(select, name="measure: select")
    select = hashable_select(select)
    fa.check_call_kwargs("measure", model, apply_kwargs)
    with fa.variables_fit("measure"):
        structure = output_structure(
            model, variables, x, select=select, apply_kwargs=apply_kwargs, model_output=model_output
        )
    if any(n.startswith("grad_") for n in stat_fns) or labels is not None:
        labels = check_loss_inputs("measure", model_output[0], labels, custom_loss=loss is not None)
    if not structure:
        raise ValueError(
            f"measure: no layer matched select={select!r}; the default selects every layer "
            "that owns a kernel."
        )
    static_kwargs, traced_kwargs = _split_kwargs(apply_kwargs)
    if static_kwargs is None:  # an unhashable keyword value: run operation by operation
        return run(
            model,
            variables,
            x,
            stat_fns,
            select=select,
            labels=labels,
            loss=loss,
            apply_kwargs=apply_kwargs,
            structure=structure,
        )
    split, state = fa.split_model(model, variables)
    with fa.variables_fit("measure"):
        return _PASS(
            state,
            x,
            labels,
            traced_kwargs,
            static=split,
            stat_fns=fa.Static("stats", tuple(stat_fns.items())),
            select=fa.Static("select", select),
            loss=fa.Static("loss", loss),
            kwargs=static_kwargs,
            structure=fa.Static("structure", tuple(structure.items())),
        )


def _split_kwargs(
    apply_kwargs: Mapping[str, Any],
) -> tuple[tuple[tuple[str, Any], ...] | None, dict[str, Any]]:
    """The model call's keywords as (static, traced): those holding arrays (linen's ``rngs=``, a
    mask) are traced; the rest are static, or None where one of them is not hashable."""
    static, traced = [], {}
    for k, v in sorted(apply_kwargs.items()):
        if any(isinstance(leaf, jax.Array | np.ndarray) for leaf in jax.tree.leaves(v)):
            traced[k] = v
            continue
        try:
            hash(v)
        except TypeError:
            return None, traced
        static.append((k, v))
    return tuple(static), traced


def _pass(state, x, labels, traced_kwargs, *, static, stat_fns, select, loss, kwargs, structure):
    model, variables = fa.merge_model(static, state)
    return run(
        model,
        variables,
        x,
        dict(stat_fns.obj),
        select=select.obj,
        labels=labels,
        loss=loss.obj,
        apply_kwargs={**dict(kwargs), **traced_kwargs},
        structure=dict(structure.obj),
    )


# One program per model, statistics, selection, loss, static keywords and input shapes: called
# eagerly, the pass would otherwise compile each of its operations on its own. Under the
# caller's jax.jit or jax.vmap it is inlined like any nested jit.
_PASS = jax.jit(
    _pass, static_argnames=("static", "stat_fns", "select", "loss", "kwargs", "structure")
)


def run(
    model: Any,
    variables: Any,
    x: Any,
    stat_fns: Mapping[str, Stat],
    *,
    select: Select,
    labels: jax.Array | None,
    loss: Callable[[Any, jax.Array | None], jax.Array] | None,
    apply_kwargs: Mapping[str, Any],
    structure: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], Any]],
    vary: Callable[[Any], Any] | None = None,
    caller: str = "measure",
) -> Measurement:
    """:func:`measure` on validated arguments and a known :func:`output_structure`;
    ``vary`` maps the zero perturbations before differentiating (``layer_stats`` marks them
    device-varying inside ``shard_map``); ``caller`` names the public function in errors."""
    _, _, grad_fns, _ = _split(stat_fns)
    apply_kwargs = with_mutable(model, variables, apply_kwargs)
    if not grad_fns:
        _, stored = record_pass(
            model,
            variables,
            x,
            stat_fns,
            select=select,
            eps=None,
            apply_kwargs=apply_kwargs,
            caller=caller,
        )
        return Measurement({p: stored[p] for p in structure}, None)
    loss_fn = loss or default_loss
    eps = {p: jnp.zeros(stack + shape, dtype) for p, (stack, shape, dtype) in structure.items()}
    if vary is not None:
        eps = vary(eps)

    def forward(e):
        out, stored = record_pass(
            model,
            variables,
            x,
            stat_fns,
            select=select,
            eps=e,
            apply_kwargs=apply_kwargs,
            caller=caller,
        )
        return _loss_value(caller, loss_fn(output_of(out, apply_kwargs), labels)), stored

    (value, stored), g = jax.value_and_grad(forward, has_aux=True)(eps)
    layers = {
        p: {**stored[p], **grad_stats(g[p], stack, grad_fns, caller)}
        for p, (stack, _, _) in structure.items()
    }
    return Measurement(layers, value)


def _loss_value(caller: str, value: Any) -> jax.Array:
    """The loss as a real scalar to differentiate; a TypeError (at trace time) otherwise."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(value, float):
        return jnp.asarray(value, jnp.float32)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = f"{dtype} of shape {shape}" if shape is not None else type(value).__name__
        raise TypeError(
            f"{caller}: loss returned {got}; the gradient statistics need loss(out, labels) "
            "to return one real floating scalar, e.g. a mean over the batch."
        )
    return value
