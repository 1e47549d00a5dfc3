"""Claim 8: deep ResNets without BatchNorm train from Fixup or SkipInit where He does not, and
without BN LSUV > He > PyTorch's default while with BN the three end close together.

Two literatures make these claims. Zhang et al. 2019 (Fixup) and De & Smith 2020 (SkipInit) say
that a residual network without normalization trains at depth when each residual branch starts
at (or near) zero, and that with the usual He init it does not train well as depth grows. The
fast.ai LSUV article says that without BN, LSUV > He > PyTorch's default (67 / 57 / 48 % on
Imagenette), and that with BN the three end close together.

Model (``--arch mlp``, the default): a residual MLP of ``depth`` weight layers (14, 32, 56 for
6, 15, 27 blocks): the image flattened, a Dense stem of ``--width`` units [BN] ReLU, ``blocks``
residual blocks (Dense [BN] ReLU Dense [BN], ReLU after the sum), Dense 10. ``--arch conv`` is the
CIFAR-style ResNet of the papers, of depth ``2 + 6 * blocks``: a 3x3 stem, three stages of basic
blocks (conv3x3 [BN] ReLU conv3x3 [BN], 1x1 projection shortcut when the shape changes), global
average pool, Dense 10. Every block also carries the scalars of Fixup (``bias1a``, ``bias1b``,
``bias2a``, ``scale``, ``bias2b``, as in the reference code's ``FixupBasicBlock``) and SkipInit
(``gate``); an init that does not use them sets them to 0 (biases) or 1 (``scale``, ``gate``)
and they are not trained (their gradient is masked), so that model is the plain ResNet. Inits,
each a ``jaxinit.recipes`` recipe applied to the same draws:

- ``PyTorch default`` (``torch_default()`` kernels, zero biases), ``He`` (``he_normal()``),
  ``LSUV`` (``jaxinit.lsuv`` on the PyTorch default, 512 training images);
- ``zero-init residual`` (He, the last layer of every branch 0, as BN-free Goyal et al.);
- ``Fixup`` (``jaxinit.recipes.fixup``: branch layers He x L^(-1/2) for m = 2 layers per
  branch and L branches, the last layer of each branch and the classifier 0, scalar biases 0,
  multipliers 1, all trained);
- ``SkipInit`` (He, the trained scalar ``gate`` of every branch 0).

With BN the first three are compared, as in the article; BN's running statistics follow
PyTorch's default momentum (0.1 of each batch). Data: Fashion-MNIST, average-pooled to 14x14
(``--pool 2``), standardized. Training: SGD with momentum 0.9 (``--lr``), ``--steps``
minibatches of ``--batch``; every (init, seed) model of one (depth, BN) setting trains in one
jitted program (``lax.map`` over the models: a ``vmap`` over models turns every convolution into
a grouped one, which XLA's CPU backend runs slower, and gains nothing for the Dense blocks); seed
``i`` of every init shares its data order and its draws (paired). Accuracy on ``--test``
held-out images.

Sizing, for 45 minutes on 2 CPU cores: the cost is training, (6 + 3) inits x 10 seeds = 90
models per depth. The convolutional ResNet does not fit: on a quiet 2-core Xeon a depth-14
model step at 14x14 with widths 8/16/32 costs 0.107 s and a depth-56 one at 7x7 with widths
16/32/64 0.58 s (a 3x3 convolution with 8 channels runs at 12 GFLOP/s there, a 128-wide Dense
layer at about 70), so 300 steps would take hours. The residual MLP of width 128, batch 128,
costs 0.23 ms per layer and model-step without BN and 0.48 ms with BN (measured: 60 models x 50
steps at depth 56 in 44 s; 30 BN models in 41 s), so one step of all 270 models of the three
depths costs about 2.9 s and the default 600 steps of 128 (1.3 epochs of the 60,000
training images) about 29 minutes, plus compilation, LSUV and scoring. ``--quick`` is a smoke run on
a few steps.

Checks (paired over seeds, one-sided t on the per-seed differences):
- at the deepest depth without BN, Fixup and SkipInit each reach a higher mean accuracy than He;
- without BN, mean accuracy LSUV > He > PyTorch default at the shallowest depth (the article's
  setting);
- with BN, the three mean accuracies lie within 2 points at every depth.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import _common
import _train
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit
from jaxinit.recipes import residual
from jaxinit.recipes.recipe import Recipe, Rule

NAME = "deep_resnet_init"
CLAIM = (
    "Without BatchNorm, deep ResNets train from Fixup or SkipInit where He does not (Zhang et "
    "al. 2019; De & Smith 2020); without BN LSUV > He > PyTorch default, with BN the three are "
    "close (fast.ai)."
)
SOURCE = (
    "Zhang, Dauphin & Ma 2019, arXiv 1901.09321 (Fixup); De & Smith 2020, arXiv 2002.10444 "
    "(SkipInit); the fast.ai LSUV article (xresnet on Imagenette); Goyal et al. 2017"
)
NO_BN = ("PyTorch default", "He", "LSUV", "zero-init residual", "Fixup", "SkipInit")
WITH_BN = ("PyTorch default", "He", "LSUV")
SCALARS = ("bias1a", "bias1b", "bias2a", "scale", "bias2b", "gate", "bias_head")
CLOSE_PP = 2.0
# PyTorch's BatchNorm default (running average updated by 0.1 of each batch), as in the
# article's xresnet; Flax's 0.99 leaves the running statistics near their start in a short run
BN_MOMENTUM = 0.9


class Block(nn.Module):
    """A basic block with Fixup's scalar biases and multiplier and SkipInit's gate."""

    features: int
    strides: int
    batch_norm: bool
    dense: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        def scalar(name: str, value: float) -> jax.Array:
            return self.param(name, nn.initializers.constant(value), ())

        def conv(f: int, k: int, s: int, name: str) -> nn.Module:
            if self.dense:
                return nn.Dense(f, use_bias=False, name=name)
            return nn.Conv(f, (k, k), strides=s, padding=k // 2, use_bias=False, name=name)

        def norm(y: jax.Array, name: str) -> jax.Array:
            if not self.batch_norm:
                return y
            return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name=name)(y)

        b1a, b1b, b2a = scalar("bias1a", 0.0), scalar("bias1b", 0.0), scalar("bias2a", 0.0)
        y = norm(conv(self.features, 3, self.strides, "conv1")(x + b1a), "bn1")
        y = nn.relu(y + b1b)
        y = norm(conv(self.features, 3, 1, "conv2")(y + b2a), "bn2")
        y = y * scalar("scale", 1.0) + scalar("bias2b", 0.0)
        if x.shape[-1] != self.features or self.strides != 1:
            x = norm(conv(self.features, 1, self.strides, "proj")(x + b1a), "bn_proj")
        return nn.relu(scalar("gate", 1.0) * y + x)


class ResNet(nn.Module):
    """Stem, ``stages`` of ``(width, blocks)`` :class:`Block` s, Dense 10.

    Convolutional (``dense=False``): a 3x3 stem, stride 2 at the first block of every stage
    after the first, global average pool before the head. Dense (``dense=True``): the image is
    flattened, the stem is a Dense layer and every block's layers are Dense."""

    stages: Sequence[tuple[int, int]]
    batch_norm: bool
    dense: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = self.stages[0][0]
        if self.dense:
            x = nn.Dense(width, use_bias=False, name="stem")(x.reshape(x.shape[0], -1))
        else:
            x = nn.Conv(width, (3, 3), padding=1, use_bias=False, name="stem")(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name="bn_stem")(x)
        x = nn.relu(x)
        for i, (w, blocks) in enumerate(self.stages):
            for b in range(blocks):
                stride = 2 if i > 0 and b == 0 and not self.dense else 1
                x = Block(w, stride, self.batch_norm, self.dense, name=f"stage{i}_block{b}")(
                    x, train
                )
        if not self.dense:
            x = x.mean(axis=(1, 2))
        x = x + self.param("bias_head", nn.initializers.zeros, ())
        return nn.Dense(10, name="head")(x)


def stages(args: argparse.Namespace, depth: int) -> tuple[tuple[int, int], ...]:
    """``(width, blocks)`` per stage of a ``depth``-layer network of ``args.arch``."""
    if args.arch == "mlp":
        return ((args.width, (depth - 2) // 2),)
    return tuple((w, (depth - 2) // 6) for w in args.widths)


def arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, _common.Data]:
    p = _common.parser(__doc__.splitlines()[0], seeds=10, quick_seeds=2, data=True)
    p.add_argument(
        "--arch",
        choices=("mlp", "conv"),
        default="mlp",
        help="residual MLP (default) or convolutional ResNet",
    )
    p.add_argument(
        "--depths", type=int, nargs="+", default=None, help="weight layers (14 32 56; 8)"
    )
    p.add_argument("--width", type=int, default=128, help="the residual MLP's width")
    p.add_argument("--widths", type=int, nargs=3, default=(8, 16, 32), help="conv stage widths")
    p.add_argument("--pool", type=int, choices=(1, 2, 4), default=None, help="image pooling")
    p.add_argument("--steps", type=int, default=None, help="SGD steps (mlp 600, conv 300; 3)")
    p.add_argument("--batch", type=int, default=None, help="minibatch size (128; 8)")
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (0.02)")
    p.add_argument("--test", type=int, default=None, help="test images scored (2000; 100)")
    p.add_argument("--bn", choices=("both", "no", "yes"), default="both", help="BN settings")
    args = _common.parse(p, argv)
    data = _common.load_data(args)
    room = data.test.x.shape[0] - _common.probe_count(data)
    args.depths = tuple(args.depths or ((8,) if args.quick else (14, 32, 56)))
    args.pool = args.pool or (1 if data.name == "digits" else 2)
    args.steps = args.steps or (3 if args.quick else 600 if args.arch == "mlp" else 300)
    args.batch = args.batch or (8 if args.quick else 128)
    args.test = args.test or min(100 if args.quick else 2000, room)
    args.widths = tuple(args.widths)
    per_block = 2 if args.arch == "mlp" else 6
    if any(d < 2 + per_block or (d - 2) % per_block for d in args.depths):
        p.error(
            f"--depths {args.depths}: with --arch {args.arch} each must be 2 + {per_block} * "
            "blocks with blocks >= 1"
        )
    if min(args.steps, args.batch, args.width, *args.widths) < 1 or not args.lr > 0:
        p.error("--steps, --batch, --width, --widths and --lr must be positive")
    if not 1 <= args.test <= room:
        p.error(f"--test must be in [1, {room}]")
    return args, data


def recipes(blocks: int) -> dict[str, Any]:
    """The init of every label as a recipe over :class:`ResNet`'s parameter paths (applied
    after the He draw, except PyTorch default); ``blocks`` is the number of residual
    branches."""
    he = plain("He", jaxinit.he_normal())
    return {
        "PyTorch default": plain("PyTorch default", jaxinit.torch_default()),
        "He": he,
        # ``a | b``: b's rules take precedence
        "zero-init residual": he | residual.zero_init_residual(("**/conv2/kernel",)),
        "Fixup": residual.fixup(blocks, 2, classifier="head/kernel", classifier_bias="head/bias"),
        "SkipInit": he | residual.skipinit(("**/gate",)),
    }


def plain(name: str, init: Any) -> Recipe:
    """Every kernel from ``init``; biases and the block scalars keep the model's 0 / 1."""
    return Recipe(name, (Rule("**/kernel", init, "every kernel"),))


def init_setting(
    args: argparse.Namespace, depth: int, bn: bool, im: _common.Images, keys: jax.Array
) -> tuple[nn.Module, Any, Any, bool]:
    """The stacked variables ``(inits * seeds, ...)`` of one setting, the matching gradient
    masks (1 where a parameter trains), and whether LSUV converged everywhere."""
    shape = stages(args, depth)
    model = ResNet(shape, bn, dense=args.arch == "mlp")
    blocks = sum(b for _, b in shape)
    labels = WITH_BN if bn else NO_BN
    base = _train.init_stacked(model, keys, args, im.x_probe)
    by_recipe = recipes(blocks)

    def draw(label: str) -> Any:
        r = by_recipe["PyTorch default" if label == "LSUV" else label]
        # seed by seed: each initializer's draw is compiled once per shape and cached, where a
        # vmap of the whole recipe would compile every draw again for each recipe
        seeds = [
            r.apply(jax.tree.map(lambda a, i=i: a[i], base), keys[i]) for i in range(args.seeds)
        ]
        return jax.tree.map(lambda *a: jnp.stack(a), *seeds)

    stacks, converged = [], True
    for label in labels:
        t0 = time.perf_counter()
        v = jax.block_until_ready(draw(label))
        t1 = time.perf_counter()
        if label == "LSUV":
            v, ok = _train.lsuv_stacked(model, v, im.x_lsuv, train=False)
            converged &= ok
        print(
            f"  {label}: drawn in {t1 - t0:.1f} s"
            + (f", LSUV {time.perf_counter() - t1:.1f} s" if label == "LSUV" else "")
        )
        stacks.append(v)
    variables = _train.concat(stacks)
    trains_scalars = [label in ("Fixup", "SkipInit") for label in labels]

    def mask(path: str, w: jax.Array) -> jax.Array:
        leaf = path.rsplit("/", 1)[-1]
        scalar = leaf in SCALARS
        on = np.repeat(np.array([not scalar or t for t in trains_scalars], np.float32), args.seeds)
        return jnp.broadcast_to(on.reshape((-1,) + (1,) * (w.ndim - 1)), w.shape)

    params = variables["params"]
    masks = jax.tree_util.tree_map_with_path(
        lambda kp, w: mask("/".join(str(getattr(k, "key", k)) for k in kp), w), params
    )
    return model, variables, masks, converged


def train(args, model, variables, masks, im, keys) -> tuple[np.ndarray, np.ndarray]:
    """SGD with momentum on every model of the stack, one model after the other (a ``vmap``
    over models would make every convolution a grouped one); returns accuracy and step
    losses."""
    n_models = jax.tree.leaves(variables)[0].shape[0]
    t0 = time.perf_counter()
    run = _train.train_stacked(
        model,
        variables,
        im.x_train,
        im.y_train,
        jnp.concatenate([keys] * (n_models // args.seeds)),
        steps=args.steps,
        batch=args.batch,
        optimizer=optax.sgd(args.lr, momentum=0.9),
        grad_masks=masks,
        one_by_one=True,
        train=True,
    )
    losses = np.asarray(run.losses)
    t1 = time.perf_counter()
    chunk = math.gcd(im.y_eval.shape[0], 500)
    acc = _train.accuracy_stacked(
        model, run.variables, im.x_eval, im.y_eval, chunk, one_by_one=True, train=False
    )
    print(f"  trained in {t1 - t0:.1f} s, scored in {time.perf_counter() - t1:.1f} s")
    return np.where(np.isfinite(acc), acc, 0.0), losses


def paired_p(worse: np.ndarray, better: np.ndarray) -> float:
    """One-sided p of ``mean(better - worse) > 0`` (paired t over seeds)."""
    return _common.paired_less(worse, better)


def train_settings(args, settings, im, keys) -> tuple[dict, dict, bool]:
    """Train every (BN, depth) setting: accuracy ``(inits, seeds)`` and step losses ``(inits,
    seeds, steps)`` by ``(bn, depth)``, and whether LSUV converged everywhere."""
    acc: dict[tuple[bool, int], np.ndarray] = {}
    losses: dict[tuple[bool, int], np.ndarray] = {}
    converged = True
    for bn in settings:
        for depth in args.depths:
            model, variables, masks, ok = init_setting(args, depth, bn, im, keys)
            converged &= ok
            a, lo = train(args, model, variables, masks, im, keys)
            labels = WITH_BN if bn else NO_BN
            acc[bn, depth] = a.reshape(len(labels), args.seeds)
            losses[bn, depth] = lo.reshape(len(labels), args.seeds, -1)
            print(
                f"BN={bn} depth {depth}: "
                + ", ".join(
                    f"{label} {100 * acc[bn, depth][i].mean():.1f}%"
                    for i, label in enumerate(labels)
                )
            )
    return acc, losses, converged


def accuracy_table(report, acc, losses, args, data) -> None:
    """Accuracy over seeds, its range and the seeds whose loss stayed finite, per setting."""
    rows = []
    for (bn, depth), a in acc.items():
        labels = WITH_BN if bn else NO_BN
        for i, label in enumerate(labels):
            finite = np.isfinite(losses[bn, depth][i]).all(axis=1)
            rows.append(
                [
                    "BN" if bn else "no BN",
                    depth,
                    label,
                    _common.spread(100 * a[i]),
                    f"{100 * a[i].min():.1f} .. {100 * a[i].max():.1f}",
                    f"{int(finite.sum())}/{args.seeds}",
                ]
            )
    report.table(
        f"Test accuracy (%) on {args.test} {data.label} images after {args.steps} SGD steps of "
        f"{args.batch} (lr {args.lr}, momentum 0.9), {args.seeds} seeds, "
        + (
            f"residual MLP of width {args.width}" if args.arch == "mlp" else f"widths {args.widths}"
        ),
        ["", "depth", "init", "accuracy", "min .. max", "finite loss"],
        rows,
    )


def claim(acc, settings, args) -> dict[str, tuple[bool, str]]:
    """The checks of the docstring, each (held, its numbers), for the settings that ran."""
    checks: dict[str, tuple[bool, str]] = {}
    if False in settings:
        deep, shallow = max(args.depths), min(args.depths)
        a = acc[False, deep]
        he = a[NO_BN.index("He")]
        for label in ("Fixup", "SkipInit"):
            other = a[NO_BN.index(label)]
            p = paired_p(he, other)
            checks[f"no BN, depth {deep}: {label} > He"] = (
                bool(other.mean() > he.mean() and p < 0.05),
                f"{label} {100 * other.mean():.1f} vs He {100 * he.mean():.1f} (paired p {p:.2g})",
            )
        a = acc[False, shallow]
        m = {label: a[NO_BN.index(label)] for label in ("LSUV", "He", "PyTorch default")}
        checks[f"no BN, depth {shallow}: LSUV > He > PyTorch default"] = (
            bool(m["LSUV"].mean() > m["He"].mean() > m["PyTorch default"].mean()),
            ", ".join(f"{k} {100 * v.mean():.1f}" for k, v in m.items())
            + f" (paired p: He < LSUV {paired_p(m['He'], m['LSUV']):.2g}, default < He "
            f"{paired_p(m['PyTorch default'], m['He']):.2g})",
        )
    if True in settings:
        spans = {d: 100 * np.ptp([acc[True, d][i].mean() for i in range(3)]) for d in args.depths}
        checks[f"BN: the three mean accuracies within {CLOSE_PP} points at every depth"] = (
            bool(max(spans.values()) <= CLOSE_PP),
            ", ".join(f"depth {d}: range {s:.2f}" for d, s in spans.items()),
        )
    return checks


def summary(args, im, acc, held, converged: bool) -> dict[str, Any]:
    """The run's settings, the checks, LSUV's convergence and every per-seed accuracy."""
    accuracy = {
        f"{'BN' if bn else 'no BN'} {depth}": {
            label: a[i] for i, label in enumerate(WITH_BN if bn else NO_BN)
        }
        for (bn, depth), a in acc.items()
    }
    return {
        "depths": args.depths,
        "arch": args.arch,
        "width": args.width if args.arch == "mlp" else args.widths,
        "image_size": int(im.x_train.shape[1]),
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "test_images": args.test,
        "checks": held,
        "lsuv_converged": converged,
        "accuracy": accuracy,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args, data = arguments(argv)
    report = _common.Report(
        NAME,
        "Deep ResNets with and without BatchNorm: He, zero-init residual, Fixup, SkipInit, LSUV",
        CLAIM,
        SOURCE,
        args,
        data,
    )
    im = _common.images(data, _common.pool(args.pool), args.test, seed=8)
    keys = jax.random.split(jax.random.key(8), args.seeds)
    settings = [bn for bn in (False, True) if args.bn in ("both", "yes" if bn else "no")]
    acc, losses, converged = train_settings(args, settings, im, keys)
    accuracy_table(report, acc, losses, args, data)
    held = report.judge(claim(acc, settings, args))
    _figure(report, acc, args)
    report.summary = summary(args, im, acc, held, converged)
    return report.write()


def _figure(report, acc, args) -> None:
    plt = _common.pyplot()
    settings = sorted({bn for bn, _ in acc})
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.8), squeeze=False)
    for ax, bn in zip(axes[0], settings, strict=True):
        labels = WITH_BN if bn else NO_BN
        for i, label in enumerate(labels):
            means = [100 * acc[bn, d][i].mean() for d in args.depths]
            lo, hi = zip(
                *(
                    _common.seed_interval(100 * acc[bn, d][i]) if args.seeds > 1 else (m, m)
                    for d, m in zip(args.depths, means, strict=True)
                ),
                strict=True,
            )
            color = plt.get_cmap("tab10")(NO_BN.index(label))
            ax.plot(args.depths, means, "o-", color=color, label=label)
            ax.fill_between(args.depths, lo, hi, color=color, alpha=0.15)
        ax.set_xlabel("depth")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(args.depths)
        ax.set_title(f"{'with' if bn else 'without'} BatchNorm, {args.seeds} seeds (central 95%)")
        ax.legend(fontsize=7)
    report.figure(fig, "accuracy")


if __name__ == "__main__":
    main(sys.argv[1:])
