"""The layer-kind table: Flax's parameterized layers, their parameters and weight axes.

One entry per kind of layer, with its linen and NNX classes, the names of its parameters
(relative to the layer; ``"query/kernel"`` for a sub-layer), and for each weight-like
parameter the axes that hold its inputs, outputs and independent copies (:class:`Weight`).
Vector parameters (biases, norm scales) have ``None``.

Axis conventions (negative axes count from the end, so one entry serves every spatial rank):

========================  =========================  ==========================================
kind                      weight shape               axes
========================  =========================  ==========================================
dense                     ``(in, out)``              in -2, out -1
dense_general             ``(in, out)`` (default)    in -2, out -1; other configurations:
                                                     :func:`weight_for` reads the module
conv, conv_transpose      ``(*spatial, in, out)``    in -2, out -1, spatial axes are the
                                                     receptive field (they count in both fans)
conv_local                ``(*positions, patch*in,   in -2, out -1, position axes are batch
                          out)``                     axes (independent weights per position)
einsum                    set by ``einsum_str``      :func:`einsum_weight` reads the string
embed                     ``(vocab, features)``      in 0, out 1: the embedding is the linear
                                                     map of a one-hot input, ``onehot @ E``
attention query/key/value ``(in, heads, head_dim)``  in -3, out (-2, -1)
attention out             ``(heads, head_dim, out)`` in (-3, -2), out -1
========================  =========================  ==========================================

``affine`` marks the layers whose output is ``linear(x; kernel) + bias`` when they run their
library ``__call__``: scaling kernel and bias by ``s`` and adding ``c`` to the bias turns the
output ``y`` into exactly ``s * y + c`` (the property LSUV relies on). Norm layers, embeddings
and attention are not affine in this sense.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import flax.linen as nn
import numpy as np
from flax import nnx

from jaxinit._fans import compute_fans, einsum_axes

__all__ = [
    "KINDS",
    "LayerKind",
    "Weight",
    "base_type",
    "einsum_weight",
    "has_bias",
    "is_affine",
    "kind_of",
    "n_out_axes",
    "own_param",
    "owns_kernel",
    "weight_for",
]

Axes = int | tuple[int, ...]


class Weight(NamedTuple):
    """The axes of a weight: ``in_axis``, ``out_axis``, ``batch_axis`` (negative: from the
    end), and what the remaining axes are: ``"receptive"`` (a conv's spatial axes, counted in
    both fans, as :func:`jaxinit.compute_fans` does) or ``"batch"`` (independent copies)."""

    in_axis: Axes = -2
    out_axis: Axes = -1
    batch_axis: tuple[int, ...] = ()
    rest: Literal["receptive", "batch"] = "receptive"

    def fan_axes(self, ndim: int) -> dict[str, Any]:
        """Keyword arguments ``in_axis``, ``out_axis``, ``batch_axis`` for a weight of rank
        ``ndim``, for :func:`jaxinit.compute_fans` and :func:`jaxinit.variance_scaling`.

        Example:
          >>> import jaxinit
          >>> from jaxinit._flax.kinds import KINDS
          >>> axes = KINDS["conv_local"].params["kernel"].fan_axes(4)
          >>> axes
          {'in_axis': -2, 'out_axis': -1, 'batch_axis': (0, 1)}
          >>> jaxinit.compute_fans((8, 8, 18, 4), **axes)
          (18, 4)
        """
        named = {a % ndim for a in _tuple(self.in_axis) + _tuple(self.out_axis)}
        batch = tuple(sorted(a % ndim for a in self.batch_axis))
        if self.rest == "batch":
            batch = tuple(a for a in range(ndim) if a not in named)
        return {"in_axis": self.in_axis, "out_axis": self.out_axis, "batch_axis": batch}

    def fans(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of a weight of this ``shape``."""
        return compute_fans(shape, **self.fan_axes(len(shape)))


def _tuple(axes: Axes) -> tuple[int, ...]:
    return (axes,) if isinstance(axes, int) else tuple(axes)


class LayerKind(NamedTuple):
    """One kind of layer: ``name``, its ``linen`` and ``nnx`` classes (subclasses belong to
    the kind too), its ``params`` (name relative to the layer -> :class:`Weight`, or None for
    a vector parameter) and whether it is ``affine`` (see the module docstring)."""

    name: str
    linen: tuple[type, ...]
    nnx: tuple[type, ...]
    params: Mapping[str, Weight | None]
    affine: bool


_DENSE = Weight()
_QKV = Weight(in_axis=-3, out_axis=(-2, -1))
_OUT = Weight(in_axis=(-3, -2), out_axis=-1)


def _attention_params() -> dict[str, Weight | None]:
    out: dict[str, Weight | None] = {}
    for sub, weight in (("query", _QKV), ("key", _QKV), ("value", _QKV), ("out", _OUT)):
        out[f"{sub}/kernel"] = weight
        out[f"{sub}/bias"] = None
    return out


_NORM = {"scale": None, "bias": None}

KINDS: dict[str, LayerKind] = {
    k.name: k
    for k in (
        LayerKind("dense", (nn.Dense,), (nnx.Linear,), {"kernel": _DENSE, "bias": None}, True),
        LayerKind(
            "dense_general",
            (nn.DenseGeneral,),
            (nnx.LinearGeneral,),
            {"kernel": _DENSE, "bias": None},
            True,
        ),
        LayerKind("conv", (nn.Conv,), (nnx.Conv,), {"kernel": _DENSE, "bias": None}, True),
        LayerKind(
            "conv_transpose",
            (nn.ConvTranspose,),
            (nnx.ConvTranspose,),
            {"kernel": _DENSE, "bias": None},
            True,
        ),
        LayerKind(
            "conv_local",
            (nn.ConvLocal,),
            (),  # NNX has no locally connected layer
            {"kernel": Weight(rest="batch"), "bias": None},
            True,
        ),
        LayerKind("einsum", (nn.Einsum,), (nnx.Einsum,), {"kernel": None, "bias": None}, True),
        LayerKind(
            "embed", (nn.Embed,), (nnx.Embed,), {"embedding": Weight(in_axis=0, out_axis=1)}, False
        ),
        LayerKind("layer_norm", (nn.LayerNorm,), (nnx.LayerNorm,), _NORM, False),
        LayerKind("rms_norm", (nn.RMSNorm,), (nnx.RMSNorm,), {"scale": None}, False),
        LayerKind("group_norm", (nn.GroupNorm,), (nnx.GroupNorm,), _NORM, False),
        LayerKind("batch_norm", (nn.BatchNorm,), (nnx.BatchNorm,), _NORM, False),
        LayerKind(
            "attention",
            (nn.MultiHeadDotProductAttention,),
            (nnx.MultiHeadAttention,),
            _attention_params(),
            False,
        ),
    )
}
"""Every layer kind by name."""


def kind_of(module: Any) -> LayerKind | None:
    """The kind of a linen or NNX ``module`` (or class), by its most derived known base.

    Example:
      >>> import flax.linen as nn
      >>> from jaxinit._flax.kinds import kind_of
      >>> class MyDense(nn.Dense): pass
      >>> kind_of(MyDense).name, kind_of(nn.Conv(4, (3,))).name, kind_of(nn.relu)
      ('dense', 'conv', None)
    """
    cls = base_type(module)
    for base in getattr(cls, "__mro__", ()):
        for kind in KINDS.values():
            if base in kind.linen or base in kind.nnx:
                return kind
    return None


def einsum_weight(einsum_str: str) -> Weight:
    """The axes of an Einsum kernel (the second operand) from the equation
    (:func:`jaxinit._fans.einsum_axes`): labels shared with the input only are input axes,
    with the output only output axes, with both batch axes; labels in neither are summed out
    (treated as receptive field).

    Example:
      >>> from jaxinit._flax.kinds import einsum_weight
      >>> einsum_weight("bhd,hdk->bhk")  # per-head projections
      Weight(in_axis=(1,), out_axis=(2,), batch_axis=(0,), rest='receptive')
    """
    ins, outs, batch = einsum_axes(einsum_str, 1, fn="Einsum", arg="einsum_str")
    return Weight(in_axis=ins, out_axis=outs, batch_axis=batch)


def weight_for(module: Any, name: str) -> Weight | None:
    """The :class:`Weight` of parameter ``name`` of ``module`` (linen or NNX), reading the
    module's configuration where the table's default does not fix it (DenseGeneral /
    LinearGeneral with several input or output axes or batch axes, Einsum); None for a
    vector parameter or an unknown layer.

    Example:
      >>> from flax import nnx
      >>> from jaxinit._flax.kinds import weight_for
      >>> layer = nnx.LinearGeneral((3, 6), 4, axis=(-2, -1), rngs=nnx.Rngs(0))
      >>> layer.kernel.shape, weight_for(layer, "kernel")
      ((3, 6, 4), Weight(in_axis=(-3, -2), out_axis=(-1,), batch_axis=(), rest='receptive'))
    """
    kind = kind_of(module)
    if kind is None:
        return None
    if kind.name == "einsum" and name == "kernel":
        return einsum_weight(module.einsum_str)
    if kind.name == "dense_general" and name == "kernel":
        if isinstance(module, nnx.Module):
            n_in = len(_tuple(module.in_features))  # pyright: ignore[reportAttributeAccessIssue]
            n_out = len(_tuple(module.out_features))  # pyright: ignore[reportAttributeAccessIssue]
            n_batch = len(module.batch_axis)  # pyright: ignore[reportAttributeAccessIssue]
        else:
            n_in = len(_tuple(module.axis))
            n_out = len(_tuple(module.features))
            n_batch = len(module.batch_dims)
        ndim = n_batch + n_in + n_out
        return Weight(
            in_axis=tuple(range(-n_out - n_in, -n_out)),
            out_axis=tuple(range(-n_out, 0)),
            batch_axis=tuple(range(-ndim, -ndim + n_batch)),
        )
    return kind.params.get(name)


# --------------------------------------------------------------------------------------------
# properties of one module instance


def base_type(module: Any) -> type:
    """The class of ``module`` (or ``module`` itself if it is a class), before the probe's
    hooked NNX subclass was swapped in."""
    cls = module if isinstance(module, type) else type(module)
    return getattr(cls, "_jaxinit_base", cls)


def _linen_own_params(module: nn.Module) -> Mapping[str, Any]:
    try:
        params = module.variables.get("params", {})
    except Exception:  # unbound module
        return {}
    return params if isinstance(params, Mapping) else {}


def own_param(module: Any, name: str) -> Any:
    """The array (or boxed array) of the parameter ``name`` that ``module`` (a bound linen
    module or an NNX module) owns itself, or None."""
    if isinstance(module, nn.Module):
        v = _linen_own_params(module).get(name)
        return None if v is None or isinstance(v, Mapping) else v
    v = vars(module).get(name) if hasattr(module, "__dict__") else None
    if isinstance(v, nnx.Variable):
        value = v.get_value()
        return None if value is None else value
    return None


def owns_kernel(module: Any) -> bool:
    """Whether ``module`` (linen, bound; or NNX) owns a ``kernel`` parameter itself."""
    return own_param(module, "kernel") is not None


def has_bias(module: Any) -> bool:
    """Whether ``module`` owns a ``bias`` parameter itself."""
    return own_param(module, "bias") is not None


def is_affine(module: Any) -> bool:
    """Whether ``module`` is a layer of an ``affine`` kind (Dense/Linear,
    DenseGeneral/LinearGeneral, Conv, ConvLocal, ConvTranspose, Einsum) that runs its library
    ``__call__`` (a subclass that does not override it) and owns its kernel.

    For such a layer, scaling the kernel and bias by ``s`` and adding ``c`` to the bias changes
    the output ``y`` into exactly ``s * y + c``.
    """
    kind = kind_of(module)
    if kind is None or not kind.affine:
        return False
    cls = base_type(module)
    for base in cls.__mro__:
        if base in kind.linen or base in kind.nnx:
            return cls.__call__ is base.__call__ and owns_kernel(module)
    return False


def n_out_axes(module: Any) -> int:
    """How many trailing axes of ``module``'s kernel are output axes: from the kind table
    (DenseGeneral/LinearGeneral and Einsum read their configuration); 1 for layers outside it.
    """
    w = weight_for(module, "kernel")
    if w is None or not owns_kernel(module):
        return 1
    ndim = np.ndim(own_param(module, "kernel"))
    outs = sorted(a % ndim for a in _tuple(w.out_axis))
    # the orthogonal pre-init reshapes a kernel to (inputs, outputs): outputs must trail
    return len(outs) if outs and outs == list(range(ndim - len(outs), ndim)) else 1
