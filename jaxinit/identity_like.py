"""Identity-like deterministic initializers: ZerO (Zhao et al. 2022) and IDInit (Pan et al.
2025).

Both give every kernel a fixed structure made of zeros and one or two values, so that a deep
network starts as (close to) an identity map of its input. Kernels are in Flax layout: Dense
``(in, out)``, conv ``(*spatial, in, out)``; conv kernels hold the dense matrix of their
channels on the tap ``(k - 1) // 2`` of each spatial axis (the centre for odd ``k``, the tap
that maps an output position to the same input position under ``padding="SAME"``) and zeros
on every other tap, as :func:`jaxinit.identity` does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._base import (
    Init,
    bounded_by,
    check_reach,
    factory,
    largest,
    normal_reach,
    random_normal,
    sample_dtype,
)
from ._checks import check_finite
from ._types import Initializer

__all__ = ["id_init", "zero_hadamard"]


def _check_kernel(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"{name} needs rank >= 2 ((in, out) or (*spatial, in, out)), got shape {shape}. "
            "For biases use jaxinit.zeros()."
        )


def _centre(shape: tuple[int, ...], matrix: jax.Array) -> jax.Array:
    """``matrix`` (in, out) on the tap ``(k - 1) // 2`` of every spatial axis, zeros elsewhere."""
    spatial = shape[:-2]
    if not spatial:
        return matrix
    tap = tuple((k - 1) // 2 for k in spatial)
    return jnp.zeros(shape, matrix.dtype).at[tap].set(matrix)


def hadamard_order(n_out: int) -> int:
    """``p = 2^ceil(log2(n_out))``: the order of the Sylvester Hadamard matrix ZerO cuts its
    ``(in, out)`` block from (1 for ``n_out = 1``)."""
    return 1 << max(n_out - 1, 0).bit_length()


def sylvester(n_rows: int, n_cols: int, dtype: np.dtype) -> jax.Array:
    """The top-left ``(n_rows, n_cols)`` block of the Sylvester Hadamard matrix of any order
    ``>= max(n_rows, n_cols)``: ``H[i, j] = (-1)^popcount(i & j)`` (the recursion
    ``H_2m = [[H_m, H_m], [H_m, -H_m]]``, the ordering of ``scipy.linalg.hadamard``), built
    from indices so that memory is ``O(n_rows * n_cols)``, never ``O(p^2)``."""
    i = jnp.arange(n_rows, dtype=jnp.uint32)[:, None]
    j = jnp.arange(n_cols, dtype=jnp.uint32)[None, :]
    odd = jax.lax.population_count(i & j) & 1
    return (1 - 2 * odd.astype(jnp.int32)).astype(dtype)


@factory
def zero_hadamard(scale: float = 1.0) -> Initializer:
    """ZerO initialization (Zhao et al. 2022): a deterministic kernel of zeros and ``±c``.

    For a Dense kernel ``(in, out)``:

    ============  ==============================================================================
    ``out <= in``  ``scale * eye(in, out)``: the identity when square, a partial identity that
                   keeps the first ``out`` inputs when the layer narrows
    ``out > in``   ``c * H_p[:in, :out]`` with ``p = 2^ceil(log2 out)``, ``H_p`` the Sylvester
                   Hadamard matrix (entries ``±1``, ``H_p^T H_p = p I``) and
                   ``c = scale * 2^(-log2(p) / 2) = scale / sqrt(p)``
    ============  ==============================================================================

    Conv kernels ``(*spatial, in, out)`` hold that matrix on the tap ``(k - 1) // 2`` of every
    spatial axis and zeros elsewhere (the paper's Algorithm 2). The key is ignored.

    The authors' code (``ZerO_Init_on_matrix`` in ``example_mnist.ipynb`` of
    github.com/jiaweizzhao/ZerO-initialization) computes the widening case as
    ``eye(out, p) @ hadamard(p) / 2^(m/2) @ eye(p, in)`` with ``m = ceil(log2 out)`` on a
    PyTorch ``(out, in)`` weight; this is its transpose (``H_p`` is symmetric), so the values
    agree exactly. With ``out`` a power of two the rows of the ``(in, out)`` kernel are
    orthonormal (``W W^T = I``: ``x -> x W`` preserves norms); otherwise they are cut from longer
    orthogonal rows. The paper's Algorithm 1 prints ``c = 2^(-(m-1)/2)``,
    ``sqrt(2)`` times the code's constant; ``scale=math.sqrt(2)`` gives that value.

    Variance law: the weights are not random; ``init.variance(fan_in, fan_out, shape=...)`` is
    their mean square over the kernel: ``scale^2 / fan_in`` when ``out <= in`` and
    ``scale^2 / (prod(spatial) * p)`` when ``out > in`` (without ``shape`` the kernel is taken
    as Dense, ``in = fan_in``, ``out = fan_out``).

    Args:
      scale: Multiplier, finite and > 0.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from jaxinit.identity_like import zero_hadamard
      >>> w = zero_hadamard()(jax.random.key(0), (3, 8))  # widening: Hadamard
      >>> bool((jnp.abs(w) == np.float32(8 ** -0.5)).all())  # every entry is +-1/sqrt(8)
      True
      >>> bool(jnp.allclose(w @ w.T, jnp.eye(3), atol=1e-6))  # out = 8 is a power of two
      True
      >>> bool((zero_hadamard()(None, (8, 3)) == jnp.eye(8, 3)).all())  # narrowing
      True

    References:
      Zhao et al. 2022, "ZerO Initialization: Initializing Neural Networks with only Zeros and
      Ones", TMLR, https://arxiv.org/abs/2110.12661;
      https://github.com/jiaweizzhao/ZerO-initialization
    """
    scale = check_finite("zero_hadamard", "scale", scale, positive=True)

    def check(shape):
        _check_kernel("zero_hadamard", shape)

    def sample(key, shape, dtype):
        n_in, n_out = shape[-2:]
        if n_out <= n_in:
            matrix = scale * jnp.eye(n_in, n_out, dtype=dtype)
        else:
            p = hadamard_order(n_out)
            c = scale / math.sqrt(p)
            matrix = (c * sylvester(n_in, n_out, sample_dtype(dtype))).astype(dtype)
        return _centre(shape, matrix)

    def variance(fan_in, fan_out, shape):
        if shape is None:
            n_in, n_out, taps = fan_in, fan_out, 1
        else:
            check(shape)
            n_in, n_out, taps = shape[-2], shape[-1], math.prod(shape[:-2])
        if n_out <= n_in:
            return scale**2 / max(taps * n_in, 1)
        return scale**2 / (taps * hadamard_order(n_out))

    return Init(
        "zero_hadamard",
        sample,
        {"scale": scale},
        random=False,
        complex_ok=False,
        check=check,
        variance=variance,
        fits=bounded_by("zero_hadamard", scale),
    )


def padded_identity(n_in: int, n_out: int, dtype: np.dtype) -> jax.Array:
    """The ``(in, out)`` 0/1 matrix with ones where ``i ≡ j (mod min(in, out))``: the identity
    repeated along the longer side (cut where it does not divide)."""
    n = min(n_in, n_out)
    i = jnp.arange(n_in)[:, None]
    j = jnp.arange(n_out)[None, :]
    return ((i % n) == (j % n)).astype(dtype)


@factory
def id_init(scale: float = 1.0, noise: float = 0.0) -> Initializer:
    """IDInit (Pan et al. 2025): the padded identity-like matrix ``IDI_tau``.

    For a Dense kernel ``(in, out)``, ``W[i, j] = scale`` where ``i ≡ j (mod min(in, out))``
    and 0 elsewhere: the identity when square; when the layer widens, the identity repeated
    along the outputs (output ``j`` copies input ``j mod in``); when it narrows, repeated along
    the inputs (output ``j`` sums the inputs ``j, j + out, j + 2 out, ...``). Unlike a
    partial identity padded with zeros (:func:`jaxinit.identity`), no input or output is
    dropped, so the matrix has the full rank ``min(in, out)`` -- the paper's answer to the rank
    constraint that zero padding puts on a network (Zhao et al. 2022, Theorem 1).

    Copies of one input are equal at initialization and receive equal gradients in a network
    that treats them alike; the paper reports that training with SGD with momentum separates
    them. ``noise > 0`` adds ``N(0, noise^2)`` to every element, which separates them at
    initialization (the key is then used; with ``noise=0`` it is ignored).

    The paper's zero-preserving variant ``IDIZ_eps`` for the last layer of a residual branch
    (``eps = 1e-6`` in the paper, so that the branch starts near zero without dead neurons) is
    ``id_init(scale=1e-6)``; ``IDI_tau`` uses ``tau = 1``. Conv kernels ``(*spatial, in, out)``
    hold the matrix on the tap ``(k - 1) // 2`` of every spatial axis and zeros elsewhere, so
    the conv is the same channel map at every position (the paper's patch-maintaining conv
    variant is not provided).

    Variance law: the mean square over the kernel, ``scale^2 / min(fan_in, fan_out) +
    noise^2`` with the fans of :func:`compute_fans` (``max(in, out)`` ones in an ``in * out``
    matrix; a conv kernel spreads them over ``prod(spatial)`` taps).

    Args:
      scale: ``tau``, the value of the identity entries: finite and > 0.
      noise: Standard deviation of the Gaussian noise added to every element, finite and
        >= 0 (default 0: deterministic).

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinit.identity_like import id_init
      >>> w = id_init()(jax.random.key(0), (2, 6))  # widening: [I I I]
      >>> x = jnp.array([[3.0, 5.0]])
      >>> (x @ w).tolist()
      [[3.0, 5.0, 3.0, 5.0, 3.0, 5.0]]
      >>> int(jnp.linalg.matrix_rank(id_init()(None, (6, 4))))  # full rank
      4

    References:
      Pan et al. 2025, "IDInit: A Universal and Stable Initialization Method for Neural Network
      Training", ICLR, https://arxiv.org/abs/2503.04626
    """
    scale = check_finite("id_init", "scale", scale, positive=True)
    noise = check_finite("id_init", "noise", noise, nonnegative=True)

    def check(shape):
        _check_kernel("id_init", shape)

    def sample(key, shape, dtype):
        n_in, n_out = shape[-2:]
        sd = sample_dtype(dtype)
        w = _centre(shape, scale * padded_identity(n_in, n_out, sd))
        if noise > 0:
            w = w + noise * random_normal(key, shape, sd)
        return w.astype(dtype)

    def fits(shape, dtype):
        if noise == 0:
            bounded_by("id_init", scale)(shape, dtype)
            return
        # A narrowing matrix sums rows, but each element is at most scale + noise * z.
        z = normal_reach(sample_dtype(dtype))
        reach = scale + noise * z
        check_reach("id_init", dtype, reach, "noise", noise, (largest(dtype) - scale) / z)

    return Init(
        "id_init",
        sample,
        {"scale": scale, "noise": noise},
        random=noise > 0,
        complex_ok=False,
        check=check,
        variance=lambda fan_in, fan_out, shape: scale**2 / min(fan_in, fan_out) + noise**2,
        fits=fits,
    )
