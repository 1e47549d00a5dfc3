"""Initializers that know the layer they initialize (:func:`for_layer`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from jaxinit._base import Init
from jaxinit._fans import einsum_axes
from jaxinit._layout import Layout, with_axes

from .kinds import KINDS, kind_of, weight_for

__all__ = ["for_layer"]

_NAMES = "an einsum equation such as 'bhd,hdk->bhk', or one of " + ", ".join(repr(k) for k in KINDS)


def _layout_of_module(layer: Any, param: str, batch_size: int | None) -> Layout:
    kind = kind_of(layer)
    if kind is None:
        raise TypeError(
            f"for_layer: layer={type(layer).__name__} is not a Flax layer of a known kind; pass "
            f"a linen or NNX layer of one of {sorted(KINDS)}, or {_NAMES}."
        )
    if kind.name == "attention" and param == "kernel":
        # Flax calls an attention layer's kernel_init with 2-D (in, heads * head_dim) and
        # (heads * head_dim, out) shapes, whose default axes are already the true ones.
        return Layout()
    if param not in kind.params:
        raise ValueError(
            f"for_layer: param={param!r} is not a parameter of a {kind.name} layer; use one of "
            f"{sorted(kind.params)}."
        )
    w = weight_for(layer, param)
    if w is None:
        raise ValueError(
            f"for_layer: param={param!r} of a {kind.name} layer is a vector, which has no fans; "
            "initialize it directly (jaxinit.zeros(), jaxinit.ones())."
        )
    flat = 0
    if kind.name == "dense_general" and param == "kernel" and w.batch_axis:
        flat = batch_size or _nnx_batch(layer) or -1
    return Layout(w.in_axis, w.out_axis, w.batch_axis, w.rest, flat)


def _nnx_batch(layer: Any) -> int:
    if isinstance(layer, nnx.Module):
        sizes = getattr(layer, "batch_axis", {}) or {}
        return math.prod(int(v) for v in dict(sizes).values())
    return 0


def _layout_of_name(layer: str, batch_size: int | None) -> Layout:
    if "->" in layer:
        ins, outs, batch = einsum_axes(layer, 1, fn="for_layer", arg="layer")
        return Layout(ins, outs, batch)
    kind = KINDS.get(layer)
    if kind is None:
        raise ValueError(
            f"for_layer: layer={layer!r} is not accepted; use a Flax layer, or {_NAMES}."
        )
    if kind.name == "dense_general":
        if batch_size is None:
            return Layout()
        return Layout(-2, -1, 0, flat_batch=batch_size)
    if kind.name == "attention":
        return Layout()
    w = kind.params.get("kernel") or kind.params.get("embedding")
    if w is None:
        raise ValueError(
            f"for_layer: layer={layer!r} has no kernel whose fans depend on its layout "
            "(its kernel is given by the equation: pass the einsum equation instead)."
            if kind.name == "einsum"
            else f"for_layer: a {layer} layer has only vector parameters, which have no fans."
        )
    return Layout(w.in_axis, w.out_axis, w.batch_axis, w.rest)


def for_layer(
    init: Callable[..., jax.Array],
    layer: Any,
    *,
    param: str = "kernel",
    batch_size: int | None = None,
) -> Init:
    """``init``, drawn with the fans of the layer it initializes.

    An initializer sees only a shape, and computes fans as if the weight were ``(in, out)`` or
    ``(*spatial, in, out)``. Some Flax layers pass other layouts to ``kernel_init``, and their
    weights then get the wrong variance from *any* fan-based initializer, Flax's own defaults
    included:

    ====================================  ==============================  ====================
    layer                                 shape given to ``kernel_init``  fan_in counted
    ====================================  ==============================  ====================
    ``Einsum("bhd,hdk->bhk", (h, d, k))``  ``(h, d, k)``                   ``h * d`` (true:
                                                                          ``d``)
    ``ConvLocal`` (linen)                 ``(*positions, patch*in, out)``  ``positions * patch
                                                                          * in`` (true:
                                                                          ``patch * in``)
    ``DenseGeneral(batch_dims=...)``      ``(batch * in, out)``           ``batch * in`` (true:
                                                                          ``in``)
    ====================================  ==============================  ====================

    The returned initializer draws each independent copy (a head, a position, a batch entry)
    as one ``(*receptive, prod(in), prod(out))`` weight with its own key, so variance-scaling
    initializers get the true fans and ``orthogonal`` gives an orthogonal matrix per copy. For
    Dense, Conv, ConvTranspose and attention layers (whose ``kernel_init`` already sees the
    true layout) it draws exactly what ``init`` draws.

    It accepts both the shape Flax passes to ``kernel_init`` and the parameter's own shape (as
    :func:`jaxinit.tree.reinit` passes it), so it serves in ``kernel_init=`` and in recipes.

    Args:
      init: Any initializer (jaxinit's or ``jax.nn.initializers``').
      layer: The layer: a linen module (bound or not; only its configuration is read), an NNX
        module, an einsum equation ``"x,w->y"`` whose second operand is the weight (Flax
        ``Einsum``'s ``einsum_str``), or a layer-kind name (``"conv_local"``,
        ``"dense_general"``, ...).
      param: The parameter of ``layer`` (``"kernel"``; ``"query/kernel"`` ... for an attention
        layer's parameters at their own 3-D shapes).
      batch_size: For a DenseGeneral / LinearGeneral with batch dimensions: the product of the
        batch sizes, which Flax folds into the first axis of the shape it passes (an NNX
        ``LinearGeneral`` knows it; a linen ``DenseGeneral`` does not).

    Returns:
      An :class:`~jaxinit.Initializer`.

    Raises:
      TypeError: ``init`` is not callable, or ``layer`` is not a known Flax layer.
      ValueError: an equation or kind name that is not accepted, a ``param`` the layer does not
        have, a vector parameter, or a ``batch_size`` that does not divide the folded axis.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> import jaxinit
      >>> eq = "bhd,hdk->bhk"  # 8 heads, d = 64 -> k = 16
      >>> init = jaxinit.for_layer(jaxinit.lecun_normal(), eq)
      >>> layer = nn.Einsum((8, 64, 16), eq, kernel_init=init)
      >>> w = layer.init(jax.random.key(0), jnp.ones((1, 8, 64)))["params"]["kernel"]
      >>> w.shape, bool(abs(float(w.std()) * 64**0.5 - 1.0) < 0.05)  # std = 1 / sqrt(d)
      ((8, 64, 16), True)
    """
    if not callable(init):
        raise TypeError(
            f"for_layer: init={init!r} is not callable; pass an initializer such as "
            "jaxinit.he_normal()."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"for_layer: batch_size={batch_size!r} must be an int >= 1.")
    if isinstance(layer, str):
        layout = _layout_of_name(layer, batch_size)
        describe: Any = layer
    else:
        layout = _layout_of_module(layer, param, batch_size)
        describe = f"<{type(layer).__name__}>"
    return with_axes(init, layout, name="for_layer", describe=describe)
