"""The coordinate check: per-layer activation size over training steps, across widths.

Under a parametrization that transfers (μP), each layer's typical coordinate size
(``mean |x|``) stays the same as width grows, at every step; under the standard
parametrization (SP) the hidden and output layers' sizes grow with width once training moves
the weights. :func:`coord_check` measures this the way microsoft/mup's ``get_coord_data``
does, as one compiled program per width: over seeds ``jax.lax.map`` on CPU and ``jax.vmap``
elsewhere (``seed_batch=``), ``jax.lax.scan`` over training steps, each layer's statistic
taken in the forward pass of each step, before its update.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _batching, _conv_layout, _prng
from .._checks import (
    check_bool,
    check_compiler_options,
    check_finite_batch,
    check_int,
    check_loss_inputs,
    check_number,
    check_seed,
)
from .._flax import adapter as fa
from .._flax.select import hashable_select
from .._measure import STATS, output_of, record_pass, resolve_stats, with_mutable
from . import mup


class CoordCheck:
    """What :func:`coord_check` measured.

    Attributes:
      widths: the sizes checked, ascending: widths, or depths when ``axis == "depth"``.
      axis: ``"width"`` or ``"depth"``.
      layers: the measured layers' paths, in forward order (over a depth check: every path
        measured at some depth, in the deepest model's order).
      stat: the statistic's name (``abs_mean``: mean |x|).
      values: array ``(n_sizes, n_seeds, steps, n_layers)``: the statistic of each layer's
        output at step t (1-based: step 1 is at initialization, before any update); NaN for a
        layer the model of that size lacks (a block deeper than its depth).
      loss: array ``(n_sizes, n_seeds, steps)``: the training loss at each step.
      parametrization, optimizer, learning_rate: the settings used.
    """

    def __init__(
        self, widths, layers, stat, values, loss, parametrization, optimizer, lr, axis="width"
    ):
        self.widths = tuple(widths)
        self.layers = tuple(layers)
        self.stat = stat
        self.values = np.asarray(values)
        self.loss = np.asarray(loss)
        self.parametrization = parametrization
        self.optimizer = optimizer
        self.learning_rate = lr
        self.axis = axis

    @property
    def steps(self) -> int:
        return self.values.shape[2]

    @property
    def sizes(self) -> tuple[int, ...]:
        """The widths or depths checked (``axis`` says which)."""
        return self.widths

    def mean(self) -> np.ndarray:
        """The statistic averaged over seeds, ``(n_sizes, steps, n_layers)``."""
        return self.values.mean(axis=1)

    def exponents(self) -> np.ndarray:
        """The least-squares slope of log(statistic) against log(width), per step and layer,
        ``(steps, n_layers)``: 0 is width-independent, 0.5 grows like sqrt(width). NaN where a
        statistic is 0 (a zero-initialized readout at step 1) or missing at some size."""
        m = self.mean().astype(np.float64)
        with np.errstate(invalid="ignore"):
            positive = np.all(m > 0, axis=0)
        logm = np.log(np.where(positive, m, 1.0))
        logw = np.log(np.asarray(self.widths, np.float64))
        x = logw - logw.mean()
        slope = np.einsum("w,wtl->tl", x, logm - logm.mean(axis=0)) / (x @ x)
        return np.where(positive, slope, np.nan)

    def ratio(self) -> np.ndarray:
        """The widest width's statistic over the narrowest's, per step and layer."""
        m = self.mean()
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0: a zero readout
            return m[-1] / m[0]

    def table(self) -> str:
        """A plain-text table: per layer and step, the statistic at each width and the fitted
        exponent."""
        m, e = self.mean(), self.exponents()
        head = ["layer", "t", *(f"{self.axis[0]}={w}" for w in self.widths), "exponent"]
        rows = [
            [
                layer,
                str(t + 1),
                *(
                    f"{m[i, t, j]:.4g}" if np.isfinite(m[i, t, j]) else "-"
                    for i in range(len(self.widths))
                ),
                f"{e[t, j]:+.3f}",
            ]
            for j, layer in enumerate(self.layers)
            for t in range(self.steps)
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        lines = [
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in [head, *rows]
        ]
        title = (
            f"coord check: {self.stat} per layer, {self.parametrization}, {self.optimizer} "
            f"lr {self.learning_rate:g}, {self.values.shape[1]} seeds"
        )
        return "\n".join([title, *lines])

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (
            f"CoordCheck({self.axis}s={self.widths}, layers={self.layers}, steps={self.steps}, "
            f"seeds={self.values.shape[1]}, {self.parametrization}/{self.optimizer})"
        )


class _Family:
    """How to build, parametrize, run and measure ``make_model(size)``: a linen module or an
    NNX model (``make_model(size, rngs)``)."""

    def __init__(self, make_model, x):
        self.make_model = make_model
        self.nnx = "rngs" in inspect.signature(make_model).parameters
        self.x = x

    def linen(self, size):
        module = self.make_model(size)
        if not fa.is_linen(module):
            raise TypeError(
                f"coord_check: make_model({size}) returned {type(module).__name__}; a linen "
                "module is needed, or an NNX model from make_model(size, rngs)."
            )
        return module

    def nnx_model(self, size, key):
        model = self.make_model(size, rngs=fa.nnx_rngs(key))
        if not fa.is_nnx(model):
            raise TypeError(
                f"coord_check: make_model({size}, rngs) returned {type(model).__name__}; an "
                "NNX model is needed (a linen module: make_model(size) without rngs)."
            )
        return model

    def shapes(self, size):
        """The abstract parameters and output of the model of ``size``."""
        if self.nnx:
            model = fa.nnx_eval_shape(lambda: self.nnx_model(size, 0))
            out = fa.nnx_eval_shape(lambda: self.nnx_model(size, 0)(self.x))
            return model, out
        module = self.linen(size)
        variables = jax.eval_shape(module.init, jax.random.key(0), self.x)
        return variables, jax.eval_shape(module.apply, variables, self.x)

    def _nnx_fns(self, size, roles, parametrization, readout_zero_init, record):
        def build(key):
            model = self.nnx_model(size, key)
            mup.parametrize(model, roles, parametrization, readout_zero_init=readout_zero_init)
            graphdef, params, rest = fa.nnx_split_params(model)
            return params, (graphdef, rest)

        def forward(params, static, x):
            return record(fa.nnx_merge(static[0], params, static[1]), None, x, {})

        return build, forward

    def _linen_fns(self, size, roles, parametrization, readout_zero_init, record):
        module = self.linen(size)

        def build(key):
            variables = mup.parametrize(
                module.init(key, self.x),
                roles,
                parametrization,
                readout_zero_init=readout_zero_init,
            )
            return variables["params"], {k: v for k, v in variables.items() if k != "params"}

        def forward(params, rest, x):
            variables = {**rest, "params": params}
            # BatchNorm in training mode: its statistics update, and the update is discarded
            return record(module, variables, x, with_mutable(module, variables, {}))

        return build, forward

    def program(
        self,
        size,
        roles,
        parametrization,
        kind,
        lr,
        alpha,
        readout_zero_init,
        stat,
        select,
        steps,
        per_step,
        *,
        seed_batch,
    ):
        """One jitted function of (keys, x, labels): over keys (``seed_batch`` of them at a
        time vmapped, the batches one after another) init -> parametrize -> scan over steps
        of (loss, gradient and statistics in one pass, update); and a list that holds the
        measured layers' paths once it has been traced."""
        layers: list[str] = []
        stat_fns = resolve_stats((stat,))
        select = hashable_select(select)

        def record(model, variables, x, kwargs):
            """The model's output and the statistic of each selected layer, in one pass."""
            out, stored = record_pass(
                model,
                variables,
                x,
                stat_fns,
                select=select,
                eps=None,
                apply_kwargs=kwargs,
                caller="coord_check",
            )
            if not stored:
                raise ValueError(
                    f"coord_check: no layer matched select={select!r}; the default selects "
                    "every layer that owns a kernel."
                )
            layers[:] = list(stored)
            return output_of(out, kwargs), jnp.stack([stored[p][stat] for p in stored])

        build, forward = (self._nnx_fns if self.nnx else self._linen_fns)(
            size, roles, parametrization, readout_zero_init, record
        )

        def loss_of(params, static, x, labels):
            logits, values = forward(params, static, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, values

        def one_seed(key, x, labels):
            params, static = build(key)
            opt = mup.optimizer(roles, params, parametrization, kind, learning_rate=lr, alpha=alpha)

            def step(carry, batch):
                params, state = carry
                x, labels = batch
                # the statistics come from the training step's own forward pass
                (loss, value), grads = jax.value_and_grad(loss_of, has_aux=True)(
                    params, static, x, labels
                )
                updates, state = opt.update(grads, state, params)
                return (optax.apply_updates(params, updates), state), (value, loss)

            carry = (params, opt.init(params))
            if per_step:
                _, (values, losses) = jax.lax.scan(step, carry, (x, labels))
            else:  # the same batch at every step
                _, (values, losses) = jax.lax.scan(
                    lambda c, _: step(c, (x, labels)), carry, None, length=steps
                )
            return values, losses

        def run(keys, x, labels):
            return _batching.map_padded(lambda k: one_seed(k, x, labels), keys, seed_batch)

        return jax.jit(_conv_layout.for_backend(run)), layers


def _sizes(name: str, sizes: Sequence[int]) -> list[int]:
    try:
        items = list(sizes)
    except TypeError:
        raise ValueError(
            f"coord_check: {name}={sizes!r}; a sequence of ints is accepted."
        ) from None
    out = sorted(check_int("coord_check", name, w, 1) for w in items)
    if len(set(out)) < 2:
        raise ValueError(f"coord_check: {name}={out}; at least two distinct {name} are needed.")
    return out


def _compile_options(options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """XLA options for the check's programs: ``options`` where given, else on CPU LLVM at -O1
    instead of XLA's default -O3. Each program draws every parameter (threefry) and trains a
    few steps; LLVM's optimization of those kernels is much of the compile, which dominates a
    check of a few seeds and steps. XLA optimizes the same program at either level; -O3 also
    vectorizes loops, which can reorder a sum XLA emits itself and change its last bits. For
    mup's MLP, -O1 gives the default's results bit for bit (``tests/test_mup.py``). Other
    backends keep XLA's defaults."""
    if options is not None:
        return dict(options) or None
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def _union(per_size: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Every path, in the order of the size that has most, then any others as they come."""
    longest = max(per_size, key=len)
    out = list(longest)
    for paths in per_size:
        out += [p for p in paths if p not in out]
    return tuple(out)


def coord_check(
    make_model: Callable[..., Any],
    x: jax.Array,
    labels: jax.Array,
    *,
    widths: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    seeds: int = 4,
    steps: int = 3,
    parametrization: str = "mup",
    optimizer: str = "sgd",
    learning_rate: float = 0.1,
    base_width: int | None = None,
    base_depth: int | None = None,
    blocks: str | Sequence[str] | None = None,
    alpha: float = 1.0,
    readout_zero_init: bool = False,
    stat: str = "abs_mean",
    select: Any = None,
    key: Any = 0,
    per_step: bool = False,
    seed_batch: int | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> CoordCheck:
    """Train ``make_model(size)`` for ``steps`` steps at each width (or depth) and record each
    layer's ``stat`` at every step, over ``seeds`` seeds.

    Args:
      make_model: size -> a linen module whose ``init(key, x)`` gives its variables and whose
        output is the logits; or ``make_model(size, rngs)`` -> an NNX model (a parameter named
        ``rngs`` makes it NNX: it is called inside the compiled program with ``nnx.Rngs`` of
        each seed's key).
      x: one batch, used at every step; with ``per_step``, one batch per step along a
        leading axis of length ``steps``.
      labels: its integer class labels (softmax cross-entropy loss), laid out as ``x``.
      widths: at least two widths (``make_model`` builds one per width).
      depths: instead of ``widths``, at least two depths: the depth check of CompleteP, at a
        fixed width. The model applies the residual-branch multiplier itself
        (:func:`jaxinit.mup.branch_multiplier` of ``depth / base_depth`` and ``alpha``).
      seeds: initializations per size; seed i uses the same key at every size.
      steps: training steps; the statistic is recorded at each step before its update.
      parametrization: ``"mup"``, ``"sp"`` or ``"completep"`` (see :mod:`jaxinit.mup`).
      optimizer: ``"sgd"`` or ``"adam"``.
      learning_rate: the base learning rate, scaled per parameter by the parametrization.
      base_width: the width at which the parametrization equals SP (default: the narrowest).
        Roles come from the shapes at ``base_width`` and at another of ``widths``.
      base_depth: the depth at which CompleteP's factors are 1 (default: 1, the paper's
        ``L^-alpha``); the learning-rate and ε factors use ``depth / base_depth``.
      blocks: glob(s) of the parameters inside residual branches (depth check).
      alpha: CompleteP's depth exponent.
      readout_zero_init: zero the output layers at initialization.
      stat: a statistic of :data:`jaxinit.measure` (``abs_mean``, ``rms``, ``std``, ...).
      select: which layers to measure (default: every layer owning a kernel); over depths,
        typically the blocks (``"block_*"``).
      key: an int seed or a PRNG key; split into one key per seed.
      per_step: whether ``x`` and ``labels`` hold one batch per step (a leading axis).
      seed_batch: how many seeds the compiled program runs at once (``jax.vmap``); batches
        of them run one after another (``jax.lax.map``), the last filled up with repeats
        whose results are dropped, so that the program compiles one copy of the training.
        Results agree up to float rounding.
        Default: 1 on CPU, where XLA's batched matmuls run at about half the speed of the
        same matmuls taken one seed at a time (64 seeds of a width-2048 MLP: 20 s against
        36 s in ``experiments/bench_coord_check.py``'s setting), and every seed at once on
        accelerators.
      compiler_options: XLA options for the compiled programs (as ``jax.jit``'s
        ``compiler_options``); ``{}`` for XLA's defaults. Default: on CPU
        ``{"xla_backend_optimization_level": 1}``, LLVM at -O1: the same optimized program
        as XLA's default (-O3), whose loop vectorization can round a sum's last bits
        differently; bit for bit the default's results for mup's MLP, in 8-14% less CPU time
        end to end at widths 2^7..2^11 (8 seeds, 3 steps), most of it compiling; elsewhere
        XLA's defaults.

    Returns:
      A :class:`CoordCheck` (table, exponents, ratio).
    """
    if (widths is None) == (depths is None):
        raise ValueError(
            f"coord_check: widths={widths!r}, depths={depths!r}; exactly one of them is accepted."
        )
    axis = "width" if widths is not None else "depth"
    sizes = _sizes(f"{axis}s", widths if widths is not None else depths)  # pyright: ignore[reportArgumentType]
    seeds = check_int("coord_check", "seeds", seeds, 1)
    steps = check_int("coord_check", "steps", steps, 1)
    learning_rate = check_number("coord_check", "learning_rate", learning_rate, positive=True)
    key = check_seed("coord_check", key)
    if stat not in STATS:
        raise ValueError(f"coord_check: stat={stat!r}; one of {sorted(STATS)} is accepted.")
    base_width = (
        sizes[0] if base_width is None else check_int("coord_check", "base_width", base_width, 1)
    )
    base_depth = 1 if base_depth is None else check_int("coord_check", "base_depth", base_depth, 1)
    mup._check(parametrization, optimizer)
    alpha = mup._check_alpha("coord_check", alpha)
    if axis == "depth" and parametrization != "completep" and blocks is not None:
        raise ValueError(
            f"coord_check: blocks={blocks!r} with parametrization={parametrization!r}; blocks are "
            "CompleteP's (parametrization='completep')."
        )
    labels = jnp.asarray(labels)
    per_step = check_bool("coord_check", "per_step", per_step)
    if per_step and (np.shape(x)[:1] != (steps,) or labels.shape[:1] != (steps,)):
        raise ValueError(
            f"coord_check: per_step=True needs x and labels with a leading axis of length "
            f"steps={steps}; got shapes {np.shape(x)} and {labels.shape}."
        )
    if seed_batch is None:
        seed_batch = 1 if jax.default_backend() == "cpu" else seeds
    seed_batch = check_int("coord_check", "seed_batch", seed_batch, 1)
    check_finite_batch("coord_check", x)
    check_compiler_options("coord_check", compiler_options)
    options = _compile_options(compiler_options)
    family = _Family(make_model, x[0] if per_step else x)
    # the labels against the model's output, as layer_stats checks them: integers of the
    # output's shape less its class axis, each a class of the output (a label past the last
    # class would give a NaN loss, -1 would count as the last class)
    base, out = family.shapes(sizes[0] if axis == "depth" else base_width)
    if per_step:  # one batch of labels per step
        out = jax.ShapeDtypeStruct((steps, *out.shape), out.dtype)
    check_loss_inputs("coord_check", out, labels, custom_loss=False)
    # roles from the base and another width of the check (not base + 1, which a model with
    # several heads may not accept)
    other = next(w for w in sizes if w != base_width)
    delta = family.shapes(other)[0] if axis == "width" else None
    # the same numbers as the given key's, drawn faster where that pays (see jaxinit._prng)
    keys = jax.random.split(_prng.for_backend(key), seeds)
    # Trace every size here (Flax tracing is not thread-safe), then compile them all at once:
    # XLA compiles outside the GIL, so the sizes' compiles share the cores.
    lowered, layers = [], []
    for size in sizes:
        target = family.shapes(size)[0]
        if axis == "width":
            roles = mup.roles(base, delta, target)
        else:  # fixed width: only the depth factors differ from 1
            roles = mup.roles(target, target, target, blocks=blocks, depth_mult=size / base_depth)
        program, traced = family.program(
            size,
            roles,
            parametrization,
            optimizer,
            learning_rate,
            alpha,
            readout_zero_init,
            stat,
            select,
            steps,
            per_step,
            seed_batch=seed_batch,
        )
        lowered.append(program.lower(keys, x, labels))
        layers.append(tuple(traced))
    with concurrent.futures.ThreadPoolExecutor(min(len(lowered), os.cpu_count() or 1)) as pool:
        compiled = list(pool.map(lambda lo: lo.compile(compiler_options=options), lowered))
    every = _union(layers)
    values = np.full((len(sizes), seeds, steps, len(every)), np.nan, np.float32)
    losses = []
    for i, program in enumerate(compiled):
        v, loss = program(keys, x, labels)
        values[i][..., [every.index(p) for p in layers[i]]] = np.asarray(v)
        losses.append(np.asarray(loss))
    return CoordCheck(
        sizes,
        every,
        stat,
        values,
        np.stack(losses),
        parametrization,
        optimizer,
        learning_rate,
        axis,
    )


__all__ = ["CoordCheck", "coord_check"]
