"""Claim 7: the fastai article's simple convnet (4 stride-2 conv + ReLU, global pool, dense) on
Fashion-MNIST with PyTorch-default, He and LSUV init: per-layer activation mean/std after init,
then test accuracy after a fixed training budget, mean +- std over seeds.

Model: ``jaxinit.models.ConvNet`` (conv 5x5/32, 3x3/64, 3x3/128, 3x3/128, all stride 2, ReLU,
global average pool, Dense 10). Inits: ``torch_default()`` kernels (PyTorch's Linear/Conv
default; biases zero, where PyTorch draws them U(+-1/sqrt(fan_in))), ``he_normal()``, and LSUV
(``jaxinit.lsuv`` on the PyTorch-default init, one batch of 512 training images, as fastai starts
LSUV from the default init; all seeds in one ``jax.vmap``). Per-layer statistics
(``jaxinit.measure``) are measured on 512 held-out test images. Training: SGD with momentum 0.9,
100 minibatches of 32 (a budget a 2-core CPU affords: 3,200 images, 5% of an epoch), every
(init, seed) pair in one jitted ``vmap``; a seed sets the init and the data order (shared by the
three inits, so they are compared paired).

Without Fashion-MNIST, ``--quick`` runs on scikit-learn's digits (see ``_common.load_data``),
1,297 training and 500 held-out images (250 for the statistics, 250 for accuracy), each 8x8
image repeated into 4x4 blocks (``--upsample 4``: 32x32). The net's four stride-2 convs are
built for 28x28 inputs (maps of 14, 7, 4, 2); at 8x8 the last two see 2x2 and 1x1 maps, where
zero padding fills most of each 3x3 window and shrinks the std of every init by the square root
of the in-bounds fraction (He's last/first ratio falls to 0.19). At 32x32 the maps are 16, 8, 4,
2, as on Fashion-MNIST.

Checks. Init: with PyTorch's default the conv outputs' std falls at every layer (mean field: by
sqrt(1/6) = 0.41 per layer, since Var(w) = 1/(3 fan_in) and ReLU halves the second moment);
with He the last conv's std is within a factor 2 of the first's (mean field: equal); LSUV
converges on its batch and gives std 1 +- 10% on the held-out batch at every layer. Training:
mean test accuracy orders LSUV > He > PyTorch default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import _common
import _train
import jax
import numpy as np

from jaxinit.models import ConvNet

NAME = "fastai_convnet_init"
CLAIM = (
    "PyTorch's default init shrinks the activations layer by layer; He keeps them; LSUV "
    "sets every layer's std to 1; after a fixed budget LSUV trains best, then He, then "
    "PyTorch's default."
)
SOURCE = (
    "fast.ai, the initialization article and course notebook on LSUV (simple convnet); "
    "Mishkin & Matas 2016, 'All you need is a good init' (LSUV)"
)
INITS = _train.FASTAI_INITS


def arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, _common.Data]:
    p = _common.parser(__doc__.splitlines()[0], seeds=5, quick_seeds=3, data=True)
    p.add_argument("--steps", type=int, default=None, help="training steps (100; 10)")
    p.add_argument("--batch", type=int, default=None, help="minibatch size (32; 16)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (0.05)")
    p.add_argument("--test", type=int, default=None, help="test images scored (2000; 500)")
    p.add_argument(
        "--upsample",
        type=int,
        default=None,
        help="repeat each pixel into a KxK block first (1 on Fashion-MNIST; 4 on digits: 32x32)",
    )
    args = _common.parse(p, argv)
    data = _common.load_data(args)
    room = data.test.x.shape[0] - _common.probe_count(data)  # held-out images for accuracy
    args.steps = args.steps or (10 if args.quick else 100)
    args.batch = args.batch or (16 if args.quick else 32)
    args.test = args.test or min(500 if args.quick else 2000, room)
    args.upsample = args.upsample or (4 if data.name == "digits" else 1)
    if (
        min(args.steps, args.batch, args.upsample) < 1
        or not args.lr > 0
        or not 1 <= args.test <= room
    ):
        p.error(f"--steps, --batch, --lr, --upsample must be positive and --test in [1, {room}]")
    return args, data


def upsample(k: int):
    """Repeat each pixel into a ``k`` x ``k`` block."""
    return lambda x: x.repeat(k, axis=1).repeat(k, axis=2)


def init_table(report, names, mean, std, x_probe, data) -> None:
    S = std.shape[1]
    report.table(
        f"Layer outputs after init on {x_probe.shape[0]} held-out images of {data.label} "
        f"({x_probe.shape[1]}x{x_probe.shape[2]}): mean / std (mean ± std over {S} seeds)",
        ["init", *names],
        [
            [label]
            + [
                f"{mean[i, :, j].mean():+.3f} / {_common.spread(std[i, :, j])}"
                for j in range(len(names))
            ]
            for i, label in enumerate(INITS)
        ],
    )


def accuracy_table(report, acc, losses, x_eval, args, data) -> None:
    S, steps = args.seeds, args.steps
    tenth = max(1, steps // 10)
    finite = np.isfinite(losses).all(axis=2)
    report.table(
        f"Test accuracy (%) on {x_eval.shape[0]} test images of {data.label} after {steps} SGD "
        f"steps of {args.batch} (lr {args.lr}, momentum 0.9), {S} seeds",
        ["init", "accuracy", "min .. max", "loss, first 10%", "loss, last 10%", "finite"],
        [
            [
                label,
                _common.spread(100 * acc[i]),
                f"{100 * acc[i].min():.2f} .. {100 * acc[i].max():.2f}",
                _common.spread(losses[i, :, :tenth].mean(axis=1)),
                _common.spread(losses[i, :, -tenth:].mean(axis=1)),
                f"{int(finite[i].sum())}/{S}",
            ]
            for i, label in enumerate(INITS)
        ],
    )


def figure(report, names, std, losses, acc, args) -> None:
    S, steps = args.seeds, args.steps
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x_layers = np.arange(len(names))
    win = max(1, steps // 50)
    for i, label in enumerate(INITS):
        c = plt.get_cmap("tab10")(i)
        axes[0].errorbar(
            x_layers + 0.05 * (i - 1),
            std[i].mean(axis=0),
            yerr=std[i].std(axis=0, ddof=1) if S > 1 else None,
            fmt="o-",
            color=c,
            label=label,
            capsize=3,
        )
        sm = _common.moving_average(losses[i], win)
        t = np.arange(sm.shape[-1]) + win
        axes[1].plot(t, sm.mean(axis=0), color=c, label=f"{label}: {100 * acc[i].mean():.1f}%")
        axes[1].fill_between(t, sm.min(axis=0), sm.max(axis=0), color=c, alpha=0.2, lw=0)
    axes[0].set_xticks(x_layers, names)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("output std after init (held-out batch)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel(f"training loss (mean of {win} steps)")
    axes[1].set_title(f"mean and range over {S} seeds; legend: test accuracy", fontsize=9)
    axes[1].legend(fontsize=7)
    report.figure(fig, "init_and_training")


def claim(report, std, acc, converged: bool, args) -> tuple[dict[str, bool], float, float]:
    """The checks (table, held, verdict) on the per-layer std (init, seed, layer) and the
    accuracy (init, seed); returns them and the paired p-values of default < He < LSUV."""
    conv_std = std[:, :, :4]
    he_ratio = conv_std[1, :, -1] / conv_std[1, :, 0]
    means = {label: float(acc[i].mean()) for i, label in enumerate(INITS)}
    p_he_torch = _common.paired_less(acc[0], acc[1])  # default < He
    p_lsuv_he = _common.paired_less(acc[1], acc[2])  # He < LSUV
    lsuv_dev = np.abs(std[2] - 1).max()
    checks = report.checks(
        {
            "init: PyTorch default's conv std falls at every layer (every seed)": (
                bool(np.all(np.diff(conv_std[0], axis=1) < 0)),
                "conv std per layer (mean): "
                + ", ".join(f"{v:.3f}" for v in conv_std[0].mean(axis=0)),
            ),
            "init: He's last conv std within 2x of the first (every seed)": (
                bool(np.all((he_ratio > 0.5) & (he_ratio < 2))),
                f"ratio {_common.spread(he_ratio)}",
            ),
            "init: LSUV converged, held-out std 1 +- 10% at every layer (every seed)": (
                bool(converged and lsuv_dev <= 0.1),
                f"max |std - 1| = {lsuv_dev:.3f}, converged: {converged}",
            ),
            "training: mean accuracy LSUV > He > PyTorch default": (
                means["LSUV"] > means["He"] > means["PyTorch default"],
                f"paired one-sided p: PyTorch default < He {p_he_torch:.2g}, "
                f"He < LSUV {p_lsuv_he:.2g}",
            ),
        }
    )
    report.verdict = (
        f"init: PyTorch default's conv std {conv_std[0, :, 0].mean():.3f} -> "
        f"{conv_std[0, :, -1].mean():.3f}, He {conv_std[1, :, 0].mean():.3f} -> "
        f"{conv_std[1, :, -1].mean():.3f}, LSUV 1 (max deviation {lsuv_dev:.3f}); "
        f"accuracy after {args.steps} steps: "
        + ", ".join(f"{label} {_common.spread(100 * acc[i])}%" for i, label in enumerate(INITS))
        + report.failed(checks, ". Failed: ")
    )
    return checks, p_he_torch, p_lsuv_he


def main(argv: Sequence[str] | None = None) -> dict:
    args, data = arguments(argv)
    report = _common.Report(
        NAME,
        f"fastai's convnet on {data.label}: PyTorch default vs He vs LSUV",
        CLAIM,
        SOURCE,
        args,
        data,
    )
    im = _common.images(data, upsample(args.upsample), args.test, seed=7)
    keys = jax.random.split(jax.random.key(7), args.seeds)
    model, variables, converged = _train.fastai_inits(
        lambda init: ConvNet(kernel_init=init), keys, im.x_probe, im.x_lsuv, args
    )
    names, st = _train.measure_stacked(model, variables, im.x_probe)
    mean, std = (st[k].reshape(len(INITS), args.seeds, -1) for k in ("mean", "std"))
    init_table(report, names, mean, std, im.x_probe, data)
    acc, losses = _train.sgd_accuracy(model, variables, keys, im, args)
    accuracy_table(report, acc, losses, im.x_eval, args, data)

    checks, p_he_torch, p_lsuv_he = claim(report, std, acc, converged, args)
    figure(report, names, std, losses, acc, args)
    report.summary = {
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "test_images": int(im.x_eval.shape[0]),
        "probe_images": int(im.x_probe.shape[0]),
        "upsample": args.upsample,
        "image_size": int(im.x_probe.shape[1]),
        "layers": names,
        "checks": checks,
        "accuracy": {label: _common.spread(acc[i]) for i, label in enumerate(INITS)},
        "accuracy_per_seed": {label: acc[i] for i, label in enumerate(INITS)},
        "p_default_below_he": p_he_torch,
        "p_he_below_lsuv": p_lsuv_he,
        "init_std": {label: std[i].mean(axis=0) for i, label in enumerate(INITS)},
        "init_mean": {label: mean[i].mean(axis=0) for i, label in enumerate(INITS)},
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
