"""The Initializer protocol and shared type aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import jax
from jax.typing import DTypeLike

Shape = Sequence[int]
Axes = int | Sequence[int]


@runtime_checkable
class Initializer(Protocol):
    """A pure ``(key, shape, dtype=None) -> jax.Array`` function.

    ``dtype=None`` means float32 (float64 when ``jax_enable_x64`` is on), so every jaxinit
    initializer can be passed as ``kernel_init=`` / ``bias_init=`` to Flax linen and NNX layers.
    """

    def __call__(
        self, key: jax.Array, shape: Shape, dtype: DTypeLike | None = None
    ) -> jax.Array: ...


__all__ = ["Axes", "DTypeLike", "Initializer", "Shape"]
