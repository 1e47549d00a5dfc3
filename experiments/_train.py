"""Models over seeds for the experiment scripts: initialize, LSUV, measure, train and score a
stack of models (every leaf of ``variables`` has a leading axis, one entry per model), each as
one jitted ``jax.vmap`` (training and scoring optionally as a ``lax.map`` over the models).
:func:`fit` is the one training loop that every script's training runs.

A stack usually holds one model per (initializer, seed) pair, the initializers one after the
other (:func:`concat`), so ``values.reshape(inits, seeds, ...)`` separates them again. A model
is a linen Module or, for hand-written networks, a function ``(variables, x) -> output``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import _common  # noqa: F401  (puts the repository's jaxinit first on sys.path)
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit

# The three inits of fast.ai's LSUV comparisons (claims 7 and 8), in the order of
# :func:`fastai_inits`: LSUV starts from PyTorch's default, as fastai's notebook does.
FASTAI_INITS = ("PyTorch default", "He", "LSUV")


def seed_mesh() -> jax.sharding.Mesh | None:
    """A mesh over every local device for ``jaxinit.layer_stats(mesh=...)``, or None with one
    device. The seeds then run in parallel, one share per device (on CPU, one device per core
    via ``XLA_FLAGS=--xla_force_host_platform_device_count=N``); the numbers are the same as
    on one device (``layer_stats`` tests sharded == unsharded)."""
    if jax.device_count() == 1:
        return None
    return jax.make_mesh((jax.device_count(),), ("seeds",))


def concat(trees: Sequence[Any]) -> Any:
    """Concatenate stacked pytrees along their leading axis."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def init_stacked(model: Any, keys: jax.Array, args: argparse.Namespace, x: Any = None) -> Any:
    """The variables of ``model`` for every key, stacked: a linen Module is initialized on
    ``x[:1]``; any other ``model`` is a function ``key -> parameters``.

    With ``--quick`` the program is compiled with XLA's fast settings
    (``jaxinit.analysis.FAST_COMPILE``): compiling the threefry draws of every layer, not
    running them, is most of a quick run's init time. The draws then may differ from the full
    run's in rounding; their distribution does not."""
    from jaxinit.analysis import FAST_COMPILE

    init = (lambda k: model.init(k, x[:1])) if isinstance(model, nn.Module) else model
    return jax.jit(jax.vmap(init), compiler_options=FAST_COMPILE if args.quick else None)(keys)


def lsuv_stacked(model: nn.Module, variables: Any, x: jax.Array, **kwargs: Any) -> tuple[Any, bool]:
    """``jaxinit.lsuv`` on every model of a stack, in one ``jax.vmap``; returns the new
    variables and whether every layer of every model converged."""
    new, report = jax.vmap(lambda v: jaxinit.lsuv(model, v, x, **kwargs))(variables)
    return new, bool(np.all(report.converged))


def measure_stacked(
    model: nn.Module,
    variables: Any,
    x: jax.Array,
    stats: Sequence[str] = ("mean", "std"),
    **apply_kwargs: Any,
) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """``jaxinit.measure`` of every model of a stack on ``x`` (default selection: each layer
    owning a kernel), in one jitted ``vmap``. Returns the layer paths in forward order and,
    per statistic, a ``(models, layers)`` array."""
    m = jax.jit(jax.vmap(lambda v: jaxinit.measure(model, v, x, stats=stats, **apply_kwargs)))(
        variables
    )
    return m.paths, {s: np.stack([np.asarray(m[p][s]) for p in m.paths], axis=1) for s in stats}


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Trained(NamedTuple):
    """What :func:`train_stacked` returns.

    Attributes:
      variables: The trained stack.
      losses: ``(models, steps)``, the loss of each step's batch before its update.
      trace: ``trace(params)`` before each step, ``(models, steps, ...)``; None without one.
    """

    variables: Any
    losses: jax.Array
    trace: Any = None


def _forward(model: Any, apply_kwargs: dict[str, Any]) -> Callable[..., Any]:
    if isinstance(model, nn.Module):
        return functools.partial(model.apply, **apply_kwargs)
    if apply_kwargs:
        raise TypeError(f"apply keyword arguments {sorted(apply_kwargs)} need a linen Module")
    return model


def fit(
    loss: Callable[[Any, Any, Any], tuple[jax.Array, Any]],
    optimizer: optax.GradientTransformation,
    params: Any,
    inputs: Any,
    *,
    stats: Any = None,
    length: int | None = None,
    batch: Callable[[Any], Any] = lambda i: i,
    grad_mask: Any = None,
    trace: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any, Any]:
    """The experiments' training loop: one ``optimizer`` update of ``params`` per step, in one
    ``lax.scan`` over ``inputs`` (``length`` steps; ``inputs`` may be None).

    Step ``t`` evaluates ``loss(params, stats, batch(inputs[t])) -> (value, new stats)`` and its
    gradient in ``params``; ``stats`` (e.g. BatchNorm statistics) is carried, not trained.
    ``grad_mask`` (a pytree like ``params``) multiplies the gradient: 0 freezes a parameter.

    Returns the trained params, the final stats and per step the loss before the update, or
    ``(loss, trace(params))`` with ``trace``.
    """

    def step(carry, i):
        params, stats, state = carry
        (value, stats), g = jax.value_and_grad(loss, has_aux=True)(params, stats, batch(i))
        if grad_mask is not None:
            g = jax.tree.map(jnp.multiply, g, grad_mask)
        updates, state = optimizer.update(g, state, params)
        out = value if trace is None else (value, trace(params))
        return (optax.apply_updates(params, updates), stats, state), out

    carry = (params, stats, optimizer.init(params))
    (params, stats, _), out = jax.lax.scan(step, carry, inputs, length=length)
    return params, stats, out


def train_stacked(
    model: Any,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    order_keys: jax.Array | None = None,
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    batch: int | None = None,
    loss: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    trace: Callable[[Any], Any] | None = None,
    grad_masks: Any = None,
    one_by_one: bool = False,
    **apply_kwargs: Any,
) -> Trained:
    """Train a stack of models with :func:`fit`, in one jitted ``vmap`` over the models.

    Each step takes ``loss(model(variables, xb), yb)`` and one ``optimizer`` update of the
    ``params``. With ``batch`` the minibatches are drawn from ``(x, y)`` in epoch-wise shuffles
    given by ``order_keys`` (one key per model; equal keys give equal data orders, for paired
    comparisons); without it every step is full-batch. BatchNorm statistics, if ``variables``
    has ``batch_stats``, are updated (pass ``train=True`` for linen models that take it).

    Args:
      model: A linen Module (called with ``**apply_kwargs``) or a function
        ``(variables, x) -> output``.
      variables: The stack, ``{"params": ..., ["batch_stats": ...]}``.
      x: Inputs; y: targets.
      order_keys: One key per model for the data order (with ``batch``).
      steps: Number of updates.
      optimizer: An optax transformation.
      batch: Minibatch size, or None for full-batch steps.
      loss: ``loss(output, targets) -> scalar``; default softmax cross-entropy.
      trace: A function of the params recorded before every step (e.g. a symmetry measure).
      grad_masks: Per model, a pytree like ``params`` that multiplies the gradient (0 freezes a
        parameter), stacked like ``variables``.
      one_by_one: Train the models one after the other (``lax.map``) instead of in a
        ``vmap``: a ``vmap`` over models turns every convolution into a grouped one, which
        XLA's CPU backend runs several times slower than the models in turn.

    Returns:
      A :class:`Trained`.
    """
    forward = _forward(model, apply_kwargs)
    bn = "batch_stats" in variables
    n = x.shape[0]
    if batch is not None and order_keys is None:
        raise ValueError("train_stacked: minibatches (batch=) need order_keys")

    def loss_fn(params, stats, xy):
        xb, yb = xy
        if not bn:
            return loss(forward({"params": params}, xb), yb), stats
        out, upd = forward({"params": params, "batch_stats": stats}, xb, mutable=["batch_stats"])
        return loss(out, yb), upd["batch_stats"]

    def order(key):
        if batch is None:
            return None
        epochs = -(-steps * batch // n)
        perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, epochs))
        return perms.reshape(-1)[: steps * batch].reshape(steps, batch)

    def train(v, key, mask, x, y):
        params, stats, out = fit(
            loss_fn,
            optimizer,
            v["params"],
            order(key),
            stats=v.get("batch_stats", {}),
            length=steps,
            batch=lambda idx: (x, y) if idx is None else (x[idx], y[idx]),
            grad_mask=mask,
            trace=trace,
        )
        return {"params": params, **({"batch_stats": stats} if bn else {})}, out

    if one_by_one:
        run = jax.jit(lambda m, x, y: jax.lax.map(lambda a: train(*a, x, y), m))
        trained, out = run((variables, order_keys, grad_masks), x, y)
    else:
        run = jax.jit(jax.vmap(train, in_axes=(0, 0, 0, None, None)))
        trained, out = run(variables, order_keys, grad_masks, x, y)
    return Trained(trained, *out) if trace is not None else Trained(trained, out)


def accuracy_stacked(
    model: nn.Module,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    chunk: int = 1000,
    one_by_one: bool = False,
    **kwargs: Any,
) -> np.ndarray:
    """Accuracy on ``(x, y)`` of each model of a stack, in chunks of ``chunk`` examples, the
    models in a ``vmap`` or ``one_by_one`` (see :func:`train_stacked`)."""
    n = x.shape[0] // chunk * chunk
    if n == 0:
        chunk, n = x.shape[0], x.shape[0]
    xs = x[:n].reshape(n // chunk, chunk, *x.shape[1:])
    ys = y[:n].reshape(n // chunk, chunk)

    def acc(v, xs, ys):
        def one(xy):
            xb, yb = xy
            return (model.apply(v, xb, **kwargs).argmax(-1) == yb).sum()

        return jax.lax.map(one, (xs, ys)).sum() / n

    if one_by_one:
        return np.asarray(jax.jit(lambda vs: jax.lax.map(lambda v: acc(v, xs, ys), vs))(variables))
    return np.asarray(jax.jit(jax.vmap(acc, in_axes=(0, None, None)))(variables, xs, ys))


def fastai_inits(
    make: Callable[[jaxinit.Initializer], nn.Module],
    keys: jax.Array,
    x: jax.Array,
    x_lsuv: jax.Array,
    args: argparse.Namespace,
) -> tuple[nn.Module, Any, bool]:
    """The :data:`FASTAI_INITS` of ``make(kernel_init)`` for every key: PyTorch's default
    (``torch_default()`` kernels), He (``he_normal()``) and LSUV (``jaxinit.lsuv`` on the
    PyTorch-default variables, on ``x_lsuv``, in evaluation mode).

    Returns the model to apply (the initializer does not change the forward pass), the
    variables stacked as ``(3 * seeds, ...)``, and whether LSUV converged on every model."""
    model = make(jaxinit.torch_default())
    v_torch = init_stacked(model, keys, args, x)
    v_he = init_stacked(make(jaxinit.he_normal()), keys, args, x)
    v_lsuv, converged = lsuv_stacked(model, v_torch, x_lsuv, train=False)
    return model, concat([v_torch, v_he, v_lsuv]), converged


def sgd_accuracy(
    model: nn.Module, variables: Any, keys: jax.Array, im: Any, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray]:
    """Train a stack of ``inits * seeds`` models with SGD (``args.lr``, momentum 0.9) for
    ``args.steps`` minibatches of ``args.batch`` from ``im.x_train``, seed ``i`` of every init
    sharing data order ``keys[i]``, and score them on ``im.x_eval`` (``im``: a
    ``_common.Images``). Returns accuracy ``(inits, seeds)`` and step losses
    ``(inits, seeds, steps)``."""
    seeds = keys.shape[0]
    inits = jax.tree.leaves(variables)[0].shape[0] // seeds
    run = train_stacked(
        model,
        variables,
        im.x_train,
        im.y_train,
        jnp.concatenate([keys] * inits),
        steps=args.steps,
        batch=args.batch,
        optimizer=optax.sgd(args.lr, momentum=0.9),
        train=True,
    )
    acc = accuracy_stacked(model, run.variables, im.x_eval, im.y_eval, train=False)
    return acc.reshape(inits, seeds), np.asarray(run.losses).reshape(inits, seeds, args.steps)
