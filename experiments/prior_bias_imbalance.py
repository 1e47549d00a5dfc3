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

import sys
from collections.abc import Sequence

import _common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit

NAME = "prior_bias_imbalance"
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


def mean_ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_train(model, x, y, steps, lr):
    n = x.shape[0]
    opt = optax.adam(lr)

    def loss_fn(params, xb, yb):
        return mean_ce(model.apply({"params": params}, xb), yb)

    def train(params, key):
        # Epoch-wise shuffles, concatenated; one minibatch of BATCH per step.
        epochs = -(-steps * BATCH // n)
        perms = jax.jit(jax.vmap(lambda k: jax.random.permutation(k, n)))(
            jax.random.split(key, epochs)
        )
        order = perms.reshape(-1)[: steps * BATCH].reshape(steps, BATCH)

        def step(carry, idx):
            params, state = carry
            loss, g = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
            updates, state = opt.update(g, state, params)
            return (optax.apply_updates(params, updates), state), loss

        _, losses = jax.lax.scan(step, (params, opt.init(params)), order)
        return losses

    return train


def main(argv: Sequence[str] | None = None) -> dict:
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
    scale = args.scale or min(fits, 10 if args.quick else 20)
    epochs = args.epochs or (30 if data.name == "digits" else 3)
    target = args.target
    if not 1 <= scale <= fits:
        p.error(
            f"--scale {scale} must be in [1, {fits}]: {data.label} has "
            f"{', '.join(str(int(np.sum(ds.y == c))) for c in range(len(RATIO)))} training "
            f"images of classes 0-{len(RATIO) - 1}"
        )
    if epochs < 1 or args.hidden < 1 or not args.lr > 0 or not target > 0:
        p.error("--epochs, --hidden, --lr and --target must be positive")
    counts = tuple(scale * r for r in RATIO)
    report = _common.Report(
        NAME,
        f"Class-prior output bias on imbalanced {data.label}",
        "With prior_bias, the initial mean softmax equals the class proportions; first-epoch "
        "loss and steps to a target loss improve over a zero bias. The per-class logit "
        "log(p/(1-p)) overweights the frequent classes under softmax.",
        "Karpathy 2019, 'A Recipe for Training Neural Networks' ('init well'); the logit formula "
        "as used in blog posts on imbalanced classification",
        args,
        data,
    )
    x, y = subset(ds, counts)
    x = (x - x.mean()) / x.std()
    x, y = jnp.asarray(x), jnp.asarray(y)
    n = x.shape[0]
    prop = np.asarray(counts, np.float64) / n
    steps = epochs * n // BATCH
    per_epoch = -(-n // BATCH)
    keys = jax.random.split(jax.random.key(6), args.seeds)
    variants = biases(counts)

    # Initial predictions: zero head kernel (the trained set-up) and Flax's default head.
    rows, init_summary, errors = [], {}, {}
    for head_name, head in (
        ("zero head kernel", jaxinit.zeros()),
        ("default head (lecun_normal)", jaxinit.lecun_normal()),
    ):
        for label, bias in variants.items():
            model = Classifier(args.hidden, len(counts), bias, head)
            params = _common.init_jit(
                jax.vmap(lambda k, m=model: m.init(k, x[:1])["params"]), args
            )(keys)
            probs = jax.vmap(lambda pr, m=model: jax.nn.softmax(m.apply({"params": pr}, x)))(params)
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
            init_summary[f"{head_name}: {label}"] = {
                "mean_softmax": mean_p.mean(axis=0),
                "max_abs_error": _common.spread(err),
            }
    report.table(
        f"Initial mean softmax over the {n} images (proportions "
        + " ".join(f"{v:.4f}" for v in prop)
        + f"), {args.seeds} seeds",
        ["head kernel", "bias", "mean softmax (mean over seeds)", "max |mean softmax - p|"],
        rows,
    )

    # Training: every (bias, seed) in one program.
    model = Classifier(args.hidden, len(counts), jaxinit.zeros(), jaxinit.zeros())
    stacked = [
        jax.vmap(
            lambda k, b=b: Classifier(args.hidden, len(counts), b, jaxinit.zeros()).init(k, x[:1])[
                "params"
            ]
        )(keys)
        for b in variants.values()
    ]
    params = jax.tree.map(lambda *a: jnp.concatenate(a), *stacked)
    shuffle = jnp.concatenate([keys] * len(variants))
    init_loss = jax.vmap(lambda pr: mean_ce(model.apply({"params": pr}, x), y))(params)
    train = make_train(model, x, y, steps, args.lr)
    step_losses = np.asarray(jax.jit(jax.vmap(train))(params, shuffle))
    V, S = len(variants), args.seeds
    step_losses = step_losses.reshape(V, S, steps)
    # Training loss at step t: mean minibatch loss over steps t - WINDOW + 1 .. t.
    kernel = np.ones(WINDOW) / WINDOW
    smooth = np.apply_along_axis(lambda r: np.convolve(r, kernel, "valid"), -1, step_losses)
    init_loss = np.asarray(init_loss).reshape(V, S)
    results, rows = {}, []
    for i, label in enumerate(variants):
        cl = smooth[i]
        first = step_losses[i][:, :per_epoch].mean(axis=1)
        below = cl < target
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
    entropy = float(-(prop * np.log(prop)).sum())
    report.table(
        f"Training, {steps} steps of {BATCH} ({epochs} epochs of {n} images), Adam lr {args.lr}, "
        f"{S} seeds (mean ± std); entropy of p = {entropy:.4f}, ln 5 = {np.log(5):.4f}",
        [
            "bias",
            "initial loss",
            "first-epoch loss",
            f"steps to loss < {target}",
            "reached",
            "final loss",
        ],
        rows,
    )

    # The claim.
    exact_err_all = errors[f"zero head kernel: {PRIOR}"]
    logit_p = init_summary[f"zero head kernel: {LOGIT}"]["mean_softmax"]
    eps = float(jnp.finfo(jnp.float32).eps)
    worst = float(np.max(exact_err_all))
    matches = worst <= 8 * eps  # float32 rounding of log p and of the softmax
    p_first = _common.paired_less(
        results[PRIOR]["first_epoch_loss"], results[ZERO]["first_epoch_loss"]
    )
    p_steps = _common.paired_less(
        results[PRIOR]["steps_to_target"], results[ZERO]["steps_to_target"]
    )
    lower_first = p_first < 0.01
    fewer_steps = p_steps < 0.01
    saved = results[ZERO]["steps_to_target"] - results[PRIOR]["steps_to_target"]
    names = [
        "prior_bias: initial mean softmax == proportions (to float32 rounding)",
        "prior_bias: lower first-epoch loss than zero bias (paired t, p < 0.01)",
        "prior_bias: fewer steps to target than zero bias (paired t, p < 0.01)",
    ]
    checks = {
        names[0]: bool(matches),
        names[1]: bool(lower_first),
        names[2]: bool(fewer_steps),
    }
    report.table(
        "The claim",
        ["check", "held", "numbers"],
        [
            [
                names[0],
                matches,
                f"max over seeds |mean softmax - p| = {worst:.2e} (8 eps = {8 * eps:.1e})",
            ],
            [
                names[1],
                lower_first,
                f"{_common.spread(results[PRIOR]['first_epoch_loss'])} vs "
                f"{_common.spread(results[ZERO]['first_epoch_loss'])}, p = {p_first:.1e}",
            ],
            [
                names[2],
                fewer_steps,
                f"{_common.spread(results[PRIOR]['steps_to_target'])} vs "
                f"{_common.spread(results[ZERO]['steps_to_target'])}, p = {p_steps:.1e}",
            ],
        ],
    )
    report.text(
        "The logit formula under softmax",
        f"log(p/(1-p)) as a softmax bias predicts {' '.join(f'{v:.4f}' for v in logit_p)} "
        f"instead of {' '.join(f'{v:.4f}' for v in prop)}: the two frequent classes get "
        f"{logit_p[3]:.4f} each instead of {prop[3]:.4f}, the rare ones "
        f"{logit_p[1]:.4f} instead of {prop[1]:.4f}; its initial loss is "
        f"{_common.spread(results[LOGIT]['initial_loss'])} vs "
        f"{_common.spread(results[PRIOR]['initial_loss'])} for log p (the entropy, "
        f"{entropy:.4f}).",
    )

    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    t = np.arange(smooth.shape[-1]) + WINDOW
    for i, label in enumerate(variants):
        cl = smooth[i]
        c = plt.get_cmap("tab10")(i)
        lo, hi = np.quantile(cl, [0.05, 0.95], axis=0)
        ax.fill_between(t, lo, hi, color=c, alpha=0.25, lw=0)
        ax.plot(t, cl.mean(axis=0), color=c, label=label)
        ax.scatter([0], [init_loss[i].mean()], color=c, s=12)
    ax.axhline(entropy, color="grey", ls=":", lw=1, label="entropy of class prior")
    ax.axhline(target, color="black", ls="--", lw=0.8, label=f"target {target}")
    ax.axvline(per_epoch, color="grey", lw=0.6)
    ax.set_xlabel("step (vertical line: end of epoch 1)")
    ax.set_ylabel(f"training loss (mean of last {WINDOW} minibatches)")
    ax.set_yscale("log")
    ax.set_title(f"imbalanced {data.label} {counts}; band: 5-95% of {S} seeds", fontsize=9)
    ax.legend(fontsize=7)
    report.figure(fig, "loss")

    report.held = all(checks.values())
    report.verdict = (
        f"initial mean softmax = p to {worst:.1e}; first-epoch loss "
        f"{_common.spread(results[PRIOR]['first_epoch_loss'])} vs "
        f"{_common.spread(results[ZERO]['first_epoch_loss'])} (zero bias); steps to loss "
        f"{target}: {_common.spread(results[PRIOR]['steps_to_target'])} vs "
        f"{_common.spread(results[ZERO]['steps_to_target'])} (saves "
        f"{_common.spread(saved)} steps per seed)."
        + ("" if report.held else " Failed: " + "; ".join(k for k, v in checks.items() if not v))
    )
    report.summary = {
        "counts": counts,
        "epochs": epochs,
        "proportions": prop,
        "steps": steps,
        "target": target,
        "checks": checks,
        "initial": init_summary,
        "training": results,
        "p_first_epoch": p_first,
        "p_steps": p_steps,
        "steps_saved": _common.spread(saved),
        "logit_formula_softmax": logit_p,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
