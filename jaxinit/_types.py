"""The Initializer protocol and shared type aliases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import jax
from jax.typing import DTypeLike

Shape = Sequence[int]
Axes = int | Sequence[int]
# The activations known by name (gains.ACTIVATIONS is this list); any callable works too.
ActivationName = Literal[
    "celu",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "elu",
    "erf",
    "gelu",
    "gelu_tanh",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "identity",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "sin",
    "softplus",
    "softsign",
    "swish",
    "tanh",
]
Activation = ActivationName | Callable[[jax.Array], jax.Array]


@runtime_checkable
class Initializer(Protocol):
    """A pure ``(key, shape, dtype=None) -> jax.Array`` function.

    ``dtype=None`` means float32 (float64 when ``jax_enable_x64`` is on), so every jaxinit
    initializer can be passed as ``kernel_init=`` / ``bias_init=`` to Flax linen and NNX layers.
    """

    def __call__(
        self, key: jax.Array, shape: Shape, dtype: DTypeLike | None = None
    ) -> jax.Array: ...


__all__ = ["Activation", "ActivationName", "Axes", "DTypeLike", "Initializer", "Shape"]
