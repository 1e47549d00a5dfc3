"""Convolutions inside loops in the layout XLA:CPU runs fast.

XLA:CPU runs a convolution with a fast library kernel only when its dimensions are in the
canonical order: input ``(batch, *spatial, feature)``, kernel ``(*spatial, in, out)``, output
``(batch, *spatial, feature)``. Its canonicalization pass, which puts every other convolution
into that order with transposes (``ConvCanonicalization`` in XLA's
``xla/service/cpu/conv_canonicalization.cc``), visits only the program's entry computation, so a
convolution inside a loop body that is not already canonical is emitted as a naive loop nest
(jax-ml/jax#12868). Flax's forward ``Conv`` is canonical, but the two convolutions of its
backward pass (the input and the kernel gradients) are not: a training step inside
``lax.scan`` or ``lax.map`` then ran its backward far slower than the same step outside a
loop (a width-136 3x3 ``Conv`` on 32 x 8 x 8 inputs: 810 ms for two gradients in
``lax.map`` against 21 ms for one at the top level).

:func:`canonical_convs` traces a function, rewrites every convolution in its jaxpr, at any
depth of nesting, into the canonical order with explicit transposes, and evaluates the
rewritten jaxpr: the same mathematics, run by the same kernels as at the top level.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
from jax import lax

__all__ = ["canonical_convs", "for_backend", "rewrite"]


def _canonical_numbers(rank: int) -> lax.ConvDimensionNumbers:
    spatial = tuple(range(1, rank - 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, rank - 1, *spatial),
        rhs_spec=(rank - 1, rank - 2, *range(rank - 2)),
        out_spec=(0, rank - 1, *spatial),
    )


def _is_canonical(dn: lax.ConvDimensionNumbers) -> bool:
    return tuple(map(tuple, dn)) == tuple(map(tuple, _canonical_numbers(len(dn.lhs_spec))))


def _canonical_conv(lhs: jax.Array, rhs: jax.Array, *, params: dict[str, Any]) -> jax.Array:
    """The convolution of ``params`` computed in the canonical order: transpose the operands
    in, convolve, transpose the result back. The spatial axes keep their order, so strides,
    padding, dilations and group counts mean what they meant."""
    dn: lax.ConvDimensionNumbers = params["dimension_numbers"]
    rank = len(dn.lhs_spec)
    lhs_t = lax.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    rhs_t = lax.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    out = lax.conv_general_dilated_p.bind(
        lhs_t, rhs_t, **{**params, "dimension_numbers": _canonical_numbers(rank)}
    )
    # Axis out_spec[0] of the result is the batch (canonical axis 0), out_spec[1] the feature
    # (canonical axis rank - 1), out_spec[2 + i] spatial axis i (canonical axis 1 + i).
    back = [0] * rank
    back[dn.out_spec[0]] = 0
    back[dn.out_spec[1]] = rank - 1
    for i, axis in enumerate(dn.out_spec[2:]):
        back[axis] = 1 + i
    return lax.transpose(out, tuple(back))


def _inline(eqn: jex.JaxprEqn) -> list[jex.JaxprEqn]:
    """The equations of :func:`_canonical_conv` standing in for the convolution ``eqn``."""
    fn = functools.partial(_canonical_conv, params=dict(eqn.params))
    closed = jax.make_jaxpr(fn)(*(v.aval for v in eqn.invars))
    inner = closed.jaxpr
    if closed.consts or len(inner.outvars) != 1 or not isinstance(inner.outvars[0], jex.Var):
        raise AssertionError("a canonical convolution traces to one output and no constants")
    subst: dict[Any, Any] = dict(zip(inner.invars, eqn.invars, strict=True))
    subst[inner.outvars[0]] = eqn.outvars[0]
    return [
        e.replace(
            invars=[subst.get(v, v) if isinstance(v, jex.Var) else v for v in e.invars],
            outvars=[subst.get(v, v) for v in e.outvars],
            source_info=eqn.source_info,
        )
        for e in inner.eqns
    ]


def _param(value: Any) -> Any:
    if isinstance(value, jex.ClosedJaxpr):
        jaxpr = rewrite(value.jaxpr)
        return value if jaxpr is value.jaxpr else value.replace(jaxpr=jaxpr)
    if isinstance(value, jex.Jaxpr):
        return rewrite(value)
    if isinstance(value, tuple | list) and any(
        isinstance(v, jex.ClosedJaxpr | jex.Jaxpr) for v in value
    ):
        new = [_param(v) for v in value]
        return value if all(a is b for a, b in zip(new, value, strict=True)) else type(value)(new)
    return value


def rewrite(jaxpr: jex.Jaxpr) -> jex.Jaxpr:
    """``jaxpr`` with every convolution, in it and in the jaxprs of its equations' parameters
    (loop bodies, branches, nested calls), in the canonical order; ``jaxpr`` itself when it
    has none to change."""
    eqns: list[jex.JaxprEqn] = []
    changed = False
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.conv_general_dilated_p and not _is_canonical(
            eqn.params["dimension_numbers"]
        ):
            eqns.extend(_inline(eqn))
            changed = True
            continue
        params = {k: _param(v) for k, v in eqn.params.items()}
        if any(params[k] is not v for k, v in eqn.params.items()):
            eqn = eqn.replace(params=params)
            changed = True
        eqns.append(eqn)
    return jaxpr.replace(eqns=eqns) if changed else jaxpr


def canonical_convs(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its convolutions in XLA:CPU's canonical order (see the module docstring):
    traced to a jaxpr, rewritten by :func:`rewrite`, evaluated. Use it inside ``jax.jit``;
    ``fn``'s arguments and results are pytrees of arrays."""

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        jaxpr = rewrite(closed.jaxpr)
        if jaxpr is not closed.jaxpr:
            closed = closed.replace(jaxpr=jaxpr)
        out = jex.jaxpr_as_fun(closed)(*jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return wrapped


def for_backend(fn: Callable[..., Any], backend: str | None = None) -> Callable[..., Any]:
    """:func:`canonical_convs` of ``fn`` on CPU (``backend``, default JAX's default
    backend); ``fn`` itself elsewhere, whose compilers canonicalize loop bodies too."""
    return canonical_convs(fn) if (backend or jax.default_backend()) == "cpu" else fn
