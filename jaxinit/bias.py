"""Bias initializers: class-prior biases and PyTorch's default bias."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import jax.numpy as jnp
import numpy as np

from ._base import Init, clip_into, factory, random_uniform, sample_dtype
from ._types import Initializer

Activation = Literal["softmax", "sigmoid"]
_ACTIVATIONS = get_args(Activation)


@factory
def prior_bias(
    counts_or_probs: Sequence[float], *, activation: Activation = "softmax"
) -> Initializer:
    """Classifier output bias that makes the initial prediction equal the class frequencies.

    With a zero (or small) final kernel the logits equal the bias, so the model starts by
    predicting the prior instead of the uniform distribution, and the first steps are not
    spent learning the class frequencies (Karpathy, "A Recipe for Training Neural Networks").

    * ``"softmax"`` (one label per example): ``counts_or_probs`` are class counts or
      probabilities, all > 0, normalized to ``p``; the bias is ``log p``, since
      ``softmax(log p)_i = p_i / sum_j p_j = p_i``. The per-class logit ``log(p / (1 - p))``,
      sometimes quoted for this, is right only for independent sigmoids: under softmax it gives
      probabilities proportional to ``p / (1 - p)``, which overweights frequent classes (for
      counts 10:5:5:100:100 the two large classes get 0.473 each instead of 0.455).
    * ``"sigmoid"`` (independent binary labels, multi-label): ``counts_or_probs`` are per-class
      positive rates in (0, 1); the bias is ``logit p = log(p / (1 - p))``, since
      ``sigmoid(logit p) = p``.

    The initializer checks that the requested shape is ``(num_classes,)``; the key is ignored.
    It has no variance law (its values come from the class frequencies, not from the fans):
    ``init.variance(...)`` raises a ``ValueError``.

    Args:
      counts_or_probs: One non-negative number per class (see above).
      activation: ``"softmax"`` or ``"sigmoid"``.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> b = jaxinit.prior_bias([10, 5, 5, 100, 100])(jax.random.key(0), (5,))
      >>> p = jax.nn.softmax(b)
      >>> bool(jax.numpy.allclose(p, jax.numpy.array([10, 5, 5, 100, 100]) / 220))
      True
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"prior_bias: activation={activation!r} is not supported; use one of {_ACTIVATIONS}."
        )
    try:
        p = np.asarray(counts_or_probs, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"prior_bias: counts_or_probs={counts_or_probs!r} must be a sequence "
            "of numbers, one per class."
        ) from err
    if p.ndim != 1 or p.size == 0:
        raise ValueError(
            f"prior_bias: counts_or_probs must be 1-D with one entry per class, got "
            f"shape {p.shape}."
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"prior_bias: counts_or_probs={p.tolist()} has a NaN or inf entry.")
    if activation == "softmax":
        if np.any(p <= 0):
            bad = p[p <= 0].tolist()
            raise ValueError(
                f"prior_bias: counts_or_probs={p.tolist()} has entries {bad} <= 0; softmax "
                "needs every class frequency > 0 (its bias is log p). Add a pseudo-count (e.g. "
                "counts + 1) for classes absent from the data."
            )
        bias = np.log(p / p.sum())
    else:
        if np.any((p <= 0) | (p >= 1)):
            raise ValueError(
                f"prior_bias: counts_or_probs={p.tolist()} must be per-class positive rates "
                "strictly inside (0, 1) for activation='sigmoid' (its bias is logit p)."
            )
        bias = np.log(p) - np.log1p(-p)
    k = p.size

    def check(shape):
        if shape != (k,):
            raise ValueError(
                f"prior_bias: shape={shape} does not match the {k} classes given; "
                f"the bias must have shape ({k},)."
            )

    def sample(key, shape, dtype):
        return jnp.asarray(bias, dtype)

    return Init(
        "prior_bias",
        sample,
        {"counts_or_probs": tuple(p.tolist()), "activation": activation},
        random=False,
        complex_ok=False,
        check=check,
        variance=_no_variance,
    )


def _no_variance(fan_in: int, fan_out: int, shape: tuple[int, ...] | None) -> float:
    raise ValueError(
        "prior_bias has no variance law: its values are log class frequencies (or logits) "
        "fixed by counts_or_probs, not draws scaled by the fans. Measure the bias array "
        "itself, e.g. float(jnp.var(b))."
    )


@factory
def torch_bias_default(fan_in: int) -> Initializer:
    """PyTorch's default bias of ``nn.Linear`` / ``nn.Conv*``: ``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))``, where ``fan_in`` is that of the layer's kernel.

    A bias initializer sees only the bias shape, so the layer's fan-in is given here (for a
    conv kernel ``(*spatial, in, out)``, ``prod(spatial) * in``). Variance law:
    ``init.variance(...) == 1 / (3 * fan_in)`` with this ``fan_in`` (the arguments, the
    bias's own fans, are ignored).

    Args:
      fan_in: The layer's fan-in, an int > 0.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> b = jaxinit.torch_bias_default(fan_in=784)(jax.random.key(0), (10,))
      >>> b.shape, bool((abs(b) <= 1 / 28).all())
      ((10,), True)
    """
    if isinstance(fan_in, bool) or not isinstance(fan_in, int | np.integer) or fan_in <= 0:
        raise ValueError(
            f"torch_bias_default: fan_in={fan_in!r} must be an int > 0 (the "
            "fan-in of the layer's kernel)."
        )
    bound = 1 / math.sqrt(int(fan_in))

    def sample(key, shape, dtype):
        u = random_uniform(key, shape, sample_dtype(dtype), -bound, bound)
        return clip_into(u, -bound, bound, dtype, open_lo=False)

    n = int(fan_in)
    return Init(
        "torch_bias_default",
        sample,
        {"fan_in": n},
        complex_ok=False,
        variance=lambda fan_in, fan_out, shape: 1 / (3 * n),
    )
