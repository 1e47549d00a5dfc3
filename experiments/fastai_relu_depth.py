"""Claim 2: 50 ReLU layers of width 512 with He init, per-layer mean and std of the activations
over many seeds, against the single-run figures quoted in the fastai article (layer 1: mean 0.64,
std 0.87; after 50 layers: mean 0.27, std 0.464): do those lie inside the seed interval?

As in the article's single run, every seed draws its own input vector ``x ~ N(0, I_512)`` and its
own weights ``N(0, 2/512)`` (biases zero), and the statistics are the mean and standard deviation
over the 512 units of each layer's ReLU output. The layers are ``jaxinit.models.MLP(scan=True)``;
``jaxinit.layer_stats`` runs all seeds in one jitted ``vmap`` (the input is a parameter of the
model, so each seed's init key draws it) and takes the ReLU output's statistics from each Dense
output (``stats=``); ``jaxinit.predict`` gives the mean-field values (0.564 and 0.826 at every
layer, sigma_w from ``he_normal``'s variance law). The seed
interval is the central 95% of the per-seed values. A quoted figure's percentile p among the
seeds is estimated from the fraction of seeds below it, with an exact (Clopper-Pearson) 99%
confidence interval for the number of seeds run; the figure lies "inside" unless that whole
interval is outside [2.5%, 97.5%] (the seeds show it outside), and is "at the edge" when the
interval straddles a bound (the seeds cannot place it; more seeds narrow it).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import _common
import _train
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxinit
from jaxinit import meanfield, models

NAME = "fastai_relu_depth"
TITLE = "50 ReLU layers with He init: per-layer mean and std over seeds"
CLAIM = (
    "With He init, 50 ReLU layers of width 512 keep the activations' scale; the fastai "
    "article's single run quotes layer 1: mean 0.64, std 0.87, and after 50 layers: "
    "mean 0.27, std 0.464. Do those lie inside the interval of the per-seed values?"
)
SOURCE = (
    "fast.ai, the weight-initialization article (x = randn(512), "
    "50 x relu(a @ x) with a = randn(512, 512) * sqrt(2 / 512)); He et al. 2015"
)
WIDTH = 512
QUOTED = {1: (0.64, 0.87), 50: (0.27, 0.464)}  # layer: (mean, std) of the article's single run
HE = jaxinit.he_normal()


class RandomInputChain(nn.Module):
    """Draws its input ``N(0, I_width)`` as a parameter (so each init key has its own input),
    then ``jaxinit.models.MLP(scan=True)``: ``depth`` blocks ``relu(Dense(width)(x))``, He
    init, zero biases."""

    depth: int
    width: int

    @nn.compact
    def __call__(self, dummy):
        x = self.param("input", jaxinit.normal(1.0), (1, self.width))
        x = x + jnp.zeros_like(dummy[:1, :1])  # depend on the (ignored) batch for shapes
        return models.MLP(self.depth, self.width, nn.relu, HE, scan=True)(x)


# The statistics of each block's output, relu(h), from its Dense output h (what layer_stats
# observes): the mean and the (population) std over the units.
POST_RELU = {
    "post_mean": lambda h: jax.nn.relu(h).mean(),
    "post_std": lambda h: jax.nn.relu(h).std(),
}


def _place(values: np.ndarray, quoted: float, level: float = 0.95, confidence: float = 0.99):
    """Where ``quoted`` falls among the per-seed ``values``: its percentile, an exact
    ``confidence`` interval for it, and whether the seeds place it inside the central
    ``level`` range (not significantly outside) or at its edge (the interval straddles it)."""
    from scipy import stats

    n, k = values.size, int((values < quoted).sum())
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    lo_edge, hi_edge = (1 - level) / 2, (1 + level) / 2
    outside = ci.high < lo_edge or ci.low > hi_edge
    edge = not outside and (ci.low < lo_edge or ci.high > hi_edge)
    verdict = "OUTSIDE" if outside else ("inside, at the edge" if edge else "inside")
    return {
        "inside": not outside,
        "edge": edge,
        "percentile": 100 * k / n,
        "ci": (100 * ci.low, 100 * ci.high),
        "text": f"{verdict}, {100 * k / n:.1f}th pct [{100 * ci.low:.1f}, {100 * ci.high:.1f}]",
    }


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _common.parser(__doc__.splitlines()[0], seeds=1000, quick_seeds=100)
    p.add_argument("--depth", type=int, default=50, help="number of ReLU layers (50)")
    args = _common.parse(p, argv)
    if args.depth < 2:
        p.error("--depth must be >= 2")
    return args


def measure(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed mean and std over the units of each block's ReLU output, (seeds, depth)."""
    st = jaxinit.layer_stats(
        RandomInputChain(args.depth, WIDTH),
        jnp.zeros((1, WIDTH)),
        seeds=args.seeds,
        key=2,
        grads=False,
        stats=POST_RELU,
        mesh=_train.seed_mesh(),
    )
    if len(st.names) != args.depth:
        raise RuntimeError(f"expected {args.depth} observed layers, got {st.names}")
    mean = np.asarray(st.stats["post_mean"], np.float64)
    std = np.asarray(st.stats["post_std"], np.float64) * math.sqrt(WIDTH / (WIDTH - 1))
    return mean, std  # std as torch's x.std() (n - 1)


def layer_table(report, mean, std, pred, args) -> tuple[dict, dict, dict]:
    """The table of a few layers against the quoted figures; returns which quoted figures
    lie inside, their placements, and the summary of the shown layers."""
    rows, inside, placed, summary = [], {}, {}, {}
    show = sorted({layer for layer in (1, 2, 5, 10, 20, 30, 40, 50, args.depth)})
    for layer in (layer for layer in show if layer <= args.depth):
        m, s = mean[:, layer - 1], std[:, layer - 1]
        mi, si = _common.seed_interval(m), _common.seed_interval(s)
        row = [
            layer,
            f"{m.mean():.3f} [{mi[0]:.3f}, {mi[1]:.3f}]",
            f"{s.mean():.3f} [{si[0]:.3f}, {si[1]:.3f}]",
            f"{pred.post_mean[layer - 1]:.3f} / {pred.post_std[layer - 1]:.3f}",
            "",
        ]
        if layer in QUOTED:
            qm, qs = QUOTED[layer]
            place_m, place_s = _place(m, qm), _place(s, qs)
            inside[layer] = {"mean": place_m["inside"], "std": place_s["inside"]}
            placed[layer] = {"mean": place_m, "std": place_s}
            row[-1] = f"mean {qm} ({place_m['text']}), std {qs} ({place_s['text']})"
        rows.append(row)
        summary[f"layer_{layer}"] = {
            "mean": _common.spread(m),
            "mean_interval": mi,
            "std": _common.spread(s),
            "std_interval": si,
        }
    report.table(
        f"Post-ReLU mean and std over the 512 units, mean over {args.seeds} seeds [central 95% "
        "of seeds]",
        ["layer", "mean", "std", "mean-field mean / std", "fastai's single run"],
        rows,
    )
    return inside, placed, summary


def figure(report, mean, std, pred, args) -> None:
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    layers = np.arange(1, args.depth + 1)
    for ax, vals, mf, what in (
        (axes[0], mean, pred.post_mean, "mean"),
        (axes[1], std, pred.post_std, "std"),
    ):
        lo, med, hi = np.quantile(vals, [0.025, 0.5, 0.975], axis=0)
        lo2, hi2 = np.quantile(vals, [0.25, 0.75], axis=0)
        ax.fill_between(layers, lo, hi, alpha=0.2, lw=0, label="central 95% of seeds")
        ax.fill_between(layers, lo2, hi2, alpha=0.35, lw=0, label="central 50%")
        ax.plot(layers, med, label="median")
        ax.plot(layers, mf, "k:", label="mean field")
        for layer, q in QUOTED.items():
            if layer <= args.depth:
                ax.plot([layer], [q[0 if what == "mean" else 1]], "r*", ms=10)
        ax.set_xlabel("layer")
        ax.set_title(f"post-ReLU {what} over units ({args.seeds} seeds); red: fastai", fontsize=9)
    axes[0].legend(fontsize=7)
    report.figure(fig, "mean_std")


def main(argv: Sequence[str] | None = None) -> dict:
    args = arguments(argv)
    report = _common.Report(NAME, TITLE, CLAIM, SOURCE, args)
    mean, std = measure(args)
    sigma_w = meanfield.sigma_w(HE, WIDTH, WIDTH)
    pred = jaxinit.predict("relu", args.depth, sigma_w=sigma_w, input_var=1.0)
    inside, placed, summary = layer_table(report, mean, std, pred, args)
    figure(report, mean, std, pred, args)

    report.held = bool(inside) and all(v for d in inside.values() for v in d.values())
    edges = [
        f"layer {layer} {what}"
        for layer, d in placed.items()
        for what, pl in d.items()
        if pl["edge"]
    ]
    report.verdict = (
        (
            "no quoted figure is outside the central 95% of the per-seed "
            if report.held
            else "the seeds place some quoted figure outside the central 95% of the per-seed "
        )
        + f"values (99% intervals for their percentiles, {args.seeds} seeds): "
        + "; ".join(
            f"layer {layer}: mean {'in' if d['mean'] else 'OUT'}, std {'in' if d['std'] else 'OUT'}"
            for layer, d in inside.items()
        )
        + (f" (at the edge: {', '.join(edges)})" if edges else "")
        + f". Mean field: {pred.post_mean[0]:.3f} / {pred.post_std[0]:.3f} at every layer; the "
        f"seed spread widens with depth (layer {args.depth} std: {_common.spread(std[:, -1])})."
    )
    report.summary = {
        "depth": args.depth,
        "quoted": QUOTED,
        "inside": inside,
        "placed": placed,
        **summary,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
