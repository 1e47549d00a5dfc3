"""Claim 3: a 9-layer linear network of 2 units with every W = 1.5 I (0.5 I) makes activations and
backpropagated gradients grow as 1.5^(L-1) (shrink as 0.5^(L-1)), exactly.

The network is ``a_l = W_l a_{l-1}``, ``a_0 = x``, ``l = 1..L`` with ``L = 9`` and ``W_l = s I``
(``s = 1.5`` or ``0.5``), output ``y = sum(a_L)``. Then ``a_l = s^l x`` and the gradient that
reaches layer ``l``'s output is ``dy/da_l = s^(L-l) (1, 1)``: the last hidden activation
``a_{L-1}`` and the gradient at the first layer's output ``dy/da_1`` are both ``s^(L-1)`` times
their input. The inputs are random dyadic numbers (``k / 4``, ``|k| <= 16``), so every product
is exact in float32 (for L <= 12) and the claim is checked with ``==``, for every layer and
every seed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import _common
import jax
import jax.numpy as jnp
import numpy as np

import jaxinit

NAME = "dlai_linear_2unit"
SCALES = (1.5, 0.5)
# 1.5^L x = 3^L k / 2^(L+2) with |k| <= 16 is exact in float32 while 3^L * 16 < 2^24.
MAX_DEPTH = 12


def chain(ws: jax.Array, x: jax.Array, taps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Run ``x`` (batch, 2) through the kernels ``ws`` (L, 2, 2); ``taps`` (L, batch, 2) are
    zeros added to each layer's output, so the gradient w.r.t. ``taps[l]`` is ``dy/da_l``."""

    def layer(a, wt):
        w, tap = wt
        a = a @ w + tap
        return a, a

    _, acts = jax.lax.scan(layer, x, (ws, taps))
    return acts.sum(axis=(1, 2))[-1], acts


def measure(scale: float, depth: int, x: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer activations (L, batch, 2) and gradients dy/da_l (L, batch, 2)."""
    init = jaxinit.identity(scale=scale)
    keys = jax.random.split(jax.random.key(0), depth)
    ws = jax.jit(jax.vmap(lambda k: init(k, (2, 2))))(keys)
    taps = jnp.zeros((depth, *x.shape), x.dtype)
    (_, acts), grads = jax.value_and_grad(chain, argnums=2, has_aux=True)(ws, x, taps)
    return np.asarray(acts), np.asarray(grads)


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _common.parser(__doc__.splitlines()[0], seeds=1000, quick_seeds=100, min_seeds=1)
    p.add_argument("--depth", type=int, default=9, help="number of layers L (default 9)")
    args = _common.parse(p, argv)
    if not 2 <= args.depth <= MAX_DEPTH:
        p.error(
            f"--depth {args.depth} must be in [2, {MAX_DEPTH}]: beyond that 1.5^L x needs more "
            "than float32's 24 mantissa bits, and the check is for exact equality"
        )
    return args


def inputs(seeds: int) -> jax.Array:
    """One input per seed, (seeds, 2): dyadic numbers k / 4, 0 < |k| <= 16, so that every
    product is exact in float32."""
    k = jax.random.randint(jax.random.key(2019), (seeds, 2), -16, 17)
    k = jnp.where(k == 0, 1, k)  # a zero input would make the ratio 0/0
    return k.astype(jnp.float32) / 4


def compare(s: float, acts: np.ndarray, grads: np.ndarray, x: np.ndarray) -> dict:
    """The measured activations and gradients of the ``W = s I`` chain against s^l x and
    s^(L-l): the summary entry of that scale."""
    L = acts.shape[0]
    layers = np.arange(1, L + 1)
    want_act = np.float32(s) ** layers.astype(np.float32)  # a_l / x = s^l
    want_grad = np.float32(s) ** (L - layers).astype(np.float32)  # dy/da_l = s^(L-l)
    hidden = (acts / x[None])[L - 2]  # a_{L-1} / x, every seed and unit
    first_grad = grads[0]  # dy/da_1
    return {
        "target": s ** (L - 1),
        "a_last_hidden_over_x": [float(hidden.min()), float(hidden.max())],
        "grad_first_layer": [float(first_grad.min()), float(first_grad.max())],
        "every_layer_exact_activations": bool(np.all(acts == want_act[:, None, None] * x[None])),
        "every_layer_exact_gradients": bool(np.all(grads == want_grad[:, None, None])),
    }


def figure(report, curves: dict, L: int) -> None:
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    layers = np.arange(1, L + 1)
    for s, (a, g) in curves.items():
        ax.semilogy(layers, a, "o-", label=f"W = {s} I: mean |a_l|")
        ax.semilogy(layers, g, "s--", label=f"W = {s} I: mean |dy/da_l|")
    ax.set_xlabel("layer l")
    ax.set_ylabel("magnitude (log scale)")
    ax.set_title(f"{L}-layer, 2-unit linear chain")
    ax.legend(fontsize=7)
    report.figure(fig, "curves")


def main(argv: Sequence[str] | None = None) -> dict:
    args = arguments(argv)
    L = args.depth
    report = _common.Report(
        NAME,
        "Exploding and vanishing signal in a 2-unit linear chain",
        f"With every W = 1.5 I (0.5 I) in a {L}-layer, 2-unit linear network, activations and "
        f"backpropagated gradients grow as 1.5^(L-1) (shrink as 0.5^(L-1)), exactly.",
        "deeplearning.ai AI Notes, 'Initializing neural networks' (Katanforoosh & Kunin, 2019), "
        "the 9-layer example",
        args,
    )
    x = inputs(args.seeds)
    summary, curves = {}, {}
    for s in SCALES:
        acts, grads = measure(s, L, x)
        summary[f"scale_{s}"] = compare(s, acts, grads, np.asarray(x))
        curves[s] = (np.abs(acts).mean(axis=(1, 2)), np.abs(grads).mean(axis=(1, 2)))
    report.table(
        f"a_(L-1)/x and dy/da_1 over {args.seeds} seeds (min .. max), L = {L}",
        ["W", "predicted", "a_(L-1) / x", "dy/da_1", "all a_l == s^l x", "all dy/da_l == s^(L-l)"],
        [
            [
                s,
                f"{s}^{L - 1} = {d['target']:.10g}",
                "{:.10g} .. {:.10g}".format(*d["a_last_hidden_over_x"]),
                "{:.10g} .. {:.10g}".format(*d["grad_first_layer"]),
                d["every_layer_exact_activations"],
                d["every_layer_exact_gradients"],
            ]
            for s, d in zip(SCALES, summary.values(), strict=True)
        ],
    )
    figure(report, curves, L)

    report.held = all(
        d["every_layer_exact_activations"] and d["every_layer_exact_gradients"]
        for d in summary.values()
    )
    report.verdict = (
        f"for all {args.seeds} inputs and all {L} layers, float32 activations equal s^l x and "
        f"gradients equal s^(L-l) bit for bit: a_(L-1)/x = dy/da_1 = 1.5^{L - 1} = "
        f"{1.5 ** (L - 1):.10g} and 0.5^{L - 1} = {0.5 ** (L - 1):.10g}, spread 0."
        if report.held
        else "some layer differs from s^l (see the table)."
    )
    report.summary = {"depth": L, **summary}
    return report.write()


if __name__ == "__main__":
    main(sys.argv[1:])
