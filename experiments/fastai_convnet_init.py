"""Claim 7: the fastai article's simple convnet (4 stride-2 conv + ReLU, global pool, dense) on
Fashion-MNIST with PyTorch-default, He and LSUV init: per-layer activation mean/std after init,
then test accuracy after a fixed training budget, mean +- std over seeds.

Model: ``jaxinit.models.ConvNet`` (conv 5x5/32, 3x3/64, 3x3/128, 3x3/128, all stride 2, ReLU,
global average pool, Dense 10). Inits: ``torch_default()`` kernels (PyTorch's Linear/Conv
default; biases zero, where PyTorch draws them U(+-1/sqrt(fan_in))), ``he_normal()``, and LSUV
(``jaxinit.lsuv`` on the PyTorch-default init, one batch of 512 training images, as fastai starts
LSUV from the default init). Per-layer statistics (``jaxinit.probe.capture``) are measured on
512 held-out test images. Training: SGD with momentum 0.9, 100 minibatches of 32 (a budget a
2-core CPU affords: 3,200 images, 5% of an epoch), every (init, seed) pair in one jitted
``vmap``; a seed sets the init and the data order (shared by the three inits, so they are
compared paired).

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

import sys
from collections.abc import Sequence

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit
from jaxinit.models import ConvNet

NAME = "fastai_convnet_init"
INITS = ("PyTorch default", "He", "LSUV")


def main(argv: Sequence[str] | None = None) -> dict:
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
    # Held-out images: the first n_probe for the per-layer statistics, the rest for accuracy.
    n_held = data.test.x.shape[0]
    n_probe = min(512, n_held // 2)
    steps = args.steps or (10 if args.quick else 100)
    batch = args.batch or (16 if args.quick else 32)
    n_test = args.test or min(500 if args.quick else 2000, n_held - n_probe)
    up = args.upsample or (4 if data.name == "digits" else 1)
    if steps < 1 or batch < 1 or up < 1 or not args.lr > 0 or not 1 <= n_test <= n_held - n_probe:
        p.error(
            f"--steps, --batch, --lr, --upsample must be positive and --test in "
            f"[1, {n_held - n_probe}]"
        )
    report = _common.Report(
        NAME,
        f"fastai's convnet on {data.label}: PyTorch default vs He vs LSUV",
        "PyTorch's default init shrinks the activations layer by layer; He keeps them; LSUV "
        "sets every layer's std to 1; after a fixed budget LSUV trains best, then He, then "
        "PyTorch's default.",
        "fast.ai, the initialization article and course notebook on LSUV (simple convnet); "
        "Mishkin & Matas 2016, 'All you need is a good init' (LSUV)",
        args,
        data,
    )
    train_ds, test_ds = data.train, data.test
    mu, sd = train_ds.x.mean(), train_ds.x.std()

    def prep(x):
        return jnp.asarray(((x - mu) / sd).repeat(up, axis=1).repeat(up, axis=2))

    x_train = prep(train_ds.x)
    y_train = jnp.asarray(train_ds.y)
    x_test = prep(test_ds.x)
    y_test = jnp.asarray(test_ds.y)
    rng = np.random.default_rng(7)
    x_lsuv = x_train[rng.choice(x_train.shape[0], 512, replace=False)]
    x_probe = x_test[:n_probe]
    x_eval, y_eval = x_test[n_probe : n_probe + n_test], y_test[n_probe : n_probe + n_test]

    S = args.seeds
    keys = jax.random.split(jax.random.key(7), S)
    torch_model = ConvNet(kernel_init=jaxinit.torch_default())
    he_model = ConvNet(kernel_init=jaxinit.he_normal())
    model = torch_model  # the apply function is the same for every init
    v_torch = _common.init_jit(jax.vmap(lambda k: torch_model.init(k, x_probe[:1])), args)(keys)
    v_he = _common.init_jit(jax.vmap(lambda k: he_model.init(k, x_probe[:1])), args)(keys)
    lsuv_v, reports = [], []
    for s in range(S):
        v, rep = jaxinit.lsuv(model, jax.tree.map(lambda a, s=s: a[s], v_torch), x_lsuv)
        lsuv_v.append(v)
        reports.append(rep)
    v_lsuv = _common.stack(lsuv_v)
    lsuv_converged = bool(all(bool(np.all(r.converged)) for r in reports))
    variables = _common.concat([v_torch, v_he, v_lsuv])

    names, mean, std = _common.layer_moments_stacked(model, variables, x_probe)
    mean, std = mean.reshape(3, S, -1), std.reshape(3, S, -1)
    rows = []
    for i, label in enumerate(INITS):
        rows.append(
            [label]
            + [f"{mean[i, :, j].mean():+.3f} / {_common.spread(std[i, :, j])}" for j in range(4)]
            + [f"{mean[i, :, 4].mean():+.3f} / {_common.spread(std[i, :, 4])}"]
        )
    report.table(
        f"Layer outputs after init on {n_probe} held-out images of {data.label} "
        f"({x_probe.shape[1]}x{x_probe.shape[2]}): mean / std (mean ± std over {S} seeds)",
        ["init", *names],
        rows,
    )
    conv_std = std[:, :, :4]
    torch_falls = bool(np.all(np.diff(conv_std[0], axis=1) < 0))
    he_ratio = conv_std[1, :, -1] / conv_std[1, :, 0]
    he_keeps = bool(np.all((he_ratio > 0.5) & (he_ratio < 2)))
    lsuv_unit = bool(lsuv_converged and np.all(np.abs(std[2] - 1) <= 0.1))

    order = jnp.concatenate([keys] * 3)
    opt = optax.sgd(args.lr, momentum=0.9)
    trained, losses = _common.train_stacked(
        model, variables, x_train, y_train, order, steps=steps, batch=batch, optimizer=opt
    )
    acc = np.asarray(_common.accuracy_stacked(model, trained, x_eval, y_eval)).reshape(3, S)
    losses = np.asarray(losses).reshape(3, S, steps)
    finite = np.isfinite(losses).all(axis=2)
    rows = []
    for i, label in enumerate(INITS):
        rows.append(
            [
                label,
                _common.spread(100 * acc[i]),
                f"{100 * acc[i].min():.2f} .. {100 * acc[i].max():.2f}",
                _common.spread(losses[i, :, : max(1, steps // 10)].mean(axis=1)),
                _common.spread(losses[i, :, -max(1, steps // 10) :].mean(axis=1)),
                f"{int(finite[i].sum())}/{S}",
            ]
        )
    report.table(
        f"Test accuracy (%) on {x_eval.shape[0]} test images of {data.label} after {steps} SGD "
        f"steps of {batch} (lr {args.lr}, momentum 0.9), {S} seeds",
        ["init", "accuracy", "min .. max", "loss, first 10%", "loss, last 10%", "finite"],
        rows,
    )
    means = {label: float(acc[i].mean()) for i, label in enumerate(INITS)}
    p_he_torch = _common.paired_less(acc[0], acc[1])  # default < He
    p_lsuv_he = _common.paired_less(acc[1], acc[2])  # He < LSUV
    ordered = means["LSUV"] > means["He"] > means["PyTorch default"]
    names_c = [
        "init: PyTorch default's conv std falls at every layer (every seed)",
        "init: He's last conv std within 2x of the first (every seed)",
        "init: LSUV converged, held-out std 1 +- 10% at every layer (every seed)",
        "training: mean accuracy LSUV > He > PyTorch default",
    ]
    checks = dict(zip(names_c, [torch_falls, he_keeps, lsuv_unit, bool(ordered)], strict=True))
    report.table(
        "The claim",
        ["check", "held", "numbers"],
        [
            [
                names_c[0],
                torch_falls,
                "conv std per layer (mean): "
                + ", ".join(f"{v:.3f}" for v in conv_std[0].mean(axis=0)),
            ],
            [names_c[1], he_keeps, f"ratio {_common.spread(he_ratio)}"],
            [
                names_c[2],
                lsuv_unit,
                f"max |std - 1| = {np.abs(std[2] - 1).max():.3f}, converged: {lsuv_converged}",
            ],
            [
                names_c[3],
                ordered,
                f"paired one-sided p: PyTorch default < He {p_he_torch:.2g}, "
                f"He < LSUV {p_lsuv_he:.2g}",
            ],
        ],
    )

    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x_layers = np.arange(len(names))
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
        win = max(1, steps // 50)
        sm = np.apply_along_axis(
            lambda r, win=win: np.convolve(r, np.ones(win) / win, "valid"), -1, losses[i]
        )
        t = np.arange(sm.shape[-1]) + win
        axes[1].plot(t, sm.mean(axis=0), color=c, label=f"{label}: {100 * means[label]:.1f}%")
        axes[1].fill_between(t, sm.min(axis=0), sm.max(axis=0), color=c, alpha=0.2, lw=0)
    axes[0].set_xticks(x_layers, names)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("output std after init (held-out batch)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel(f"training loss (mean of {max(1, steps // 50)} steps)")
    axes[1].set_title(f"mean and range over {S} seeds; legend: test accuracy", fontsize=9)
    axes[1].legend(fontsize=7)
    report.figure(fig, "init_and_training")

    report.held = all(checks.values())
    report.verdict = (
        f"init: PyTorch default's conv std {conv_std[0, :, 0].mean():.3f} -> "
        f"{conv_std[0, :, -1].mean():.3f}, He {conv_std[1, :, 0].mean():.3f} -> "
        f"{conv_std[1, :, -1].mean():.3f}, LSUV 1 (max deviation {np.abs(std[2] - 1).max():.3f}); "
        f"accuracy after {steps} steps: "
        + ", ".join(f"{label} {_common.spread(100 * acc[i])}%" for i, label in enumerate(INITS))
        + ("" if report.held else ". Failed: " + "; ".join(k for k, v in checks.items() if not v))
    )
    report.summary = {
        "steps": steps,
        "batch": batch,
        "lr": args.lr,
        "test_images": int(x_eval.shape[0]),
        "probe_images": n_probe,
        "upsample": up,
        "image_size": int(x_probe.shape[1]),
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
