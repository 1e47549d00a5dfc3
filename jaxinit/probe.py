"""Observe and rescale layer outputs in forward order, for Flax linen and NNX.

One mechanism serves :func:`jaxinit.lsuv` and the per-layer analyses: run a model's forward pass
and, for every *selected* layer, hand its output to a function that may observe it, replace it,
or rerun the layer with rescaled parameters, before the forward pass continues.

Layers are named by their ``"/"``-joined module path (``"Dense_0"``, ``"block1/conv"``,
``"layers/3"`` for the fourth element of an ``nnx.List``; the root module is ``""``).

``select`` chooses the layers:

- ``None`` (default): every layer that owns a ``kernel`` parameter itself: Dense/Linear,
  DenseGeneral/LinearGeneral, Conv, ConvTranspose, ConvLocal, Einsum, their subclasses (also those
  that inherit ``__call__``), and any custom module with a ``kernel`` parameter.
- a glob pattern ``str`` matched against the whole path: ``*`` matches within one path segment
  (not ``/``), ``?`` one character of a segment, ``**`` any number of characters including ``/``,
  ``**/`` zero or more leading segments. ``"Dense_*"`` matches ``Dense_3`` but not
  ``Dense_3/inner``; ``"**/conv"`` matches ``conv`` and ``block1/conv``.
- a sequence of such patterns: a layer is selected if any pattern matches.
- a predicate ``select(path: str, module) -> bool``, called with the bound linen module or the
  NNX module, e.g. ``lambda path, m: isinstance(m, ConvBlock)``.

Hooks run at the end of each selected layer's call, so nested selected layers are seen inner
first; this is the order :func:`layer_paths` returns. A layer called several times (shared
weights) is seen at each call, under the same path; a layer that is never called is never seen.

For NNX the forward pass runs on a copy of the model: the model itself is never mutated (neither
by hooks nor by the forward pass; BatchNorm running averages and RNG counters of the given model
stay as they were), so the functions here are pure and can be used inside ``jax.jit``,
``jax.vmap`` and ``jax.grad``. Subclasses that inherit ``__call__`` (``class MyLinear(nnx.Linear):
pass``) are caught, which ``nnx.capture`` misses.
"""

from jaxinit._flax.adapter import is_linen, is_nnx
from jaxinit._flax.kinds import has_bias, is_affine, owns_kernel
from jaxinit._flax.probe import (
    COLLECTION,
    Hook,
    LayerCall,
    apply_with_hook,
    capture,
    intercept,
    layer_paths,
)
from jaxinit._flax.select import Select, compile_select, hashable_select, pattern_predicate

__all__ = [
    "COLLECTION",
    "Hook",
    "LayerCall",
    "Select",
    "apply_with_hook",
    "capture",
    "compile_select",
    "has_bias",
    "hashable_select",
    "intercept",
    "is_affine",
    "is_linen",
    "is_nnx",
    "layer_paths",
    "owns_kernel",
    "pattern_predicate",
]
