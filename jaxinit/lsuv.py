"""LSUV (layer-sequential unit variance) as one compiled pass, for Flax linen and NNX.

Mishkin & Matas 2015, "All you need is a good init" (https://arxiv.org/abs/1511.06422), with
fastai's mean-centred variant (``center=True``). Built on :mod:`jaxinit.probe`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from . import tree
from ._checks import (
    check_bool,
    check_finite,
    check_finite_batch,
    check_int,
    check_key,
    short,
)
from ._flax import adapter as fa
from ._flax import kinds
from ._flax.probe import LayerCall, capture, intercept
from ._flax.select import Select, compile_select, hashable_select
from .orthogonal import orthogonal

if TYPE_CHECKING:
    import flax.linen as nn
    from flax import nnx

__all__ = ["LSUVReport", "lsuv"]

_F32 = jnp.float32
# A layer is dead (left unchanged) when its output std is not above this multiple of the
# rounding noise of its mean, or below _TINY: rescaling it would blow its weights up ~1e8-fold.
_DEAD_EPS = 16 * float(jnp.finfo(jnp.float32).eps)
_TINY = math.sqrt(float(jnp.finfo(jnp.float32).tiny))
# The finest tolerance a report can vouch for: float32 moments of a layer's output, and the
# output of float32 parameters rescaled by g, are off by ~1e-6 relative.
_TOL_FLOOR = 1e-5
# Outputs of up to this many elements (4 MiB of float32) get their two sums from one reduction
# of a stacked copy (_sums).
_STACKED_MAX = 1 << 20
_F32_DEAD_EPS, _F32_TINY, _F32_INF = np.float32(_DEAD_EPS), np.float32(_TINY), np.float32(np.inf)


# --------------------------------------------------------------------------------------------
# report


class LSUVReport(NamedTuple):
    """What :func:`lsuv` did, per selected layer in forward order (arrays of shape
    ``(n_layers,)``).

    A pytree (``paths`` is static), so it passes through ``jax.jit``/``jax.vmap``.
    ``str(report)`` (or :meth:`table`) is a readable table.

    Attributes:
      paths: layer paths, ``"/"``-joined.
      iterations: rescaling steps applied (1 for an affine layer, which is exact in one step;
        0 for a dead layer; for a selected block, the ``while_loop`` iterations).
      std_before, mean_before: the layer's output statistics on the batch before LSUV (inputs
        already normalized upstream).
      std_after, mean_after: the same after LSUV.
      converged: whether ``|std_after / target_std - 1| <= tol`` (and, with ``center``,
        ``|mean_after| <= tol * target_std``).
      dead: output std was 0 (or not finite): the layer was left unchanged.
      target_std, tol: the options used.
    """

    paths: tuple[str, ...]
    iterations: jax.Array
    std_before: jax.Array
    mean_before: jax.Array
    std_after: jax.Array
    mean_after: jax.Array
    converged: jax.Array
    dead: jax.Array
    target_std: jax.Array
    tol: jax.Array

    @property
    def all_converged(self) -> bool:
        """Whether every layer converged."""
        return bool(np.all(np.asarray(self.converged)))

    def layer(self, path: str) -> dict[str, Any]:
        """The row of layer ``path`` as a dict of Python numbers."""
        if path not in self.paths:
            raise KeyError(f"{path!r} is not in the report; layers: {self.paths}")
        i = self.paths.index(path)
        fields = self._fields[1:-2]
        return {f: np.asarray(getattr(self, f))[i].item() for f in fields}

    def table(self) -> str:
        """A plain-text table, one row per layer."""
        cols = self._fields[1:-2]
        if np.ndim(self.iterations) != 1:
            return f"LSUVReport({len(self.paths)} layers, batched {np.shape(self.iterations)})"
        rows = []
        conv = np.asarray(self.converged)
        dead = np.asarray(self.dead)
        for i, path in enumerate(self.paths):
            status = "dead" if dead[i] else ("ok" if conv[i] else "NOT CONVERGED")
            vals = [np.asarray(getattr(self, f))[i] for f in cols[:-2]]
            rows.append(
                [path or "(root)", f"{int(vals[0])}"]
                + [f"{float(v):.4g}" for v in vals[1:]]
                + [status]
            )
        head = ["layer", "iters", "std before", "mean before", "std after", "mean after", "status"]
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(head)]

        def fmt(r):
            return "  ".join(
                c.ljust(w) if j in (0, len(r) - 1) else c.rjust(w)
                for j, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()

        title = (
            f"LSUV: target std {float(self.target_std):.4g}, tol {float(self.tol):.3g}; "
            f"{int(conv.sum())}/{len(self.paths)} layers converged"
            + (f", {int(dead.sum())} dead" if dead.any() else "")
        )
        return "\n".join([title, fmt(head), *(fmt(r) for r in rows)])

    def __str__(self) -> str:
        return self.table()


def _report_flatten(r: LSUVReport):
    return tuple(r[1:]), r.paths


def _report_unflatten(paths, children) -> LSUVReport:
    return LSUVReport(paths, *children)


jax.tree_util.register_pytree_node(LSUVReport, _report_flatten, _report_unflatten)


# --------------------------------------------------------------------------------------------
# the pass: one forward pass that normalizes each selected layer as it is called


class _Layer(NamedTuple):
    path: str
    parts: tuple[Any, ...]
    affine: bool
    target: tuple[Any, ...]  # relative parts of the sublayer whose kernel/bias are rescaled
    bias: bool  # whether that sublayer has a bias
    kernels: tuple[tuple[tuple[Any, ...], int], ...]  # (absolute parts, n output axes)
    stack: tuple[int, ...] = ()  # the leading axes of a layer stacked by nn.scan


class _Owner(NamedTuple):  # a kernel-owning layer called inside a selected block
    parts: tuple[Any, ...]
    bias: bool
    n_out: int


class _Opts(NamedTuple):
    target: jax.Array
    tol: jax.Array
    max_iters: jax.Array
    center: bool


def _kernel_shape(module: Any) -> tuple[int, ...] | None:
    k = kinds.own_param(module, "kernel")
    return None if k is None else tuple(jax.tree.leaves(k)[0].shape)


def _param_path(parts: tuple[Any, ...], name: str) -> str:
    return "/".join(str(p) for p in (*parts, name))


def _then(target: Any, result: Any) -> Any:
    """The target after a :mod:`jaxinit.tree` edit: linen edits return new variables, NNX
    edits change the model in place and return None."""
    return target if result is None else result


def _rescale(
    target: Any, edits: Sequence[tuple[str, bool, jax.Array, jax.Array | None]], shift: bool
):
    """``target`` (linen variables or an NNX model) with, for each ``(prefix, bias, g, c)``,
    the kernel at ``prefix`` multiplied by ``g`` and the bias replaced by ``g * bias + c``
    (``c`` is added only with ``shift``). ``g`` and ``c`` have the leading (stacked) axes of
    the parameters, or are scalars. Two :mod:`jaxinit.tree` edits for all layers at once."""
    factors: dict[str, jax.Array] = {}
    deltas: dict[str, jax.Array] = {}
    for prefix, bias, g, c in edits:
        factors[prefix + "kernel"] = g
        if bias:
            factors[prefix + "bias"] = g
            if shift and c is not None:
                deltas[prefix + "bias"] = c
    ndim = {p: np.ndim(w) for p, w in tree.get(target, list(factors)).items()}

    def per_slice(amounts: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {
            p: jax.lax.reshape(a, a.shape + (1,) * (ndim[p] - a.ndim)) for p, a in amounts.items()
        }

    target = _then(target, tree.scale(target, list(factors), per_slice(factors)))
    if deltas:
        target = _then(target, tree.shift(target, list(deltas), per_slice(deltas)))
    return target


def _prefix(parts: tuple[Any, ...]) -> str:
    return "".join(f"{p}/" for p in parts)


def _sums(y: jax.Array, stacked: bool = False) -> tuple[jax.Array, jax.Array]:
    """``(k, sums)``: a value ``k`` of the output and ``sums = [mean(y - k), mean((y - k)**2)]``
    (float32), from which :func:`_finish` gives the mean and population std over all
    elements. Sums are taken around ``k``, so that a large mean does not cancel the variance,
    and of deviations scaled by ``1/sqrt(n)``, so that the sum of squares is the mean square
    itself and overflows only where the variance does (a batch at 1e18 has squares near 1e36,
    whose sum over many elements would pass float32's 3e38); the first sum's terms carry
    ``1/n``, so it is the mean itself.

    On CPU, XLA hands each plain reduction to YNNPACK, which sets every such kernel up on the
    program's first run; a variadic reduction it runs element by element (3x slower here), so
    both sums are plain reductions. Up to ``_STACKED_MAX`` elements, they are one reduction of
    the stacked deviations and squares: one kernel per layer, and the extra copy is small.
    Above it, the copy costs more than the kernel (a 64 x 64 x 64 x 32 conv output: 35 ms of
    a 307 ms pass), so the deviations are written once and reduced twice.

    ``k`` is the first element, except in a layer of a stack (``stacked``: ``nn.scan``,
    ``nnx.scan``), whose bias the loop slices dynamically. There XLA recomputes the first
    element, through that slice, for every element of each loop that reads ``k`` (the stacked
    sums, the rescaled output), at 4-5x those loops' cost; the mean of the first position's
    last axis is a reduction, which XLA computes once. In a loop, a select on the stacking
    axis is also faster than a concatenation. Together, over the 49 iterations of the scanned
    50 x 512 MLP: 4.1 ms against 19.7 ms for the stack, 2.2 ms against 8.4 ms for the rescaled
    output. Outside loops, the first element needs no kernel of its own, and with the
    concatenation the unrolled MLP's first call took 1.50 s against 1.73 s with the select.
    Written in ``lax``: each ``jax.numpy`` call on a tracer is a nested trace of its own (about
    3x the cost)."""
    lax = jax.lax
    y = lax.convert_element_type(y, _F32)
    axes = tuple(range(y.ndim))
    if stacked:
        first = lax.slice(y, (0,) * y.ndim, (*(1,) * (y.ndim - 1), y.shape[-1]))
        k = lax.mul(lax.reduce_sum(first, axes), np.float32(1 / y.shape[-1]))
    else:
        k = lax.reshape(lax.slice(y, (0,) * y.ndim, (1,) * y.ndim), ())
    k = lax.stop_gradient(k)
    r = np.float32(1 / math.sqrt(y.size))
    dev = lax.sub(y, k)
    d = lax.mul(dev, r)
    if y.size > _STACKED_MAX:
        mean_d = lax.mul(lax.reduce_sum(d, axes), r)
        sq = lax.reduce_sum(lax.mul(d, d), axes)
        return k, lax.concatenate([lax.reshape(a, (1,)) for a in (mean_d, sq)], 0)
    d_n = lax.mul(dev, np.float32(1 / y.size))
    if stacked:
        both = lax.broadcast(d, (2,))
        which = lax.broadcasted_iota(np.int32, both.shape, 0)
        first_row = lax.eq(which, lax.full_like(which, 0))
        both = lax.select(first_row, lax.broadcast(d_n, (2,)), lax.mul(both, both))
    else:
        both = lax.concatenate(
            [lax.expand_dims(d_n, (0,)), lax.expand_dims(lax.mul(d, d), (0,))], 0
        )
    return k, lax.reduce_sum(both, tuple(a + 1 for a in axes))


def _finish(k: jax.Array, sums: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and population std from :func:`_sums` (elementwise: ``sums`` has a last axis of
    2, so the report finishes every layer's at once)."""
    lax = jax.lax
    mean_d = lax.squeeze(lax.slice_in_dim(sums, 0, 1, axis=sums.ndim - 1), (sums.ndim - 1,))
    sq = lax.squeeze(lax.slice_in_dim(sums, 1, 2, axis=sums.ndim - 1), (sums.ndim - 1,))
    var = lax.max(lax.sub(sq, lax.mul(mean_d, mean_d)), lax.full_like(sq, 0))
    return lax.add(k, mean_d), lax.sqrt(var)


def _moments(y: jax.Array, stacked: bool = False) -> tuple[jax.Array, jax.Array]:
    """Mean and population std over all elements, float32 (see :func:`_sums`)."""
    return _finish(*_sums(y, stacked))


def _alive(m, s):
    # Comparisons with NaN are false, and an infinite mean makes the right side infinite: so
    # this is false for a NaN or infinite mean or std too, in four operations (``lax``, as in
    # _sums).
    lax = jax.lax
    floor = lax.add(lax.mul(lax.abs(m), _F32_DEAD_EPS), _F32_TINY)
    return lax.bitwise_and(lax.gt(s, floor), lax.lt(s, _F32_INF))


def _converged(m, s, o: _Opts):
    ok = _alive(m, s) & (jnp.abs(s / o.target - 1) <= o.tol)
    return ok & (jnp.abs(m) <= o.tol * o.target) if o.center else ok


def _error(m, s, o: _Opts):
    e = jnp.abs(s / o.target - 1) + (jnp.abs(m) / o.target if o.center else 0.0)
    return jnp.where(_alive(m, s), e, jnp.inf)


def _affine(y, g, c):
    """``g * y + c``, computed in float32 (in ``y``'s dtype where it is wider, as float64
    under ``jax_enable_x64``) and returned in ``y``'s dtype (``lax``, as in _sums)."""
    lax = jax.lax
    dtype = jnp.promote_types(y.dtype, _F32)
    out = lax.mul(lax.convert_element_type(y, dtype), lax.convert_element_type(g, dtype))
    if not (isinstance(c, float) and c == 0.0):
        out = lax.add(out, lax.convert_element_type(c, dtype))
    return lax.convert_element_type(out, y.dtype)


def _normalize_affine(y, bias: bool, o: _Opts, stacked: bool):
    """Exact in one step: the output becomes ``g * y + c``, which is what the layer computes
    once its kernel is multiplied by ``g`` and its bias replaced by ``g * bias + c``."""
    return _normalize_affine_jit(y, o.target, shift=o.center and bias, stacked=stacked)


@functools.partial(jax.jit, static_argnames=("shift", "stacked"))
def _normalize_affine_jit(y, target, *, shift: bool, stacked: bool):
    # A nested jit: traced once per output shape and dtype, so a deep model's pass traces and
    # lowers the normalization once per layer shape, not once per layer.
    k, sums = _sums(y, stacked)
    g, c = _gain_shift(*_finish(k, sums), target, shift)
    return _affine(y, g, c if shift else 0.0), (g, c, k, sums)


def _gain_shift(m0, s0, target, shift: bool):
    """The factor and shift that move an output of mean ``m0`` and std ``s0`` to mean 0 (with
    ``shift``) and std ``target``: 1 and 0 for a dead layer, which is kept. Elementwise, so
    that the report computes them for all layers at once from the stored sums.

    ``g`` ends in a division (``target / target`` is exactly 1 for a dead layer): XLA then
    computes it, liveness test included, in one scalar kernel per layer, which the rescaled
    output, kernel and bias read, instead of copying the test into each of them."""
    lax = jax.lax
    alive = _alive(m0, s0)
    t = lax.full_like(s0, target, _F32)
    g = lax.div(t, lax.select(alive, s0, t))
    zero = lax.full_like(s0, 0, _F32)
    if not shift:
        return g, zero
    return g, lax.select(alive, lax.neg(lax.mul(g, m0)), zero)


def _rerun(call: LayerCall, target: tuple[Any, ...], bias: bool, g, c, o: _Opts) -> Any:
    """The layer's output with the sublayer ``target``'s kernel and bias rescaled."""
    edit = [(_prefix(target), bias, g, c)]
    return call.rerun(lambda t: _rescale(t, edit, o.center))


def _normalize_block(call: LayerCall, y0, target, bias: bool, o: _Opts):
    """Iterate on the kernel gain ``g`` and bias shift ``c`` of the sublayer ``target``."""
    k0, sums0 = _sums(y0)
    m0, s0 = _finish(k0, sums0)
    e0 = _error(m0, s0, o)
    one, zero = jnp.ones((), _F32), jnp.zeros((), _F32)
    shift = o.center and bias

    def cond(st):
        i, _, _, _, m, s, *_ = st
        return (i < o.max_iters) & ~_converged(m, s, o) & _alive(m, s)

    def body(st):
        i, g, c, _, m, s, bg, bc, bm, bs, be = st
        k = o.target / s
        c = (c - m if shift else c) * k
        g = g * k
        y = _rerun(call, target, bias, g, c, o)
        m, s = _moments(y)
        e = _error(m, s, o)
        better = e < be
        bg, bc, bm, bs, be = (
            jnp.where(better, a, b) for a, b in ((g, bg), (c, bc), (m, bm), (s, bs), (e, be))
        )
        return i + 1, g, c, y, m, s, bg, bc, bm, bs, be

    init = (jnp.zeros((), jnp.int32), one, zero, y0, m0, s0, one, zero, m0, s0, e0)
    i, g, c, y, _, _, bg, bc, bm, bs, _ = jax.lax.while_loop(cond, body, init)
    # Keep the best iterate seen (the last one when converged); rerun only if it is not the last.
    is_last = (bg == g) & (bc == c)
    y = jax.lax.cond(is_last, lambda: y, lambda: _rerun(call, target, bias, bg, bc, o))
    return y, (bg, bc, k0, sums0, bm, bs, i.astype(_F32))


class _Pass:
    """The ``on_call`` of :func:`jaxinit.probe.intercept` that runs LSUV. It is called for every
    selected layer and every kernel owner (to find, inside a selected block, the sublayer that
    feeds its output). Only Python strings and shapes are kept on it; array values travel in
    Flax state (``call.store``), so nothing leaks out of ``nn.remat``/``nnx.remat``."""

    def __init__(self, model, variables, select, o: _Opts | None):
        self.model, self.variables, self.select_arg, self.o = model, variables, select, o
        self.user_select = compile_select(select)
        self._adapter: fa.Adapter | None = None
        self.layers: list[_Layer] = []
        self.by_path: dict[str, _Layer] = {}
        self.owners: list[str] = []  # every kernel owner called (for error messages)
        self.stack: list[list[_Owner]] = []
        self.active: str | None = None

    def select(self, path: str, module: Any) -> bool:
        return self.user_select(path, module) or kinds.owns_kernel(module)

    def _stored_kernel_shape(self, parts: tuple[Any, ...]) -> tuple[int, ...] | None:
        """The shape of the kernel at ``parts`` as the model stores it (stacked by a lifted
        transform), None if it has none there."""
        if self._adapter is None:
            self._adapter = fa.adapter_for(self.model if self.variables is None else self.variables)
        try:
            return tuple(np.shape(self._adapter.get(_param_path(parts, "kernel"))))
        except KeyError:
            return None

    def _stack_of(self, call, *, supported: bool) -> tuple[int, ...]:
        """The leading axes a lifted transform (``nn.scan``) slices off the layer's stored
        kernel; () for a plain layer. Raises where per-slice LSUV is not supported."""
        have = _kernel_shape(call.module)
        want = self._stored_kernel_shape(tuple(call.parts))
        if have == want:
            return ()
        if (
            supported
            and have is not None
            and want is not None
            and len(want) > len(have)
            and tuple(want[len(want) - len(have) :]) == have
        ):
            return tuple(want[: len(want) - len(have)])
        raise NotImplementedError(
            f"lsuv: layer {call.path!r} runs inside a lifted transform that slices its "
            f"parameters (nn.scan / nnx.scan / vmap): its kernel has shape {have} in the "
            f"call but {want} in the model. LSUV normalizes such stacks slice by slice for "
            "layers owning a kernel (Dense/Linear, Conv, ...), not for selected blocks around "
            "them; select the layers themselves, or exclude the stack with select=."
        )

    def __call__(self, call: LayerCall) -> Any:
        m, parts = call.module, tuple(call.parts)
        owns = kinds.owns_kernel(m)
        selected = self.user_select(call.path, m)
        stack: tuple[int, ...] = ()
        if owns:
            if selected or self.active is not None:  # rescaled: its kernel must be the model's
                supported = selected and self.active is None and kinds.is_affine(m)
                stack = self._stack_of(call, supported=supported)
            if call.first and call.path not in self.owners:
                self.owners.append(call.path)
        if not selected:  # a kernel owner, maybe inside a selected block
            self.stack.append([])
            y = call()
            inner = self.stack.pop()
            if self.stack:
                self.stack[-1].extend(
                    [*inner, _Owner(parts, kinds.has_bias(m), kinds.n_out_axes(m))]
                )
            return y
        if self.active is not None:
            raise ValueError(
                f"lsuv: select={self.select_arg!r} selects both {self.active!r} and "
                f"{call.path!r}, which runs inside it; LSUV rescales a block through the "
                "sublayer that feeds its output, so select one or the other."
            )
        if not call.first:  # a shared layer called again: run it with the parameters found
            if self.o is None:  # planning: nothing was normalized
                return call()
            layer = self.by_path[call.path]
            g, c = call.load()[:2]
            if layer.affine:
                return _affine(call(), g, c)
            return _rerun(call, layer.target, layer.bias, g, c, self.o)
        self.active = call.path
        try:
            return self._first_call(call, parts, owns, stack)
        finally:
            self.active = None

    def _first_call(self, call, parts, owns, stack=()):
        m, o = call.module, self.o
        if kinds.is_affine(m):
            layer = _Layer(
                call.path,
                parts,
                True,
                (),
                kinds.has_bias(m),
                ((parts, kinds.n_out_axes(m)),),
                stack,
            )
            y = call()
            if o is not None:
                y, stats = _normalize_affine(y, layer.bias, o, bool(stack))
        else:
            self.stack.append([])
            y = call()
            inner = [q for q in self.stack.pop() if q.parts[: len(parts)] == parts]
            if not (hasattr(y, "shape") and hasattr(y, "dtype")):
                # Which element of (y, aux) or {"out": ...} is the signal is the model's
                # convention, not something LSUV can tell; one array is unambiguous.
                raise ValueError(
                    f"lsuv: select={self.select_arg!r} selects {call.path!r}, whose call "
                    f"returns a {type(y).__name__}; a selected block must return one array, "
                    "whose statistics LSUV normalizes. Select the layers inside it instead "
                    f"(those owning a kernel: {['/'.join(map(str, q.parts)) for q in inner][:8]}), "
                    "or a block "
                    "that returns one array."
                )
            if owns:
                target, bias = (), kinds.has_bias(m)
            elif inner:
                target, bias = inner[-1].parts[len(parts) :], inner[-1].bias
            else:
                raise ValueError(
                    f"lsuv: select={self.select_arg!r} selects {call.path!r}, which owns no "
                    "kernel and calls no layer owning one inside it, so LSUV has nothing to "
                    "rescale. Select layers or blocks containing a Dense/Conv/Einsum-like layer."
                )
            kernels = {parts: kinds.n_out_axes(m)} if owns else {}
            kernels.update({q.parts: q.n_out for q in inner})
            layer = _Layer(call.path, parts, False, target, bias, tuple(kernels.items()))
            if o is not None:
                y, stats = _normalize_block(call, y, target, bias, o)
        if call.path not in self.by_path:  # nn.scan traces its body more than once
            self.layers.append(layer)
            self.by_path[call.path] = layer
        if o is not None:
            call.store(stats)
        return y

    def finish(self) -> tuple[_Layer, ...]:
        if not self.layers:
            shown = self.owners[:20]
            raise ValueError(
                f"lsuv: select={self.select_arg!r} matched no layer that the forward pass "
                f"calls. Layers owning a kernel, in forward order: {shown}"
                + (" ..." if len(self.owners) > 20 else "")
                + ". Pass select=None (every layer owning a kernel), a glob pattern or a "
                "predicate (path, module) -> bool."
            )
        return tuple(self.layers)


def _plan(model, variables, x, select, kwargs) -> tuple[_Layer, ...]:
    """The selected layers in forward order, from an abstract pass (no computation)."""
    p = _Pass(model, variables, select, None)
    jax.eval_shape(
        lambda v, x: intercept(model, v, x, p, select=p.select, **kwargs)[0], variables, x
    )
    return p.finish()


def _run(model, variables, x, select, kwargs, o: _Opts):
    """Run the LSUV pass; returns (layers, per-layer stats)."""
    p = _Pass(model, variables, select, o)
    if variables is not None:  # linen: BatchNorm in training mode may update stats
        kwargs = {**kwargs, "mutable": True}
    _, stored = intercept(model, variables, x, p, select=p.select, slots=True, **kwargs)
    return p.finish(), stored


def _slices(layer: _Layer, value: Any, tail: tuple[int, ...] = ()) -> jax.Array:
    """One entry per slice of a stacked layer (one for a plain layer), each of shape
    ``tail``."""
    value = jax.lax.convert_element_type(value, _F32)
    if not layer.stack:
        return jax.lax.reshape(value, (1, *tail))
    return jnp.broadcast_to(value, (*layer.stack, *tail)).reshape(-1, *tail)


def _report_paths(layers) -> tuple[str, ...]:
    return tuple(
        la.path if not la.stack else f"{la.path}[{i}]"
        for la in layers
        for i in range(math.prod(la.stack))
    )


# The report's columns, in the order of the rows that the pass returns.
_ROWS = ("iterations", "std_before", "mean_before", "std_after", "mean_after", "converged", "dead")


def _report_rows(layers, stored, o: _Opts, measured: Mapping[str, Any] | None = None):
    """The report's columns as the rows of one float32 array ``(7, n_layers)`` (``_ROWS``),
    which :func:`_report_of` unpacks outside the pass: one kernel of the compiled program,
    where seven columns of three dtypes took eight kernels. With ``measured`` (path -> (mean,
    std) of the output on the returned parameters), the statistics after are those
    measurements instead of the algebra."""

    def col(i):
        return jnp.concatenate([_slices(la, stored[la.path][i]) for la in layers])

    sums = jnp.concatenate([_slices(la, stored[la.path][3], (2,)) for la in layers])
    m0, s0 = _finish(col(2), sums)
    affine = np.concatenate([np.full(math.prod(la.stack), la.affine) for la in layers])
    alive = _alive(m0, s0)
    g, c = _gain_shift(m0, s0, o.target, o.center)
    bias = np.concatenate([np.full(math.prod(la.stack), la.bias) for la in layers])
    c = jnp.where(bias, c, 0.0)
    if not affine.all():
        g = jnp.where(affine, g, col(0))
        c = jnp.where(affine, c, col(1))
    # Affine layers: the statistics after follow from the exact algebra y' = g y + c.
    m1, s1, it = g * m0 + c, g * s0, alive.astype(_F32)
    if not affine.all():

        def block_col(i, fallback):
            return jnp.where(
                jnp.asarray(affine),
                fallback,
                jnp.concatenate(
                    [_slices(la, stored[la.path][i] if not la.affine else 0.0) for la in layers]
                ),
            )

        m1, s1, it = block_col(4, m1), block_col(5, s1), block_col(6, it)
    if measured is not None:
        m1 = jnp.concatenate([_slices(la, measured[la.path][0]) for la in layers])
        s1 = jnp.concatenate([_slices(la, measured[la.path][1]) for la in layers])
    columns = (it, s0, m0, s1, m1, _converged(m1, s1, o), ~alive)
    return jnp.stack([jnp.asarray(v, _F32) for v in columns])


def _report_of(paths: tuple[str, ...], rows: Any, target_std: float, tol: float) -> LSUVReport:
    """The :class:`LSUVReport` of the rows :func:`_report_rows` returned. Concrete rows are
    split on the host (no program to compile); traced ones (``lsuv`` called inside the
    user's ``jit``/``vmap``) by indexing."""
    if isinstance(rows, Tracer):
        cols = [rows[i] for i in range(len(_ROWS))]
        it, conv, dead = cols[0].astype(jnp.int32), cols[5] != 0, cols[6] != 0
    else:
        host = np.asarray(rows)
        cols = list(host)
        it, conv, dead = host[0].astype(np.int32), host[5] != 0, host[6] != 0
    fields = (it, cols[1], cols[2], cols[3], cols[4], conv, dead)
    options = (np.float32(target_std), np.float32(tol))
    if not isinstance(rows, Tracer):
        fields, options = jax.device_put((fields, options))
    return LSUVReport(paths, *fields, *options)


def _orthogonal_init(n_out: int, n_stack: int):
    """An initializer drawing a Haar-orthogonal kernel whose last ``n_out`` axes are outputs:
    one matrix per slice of the ``n_stack`` leading (stacked) axes."""

    def init(key, shape, dtype):
        rows = math.prod(shape[n_stack : len(shape) - n_out])
        cols = math.prod(shape[len(shape) - n_out :])
        if not n_stack:
            return orthogonal()(key, (rows, cols), dtype).reshape(shape)
        slices = jax.random.split(key, math.prod(shape[:n_stack]))
        draw = jax.vmap(lambda k: orthogonal()(k, (rows, cols), dtype))
        return draw(slices).reshape(shape)

    return init


def _orthogonalize(target: Any, layers: Sequence[_Layer], key: jax.Array) -> Any:
    """Every kernel LSUV will rescale, redrawn orthogonal; each from
    ``tree.path_key(key, path)``, so every kernel has its own key."""
    owners: dict[str, tuple[int, int]] = {}
    for layer in layers:
        for parts, n_out in layer.kernels:
            owners[_param_path(parts, "kernel")] = (n_out, len(layer.stack))
    for path, (n_out, n_stack) in owners.items():
        target = _then(target, tree.reinit(target, path, _orthogonal_init(n_out, n_stack), key))
    return target


# --------------------------------------------------------------------------------------------
# the jitted pass (one program per model structure, input shapes and static options)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a pass found, returned as static data: the report's paths and, per selected
    layer, the prefix of the sublayer whose kernel and bias are rescaled, and whether it has
    a bias."""

    paths: tuple[str, ...]
    edits: tuple[tuple[str, bool], ...]


jax.tree_util.register_static(_Plan)


def _rescaled(static, state, gains, edits, center: bool) -> tuple[Any, Any]:
    """``(model, target)`` of ``state`` with each layer's kernel multiplied by its gain and
    its bias by the gain (plus the shift with ``center``); ``target`` is what
    :mod:`jaxinit.tree` edits (linen variables or the NNX model)."""
    # An NNX model merged from a state shares that state's variables, and the edit is in
    # place: edit a copy, so that the state given stays as it is.
    model, variables = fa.merge_model(static, jax.tree.map(lambda a: a, state))
    t = model if variables is None else variables
    return model, _rescale(
        t,
        [(p, b, gc[0], gc[1] if center else None) for (p, b), gc in zip(edits, gains, strict=True)],
        center,
    )


def _lsuv_pass(
    state, x, key, rngs, target, tol, max_iters, *, static, select, kwargs, center, ortho
):
    """The forward pass that normalizes each selected layer in turn. Returns the plan, each
    layer's gain (and shift, with ``center``), the orthogonalized state (with ``ortho``;
    else None) and the report's rows. The parameters themselves are rescaled by a program
    of their own (``_lsuv_apply``). Written here, with three scalar kernels per layer and eight
    for the report, they made the 50 x 512 MLP's first call 1.65 s against 1.36 s (medians of 6
    alternating fresh processes), in compile and in the kernels XLA compiles on the first run
    (BENCHMARKS.md)."""
    select, kwargs = select.obj, dict(kwargs)
    if rngs is not None:  # traced (a dict of keys): the same masks for every forward pass
        kwargs["rngs"] = rngs
    o = _Opts(target, tol, max_iters, center)
    model, variables = fa.merge_model(static, state)
    t = model if variables is None else variables  # what jaxinit.tree edits
    base = None
    if ortho:
        t = _orthogonalize(t, _plan(model, variables, x, select, kwargs), key)
        variables = None if variables is None else t
        base = fa.state_of(static, model, t)
    layers, stored = _run(model, variables, x, select, kwargs, o)
    plan = _Plan(
        _report_paths(layers),
        tuple((_prefix(la.parts + la.target), la.bias) for la in layers),
    )
    gains = tuple(tuple(stored[la.path][: 2 if center else 1]) for la in layers)
    measured = None
    if _coarse(t, layers):
        # The rescaled parameters are rounded to a dtype coarser than float32, so the exact
        # algebra no longer describes them: measure the outputs they give.
        m, rescaled = _rescaled(static, state if base is None else base, gains, plan.edits, center)
        v = None if variables is None else rescaled
        _, measured = capture(m, v, x, _moments, select=select, **kwargs)
    return plan, gains, base, _report_rows(layers, stored, o, measured)


def _lsuv_apply(state, gains, *, static, edits, center):
    """The parameters of ``state`` rescaled by the gains (and shifts) a pass found."""
    model, t = _rescaled(static, state, gains, edits, center)
    return fa.update_model(static, model, t)


_STATIC = ("static", "select", "kwargs", "center", "ortho")
_PASS = jax.jit(_lsuv_pass, static_argnames=_STATIC)
_APPLY_STATIC = ("static", "edits", "center")
_APPLY = {
    False: jax.jit(_lsuv_apply, static_argnames=_APPLY_STATIC),
    # The parameters' buffers are reused for the result: no new allocation (and no page
    # faults on fresh memory), and each kernel is rescaled where it lies.
    True: jax.jit(_lsuv_apply, static_argnames=_APPLY_STATIC, donate_argnums=0),
}


def _coarse(target: Any, layers: Sequence[_Layer]) -> bool:
    """Whether a rescaled kernel has a dtype coarser than float32 (bfloat16, float16, ...)."""
    kernels = [_param_path(la.parts + la.target, "kernel") for la in layers]
    eps32 = float(jnp.finfo(jnp.float32).eps)
    return any(
        jnp.issubdtype(w.dtype, jnp.inexact) and float(jnp.finfo(w.dtype).eps) > eps32
        for w in tree.get(target, kernels).values()
    )


# --------------------------------------------------------------------------------------------
# public entry point


def _check_rngs(model: Any, rngs: Any) -> Any:
    """linen's ``rngs=`` for ``module.apply``: a PRNG key or a dict of them by collection
    name (``{"dropout": key}``), with int seeds turned into keys."""
    if not fa.is_linen(model):
        raise TypeError(
            "lsuv: rngs= is passed to a linen module's apply; an NNX model carries its own "
            "nnx.Rngs (give them to the model when it is built, e.g. nnx.Dropout(0.1, "
            "rngs=nnx.Rngs(0))). Drop rngs=."
        )
    if not isinstance(rngs, Mapping):
        rngs = {"params": rngs}  # what module.apply does with a single key
    out = {}
    for name, k in rngs.items():
        if isinstance(k, int | np.integer) and not isinstance(k, bool):
            k = jax.random.key(check_int("lsuv", f"rngs[{name!r}]", k, 0, 2**32 - 1))
        out[str(name)] = check_key("lsuv", k, arg=f"rngs[{name!r}]")
    return out


def _hashable_kwargs(kwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = tuple(sorted(kwargs.items()))
    for k, v in items:
        try:
            hash(v)
        except TypeError:
            raise TypeError(
                f"lsuv: keyword argument {k}={short(v)} is passed to the model as a static "
                "value and must be hashable (e.g. train=False); pass arrays through x instead "
                "(rngs= is the one array-valued keyword, traced like x)."
            ) from None
    return items


@overload
def lsuv(
    model: nn.Module,
    variables: Mapping[str, Any],
    x: Any,
    /,
    *,
    target_std: float = ...,
    tol: float = ...,
    max_iters: int = ...,
    center: bool = ...,
    orthogonal_init: bool = ...,
    key: jax.Array | None = ...,
    donate: bool = ...,
    select: Select = ...,
    **kwargs: Any,
) -> tuple[Any, LSUVReport]: ...


@overload
def lsuv(
    model: nnx.Module,
    x: Any,
    /,
    *,
    target_std: float = ...,
    tol: float = ...,
    max_iters: int = ...,
    center: bool = ...,
    orthogonal_init: bool = ...,
    key: jax.Array | None = ...,
    donate: bool = ...,
    select: Select = ...,
    **kwargs: Any,
) -> LSUVReport: ...


def lsuv(
    model: Any,
    *args: Any,
    target_std: float = 1.0,
    tol: float = 1e-3,
    max_iters: int = 10,
    center: bool = False,
    orthogonal_init: bool = False,
    key: jax.Array | None = None,
    donate: bool = False,
    select: Select = None,
    **kwargs: Any,
) -> tuple[Any, LSUVReport] | LSUVReport:
    """Layer-sequential unit-variance initialization, as one compiled pass.

    Runs the forward pass once on the batch ``x`` and normalizes, in forward order, the output
    of every selected layer so that its std is ``target_std`` (and, with ``center=True``, its
    mean 0), by rescaling that layer's kernel and bias; the forward pass continues with the
    normalized output, so each layer sees its normalized inputs. For an affine layer
    (Dense/Linear, DenseGeneral/LinearGeneral, Conv, ConvTranspose, Einsum) kernel and bias are
    scaled together by ``s = target_std / std``, and with ``center`` the bias gets ``-s * mean``
    added after the scale, so std and mean are exact in one step. A selected block (e.g. conv +
    activation, via ``select``) is normalized post-activation by iterating (``jax.lax.
    while_loop``, at most ``max_iters`` steps) on the kernel and bias of the sublayer feeding its
    output. Statistics are over every element of the output (population std).

    The pass is one ``jax.jit`` program per model and input shapes, and writing the rescaled
    parameters a second one per model; calling again with the same shapes (any
    ``target_std``/``tol``/``max_iters``) reuses both.

    Linen: ``new_variables, report = lsuv(module, variables, x, **opts)``; ``variables`` is not
    modified and only ``params`` change in the result. NNX: ``report = lsuv(model, x, **opts)``
    updates the model's kernels and biases in place. Other state (BatchNorm running averages,
    RNG counters) is never changed.

    Args:
      model: a ``flax.linen.Module`` (then pass ``variables, x``) or ``flax.nnx.Module`` (then
        pass ``x``).
      target_std: wanted output std, finite and > 0.
      tol: relative tolerance, finite and >= 1e-5 (float32 statistics resolve no finer):
        converged when ``|std / target_std - 1| <= tol`` (and ``|mean| <= tol * target_std``
        with ``center``).
      max_iters: bound (int >= 1) on the rescaling steps of a selected block; affine layers
        need one.
      center: also make the mean 0 (fastai's variant) by shifting the bias. Layers without a
        bias cannot be centred; they are reported as not converged.
      orthogonal_init: first replace every rescaled kernel by a Haar-random orthogonal one
        (Mishkin & Matas), each with its own key from ``key``.
      key: PRNG key, required with ``orthogonal_init`` (and only then).
      donate: Reuse the buffers of the given parameters for the result (``jax.jit``'s
        ``donate_argnums``): linen ``variables`` (their ``params``) cannot be used afterwards;
        for NNX the model's own parameter arrays are replaced, so arrays read from it before
        the call become invalid. It saves allocating a second copy of the parameters, which
        on CPU is a large part of the pass's cost for big models (see BENCHMARKS.md).
      select: which layers (see :mod:`jaxinit.probe`): None = every layer owning a kernel, a
        glob pattern (``"block*"``), a sequence of patterns, or a predicate ``(path, module)``.
        Selected layers must not be nested.
      **kwargs: passed to the forward pass (``module.apply(..., **kwargs)`` / ``model(x,
        **kwargs)``), e.g. ``train=False``; must be hashable, except linen's ``rngs=`` (a key
        or a dict of keys by collection, e.g. ``rngs={"dropout": key}`` for ``nn.Dropout`` in
        training mode), which is passed to ``module.apply`` as a traced argument: every
        forward pass of LSUV uses it, so all see the same dropout masks. NNX models carry
        their own ``nnx.Rngs``.

    Returns:
      Linen: ``(new_variables, report)``. NNX: ``report``. See :class:`LSUVReport`.

    Raises:
      ValueError: a non-finite batch (before any work), a bad option, a ``select`` matching no
        called layer or nested layers.
      NotImplementedError: a selected block (not a single layer owning a kernel) whose
        layers are stacked by ``nn.scan`` / ``nnx.scan``.

    A selected block must return one array (a block returning ``(y, aux)`` is refused, naming
    ``select=`` and the block's path: which element is the signal is the model's convention).

    Stacked layers are normalized slice by slice, in forward order, and reported per iteration
    (``layers/dense[0]``, ``layers/dense[1]``, ...), with the same result as the unrolled
    model. This holds for layers stacked by linen's ``nn.scan`` (its ``variable_axes`` must
    carry :data:`jaxinit.probe.COLLECTION`, as :class:`jaxinit.models.MLP` with ``scan=True``
    does) and for NNX stacks made by ``nnx.vmap`` and applied by ``nnx.scan``.

    The statistics after are those of the returned parameters. For float32 (and float64)
    parameters the algebra of an affine layer gives them exactly. Parameters of a coarser dtype
    (bfloat16, float16) are rounded after rescaling, which moves a layer's std by up to a few
    tenths of a percent, so for them the outputs are measured on the returned parameters (one
    more forward pass), and a layer the rounding keeps outside ``tol`` is reported as not
    converged.

    A layer called twice (shared weights) is normalized at its first call; later calls run with
    the rescaled parameters and are not normalized again. A layer the forward pass never calls
    is not normalized and not in the report. Dead layers (output std 0) are left unchanged and
    reported; a non-finite output is reported and its layer left unchanged; a block that does
    not converge keeps its best iterate and is reported as not converged.

    Example:
      >>> import jax, jax.numpy as jnp, jaxinit
      >>> from jaxinit.models import MLP
      >>> model = MLP(depth=4, width=64)
      >>> x = jax.random.normal(jax.random.key(0), (128, 32))
      >>> variables = model.init(jax.random.key(1), x)
      >>> variables, report = jaxinit.lsuv(model, variables, x)
      >>> report.paths, report.all_converged
      (('Dense_0', 'Dense_1', 'Dense_2', 'Dense_3'), True)
    """
    target_std = check_finite("lsuv", "target_std", target_std, positive=True)
    tol = check_finite("lsuv", "tol", tol, positive=True)
    if tol < _TOL_FLOOR:
        raise ValueError(
            f"lsuv: tol={tol!r} is below {_TOL_FLOOR}, finer than float32 statistics of a "
            f"layer's output resolve (their rounding alone is ~1e-6); use tol >= {_TOL_FLOOR}."
        )
    max_iters = check_int("lsuv", "max_iters", max_iters, 1, 2**31 - 1)  # an int32 counter
    center = check_bool("lsuv", "center", center)
    orthogonal_init = check_bool("lsuv", "orthogonal_init", orthogonal_init)
    donate = check_bool("lsuv", "donate", donate)
    if orthogonal_init:
        if key is None:
            raise ValueError(
                "lsuv: orthogonal_init=True needs key=jax.random.key(seed) (one key is split "
                "into a distinct key per layer)."
            )
        check_key("lsuv", key)
    elif key is not None:
        raise ValueError("lsuv: key= is only used with orthogonal_init=True; drop it or set it.")
    compile_select(select)  # type check, outside jit
    rngs = kwargs.pop("rngs", None)
    if rngs is not None:
        rngs = _check_rngs(model, rngs)
    # numpy scalars: jit takes them as traced arguments without a dispatch of their own
    dyn = (np.float32(target_std), np.float32(tol), np.int32(max_iters))
    static = dict(
        select=fa.Static("select", hashable_select(select)),
        kwargs=_hashable_kwargs(kwargs),
        center=bool(center),
        ortho=bool(orthogonal_init),
    )
    variables, x = fa.model_args("lsuv", model, args)
    check_finite_batch("lsuv", x)
    fa.check_call_kwargs("lsuv", model, kwargs)
    split, state = fa.split_model(model, variables)
    try:
        with fa.variables_fit("lsuv"):
            plan, gains, base, rows = _PASS(state, x, key, rngs, *dyn, static=split, **static)
            result = _APPLY[donate](
                state if base is None else base,
                gains,
                static=split,
                edits=plan.edits,
                center=center,
            )
    except fa.InvalidRngError as err:
        need = str(err).split(" (")[0]
        if 'PRNG for "params"' in str(err):  # Flax would create a parameter variables lack
            raise ValueError(
                f"lsuv: variables do not fit the module: {need.rstrip('.')} (a parameter is "
                "missing). Pass the variables that module.init returned for this very module."
            ) from err
        if rngs is None:
            raise ValueError(
                f"lsuv: the model asks for a PRNG key ({need}); pass rngs={{'<name>': key}}, "
                "which lsuv hands to module.apply, e.g. rngs={'dropout': jax.random.key(0)} "
                "for nn.Dropout in training mode."
            ) from err
        raise ValueError(
            f"lsuv: rngs= (keys for {sorted(rngs)}) reaches the forward pass, but not the "
            f"reruns of a selected block ({need}): a block is rescaled by running it alone. With "
            f"select={select!r}, select the layers owning a kernel instead of a block "
            "that draws random numbers (nn.Dropout), or pass train=False."
        ) from err
    report = _report_of(plan.paths, rows, target_std, tol)
    if variables is not None:
        return result, report
    fa.apply_params(model, result)
    return report


class _CallableModule(types.ModuleType):
    """``jaxinit.lsuv`` names both this module and its function. ``import jaxinit.lsuv``
    binds the module to that name, so the module calls through to the function: either way,
    ``jaxinit.lsuv(...)`` runs LSUV."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return lsuv(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
