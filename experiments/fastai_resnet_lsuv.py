"""Claim 8: a ResNet without BatchNorm trains best from LSUV, then He, then PyTorch's default init
(the fastai article: 67 / 57 / 48 % on Imagenette); with BatchNorm the three end close together.

Model: a CIFAR-style ResNet, ``jaxinit.models.ResNet`` (``ResBlock``: conv3x3 [BN] ReLU conv3x3
[BN] + shortcut, ReLU): a 3x3 stem, three stages of ``--blocks`` blocks (the first block of stages
2 and 3 has stride 2), global average pool, Dense 10; depth 2 + 6 * blocks (``--blocks 2``:
ResNet-14, the default; 3: ResNet-20). Data: Fashion-MNIST, not Imagenette, and sized for a
2-core CPU: images average-pooled to 14x14 and stage widths 8, 16, 32 by default (``--pool 1
--widths 16 32 64`` for the full-size net), 100 SGD steps of 32. Inits:
``torch_default()`` kernels (biases zero), ``he_normal()``, and LSUV (``jaxinit.lsuv`` on the
PyTorch-default init, 512 training images, every conv and the head; all seeds in one
``jax.vmap``). Per-layer statistics (``jaxinit.measure``) are taken on held-out images. Training:
SGD with momentum 0.9; for each of "no BN" / "BN", every (init, seed) pair is trained in one
jitted ``vmap``, a seed setting the init and the data order shared by the three inits.

Without Fashion-MNIST, ``--quick`` runs on scikit-learn's digits (see ``_common.load_data``):
1,297 training and 500 held-out images (250 for the per-layer statistics, up to 250 for
accuracy), at their own 8x8 (``--pool 1``; the stages then work at 8x8, 4x4 and 2x2).

Checks: without BN, mean test accuracy orders LSUV > He > PyTorch default; with BN, the three
mean accuracies lie within 2 percentage points of each other.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import _common
import _train
import flax.linen as nn
import jax
import numpy as np

from jaxinit import models

NAME = "fastai_resnet_lsuv"
CLAIM = (
    "Without BatchNorm, LSUV > He > PyTorch default in accuracy after a fixed budget (the "
    "article: 67 / 57 / 48 % on Imagenette); with BatchNorm the three are close together."
)
SOURCE = "fast.ai, the LSUV article/notebook (xresnet on Imagenette); Mishkin & Matas 2016"
INITS = _train.FASTAI_INITS
CLOSE_PP = 2.0  # "close together": all three mean accuracies within this many points
ARTICLE = {"LSUV": 67, "He": 57, "PyTorch default": 48}


def arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, _common.Data]:
    p = _common.parser(__doc__.splitlines()[0], seeds=5, quick_seeds=2, data=True)
    p.add_argument(
        "--blocks", type=int, default=None, help="blocks per stage: the depth (2 = ResNet-14; 1)"
    )
    p.add_argument(
        "--widths", type=int, nargs=3, default=(8, 16, 32), help="stage widths (8 16 32)"
    )
    p.add_argument(
        "--pool",
        type=int,
        choices=(1, 2),
        default=None,
        help="average-pool the images by this factor first (2 on Fashion-MNIST: 14x14, for "
        "CPU; 1 on the 8x8 digits)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (100; 4)")
    p.add_argument("--batch", type=int, default=None, help="minibatch size (32; 8)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (0.05)")
    p.add_argument("--test", type=int, default=None, help="test images scored (2000; 200)")
    p.add_argument(
        "--bn",
        choices=("both", "no", "yes"),
        default="both",
        help="which BatchNorm settings to run (both)",
    )
    args = _common.parse(p, argv)
    data = _common.load_data(args)
    room = data.test.x.shape[0] - _common.probe_count(data)  # held-out images for accuracy
    args.blocks = args.blocks or (1 if args.quick else 2)
    args.pool = args.pool or (1 if data.name == "digits" else 2)
    args.steps = args.steps or (4 if args.quick else 100)
    args.batch = args.batch or (8 if args.quick else 32)
    args.test = args.test or min(200 if args.quick else 2000, room)
    args.widths = tuple(args.widths)
    if (
        min(args.blocks, args.steps, args.batch) < 1
        or not args.lr > 0
        or not 1 <= args.test <= room
    ):
        p.error(f"--blocks, --steps, --batch, --lr must be positive and --test in [1, {room}]")
    if min(args.widths) < 1:
        p.error("--widths must be positive")
    return args, data


def run_setting(args, bn: bool, im: _common.Images, keys) -> tuple:
    """Init (PyTorch default, He, LSUV), per-layer std, training and accuracy for one
    BatchNorm setting; arrays with leading axes (init, seed)."""

    def make(kernel_init):  # stem, three stages of ``blocks`` ResBlocks, pool, Dense(10)
        return models.ResNet(10, args.widths, bn, nn.relu, kernel_init, blocks=args.blocks)

    model, variables, converged = _train.fastai_inits(make, keys, im.x_probe, im.x_lsuv, args)
    names, st = _train.measure_stacked(model, variables, im.x_probe, ("std",), train=False)
    acc, losses = _train.sgd_accuracy(model, variables, keys, im, args)
    std = st["std"].reshape(len(INITS), args.seeds, -1)
    return names, std, np.where(np.isfinite(acc), acc, 0.0), losses, converged


def judge(setting: str, names, std, acc, losses, converged) -> tuple[list, dict, tuple]:
    """One setting's table rows, summary entry and check ``(name, held, numbers)``."""
    means = {label: float(acc[i].mean()) for i, label in enumerate(INITS)}
    finite = np.isfinite(losses).all(axis=2)
    rows = [
        [
            setting,
            label,
            _common.spread(100 * acc[i]),
            f"{100 * acc[i].min():.2f} .. {100 * acc[i].max():.2f}",
            f"{std[i, :, 0].mean():.3g} -> {std[i, :, -2].mean():.3g}",
            f"{int(finite[i].sum())}/{acc.shape[1]}",
            f"{ARTICLE[label]}" if setting == "no BN" else "",
        ]
        for i, label in enumerate(INITS)
    ]
    p_th = _common.paired_less(acc[0], acc[1])
    p_hl = _common.paired_less(acc[1], acc[2])
    summary = {
        "accuracy": {label: _common.spread(acc[i]) for i, label in enumerate(INITS)},
        "accuracy_per_seed": {label: acc[i] for i, label in enumerate(INITS)},
        "init_std": {label: std[i].mean(axis=0) for i, label in enumerate(INITS)},
        "layers": names,
        "lsuv_converged": converged,
        "lsuv_max_std_deviation": float(np.abs(std[2, :, :-1] - 1).max()),
        "p_default_below_he": p_th,
        "p_he_below_lsuv": p_hl,
    }
    if setting == "no BN":
        check = (
            "no BN: mean accuracy LSUV > He > PyTorch default",
            means["LSUV"] > means["He"] > means["PyTorch default"],
            " > ".join(
                f"{label} {100 * means[label]:.2f}"
                for label in sorted(means, key=means.get, reverse=True)
            )
            + f" (paired p: default < He {p_th:.2g}, He < LSUV {p_hl:.2g})",
        )
    else:
        rng_pp = 100 * (max(means.values()) - min(means.values()))
        check = (
            f"BN: the three mean accuracies within {CLOSE_PP} points",
            rng_pp <= CLOSE_PP,
            f"range {rng_pp:.2f} points: "
            + ", ".join(f"{label} {100 * means[label]:.2f}" for label in INITS),
        )
    return rows, summary, check


def figure(report, results: dict, args) -> None:
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 1 + len(results), figsize=(4.5 * (1 + len(results)), 3.6))
    win = max(1, args.steps // 50)
    for col, (setting, (names, std, acc, losses, _)) in enumerate(results.items()):
        ax = axes[col + 1]
        for i, label in enumerate(INITS):
            sm = _common.moving_average(losses[i], win)
            t = np.arange(sm.shape[-1]) + win
            ax.plot(
                t,
                np.nanmean(sm, axis=0),
                color=plt.get_cmap("tab10")(i),
                label=f"{label}: {100 * acc[i].mean():.1f}%",
            )
        ax.set_title(f"{setting}: training loss, mean of {args.seeds} seeds", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        if col == 0:
            for i, label in enumerate(INITS):
                axes[0].plot(std[i].mean(axis=0), "o-", color=plt.get_cmap("tab10")(i), label=label)
            axes[0].set_xticks(range(len(names)), names, rotation=90, fontsize=6)
            axes[0].set_yscale("log")
            axes[0].set_title(f"{setting}: conv output std after init", fontsize=9)
            axes[0].legend(fontsize=7)
    report.figure(fig, "accuracy")


def main(argv: Sequence[str] | None = None) -> dict:
    args, data = arguments(argv)
    depth = 2 + 6 * args.blocks
    report = _common.Report(
        NAME,
        f"ResNet-{depth} with and without BatchNorm: PyTorch default vs He vs LSUV",
        CLAIM,
        SOURCE,
        args,
        data,
    )
    im = _common.images(data, _common.pool(args.pool), args.test, seed=8)
    keys = jax.random.split(jax.random.key(8), args.seeds)
    results = {
        setting: run_setting(args, bn, im, keys)
        for setting, bn in (("no BN", False), ("BN", True))
        if args.bn in ("both", "yes" if bn else "no")
    }
    rows, summary, checks = [], {}, {}
    for setting, result in results.items():
        setting_rows, summary[setting], (name, held, numbers) = judge(setting, *result)
        rows += setting_rows
        checks[name] = (bool(held), numbers)
    report.table(
        f"ResNet-{depth} (widths {args.widths}) on {data.label} at {im.x_train.shape[1]}x"
        f"{im.x_train.shape[2]}: test accuracy (%) on {args.test} images after {args.steps} "
        f"SGD steps of {args.batch} (lr {args.lr}, momentum 0.9), {args.seeds} seeds",
        [
            "",
            "init",
            "accuracy",
            "min .. max",
            "std after init: stem -> last block",
            "finite loss",
            "article (Imagenette)",
        ],
        rows,
    )
    held = report.checks(checks)
    figure(report, results, args)

    report.verdict = "; ".join(
        f"{k}: {'yes' if held[k] else 'NO'} ({n})" for k, (_, n) in checks.items()
    )
    report.summary = {
        "blocks": args.blocks,
        "widths": args.widths,
        "image_size": int(im.x_train.shape[1]),
        "probe_images": int(im.x_probe.shape[0]),
        "depth": depth,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "test_images": args.test,
        "checks": held,
        **summary,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
