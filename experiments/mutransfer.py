"""Claim 9: under the standard parametrization (SP) the best learning rate moves with width;
under μP it stays within one step of a power-of-2 grid (μTransfer, Tensor Programs V, Fig. 1).

Two tasks, each trained at widths 64, 128, 256, 512 and 1024 (base width 64) for every learning
rate of a power-of-2 grid and every seed, under SP and under μP:

* MLP: Dense(width) ReLU Dense(width) ReLU Dense(10) on Fashion-MNIST average-pooled 4x4 to
  7x7 (49 inputs, fewer than every width; pixels standardized with the training set's mean and
  std; He-normal hidden kernels, Flax's default readout), trained with Adam on minibatches
  drawn with replacement; loss: the softmax cross-entropy of the final parameters on the first
  2,000 test images. Without Fashion-MNIST, ``--quick`` runs on scikit-learn's 8x8 digits
  (see ``_common.load_data``), not pooled, scored on their 500 test images.
* Transformer: a causal byte-level language model (linen): Embed(256, width) plus a learned
  position embedding, one pre-LayerNorm block (``nn.MultiHeadDotProductAttention`` with 4 heads
  of dimension width / 4 and a causal mask, a GELU MLP of 2 x width, both residual), a final
  LayerNorm and a Dense(256) readout, trained with Adam on random windows of the training split
  of ``jaxinit.data.stdlib_text`` (the top-level ``*.py`` files of the running Python's standard
  library, sorted by name, first 4,000,000 bytes: the first 90% train, the last 10%
  validation); loss: the next-byte cross-entropy of the final parameters on 128 fixed
  validation windows.

Both are sized for a 2-core CPU (the markdown states the steps and batches): the claim is
tested early in training, after a few hundred steps. ``--quick`` runs widths 64 and 256, three
learning rates, two seeds and a few steps: its numbers say whether the pipeline works (and that
μP equals SP at the base width), not whether the claim holds.

SP is Flax's own parametrization: the inits above, one learning rate for every parameter, Flax's
``1/sqrt(head_dim)`` attention. μP is ``jaxinit.mup`` relative to the base width: ``roles(base,
base + 1, width)`` from abstract shapes, ``parametrize(..., "mup")`` (the readout kernel's init
divided by ``sqrt(width / 64)``; not zeroed unless ``--zero-init``) and ``optimizer(..., "mup",
...)`` (per-role learning-rate factors), and ``mup.attention_fn(base_head_dim=16)`` (logits scaled
by ``sqrt(16) / head_dim``). At width 64 every factor is 1, so SP and μP are the same runs there.
``--zero-init`` also starts μP's readout kernel and the transformer's query kernels at zero, as
Tensor Programs V recommends (microsoft/mup's ``readout_zero_init`` and ``query_zero_init``); μP
then differs from SP at the base width too. The learning rate enters as the last factor of the
optimizer's chain (built with ``learning_rate=1.0``, its updates multiplied by the swept rate), so
for each (task, parametrization, width) one jitted program ``vmap``s over (learning rate x seed) a
``lax.scan`` over the training steps. A seed sets the init and the data order; the seeds are shared
by the learning rates, the widths and the two parametrizations.

The best learning rate of a width is the grid point with the lowest mean loss over seeds; a run
whose loss is NaN or inf has diverged, is counted and reported as such, and makes its grid
point's mean +inf. The claim holds when, on both tasks, μP's best learning rates over the widths
span at most one grid step and SP's span more.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import _common
import _train
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit
from jaxinit import data as jdata
from jaxinit.analysis import FAST_COMPILE

NAME = "mutransfer"
CLAIM = (
    "Under the standard parametrization (SP) the learning rate with the lowest loss moves with "
    "width; under μP it stays within one step of a power-of-2 grid (an MLP and a byte-level "
    "transformer trained with Adam, widths 64 to 1024)."
)
SOURCE = (
    "Yang et al. 2022, 'Tensor Programs V: Tuning Large Neural Networks via Zero-Shot "
    "Hyperparameter Transfer', Fig. 1 (a transformer trained with Adam), "
    "https://arxiv.org/abs/2203.03466"
)
WIDTHS, QUICK_WIDTHS = (64, 128, 256, 512, 1024), (64, 256)
BASE = 64  # the base width: μP equals SP here
PARAMETRIZATIONS = {"sp": "SP", "mup": "μP"}
TASKS = {"mlp": "MLP", "transformer": "transformer"}

# The learning-rate grids, as log2 of the rate.
MLP_LOG2_LRS, MLP_QUICK_LOG2_LRS = tuple(range(-11, -4)), (-8, -6, -4)
LM_LOG2_LRS, LM_QUICK_LOG2_LRS = tuple(range(-12, -5)), (-9, -7, -5)
MLP_STEPS, MLP_QUICK_STEPS, MLP_BATCH, MLP_VAL = 400, 40, 64, 2000
LM_STEPS, LM_QUICK_STEPS = 120, 10
HEADS, LM_BLOCKS, LM_MLP_RATIO = 4, 1, 2
LM_CONTEXT, LM_BATCH, LM_VAL_WINDOWS = 16, 4, 128
LM_BYTES, LM_TRAIN_FRACTION = 4_000_000, 0.9
LM_QUICK_CONTEXT, LM_QUICK_BATCH = 16, 4
# --zero-init: the μP kernels Tensor Programs V recommends starting at zero (readout, query)
ZERO_INIT = {"mlp": "readout/kernel", "transformer": ("readout/kernel", "**/query/kernel")}
SMOOTH = 0.1  # final training loss: the mean minibatch loss over the last 10% of the steps


# --------------------------------------------------------------------------- models


class WidthMLP(nn.Module):
    """Dense(width) ReLU Dense(width) ReLU Dense(classes): the input, hidden and output roles."""

    width: int
    classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(2):
            x = nn.relu(nn.Dense(self.width, kernel_init=jaxinit.he_normal(), name=f"dense{i}")(x))
        return nn.Dense(self.classes, name="readout")(x)


class ByteLM(nn.Module):
    """A causal byte-level language model: logits for the next byte at each position.

    ``HEADS`` heads of dimension ``ceil(width / HEADS)``: the head count is fixed and the head
    dimension grows, so ``jaxinit.mup.roles`` sees the query/key/value kernels
    ``(width, heads, head_dim)`` and the output kernel ``(heads, head_dim, width)`` grow along
    fan-in and fan-out (hidden). ``attention_fn`` None is Flax's default attention."""

    width: int
    context: int
    blocks: int = LM_BLOCKS
    attention_fn: Callable[..., jax.Array] | None = None

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        head_dim = -(-self.width // HEADS)
        attention = self.attention_fn or nn.dot_product_attention  # Flax's default
        x = nn.Embed(256, self.width, name="embed")(tokens)
        length = tokens.shape[-1]
        x = x + nn.Embed(self.context, self.width, name="pos")(jnp.arange(length))[None]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.blocks):
            h = nn.LayerNorm(name=f"block{i}_ln1")(x)
            h = nn.MultiHeadDotProductAttention(
                HEADS,
                qkv_features=HEADS * head_dim,
                out_features=self.width,
                attention_fn=attention,
                name=f"block{i}_attn",
            )(h, mask=mask)
            x = x + h
            h = nn.LayerNorm(name=f"block{i}_ln2")(x)
            h = nn.gelu(nn.Dense(LM_MLP_RATIO * self.width, name=f"block{i}_mlp_in")(h))
            x = x + nn.Dense(self.width, name=f"block{i}_mlp_out")(h)
        return nn.Dense(256, name="readout")(nn.LayerNorm(name="ln_f")(x))


# --------------------------------------------------------------------------- tasks


class Task(NamedTuple):
    """One of the two tasks, as the sweep needs it.

    Attributes:
      name: ``"mlp"`` or ``"transformer"``.
      optimizer: ``"sgd"`` or ``"adam"`` (``jaxinit.mup.optimizer``'s ``kind``).
      log2_lrs: The learning-rate grid, log2.
      steps, batch: Training steps and examples (MLP) or windows (transformer) per step.
      make: ``(width, parametrization) -> linen Module``.
      arrays: The data, passed to the jitted program as arguments (not baked in).
      sample: ``(arrays, key, step) -> (inputs, targets)`` of one training step.
      val: ``arrays -> (inputs, targets)`` of the validation loss.
      example: An input batch for ``init``.
      chance: The loss of a uniform prediction (ln classes), for the figure.
      describe: One paragraph for the markdown.
    """

    name: str
    optimizer: str
    log2_lrs: tuple[int, ...]
    steps: int
    batch: int
    make: Callable[[int, str], nn.Module]
    arrays: dict[str, Any]
    sample: Callable[[dict[str, Any], jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
    val: Callable[[dict[str, Any]], tuple[jax.Array, jax.Array]]
    example: jax.Array
    chance: float
    describe: str


def pooled(x: np.ndarray, pool: int) -> np.ndarray:
    """``(n, h, w, 1)`` images average-pooled by ``pool`` and flattened to ``(n, h w / pool^2)``."""
    n, h, w, _ = x.shape
    return x.reshape(n, h // pool, pool, w // pool, pool).mean(axis=(2, 4)).reshape(n, -1)


def mlp_task(data: _common.Data, args: argparse.Namespace) -> Task:
    pool = data.train.x.shape[1] // 7 if data.train.x.shape[1] > 8 else 1
    x_train, x_test = (pooled(d.x, pool) for d in (data.train, data.test))
    mu, sd = x_train.mean(), x_train.std()
    x = jnp.asarray((x_train - mu) / sd, jnp.float32)
    n_val = min(MLP_VAL, data.test.x.shape[0])
    arrays = {
        "x": x,
        "y": jnp.asarray(data.train.y),
        "x_val": jnp.asarray((x_test[:n_val] - mu) / sd, jnp.float32),
        "y_val": jnp.asarray(data.test.y[:n_val]),
    }
    n = x.shape[0]

    def sample(a, key, t):
        idx = jax.random.randint(jax.random.fold_in(key, t), (MLP_BATCH,), 0, n)
        return a["x"][idx], a["y"][idx]

    describe = (
        f"MLP {x.shape[1]} -> width -> width -> 10 (ReLU) on {data.label}"
        + (f" average-pooled {pool}x{pool}" if pool > 1 else "")
        + f": Adam (b1 0.9, b2 0.999, no weight decay, no schedule), {args.mlp_steps} steps of "
        f"{MLP_BATCH} images drawn with replacement from the {n:,} training images; loss: "
        f"cross-entropy of the final parameters on {n_val:,} test images. Why Adam and small "
        "images: under SP a layer's output moves by about (learning rate) x (its fan-in) per "
        "Adam step, so the step that a width allows shrinks as the hidden fan-in (the width) "
        "grows, which is what the claim is about, but only once the width exceeds the input "
        "layer's fixed fan-in. Trials before this run (not part of it) on the full 784 pixels "
        "found SP's best learning rate at widths 64, 256 and 1024 within one grid step with "
        "plain SGD, and the same at widths 64 and 256 with Adam; pooled to 7x7 (49 inputs, "
        "fewer than every width) the hidden layers set the step, as in wide models."
    )
    return Task(
        "mlp",
        "adam",
        MLP_QUICK_LOG2_LRS if args.quick else MLP_LOG2_LRS,
        args.mlp_steps,
        MLP_BATCH,
        lambda width, _: WidthMLP(width),
        arrays,
        sample,
        lambda a: (a["x_val"], a["y_val"]),
        x[:1],
        math.log(10),
        describe,
    )


def text_split() -> tuple[np.ndarray, np.ndarray]:
    """The fixed train / validation split of the standard library's text: the first
    ``LM_TRAIN_FRACTION`` of its first ``LM_BYTES`` bytes, and the rest."""
    text = jdata.stdlib_text(max_bytes=LM_BYTES)
    cut = int(LM_TRAIN_FRACTION * text.size)
    return text[:cut], text[cut:]


def lm_task(args: argparse.Namespace) -> Task:
    context = LM_QUICK_CONTEXT if args.quick else LM_CONTEXT
    batch = LM_QUICK_BATCH if args.quick else LM_BATCH
    train, val = text_split()
    # LM_VAL_WINDOWS windows of context + 1 bytes, evenly spaced over the validation split.
    starts = np.arange(LM_VAL_WINDOWS) * ((val.size - context - 1) // LM_VAL_WINDOWS)
    windows = val[starts[:, None] + np.arange(context + 1)[None, :]].astype(np.int32)
    arrays = {"text": jnp.asarray(train, jnp.int32), "val": jnp.asarray(windows)}
    offsets = jnp.arange(context + 1)
    n = train.size

    def sample(a, key, t):
        start = jax.random.randint(jax.random.fold_in(key, t), (batch,), 0, n - context)
        w = a["text"][start[:, None] + offsets[None, :]]
        return w[:, :-1], w[:, 1:]

    def make(width: int, parametrization: str) -> nn.Module:
        attention = None
        if parametrization == "mup":
            attention = jaxinit.mup.attention_fn(base_head_dim=-(-BASE // HEADS))
        return ByteLM(width, context, attention_fn=attention)

    describe = (
        f"Byte-level transformer, {LM_BLOCKS} pre-LN blocks, {HEADS} heads of width / {HEADS}, "
        f"GELU MLP of {LM_MLP_RATIO} x width, context {context}: Adam (b1 0.9, b2 0.999, no "
        f"weight decay, no schedule), {args.lm_steps} steps of {batch} random windows "
        f"({batch * context} next-byte targets a step) from the first {train.size:,} bytes "
        f"of the standard library's top-level sources; loss: next-byte cross-entropy of the "
        f"final parameters on {LM_VAL_WINDOWS} fixed windows of the last {val.size:,} bytes. "
        "Adam, as in Tensor Programs V's Fig. 1."
    )
    return Task(
        "transformer",
        "adam",
        LM_QUICK_LOG2_LRS if args.quick else LM_LOG2_LRS,
        args.lm_steps,
        batch,
        make,
        arrays,
        sample,
        lambda a: (a["val"][:, :-1], a["val"][:, 1:]),
        jnp.asarray(windows[:1, :-1]),
        math.log(256),
        describe,
    )


# --------------------------------------------------------------------------- the sweep


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Sweep(NamedTuple):
    """One (task, parametrization, width): per (learning rate, seed) the final validation loss
    ``(lrs, seeds)`` and the training loss of every step ``(lrs, seeds, steps)``."""

    val: np.ndarray
    train: np.ndarray
    roles: jaxinit.mup.Roles


class Program(NamedTuple):
    """One (task, parametrization, width)'s training program, traced and lowered
    (:func:`lower`), with the roles ``jaxinit.mup`` found and the program's inputs."""

    task: Task
    parametrization: str
    width: int
    roles: jaxinit.mup.Roles
    lowered: Any
    inputs: tuple[Any, ...]


_SHAPES: dict[tuple[str, str, int], Any] = {}


def abstract(task: Task, parametrization: str, width: int) -> Any:
    """The abstract variables (``jax.eval_shape`` of ``init``) of ``task``'s model at
    ``width``, traced once."""
    key = (task.name, parametrization, width)
    if key not in _SHAPES:
        init = task.make(width, parametrization).init
        _SHAPES[key] = jax.eval_shape(init, jax.random.key(0), task.example)
    return _SHAPES[key]


def lower(task: Task, parametrization: str, width: int, keys: jax.Array, args) -> Program:
    """Trace and lower the training of ``task``'s model at ``width`` for every (learning rate,
    seed), one jitted ``vmap`` of a ``lax.scan`` over the steps. ``keys``: ``(seeds, 2)`` init
    and data-order keys, shared by the learning rates."""
    model = task.make(width, parametrization)
    shape = {w: abstract(task, parametrization, w) for w in (BASE, BASE + 1, width)}
    roles = jaxinit.mup.roles(shape[BASE], shape[BASE + 1], shape[width])
    opt = jaxinit.mup.optimizer(
        roles, shape[width]["params"], parametrization, task.optimizer, learning_rate=1.0
    )

    def loss_fn(params, x, y):
        logits: jax.Array = cast(jax.Array, model.apply({"params": params}, x))
        return cross_entropy(logits, y)

    def run(init_key, data_key, lr, arrays):
        variables = jaxinit.mup.parametrize(
            model.init(init_key, task.example), roles, parametrization
        )
        if parametrization == "mup" and args.zero_init:
            variables = jaxinit.tree.zero(variables, ZERO_INIT[task.name])
        params, _, losses = _train.fit(
            lambda params, stats, xy: (loss_fn(params, *xy), stats),
            # opt ends in optax.scale(1.0): the swept rate is its exact replacement.
            optax.chain(opt, optax.scale(lr)),
            variables["params"],
            jnp.arange(task.steps),
            batch=lambda t: task.sample(arrays, data_key, t),
        )
        return loss_fn(params, *task.val(arrays)), losses

    lrs = 2.0 ** np.asarray(task.log2_lrs, np.float32)
    n_lr = lrs.size
    inputs = (
        jnp.tile(keys[:, 0], n_lr),
        jnp.tile(keys[:, 1], n_lr),
        jnp.asarray(np.repeat(lrs, keys.shape[0])),
        task.arrays,
    )
    program = jax.jit(
        jax.vmap(run, in_axes=(0, 0, 0, None)),
        compiler_options=FAST_COMPILE if args.quick else None,
    )
    return Program(task, parametrization, width, roles, program.lower(*inputs), inputs)


def sweep_all(
    tasks: Sequence[Task], widths: Sequence[int], keys: jax.Array, args
) -> dict[str, dict[str, list[Sweep]]]:
    """Every (task, parametrization, width)'s :class:`Sweep`. Each program is traced and
    lowered in the main thread (Flax tracing is not thread-safe) and compiled in a thread pool
    as soon as it is lowered (XLA compiles outside the GIL, so the compiles overlap the
    tracing and the runs, as in ``jaxinit.coord_check``); the programs then run in order."""
    grid_points = [(t, p, w) for t in tasks for p in PARAMETRIZATIONS for w in widths]
    runs: dict[str, dict[str, list[Sweep]]] = {
        t.name: {p: [] for p in PARAMETRIZATIONS} for t in tasks
    }
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        pending = []
        for t, p, w in grid_points:
            program = lower(t, p, w, keys, args)
            pending.append((program, pool.submit(program.lowered.compile)))
        for program, future in pending:
            val, train = future.result()(*program.inputs)
            n_lr, seeds = len(program.task.log2_lrs), keys.shape[0]
            runs[program.task.name][program.parametrization].append(
                Sweep(
                    np.asarray(val, np.float64).reshape(n_lr, seeds),
                    np.asarray(train, np.float64).reshape(n_lr, seeds, program.task.steps),
                    program.roles,
                )
            )
    return runs


class Grid(NamedTuple):
    """A (task, parametrization)'s losses over the widths and learning rates (:func:`grid`).

    Attributes:
      mean: ``(widths, lrs)`` mean validation loss over the seeds, +inf where one diverged.
      std: ``(widths, lrs)`` standard deviation over the seeds that did not diverge (nan with
        fewer than two).
      diverged: ``(widths, lrs)`` number of seeds that diverged.
      best: ``(widths,)`` index of the best learning rate (lowest ``mean``), -1 where every
        learning rate diverged.
    """

    mean: np.ndarray
    std: np.ndarray
    diverged: np.ndarray
    best: np.ndarray


def diverged(s: Sweep) -> np.ndarray:
    """``(lrs, seeds)``: whether a run diverged, its validation loss or the training loss of
    any step NaN or inf."""
    return ~np.isfinite(s.val) | ~np.all(np.isfinite(s.train), axis=-1)


def grid(sweeps: Sequence[Sweep]) -> Grid:
    """The :class:`Grid` of one sweep per width; a diverged run counts as +inf loss."""
    bad = np.stack([diverged(s) for s in sweeps])  # (widths, lrs, seeds)
    val = np.stack([s.val for s in sweeps])
    mean = np.where(bad, np.inf, val).mean(axis=-1)
    std = np.full(mean.shape, np.nan)
    for idx in np.ndindex(*mean.shape):
        kept = val[idx][~bad[idx]]
        if kept.size > 1:
            std[idx] = kept.std(ddof=1)
    finite = np.isfinite(mean).any(axis=-1)
    best = np.where(finite, np.argmin(mean, axis=-1), -1)
    return Grid(mean, std, bad.sum(axis=-1), best)


def span(g: Grid) -> int | None:
    """How many grid steps the best learning rates of the widths span (None when a width has
    every learning rate diverged)."""
    if np.any(g.best < 0):
        return None
    return int(g.best.max() - g.best.min())


def final_train_loss(s: Sweep) -> np.ndarray:
    """``(lrs, seeds)``: the mean minibatch loss over the last ``SMOOTH`` of the steps."""
    k = max(1, int(SMOOTH * s.train.shape[-1]))
    return s.train[..., -k:].mean(axis=-1)


# --------------------------------------------------------------------------- report


def lr_label(log2: int) -> str:
    return f"2^{log2}"


def best_labels(task: Task, g: Grid) -> list[str]:
    return [lr_label(task.log2_lrs[b]) if b >= 0 else "all diverged" for b in g.best]


def cell(g: Grid, w: int, i: int, seeds: int) -> str:
    """A table cell: mean ± std over seeds, or the diverged count; bold for the best."""
    n = int(g.diverged[w, i])
    if n == seeds:
        text = f"diverged ({n}/{seeds})"
    elif n:
        text = f"inf ({n}/{seeds} diverged)"
    else:
        text = _common.fmt(float(g.mean[w, i]))
        if np.isfinite(g.std[w, i]):
            text += f" ± {_common.fmt(float(g.std[w, i]), 2)}"
    return f"**{text}**" if g.best[w] == i else text


def figure(report, tasks: Sequence[Task], runs, grids, widths, args) -> None:
    """Loss against log2 learning rate: a row per task, SP and μP side by side, a line per
    width (mean over seeds, min-max band), the best learning rate starred, diverged rates
    crossed at the top."""
    plt = _common.pyplot()
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.5 * len(tasks)), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(widths)))
    for r, task in enumerate(tasks):
        x = np.asarray(task.log2_lrs)
        finite = [g.mean[np.isfinite(g.mean)] for g in grids[task.name].values()]
        lo = min((float(f.min()) for f in finite if f.size), default=0.0)
        hi = min(task.chance, max((float(f.max()) for f in finite if f.size), default=task.chance))
        for c, p in enumerate(PARAMETRIZATIONS):
            ax, g = axes[r, c], grids[task.name][p]
            for w, width in enumerate(widths):
                s = runs[task.name][p][w]
                vals = np.where(diverged(s), np.nan, s.val)
                ok = g.diverged[w] == 0
                band_lo = np.where(ok, np.nanmin(np.where(ok[:, None], vals, 0.0), axis=-1), np.nan)
                band_hi = np.where(ok, np.nanmax(np.where(ok[:, None], vals, 0.0), axis=-1), np.nan)
                ax.fill_between(x, band_lo, band_hi, color=colors[w], alpha=0.2, lw=0)
                ax.plot(
                    x,
                    np.where(ok, g.mean[w], np.nan),
                    "-o",
                    ms=3,
                    color=colors[w],
                    label=f"width {width}",
                )
                if (~ok).any():
                    ax.plot(x[~ok], np.full(int((~ok).sum()), hi), "x", color=colors[w], ms=7)
                if g.best[w] >= 0:
                    b = int(g.best[w])
                    ax.plot(x[b], g.mean[w, b], "*", ms=13, color=colors[w], mec="black", mew=0.6)
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
            ax.set_xticks(x)
            ax.set_xlabel("log2 learning rate")
            ax.set_ylabel("validation loss")
            ax.set_title(
                f"{TASKS[task.name]} ({task.optimizer}), {PARAMETRIZATIONS[p]}: best learning "
                f"rate spans {span(g)} grid step(s)",
                fontsize=9,
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper right" if c else "upper left")
    fig.suptitle(
        f"Loss after training vs learning rate (mean and min-max of {args.seeds} seeds; star: "
        f"best; x at the top: diverged); data: {args.data_label}",
        fontsize=10,
    )
    fig.tight_layout()
    report.figure(fig, "lr")


def sweep_summary(task: Task, sweeps: Sequence[Sweep], g: Grid, widths) -> dict[str, Any]:
    """One (task, parametrization)'s numbers for the JSON, per width: the losses, the
    divergences, the best learning rate and its span."""
    return {
        "val_loss": {wd: s.val for wd, s in zip(widths, sweeps, strict=True)},
        "final_train_loss": {wd: final_train_loss(s) for wd, s in zip(widths, sweeps, strict=True)},
        "mean_val_loss": {wd: g.mean[w] for w, wd in enumerate(widths)},
        "diverged": {wd: g.diverged[w] for w, wd in enumerate(widths)},
        "diverged_total": int(g.diverged.sum()),
        "best_log2_lr": {
            wd: (task.log2_lrs[b] if b >= 0 else None)
            for wd, b in zip(widths, g.best.tolist(), strict=True)
        },
        "span": span(g),
    }


def task_tables(report, task: Task, runs, grids, widths, args) -> dict[str, Any]:
    """A task's set-up, its loss table per parametrization (width x learning rate) and μP's
    roles at the largest width; returns the task's summary."""
    report.text(f"{TASKS[task.name]}: set-up", task.describe)
    roles = runs["mup"][-1].roles
    out: dict[str, Any] = {
        "optimizer": task.optimizer,
        "log2_lrs": task.log2_lrs,
        "steps": task.steps,
        "batch": task.batch,
        "roles": {r.path: r.role for r in roles.values()},
    }
    for p, g in grids.items():
        report.table(
            f"{TASKS[task.name]}, {PARAMETRIZATIONS[p]}: validation loss after {task.steps} "
            f"steps (mean ± std over {args.seeds} seeds; bold: each width's best)",
            ["width", *map(lr_label, task.log2_lrs)],
            [
                [width, *(cell(g, w, i, args.seeds) for i in range(len(task.log2_lrs)))]
                for w, width in enumerate(widths)
            ],
        )
        out[p] = sweep_summary(task, runs[p], g, widths)
    report.text(
        f"{TASKS[task.name]}: μP roles at width {widths[-1]} (jaxinit.mup.roles, Adam factors)"
        if task.optimizer == "adam"
        else f"{TASKS[task.name]}: μP roles at width {widths[-1]}",
        "```\n" + roles.table("mup", task.optimizer) + "\n```",
    )
    return out


def best_table(report, tasks: Sequence[Task], grids, widths, args) -> None:
    """The best learning rate of each width, per task and parametrization, with its span and
    the diverged runs."""
    report.table(
        "Best learning rate per width",
        ["task", "parametrization", *map(str, widths), "span (grid steps)", "diverged runs"],
        [
            [
                f"{TASKS[t.name]} ({t.optimizer})",
                PARAMETRIZATIONS[p],
                *best_labels(t, g),
                span(g),
                f"{int(g.diverged.sum())}/{g.diverged.size * args.seeds}",
            ]
            for t in tasks
            for p, g in grids[t.name].items()
        ],
    )


def claim(tasks: Sequence[Task], grids, args) -> dict[str, tuple[bool, str]]:
    """The claim's checks: per task μP's best learning rates span at most one grid step and
    SP's more; and both tasks ran."""
    checks: dict[str, tuple[bool, str]] = {}
    for t in tasks:
        sp, mup = (span(grids[t.name][p]) for p in ("sp", "mup"))
        for p, ok, rule in (
            ("mup", mup is not None and mup <= 1, "<= 1"),
            ("sp", sp is not None and sp > 1, "> 1"),
        ):
            g = grids[t.name][p]
            check = f"{TASKS[t.name]}: {PARAMETRIZATIONS[p]}'s best learning rate spans {rule} step"
            checks[check] = (
                ok,
                f"{' '.join(best_labels(t, g))} (span {span(g)})",
            )
    if len(tasks) < len(TASKS):
        checks["both tasks ran (the claim needs both)"] = (False, f"--tasks {' '.join(args.tasks)}")
    return checks


def verdict(tasks: Sequence[Task], grids, widths) -> str:
    """The verdict's numbers: each task's best learning rate per width and span, SP and μP."""

    def moves(t: Task, p: str) -> str:
        g = grids[t.name][p]
        return f"{PARAMETRIZATIONS[p]} {' '.join(best_labels(t, g))} (span {span(g)})"

    return (
        f"best learning rate at widths {', '.join(map(str, widths))}: "
        + "; ".join(
            f"{TASKS[t.name]} ({t.optimizer}): {moves(t, 'sp')}, {moves(t, 'mup')}" for t in tasks
        )
        + "."
    )


TASK_MAKERS = {"mlp": mlp_task, "transformer": lambda data, args: lm_task(args)}


def arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, _common.Data]:
    p = _common.parser(
        (__doc__ or NAME).splitlines()[0], seeds=3, quick_seeds=2, data=True, min_seeds=2
    )
    p.add_argument(
        "--mlp-steps", type=int, default=None, help=f"MLP steps ({MLP_STEPS}; {MLP_QUICK_STEPS})"
    )
    p.add_argument(
        "--lm-steps",
        type=int,
        default=None,
        help=f"transformer steps ({LM_STEPS}; {LM_QUICK_STEPS})",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=tuple(TASKS),
        default=list(TASKS),
        help="the tasks to run (default both; the claim needs both)",
    )
    p.add_argument(
        "--zero-init",
        action="store_true",
        help="under μP, start the readout kernel (and the transformer's query kernels) at zero, "
        "as Tensor Programs V recommends; μP then differs from SP at the base width",
    )
    args = _common.parse(p, argv)
    if args.mlp_steps is None:
        args.mlp_steps = MLP_QUICK_STEPS if args.quick else MLP_STEPS
    if args.lm_steps is None:
        args.lm_steps = LM_QUICK_STEPS if args.quick else LM_STEPS
    if args.mlp_steps < 1 or args.lm_steps < 1:
        p.error("--mlp-steps and --lm-steps must be positive")
    data = _common.load_data(args)
    args.data_label = data.label
    return args, data


def main(argv: Sequence[str] | None = None) -> dict:
    args, data = arguments(argv)
    widths = QUICK_WIDTHS if args.quick else WIDTHS
    report = _common.Report(
        NAME,
        "μTransfer: the best learning rate across widths, SP and μP",
        CLAIM,
        SOURCE,
        args,
        data,
    )
    tasks = [make(data, args) for name, make in TASK_MAKERS.items() if name in args.tasks]
    keys = jax.random.split(jax.random.key(9), (args.seeds, 2))  # (init, data order) per seed
    runs = sweep_all(tasks, widths, keys, args)
    grids = {t.name: {p: grid(r) for p, r in runs[t.name].items()} for t in tasks}

    summary: dict[str, Any] = {"widths": widths, "base_width": BASE}
    for t in tasks:
        summary[t.name] = task_tables(report, t, runs[t.name], grids[t.name], widths, args)
    best_table(report, tasks, grids, widths, args)
    held = report.checks(claim(tasks, grids, args))
    figure(report, tasks, runs, grids, widths, args)
    report.verdict = verdict(tasks, grids, widths) + report.failed(held)
    summary["checks"] = held
    report.summary = summary
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
