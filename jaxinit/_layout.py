"""Drawing a weight whose axes are not laid out ``(*receptive, in, out)``.

Every initializer computes its fans from a shape with the default axes (inputs ``-2``,
outputs ``-1``, the rest receptive field). A per-head Einsum kernel ``(heads, d, k)``, a
locally connected kernel ``(*positions, patch * in, out)`` or a DenseGeneral kernel with batch
dimensions ``(batch, in, out)`` breaks that assumption: the heads, positions or batch count
in the fan. :func:`with_axes` wraps any initializer so that it sees what it was written for:
one matrix (or conv kernel) ``(*receptive, prod(in), prod(out))`` per independent copy, each
copy with its own key, then arranged in the weight's own layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._base import Init
from ._fans import normalize_axes
from ._types import Axes

__all__ = ["Layout", "with_axes"]


class Layout(NamedTuple):
    """The roles of a weight's axes: ``in_axis``, ``out_axis``, ``batch_axis`` (negative
    counts from the end) and ``rest``: what the other axes are, ``"receptive"`` (counted in
    both fans, like a conv's spatial axes) or ``"batch"`` (independent copies).
    ``flat_batch`` is the number of copies a Flax layer folds into the first axis of a 2-D
    shape it passes to ``kernel_init`` (DenseGeneral / LinearGeneral with batch dimensions
    call ``kernel_init`` with ``(batch * in, out)``), 0 when it does not, -1 when it does
    and the number is not known."""

    in_axis: Axes = -2
    out_axis: Axes = -1
    batch_axis: Axes = ()
    rest: str = "receptive"
    flat_batch: int = 0

    def roles(self, shape: tuple[int, ...], fn: str) -> tuple[tuple[int, ...], ...]:
        """``(batch, receptive, in, out)`` axes of a weight of ``shape``, non-negative."""
        ndim = len(shape)
        ins = normalize_axes("in_axis", self.in_axis, ndim, fn)
        outs = normalize_axes("out_axis", self.out_axis, ndim, fn)
        batch = normalize_axes("batch_axis", self.batch_axis, ndim, fn)
        named = set(ins) | set(outs) | set(batch)
        if len(named) != len(ins) + len(outs) + len(batch):
            raise ValueError(
                f"{fn}: in_axis={self.in_axis!r}, out_axis={self.out_axis!r} and "
                f"batch_axis={self.batch_axis!r} give one axis of shape {shape} two roles."
            )
        others = tuple(a for a in range(ndim) if a not in named)
        if self.rest == "batch":
            return tuple(sorted(batch + others)), (), ins, outs
        return batch, others, ins, outs


def _draw(
    init: Callable[..., jax.Array],
    key: jax.Array,
    shape: tuple[int, ...],
    dtype: Any,
    layout: Layout,
    fn: str,
) -> jax.Array:
    if layout.flat_batch and len(shape) == 2:
        n = layout.flat_batch
        if n < 0:
            raise ValueError(
                f"{fn}: a DenseGeneral with batch dimensions passes kernel_init the shape "
                f"{shape} = (batch * in, out); pass batch_size= (the product of the batch "
                "sizes) so that the batch is not counted in the fan."
            )
        if shape[0] % n:
            raise ValueError(
                f"{fn}: batch_size={n} does not divide the first axis of shape {shape}, which "
                "Flax's DenseGeneral/LinearGeneral pass as (batch * in, out)."
            )
        w = _draw(init, key, (n, shape[0] // n, shape[1]), dtype, Layout(-2, -1, 0), fn)
        return w.reshape(shape)
    batch, receptive, ins, outs = layout.roles(shape, fn)
    ndim = len(shape)
    if not batch and ins == (ndim - 2,) and outs == (ndim - 1,):
        return init(key, shape, dtype)  # already (*receptive, in, out)
    order = batch + receptive + ins + outs
    sub = (
        *(shape[a] for a in receptive),
        math.prod(shape[a] for a in ins),
        math.prod(shape[a] for a in outs),
    )
    copies = math.prod(shape[a] for a in batch)
    if batch:
        keys = jax.random.split(key, copies)
        w = jax.vmap(lambda k: init(k, sub, dtype))(keys)
    else:
        w = init(key, sub, dtype)
    w = jnp.reshape(w, tuple(shape[a] for a in order))
    return jnp.transpose(w, tuple(int(i) for i in np.argsort(order)))


def with_axes(init: Callable[..., jax.Array], layout: Layout, *, name: str, describe: Any) -> Init:
    """``init`` drawing each independent copy of a weight of ``layout`` as one
    ``(*receptive, prod(in), prod(out))`` matrix with its own key (see the module docstring).

    ``name`` and ``describe`` (the layer, for ``repr``) name the result. The variance law is
    ``init``'s, evaluated at the fans the caller gives (the layout's true fans).
    """

    def sample(key: jax.Array | None, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
        assert key is not None
        return _draw(init, key, shape, dtype, layout, name)

    def variance(fan_in: int, fan_out: int, shape: Sequence[int] | None) -> float:
        law = getattr(init, "variance", None)
        if law is None:
            raise ValueError(f"{name}: init={init!r} has no variance law.")
        return float(law(fan_in, fan_out))

    return Init(
        name,
        sample,
        {"init": init, "layer": describe},
        ident=(name, init, layout),
        variance=variance if isinstance(init, Init) else None,
    )
