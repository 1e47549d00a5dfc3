"""Orthogonal initializers: Haar-distributed orthogonal matrices and delta-orthogonal kernels."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._base import Init, bounded_by, factory, random_normal, sample_dtype
from ._checks import check_finite
from ._types import Initializer


@jax.custom_batching.custom_vmap
def _qr(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    q, r = jnp.linalg.qr(a)
    return q, r


@_qr.def_vmap
def _qr_vmap(axis_size, in_batched, a):
    """Batched (vmapped) QR as a ``lax.map`` of single QRs.

    On XLA CPU a program holding several batched LAPACK QR calls (``jit(vmap(model.init))``
    of a model with 7 or more orthogonal layers) can hang in the thread pool; a loop of
    single QRs does not, costs the same (the batched call loops too) and gives the same bits.
    """
    del axis_size
    if not in_batched[0]:
        return _qr(a), (False, False)
    return jax.lax.map(_qr, a), (True, True)


def haar(key: jax.Array, n_rows: int, n_cols: int, dtype: np.dtype) -> jax.Array:
    """An ``(n_rows, n_cols)`` matrix with orthonormal columns (rows if wider than tall),
    Haar-distributed, in the sampling dtype of ``dtype`` (float32 for bf16/fp16)."""
    sd = sample_dtype(dtype)
    tall = n_rows >= n_cols
    a = random_normal(key, (n_rows, n_cols) if tall else (n_cols, n_rows), sd)
    q, r = _qr(a)
    d = jnp.diagonal(r)
    # Sign (phase) correction: QR's Q alone is not Haar; Q diag(sign(diag R)) is (Mezzadri 2007).
    q = q * jnp.where(d == 0, 1, d / jnp.abs(d).astype(d.dtype))[None, :]
    return q if tall else q.T


def _check_rank(name: str, shape: tuple[int, ...], least: int, hint: str) -> None:
    if len(shape) < least:
        raise ValueError(f"{name} needs rank >= {least}, got shape {shape}. {hint}")


@factory
def orthogonal(scale: float = 1.0, column_axis: int = -1) -> Initializer:
    """``scale`` times a Haar-random matrix with orthonormal columns (or rows, if wider).

    The weight is viewed as a matrix with ``shape[column_axis]`` columns and every other axis
    flattened into rows; ``W^T W = scale^2 I`` when rows >= columns, ``W W^T = scale^2 I``
    otherwise. QR of a Gaussian matrix with the sign correction of Mezzadri (2007), so the
    distribution is exactly Haar. bfloat16/float16 are computed in float32 and cast; complex
    dtypes give unitary matrices.

    Variance law: each element has ``E[w^2] = scale^2 / max(rows, columns)`` and mean 0, so
    ``init.variance(fan_in, fan_out) == scale**2 / max(fan_in, fan_out)`` for a Dense kernel
    ``(in, out)``; for other shapes pass ``shape=`` (a conv kernel ``(*spatial, in, out)`` has
    rows ``prod(spatial) * in`` and ``out`` columns).

    Args:
      scale: Multiplier, finite and > 0 (e.g. ``jaxinit.gain("relu")``).
      column_axis: Axis of output units.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxinit
      >>> w = jaxinit.orthogonal()(jax.random.key(0), (256, 128))
      >>> bool(jnp.allclose(w.T @ w, jnp.eye(128), atol=1e-5))
      True

    References:
      Saxe et al. 2014, https://arxiv.org/abs/1312.6120; Mezzadri 2007, arXiv:math-ph/0609050
    """
    scale = check_finite("orthogonal", "scale", scale, positive=True)
    if isinstance(column_axis, bool) or not isinstance(column_axis, int):
        raise TypeError(f"orthogonal: column_axis={column_axis!r} must be an int.")

    def check(shape):
        _check_rank("orthogonal", shape, 2, "For biases use jaxinit.zeros().")
        if not -len(shape) <= column_axis < len(shape):
            raise ValueError(
                f"orthogonal: column_axis={column_axis} is out of range for shape {shape}; "
                f"use an axis in [-{len(shape)}, {len(shape) - 1}]."
            )

    def sample(key, shape, dtype):
        n_cols = shape[column_axis]
        n_rows = math.prod(shape) // n_cols
        q = haar(key, n_rows, n_cols, dtype)
        rest = tuple(np.delete(np.array(shape), column_axis))
        q = jnp.moveaxis(q.reshape((*rest, n_cols)), -1, column_axis)
        return (scale * q).astype(dtype)

    def variance(fan_in, fan_out, shape):
        if shape is None:
            return scale**2 / max(fan_in, fan_out)
        check(shape)
        n_cols = shape[column_axis]
        return scale**2 / max(math.prod(shape) // max(n_cols, 1), n_cols, 1)

    return Init(
        "orthogonal",
        sample,
        {"scale": scale, "column_axis": column_axis},
        check=check,
        variance=variance,
        fits=bounded_by("orthogonal", scale),
    )


@factory
def delta_orthogonal(scale: float = 1.0) -> Initializer:
    """Delta-orthogonal conv kernel: zero except the centre tap, which is ``scale`` times a
    Haar-random orthogonal ``(in, out)`` matrix.

    For Flax kernels ``(*spatial, in, out)`` of rank 3 to 5 with odd spatial sizes (the
    centre must exist) and ``in <= out``, so that a conv layer at initialization is an
    orthogonal map of channels at each position (dynamical isometry).

    Variance law: averaged over all taps, ``E[w^2] = scale^2 / (prod(spatial) * out)``, mean
    0; with the fans of :func:`compute_fans` (``prod(spatial) * in``, ``prod(spatial) *
    out``), ``init.variance(fan_in, fan_out) == scale**2 / max(fan_in, fan_out)``.

    Args:
      scale: Multiplier, finite and > 0.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxinit
      >>> w = jaxinit.delta_orthogonal()(jax.random.key(0), (3, 3, 16, 32))
      >>> centre = w[1, 1]
      >>> bool(jnp.allclose(centre @ centre.T, jnp.eye(16), atol=1e-5))
      True
      >>> bool((w.at[1, 1].set(0) == 0).all())  # zero outside the centre tap
      True

    References:
      Xiao et al. 2018, https://arxiv.org/abs/1806.05393
    """
    scale = check_finite("delta_orthogonal", "scale", scale, positive=True)

    def check(shape):
        if not 3 <= len(shape) <= 5:
            raise ValueError(
                f"delta_orthogonal needs a conv kernel (*spatial, in, out) of rank "
                f"3 to 5, got shape {shape}. Use orthogonal() for dense kernels."
            )
        spatial = shape[:-2]
        if any(k % 2 == 0 for k in spatial):
            raise ValueError(
                f"delta_orthogonal: shape={shape} has an even spatial size; the "
                "centre tap exists only for odd sizes (e.g. 3 or 5)."
            )

    def sample(key, shape, dtype):
        *spatial, n_in, n_out = shape
        if n_in > n_out:
            raise ValueError(
                f"delta_orthogonal: shape={shape} has in={n_in} > out={n_out}; an "
                "orthogonal centre needs in <= out."
            )
        centre = scale * haar(key, n_in, n_out, dtype)
        w = jnp.zeros(shape, centre.dtype)
        return w.at[tuple(k // 2 for k in spatial)].set(centre).astype(dtype)

    return Init(
        "delta_orthogonal",
        sample,
        {"scale": scale},
        check=check,
        variance=lambda fan_in, fan_out, shape: scale**2 / max(fan_in, fan_out),
        fits=bounded_by("delta_orthogonal", scale),
    )
