"""Structured initializers: identity (eye / centred Dirac) and sparse (Martens 2010)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._base import (
    Init,
    bounded_by,
    check_reach,
    factory,
    largest,
    normal_reach,
    random_normal,
    random_uniform,
    real_dtype,
    sample_dtype,
)
from ._checks import check_finite
from ._types import Initializer


@factory
def identity(scale: float = 1.0) -> Initializer:
    """``scale`` times the identity map.

    Dense kernels ``(in, out)``: ``scale * eye(in, out)`` (rectangular allowed: the extra
    outputs are zero, or the extra inputs are dropped). Conv kernels ``(*spatial, in, out)``: a
    Dirac kernel, zero except ``[c, ..., i, i] = scale`` with ``c = (k - 1) // 2`` per spatial
    axis, the tap that maps each output position to the same input position under Flax's
    ``padding="SAME"`` (the centre for odd ``k``). The key is ignored.

    Variance law: the weights are not random; ``init.variance(fan_in, fan_out)`` is their mean
    square over the kernel, ``scale^2 min(in, out) / size = scale^2 / max(fan_in, fan_out)``
    with the fans of :func:`compute_fans` (for a square Dense kernel, ``fan_in`` times it is
    ``scale^2``, the layer's exact gain).

    Args:
      scale: Multiplier, finite and > 0.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxinit
      >>> w = jaxinit.identity()(jax.random.key(0), (3, 3, 8, 8))
      >>> x = jnp.ones((1, 5, 5, 8))
      >>> y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
      ...                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
      >>> bool(jnp.allclose(y, x))
      True
    """
    scale = check_finite("identity", "scale", scale, positive=True)

    def check(shape):
        if len(shape) < 2:
            raise ValueError(
                f"identity needs rank >= 2 ((in, out) or (*spatial, in, out)), got "
                f"shape {shape}. For biases use jaxinit.zeros()."
            )

    def sample(key, shape, dtype):
        *spatial, n_in, n_out = shape
        eye = scale * jnp.eye(n_in, n_out, dtype=dtype)
        if not spatial:
            return eye
        return jnp.zeros(shape, dtype).at[tuple((k - 1) // 2 for k in spatial)].set(eye)

    return Init(
        "identity",
        sample,
        {"scale": scale},
        random=False,
        check=check,
        variance=lambda fan_in, fan_out, shape: scale**2 / max(fan_in, fan_out),
        fits=bounded_by("identity", scale),
    )


@factory
def sparse(sparsity: float, stddev: float = 0.01) -> Initializer:
    """Sparse initialization (Martens 2010): each output unit keeps a random subset of its
    incoming weights, drawn from ``N(0, stddev^2)``; the other ``ceil(sparsity * fan_in)`` are
    zero.

    Incoming weights of output unit ``j`` are ``w[..., j]`` (every axis but the last, so Dense
    and conv kernels in Flax layout). Zeroed positions are chosen uniformly without replacement,
    independently per unit, so every unit has exactly the same number of non-zero inputs.
    Variance law: ``init.variance(fan_in, fan_out) == stddev^2 * (1 - ceil(sparsity * fan_in)
    / fan_in)``. As in
    ``torch.nn.init.sparse_``, but along the incoming axis of Flax's ``(in, out)`` layout.

    Args:
      sparsity: Fraction of incoming weights set to zero per unit, in [0, 1).
      stddev: Standard deviation of the non-zero weights, finite and >= 0.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.sparse(0.9)(jax.random.key(0), (100, 20))
      >>> bool(((w != 0).sum(axis=0) == 10).all())
      True

    References:
      Martens 2010, "Deep learning via Hessian-free optimization"
    """
    sparsity = check_finite("sparse", "sparsity", sparsity)
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparse: sparsity={sparsity!r} must be in [0, 1).")
    stddev = check_finite("sparse", "stddev", stddev, nonnegative=True)

    def check(shape):
        if len(shape) < 2:
            raise ValueError(
                f"sparse needs rank >= 2 (incoming axes, then units), got shape "
                f"{shape}. For biases use jaxinit.zeros()."
            )

    def sample(key, shape, dtype):
        rows, cols = math.prod(shape[:-1]), shape[-1]
        n_zero = math.ceil(sparsity * rows)
        k_perm, k_val = jax.random.split(key)
        ranks = jnp.argsort(
            jnp.argsort(random_uniform(k_perm, (rows, cols), jnp.float32), axis=0), axis=0
        )
        w = stddev * random_normal(k_val, (rows, cols), sample_dtype(dtype))
        return jnp.where(ranks >= n_zero, w, 0).astype(dtype).reshape(shape)

    return Init(
        "sparse",
        sample,
        {"sparsity": sparsity, "stddev": stddev},
        complex_ok=False,
        check=check,
        fits=lambda shape, dtype: _sparse_fits(stddev, dtype),
        variance=lambda fan_in, fan_out, shape: (
            stddev**2 * (1 - math.ceil(sparsity * fan_in) / fan_in)
        ),
    )


def _sparse_fits(stddev: float, dtype) -> None:
    z = normal_reach(real_dtype(sample_dtype(dtype)))
    check_reach("sparse", dtype, stddev * z, "stddev", stddev, largest(dtype) / z)
