"""Issue-14 experiment (b): signal propagation plots of three ResNets at initialization.

Brock, De and Smith 2021 ("Characterizing signal propagation to close the performance gap in
unnormalized ResNets", https://arxiv.org/abs/2101.08692, Fig. 1; timm's ``extract_spp_stats``)
plot, per residual block at initialization, the average squared channel mean, the average
channel variance and the residual branch's variance of a batch of real images. In a
pre-activation BatchNorm ResNet the skip path's variance grows about like ``l + 1`` (De and
Smith 2020: BatchNorm makes every branch add the same variance); in their normalizer-free
ResNet ``x_{l+1} = x_l + alpha f(x_l / beta_l)`` it grows as ``1 + l alpha^2``; in a ResNet
without BatchNorm and with He-initialized branches ``x + f(x)`` it explodes (about ``2^l``).

Set-up: ``--batch`` images of Fashion-MNIST's test set, average-pooled to 14x14 and standardized
over the batch (mean 0, mean square 1); one stage of ``--blocks`` residual blocks of
``--width`` channels, every convolution 3x3 with circular padding and no bias (so every
position sees a whole patch and the mean-field maps apply without a border correction), a
3x3 stem with LeCun-normal weights (``jaxinit.lecun_normal()``: the stem's output keeps the
input's mean square 1), block branches with He-normal weights (``jaxinit.he_normal()``).
The three networks (linen, written here: ``jaxinit.models.ResNet``'s blocks are
post-activation), block ``l = 0 .. L-1`` with input ``x_l``:

- ``BN-ResNet``: ``x_{l+1} = x_l + conv2(relu(BN(conv1(relu(BN(x_l))))))``, BatchNorm with
  the batch's statistics (training mode, Flax's epsilon 1e-5);
- ``NF-ResNet``: ``x_{l+1} = x_l + alpha conv2(relu(conv1(relu(x_l / beta_l))))``, ``alpha``
  = ``--alpha`` (0.2), ``beta_l`` the expected standard deviation of ``x_l``:
  ``beta_0 = 1``, ``beta_l^2 = beta_{l-1}^2 + alpha^2``;
- ``He no-BN``: ``x_{l+1} = x_l + conv2(relu(conv1(relu(x_l))))``.

The branch ends in a ``Scale`` layer named ``branch`` (times ``alpha``, 1 outside the
NF-ResNet), so the measured branch is what the block adds. For ``--seeds`` seeds, one jitted
``jax.vmap`` over the seeds (``jax.lax.map`` over chunks of 16) per network runs
``jaxinit.diagnostics.spp`` (per block: the output's average squared channel mean and average
channel variance over the batch and the positions, the branch's and the skip path's average
channel variance).

Predicted: ``jaxinit.meanfield`` maps composed per block, traced with a two-input ``State``
(``q``, and the correlation ``c`` of two distinct elements of a channel: two images or two
positions). The stem is ``conv(1)`` on the batch's ``State(q=1, c=0)`` (the batch is
standardized: its element mean is 0); a block is ``residual(branch, alpha)`` with the branch
``batch_norm(B), relu, conv(sqrt 2), batch_norm(B), relu, conv(sqrt 2)`` (``B`` = batch x
positions, the samples per channel), ``relu, conv(sqrt(2) / beta_l), relu, conv(sqrt 2)``
(``relu(x / beta) = relu(x) / beta``: the division moves into the first convolution's scale)
and ``relu, conv(sqrt 2), relu, conv(sqrt 2)``. What each predicted curve is:

- the mean-field ``q`` (the elements' second moment over inputs and initializations) is the
  measured ``channel_mean_sq + channel_var`` (the channel's mean square; exact in the wide
  limit for these pre-activation blocks);
- ``q c`` (the second moment shared by two distinct elements) is the predicted
  ``channel_mean_sq``, ``q (1 - c)`` the predicted ``channel_var``: the squared mean of a
  channel over ``B`` elements is the average of their ``B^2`` products, ``q c`` up to a
  ``1 / B`` share. The maps carry one ``c`` for every pair; real images have pairs of
  different correlations, whose average the ReLU C-map does not preserve, so these two are
  approximations where a ReLU meets correlated pairs (the He and NF networks); ``q`` is not;
- ``branch_var``: ``alpha^2 q_f (1 - c_f)`` of the branch map's output, ``skip_var``:
  ``q (1 - c)`` of the block's input.

Checks. The growth laws are about the expectation of the mean square ``q_l`` of block ``l``'s
input (``q_0``: the stem's output, measured per seed), so each is checked on the per-block
step whose expectation, given the block's input, the law fixes; each seed's mean step over
the blocks, and the 95% t-interval of their mean over seeds must lie within 15% of the closed
form (the precision 48 seeds give: the NF-ResNet's per-seed mean step has a relative spread
of about 30%, from the stem's 32 random projections of skewed images, which every block's
ReLU then sees, as ``x_l`` stays close to ``x_0``):

- BN-ResNet, the skip path grows like ``l + 1``: ``q_{l+1} - q_l = 1``;
- NF-ResNet, it grows like ``1 + l alpha^2``: ``(q_{l+1} - q_l) beta_l^2 / q_l = alpha^2``
  (``q_l = q_0 (1 + l alpha^2)``);
- He no-BN, it explodes as ``2^l``: ``q_{l+1} / q_l = 2``;
- for every network and block, the predicted ``q`` lies inside the measured central 95% seed
  band (empirical quantiles of the per-seed mean squares).

The predicted channel mean square and variance, branch and skip variances are reported beside
the measured ones (table, figure) with the fraction of blocks inside the band, not checked.
Reported too: the He network's typical growth (each seed's slope of ``log2 q``), below the
expected doubling at finite width.

``--quick`` runs 4 blocks of width 8 on 16 images and 2 seeds (digits where Fashion-MNIST is
absent): a smoke run, not the claim.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any, cast

import _common
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxinit
from jaxinit import diagnostics
from jaxinit import meanfield as mf
from jaxinit.plotting import spp_figure

NAME = "spp_resnet"
CLAIM = (
    "At initialization the skip path's variance of a pre-activation BN-ResNet grows like l + 1, "
    "that of an NF-ResNet (x + alpha f(x / beta)) like 1 + l alpha^2, and that of a "
    "He-initialized ResNet without BN explodes (about 2^l); the mean-field maps predict each "
    "curve (Brock, De and Smith 2021, Fig. 1; De and Smith 2020)."
)
SOURCE = "Brock, De and Smith 2021, arXiv 2101.08692 (Fig. 1); De and Smith 2020, arXiv 2002.10444"
KINDS = {"BN-ResNet": "bn", "NF-ResNet": "nf", "He no-BN": "he"}
TOLERANCE = 0.15  # relative, on the 95% t-interval of the mean per-block step
LEVEL = 0.95
BN_EPSILON = 1e-5  # Flax's BatchNorm default
CHUNK = 16  # seeds per vmapped step
FIELDS = ("q", "mean_sq", "var", "branch_var", "skip_var")  # per block, measured and predicted
Fields = dict[str, dict[str, np.ndarray]]  # network -> field -> values


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _common.parser((__doc__ or NAME).splitlines()[0], seeds=48, quick_seeds=2, data=True)
    p.add_argument("--blocks", type=int, default=None, help="residual blocks (24; 4)")
    p.add_argument("--width", type=int, default=None, help="channels (32; 8)")
    p.add_argument("--batch", type=int, default=None, help="images (64; 16)")
    p.add_argument("--alpha", type=float, default=0.2, help="NF-ResNet branch multiplier (0.2)")
    p.add_argument("--pool", type=int, choices=(1, 2, 4), default=None, help="image pooling")
    args = _common.parse(p, argv)
    args.blocks = args.blocks or (4 if args.quick else 24)
    args.width = args.width or (8 if args.quick else 32)
    args.batch = args.batch or (16 if args.quick else 64)
    if min(args.blocks, args.width) < 1 or args.batch < 2:
        p.error("--blocks and --width must be positive and --batch >= 2")
    if not (math.isfinite(args.alpha) and args.alpha > 0):
        p.error(f"--alpha {args.alpha} must be a positive number")
    return args


class Scale(nn.Module):
    """``factor * x``: the residual branch's multiplier as a layer of its own, so that
    :func:`jaxinit.diagnostics.spp` measures the scaled branch."""

    factor: float = 1.0

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.factor * x


def betas(blocks: int, alpha: float) -> tuple[float, ...]:
    """The NF-ResNet's ``beta_l``, ``l = 0 .. blocks-1``: ``beta_0 = 1``,
    ``beta_l^2 = beta_{l-1}^2 + alpha^2``."""
    return tuple(math.sqrt(1 + i * alpha * alpha) for i in range(blocks))


def _conv(width: int, name: str, init: Any) -> nn.Conv:
    return nn.Conv(width, (3, 3), padding="CIRCULAR", use_bias=False, kernel_init=init, name=name)


class Block(nn.Module):
    """A pre-activation residual block: ``kind`` ``"bn"`` (BatchNorm before each ReLU),
    ``"nf"`` (the input divided by ``beta``, the branch times ``alpha``) or ``"he"``."""

    width: int
    kind: str
    alpha: float = 1.0
    beta: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        he = jaxinit.he_normal()
        h = x / self.beta if self.kind == "nf" else x
        if self.kind == "bn":
            h = nn.BatchNorm(use_running_average=False, epsilon=BN_EPSILON, name="bn1")(h)
        h = _conv(self.width, "conv1", he)(nn.relu(h))
        if self.kind == "bn":
            h = nn.BatchNorm(use_running_average=False, epsilon=BN_EPSILON, name="bn2")(h)
        h = _conv(self.width, "conv2", he)(nn.relu(h))
        return x + Scale(self.alpha, name="branch")(h)


class SPPNet(nn.Module):
    """A LeCun-normal 3x3 stem and ``blocks`` :class:`Block` s of one ``kind``."""

    kind: str
    blocks: int
    width: int
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _conv(self.width, "stem", jaxinit.lecun_normal())(x)
        nf = self.kind == "nf"
        for i, beta in enumerate(betas(self.blocks, self.alpha)):
            h = Block(
                self.width,
                self.kind,
                alpha=self.alpha if nf else 1.0,
                beta=beta if nf else 1.0,
                name=f"block{i}",
            )(h)
        return h


def model_for(kind: str, args: argparse.Namespace) -> SPPNet:
    return SPPNet(kind, args.blocks, args.width, args.alpha if kind == "nf" else 1.0)


def block_maps(kind: str, args: argparse.Namespace, samples: int) -> list[mf.ResidualMap]:
    """The mean-field map of every block of ``kind`` (``samples``: BatchNorm's samples per
    channel, the batch times the positions)."""
    relu, he = mf.activation("relu"), math.sqrt(2.0)
    out = []
    for beta in betas(args.blocks, args.alpha):
        if kind == "bn":
            bn = mf.batch_norm(samples, BN_EPSILON)
            branch = mf.compose(bn, relu, mf.conv(he), bn, relu, mf.conv(he))
            out.append(mf.residual(branch))
        elif kind == "nf":
            branch = mf.compose(relu, mf.conv(he / beta), relu, mf.conv(he))
            out.append(mf.residual(branch, args.alpha))
        else:
            out.append(mf.residual(mf.compose(relu, mf.conv(he), relu, mf.conv(he))))
    return out


def _split(s: mf.State) -> tuple[float, float]:
    """``(q c, q (1 - c))`` of a two-input state: the predicted channel mean square and
    channel variance."""
    assert s.c is not None
    return s.q * s.c, s.q * (1 - s.c)


def predict(kind: str, args: argparse.Namespace, samples: int) -> dict[str, np.ndarray]:
    """Per block, the mean-field prediction of each :class:`jaxinit.diagnostics.SPP` field and
    of the output's mean square ``q``, from the standardized batch ``State(1, c=0)``."""
    state = mf.conv(1.0).apply(mf.State(1.0, c=0.0))  # the LeCun stem
    rows: dict[str, list[float]] = {k: [] for k in ("q", "mean_sq", "var", "branch_var")}
    rows["skip_var"] = []
    for block in block_maps(kind, args, samples):
        b = block.branch.apply(state)
        rows["skip_var"].append(_split(state)[1])
        rows["branch_var"].append(block.alpha**2 * _split(b)[1])
        state = block.apply(state)
        mean_sq, var = _split(state)
        rows["q"].append(state.q)
        rows["mean_sq"].append(mean_sq)
        rows["var"].append(var)
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["branch_over_skip"] = out["branch_var"] / out["skip_var"]
    return out


def batch_images(args: argparse.Namespace, data: _common.Data) -> jax.Array:
    """The first ``--batch`` test images, pooled, standardized over the batch."""
    x = data.test.x[: args.batch].astype(np.float64)
    x = _common.pool(args.pool)(x)
    x = (x - x.mean()) / np.sqrt(np.mean((x - x.mean()) ** 2))
    return jnp.asarray(x, jnp.float32)


def measure(
    kind: str, args: argparse.Namespace, x: jax.Array, keys: jax.Array
) -> tuple[diagnostics.SPP, dict[str, np.ndarray]]:
    """``jaxinit.diagnostics.spp`` of ``kind`` per seed (leading axis: seeds), and its fields
    in float64 with the output's mean square ``q`` and the stem output's ``q0`` per seed."""
    model = model_for(kind, args)

    stem = _conv(args.width, "stem", jaxinit.lecun_normal())

    def one(key):
        variables = model.init(key, x)
        h = cast(jax.Array, stem.apply({"params": variables["params"]["stem"]}, x))
        q0 = diagnostics.channel_mean_sq(h) + diagnostics.channel_var(h)
        return diagnostics.spp(model, variables, x, blocks="block*", branch="branch"), q0

    s, q0 = jax.jit(lambda k: jax.lax.map(one, k, batch_size=CHUNK))(keys)
    fields = {
        f: np.asarray(getattr(s, f), np.float64)
        for f in ("mean_sq", "var", "branch_var", "skip_var")
    }
    q = fields["mean_sq"] + fields["var"]
    return s, {**fields, "q": q, "q0": np.asarray(q0, np.float64)}


def slopes(y: np.ndarray) -> np.ndarray:
    """Each row's least-squares slope against the block index."""
    t = np.arange(y.shape[-1], dtype=np.float64)
    t = t - t.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ t / (t @ t)


def inside(pred: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Per block, whether ``pred`` is inside the central ``LEVEL`` band of the seeds."""
    lo, hi = np.quantile(measured, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    return (pred >= lo) & (pred <= hi)


def block_table(
    report: _common.Report, measured: Fields, predicted: Fields, args: argparse.Namespace
) -> None:
    """Measured (mean ± std over seeds) and predicted fields at four blocks per network."""
    shown = sorted({0, args.blocks // 4, args.blocks // 2, args.blocks - 1})
    rows = []
    for label in KINDS:
        m, p = measured[label], predicted[label]
        rows += [
            [label, i, *(f"{_common.spread(m[f][:, i])} ({_common.fmt(p[f][i])})" for f in FIELDS)]
            for i in shown
        ]
    report.table(
        f"Per block at init, measured mean ± std over {args.seeds} seeds (predicted): the "
        "output's mean square q = channel_mean_sq + channel_var, its two parts, the branch's "
        "and the skip path's channel variance",
        ["network", "block", "q", "channel mean²", "channel var", "branch var", "skip var"],
        rows,
    )


def growth_checks(
    measured: Fields, predicted: Fields, args: argparse.Namespace
) -> tuple[dict[str, tuple[bool, str]], dict[str, Any]]:
    """Each network's growth law, checked on the mean per-block step of ``q`` (95% CI within
    ``TOLERANCE`` of the closed form), and what was found per network."""
    beta2 = np.asarray(betas(args.blocks, args.alpha)) ** 2
    growth = {
        "BN-ResNet": (
            "q_{l+1} - q_l",
            1.0,
            "each block adds 1 to q (q_l = q_stem + l: the skip grows like l + 1)",
            lambda q, q_in: q - q_in,
        ),
        "NF-ResNet": (
            "(q_{l+1} - q_l) beta_l^2 / q_l",
            args.alpha**2,
            f"each block adds alpha^2 = {args.alpha**2:g} times q_l / beta_l^2 "
            "(q_l = q_stem (1 + l alpha^2))",
            lambda q, q_in: (q - q_in) * beta2 / q_in,
        ),
        "He no-BN": (
            "q_{l+1} / q_l",
            2.0,
            "each block doubles q (q_l = q_stem 2^l)",
            lambda q, q_in: q / q_in,
        ),
    }
    checks: dict[str, tuple[bool, str]] = {}
    found: dict[str, Any] = {}
    for label, (what, expect, text, step) in growth.items():
        m, p = measured[label], predicted[label]
        sp = _common.spread(
            step(m["q"], np.concatenate([m["q0"][:, None], m["q"][:, :-1]], axis=1)).mean(axis=1)
        )
        pred = float(step(p["q"][None], np.concatenate([[1.0], p["q"][:-1]])[None]).mean())
        ok = (1 - TOLERANCE) * expect <= sp.lo and sp.hi <= (1 + TOLERANCE) * expect
        checks[f"{label}: {text}; 95% CI of the mean {what} within {TOLERANCE:.0%}"] = (
            bool(ok),
            f"{sp.mean:.4g} (95% CI {sp.lo:.4g} .. {sp.hi:.4g}; mean-field {pred:.4g})",
        )
        found[label] = {"per_block": sp.as_dict(), "predicted": pred, "of": what}
    return checks, found


def band_checks(
    report: _common.Report, measured: Fields, predicted: Fields
) -> tuple[dict[str, tuple[bool, str]], dict[str, dict[str, float]]]:
    """Per network: whether the predicted ``q`` is inside the seed band at every block (the
    check), and the fraction of blocks inside it for every field (a table, not checked)."""
    checks: dict[str, tuple[bool, str]] = {}
    coverage: dict[str, dict[str, float]] = {}
    for label in KINDS:
        m, p = measured[label], predicted[label]
        coverage[label] = {f: float(inside(p[f], m[f]).mean()) for f in FIELDS}
        ok_q = inside(p["q"], m["q"])
        checks[f"{label}: predicted q inside the measured 95% seed band at every block"] = (
            bool(ok_q.all()),
            f"{int(ok_q.sum())}/{ok_q.size} blocks",
        )
    report.table(
        "Fraction of blocks where the prediction lies inside the measured central 95% seed band",
        ["network", "q", "channel mean²", "channel var", "branch var", "skip var"],
        [[label, *(f"{v:.2f}" for v in cov.values())] for label, cov in coverage.items()],
    )
    return checks, coverage


def he_growth_text(report: _common.Report, q: np.ndarray) -> _common.Spread:
    """The He network's typical growth per block (each seed's slope of ``log2 q``) against the
    expected doubling, as text; returns the slopes' spread."""
    log_growth = _common.spread(slopes(np.log2(q)))
    report.text(
        "He no-BN: typical against expected growth",
        f"The mean-field doubling is of the expectation of q. Each seed's least-squares slope "
        f"of log2 q over the blocks, {log_growth} (95% CI {log_growth.lo:.3g} .. "
        f"{log_growth.hi:.3g}), is a typical growth of {2**log_growth.mean:.3g} per block. "
        "At finite width the per-block ratios fluctuate, and E[log ratio] < log E[ratio] "
        "puts the typical growth below the expected doubling"
        + (
            "; the interval is below 1 here."
            if log_growth.hi < 1
            else "; this run's interval does not resolve it."
        ),
    )
    return log_growth


def main(argv: Sequence[str] | None = None) -> dict:
    args = arguments(argv)
    data = _common.load_data(args)
    args.pool = args.pool or (1 if data.name == "digits" else 2)
    report = _common.Report(
        NAME, "Signal propagation plots of three ResNets at initialization", CLAIM, SOURCE, args
    )
    report.data = data
    x = batch_images(args, data)
    samples = int(np.prod(x.shape[:3]))
    keys = jax.random.split(jax.random.key(14), args.seeds)
    results: dict[str, diagnostics.SPP] = {}
    measured: Fields = {}
    predicted: Fields = {label: predict(kind, args, samples) for label, kind in KINDS.items()}
    for label, kind in KINDS.items():
        results[label], measured[label] = measure(kind, args, x, keys)
    block_table(report, measured, predicted, args)
    checks, found = growth_checks(measured, predicted, args)
    band, coverage = band_checks(report, measured, predicted)
    held = report.checks(checks | band)
    found["He no-BN"]["log2_slope"] = he_growth_text(report, measured["He no-BN"]["q"]).as_dict()
    per = {k: found[k]["per_block"]["mean"] for k in KINDS}
    report.verdict = (
        f"per block, BN-ResNet adds {per['BN-ResNet']:.3g} to q (1), NF-ResNet "
        f"{per['NF-ResNet']:.3g} q_l / beta_l^2 (alpha^2 = {args.alpha**2:g}), He no-BN "
        f"multiplies q by {per['He no-BN']:.3g} (2); predicted q inside the seed band: "
        + ", ".join(f"{k} {coverage[k]['q']:.0%}" for k in KINDS)
        + report.failed(held)
    )
    report.figure(
        spp_figure(
            results,
            predicted={
                k: {f: v[f] for f in ("mean_sq", "var", "branch_var", "branch_over_skip")}
                for k, v in predicted.items()
            },
            title=f"{data.label}, {args.blocks} blocks of width {args.width}, {args.batch} "
            f"images, {args.seeds} seeds (band: central 95%; dashed: mean-field)",
            level=LEVEL,
        ),
        "spp",
    )
    report.summary = {
        "blocks": args.blocks,
        "width": args.width,
        "batch": args.batch,
        "alpha": args.alpha,
        "pool": args.pool,
        "image": list(x.shape[1:]),
        "checks": held,
        "growth": found,
        "coverage": coverage,
        "measured": {k: {f: v.mean(axis=0) for f, v in m.items()} for k, m in measured.items()},
        "predicted": predicted,
    }
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
