"""Benchmark jaxinit.audit against the jitted init of GPT-2 small (124 M parameters).

The model is a Flax linen GPT-2 with nanoGPT's names and initialization (every kernel and
embedding N(0, 0.02^2), the residual projections ``c_proj`` N(0, (0.02 / sqrt(2 n_layer))^2),
biases 0, LayerNorm 1 / 0, the output head tied to ``wte``): 12 layers, 12 heads, width 768,
vocabulary 50257, context 1024. In one run, on the same device:

- init: the median of ``--repeats`` calls of ``jax.jit(module.init)`` after its compilation;
- audit, first call: ``jaxinit.audit(variables, gpt2(12), module=module, x=tokens)``, which
  compiles its one measuring program (and traces the forward pass abstractly to find the
  layers);
- audit: the median of ``--repeats`` further calls (the program compiled), host work included;
- ratio: audit / init (the target is at most 2 on CPU).

Prints a table (rich) and one JSON line (``{"bench": "audit", ...}``). ``--quick`` runs a
2-layer, width-64 model (for CI). Usage: ``python experiments/bench_audit.py [--quick]
[--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

if __package__ in (None, ""):  # run from a clone without installing
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench_lsuv import _median_time, header

import jaxinit
from jaxinit.recipes.audit import audit
from jaxinit.recipes.recipe import Recipe, Rule

FULL = {"n_layer": 12, "n_head": 12, "d": 768, "vocab": 50257, "block": 1024}
QUICK = {"n_layer": 2, "n_head": 2, "d": 64, "vocab": 256, "block": 32}


class Attention(nn.Module):
    """nanoGPT's CausalSelfAttention: a fused ``c_attn`` and the output ``c_proj``."""

    d: int
    n_head: int
    proj: Callable[..., Any]

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        qkv = nn.Dense(3 * d, kernel_init=nn.initializers.normal(0.02), name="c_attn")(x)
        q, k, v = (a.reshape(b, t, self.n_head, d // self.n_head) for a in jnp.split(qkv, 3, -1))
        y = nn.dot_product_attention(q, k, v, mask=nn.make_causal_mask(jnp.ones((b, t))))
        return nn.Dense(d, kernel_init=self.proj, name="c_proj")(y.reshape(b, t, d))


class Block(nn.Module):
    d: int
    n_head: int
    n_layer: int

    @nn.compact
    def __call__(self, x):
        proj = nn.initializers.normal(0.02 / math.sqrt(2 * self.n_layer))
        x = x + Attention(self.d, self.n_head, proj, name="attn")(nn.LayerNorm(name="ln_1")(x))
        return x + MLP(self.d, proj, name="mlp")(nn.LayerNorm(name="ln_2")(x))


class MLP(nn.Module):
    d: int
    init: Callable[..., Any]

    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Dense(4 * self.d, kernel_init=nn.initializers.normal(0.02), name="c_fc")(x))
        return nn.Dense(self.d, kernel_init=self.init, name="c_proj")(h)


class GPT2(nn.Module):
    n_layer: int
    n_head: int
    d: int
    vocab: int
    block: int

    @nn.compact
    def __call__(self, tokens):
        w = nn.initializers.normal(0.02)
        wte = nn.Embed(self.vocab, self.d, embedding_init=w, name="wte")
        pos = jnp.arange(tokens.shape[1])
        x = wte(tokens) + nn.Embed(self.block, self.d, embedding_init=w, name="wpe")(pos)[None]
        for i in range(self.n_layer):
            x = Block(self.d, self.n_head, self.n_layer, name=f"h_{i}")(x)
        return wte.attend(nn.LayerNorm(name="ln_f")(x))  # the head tied to wte


def recipe(n_layer: int) -> Recipe:
    """nanoGPT's initialization as a recipe (``jaxinit.recipes.residual.gpt2`` when present)."""
    try:
        from jaxinit.recipes.residual import gpt2

        return gpt2(n_layer)
    except ImportError:
        deep = jaxinit.normal(0.02 / math.sqrt(2 * n_layer))
        return Recipe(
            "gpt2",
            (
                Rule("**/c_proj/kernel", deep),
                Rule("**/kernel", jaxinit.normal(0.02)),
                Rule("**/embedding", jaxinit.normal(0.02)),
                Rule("**/bias", jaxinit.zeros()),
                Rule("**/scale", jaxinit.ones()),
            ),
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Benchmark jaxinit.audit against a jitted init.")
    parser.add_argument("--quick", action="store_true", help="a 2-layer, width-64 model")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 5)")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats={repeats}: use at least 1.")
    cfg = QUICK if args.quick else FULL
    module = GPT2(
        n_layer=cfg["n_layer"],
        n_head=cfg["n_head"],
        d=cfg["d"],
        vocab=cfg["vocab"],
        block=cfg["block"],
    )
    tokens = jnp.zeros((1, 8), jnp.int32)
    init = jax.jit(module.init)
    key = jax.random.key(0)

    t = time.perf_counter()
    variables = jax.block_until_ready(init(key, tokens))
    init_first = time.perf_counter() - t
    init_s = _median_time(lambda: init(key, tokens), repeats)
    n_params = sum(x.size for x in jax.tree.leaves(variables["params"]))

    rec = recipe(cfg["n_layer"])
    t = time.perf_counter()
    report = audit(variables, rec, module=module, x=tokens)
    audit_first = time.perf_counter() - t
    audit_s = _median_time(lambda: audit(variables, rec, module=module, x=tokens), repeats)

    result = {
        **header("audit", args.quick),
        "repeats": repeats,
        "config": cfg,
        "params": int(n_params),
        "tensors": len(report.rows),
        "findings": [(f.path, f.kind) for f in report.findings],
        "init_first_call_s": init_first,
        "init_s": init_s,
        "audit_first_call_s": audit_first,
        "audit_s": audit_s,
        "ratio": audit_s / init_s,
    }

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"jaxinit.audit vs jitted init: GPT-2 ({n_params / 1e6:.1f} M parameters, "
        f"{len(report.rows)} tensors) on {result['backend']} ({result['device']}), median of "
        f"{repeats}"
    )
    for col in ("", "first call (compile + run)", "after compile"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("init (jax.jit(module.init))", f"{init_first:.3f} s", f"{init_s:.3f} s")
    table.add_row("jaxinit.audit (recipe gpt2)", f"{audit_first:.3f} s", f"{audit_s:.3f} s")
    table.add_row("audit / init", f"{audit_first / init_first:.2f}x", f"{audit_s / init_s:.2f}x")
    Console().print(table)
    if report.findings:
        print(f"{len(report.findings)} finding(s) (the model follows the recipe: expected none):")
        for f in report.findings:
            print(f"  {f.path}: [{f.kind}] {f.message}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
