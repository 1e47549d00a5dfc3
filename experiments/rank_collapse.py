"""Issue-14 experiment (a): rank collapse in transformers at initialization.

Noci et al. 2022 ("Signal propagation in transformers: theoretical perspectives and the role of
rank collapse", https://arxiv.org/abs/2206.03126) show that at initialization the token
representations of a transformer become more alike with depth (the mean pairwise cosine of the
tokens rises towards 1: rank collapse), that the gradients of the queries and keys then vanish
against the values' (their Theorem 3.2), and that scaling each residual branch by 1/sqrt(L)
prevents it.

Set-up: ``jaxinit.models.Transformer`` (linen) on byte tokens of the Python standard library's
sources (``jaxinit.data.stdlib_text``: ``--batch`` windows of ``--tokens`` bytes), Embed(256,
``--dim``), ``depth`` blocks of multi-head self-attention (``--heads`` heads, no mask) and a GELU
MLP of 4 x dim, Flax's default (LeCun normal) kernels, a final LayerNorm and a Dense(256)
next-byte head. Configurations: post-LN and pre-LN, residual branch multiplier alpha = 1 (the
standard transformer) and alpha = 1/sqrt(depth) (the scaled residuals), depths 6, 12, 24. For
each configuration and ``--seeds`` seeds, one jitted ``jax.vmap`` over the seeds measures:

- the token cosine of every block's output (``jaxinit.measure(..., stats=("token_cosine",))``,
  the exact mean over pairs of distinct tokens, averaged over the batch);
- the ratio of the query's and the key's gradient norm to the value's in every block
  (``jaxinit.diagnostics.qkv_grad_ratios`` on the next-byte cross-entropy).

Checks (Welch's t over seeds, one-sided, p < 0.05):

- the trend: with alpha = 1 the last block's token cosine rises from depth 6 to depth 24, in
  post-LN and in pre-LN;
- the fix: at depth 24 the scaled residuals give a lower last-block token cosine than alpha = 1;
- the gradients: at depth 24 the query/value gradient ratio of the last block is lower with
  alpha = 1 than with the scaled residuals.

``--quick`` runs depths 2 and 4, 2 seeds and a small model: a smoke run, not the claim.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxinit
from jaxinit import data as jdata
from jaxinit import diagnostics
from jaxinit.models import Transformer
from jaxinit.plotting import rank_collapse_figure

NAME = "rank_collapse"
CLAIM = (
    "At initialization the token cosine of a transformer rises with depth (rank collapse) and "
    "the query/key gradients vanish against the value's; scaling each residual branch by "
    "1/sqrt(L) prevents it (Noci et al. 2022)."
)
SOURCE = "Noci et al. 2022, arXiv 2206.03126 (Theorem 3.2; Fig. 1, 2)"
NORMS = ("post", "pre")
SCALINGS = {"alpha = 1": False, "alpha = 1/sqrt(L)": True}
P = 0.05
Runs = dict[tuple[str, str, int], dict[str, np.ndarray]]  # (norm, residual, depth) -> fields


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _common.parser(__doc__.splitlines()[0], seeds=16, quick_seeds=2)
    p.add_argument("--depths", type=int, nargs="+", default=None, help="depths (6 12 24; 2 4)")
    p.add_argument("--dim", type=int, default=None, help="model width (128; 32)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (4)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per window (64; 16)")
    p.add_argument("--batch", type=int, default=None, help="windows (8; 2)")
    args = _common.parse(p, argv)
    args.depths = tuple(args.depths or ((2, 4) if args.quick else (6, 12, 24)))
    args.dim = args.dim or (32 if args.quick else 128)
    args.tokens = args.tokens or (16 if args.quick else 64)
    args.batch = args.batch or (2 if args.quick else 8)
    if min(*args.depths, args.dim, args.heads, args.batch) < 1 or args.tokens < 2:
        p.error("--depths, --dim, --heads and --batch must be positive and --tokens >= 2")
    if args.dim % args.heads:
        p.error(f"--dim {args.dim} must be a multiple of --heads {args.heads}")
    return args


def windows(args: argparse.Namespace) -> tuple[jax.Array, jax.Array]:
    """``--batch`` windows of ``--tokens`` bytes, evenly spaced over the first 1 MB of the
    standard library's text, and their next bytes."""
    text = jdata.stdlib_text(max_bytes=1_000_000)
    starts = np.arange(args.batch) * ((text.size - args.tokens - 1) // args.batch)
    w = text[starts[:, None] + np.arange(args.tokens + 1)[None, :]].astype(np.int32)
    return jnp.asarray(w[:, :-1]), jnp.asarray(w[:, 1:])


def measure(args, norm: str, depth: int, scaled: bool, x, y, keys) -> dict[str, np.ndarray]:
    """Per seed: every block's token cosine and query/key-to-value gradient ratios."""
    model = Transformer(
        depth=depth,
        dim=args.dim,
        num_heads=args.heads,
        norm=norm,
        alpha=depth**-0.5 if scaled else 1.0,
        vocab_size=256,
        num_outputs=256,
    )

    def loss(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def one(key):
        variables = model.init(key, x)
        m = jaxinit.measure(model, variables, x, stats=("token_cosine",), select="block*")
        r = diagnostics.qkv_grad_ratios(loss, variables["params"], x, y)
        blocks = [f"block{i}" for i in range(depth)]
        return (
            jnp.stack([m[b]["token_cosine"] for b in blocks]),
            jnp.stack([r[f"{b}/attn"]["q_over_v"] for b in blocks]),
            jnp.stack([r[f"{b}/attn"]["k_over_v"] for b in blocks]),
        )

    cos, q, k = jax.jit(jax.vmap(one))(keys)
    return {"cosine": np.asarray(cos), "q_over_v": np.asarray(q), "k_over_v": np.asarray(k)}


def main(argv: Sequence[str] | None = None) -> dict:
    args = arguments(argv)
    report = _common.Report(
        NAME, "Rank collapse in transformers at initialization", CLAIM, SOURCE, args
    )
    x, y = windows(args)
    keys = jax.random.split(jax.random.key(14), args.seeds)
    runs = {
        (norm, label, depth): measure(args, norm, depth, scaled, x, y, keys)
        for norm in NORMS
        for label, scaled in SCALINGS.items()
        for depth in args.depths
    }
    input_cosine = float(diagnostics.token_cosine(jax.nn.one_hot(x, 256)))
    last_block_table(report, runs, args, input_cosine)
    held = report.judge(claim_checks(runs, args))
    figure(report, runs, args)
    report.summary = {
        "depths": args.depths,
        "dim": args.dim,
        "heads": args.heads,
        "tokens": args.tokens,
        "batch": args.batch,
        "input_cosine": input_cosine,
        "checks": held,
        "runs": {
            f"{norm}-LN, {label}, depth {depth}": {k: v.mean(axis=0) for k, v in r.items()}
            for (norm, label, depth), r in runs.items()
        },
    }
    return report.write()


def last(runs: Runs, norm: str, label: str, depth: int, field: str) -> np.ndarray:
    """``field`` of the last block, per seed."""
    return runs[norm, label, depth][field][:, -1]


def last_block_table(
    report: _common.Report, runs: Runs, args: argparse.Namespace, input_cosine: float
) -> None:
    report.table(
        f"Last block at init: token cosine and gradient-norm ratios (mean ± std over "
        f"{args.seeds} seeds; the input bytes' one-hot cosine is {input_cosine:.3f})",
        ["norm", "residual", "depth", "token cosine", "‖g_Q‖ / ‖g_V‖", "‖g_K‖ / ‖g_V‖"],
        [
            [
                f"{norm}-LN",
                label,
                depth,
                *(
                    _common.spread(last(runs, norm, label, depth, f))
                    for f in ("cosine", "q_over_v", "k_over_v")
                ),
            ]
            for (norm, label, depth) in runs
        ],
    )


def claim_checks(runs: Runs, args: argparse.Namespace) -> dict[str, tuple[bool, str]]:
    """Per norm: the token cosine's rise with depth at alpha = 1, its fall with 1/sqrt(L) at the
    largest depth, and the query/value gradient ratio's fall at alpha = 1 (Welch, p < P)."""
    shallow, deep = min(args.depths), max(args.depths)
    plain, scaled = SCALINGS
    checks: dict[str, tuple[bool, str]] = {}
    for norm in NORMS:
        a, b = last(runs, norm, plain, shallow, "cosine"), last(runs, norm, plain, deep, "cosine")
        p = _common.welch_less(a, b)
        checks[f"{norm}-LN, alpha = 1: token cosine rises from depth {shallow} to {deep}"] = (
            bool(p < P),
            f"{a.mean():.3f} -> {b.mean():.3f} (p {p:.2g})",
        )
        a, b = last(runs, norm, scaled, deep, "cosine"), last(runs, norm, plain, deep, "cosine")
        p = _common.welch_less(a, b)
        checks[f"{norm}-LN, depth {deep}: 1/sqrt(L) lowers the token cosine"] = (
            bool(p < P),
            f"{b.mean():.3f} -> {a.mean():.3f} (p {p:.2g})",
        )
        a = last(runs, norm, plain, deep, "q_over_v")
        b = last(runs, norm, scaled, deep, "q_over_v")
        p = _common.welch_less(a, b)
        checks[f"{norm}-LN, depth {deep}: ‖g_Q‖/‖g_V‖ lower with alpha = 1 than 1/sqrt(L)"] = (
            bool(p < P),
            f"{a.mean():.3g} vs {b.mean():.3g} (p {p:.2g})",
        )
    return checks


def figure(report: _common.Report, runs: Runs, args: argparse.Namespace) -> None:
    """``jaxinit.plotting.rank_collapse_figure`` twice: per block at the largest depth, and the
    last block against depth."""
    deep = max(args.depths)
    labels = {f"{n}-LN, {s}": (n, s) for n in NORMS for s in SCALINGS}
    per_layer = {k: runs[n, s, deep] for k, (n, s) in labels.items()}
    report.figure(
        rank_collapse_figure(
            {k: r["cosine"] for k, r in per_layer.items()},
            qkv={k: r["q_over_v"] for k, r in per_layer.items()},
            xlabel="block",
            title=f"Depth {deep} at init, {args.seeds} seeds (mean, central 95% of seeds)",
        ),
        "layers",
    )

    def by_depth(field):
        return {
            k: np.stack([runs[n, s, d][field][:, -1] for d in args.depths], axis=1)
            for k, (n, s) in labels.items()
        }

    report.figure(
        rank_collapse_figure(
            by_depth("cosine"),
            qkv=by_depth("q_over_v"),
            x=args.depths,
            xlabel="depth",
            title=f"Last block at init against depth, {args.seeds} seeds",
        ),
        "depth",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
