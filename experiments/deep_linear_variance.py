"""Claim 1: through a 50-layer stack of 784-wide Dense layers on N(0, 1) inputs, standard-normal
weights make the variance ~fan_in (784) after layer 1 and overflow to inf/NaN within a few layers;
1/sqrt(fan_in) weights keep it near 1 after 50 layers; with ReLU, 1/sqrt(fan_in) makes it vanish
and sqrt(2/fan_in) (He) keeps it stable.

Every seed initializes the chain afresh (``jaxinit.models.MLP(scan=True)``: Dense + activation
layers with zero biases, layers 2-50 one ``nn.scan``); ``jaxinit.layer_stats`` runs all seeds in
one jitted ``vmap`` and records each Dense output's std (the pre-activation); ``jaxinit.predict``
gives the mean-field variance beside it, with sigma_w from each initializer's variance law.
Checks, on the seeds: standard normal: the mean over seeds of the layer-1 variance is 784 E[x^2]
(within 5 standard errors); on every seed the variance is inf/NaN by the layer where
784^l E[x^2] passes float32's largest number (14), and the activations themselves (seen as a
non-finite layer mean) by the layer where 28^l passes it (27). The three other inits: the mean
over seeds of the layer-50 variance equals the mean-field value (E[x^2], 2^-49 E[x^2],
2 E[x^2]; for Gaussian weights these are exact expectations at any width) within 5 standard
errors.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import _common
import _train
import jax
import jax.numpy as jnp
import numpy as np

import jaxinit
from jaxinit import meanfield, models

NAME = "deep_linear_variance"
TITLE = "Variance through a 50-layer, 784-wide stack"
CLAIM = (
    "Standard-normal weights: variance ~784 after layer 1, inf/NaN within a few layers; "
    "1/sqrt(fan_in): ~1 after 50 linear layers; with ReLU, 1/sqrt(fan_in) vanishes and He "
    "(sqrt(2/fan_in)) stays stable."
)
SOURCE = (
    "He et al. 2015, 'Delving deep into rectifiers' (Sec. 2.2, variance propagation); the "
    "deep-stack demonstration of the fast.ai course and of Dellinger 2019, 'Weight "
    "initialization in neural networks: a journey from the basics to Kaiming'"
)
WIDTH = 784
F32_MAX = float(np.finfo(np.float32).max)
NORMAL, LINEAR, RELU, HE = (
    "linear, N(0, 1)",
    "linear, N(0, 1/fan_in)",
    "ReLU, N(0, 1/fan_in)",
    "ReLU, He N(0, 2/fan_in)",
)


def configs() -> dict[str, tuple[str, jaxinit.Initializer, float]]:
    """Label -> (activation, initializer, sigma_w = sqrt(fan_in Var(w)) from its variance law)."""
    inits = {
        NORMAL: ("linear", jaxinit.normal(1.0)),
        LINEAR: ("linear", jaxinit.lecun_normal()),
        RELU: ("relu", jaxinit.lecun_normal()),
        HE: ("relu", jaxinit.he_normal()),
    }
    return {
        label: (act, init, meanfield.sigma_w(init, WIDTH, WIDTH))
        for label, (act, init) in inits.items()
    }


ACTS = {"linear": lambda x: x, "relu": jax.nn.relu}


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _common.parser(__doc__.splitlines()[0], seeds=50, quick_seeds=8)
    p.add_argument("--depth", type=int, default=50, help="number of layers (50)")
    p.add_argument("--batch", type=int, default=None, help="input vectors (16; 8 with --quick)")
    args = _common.parse(p, argv)
    args.batch = args.batch or (8 if args.quick else 16)
    if not 2 <= args.depth <= 200:
        p.error(f"--depth {args.depth} must be in [2, 200]")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def measure(act, init, sigma_w, x, args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-seed variance and mean of each Dense output (seeds, depth), and the mean-field
    variance (depth,)."""
    model = models.MLP(args.depth, WIDTH, ACTS[act], init, scan=True)
    st = jaxinit.layer_stats(
        model, x, seeds=args.seeds, key=7, grads=False, mesh=_train.seed_mesh()
    )
    with np.errstate(over="ignore", invalid="ignore"):
        var = np.asarray(st.std, np.float64) ** 2
    pred = jaxinit.predict(act, args.depth, sigma_w=sigma_w, input_var=float(jnp.mean(x**2))).q
    return var, np.asarray(st.mean, np.float64), pred


def variance_table(report, results, args, input_var) -> dict:
    """Median and 95% range of the variance at a few layers, per init; the summary's curves."""
    rows, summary = [], {}
    show = sorted({layer for layer in (1, 2, 5, 10, 20, args.depth) if layer <= args.depth})
    for label, (var, _, pred) in results.items():
        cells = []
        for layer in show:
            v = var[:, layer - 1]
            ok = np.isfinite(v)
            if not ok.any():
                cells.append("inf/nan (all seeds)")
                continue
            lo, hi = np.quantile(v[ok], [0.025, 0.975])
            tail = "" if ok.all() else f" ({int((~ok).sum())} inf/nan)"
            cells.append(f"{_common.fmt(np.median(v[ok]), 3)} [{lo:.3g}, {hi:.3g}]{tail}")
        rows.append([label, *cells, f"{pred[-1]:.3g}"])
        finite = np.isfinite(var).all(axis=0)
        summary[label] = {
            "median_var": [
                float(np.median(var[:, i])) if finite[i] else "non-finite"
                for i in range(args.depth)
            ],
            "predicted_var": pred,
        }
    report.table(
        f"Variance of each layer's Dense output, median [2.5%, 97.5%] over {args.seeds} seeds "
        f"(batch {args.batch} of N(0, 1) inputs, E[x^2] = {input_var:.4f})",
        ["init", *[f"layer {layer}" for layer in show], f"predicted {args.depth}"],
        rows,
    )
    return summary


def first_bad(a: np.ndarray) -> np.ndarray:
    """Per seed, the first layer (1-based) whose value is inf/NaN; depth + 1 when none."""
    bad = ~np.isfinite(a)
    return np.where(bad.any(axis=1), bad.argmax(axis=1) + 1, a.shape[1] + 1)


def overflow(var, mean, input_var) -> tuple[dict[str, tuple[bool, str]], dict]:
    """The N(0, 1) overflow checks, as far as the stack reaches, and the layers behind them:
    the mean-field layers where the variance (784^l E[x^2]) and the activations themselves
    (28^l sqrt(E[x^2])) pass float32's largest number."""
    depth = var.shape[1]
    var_limit = math.ceil(math.log(F32_MAX / input_var) / math.log(WIDTH))
    act_limit = math.ceil(math.log(F32_MAX / math.sqrt(input_var)) / math.log(math.sqrt(WIDTH)))
    bad_var, bad_act = first_bad(var), first_bad(mean)
    checks = {}
    if depth >= var_limit:
        checks[f"N(0,1): every seed's variance inf/NaN by layer {var_limit}"] = (
            bool(np.all(bad_var <= var_limit)),
            f"first inf/NaN variance at layer {int(bad_var.min())}-{int(bad_var.max())}",
        )
    if depth >= act_limit:
        checks[f"N(0,1): every seed's activations inf/NaN by layer {act_limit}"] = (
            bool(np.all(bad_act <= act_limit)),
            f"first non-finite layer mean at layer {int(bad_act.min())}-{int(bad_act.max())}",
        )
    return checks, {
        "first_nonfinite_variance_layer": bad_var,
        "first_nonfinite_activation_layer": bad_act,
        "variance_limit_layer": var_limit,
        "activation_limit_layer": act_limit,
    }


def mean_check(var: np.ndarray, want: float) -> tuple[bool, _common.Spread]:
    """Whether the mean over seeds of ``var`` is ``want`` within 5 standard errors."""
    se = var.std(ddof=1) / math.sqrt(var.size)
    return bool(np.isfinite(var).all() and abs(var.mean() - want) <= 5 * se), _common.spread(var)


def figure(report, results, args) -> None:
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    layers = np.arange(1, args.depth + 1)
    for i, (label, (var, _, pred)) in enumerate(results.items()):
        c = plt.get_cmap("tab10")(i)
        ok = np.isfinite(var).all(axis=0)  # layers finite on every seed
        lo, med, hi = np.quantile(var[:, ok], [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(layers[ok], lo, hi, color=c, alpha=0.25, lw=0)
        ax.plot(layers[ok], med, "-", color=c, label=f"{label} (measured)")
        ax.plot(layers, pred, ":", color=c, lw=1.5)
        if not ok.all():
            ax.axvline(layers[~ok][0], color=c, lw=0.8, ls="--")
    ax.axhline(F32_MAX, color="grey", lw=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("layer (dashed vertical: first layer with inf/NaN on some seed)")
    ax.set_ylabel("variance of Dense output")
    ax.set_title(
        f"median and 5-95% of {args.seeds} seeds; dotted: mean-field prediction", fontsize=9
    )
    ax.legend(fontsize=7)
    report.figure(fig, "variance")


def main(argv: Sequence[str] | None = None) -> dict:
    args = arguments(argv)
    depth = args.depth
    report = _common.Report(NAME, TITLE, CLAIM, SOURCE, args)
    x = jax.random.normal(jax.random.key(1), (args.batch, WIDTH))
    input_var = float(jnp.mean(x**2))
    results = {label: measure(*config, x, args) for label, config in configs().items()}
    summary = variance_table(report, results, args, input_var)

    var_n, mean_n, pred_n = results[NORMAL]
    v1 = var_n[:, 0]
    l1_ok = abs(v1.mean() - pred_n[0]) <= 5 * v1.std(ddof=1) / math.sqrt(v1.size)
    overflows, limits = overflow(var_n, mean_n, input_var)
    (lin_ok, lin), (relu_ok, relu), (he_ok, he) = (
        mean_check(results[k][0][:, -1], results[k][2][-1]) for k in (LINEAR, RELU, HE)
    )
    p_lin, p_relu, p_he = (results[k][2][-1] for k in (LINEAR, RELU, HE))
    checks = report.checks(
        {
            "N(0,1): mean layer-1 variance = 784 E[x^2] (5 SE)": (
                bool(l1_ok),
                f"{_common.spread(v1)} vs {pred_n[0]:.1f}",
            ),
            **overflows,
            f"linear, 1/sqrt(fan_in): mean layer-{depth} variance = E[x^2] (5 SE)": (
                lin_ok,
                f"{lin} vs {p_lin:.4f}",
            ),
            f"ReLU, 1/sqrt(fan_in): mean layer-{depth} variance = 2^-{depth - 1} E[x^2] (5 SE)": (
                relu_ok,
                f"{relu} vs {p_relu:.3g}",
            ),
            f"ReLU, He: mean layer-{depth} variance = 2 E[x^2] (5 SE)": (
                he_ok,
                f"{he} vs {p_he:.4f}",
            ),
        },
        heading=f"The claim, over {args.seeds} seeds (mean ± std)",
    )
    figure(report, results, args)

    report.verdict = (
        f"N(0, 1): layer-1 variance {_common.spread(v1)} (784 E[x^2] = {pred_n[0]:.1f}); "
        + "".join(f"{n}; " for _, n in overflows.values())
        + f"layer-{depth} variance: 1/sqrt(fan_in) linear {lin} (want {p_lin:.3f}); ReLU "
        f"1/sqrt(fan_in) {relu} (want {p_relu:.2g}); He {he} (want {p_he:.3f})."
        + report.failed(checks)
    )
    report.summary = {
        "depth": depth,
        "batch": args.batch,
        "input_var": input_var,
        "checks": checks,
        **limits,
        **summary,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
