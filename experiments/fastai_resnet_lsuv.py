"""Claim 8: a ResNet without BatchNorm trains best from LSUV, then He, then PyTorch's default init
(the fastai article: 67 / 57 / 48 % on Imagenette); with BatchNorm the three end close together.

Model: a CIFAR-style ResNet, ``jaxinit.models.ResNet`` (``ResBlock``: conv3x3 [BN] ReLU conv3x3
[BN] + shortcut, ReLU): a 3x3 stem, three stages of ``--blocks`` blocks (the first block of stages
2 and 3 has stride 2), global average pool, Dense 10; depth 2 + 6 * blocks (``--blocks 2``:
ResNet-14, the default; 3: ResNet-20). Data: Fashion-MNIST, not Imagenette, and sized for a
2-core CPU: images average-pooled to 14x14 and stage widths 8, 16, 32 by default (``--pool 1
--widths 16 32 64`` for the full-size net), 100 SGD steps of 32. Inits:
``torch_default()`` kernels (biases zero), ``he_normal()``, and LSUV (``jaxinit.lsuv`` on the
PyTorch-default init, 512 training images, every conv and the head). Training: SGD with momentum
0.9, minibatches of 64; for each of "no BN" / "BN", every (init, seed) pair is trained in one
jitted ``vmap``, a seed setting the init and the data order shared by the three inits.

Without Fashion-MNIST, ``--quick`` runs on scikit-learn's digits (see ``_common.load_data``):
1,297 training and 500 held-out images (250 for the per-layer statistics, up to 250 for
accuracy), at their own 8x8 (``--pool 1``; the stages then work at 8x8, 4x4 and 2x2).

Checks: without BN, mean test accuracy orders LSUV > He > PyTorch default; with BN, the three
mean accuracies lie within 2 percentage points of each other.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import _common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit
from jaxinit import models

NAME = "fastai_resnet_lsuv"
INITS = ("PyTorch default", "He", "LSUV")
CLOSE_PP = 2.0  # "close together": all three mean accuracies within this many points
ARTICLE = {"LSUV": 67, "He": 57, "PyTorch default": 48}


def resnet(blocks: int, batch_norm: bool, kernel_init, widths) -> models.ResNet:
    """Stem, three stages of ``blocks`` ResBlocks, pool, Dense(10)."""
    return models.ResNet(10, tuple(widths), batch_norm, nn.relu, kernel_init, blocks=blocks)


def run_setting(args, bn, arrays, keys, steps, batch, widths):
    """Init (PyTorch default, He, LSUV), per-layer stats, training and accuracy for one
    BatchNorm setting; arrays with leading axes (init, seed)."""
    x_train, y_train, x_lsuv, x_probe, x_eval, y_eval = arrays
    S = keys.shape[0]
    torch_model = resnet(args.blocks, bn, jaxinit.torch_default(), widths)
    he_model = resnet(args.blocks, bn, jaxinit.he_normal(), widths)
    v_torch = _common.init_jit(jax.vmap(lambda k: torch_model.init(k, x_probe[:1])), args)(keys)
    v_he = _common.init_jit(jax.vmap(lambda k: he_model.init(k, x_probe[:1])), args)(keys)
    lsuv_v, converged = [], True
    for s in range(S):
        v, rep = jaxinit.lsuv(
            torch_model, jax.tree.map(lambda a, s=s: a[s], v_torch), x_lsuv, train=False
        )
        lsuv_v.append(v)
        converged &= bool(np.all(rep.converged))
    variables = _common.concat([v_torch, v_he, _common.stack(lsuv_v)])
    names, _, std = _common.layer_moments_stacked(torch_model, variables, x_probe, train=False)
    std = std.reshape(3, S, -1)
    order = jnp.concatenate([keys] * 3)
    opt = optax.sgd(args.lr, momentum=0.9)
    trained, losses = _common.train_stacked(
        torch_model, variables, x_train, y_train, order, steps=steps, batch=batch, optimizer=opt
    )
    acc = np.asarray(_common.accuracy_stacked(torch_model, trained, x_eval, y_eval))
    acc = np.where(np.isfinite(acc), acc, 0.0).reshape(3, S)
    losses = np.asarray(losses).reshape(3, S, steps)
    return names, std, acc, losses, converged


def main(argv: Sequence[str] | None = None) -> dict:
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
    # Held-out images: the first n_probe for the per-layer statistics, the rest for accuracy.
    n_held = data.test.x.shape[0]
    n_probe = min(512, n_held // 2)
    args.blocks = args.blocks or (1 if args.quick else 2)
    args.pool = args.pool or (1 if data.name == "digits" else 2)
    steps = args.steps or (4 if args.quick else 100)
    batch = args.batch or (8 if args.quick else 32)
    n_test = args.test or min(200 if args.quick else 2000, n_held - n_probe)
    widths = tuple(args.widths)
    if (
        args.blocks < 1
        or steps < 1
        or batch < 1
        or not args.lr > 0
        or not 1 <= n_test <= n_held - n_probe
    ):
        p.error(
            "--blocks, --steps, --batch, --lr must be positive and --test in "
            f"[1, {n_held - n_probe}]"
        )
    if min(widths) < 1:
        p.error("--widths must be positive")
    depth = 2 + 6 * args.blocks
    report = _common.Report(
        NAME,
        f"ResNet-{depth} with and without BatchNorm: PyTorch default vs He vs LSUV",
        "Without BatchNorm, LSUV > He > PyTorch default in accuracy after a fixed budget (the "
        "article: 67 / 57 / 48 % on Imagenette); with BatchNorm the three are close together.",
        "fast.ai, the LSUV article/notebook (xresnet on Imagenette); Mishkin & Matas 2016",
        args,
        data,
    )
    train_ds, test_ds = data.train, data.test
    mu, sd = train_ds.x.mean(), train_ds.x.std()

    def prep(x):
        x = (x - mu) / sd
        n, h, w, c = x.shape
        k = args.pool
        return jnp.asarray(x.reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4)))

    x_train, x_test = prep(train_ds.x), prep(test_ds.x)
    rng = np.random.default_rng(8)
    arrays = (
        x_train,
        jnp.asarray(train_ds.y),
        x_train[rng.choice(x_train.shape[0], 512, replace=False)],
        x_test[:n_probe],
        x_test[n_probe : n_probe + n_test],
        jnp.asarray(test_ds.y)[n_probe : n_probe + n_test],
    )
    keys = jax.random.split(jax.random.key(8), args.seeds)
    S = args.seeds
    results = {}
    for setting, bn in (("no BN", False), ("BN", True)):
        if args.bn in ("both", "yes" if bn else "no"):
            results[setting] = run_setting(args, bn, arrays, keys, steps, batch, widths)

    rows, summary, checks, numbers = [], {}, {}, []
    for setting, (names, std, acc, losses, converged) in results.items():
        means = {label: float(acc[i].mean()) for i, label in enumerate(INITS)}
        finite = np.isfinite(losses).all(axis=2)
        for i, label in enumerate(INITS):
            rows.append(
                [
                    setting,
                    label,
                    _common.spread(100 * acc[i]),
                    f"{100 * acc[i].min():.2f} .. {100 * acc[i].max():.2f}",
                    f"{std[i, :, 0].mean():.3g} -> {std[i, :, -2].mean():.3g}",
                    f"{int(finite[i].sum())}/{S}",
                    f"{ARTICLE[label]}" if setting == "no BN" else "",
                ]
            )
        p_th = _common.paired_less(acc[0], acc[1])
        p_hl = _common.paired_less(acc[1], acc[2])
        summary[setting] = {
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
            ok = means["LSUV"] > means["He"] > means["PyTorch default"]
            checks["no BN: mean accuracy LSUV > He > PyTorch default"] = bool(ok)
            numbers.append(
                " > ".join(
                    f"{label} {100 * means[label]:.2f}"
                    for label in sorted(means, key=means.get, reverse=True)
                )
                + f" (paired p: default < He {p_th:.2g}, He < LSUV {p_hl:.2g})"
            )
        else:
            rng_pp = 100 * (max(means.values()) - min(means.values()))
            checks[f"BN: the three mean accuracies within {CLOSE_PP} points"] = bool(
                rng_pp <= CLOSE_PP
            )
            numbers.append(
                f"range {rng_pp:.2f} points: "
                + ", ".join(f"{label} {100 * means[label]:.2f}" for label in INITS)
            )
    report.table(
        f"ResNet-{depth} (widths {widths}) on {data.label} at {x_train.shape[1]}x"
        f"{x_train.shape[2]}: test accuracy (%) on {n_test} images after {steps} "
        f"SGD steps of {batch} (lr {args.lr}, momentum 0.9), {S} seeds",
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
    report.table(
        "The claim",
        ["check", "held", "numbers"],
        [[k, v, n] for (k, v), n in zip(checks.items(), numbers, strict=True)],
    )

    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 1 + len(results), figsize=(4.5 * (1 + len(results)), 3.6))
    for col, (setting, (names, std, acc, losses, _)) in enumerate(results.items()):
        ax = axes[col + 1]
        for i, label in enumerate(INITS):
            c = plt.get_cmap("tab10")(i)
            win = max(1, steps // 50)
            sm = np.apply_along_axis(
                lambda r, win=win: np.convolve(r, np.ones(win) / win, "valid"), -1, losses[i]
            )
            t = np.arange(sm.shape[-1]) + win
            ax.plot(
                t, np.nanmean(sm, axis=0), color=c, label=f"{label}: {100 * acc[i].mean():.1f}%"
            )
        ax.set_title(f"{setting}: training loss, mean of {S} seeds", fontsize=9)
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

    report.held = all(checks.values())
    report.verdict = "; ".join(
        f"{k}: {'yes' if v else 'NO'} ({n})"
        for (k, v), n in zip(checks.items(), numbers, strict=True)
    )
    report.summary = {
        "blocks": args.blocks,
        "widths": widths,
        "image_size": int(x_train.shape[1]),
        "probe_images": n_probe,
        "depth": depth,
        "steps": steps,
        "batch": batch,
        "lr": args.lr,
        "test_images": n_test,
        "checks": checks,
        **summary,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
