"""Fan-in and fan-out of a weight from its shape and the roles of its axes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._types import Axes


def normalize_axes(arg: str, axes: Axes, ndim: int, fn: str = "compute_fans") -> tuple[int, ...]:
    """``axes`` (an int or a sequence of ints) as non-negative ints, checked against ``ndim``."""
    bad = TypeError(f"{fn}: {arg}={axes!r} must be an int or a tuple of ints.")
    if isinstance(axes, int | np.integer):
        seq: tuple = (axes,)
    else:
        try:
            seq = tuple(axes)
        except TypeError as err:
            raise bad from err
    out = []
    for a in seq:
        if isinstance(a, bool) or not isinstance(a, int | np.integer):
            raise bad
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{fn}: {arg}={axes!r} is out of range for a rank-{ndim} shape; "
                f"axes must lie in [-{ndim}, {ndim - 1}]."
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{fn}: {arg}={axes!r} repeats an axis.")
    return tuple(out)


def compute_fans(
    shape: Sequence[int], in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()
) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape``.

    ``fan_in = prod(shape[in_axis]) * receptive`` and ``fan_out = prod(shape[out_axis]) *
    receptive``, where ``receptive`` is the product of every axis that is neither an input, an
    output nor a batch axis (the spatial axes of a conv kernel). Batch axes (a stack of
    independent matrices, e.g. per-head weights) count in neither fan.

    Layouts:

    =========================================  ==========================================
    weight                                      axes to pass
    =========================================  ==========================================
    Flax Dense ``(in, out)``                    defaults (``in_axis=-2, out_axis=-1``)
    Flax Conv ``(*spatial, in, out)``           defaults
    PyTorch / equinox Linear ``(out, in)``      ``in_axis=-1, out_axis=-2``
    PyTorch / equinox Conv ``(out, in, *sp)``   ``in_axis=1, out_axis=0``
    DenseGeneral ``(in1, in2, out1, out2)``     ``in_axis=(0, 1), out_axis=(2, 3)``
    Einsum ``"hdk"`` per-head ``(heads, d, k)`` ``in_axis=1, out_axis=2, batch_axis=0``
    =========================================  ==========================================

    Args:
      shape: The weight's shape.
      in_axis: Axis or axes holding input features.
      out_axis: Axis or axes holding output features.
      batch_axis: Axis or axes of independent copies, counted in neither fan.

    Returns:
      ``(fan_in, fan_out)`` as Python ints.

    Raises:
      ValueError: for a shape of rank < 2 with the default axes, axes out of range, or an axis
        given two roles.

    Example:
      >>> import jaxinit
      >>> jaxinit.compute_fans((3, 3, 64, 128))
      (576, 1152)
      >>> jaxinit.compute_fans((128, 64), in_axis=-1, out_axis=-2)
      (64, 128)
      >>> jaxinit.compute_fans((8, 64, 16), in_axis=1, out_axis=2, batch_axis=0)
      (64, 16)
    """
    return fans_of(shape, in_axis, out_axis, batch_axis)


def fans_of(
    shape: Sequence[int],
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    fn: str = "compute_fans",
) -> tuple[int, int]:
    """:func:`compute_fans`, with errors naming the calling function ``fn``."""
    shape = tuple(int(d) for d in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            f"{fn}: needs rank >= 2 to compute fans, got shape {shape}. For biases use "
            "jaxinit.zeros(), or pass in_axis=/out_axis= naming the axes explicitly."
        )
    ins = normalize_axes("in_axis", in_axis, ndim, fn)
    outs = normalize_axes("out_axis", out_axis, ndim, fn)
    batch = normalize_axes("batch_axis", batch_axis, ndim, fn)
    roles = {"in_axis": ins, "out_axis": outs, "batch_axis": batch}
    seen: dict[int, str] = {}
    for role, axes in roles.items():
        for a in axes:
            if a in seen:
                raise ValueError(
                    f"{fn}: axis {a} of shape {shape} is both {seen[a]} and {role} "
                    f"(in_axis={in_axis!r}, out_axis={out_axis!r}, batch_axis={batch_axis!r}); "
                    "each axis can have one role."
                )
            seen[a] = role
    if not ins or not outs:
        raise ValueError(
            f"{fn}: in_axis={in_axis!r} and out_axis={out_axis!r} must each name at least one axis."
        )
    receptive = math.prod(d for i, d in enumerate(shape) if i not in seen)
    fan_in = math.prod(shape[a] for a in ins) * receptive
    fan_out = math.prod(shape[a] for a in outs) * receptive
    return fan_in, fan_out
