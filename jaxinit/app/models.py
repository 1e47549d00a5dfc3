"""Built-in models, each in a linen and an NNX version, for LSUV, the analyses, the command line
and the tests.

| linen | NNX | what |
| --- | --- | --- |
| :class:`MLP` | :class:`NNXMLP` | ``depth`` x (Dense ``width`` + activation), optional head |
| :class:`ConvNet` | :class:`NNXConvNet` | the convnet of fastai's init article: conv 3->32 k5 s2, \
32->64 k3 s2, 64->128 k3 s2, 128->128 k3 s2, each + activation, global average pool, dense 10 |
| :class:`ResNet` | :class:`NNXResNet` | a small ResNet (stem, three residual stages), with or \
without BatchNorm, post-activation (v1) or pre-activation (v2) blocks |
| :class:`TransformerBlock` | :class:`NNXTransformerBlock` | self-attention + MLP, both \
residual, pre- or post-LayerNorm |
| :class:`Transformer` | :class:`NNXTransformer` | ``depth`` transformer blocks ``block0`` ..., \
optional token embedding, final LayerNorm, optional head |

Inputs are channels-last (``(batch, height, width, channels)``) for the convolutional models and
``(batch, tokens, dim)`` for the transformers (or integer tokens with ``vocab_size``); the MLP
flattens all but the batch axis. ``kernel_init`` defaults to Flax's default (LeCun normal). The
linen models take ``train`` (the ResNet uses it for BatchNorm); for NNX use ``model.train()`` /
``model.eval()``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxinit.models import MLP, NNXMLP
  >>> x = jnp.ones((2, 16))
  >>> MLP(depth=3, width=8).init(jax.random.key(0), x)["params"]["Dense_2"]["kernel"].shape
  (8, 8)
  >>> NNXMLP(16, depth=3, width=8, num_outputs=4, rngs=nnx.Rngs(0))(x).shape
  (2, 4)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from .. import probe
from .._checks import check_bool

Activation = Callable[[jax.Array], jax.Array]
_DEFAULT_INIT = jax.nn.initializers.lecun_normal()
_FASTAI_CHANNELS = (32, 64, 128, 128)
_FASTAI_KERNELS = (5, 3, 3, 3)

__all__ = [
    "MLP",
    "NNXMLP",
    "Activation",
    "ConvNet",
    "NNXConvNet",
    "NNXResBlock",
    "NNXResNet",
    "NNXTransformer",
    "NNXTransformerBlock",
    "ResBlock",
    "ResNet",
    "Transformer",
    "TransformerBlock",
]


def _check_int(name: str, arg: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}: {arg}={value!r} must be an int >= {least}.")
    return value


_NORMS = ("pre", "post")


def _check_norm(name: str, norm: Any) -> None:
    if norm not in _NORMS:
        raise ValueError(f"{name}: norm={norm!r} is not supported; use one of {_NORMS}.")


def _check_channels(name: str, channels: Sequence[int], kernels: Sequence[int]) -> None:
    if len(channels) != len(kernels):
        raise ValueError(
            f"{name}: channels={tuple(channels)} and kernel_sizes={tuple(kernels)} must have the "
            "same length (one kernel size per conv layer)."
        )


# --------------------------------------------------------------------------------------------
# linen


class _ScanLayer(nn.Module):
    """One Dense + activation step of :class:`MLP`'s ``nn.scan`` (carry in, carry out)."""

    width: int
    activation: Activation
    kernel_init: Callable[..., Any]

    @nn.compact
    def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
        return self.activation(
            nn.Dense(self.width, kernel_init=self.kernel_init, name="dense")(x)
        ), None


class MLP(nn.Module):
    """``depth`` x (Dense(``width``) + ``activation``), then Dense(``num_outputs``) if given.

    Layers are named ``Dense_0`` ... ``Dense_{depth-1}`` and ``head``. With ``scan=True``
    layers 2 to ``depth`` are one ``nn.scan`` over a Dense + activation body named
    ``layers/dense`` (parameters stacked on a leading axis of ``depth - 1``): XLA compiles
    the body once, so compile time does not grow with depth. The scan carries
    :data:`jaxinit.probe.COLLECTION`, so :func:`jaxinit.layer_stats` reports every
    iteration (``layers/dense[0]`` ... ``layers/dense[depth-2]``).
    """

    depth: int = 50
    width: int = 512
    activation: Activation = nn.relu
    kernel_init: Callable[..., Any] = _DEFAULT_INIT
    num_outputs: int | None = None
    scan: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_int("MLP", "depth", self.depth, 1)
        _check_int("MLP", "width", self.width, 1)
        x = x.reshape((x.shape[0], -1))
        unrolled = 1 if self.scan else self.depth
        for i in range(unrolled):
            x = self.activation(
                nn.Dense(self.width, kernel_init=self.kernel_init, name=f"Dense_{i}")(x)
            )
        if self.scan and self.depth > 1:
            stack = nn.scan(
                _ScanLayer,
                variable_axes={"params": 0, probe.COLLECTION: 0},
                split_rngs={"params": True},
                length=self.depth - 1,
            )
            x, _ = stack(self.width, self.activation, self.kernel_init, name="layers")(x, None)
        if self.num_outputs is not None:
            x = nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="head")(x)
        return x


class ConvNet(nn.Module):
    """fastai's init-article convnet: stride-2 convs (padding ``k // 2``) + activation, global
    average pool, Dense(``num_classes``). Layers ``conv0`` ... ``conv3``, ``head``."""

    num_classes: int = 10
    channels: Sequence[int] = _FASTAI_CHANNELS
    kernel_sizes: Sequence[int] = _FASTAI_KERNELS
    activation: Activation = nn.relu
    kernel_init: Callable[..., Any] = _DEFAULT_INIT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_channels("ConvNet", self.channels, self.kernel_sizes)
        for i, (c, k) in enumerate(zip(self.channels, self.kernel_sizes, strict=True)):
            conv = nn.Conv(
                c, (k, k), strides=2, padding=k // 2, kernel_init=self.kernel_init, name=f"conv{i}"
            )
            x = self.activation(conv(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="head")(x)


class ResBlock(nn.Module):
    """A basic residual block of two 3x3 convs (``conv1`` with ``strides``, ``conv2``), with
    a 1x1 conv projection ``proj`` (``strides``) on the shortcut when the shape changes.

    Post-activation (ResNet v1, the default): ``act(x' + [bn2](conv2(act([bn1](conv1(x))))))``
    with ``x' = x``, or ``[bn_proj](proj(x))`` when projected. Pre-activation (``preact=True``,
    ResNet v2, He et al. 2016, "Identity Mappings in Deep Residual Networks"):
    ``y = act([bn1](x))``, then ``x' + conv2(act([bn2](conv1(y))))`` with ``x' = x``, or
    ``proj(y)`` when projected (no norm on the projection, no activation after the sum).
    ``[bn*]`` are BatchNorms with ``batch_norm=True`` (convs then have no bias). Convs pad with
    zeros (``k // 2`` each side), or wrap around with ``circular``."""

    features: int
    strides: int = 1
    batch_norm: bool = False
    activation: Activation = nn.relu
    kernel_init: Callable[..., Any] = _DEFAULT_INIT
    circular: bool = False
    preact: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_bool("ResBlock", "preact", self.preact)

        def conv(f, k, s, name):
            return nn.Conv(
                f,
                (k, k),
                strides=s,
                padding="CIRCULAR" if self.circular else k // 2,
                kernel_init=self.kernel_init,
                use_bias=not self.batch_norm,
                name=name,
            )

        def norm(name):
            if not self.batch_norm:
                return lambda y: y
            return nn.BatchNorm(use_running_average=not train, name=name)

        project = x.shape[-1] != self.features or self.strides != 1
        if self.preact:
            y = self.activation(norm("bn1")(x))
            h = self.activation(norm("bn2")(conv(self.features, 3, self.strides, "conv1")(y)))
            h = conv(self.features, 3, 1, "conv2")(h)
            return h + (conv(self.features, 1, self.strides, "proj")(y) if project else x)
        y = self.activation(norm("bn1")(conv(self.features, 3, self.strides, "conv1")(x)))
        y = norm("bn2")(conv(self.features, 3, 1, "conv2")(y))
        if project:
            x = norm("bn_proj")(conv(self.features, 1, self.strides, "proj")(x))
        return self.activation(y + x)


def _stages(widths: Sequence[int], blocks: int) -> list[tuple[str, int, int, int]]:
    """(name, input width, width, stride) of every residual block: ``blocks`` per stage, the
    first of each stage after the first with stride 2. Named ``block{stage}`` with one block
    per stage, else ``stage{stage}_block{b}``."""
    _check_int("ResNet", "blocks", blocks, 1)
    out, prev = [], widths[0]
    for i, w in enumerate(widths):
        for b in range(blocks):
            name = f"block{i}" if blocks == 1 else f"stage{i}_block{b}"
            out.append((name, prev, w, 2 if i > 0 and b == 0 else 1))
            prev = w
    return out


class ResNet(nn.Module):
    """A small ResNet: stem conv3x3(``widths[0]``), ``blocks`` :class:`ResBlock` per stage
    (the first of each stage from the second on with stride 2; depth ``2 + 6 * blocks`` for
    three stages), global average pool, Dense(``num_classes``). Blocks are named ``block0``
    ... with one block per stage, else ``stage{i}_block{b}``. Convs pad with zeros, or wrap
    around with ``circular`` (every position then sees a whole patch, as the mean-field
    maps of :func:`jaxinit.meanfield.of_model` assume).

    Post-activation (ResNet v1, the default): the stem is ``act([stem_bn](stem(x)))`` and
    with ``batch_norm=True`` every conv is followed by BatchNorm. Pre-activation
    (``preact=True``, ResNet v2, He et al. 2016): the stem is the conv alone, the blocks are
    pre-activation blocks (see :class:`ResBlock`), and ``act([bn_final](x))`` follows the
    last block, before the pooling. With ``batch_norm=True`` convs have no bias.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinit.models import ResNet
      >>> x = jnp.ones((2, 8, 8, 3))
      >>> model = ResNet(widths=(4, 8), batch_norm=True, preact=True)
      >>> params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
      >>> sorted(params), sorted(params["block1"])
      (['block0', 'block1', 'bn_final', 'head', 'stem'], ['bn1', 'bn2', 'conv1', 'conv2', 'proj'])
    """

    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64)
    batch_norm: bool = False
    activation: Activation = nn.relu
    kernel_init: Callable[..., Any] = _DEFAULT_INIT
    blocks: int = 1
    circular: bool = False
    preact: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_bool("ResNet", "preact", self.preact)
        x = nn.Conv(
            self.widths[0],
            (3, 3),
            padding="CIRCULAR" if self.circular else 1,
            kernel_init=self.kernel_init,
            use_bias=not self.batch_norm,
            name="stem",
        )(x)
        if not self.preact:
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, name="stem_bn")(x)
            x = self.activation(x)
        for name, _, w, stride in _stages(self.widths, self.blocks):
            block = ResBlock(
                w,
                stride,
                self.batch_norm,
                self.activation,
                self.kernel_init,
                self.circular,
                self.preact,
                name=name,
            )
            x = block(x, train)
        if self.preact:
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, name="bn_final")(x)
            x = self.activation(x)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=self.kernel_init, name="head")(x)


class TransformerBlock(nn.Module):
    """Transformer block on ``(batch, tokens, dim)``, an attention then an MLP branch, each in
    a residual with branch multiplier ``alpha``. Pre-LayerNorm (``norm="pre"``, the default):
    ``x + alpha MHA(LN(x))``, then ``x + alpha Dense(dim)(act(Dense(mlp_ratio * dim)(LN(x))))``;
    post-LayerNorm (``norm="post"``): ``LN(x + alpha MHA(x))``, then ``LN(x + alpha MLP(x))``.
    Attention is ``nn.MultiHeadDotProductAttention`` (query/key/value/out are DenseGeneral),
    bidirectional unless ``causal``, with ``attention_fn`` (default
    ``nn.dot_product_attention``) passed to it. Sub-layers ``ln1``, ``attn``, ``ln2``,
    ``mlp_in``, ``mlp_out``."""

    dim: int = 64
    num_heads: int = 4
    mlp_ratio: int = 4
    activation: Activation = nn.gelu
    kernel_init: Callable[..., Any] = _DEFAULT_INIT
    norm: str = "pre"
    alpha: float = 1.0
    causal: bool = False
    attention_fn: Callable[..., jax.Array] | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_norm("TransformerBlock", self.norm)
        kwargs: dict[str, Any] = {}
        if self.attention_fn is not None:
            kwargs["attention_fn"] = self.attention_fn
        attn = nn.MultiHeadDotProductAttention(
            self.num_heads,
            qkv_features=self.dim,
            kernel_init=self.kernel_init,
            name="attn",
            **kwargs,
        )
        mask = nn.make_causal_mask(x[..., 0]) if self.causal else None
        ln1, ln2 = nn.LayerNorm(name="ln1"), nn.LayerNorm(name="ln2")
        mlp_in = nn.Dense(self.mlp_ratio * self.dim, kernel_init=self.kernel_init, name="mlp_in")
        mlp_out = nn.Dense(self.dim, kernel_init=self.kernel_init, name="mlp_out")

        def mlp(h: jax.Array) -> jax.Array:
            return mlp_out(self.activation(mlp_in(h)))

        if self.norm == "pre":
            x = x + self.alpha * attn(ln1(x), mask=mask)
            return x + self.alpha * mlp(ln2(x))
        x = ln1(x + self.alpha * attn(x, mask=mask))
        return ln2(x + self.alpha * mlp(x))


class Transformer(nn.Module):
    """A transformer on ``(batch, tokens, dim)`` inputs, or on integer tokens
    ``(batch, tokens)`` through ``nn.Embed(vocab_size, dim)`` (named ``embed``; no position
    embedding) when ``vocab_size`` is given: ``depth`` :class:`TransformerBlock` named
    ``block0`` ... (``norm``, ``alpha``, ``causal``, ``attention_fn`` as there; ``alpha =
    depth ** -0.5`` gives the scaled residuals of Noci et al. 2022), a final LayerNorm
    ``ln_f`` (``final_norm``), and Dense(``num_outputs``) ``head`` if given."""

    depth: int = 6
    dim: int = 64
    num_heads: int = 4
    mlp_ratio: int = 4
    activation: Activation = nn.gelu
    kernel_init: Callable[..., Any] = _DEFAULT_INIT
    norm: str = "pre"
    alpha: float = 1.0
    causal: bool = False
    attention_fn: Callable[..., jax.Array] | None = None
    vocab_size: int | None = None
    num_outputs: int | None = None
    final_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_int("Transformer", "depth", self.depth, 1)
        _check_norm("Transformer", self.norm)
        if self.vocab_size is not None:
            x = nn.Embed(self.vocab_size, self.dim, name="embed")(x)
        for i in range(self.depth):
            x = TransformerBlock(
                self.dim,
                self.num_heads,
                self.mlp_ratio,
                self.activation,
                self.kernel_init,
                self.norm,
                self.alpha,
                self.causal,
                self.attention_fn,
                name=f"block{i}",
            )(x, train)
        if self.final_norm:
            x = nn.LayerNorm(name="ln_f")(x)
        if self.num_outputs is not None:
            x = nn.Dense(self.num_outputs, kernel_init=self.kernel_init, name="head")(x)
        return x


# --------------------------------------------------------------------------------------------
# the coordinate check's models (``jaxinit coord-check``): everything that grows is ``width``


class _WidthMLP(nn.Module):
    """microsoft/mup's test MLP: Dense(``width``), relu, Dense(``width``), relu, Dense(10)
    readout ``head``; inputs flattened."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.width, name="Dense_0")(x))
        x = nn.relu(nn.Dense(self.width, name="Dense_1")(x))
        return nn.Dense(10, name="head")(x)


class _WidthCNN(nn.Module):
    """Conv(``width``, 3x3), relu, Conv(``width``, 3x3), relu, global mean pool, Dense(10)
    readout ``head``; channels-last images."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(self.width, (3, 3), name="conv0")(x))
        x = nn.relu(nn.Conv(self.width, (3, 3), name="conv1")(x))
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


class _ByteTransformer(nn.Module):
    """A causal byte-level language model: Embed(256, ``width``) plus a learned position
    embedding, ``blocks`` pre-LayerNorm blocks (causal ``nn.MultiHeadDotProductAttention``
    with ``heads`` heads, Dense(4 ``width``), relu, Dense(``width``), both residual), a final
    LayerNorm and a Dense(256) readout ``head``: logits for the next byte at each position.

    The number of heads is fixed and the head dimension is ``ceil(width / heads)``, so that
    the shapes at ``width`` and ``width + 1`` differ along fan-in and fan-out only and
    :func:`jaxinit.mup.roles` infers the attention kernels as hidden. With
    ``base_width``, attention logits are ``q.k * sqrt(d0) / d`` (μP's ``1/d``, equal to the
    usual ``1/sqrt(d)`` at the base head dimension ``d0``); without it, ``q.k / sqrt(d)``.
    """

    width: int
    heads: int = 4
    blocks: int = 1
    base_width: int | None = None

    def _head_dim(self, width: int) -> int:
        return -(-width // self.heads)

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        d = self._head_dim(self.width)
        scale = 1.0
        if self.base_width is not None:
            scale = (self._head_dim(self.base_width) / d) ** 0.5

        def attention(q, k, v, **kwargs):
            return nn.dot_product_attention(q * scale, k, v, **kwargs)

        x = nn.Embed(256, self.width, name="embed")(tokens)
        length = tokens.shape[-1]
        x = x + nn.Embed(length, self.width, name="pos")(jax.numpy.arange(length))[None]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.blocks):
            h = nn.LayerNorm(name=f"block{i}_ln1")(x)
            h = nn.MultiHeadDotProductAttention(
                self.heads,
                qkv_features=self.heads * d,
                out_features=self.width,
                attention_fn=attention,
                name=f"block{i}_attn",
            )(h, mask=mask)
            x = x + h
            h = nn.LayerNorm(name=f"block{i}_ln2")(x)
            h = nn.relu(nn.Dense(4 * self.width, name=f"block{i}_mlp_in")(h))
            x = x + nn.Dense(self.width, name=f"block{i}_mlp_out")(h)
        return nn.Dense(256, name="head")(nn.LayerNorm(name="ln_f")(x))


# --------------------------------------------------------------------------------------------
# NNX


class NNXMLP(nnx.Module):
    """NNX version of :class:`MLP`; layers ``layers/0`` ... and ``head``."""

    def __init__(
        self,
        in_features: int,
        depth: int = 50,
        width: int = 512,
        activation: Activation = nnx.relu,
        kernel_init: Callable[..., Any] = _DEFAULT_INIT,
        num_outputs: int | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        _check_int("NNXMLP", "depth", depth, 1)
        _check_int("NNXMLP", "width", width, 1)
        sizes = [in_features] + [width] * depth
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=kernel_init, rngs=rngs)
                for a, b in itertools.pairwise(sizes)
            ]
        )
        self.head = (
            nnx.Linear(width, num_outputs, kernel_init=kernel_init, rngs=rngs)
            if num_outputs is not None
            else None
        )
        self.activation = activation
        self.kernel_init = kernel_init

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for layer in self.layers:
            x = self.activation(layer(x))
        return x if self.head is None else self.head(x)


class NNXConvNet(nnx.Module):
    """NNX version of :class:`ConvNet`; layers ``convs/0`` ... ``convs/3`` and ``head``."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: Sequence[int] = _FASTAI_CHANNELS,
        kernel_sizes: Sequence[int] = _FASTAI_KERNELS,
        activation: Activation = nnx.relu,
        kernel_init: Callable[..., Any] = _DEFAULT_INIT,
        *,
        rngs: nnx.Rngs,
    ):
        _check_channels("NNXConvNet", channels, kernel_sizes)
        ins = [in_channels, *channels[:-1]]
        self.convs = nnx.List(
            [
                nnx.Conv(
                    a, b, (k, k), strides=2, padding=k // 2, kernel_init=kernel_init, rngs=rngs
                )
                for a, b, k in zip(ins, channels, kernel_sizes, strict=True)
            ]
        )
        self.head = nnx.Linear(channels[-1], num_classes, kernel_init=kernel_init, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = self.activation(conv(x))
        return self.head(x.mean(axis=(1, 2)))


class _Identity(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class NNXResBlock(nnx.Module):
    """NNX version of :class:`ResBlock` (same sub-layer names; ``bn1`` normalizes the input
    with ``preact=True``)."""

    def __init__(
        self,
        in_features: int,
        features: int,
        strides: int = 1,
        batch_norm: bool = False,
        activation: Activation = nnx.relu,
        kernel_init: Callable[..., Any] = _DEFAULT_INIT,
        circular: bool = False,
        preact: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        preact = check_bool("NNXResBlock", "preact", preact)

        def conv(a, b, k, s):
            return nnx.Conv(
                a,
                b,
                (k, k),
                strides=s,
                padding="CIRCULAR" if circular else k // 2,
                kernel_init=kernel_init,
                use_bias=not batch_norm,
                rngs=rngs,
            )

        def norm(n):
            return nnx.BatchNorm(n, rngs=rngs) if batch_norm else _Identity()

        self.conv1 = conv(in_features, features, 3, strides)
        self.bn1 = norm(in_features if preact else features)
        self.conv2 = conv(features, features, 3, 1)
        self.bn2 = norm(features)
        if in_features != features or strides != 1:
            self.proj = conv(in_features, features, 1, strides)
            self.bn_proj = None if preact else norm(features)
        else:
            self.proj = None
            self.bn_proj = None
        self.activation = activation
        self.preact = preact

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.preact:
            y = self.activation(self.bn1(x))
            h = self.conv2(self.activation(self.bn2(self.conv1(y))))
            return h + (x if self.proj is None else self.proj(y))
        y = self.activation(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.proj is not None and self.bn_proj is not None:
            x = self.bn_proj(self.proj(x))
        return self.activation(y + x)


class NNXResNet(nnx.Module):
    """NNX version of :class:`ResNet` (blocks in the list ``blocks``, so a linen path
    ``block{j}/...`` is ``blocks/{j}/...`` here; the other names are linen's);
    ``model.train()`` / ``model.eval()`` switch BatchNorm."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        batch_norm: bool = False,
        activation: Activation = nnx.relu,
        kernel_init: Callable[..., Any] = _DEFAULT_INIT,
        blocks: int = 1,
        circular: bool = False,
        preact: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        preact = check_bool("NNXResNet", "preact", preact)
        self.stem = nnx.Conv(
            in_channels,
            widths[0],
            (3, 3),
            padding="CIRCULAR" if circular else 1,
            kernel_init=kernel_init,
            use_bias=not batch_norm,
            rngs=rngs,
        )
        bn = batch_norm and not preact
        self.stem_bn = nnx.BatchNorm(widths[0], rngs=rngs) if bn else _Identity()
        self.blocks = nnx.List(
            [
                NNXResBlock(
                    a, b, stride, batch_norm, activation, kernel_init, circular, preact, rngs=rngs
                )
                for _, a, b, stride in _stages(widths, blocks)
            ]
        )
        final = None  # built only for v2: v1 draws the head's weights as before
        if preact:
            final = nnx.BatchNorm(widths[-1], rngs=rngs) if batch_norm else _Identity()
        self.bn_final = final
        self.head = nnx.Linear(widths[-1], num_classes, kernel_init=kernel_init, rngs=rngs)
        self.activation = activation
        self.widths = tuple(widths)
        self.batch_norm = batch_norm
        self.kernel_init = kernel_init
        self.num_blocks = blocks
        self.circular = circular
        self.preact = preact

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        if not self.preact:
            x = self.activation(self.stem_bn(x))
        for block in self.blocks:
            x = block(x)
        if self.bn_final is not None:
            x = self.activation(self.bn_final(x))
        return self.head(x.mean(axis=(1, 2)))


class NNXTransformerBlock(nnx.Module):
    """NNX version of :class:`TransformerBlock` (``nnx.MultiHeadAttention``, whose
    query/key/value/out are LinearGeneral)."""

    def __init__(
        self,
        dim: int = 64,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        activation: Activation = nnx.gelu,
        kernel_init: Callable[..., Any] = _DEFAULT_INIT,
        norm: str = "pre",
        alpha: float = 1.0,
        causal: bool = False,
        attention_fn: Callable[..., jax.Array] | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        _check_norm("NNXTransformerBlock", norm)
        kwargs: dict[str, Any] = {} if attention_fn is None else {"attention_fn": attention_fn}
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads,
            dim,
            qkv_features=dim,
            kernel_init=kernel_init,
            decode=False,
            rngs=rngs,
            **kwargs,
        )
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = nnx.Linear(dim, mlp_ratio * dim, kernel_init=kernel_init, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_ratio * dim, dim, kernel_init=kernel_init, rngs=rngs)
        self.activation = activation
        self.dim = dim
        self.mlp_ratio = mlp_ratio
        self.kernel_init = kernel_init
        self.norm = norm
        self.alpha = alpha
        self.causal = causal

    def _mlp(self, h: jax.Array) -> jax.Array:
        return self.mlp_out(self.activation(self.mlp_in(h)))

    def __call__(self, x: jax.Array) -> jax.Array:
        mask = nnx.make_causal_mask(x[..., 0]) if self.causal else None
        if self.norm == "pre":
            x = x + self.alpha * self.attn(self.ln1(x), mask=mask)
            return x + self.alpha * self._mlp(self.ln2(x))
        x = self.ln1(x + self.alpha * self.attn(x, mask=mask))
        return self.ln2(x + self.alpha * self._mlp(x))


class NNXTransformer(nnx.Module):
    """NNX version of :class:`Transformer`: blocks are the attributes ``block0`` ...
    (so parameter paths match linen's), then ``ln_f`` and ``head`` (``None`` when absent),
    and ``embed`` with ``vocab_size``."""

    def __init__(
        self,
        dim: int = 64,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        activation: Activation = nnx.gelu,
        kernel_init: Callable[..., Any] = _DEFAULT_INIT,
        norm: str = "pre",
        alpha: float = 1.0,
        causal: bool = False,
        attention_fn: Callable[..., jax.Array] | None = None,
        vocab_size: int | None = None,
        num_outputs: int | None = None,
        final_norm: bool = True,
        *,
        rngs: nnx.Rngs,
    ):
        _check_int("NNXTransformer", "depth", depth, 1)
        _check_norm("NNXTransformer", norm)
        self.embed = nnx.Embed(vocab_size, dim, rngs=rngs) if vocab_size is not None else None
        for i in range(depth):
            block = NNXTransformerBlock(
                dim,
                num_heads,
                mlp_ratio,
                activation,
                kernel_init,
                norm,
                alpha,
                causal,
                attention_fn,
                rngs=rngs,
            )
            setattr(self, f"block{i}", block)
        self.ln_f = nnx.LayerNorm(dim, rngs=rngs) if final_norm else None
        self.head = (
            nnx.Linear(dim, num_outputs, kernel_init=kernel_init, rngs=rngs)
            if num_outputs is not None
            else None
        )
        self.depth = depth
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.activation = activation
        self.kernel_init = kernel_init
        self.norm = norm
        self.alpha = alpha
        self.causal = causal
        self.vocab_size = vocab_size

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.embed is not None:
            x = self.embed(x)
        for i in range(self.depth):
            x = getattr(self, f"block{i}")(x)
        if self.ln_f is not None:
            x = self.ln_f(x)
        return x if self.head is None else self.head(x)


# meanfield.of_model's builders for these classes (that module reads the models, never imports
# them); imported last, when every class above exists
from . import model_maps as _model_maps  # noqa: E402, F401
