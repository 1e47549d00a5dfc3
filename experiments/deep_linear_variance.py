"""Claim 1: through a 50-layer stack of 784-wide Dense layers on N(0, 1) inputs, standard-normal
weights make the variance ~fan_in (784) after layer 1 and overflow to inf/NaN within a few layers;
1/sqrt(fan_in) weights keep it near 1 after 50 layers; with ReLU, 1/sqrt(fan_in) makes it vanish
and sqrt(2/fan_in) (He) keeps it stable.

Every seed initializes the bias-free chain afresh; ``jaxinit.layer_stats`` runs all seeds in one
jitted ``vmap`` and records each Dense output's std (the pre-activation); ``jaxinit.predict``
gives the mean-field variance beside it. Checks, on the seeds: standard normal: the mean over
seeds of the layer-1 variance is 784 E[x^2] (within 5 standard errors); on every seed the
variance is inf/NaN by the layer where 784^l E[x^2] passes float32's largest number (14), and
the activations themselves (seen as a non-finite layer mean) by the layer where 28^l passes it
(27). The three other inits: the mean over seeds of the layer-50 variance equals the mean-field
value (E[x^2], 2^-49 E[x^2], 2 E[x^2]; for Gaussian weights these are exact expectations at any
width) within 5 standard errors.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import _common
import jax
import jax.numpy as jnp
import numpy as np

import jaxinit
from jaxinit import meanfield

NAME = "deep_linear_variance"
WIDTH = 784
F32_MAX = float(np.finfo(np.float32).max)


def configs() -> dict[str, tuple[str, jaxinit.Initializer, float]]:
    """Label -> (activation, initializer, sigma_w = sqrt(fan_in Var(w)) from its variance law)."""
    inits = {
        "linear, N(0, 1)": ("linear", jaxinit.normal(1.0)),
        "linear, N(0, 1/fan_in)": ("linear", jaxinit.lecun_normal()),
        "ReLU, N(0, 1/fan_in)": ("relu", jaxinit.lecun_normal()),
        "ReLU, He N(0, 2/fan_in)": ("relu", jaxinit.he_normal()),
    }
    return {
        label: (act, init, meanfield.sigma_w(init, WIDTH, WIDTH))
        for label, (act, init) in inits.items()
    }


ACTS = {"linear": lambda x: x, "relu": jax.nn.relu}


def main(argv: Sequence[str] | None = None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], seeds=50, quick_seeds=8)
    p.add_argument("--depth", type=int, default=50, help="number of layers (50)")
    p.add_argument("--batch", type=int, default=None, help="input vectors (16; 8 with --quick)")
    args = _common.parse(p, argv)
    depth = args.depth
    batch = args.batch or (8 if args.quick else 16)
    if not 2 <= depth <= 200:
        p.error(f"--depth {depth} must be in [2, 200]")
    if batch < 1:
        p.error("--batch must be >= 1")
    report = _common.Report(
        NAME,
        "Variance through a 50-layer, 784-wide stack",
        "Standard-normal weights: variance ~784 after layer 1, inf/NaN within a few layers; "
        "1/sqrt(fan_in): ~1 after 50 linear layers; with ReLU, 1/sqrt(fan_in) vanishes and He "
        "(sqrt(2/fan_in)) stays stable.",
        "He et al. 2015, 'Delving deep into rectifiers' (Sec. 2.2, variance propagation); the "
        "deep-stack demonstration of the fast.ai course and of Dellinger 2019, 'Weight "
        "initialization in neural networks: a journey from the basics to Kaiming'",
        args,
    )
    x = jax.random.normal(jax.random.key(1), (batch, WIDTH))
    input_var = float(jnp.mean(x**2))
    layers = np.arange(1, depth + 1)
    results, means, summary = {}, {}, {}
    for label, (act, init, sigma_w) in configs().items():
        model = _common.chain(depth, WIDTH, ACTS[act], init)
        st = jaxinit.layer_stats(
            model, x, seeds=args.seeds, key=7, grads=False, mesh=_common.seed_mesh()
        )
        with np.errstate(over="ignore", invalid="ignore"):
            var = np.asarray(st.std, np.float64) ** 2  # (seeds, depth)
        pred = jaxinit.predict(act, depth, sigma_w=sigma_w, input_var=input_var).q
        results[label] = (var, pred)
        means[label] = np.asarray(st.mean, np.float64)

    rows = []
    show = sorted({layer for layer in (1, 2, 5, 10, 20, depth) if layer <= depth})
    for label, (var, pred) in results.items():
        finite = np.isfinite(var)
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
        summary[label] = {
            "median_var": [
                float(np.median(var[:, i])) if finite[:, i].all() else "non-finite"
                for i in range(depth)
            ],
            "predicted_var": pred,
        }
    report.table(
        f"Variance of each layer's Dense output, median [2.5%, 97.5%] over {args.seeds} seeds "
        f"(batch {batch} of N(0, 1) inputs, E[x^2] = {input_var:.4f})",
        ["init", *[f"layer {layer}" for layer in show], f"predicted {depth}"],
        rows,
    )

    # The checks.
    var_n, pred_n = results["linear, N(0, 1)"]
    mean_n = means["linear, N(0, 1)"]
    v1 = var_n[:, 0]
    l1_ok = abs(v1.mean() - pred_n[0]) <= 5 * v1.std(ddof=1) / math.sqrt(v1.size)

    def first_bad(a):
        bad = ~np.isfinite(a)
        return np.where(bad.any(axis=1), bad.argmax(axis=1) + 1, depth + 1)

    # Mean-field layers where the variance (784^l E[x^2]) and the activations themselves
    # (28^l sqrt(E[x^2])) pass float32's largest number.
    var_limit = math.ceil(math.log(F32_MAX / input_var) / math.log(WIDTH))
    act_limit = math.ceil(math.log(F32_MAX / math.sqrt(input_var)) / math.log(math.sqrt(WIDTH)))
    bad_var, bad_act = first_bad(var_n), first_bad(mean_n)
    # Checked only as far as the stack reaches (a shallower --depth skips them).
    overflow = {}
    if depth >= var_limit:
        overflow[f"N(0,1): every seed's variance inf/NaN by layer {var_limit}"] = (
            bool(np.all(bad_var <= var_limit)),
            f"first inf/NaN variance at layer {int(bad_var.min())}-{int(bad_var.max())}",
        )
    if depth >= act_limit:
        overflow[f"N(0,1): every seed's activations inf/NaN by layer {act_limit}"] = (
            bool(np.all(bad_act <= act_limit)),
            f"first non-finite layer mean at layer {int(bad_act.min())}-{int(bad_act.max())}",
        )

    def mean_ok(label):
        var, pred = results[label]
        v = var[:, -1]
        se = v.std(ddof=1) / math.sqrt(v.size)
        return bool(np.isfinite(v).all() and abs(v.mean() - pred[-1]) <= 5 * se), v, pred[-1]

    lin_ok, v_lin, p_lin = mean_ok("linear, N(0, 1/fan_in)")
    relu_ok, v_relu, p_relu = mean_ok("ReLU, N(0, 1/fan_in)")
    he_ok, v_he, p_he = mean_ok("ReLU, He N(0, 2/fan_in)")
    checks = {
        "N(0,1): mean layer-1 variance = 784 E[x^2] (5 SE)": bool(l1_ok),
        **{k: v for k, (v, _) in overflow.items()},
        f"linear, 1/sqrt(fan_in): mean layer-{depth} variance = E[x^2] (5 SE)": lin_ok,
        f"ReLU, 1/sqrt(fan_in): mean layer-{depth} variance = 2^-{depth - 1} E[x^2] (5 SE)": (
            relu_ok
        ),
        f"ReLU, He: mean layer-{depth} variance = 2 E[x^2] (5 SE)": he_ok,
    }
    numbers = [
        f"{_common.spread(v1)} vs {pred_n[0]:.1f}",
        *[n for _, n in overflow.values()],
        f"{_common.spread(v_lin)} vs {p_lin:.4f}",
        f"{_common.spread(v_relu)} vs {p_relu:.3g}",
        f"{_common.spread(v_he)} vs {p_he:.4f}",
    ]
    report.table(
        f"The claim, over {args.seeds} seeds (mean ± std)",
        ["check", "held", "numbers"],
        [[k, v, n] for (k, v), n in zip(checks.items(), numbers, strict=True)],
    )

    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, (var, pred)) in enumerate(results.items()):
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

    report.held = all(checks.values())
    report.verdict = (
        f"N(0, 1): layer-1 variance {_common.spread(v1)} (784 E[x^2] = {pred_n[0]:.1f}); "
        + "".join(f"{n}; " for _, n in overflow.values())
        + f"layer-{depth} variance: 1/sqrt(fan_in) "
        f"linear {_common.spread(v_lin)} (want {p_lin:.3f}); ReLU 1/sqrt(fan_in) "
        f"{_common.spread(v_relu)} (want {p_relu:.2g}); He {_common.spread(v_he)} (want "
        f"{p_he:.3f})."
        + ("" if report.held else " Failed: " + "; ".join(k for k, v in checks.items() if not v))
    )
    report.summary = {
        "depth": depth,
        "batch": batch,
        "input_var": input_var,
        "checks": checks,
        "first_nonfinite_variance_layer": bad_var,
        "first_nonfinite_activation_layer": bad_act,
        "variance_limit_layer": var_limit,
        "activation_limit_layer": act_limit,
        **summary,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
