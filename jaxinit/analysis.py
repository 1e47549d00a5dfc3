"""Variance propagation: per-layer statistics over many seeds, and mean-field predictions."""

from __future__ import annotations

import functools
import math
import re
import statistics
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _batching, _conv_layout, _measure, _prng
from ._checks import (
    check_bool,
    check_callable,
    check_compiler_options,
    check_finite_batch,
    check_int,
    check_loss_inputs,
    check_seed,
    short,
)
from ._flax import adapter as fa
from ._flax.probe import capture
from ._flax.select import compile_select, hashable_select
from .meanfield import Prediction as Prediction
from .meanfield import critical_sigma_w as critical_sigma_w
from .meanfield import predict as predict

if TYPE_CHECKING:
    import flax.linen as nn
    from flax import nnx

_AUTO_CHUNK_BYTES = 256 * 2**20
# On CPU a chunk whose per-layer working set (kernels + outputs of the chunk's seeds) stays
# cache-sized runs fastest: 50 x 512 MLP, 2 cores: chunk 1-2 about 125-145 ms/seed, 8: 200.
_AUTO_CHUNK_CPU_LAYER_BYTES = 4 * 2**20
_FIELDS = ("mean", "std", "in_mean", "in_std", "grad_std")
FAST_COMPILE = {"xla_backend_optimization_level": 0}
"""XLA options trading run time for compile time. On CPU a small ResNet's init compiled 7x
faster (16.4 s -> 2.3 s); conv-heavy programs can run several times slower."""


class _Names(tuple):
    """Layer names: a tuple that is a pytree node with no leaves (static under jit/vmap)."""

    __slots__ = ()


jax.tree_util.register_pytree_node(_Names, lambda n: ((), tuple(n)), lambda aux, _: _Names(aux))


class Band(NamedTuple):
    """A per-layer centre and interval over seeds (NumPy arrays of length ``layers``)."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


class LayerStats(NamedTuple):
    """Per-seed, per-layer statistics from :func:`layer_stats` (a pytree; ``names`` is
    static).

    Attributes:
      names: Path of each selected layer, in forward order (``"Dense_0"``, ``"layers/3"``).
      mean: ``(seeds, layers)`` mean of each layer's output over batch and features.
      std: ``(seeds, layers)`` standard deviation of each layer's output.
      in_mean: ``(seeds, layers)`` mean of each layer's input (its first argument; for a
        Dense/activation chain, the previous activation's output); NaN if not an array.
      in_std: ``(seeds, layers)`` standard deviation of each layer's input.
      grad_std: ``(seeds, layers)`` standard deviation of the loss gradient w.r.t. each
        layer's output, or None when ``grads=False``.
      loss: ``(seeds,)`` the loss at initialization, or None when ``grads=False``.
      stats: The statistics asked for with ``layer_stats(stats=...)`` beyond the fields
        above, by name, ``(seeds, layers)`` each (empty by default).
    """

    names: tuple[str, ...]
    mean: jax.Array
    std: jax.Array
    in_mean: jax.Array
    in_std: jax.Array
    grad_std: jax.Array | None
    loss: jax.Array | None
    stats: Mapping[str, jax.Array] = {}

    @property
    def seeds(self) -> int:
        return int(self.mean.shape[0])

    def summary(self, level: float = 0.95, interval: str = "seeds") -> dict[str, Band]:
        """Mean over seeds and a ``level`` interval for ``mean``, ``std`` (and ``grad_std``).

        Args:
          level: Coverage of the interval, in (0, 1).
          interval: ``"seeds"``: the central ``level`` quantile range of the per-seed values
            (where one run's value falls); ``"mean"``: a normal-approximation confidence
            interval for the expected value, ``mean +- z * sd / sqrt(seeds)``.

        Returns:
          A :class:`Band` per measured statistic: ``mean``, ``std``, ``in_mean``, ``in_std``,
          ``grad_std`` (if measured), then those asked for with ``layer_stats(stats=...)``.
        """
        if not 0 < level < 1:
            raise ValueError(f"summary: level={level!r} must be in (0, 1).")
        if interval not in ("seeds", "mean"):
            raise ValueError(f"summary: interval={interval!r} must be 'seeds' or 'mean'.")
        out = {}
        for field, values in self._measured().items():
            v = np.asarray(values, np.float64)
            # Overflowed seeds (inf/NaN statistics, e.g. standard-normal weights in a deep
            # net) give inf/NaN centres and bands, shown as such; see ``nonfinite``.
            with np.errstate(invalid="ignore", over="ignore"):
                centre = v.mean(axis=0)
                if interval == "seeds":
                    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2], axis=0)
                else:
                    z = statistics.NormalDist().inv_cdf((1 + level) / 2)
                    sd = v.std(axis=0, ddof=1) if len(v) > 1 else 0
                    half = z * sd / math.sqrt(v.shape[0])
                    lo, hi = centre - half, centre + half
            out[field] = Band(centre, lo, hi)
        return out

    def _measured(self) -> dict[str, Any]:
        """Every measured statistic, the base fields first."""
        base = {f: getattr(self, f) for f in _FIELDS if getattr(self, f) is not None}
        return base | dict(self.stats)

    def nonfinite(self) -> tuple[int, str | None]:
        """How many seeds have a non-finite (overflowed) output mean or std in some layer,
        and the first layer where that happens on any seed (None if none)."""
        bad = ~(np.isfinite(np.asarray(self.mean)) & np.isfinite(np.asarray(self.std)))
        layers = np.flatnonzero(bad.any(axis=0))
        return int(bad.any(axis=1).sum()), (self.names[layers[0]] if layers.size else None)

    def table(
        self,
        level: float = 0.95,
        interval: str = "seeds",
        columns: Sequence[str] | None = None,
    ) -> str:
        """A plain-text table: per layer, the mean over seeds and interval of ``columns``
        (any measured statistic: ``mean``, ``std``, ``in_mean``, ``in_std``, ``grad_std`` and
        those asked for with ``layer_stats(stats=...)``; default: every measured one)."""
        measured = tuple(self._measured())
        columns = measured if columns is None else columns
        bad = [c for c in columns if c not in measured]
        if bad:
            raise ValueError(
                f"table: columns={tuple(columns)!r} has {bad}; use some of {measured}."
            )
        s = {k: v for k, v in self.summary(level, interval).items() if k in columns}
        head = ["layer", *(f"{k} [{100 * level:g}% {interval}]" for k in s)]
        rows = [
            [name, *(f"{b.mean[i]:.4g} [{b.lo[i]:.4g}, {b.hi[i]:.4g}]" for b in s.values())]
            for i, name in enumerate(self.names)
        ]
        widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"{self.seeds} seeds\n" + "\n".join(line.rstrip() for line in lines)


def _kind(model: Any) -> str:
    if fa.is_linen(model):
        return "linen"
    if isinstance(model, type):
        raise TypeError(
            f"layer_stats: model={model.__name__} is a class; pass a linen instance "
            f"({model.__name__}(...)) or, for NNX, a constructor such as "
            f"`lambda key: {model.__name__}(rngs=nnx.Rngs(key))`."
        )
    if fa.is_nnx(model):
        raise TypeError(
            "layer_stats: pass an NNX model as a constructor key -> model, e.g. "
            "`lambda key: MLP(rngs=nnx.Rngs(key))`, so that each seed builds its own "
            f"parameters; got the instance {type(model).__name__}."
        )
    if callable(model):
        return "nnx"
    raise TypeError(
        f"layer_stats: model={model!r} must be a flax.linen Module or a constructor "
        "key -> nnx.Module."
    )


class _Spec(NamedTuple):
    """Everything that fixes the compiled program except array values."""

    model: Any
    kind: str
    select: Any
    loss: Any
    grads: bool
    chunk: int | None
    mesh: Mesh | None
    axes: tuple[str, ...]
    seeds: int
    apply_kwargs: tuple[tuple[str, Any], ...]
    after_init: Any = None
    compiler_options: tuple[tuple[str, Any], ...] = ()
    # (path, stack shape, output shape, dtype) per selected layer, from _structure
    outputs: tuple[tuple[str, tuple[int, ...], tuple[int, ...], Any], ...] = ()
    # statistic names or (name, function) pairs, for jaxinit.measure
    stats: tuple[Any, ...] = ("mean", "std", "in_mean", "in_std", "grad_std")
    # Whether a vmap over keys draws each seed's numbers from its own key alone (threefry);
    # otherwise each seed is initialized on its own, outside the vmap (see _program).
    vmap_keys: bool = True


# Key implementations whose random bits under jax.vmap equal the unbatched call's. An rbg or
# unsafe_rbg batch draws every element's bits from the batch's first key (the batching rule of
# lax.rng_bit_generator), so a seed's numbers would depend on its chunk.
_VMAP_SAFE_KEYS = ("threefry2x32", _prng.TAG)


def _vmap_safe(key: jax.Array) -> bool:
    return str(jax.random.key_impl(key)) in _VMAP_SAFE_KEYS


def _init(spec: _Spec, key: jax.Array, x: jax.Array) -> tuple[Any, Any]:
    """(model, variables) fresh from ``init`` for one seed: linen variables, or an NNX model."""
    if spec.kind == "linen":
        kwargs = dict(spec.apply_kwargs)
        # init creates every collection: a mutable= meant for apply (BatchNorm in training
        # mode) would keep it from creating the parameters.
        kwargs.pop("mutable", None)
        rngs: Any = key
        extra = kwargs.pop("rngs", None)  # e.g. {"dropout": k} for apply; init needs "params"
        if isinstance(extra, Mapping):
            rngs = {**extra, "params": key}
        return spec.model, spec.model.init(rngs, x[:1], **kwargs)
    model = spec.model(key)
    if not fa.is_nnx(model):
        raise TypeError(
            f"layer_stats: model(key) returned a {type(model).__name__}, not an nnx.Module; "
            "the constructor must return the model (note that nnx's .eval()/.train() return "
            "None: call them inside the constructor and return the model)."
        )
    return model, None


def _after_init(spec: _Spec, model: Any, variables: Any, x: jax.Array) -> tuple[Any, Any]:
    """``spec.after_init`` (e.g. LSUV) applied to fresh ``(model, variables)``, if given."""
    if spec.after_init is None:
        return model, variables
    if spec.kind == "linen":
        variables = spec.after_init(variables, x)
        if isinstance(variables, tuple) and variables and isinstance(variables[0], Mapping):
            variables = variables[0]  # LSUV's (variables, report)
        if not isinstance(variables, Mapping):
            raise TypeError(
                "layer_stats: after_init must return the new linen variables (or LSUV's "
                f"(variables, report)); it returned a {type(variables).__name__}."
            )
        return model, variables
    spec.after_init(model, x)
    return model, None


def _build(
    spec: _Spec, key: jax.Array, x: jax.Array, *, after_init: bool = True
) -> tuple[Any, Any]:
    """(model, variables) for one seed: linen variables from ``init``, or an NNX model, then
    ``spec.after_init`` (e.g. LSUV) if given."""
    model, variables = _init(spec, key, x)
    return _after_init(spec, model, variables, x) if after_init else (model, variables)


def _per_seed_fn(spec: _Spec) -> Any:
    """``(key, x, labels) -> ({statistic: (layers,)}, loss)`` for one seed: build the model,
    then :func:`jaxinit.measure` it; a layer stack under ``nn.scan`` contributes one column per
    iteration."""
    stat_fns = _measure.resolve_stats(spec.stats)
    structure = {p: (stack, shape, dtype) for p, stack, shape, dtype in spec.outputs}
    # Inside shard_map the zero perturbations are device-invariant, and the gradient w.r.t.
    # an invariant input would be summed over devices: mark them per-device.
    vary = None if spec.mesh is None else (lambda e: jax.lax.pcast(e, spec.axes, to="varying"))

    def measure_built(model, variables, x, labels):
        model, variables = _after_init(spec, model, variables, x)
        m = _measure.run(
            model,
            variables,
            x,
            stat_fns,
            select=spec.select,
            labels=labels,
            loss=spec.loss,
            apply_kwargs=dict(spec.apply_kwargs),
            structure=structure,
            vary=vary,
            caller="layer_stats",
        )
        values = {
            name: jnp.concatenate([jnp.reshape(m[p][name], -1) for p in structure])
            for name in stat_fns
        }
        return values, m.loss

    if spec.vmap_keys:

        def per_seed(key, x, labels):
            return measure_built(*_init(spec, key, x), x, labels)

        return per_seed

    statics: list[Any] = []  # the model's static part, recorded while tracing the init

    def init_state(key, x):
        static, state = fa.split_model(*_init(spec, key, x))
        statics[:] = [static]
        return state

    def measure_state(state, x, labels):
        return measure_built(*fa.merge_model(statics[0], state), x, labels)

    return init_state, measure_state


def _structure(
    spec: _Spec, key: jax.Array | jax.ShapeDtypeStruct, x: jax.Array | jax.ShapeDtypeStruct
) -> tuple[tuple, int, Any]:
    """Selected layers' (path, stack shape, output shape, dtype) in forward order, the bytes
    of one seed's parameters and the model's abstract output, from an abstract (shape-only)
    build and forward pass. The stack shape is ``()``, or ``(iterations,)`` for a layer inside
    ``nn.scan``."""
    found: dict[str, tuple[tuple[int, ...], tuple[int, ...], Any]] = {}
    model_output: list[Any] = []

    def go(k, x):
        model, variables = _build(spec, k, x, after_init=False)
        found.update(
            _measure.output_structure(
                model,
                variables,
                x,
                select=spec.select,
                apply_kwargs=dict(spec.apply_kwargs),
                model_output=model_output,
            )
        )
        return variables if spec.kind == "linen" else fa.split_model(model)[1]

    params = jax.eval_shape(go, key, x)
    nbytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params))
    outputs = tuple((p, stack, shape, dtype) for p, (stack, shape, dtype) in found.items())
    return outputs, nbytes, model_output[0]


def _names(outputs: tuple) -> tuple[str, ...]:
    """One name per measured layer: the path, with ``[i]`` per iteration of an ``nn.scan``."""
    return tuple(
        p if not stack else f"{p}[{i}]"
        for p, stack, _, _ in outputs
        for i in range(math.prod(stack))
    )


@functools.lru_cache(maxsize=32)
def _cached_structure(spec: _Spec, key: Any, x: Any) -> tuple[tuple, int, Any]:
    return _structure(spec, key, x)


def _get_structure(spec: _Spec, key: jax.Array, x: jax.Array) -> tuple[tuple, int, Any]:
    """:func:`_structure`, cached on everything it depends on (not the seed count), so that
    repeated calls with the same model and shapes skip the abstract trace."""
    abstract = (
        spec._replace(seeds=1, chunk=None, outputs=()),
        jax.ShapeDtypeStruct(key.shape, key.dtype),
        jax.ShapeDtypeStruct(x.shape, x.dtype),
    )
    try:
        return _cached_structure(*abstract)
    except TypeError:  # an unhashable model or option
        return _structure(*abstract)


def _program(spec: _Spec) -> Callable:
    """The jitted ``(key, x, labels) -> per-seed arrays`` over all seeds."""
    fns = _per_seed_fn(spec)

    def over_keys(keys, x, labels):
        if spec.vmap_keys:
            return _batching.map_padded(lambda k: fns(k, x, labels), keys, spec.chunk)
        # Keys whose vmapped draws depend on the batch (rbg): each seed's parameters come
        # from an unbatched init (a sequential lax.map, so exactly model.init(key_i)), and
        # only the deterministic measurement is vectorized, chunk by chunk.
        init_state, measure_state = fns

        def run_chunk(ks):
            states = jax.lax.map(lambda k: init_state(k, x), ks)
            return jax.vmap(lambda s: measure_state(s, x, labels))(states)

        return _batching.map_batches(run_chunk, keys, spec.chunk)

    if spec.mesh is None:

        def program(key, x, labels):
            return over_keys(jax.random.split(key, spec.seeds), x, labels)

        return jax.jit(
            _conv_layout.for_backend(program),
            compiler_options=dict(spec.compiler_options) or None,
        )

    mesh = spec.mesh
    devices = math.prod(mesh.shape[a] for a in spec.axes)
    padded = -(-spec.seeds // devices) * devices
    seed_spec = P(spec.axes)
    explicit = any(
        t == jax.sharding.AxisType.Explicit
        for name, t in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if name in spec.axes
    )

    def over_device_keys(keys, x, labels):
        # Per device, everything depends on its own seeds: mark the replicated batch
        # device-varying too, so that a scan carrying it (an nn.scan stack fed by the input)
        # keeps one type through its loop.
        x, labels = jax.lax.pcast((x, labels), spec.axes, to="varying")
        return over_keys(keys, x, labels)

    sharded = jax.shard_map(
        over_device_keys, mesh=mesh, in_specs=(seed_spec, P(), P()), out_specs=seed_spec
    )

    def sharded_program(key, x, labels):
        keys = jax.random.split(key, spec.seeds)
        if padded > spec.seeds:  # extra seeds to fill every device; dropped below
            keys = jnp.concatenate([keys, keys[: padded - spec.seeds]])
        sharding = NamedSharding(mesh, seed_spec)
        if explicit:
            keys = jax.reshard(keys, sharding)
        else:
            keys = jax.lax.with_sharding_constraint(keys, sharding)
        out = sharded(keys, x, labels)
        # The (seeds, layers) results are small: replicate them on every device, so that
        # every process can read them (np.asarray, summary) without a gather, and the result
        # is laid out the same whether or not the seeds divide the device count.
        replicated = NamedSharding(mesh, P())
        if explicit:
            out = jax.reshard(out, replicated)
        out = jax.tree.map(lambda a: a[: spec.seeds], out)
        return out if explicit else jax.lax.with_sharding_constraint(out, replicated)

    return jax.jit(
        _conv_layout.for_backend(sharded_program, mesh.devices.flat[0].platform),
        compiler_options=dict(spec.compiler_options) or None,
    )


@functools.lru_cache(maxsize=32)
def _cached_program(spec: _Spec) -> Callable:
    return _program(spec)


def _get_program(spec: _Spec) -> Callable:
    try:
        return _cached_program(spec)
    except TypeError:  # an unhashable model or option: build without the cache
        return _program(spec)


_BASE_STATS = ("mean", "std", "in_mean", "in_std")


def _fingerprint(value: Any) -> bytes:
    """A description of an argument that is equal on two processes exactly when they were
    given the same argument: array contents (not identities), functions by module, name and
    code, everything else by ``repr`` without memory addresses."""
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(value)).encode()
        return b"key:" + impl + _fingerprint(jax.random.key_data(value))
    if isinstance(value, np.ndarray | jax.Array | np.generic):
        if isinstance(value, jax.Array) and not value.is_fully_addressable:
            return f"global {value.dtype}{value.shape} {value.sharding}".encode()
        a = np.ascontiguousarray(np.asarray(value))
        return f"{a.dtype}{a.shape}:".encode() + a.tobytes()
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: repr(kv[0]))
        return b"{" + b",".join(_fingerprint(k) + b":" + _fingerprint(v) for k, v in items) + b"}"
    if isinstance(value, list | tuple):
        return b"(" + b",".join(_fingerprint(v) for v in value) + b")"
    code = getattr(value, "__code__", None)
    if code is not None and not fa.is_linen(value):
        name = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
        return name.encode() + code.co_code + _fingerprint(repr(code.co_consts))
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value)).encode()


def _check_processes_agree(mesh: Mesh, **arguments: Any) -> None:
    """A ValueError naming the arguments that differ between processes, when ``mesh`` spans
    all of them: one program runs over all hosts, and processes that disagree on it would
    otherwise fail inside a collective (or return inconsistent numbers)."""
    processes = {d.process_index for d in mesh.devices.flat}
    if len(processes) < 2 or len(processes) != jax.process_count():
        return
    from jax.experimental import multihost_utils

    digests = np.array([zlib.crc32(_fingerprint(v)) for v in arguments.values()], np.uint32)
    everyone = np.asarray(multihost_utils.process_allgather(digests))  # (processes, arguments)
    differ = [n for i, n in enumerate(arguments) if (everyone[:, i] != everyone[0, i]).any()]
    if differ:
        raise ValueError(
            f"layer_stats: the processes were called with different {', '.join(differ)} "
            f"(this is process {jax.process_index()} of {jax.process_count()}); with a mesh "
            "over several processes every process must call layer_stats with the same "
            "arguments, the same batch included."
        )


def _stats_spec(stats: Any, grads: bool) -> tuple[Any, ...]:
    """The statistics ``layer_stats`` measures: its base set (``grad_std`` with gradients),
    then the requested ones, validated by :func:`jaxinit.measure`'s rules."""
    if isinstance(stats, str) or not isinstance(stats, Mapping | Sequence):
        raise ValueError(
            f"layer_stats: stats={short(stats)} must be a sequence of statistic names or "
            "(name, function) pairs, e.g. ('rms', 'grad_rms')."
        )
    extra = list(stats.items()) if isinstance(stats, Mapping) else list(stats)
    base = _BASE_STATS + (("grad_std",) if grads else ())
    measured = (*base, *(e for e in extra if not (isinstance(e, str) and e in base)))
    resolved = _measure.resolve_stats(measured, fn="layer_stats")
    grad_names = [n for n in resolved if n.startswith("grad_")]
    if grad_names and not grads:
        raise ValueError(
            f"layer_stats: stats {grad_names} need gradients; drop them or set grads=True."
        )
    return measured


def layer_stats(
    model: nn.Module | Callable[[jax.Array], nnx.Module],
    x: jax.Array,
    *,
    seeds: int = 16,
    key: jax.Array | int = 0,
    labels: jax.Array | None = None,
    loss: Callable[[jax.Array, jax.Array | None], jax.Array] | None = None,
    select: Any = None,
    grads: bool = True,
    chunk_size: int | Literal["auto"] | None = "auto",
    mesh: Mesh | None = None,
    mesh_axes: str | Sequence[str] | None = None,
    apply_kwargs: Mapping[str, Any] | None = None,
    after_init: Callable[..., Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    stats: Sequence[str | tuple[str, Callable[[jax.Array], jax.Array]]]
    | Mapping[str, Callable[[jax.Array], jax.Array]] = (),
) -> LayerStats:
    """Per-layer statistics of a network at initialization, over many seeds at once.

    For each of ``seeds`` keys (``jax.random.split(key, seeds)``) the model is initialized,
    run on the batch ``x``, and for every selected layer (default: each layer owning a
    ``kernel``, in forward order) the mean and standard deviation of its output (over batch
    and features) are recorded, together with the standard deviation of the loss gradient
    w.r.t. that output. All seeds run in one ``jax.jit`` program: ``jax.vmap`` over keys,
    in chunks of ``chunk_size`` seeds (``jax.lax.map``) so memory stays bounded, and
    optionally split over the devices of ``mesh`` (``jax.shard_map``). Seed ``i`` gives the
    same numbers (to float32 rounding) however the seeds are chunked or sharded, for every
    key implementation: with ``threefry2x32`` keys the whole seed is vectorized; ``rbg`` and
    ``unsafe_rbg`` keys draw a vmapped batch's bits from its first key, so each seed is then
    initialized on its own (a sequential ``jax.lax.map``, exactly ``model.init(key_i)``) and
    only the measurement is vectorized.

    The gradients w.r.t. layer outputs come from adding a zero perturbation to each selected
    output (:func:`jaxinit.probe.apply_with_hook`) and differentiating w.r.t. the
    perturbations. The loss is, by default, the mean softmax cross-entropy of the model's
    output (logits, last axis) against ``labels``; without labels it is the fixed random
    projection ``sum(out * r)`` with ``r ~ N(0, 1)`` drawn once from a fixed key (the same
    for every seed), so the gradient at the output has unit variance and earlier layers show
    how it grows or shrinks, as in mean-field theory (:func:`predict`'s ``grad_var``).

    Training mode: pass the model's flag in ``apply_kwargs`` (``{"train": True}``). A linen
    BatchNorm then normalizes by the batch's own statistics; every collection besides
    ``params`` is made mutable for the pass (unless ``mutable=`` is given) and the updates
    are discarded. ``model.init`` gets ``apply_kwargs`` without ``mutable=``, and with their
    ``rngs`` (e.g. ``{"dropout": k}``) beside the seed's ``"params"`` key. An NNX model
    trains as its constructor leaves it; the pass runs on a copy.

    Multi-host: start every process with ``jax.distributed.initialize()``, build ``mesh``
    over ``jax.devices()`` (all hosts), and call ``layer_stats`` with the same arguments on
    every process; this is checked first (a ValueError names any argument that differs, the
    batch included). With a ``mesh`` the results are replicated on all its devices, so every
    process reads them directly (``np.asarray(st.std)``, ``.summary()``, ``.table()``); no
    gather is needed (``process_allgather`` of them needs ``tiled=True``).

    Args:
      model: A ``flax.linen`` Module (initialized with ``model.init(key, x[:1])``) or, for
        NNX, a constructor ``key -> nnx.Module``, e.g.
        ``lambda k: MLP(rngs=nnx.Rngs(k))``.
      x: The input batch.
      seeds: Number of random initializations.
      key: Base key (or int seed) split into the per-seed keys.
      labels: For the default loss (softmax cross-entropy over the output's last axis):
        integer class labels of shape ``output.shape[:-1]`` (``(batch,)`` for a classifier,
        ``(batch, time)`` for a sequence model), each in ``[0, classes)``. With ``loss=``,
        any targets that loss takes (float targets too).
      loss: Optional ``loss(out, labels) -> scalar`` replacing the default (needed when the
        model returns a tuple or a dict).
      select: Which layers to observe: None (every layer owning a ``kernel``), a predicate or
        a path pattern, as :mod:`jaxinit.probe` accepts.
      grads: Also compute the backward statistics (``grad_std``, ``loss``); False runs the
        forward pass only.
      chunk_size: Seeds per vectorized chunk: an int, None (all of a device's seeds in one
        ``vmap``) or ``"auto"`` (as many as fit in about 256 MiB of parameters and
        activations; on CPU also at most what keeps one layer's kernels and outputs for the
        chunk within about 4 MiB, which runs fastest there). Chunks are of equal size (the
        last one filled up with repeats of the last seed, whose results are dropped), so that
        the program compiles one copy of the per-seed work.
      mesh: A ``jax.sharding.Mesh``; the seeds are split over its devices (padded to a
        multiple of the device count; the padding is dropped).
      mesh_axes: Mesh axis name(s) to split seeds over; default all of ``mesh``'s axes.
      apply_kwargs: Extra keyword arguments for the model call (e.g. ``{"train": True}``;
        see *Training mode* above).
      after_init: A data-dependent step run on each seed's fresh parameters before they are
        measured, inside the same program: linen ``after_init(variables, x) -> variables``
        (or ``(variables, anything)``, as :func:`jaxinit.lsuv` returns), NNX
        ``after_init(model, x)`` (in place). E.g. LSUV: ``lambda v, x: jaxinit.lsuv(module,
        v, x)`` (linen) or ``lambda m, x: jaxinit.lsuv(m, x)`` (NNX).
      compiler_options: XLA options for the program (``jax.jit(compiler_options=...)``). On
        CPU, :data:`FAST_COMPILE` (``{"xla_backend_optimization_level": 0}``) compiles
        small and medium models several times faster (7x on a small ResNet's init) but can run
        several times slower (a conv training run: 3x end to end); worth it unless
        the sweep runs for minutes.
      stats: More statistics to record beside ``mean``, ``std``, ``in_mean``, ``in_std`` (and
        ``grad_std``), by :func:`jaxinit.measure`'s rules: names such as ``"rms"``,
        ``"in_abs_max"``, ``"grad_rms"``, or ``(name, function)`` pairs. Each lands in
        :attr:`LayerStats.stats` as ``(seeds, layers)``.

    Returns:
      A :class:`LayerStats` with ``(seeds, layers)`` arrays; ``.summary()`` and ``.table()``
      give the mean and a 95% interval over seeds.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxinit
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         for _ in range(3):
      ...             x = nn.relu(nn.Dense(64, kernel_init=jaxinit.he_normal())(x))
      ...         return nn.Dense(10)(x)
      >>> x = jax.random.normal(jax.random.key(1), (32, 64))
      >>> st = jaxinit.layer_stats(MLP(), x, seeds=8)
      >>> st.names, st.std.shape
      (('Dense_0', 'Dense_1', 'Dense_2', 'Dense_3'), (8, 4))
      >>> bool(abs(st.summary()["std"].mean[1] - 2 ** 0.5) < 0.1)  # He: E[h^2] = 2
      True
    """
    kind = _kind(model)
    # jax.random.split indexes seeds with int32
    seeds = check_int("layer_stats", "seeds", seeds, 1, 2**31 - 1)
    # the same numbers as the given key's, drawn faster where that pays (see _prng)
    base = _prng.for_backend(check_seed("layer_stats", key))
    grads = check_bool("layer_stats", "grads", grads)
    compile_select(select, name="layer_stats: select")
    for arg, value in (("apply_kwargs", apply_kwargs), ("compiler_options", compiler_options)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(
                f"layer_stats: {arg}={short(value)} must be a mapping of keyword arguments "
                "(a dict) or None."
            )
    if kind == "linen":
        fa.check_call_kwargs("layer_stats", model, apply_kwargs or {})
    check_compiler_options("layer_stats", compiler_options)
    if not isinstance(x, np.ndarray | jax.Array):
        raise TypeError(
            f"layer_stats: x must be one array, a batch with a leading axis; got a "
            f"{type(x).__name__}. A model of several inputs can take them stacked or "
            "concatenated in one array, or be wrapped to split one array."
        )
    x = jnp.asarray(x)
    check_finite_batch("layer_stats", x)
    if x.ndim < 1:
        raise ValueError(
            f"layer_stats: x must be a batch with a leading axis, got shape {x.shape}."
        )
    if after_init is not None:
        check_callable("layer_stats", "after_init", after_init, "a callable")
    if loss is not None:
        check_callable("layer_stats", "loss", loss, "a callable (out, labels) -> scalar")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"layer_stats: mesh={mesh!r} must be a jax.sharding.Mesh.")
    if mesh_axes is not None and mesh is None:
        raise ValueError("layer_stats: mesh_axes= needs mesh=.")
    if mesh_axes is not None and not (
        isinstance(mesh_axes, str)
        or (isinstance(mesh_axes, Sequence) and all(isinstance(a, str) for a in mesh_axes))
    ):
        raise TypeError(
            f"layer_stats: mesh_axes={mesh_axes!r} must be a mesh axis name or a sequence of names."
        )
    axes: tuple[str, ...] = ()
    if mesh is not None:
        axes = (
            tuple(mesh.axis_names)
            if mesh_axes is None
            else ((mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes))
        )
        unknown = [a for a in axes if a not in mesh.axis_names]
        if unknown:
            raise ValueError(
                f"layer_stats: mesh_axes={mesh_axes!r} names axes not in the mesh; "
                f"use some of {tuple(mesh.axis_names)}."
            )
        if len(set(axes)) < len(axes):
            raise ValueError(
                f"layer_stats: mesh_axes={mesh_axes!r} names an axis twice; name each once."
            )
    if not (chunk_size is None or chunk_size == "auto"):
        chunk_size = check_int("layer_stats", "chunk_size", chunk_size, 1)
    measured = _stats_spec(stats, grads)
    if mesh is not None:
        _check_processes_agree(
            mesh,
            model=model,
            x=x,
            seeds=seeds,
            key=base,
            labels=labels,
            loss=loss,
            select=select,
            grads=grads,
            chunk_size=chunk_size,
            mesh_axes=axes,
            apply_kwargs=apply_kwargs,
            after_init=after_init,
            compiler_options=compiler_options,
            stats=measured,
        )
    spec = _Spec(
        model,
        kind,
        hashable_select(select),
        loss,
        grads,
        None,
        mesh,
        axes,
        seeds,
        tuple(sorted((apply_kwargs or {}).items())),
        after_init,
        tuple(sorted((compiler_options or {}).items())),
        stats=measured,
        vmap_keys=_vmap_safe(base),
    )
    outputs, param_bytes, model_output = _get_structure(spec, base, x)
    if grads or labels is not None:
        labels = check_loss_inputs(
            "layer_stats", model_output, labels, custom_loss=loss is not None
        )
    if not outputs:
        raise ValueError(
            f"layer_stats: no layer matched select={select!r}; the default selects every "
            "layer owning a `kernel`."
        )
    if chunk_size == "auto":
        out_bytes = sum(
            math.prod(stack + shape) * dtype.itemsize for _, stack, shape, dtype in outputs
        )
        per_seed = max(param_bytes + (3 if grads else 1) * out_bytes, 1)
        chunk_size = max(1, _AUTO_CHUNK_BYTES // per_seed)
        platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
        if platform == "cpu":
            per_layer = per_seed / len(_names(outputs))
            chunk_size = min(chunk_size, max(1, int(_AUTO_CHUNK_CPU_LAYER_BYTES // per_layer)))
        devices = 1 if mesh is None else math.prod(mesh.shape[a] for a in axes)
        if chunk_size * devices >= seeds:
            chunk_size = None
    spec = spec._replace(chunk=chunk_size, outputs=outputs)
    if mesh is not None:
        x = jax.device_put(x, NamedSharding(mesh, P()))
        if labels is not None:
            labels = jax.device_put(labels, NamedSharding(mesh, P()))
    values, loss_value = _get_program(spec)(base, x, labels)
    names = _Names(_names(outputs))
    return LayerStats(
        names,
        values["mean"],
        values["std"],
        values["in_mean"],
        values["in_std"],
        values.get("grad_std"),
        loss_value,
        # in the order asked for: a jitted program returns its dicts sorted by key
        {name: values[name] for name in _measure.resolve_stats(measured) if name not in _FIELDS},
    )


def layer_outputs(
    model: nn.Module | Callable[[jax.Array], nnx.Module],
    x: jax.Array,
    *,
    key: jax.Array | int = 0,
    select: Any = None,
    apply_kwargs: Mapping[str, Any] | None = None,
    after_init: Callable[..., Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Every selected layer's output for one initialization (e.g. for histograms).

    Arguments as in :func:`layer_stats`; the model is initialized with ``key`` itself.

    Returns:
      ``{path: output}`` (NumPy arrays) in forward order.

    Example:
      >>> import jax, flax.linen as nn, jaxinit
      >>> model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(2)])
      >>> outs = jaxinit.layer_outputs(model, jax.numpy.ones((4, 3)))
      >>> {k: v.shape for k, v in outs.items()}
      {'layers_0': (4, 8), 'layers_2': (4, 2)}
    """
    kind = _kind(model)
    if kind == "linen":
        fa.check_call_kwargs("layer_outputs", model, apply_kwargs or {})
    check_compiler_options("layer_outputs", compiler_options)
    spec = _Spec(
        model,
        kind,
        hashable_select(select),
        None,
        False,
        None,
        None,
        (),
        1,
        tuple(sorted((apply_kwargs or {}).items())),
        after_init,
    )
    x = jnp.asarray(x)

    order: list[str] = []  # forward order, recorded while tracing: jit returns dicts sorted

    def run(k, x):
        m, variables = _build(spec, k, x)
        outs = capture(m, variables, x, select=select, **dict(spec.apply_kwargs))[1]
        order[:] = outs
        return tuple(outs.values())

    run = jax.jit(run, compiler_options=dict(compiler_options or {}) or None)
    values = run(check_seed("layer_outputs", key), x)
    return {p: np.asarray(v) for p, v in zip(order, values, strict=True)}
