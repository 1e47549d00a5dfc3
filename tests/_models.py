"""Test-only models and helpers for the LSUV tests: independent forward-pass capture (Flax's own
``capture_intermediates`` / ``nnx.capture``, not jaxinit.probe) and small special-purpose nets."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# ---------------------------------------------------------------------------------------------
# independent capture


def linen_outputs(model, variables, x, **kwargs) -> dict[str, tuple[jax.Array, ...]]:
    """Every module's ``__call__`` outputs (one per call), by "/"-joined path, via linen's
    ``capture_intermediates`` (jitted: one compilation instead of one per operation)."""
    mutable = ["intermediates", *(["batch_stats"] if kwargs.get("train") else [])]

    def run(variables, x):
        _, state = model.apply(variables, x, capture_intermediates=True, mutable=mutable, **kwargs)
        return state["intermediates"]

    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            if k == "__call__":
                out["/".join(prefix)] = tuple(v)
            else:
                walk(v, (*prefix, k))

    walk(jax.jit(run)(variables, x), ())
    return out


def nnx_outputs(model, x) -> dict[str, tuple[jax.Array, ...]]:
    """Every module's ``__call__`` outputs, by path, via ``nnx.capture`` (jitted, on a copy
    of the model, so that BatchNorm statistics of ``model`` are not touched)."""
    graphdef, state = nnx.split(model)

    def run(state, x):
        clone = nnx.merge(graphdef, state)
        _, inter = nnx.capture(clone, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        return inter

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.jit(run)(state, x))[0]:
        keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
        i = keys.index("__call__")
        name = "/".join(str(k) for k in keys[:i])
        out.setdefault(name, []).append(leaf)
    return {k: tuple(v) for k, v in out.items()}


def std_mean(y) -> tuple[float, float]:
    """Population std and mean over all elements, in float64 (independent of jaxinit)."""
    a = np.asarray(jnp.asarray(y, jnp.float32), np.float64)
    return float(a.std()), float(a.mean())


# ---------------------------------------------------------------------------------------------
# small models


class Block(nn.Module):
    """A user block: Dense + activation, normalized post-activation when selected."""

    features: int
    act: str = "relu"

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(self.features, name="dense")(x)
        return jnp.tanh(y) if self.act == "tanh" else nn.relu(y)


class BlockNet(nn.Module):
    act: str = "relu"

    @nn.compact
    def __call__(self, x):
        for i in range(3):
            x = Block(32, self.act, name=f"block{i}")(x)
        return nn.Dense(4, name="head")(x)


class NNXBlock(nnx.Module):
    def __init__(self, n_in, n_out, act, rngs):
        self.dense = nnx.Linear(n_in, n_out, rngs=rngs)
        self.act = act

    def __call__(self, x):
        y = self.dense(x)
        return jnp.tanh(y) if self.act == "tanh" else nnx.relu(y)


class NNXBlockNet(nnx.Module):
    def __init__(self, n_in, act, rngs):
        self.blocks = nnx.List([NNXBlock(n_in if i == 0 else 32, 32, act, rngs) for i in range(3)])
        self.head = nnx.Linear(32, 4, rngs=rngs)

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


class Shared(nn.Module):
    """``shared`` is called twice; ``unused`` only by ``all_layers`` (for init), never by
    ``__call__``."""

    def setup(self):
        self.first = nn.Dense(16)
        self.shared = nn.Dense(16)
        self.unused = nn.Dense(16)
        self.head = nn.Dense(2)

    def __call__(self, x):
        x = nn.relu(self.first(x))
        x = nn.relu(self.shared(x))
        x = nn.relu(self.shared(x))
        return self.head(x)

    def all_layers(self, x):
        return self(x) + self.head(self.unused(self.first(x)))


class NNXShared(nnx.Module):
    def __init__(self, n_in, rngs):
        self.first = nnx.Linear(n_in, 16, rngs=rngs)
        self.shared = nnx.Linear(16, 16, rngs=rngs)
        self.unused = nnx.Linear(16, 16, rngs=rngs)
        self.head = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.first(x))
        x = nnx.relu(self.shared(x))
        x = nnx.relu(self.shared(x))
        return self.head(x)


class BF16(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i in range(3):
            x = nn.relu(nn.Dense(64, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, name=f"d{i}")(x))
        return x


class Remat(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i in range(3):
            x = nn.relu(nn.remat(nn.Dense)(32, name=f"d{i}")(x))
        return x


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        class Cell(nn.Module):
            @nn.compact
            def __call__(self, c, _):
                return nn.relu(nn.Dense(c.shape[-1], name="d")(c)), None

        stack = nn.scan(Cell, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        return stack(name="stack")(x, None)[0]


class NoKernel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.LayerNorm()(x)


class NNXScanned(nnx.Module):
    """Three Linear layers stacked by nnx.vmap and applied by nnx.scan."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return nnx.Linear(8, 8, rngs=rngs)

        self.layers = make(rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def step(layer, x):
            return nnx.relu(layer(x))

        return step(self.layers, x)


class NNXRemat(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(8, 16, rngs=rngs)
        self.b = nnx.Linear(16, 16, rngs=rngs)

    def __call__(self, x):
        x = nnx.remat(lambda m, x: nnx.relu(m(x)))(self.a, x)
        return nnx.remat(lambda m, x: m(x))(self.b, x)


# ---------------------------------------------------------------------------------------------
# one layer of every kind in jaxinit's layer-kind table

TOKENS = jax.random.randint(jax.random.key(7), (4, 6), 0, 50)


class AllKinds(nn.Module):
    """One layer of each kind, on a (batch, time, features) stream."""

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(50, 16, name="embed")(tokens)
        h = nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(h)
        h = nn.LayerNorm(name="ln")(h)
        h = nn.DenseGeneral((2, 8), name="dg")(h)
        h = nn.Einsum((2, 8, 16), "btnh,nhd->btd", name="einsum")(h)
        h = nn.RMSNorm(name="rms")(h)
        h = nn.Conv(8, (3,), name="conv")(h)
        h = nn.ConvLocal(8, (3,), name="local")(h)
        h = nn.ConvTranspose(8, (3,), name="convt")(h)
        h = nn.GroupNorm(num_groups=2, name="gn")(h)
        h = nn.BatchNorm(use_running_average=True, name="bn")(h)
        return nn.Dense(4, name="dense")(h.mean(1))


KIND_LAYERS = (
    "embed", "attn", "ln", "dg", "einsum", "rms", "conv", "local", "convt", "gn", "bn", "dense",
)  # fmt: skip


class AllKindsNNX(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(50, 16, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(2, 16, decode=False, rngs=rngs)
        self.ln = nnx.LayerNorm(16, rngs=rngs)
        self.dg = nnx.LinearGeneral(16, (2, 8), rngs=rngs)
        self.einsum = nnx.Einsum("btnh,nhd->btd", (2, 8, 16), rngs=rngs)
        self.rms = nnx.RMSNorm(16, rngs=rngs)
        self.conv = nnx.Conv(16, 8, (3,), rngs=rngs)
        self.convt = nnx.ConvTranspose(8, 8, (3,), rngs=rngs)
        self.gn = nnx.GroupNorm(8, num_groups=2, rngs=rngs)
        self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.dense = nnx.Linear(8, 4, rngs=rngs)

    def layers(self):
        """(name, call) in forward order: the reference runs them one by one."""
        return [
            ("embed", self.embed),
            ("attn", self.attn),
            ("ln", self.ln),
            ("dg", self.dg),
            ("einsum", self.einsum),
            ("rms", self.rms),
            ("conv", self.conv),
            ("convt", self.convt),
            ("gn", self.gn),
            ("bn", self.bn),
        ]

    def __call__(self, tokens):
        h = tokens
        for _, layer in self.layers():
            h = layer(h)
        return self.dense(h.mean(1))
