"""The mean-field maps of :mod:`jaxinit.models`, for :func:`jaxinit.meanfield.of_model`.

The maps themselves are framework-free (:mod:`jaxinit.meanfield`); this module reads each
model's configuration (widths, ``kernel_init``, activation, norms, ``alpha``) and composes them,
and registers one builder per model class, so that the mean-field module never imports the
models. ``of_model``'s docstring states what each map assumes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..meanfield import (
    _MODEL_MAPS,
    ActivationMap,
    AttentionMap,
    ConvMap,
    DenseMap,
    LayerMap,
    LayerNormMap,
    Map,
    Network,
    ParallelMap,
    ResidualMap,
    _activation_map,
    _check_finite,
    _coverage,
    _init_sigma_w,
    avg_pool,
    batch_norm,
    compose,
)
from . import models as m


def _input_shape(model: Any, input_shape: Any, rank: int, what: str) -> tuple[int, ...]:
    name = type(model).__name__
    if input_shape is None:
        raise ValueError(f"of_model: {name} needs input_shape={what} (one example, no batch).")
    shape = tuple(input_shape)
    if len(shape) != rank or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            f"of_model: input_shape={input_shape!r} must be {what} for {name} (positive ints)."
        )
    return tuple(int(d) for d in shape)


def _mlp_maps(model: Any, m: Any, input_shape: Any) -> Network:
    if isinstance(model, m.MLP):
        rank = 1 if input_shape is None else max(len(tuple(input_shape)), 1)
        shape = _input_shape(model, input_shape, rank, "(features, ...)")
        fan_in, depth, width = math.prod(shape), model.depth, model.width
        init, linen = model.kernel_init, True
    else:
        fan_in, depth = model.layers[0].in_features, len(model.layers)
        width, init, linen = model.layers[0].out_features, model.kernel_init, False
    act = _activation_map("of_model", model.activation, None)
    maps: list[Map] = []
    for i in range(depth):
        if linen:
            name = f"layers/dense[{i - 1}]" if model.scan and i else f"Dense_{i}"
        else:
            name = f"layers/{i}"
        sw = _init_sigma_w(init, fan_in if i == 0 else width, width, name)
        maps += [LayerMap(name, DenseMap(sw)), act]
    head = getattr(model, "num_outputs", None) if linen else model.head
    if head is not None:
        n_out = head if linen else head.out_features
        maps.append(LayerMap("head", DenseMap(_init_sigma_w(init, width, n_out, "head"))))
    return compose(*maps)


def _resnet_maps(
    model: Any, m: Any, input_shape: Any, batch_size: int | None, spatial_corr: float
) -> Network:
    shape = _input_shape(model, input_shape, 3, "(height, width, channels)")
    linen = isinstance(model, m.ResNet)
    widths, init, bn = tuple(model.widths), model.kernel_init, model.batch_norm
    blocks = model.blocks if linen else model.num_blocks
    preact = bool(model.preact)
    act = _activation_map("of_model", model.activation, None)
    size = list(shape[:2])

    def norm() -> list[Map]:
        return [batch_norm(batch_size, 1e-5)] if bn else []  # Flax's epsilon

    def conv_map(name: str, c_in: int, c_out: int, k: int, stride: int, normed: bool) -> Map:
        """The conv's map, then BatchNorm's if the model has them and ``normed`` (a norm
        follows this conv); ``size`` becomes its output's."""
        cover = 1.0
        for axis in range(2):
            if model.circular:  # every position sees a whole patch
                f, size[axis] = 1.0, -(-size[axis] // stride)
            else:
                f, size[axis] = _coverage(size[axis], k, stride, k // 2)
            cover *= f
        sw = _init_sigma_w(init, k * k * c_in, k * k * c_out, name)
        out: Map = LayerMap(name, ConvMap(sw, 0.0, cover))
        return compose(out, *norm()) if normed and bn else out

    def block(prefix: str, c_in: int, c_out: int, stride: int) -> list[Map]:
        """v1: ``act(residual(branch))`` or ``act(parallel(branch, proj))``. v2: the input's
        norm and act open the branch (``residual``) or precede both paths (``parallel``),
        and nothing follows the sum."""
        before = list(size)
        pre = [*norm(), act] if preact else []
        branch = compose(
            conv_map(f"{prefix}/conv1", c_in, c_out, 3, stride, True),
            act,
            conv_map(f"{prefix}/conv2", c_out, c_out, 3, 1, not preact),
        )
        post = [] if preact else [act]
        if c_in == c_out and stride == 1:
            return [ResidualMap(compose(*pre, branch)), *post]
        after, size[:] = list(size), before
        proj = conv_map(f"{prefix}/proj", c_in, c_out, 1, stride, not preact)
        size[:] = after
        return [*pre, ParallelMap((branch, proj)), *post]

    maps: list[Map] = [conv_map("stem", shape[2], widths[0], 3, 1, not preact)]
    if not preact:
        maps.append(act)
    for j, (name, c_in, c_out, stride) in enumerate(m._stages(widths, blocks)):
        maps += block(name if linen else f"blocks/{j}", c_in, c_out, stride)
    if preact:
        maps += [*norm(), act]  # bn_final
    maps.append(avg_pool(size[0] * size[1], spatial_corr))
    n_out = model.num_classes if linen else model.head.out_features
    maps.append(LayerMap("head", DenseMap(_init_sigma_w(init, widths[-1], n_out, "head"))))
    return compose(*maps)


def _block_maps(
    cfg: dict[str, Any], tokens: int, prefix: str, uniform: bool, act: ActivationMap
) -> Network:
    dim, hidden, init = cfg["dim"], cfg["mlp_ratio"] * cfg["dim"], cfg["kernel_init"]
    ln, a = LayerNormMap(True, 1e-6), _check_finite("of_model", "alpha", cfg["alpha"])

    def sw(name: str, fan_in: int, fan_out: int) -> float:
        return _init_sigma_w(init, fan_in, fan_out, prefix + name)

    s_q, s_k, s_v, s_o = (sw(f"attn/{n}", dim, dim) for n in ("query", "key", "value", "out"))
    attn = compose(
        LayerMap(prefix + "attn/query", DenseMap(s_q), side=True),
        LayerMap(prefix + "attn/key", DenseMap(s_k), side=True),
        LayerMap(prefix + "attn/value", DenseMap(s_v), side=True),
        LayerMap(
            prefix + "attn/out",
            AttentionMap(tokens, s_v, s_o, 0.0, 0.0 if uniform else s_q, 0.0 if uniform else s_k),
        ),
    )
    mlp = compose(
        LayerMap(prefix + "mlp_in", DenseMap(sw("mlp_in", dim, hidden))),
        act,
        LayerMap(prefix + "mlp_out", DenseMap(sw("mlp_out", hidden, dim))),
    )
    if cfg["norm"] == "pre":
        return compose(ResidualMap(compose(ln, attn), a), ResidualMap(compose(ln, mlp), a))
    return compose(ResidualMap(attn, a), ln, ResidualMap(mlp, a), ln)


def _transformer_maps(model: Any, m: Any, input_shape: Any, uniform: bool) -> Network:
    block = isinstance(model, m.TransformerBlock | m.NNXTransformerBlock)
    vocab = None if block else model.vocab_size
    what = "(tokens,)" if vocab is not None else "(tokens, dim)"
    shape = _input_shape(model, input_shape, 1 if vocab is not None else 2, what)
    cfg = {
        k: getattr(model, k)
        for k in ("dim", "mlp_ratio", "kernel_init", "activation", "norm", "alpha")
    }
    act = _activation_map("of_model", cfg["activation"], None)  # one per model: jits phi
    if block:
        return _block_maps(cfg, shape[0], "", uniform, act)
    maps: list[Map] = [
        _block_maps(cfg, shape[0], f"block{i}/", uniform, act) for i in range(model.depth)
    ]
    linen = isinstance(model, m.Transformer)
    final_norm = model.final_norm if linen else model.ln_f is not None
    if final_norm:
        maps.append(LayerNormMap(True, 1e-6))
    n_out = model.num_outputs if linen else getattr(model.head, "out_features", None)
    if n_out is not None:
        sw = _init_sigma_w(model.kernel_init, model.dim, n_out, "head")
        maps.append(LayerMap("head", DenseMap(sw)))
    return compose(*maps)


def _mlp(model: Any, *, input_shape: Any, **_: Any) -> Network:
    return _mlp_maps(model, m, input_shape)


def _resnet(
    model: Any, *, input_shape: Any, batch_size: int | None, spatial_corr: float, **_: Any
) -> Network:
    if batch_size is not None:
        batch_norm(batch_size)  # validates
    rho = _check_finite("of_model", "spatial_corr", spatial_corr)
    return _resnet_maps(model, m, input_shape, batch_size, rho)


def _transformer(model: Any, *, input_shape: Any, uniform_attention: bool, **_: Any) -> Network:
    return _transformer_maps(model, m, input_shape, uniform_attention)


_MODEL_MAPS.update(
    {
        m.MLP: _mlp,
        m.NNXMLP: _mlp,
        m.ResNet: _resnet,
        m.NNXResNet: _resnet,
        m.Transformer: _transformer,
        m.NNXTransformer: _transformer,
        m.TransformerBlock: _transformer,
        m.NNXTransformerBlock: _transformer,
    }
)
