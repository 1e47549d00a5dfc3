"""Claim 6: on an imbalanced Fashion-MNIST subset (class counts 10:5:5:100:100), a classifier
whose output bias is ``jaxinit.prior_bias(counts)`` starts out predicting the class proportions,
and so has a lower first-epoch loss and reaches a target loss in fewer steps than with a zero bias.

Data: the first ``scale * (10, 5, 5, 100, 100)`` training images of Fashion-MNIST classes 0-4
(T-shirt, trouser, pullover, dress, coat), standardized. Without Fashion-MNIST, ``--quick`` runs
on scikit-learn's digits 0-4 (see ``_common.load_data``): about 130 training images per class
allow only ``scale`` 1 (220 images, the same proportions), trained for 30 epochs by default so
that the run has as many steps (103) as the quick Fashion-MNIST run (3 epochs of 2,200 images).
Model (flax linen): Dense(hidden, He) + ReLU, then a head with a zero kernel
(``jaxinit.zeros()``) and one of three biases: zero, ``prior_bias(counts)`` (log p) and the
per-class logit ``log(p / (1 - p))`` quoted in blog posts.
Training: Adam, minibatches of 64, every (bias, seed) pair in one jitted ``vmap``; a seed sets the
hidden layer's init and the shuffling. The training loss at a step is the mean minibatch loss
over the last 10 steps; "steps to target" is the first step where it is below ``--target``.
Zero and prior bias share each seed's hidden init and data order, so they are compared paired.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import _common
import _train
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit

NAME = "prior_bias_imbalance"
CLAIM = (
    "With prior_bias, the initial mean softmax equals the class proportions; first-epoch "
    "loss and steps to a target loss improve over a zero bias. The per-class logit "
    "log(p/(1-p)) overweights the frequent classes under softmax."
)
SOURCE = (
    "Karpathy 2019, 'A Recipe for Training Neural Networks' ('init well'); the logit formula "
    "as used in blog posts on imbalanced classification"
)
RATIO = (10, 5, 5, 100, 100)
WINDOW = 10
BATCH = 64


def logit_bias(counts) -> np.ndarray:
    """The per-class logit log(p / (1 - p)): right for independent sigmoids, not for softmax."""
    p = np.asarray(counts, np.float64) / np.sum(counts)
    return np.log(p / (1 - p))


def biases(counts) -> dict[str, jaxinit.Initializer]:
    return {
        "zero bias": jaxinit.zeros(),
        "prior_bias (log p)": jaxinit.prior_bias(counts),
        "logit log(p/(1-p))": jaxinit.constant(logit_bias(counts)),
    }


ZERO, PRIOR, LOGIT = biases(RATIO)


class Classifier(nn.Module):
    hidden: int
    num_classes: int
    bias_init: jaxinit.Initializer
    head_init: jaxinit.Initializer

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.hidden, kernel_init=jaxinit.he_normal())(x))
        return nn.Dense(self.num_classes, kernel_init=self.head_init, bias_init=self.bias_init)(h)


def subset(ds, counts) -> tuple[np.ndarray, np.ndarray]:
    """The first ``counts[c]`` images of each class ``c``, in dataset order."""
    idx = np.concatenate([np.flatnonzero(ds.y == c)[:n] for c, n in enumerate(counts)])
    idx.sort()
    return ds.flat()[idx], ds.y[idx]


def arguments(argv: Sequence[str] | None) -> tuple[argparse.Namespace, _common.Data]:
    p = _common.parser(__doc__.splitlines()[0], seeds=30, quick_seeds=8, data=True)
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        help="counts = scale * (10,5,5,100,100) (20; 10; at most what the data holds: 1 on digits)",
    )
    p.add_argument("--epochs", type=int, default=None, help="training epochs (3; 30 on digits)")
    p.add_argument("--hidden", type=int, default=100, help="hidden width (100)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    p.add_argument("--target", type=float, default=0.5, help="target training loss (0.5)")
    args = _common.parse(p, argv)
    data = _common.load_data(args)
    ds = data.train
    # The largest scale whose counts the training set holds (60 on Fashion-MNIST, 1 on digits).
    fits = min(int(np.sum(ds.y == c)) // r for c, r in enumerate(RATIO))
    args.scale = args.scale or min(fits, 10 if args.quick else 20)
    args.epochs = args.epochs or (30 if data.name == "digits" else 3)
    if not 1 <= args.scale <= fits:
        p.error(
            f"--scale {args.scale} must be in [1, {fits}]: {data.label} has "
            f"{', '.join(str(int(np.sum(ds.y == c))) for c in range(len(RATIO)))} training "
            f"images of classes 0-{len(RATIO) - 1}"
        )
    if args.epochs < 1 or args.hidden < 1 or not args.lr > 0 or not args.target > 0:
        p.error("--epochs, --hidden, --lr and --target must be positive")
    return args, data


def entropy(prop: np.ndarray) -> float:
    """The entropy of the class proportions: the loss of predicting them."""
    return float(-(prop * np.log(prop)).sum())


def initial_softmax(report, x, counts, keys, args) -> tuple[dict, dict, dict]:
    """The mean softmax at init of each bias, with a zero head kernel (the trained set-up) and
    with Flax's default head. Returns the summary, the per-seed max |mean softmax - p| and the
    zero-head variables of each bias, stacked, for training."""
    prop = np.asarray(counts, np.float64) / x.shape[0]
    rows, summary, errors, zero_head = [], {}, {}, {}
    for head_name, head in (
        ("zero head kernel", jaxinit.zeros()),
        ("default head (lecun_normal)", jaxinit.lecun_normal()),
    ):
        for label, bias in biases(counts).items():
            model = Classifier(args.hidden, len(counts), bias, head)
            variables = _train.init_stacked(model, keys, args, x)
            probs = jax.vmap(lambda v, m=model: jax.nn.softmax(m.apply(v, x)))(variables)
            mean_p = np.asarray(probs.mean(axis=1), np.float64)  # (seeds, classes)
            err = np.abs(mean_p - prop[None, :]).max(axis=1)
            rows.append(
                [
                    head_name,
                    label,
                    " ".join(f"{v:.4f}" for v in mean_p.mean(axis=0)),
                    _common.spread(err),
                ]
            )
            errors[f"{head_name}: {label}"] = err
            summary[f"{head_name}: {label}"] = {
                "mean_softmax": mean_p.mean(axis=0),
                "max_abs_error": _common.spread(err),
            }
            if head_name == "zero head kernel":
                zero_head[label] = variables
    report.table(
        f"Initial mean softmax over the {x.shape[0]} images (proportions "
        + " ".join(f"{v:.4f}" for v in prop)
        + f"), {args.seeds} seeds",
        ["head kernel", "bias", "mean softmax (mean over seeds)", "max |mean softmax - p|"],
        rows,
    )
    return summary, errors, zero_head


def train(report, variables, x, y, prop, keys, args) -> tuple[dict, np.ndarray, np.ndarray]:
    """Train every (bias, seed) in one program (seed ``i`` of every bias shares data order
    ``keys[i]``) and tabulate. Returns per-bias results, the smoothed losses (biases, seeds,
    steps - WINDOW + 1) and the initial losses (biases, seeds)."""
    n, V, S = x.shape[0], len(variables), args.seeds
    steps = args.epochs * n // BATCH
    model = Classifier(args.hidden, len(RATIO), jaxinit.zeros(), jaxinit.zeros())
    stacked = _train.concat(list(variables.values()))
    init_loss = jax.vmap(lambda v: _train.cross_entropy(model.apply(v, x), y))(stacked)
    run = _train.train_stacked(
        model,
        stacked,
        x,
        y,
        jnp.concatenate([keys] * V),
        steps=steps,
        batch=BATCH,
        optimizer=optax.adam(args.lr),
    )
    step_losses = np.asarray(run.losses).reshape(V, S, steps)
    # Training loss at step t: mean minibatch loss over steps t - WINDOW + 1 .. t.
    smooth = _common.moving_average(step_losses, WINDOW)
    init_loss = np.asarray(init_loss).reshape(V, S)
    results, rows = {}, []
    for i, label in enumerate(variables):
        cl = smooth[i]
        first = step_losses[i][:, : -(-n // BATCH)].mean(axis=1)
        below = cl < args.target
        reach = np.where(below.any(axis=1), below.argmax(axis=1) + WINDOW, steps)
        results[label] = {
            "initial_loss": init_loss[i],
            "first_epoch_loss": first,
            "steps_to_target": reach,
            "final_loss": cl[:, -1],
        }
        rows.append(
            [
                label,
                _common.spread(init_loss[i]),
                _common.spread(first),
                _common.spread(reach),
                f"{int(below.any(axis=1).sum())}/{S}",
                _common.spread(cl[:, -1]),
            ]
        )
    report.table(
        f"Training, {steps} steps of {BATCH} ({args.epochs} epochs of {n} images), Adam lr "
        f"{args.lr}, {S} seeds (mean ± std); entropy of p = {entropy(prop):.4f}, ln 5 = "
        f"{np.log(5):.4f}",
        [
            "bias",
            "initial loss",
            "first-epoch loss",
            f"steps to loss < {args.target}",
            "reached",
            "final loss",
        ],
        rows,
    )
    return results, smooth, init_loss


def figure(report, smooth, init_loss, labels, counts, prop, args, data) -> None:
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    t = np.arange(smooth.shape[-1]) + WINDOW
    for i, label in enumerate(labels):
        cl = smooth[i]
        c = plt.get_cmap("tab10")(i)
        lo, hi = np.quantile(cl, [0.05, 0.95], axis=0)
        ax.fill_between(t, lo, hi, color=c, alpha=0.25, lw=0)
        ax.plot(t, cl.mean(axis=0), color=c, label=label)
        ax.scatter([0], [init_loss[i].mean()], color=c, s=12)
    ax.axhline(entropy(prop), color="grey", ls=":", lw=1, label="entropy of class prior")
    ax.axhline(args.target, color="black", ls="--", lw=0.8, label=f"target {args.target}")
    ax.axvline(-(-sum(counts) // BATCH), color="grey", lw=0.6)  # end of epoch 1
    ax.set_xlabel("step (vertical line: end of epoch 1)")
    ax.set_ylabel(f"training loss (mean of last {WINDOW} minibatches)")
    ax.set_yscale("log")
    ax.set_title(f"imbalanced {data.label} {counts}; band: 5-95% of {args.seeds} seeds", fontsize=9)
    ax.legend(fontsize=7)
    report.figure(fig, "loss")


def logit_text(logit_p, prop, results) -> str:
    """What the per-class logit bias predicts under softmax, against the proportions."""
    return (
        f"log(p/(1-p)) as a softmax bias predicts {' '.join(f'{v:.4f}' for v in logit_p)} "
        f"instead of {' '.join(f'{v:.4f}' for v in prop)}: the two frequent classes get "
        f"{logit_p[3]:.4f} each instead of {prop[3]:.4f}, the rare ones "
        f"{logit_p[1]:.4f} instead of {prop[1]:.4f}; its initial loss is "
        f"{_common.spread(results[LOGIT]['initial_loss'])} vs "
        f"{_common.spread(results[PRIOR]['initial_loss'])} for log p (the entropy, "
        f"{entropy(prop):.4f})."
    )


def steps_saved(results: dict) -> np.ndarray:
    """Per seed, the steps to the target that prior_bias saves over a zero bias."""
    return results[ZERO]["steps_to_target"] - results[PRIOR]["steps_to_target"]


def claim(report, results: dict, errors: dict, args) -> tuple[dict[str, bool], float, float]:
    """The checks (table, held, verdict); returns them and the paired p-values of the
    first-epoch loss and of the steps to target."""

    def spreads(what):
        return f"{_common.spread(results[PRIOR][what])} vs {_common.spread(results[ZERO][what])}"

    worst = float(np.max(errors[f"zero head kernel: {PRIOR}"]))
    eps = float(jnp.finfo(jnp.float32).eps)
    p_first, p_steps = (
        _common.paired_less(results[PRIOR][k], results[ZERO][k])
        for k in ("first_epoch_loss", "steps_to_target")
    )
    checks = report.checks(
        {
            "prior_bias: initial mean softmax == proportions (to float32 rounding)": (
                worst <= 8 * eps,  # float32 rounding of log p and of the softmax
                f"max over seeds |mean softmax - p| = {worst:.2e} (8 eps = {8 * eps:.1e})",
            ),
            "prior_bias: lower first-epoch loss than zero bias (paired t, p < 0.01)": (
                p_first < 0.01,
                f"{spreads('first_epoch_loss')}, p = {p_first:.1e}",
            ),
            "prior_bias: fewer steps to target than zero bias (paired t, p < 0.01)": (
                p_steps < 0.01,
                f"{spreads('steps_to_target')}, p = {p_steps:.1e}",
            ),
        }
    )
    report.verdict = (
        f"initial mean softmax = p to {worst:.1e}; first-epoch loss "
        f"{spreads('first_epoch_loss')} (zero bias); steps to loss {args.target}: "
        f"{spreads('steps_to_target')} (saves {_common.spread(steps_saved(results))} steps per "
        "seed)." + report.failed(checks)
    )
    return checks, p_first, p_steps


def main(argv: Sequence[str] | None = None) -> dict:
    args, data = arguments(argv)
    counts = tuple(args.scale * r for r in RATIO)
    report = _common.Report(
        NAME, f"Class-prior output bias on imbalanced {data.label}", CLAIM, SOURCE, args, data
    )
    x, y = subset(data.train, counts)
    x = jnp.asarray((x - x.mean()) / x.std())
    n, y = x.shape[0], jnp.asarray(y)
    prop = np.asarray(counts, np.float64) / n
    keys = jax.random.split(jax.random.key(6), args.seeds)
    init_summary, errors, variables = initial_softmax(report, x, counts, keys, args)
    results, smooth, init_loss = train(report, variables, x, y, prop, keys, args)

    checks, p_first, p_steps = claim(report, results, errors, args)
    logit_p = init_summary[f"zero head kernel: {LOGIT}"]["mean_softmax"]
    report.text("The logit formula under softmax", logit_text(logit_p, prop, results))
    figure(report, smooth, init_loss, list(variables), counts, prop, args, data)

    report.summary = {
        "counts": counts,
        "epochs": args.epochs,
        "proportions": prop,
        "steps": args.epochs * n // BATCH,
        "target": args.target,
        "checks": checks,
        "initial": init_summary,
        "training": results,
        "p_first_epoch": p_first,
        "p_steps": p_steps,
        "steps_saved": _common.spread(steps_saved(results)),
        "logit_formula_softmax": logit_p,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
