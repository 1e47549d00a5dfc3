"""The figure of the guide "Predicting a network at step zero" (docs/signal.md).

An NNX transformer (``jaxinit.models.NNXTransformer``: ``--depth`` blocks of width ``--dim``, 4
heads, GELU MLP of 1 x dim, Flax's default LeCun-normal kernels) in three variants: pre-LN,
pre-LN with residual branches scaled by alpha = 1/sqrt(depth), and post-LN. Input: two
sequences of ``--tokens`` pairwise orthogonal tokens of mean 0 and mean square 1 (the
two-input state ``State(1, c=0)`` exactly). For each variant, ``jaxinit.layer_stats`` measures
the std and the token cosine of every block's output over ``--seeds`` seeds (one jitted vmap),
and ``jaxinit.meanfield.of_model`` gives the predicted residual stream (std = sqrt(q)) and
token correlation c after each block, drawn dashed on the same panels.

    python experiments/figure_signal.py            # writes docs/figures/signal_transformer.png
    python experiments/figure_signal.py --quick    # a smoke run: small model, 2 seeds
"""

from __future__ import annotations

import argparse
import math
import pathlib
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxinit
from jaxinit import meanfield as mf
from jaxinit.models import NNXTransformer
from jaxinit.plotting import layer_stats_figure

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures" / "signal_transformer.png"


def orthogonal_tokens(batch: int, tokens: int, dim: int) -> jnp.ndarray:
    """``(batch, tokens, dim)`` tokens with features of mean 0 and mean square 1, pairwise
    orthogonal across the whole batch."""
    g = np.random.default_rng(0).standard_normal((dim, batch * tokens))
    q = np.linalg.qr(g - g.mean(axis=0))[0].T * math.sqrt(dim)
    return jnp.asarray(q.reshape(batch, tokens, dim), jnp.float32)


def block_states(network: mf.Network, depth: int, start: mf.State) -> list[mf.State]:
    """The predicted state of the residual stream after each block (the trace's maps are
    each block's maps in order, then the final LayerNorm)."""
    steps = mf.trace(network, start)
    per = (len(steps) - 1) // depth
    return [s.state for s in steps[per - 1 : per * depth : per]]  # c is set: two inputs


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, list[float]]]:
    p = argparse.ArgumentParser(description="The figure of the guide docs/signal.md.")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--out", type=pathlib.Path, default=OUT)
    p.add_argument("--quick", action="store_true", help="dim 32, depth 2, 2 seeds")
    args = p.parse_args(argv)
    if args.quick:
        args.dim, args.depth, args.tokens, args.seeds = 32, 2, 4, 2
    dim, depth = args.dim, args.depth
    variants = {
        "pre-LN": {"norm": "pre"},
        "pre-LN, alpha=1/sqrt(L)": {"norm": "pre", "alpha": depth**-0.5},
        "post-LN": {"norm": "post"},
    }
    x = orthogonal_tokens(2, args.tokens, dim)
    start = mf.State(1.0, c=0.0)
    results, predicted, summary = {}, {}, {}
    for label, kw in variants.items():
        kw = {"depth": depth, "num_heads": 4, "mlp_ratio": 1, **kw}

        def make(key, kw=kw):
            return NNXTransformer(dim, rngs=nnx.Rngs(key), **kw)

        shapes = nnx.eval_shape(lambda kw=kw: NNXTransformer(dim, rngs=nnx.Rngs(0), **kw))
        states = block_states(mf.of_model(shapes, input_shape=(args.tokens, dim)), depth, start)
        st = jaxinit.layer_stats(
            make, x, seeds=args.seeds, grads=False, select="block*", stats=("rms", "token_cosine")
        )
        results[label], predicted[label] = st, states
        summary[label] = {
            "q_predicted": [s.q for s in states],
            "q_measured": np.mean(np.asarray(st.stats["rms"], np.float64) ** 2, axis=0).tolist(),
            "c_predicted": [float(s.c or 0.0) for s in states],
            "c_measured": np.mean(np.asarray(st.stats["token_cosine"]), axis=0).tolist(),
        }
        print(label)
        for i, name in enumerate(st.names):
            row = {k: round(v[i], 3) for k, v in summary[label].items()}
            print(f"  {name:8}", row)
    fig = layer_stats_figure(
        results,
        title=f"NNXTransformer, width {dim}, {args.tokens} tokens; black dashes: of_model's maps",
    )
    axes = {ax.get_title(): ax for ax in fig.axes}
    layers = np.arange(1, depth + 1)
    for states in predicted.values():  # black dashes over each variant's measured line
        axes["rms"].plot(layers, [math.sqrt(s.q) for s in states], "k--", lw=1, dashes=(3, 3))
        c = [s.c or 0.0 for s in states]
        axes["token_cosine"].plot(layers, c, "k--", lw=1, dashes=(3, 3))
    for ax in axes.values():
        ax.set_xlabel("block")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=fig.dpi, bbox_inches="tight")
    print(f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
