"""Fan-in and fan-out of a weight from its shape and the roles of its axes."""

from __future__ import annotations

import math
import re
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
    shape: Sequence[int],
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    *,
    einsum: str | None = None,
    operand: int = 1,
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
    Einsum ``"hdk"`` per-head ``(heads, d, k)`` ``einsum="bhd,hdk->bhk"`` (or
                                                ``in_axis=1, out_axis=2, batch_axis=0``)
    =========================================  ==========================================

    With ``einsum=``, the axes come from the equation (:func:`einsum_axes`): a label of the
    weight shared with the other operand only is an input axis, with the output only an output
    axis, with both a batch axis.

    Args:
      shape: The weight's shape.
      in_axis: Axis or axes holding input features.
      out_axis: Axis or axes holding output features.
      batch_axis: Axis or axes of independent copies, counted in neither fan.
      einsum: An equation ``"x,w->y"`` of two operands (``jnp.einsum`` / Flax ``Einsum``
        syntax) in which the weight is operand ``operand``; replaces the three axis arguments.
      operand: The weight's position in ``einsum``: 0 or 1 (Flax ``Einsum``: 1).

    Returns:
      ``(fan_in, fan_out)`` as Python ints.

    Raises:
      ValueError: for a shape of rank < 2 with the default axes, axes out of range, an axis
        given two roles, or an equation that is not of two operands or does not match the
        shape's rank.

    Example:
      >>> import jaxinit
      >>> jaxinit.compute_fans((3, 3, 64, 128))
      (576, 1152)
      >>> jaxinit.compute_fans((128, 64), in_axis=-1, out_axis=-2)
      (64, 128)
      >>> jaxinit.compute_fans((8, 64, 16), in_axis=1, out_axis=2, batch_axis=0)
      (64, 16)
      >>> jaxinit.compute_fans((8, 64, 16), einsum="bhd,hdk->bhk")
      (64, 16)
    """
    if einsum is not None:
        given = {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis}
        if (in_axis, out_axis, batch_axis) != (-2, -1, ()):
            raise ValueError(
                f"compute_fans: einsum={einsum!r} sets the axes; got also {given}. Pass either "
                "einsum= or in_axis=/out_axis=/batch_axis=."
            )
        in_axis, out_axis, batch_axis = einsum_axes(einsum, operand, ndim=len(tuple(shape)))
    return fans_of(shape, in_axis, out_axis, batch_axis)


_EINSUM = re.compile(r"^\s*([^,\->\s]*)\s*,\s*([^,\->\s]*)\s*->\s*([^,\->\s]*)\s*$")


def einsum_axes(
    equation: str,
    operand: int = 1,
    *,
    ndim: int | None = None,
    fn: str = "compute_fans",
    arg: str = "einsum",
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(in_axes, out_axes, batch_axes)`` of operand ``operand`` of a two-operand einsum.

    A label of the weight that the other operand also has and the output does not is summed
    against the input: an input axis. One the output has and the other operand does not is an
    output axis. One in all three is a batch axis (independent copies, e.g. heads). A label in
    the weight only is summed out alone; it is left as receptive field. ``...`` may stand for
    broadcast axes of the input and output, not of the weight.

    Example:
      >>> from jaxinit._fans import einsum_axes
      >>> einsum_axes("bhd,hdk->bhk")
      ((1,), (2,), (0,))
      >>> einsum_axes("btd,dnh->btnh")
      ((0,), (1, 2), ())
    """
    if not isinstance(equation, str):
        raise TypeError(f"{fn}: {arg}={equation!r} must be a str such as 'bhd,hdk->bhk'.")
    if operand not in (0, 1) or isinstance(operand, bool):
        raise ValueError(f"{fn}: operand={operand!r} must be 0 or 1 (the weight's position).")
    m = _EINSUM.match(equation.replace("...", ""))
    if m is None:
        raise ValueError(
            f"{fn}: {arg}={equation!r} is not an equation of two operands 'x,w->y' (e.g. "
            "'bhd,hdk->bhk')."
        )
    groups = m.groups()
    w, x, y = groups[operand], groups[1 - operand], groups[2]
    if "..." in equation.split("->")[0].split(",")[operand]:
        raise ValueError(
            f"{fn}: {arg}={equation!r} gives the weight (operand {operand}) broadcast axes "
            "'...'; name each of its axes with a label."
        )
    if ndim is not None and len(w) != ndim:
        raise ValueError(
            f"{fn}: operand {operand} of einsum={equation!r} has {len(w)} labels, but the "
            f"shape has rank {ndim}."
        )
    ins = tuple(i for i, c in enumerate(w) if c in x and c not in y)
    outs = tuple(i for i, c in enumerate(w) if c in y and c not in x)
    batch = tuple(i for i, c in enumerate(w) if c in x and c in y)
    return ins, outs, batch


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
