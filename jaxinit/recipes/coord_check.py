"""The coordinate check: per-layer activation size over training steps, across widths.

Under a parametrization that transfers (μP), each layer's typical coordinate size
(``mean |x|``) stays the same as width grows, at every step; under the standard
parametrization (SP) the hidden and output layers' sizes grow with width once training moves
the weights. :func:`coord_check` measures this the way microsoft/mup's ``get_coord_data``
does, as one compiled program per width: ``jax.vmap`` over seeds, ``jax.lax.scan`` over
training steps, :func:`jaxinit.measure` at each step before the update.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import (
    check_bool,
    check_finite_batch,
    check_int,
    check_loss_inputs,
    check_number,
    check_seed,
)
from .._flax import adapter as fa
from .._measure import STATS, measure
from . import mup


class CoordCheck:
    """What :func:`coord_check` measured.

    Attributes:
      widths: the widths, ascending.
      layers: the measured layers' paths, in forward order.
      stat: the statistic's name (``abs_mean``: mean |x|).
      values: array ``(n_widths, n_seeds, steps, n_layers)``: the statistic of each layer's
        output at step t (1-based: step 1 is at initialization, before any update).
      loss: array ``(n_widths, n_seeds, steps)``: the training loss at each step.
      parametrization, optimizer, learning_rate: the settings used.
    """

    def __init__(self, widths, layers, stat, values, loss, parametrization, optimizer, lr):
        self.widths = tuple(widths)
        self.layers = tuple(layers)
        self.stat = stat
        self.values = np.asarray(values)
        self.loss = np.asarray(loss)
        self.parametrization = parametrization
        self.optimizer = optimizer
        self.learning_rate = lr

    @property
    def steps(self) -> int:
        return self.values.shape[2]

    def mean(self) -> np.ndarray:
        """The statistic averaged over seeds, ``(n_widths, steps, n_layers)``."""
        return self.values.mean(axis=1)

    def exponents(self) -> np.ndarray:
        """The least-squares slope of log(statistic) against log(width), per step and layer,
        ``(steps, n_layers)``: 0 is width-independent, 0.5 grows like sqrt(width). NaN where a
        statistic is 0 (a zero-initialized readout at step 1)."""
        m = self.mean().astype(np.float64)
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
        head = ["layer", "t", *(f"w={w}" for w in self.widths), "exponent"]
        rows = [
            [
                layer,
                str(t + 1),
                *(f"{m[i, t, j]:.4g}" for i in range(len(self.widths))),
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
            f"CoordCheck(widths={self.widths}, layers={self.layers}, steps={self.steps}, "
            f"seeds={self.values.shape[1]}, {self.parametrization}/{self.optimizer})"
        )


def _program(
    module, roles, parametrization, kind, lr, readout_zero_init, stat, select, steps, per_step
):
    """One jitted function of (keys, x, labels): vmap over keys of init -> parametrize ->
    scan over steps of (measure, loss and gradient, update); and a list that holds the
    measured layers' paths once it has been traced."""
    layers: list[str] = []

    def loss_of(params, rest, x, labels):
        logits = module.apply({**rest, "params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def one_seed(key, x, labels):
        first = x[0] if per_step else x
        variables = mup.parametrize(
            module.init(key, first), roles, parametrization, readout_zero_init=readout_zero_init
        )
        rest = {k: v for k, v in variables.items() if k != "params"}
        params = variables["params"]
        opt = mup.optimizer(roles, params, parametrization, kind, learning_rate=lr)

        def step(carry, batch):
            params, state = carry
            x, labels = batch
            got = measure(module, {**rest, "params": params}, x, stats=(stat,), select=select)
            layers[:] = got.paths
            value = jnp.stack([got[p][stat] for p in got.paths])
            loss, grads = jax.value_and_grad(loss_of)(params, rest, x, labels)
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

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None))), layers


def coord_check(
    make_model: Callable[[int], Any],
    x: jax.Array,
    labels: jax.Array,
    *,
    widths: Sequence[int],
    seeds: int = 4,
    steps: int = 3,
    parametrization: str = "mup",
    optimizer: str = "sgd",
    learning_rate: float = 0.1,
    base_width: int | None = None,
    readout_zero_init: bool = False,
    stat: str = "abs_mean",
    select: Any = None,
    key: Any = 0,
    per_step: bool = False,
) -> CoordCheck:
    """Train ``make_model(width)`` for ``steps`` steps at each width and record each layer's
    ``stat`` at every step, over ``seeds`` seeds.

    Args:
      make_model: width -> a linen module whose ``init(key, x)`` gives its variables and whose
        output is the logits.
      x: one batch, used at every step; with ``per_step``, one batch per step along a
        leading axis of length ``steps``.
      labels: its integer class labels (softmax cross-entropy loss), laid out as ``x``.
      widths: at least two widths.
      seeds: initializations per width; seed i uses the same key at every width.
      steps: training steps; the statistic is recorded at each step before its update.
      parametrization: ``"mup"`` or ``"sp"`` (see :mod:`jaxinit.mup`).
      optimizer: ``"sgd"`` or ``"adam"``.
      learning_rate: the base learning rate, scaled per parameter by the parametrization.
      base_width: the width at which the parametrization equals SP (default: the narrowest).
        Roles come from the shapes at ``base_width`` and ``base_width + 1``.
      readout_zero_init: zero the output layers at initialization.
      stat: a statistic of :data:`jaxinit.measure` (``abs_mean``, ``rms``, ``std``, ...).
      select: which layers to measure (default: every layer owning a kernel).
      key: an int seed or a PRNG key; split into one key per seed.
      per_step: whether ``x`` and ``labels`` hold one batch per step (a leading axis).

    Returns:
      A :class:`CoordCheck` (table, exponents, ratio).
    """
    widths = sorted(check_int("coord_check", "widths", w, 1) for w in widths)
    if len(set(widths)) < 2:
        raise ValueError(f"coord_check: widths={widths}; at least two distinct widths are needed.")
    seeds = check_int("coord_check", "seeds", seeds, 1)
    steps = check_int("coord_check", "steps", steps, 1)
    learning_rate = check_number("coord_check", "learning_rate", learning_rate, positive=True)
    key = check_seed("coord_check", key)
    if stat not in STATS:
        raise ValueError(f"coord_check: stat={stat!r}; one of {sorted(STATS)} is accepted.")
    base_width = (
        widths[0] if base_width is None else check_int("coord_check", "base_width", base_width, 1)
    )
    mup._check(parametrization, optimizer)
    labels = jnp.asarray(labels)
    per_step = check_bool("coord_check", "per_step", per_step)
    if per_step and (np.shape(x)[:1] != (steps,) or labels.shape[:1] != (steps,)):
        raise ValueError(
            f"coord_check: per_step=True needs x and labels with a leading axis of length "
            f"steps={steps}; got shapes {np.shape(x)} and {labels.shape}."
        )
    init_key = jax.random.key(0)
    first = x[0] if per_step else x

    def shapes(width):
        module = make_model(width)
        if not fa.is_linen(module):
            raise TypeError(
                f"coord_check: make_model({width}) returned {type(module).__name__}; a linen "
                "module is needed (NNX models: not yet supported)."
            )
        return module, jax.eval_shape(module.init, init_key, first)

    check_finite_batch("coord_check", x)
    # the labels against the model's output, as layer_stats checks them: integers of the
    # output's shape less its class axis, each a class of the output (a label past the last
    # class would give a NaN loss, -1 would count as the last class)
    probe, base = shapes(base_width)
    out = jax.eval_shape(probe.apply, base, first)
    if per_step:  # one batch of labels per step
        out = jax.ShapeDtypeStruct((steps, *out.shape), out.dtype)
    check_loss_inputs("coord_check", out, labels, custom_loss=False)
    _, delta = shapes(base_width + 1)
    keys = jax.random.split(key, seeds)
    # Trace every width here (Flax tracing is not thread-safe), then compile them all at once:
    # XLA compiles outside the GIL, so the widths' compiles share the cores.
    lowered, layers = [], ()
    for width in widths:
        module, target = shapes(width)
        program, traced = _program(
            module,
            mup.roles(base, delta, target),
            parametrization,
            optimizer,
            learning_rate,
            readout_zero_init,
            stat,
            select,
            steps,
            per_step,
        )
        lowered.append(program.lower(keys, x, labels))
        layers = tuple(traced)
    with concurrent.futures.ThreadPoolExecutor(min(len(lowered), os.cpu_count() or 1)) as pool:
        compiled = list(pool.map(lambda lo: lo.compile(), lowered))
    values, losses = [], []
    for program in compiled:
        v, loss = program(keys, x, labels)
        values.append(np.asarray(v))
        losses.append(np.asarray(loss))
    return CoordCheck(
        widths,
        layers,
        stat,
        np.stack(values),
        np.stack(losses),
        parametrization,
        optimizer,
        learning_rate,
    )


__all__ = ["CoordCheck", "coord_check"]
