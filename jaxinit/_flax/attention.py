"""Flax attention that reports its attention entropy per head.

:func:`attention_fn` is an ``attention_fn`` for ``nn.MultiHeadDotProductAttention`` and
``nnx.MultiHeadAttention`` that computes what the calling module's own Flax function computes
(linen's ``dot_product_attention`` or NNX's) and, beside it, the mean attention entropy per head
(:func:`entropy_per_head`). The entropy goes to every :func:`collecting` block open around the
call (how :func:`jaxinit.measure` reads it) and, when the module asks for its weights to be
sown (``sow_weights=True``), into the module's ``intermediates`` as ``attention_entropy``.

:func:`recording_defaults` makes attention layers that use Flax's default function report it
too, without changing the model: linen layers through a method interceptor, NNX layers on a
copy of the model.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen.dtypes import promote_dtype as _linen_promote
from flax.nnx.nn import dtypes as _nnx_dtypes
from flax.nnx.nn.attention import dot_product_attention_weights as _nnx_weights

from .probe import nnx_copy

__all__ = [
    "ENTROPY",
    "attention_fn",
    "collecting",
    "entropy_per_head",
    "is_attention",
    "recording_defaults",
]

ENTROPY = "attention_entropy"
"""The name under which the entropy is sown into ``intermediates``."""

_LOCAL = threading.local()


def _sinks() -> list[list[jax.Array]]:
    if not hasattr(_LOCAL, "sinks"):
        _LOCAL.sinks = []
    return _LOCAL.sinks


@contextlib.contextmanager
def collecting() -> Iterator[list[jax.Array]]:
    """A list that receives, in call order, the per-head entropy of every recording attention
    call made inside the block (nested blocks all receive it). Trace-time Python: read the
    list inside the same trace (the same ``jit``/``vmap``/``remat`` body) as the calls."""
    found: list[jax.Array] = []
    sinks = _sinks()
    sinks.append(found)
    try:
        yield found
    finally:
        sinks.pop()


def entropy_per_head(weights: jax.Array) -> jax.Array:
    """Mean attention entropy per head: ``H_h = mean_{b, q} -sum_k w[b, h, q, k] log w[b, h, q, k]``
    in nats, with ``0 log 0 = 0``, for weights ``[batch..., heads, q_length, kv_length]`` (each
    row a softmax). Returns float32 ``(heads,)``; ``log(kv_length)`` is uniform attention, 0 a
    one-hot one."""
    w = weights.astype(jnp.float32)
    safe = jnp.where(w > 0, w, 1.0)
    h = -jnp.sum(jnp.where(w > 0, w * jnp.log(safe), 0.0), axis=-1)  # [batch..., heads, q]
    h = jnp.moveaxis(h, -2, 0)
    return h.reshape(h.shape[0], -1).mean(axis=1)


def _emit(weights: jax.Array, module: Any, linen: bool) -> None:
    sinks = _sinks()
    if not sinks and module is None:
        return
    entropy = entropy_per_head(weights)
    for found in sinks:
        found.append(entropy)
    if module is not None:
        module.sow("intermediates" if linen else nnx.Intermediate, ENTROPY, entropy)


def _dropout(
    weights: jax.Array,
    rng: Any,
    rate: float,
    broadcast: bool,
    batch_ndim: int,
    dtype: Any,
) -> jax.Array:
    """Flax's attention dropout (the same draws for the same key)."""
    keep_prob = 1.0 - rate
    if broadcast:
        shape = tuple([1] * batch_ndim) + weights.shape[-2:]
        keep = jax.random.bernoulli(rng, keep_prob, shape)
    else:
        keep = jax.random.bernoulli(rng, keep_prob, weights.shape)
    multiplier = keep.astype(dtype) / jnp.asarray(keep_prob, dtype=dtype)
    return weights * multiplier


def _linen(
    query, key, value, *, bias, mask, broadcast_dropout, dropout_rng, dropout_rate,
    deterministic, dtype, precision, module, force_fp32_for_softmax, qk_attn_weights_einsum,
    attn_weights_value_einsum,
):  # fmt: skip
    """linen's ``dot_product_attention`` with the weights taken before dropout."""
    if bool(qk_attn_weights_einsum) != bool(attn_weights_value_einsum):
        raise ValueError(
            "attention_fn: qk_attn_weights_einsum and attn_weights_value_einsum must be "
            "given together."
        )
    query, key, value = _linen_promote(query, key, value, dtype=dtype)
    dtype = query.dtype
    weights = nn.dot_product_attention_weights(
        query,
        key,
        bias,
        mask,
        broadcast_dropout,
        None,
        0.0,
        True,
        dtype,
        precision,
        module,
        force_fp32_for_softmax,
        einsum=qk_attn_weights_einsum,
    )
    _emit(weights, module, linen=True)
    if not deterministic and dropout_rate > 0.0:
        weights = _dropout(
            weights, dropout_rng, dropout_rate, broadcast_dropout, key.ndim - 2, dtype
        )
    einsum = attn_weights_value_einsum or functools.partial(
        jnp.einsum, precision=precision, _dot_general=jax.lax.dot_general
    )
    return einsum("...hqk,...khd->...qhd", weights, value)


def _nnx(
    query, key, value, *, bias, mask, broadcast_dropout, dropout_rng, dropout_rate,
    deterministic, dtype, precision, module, is_causal,
):  # fmt: skip
    """NNX's ``dot_product_attention`` through its weights path (grouped-query attention
    included) with the weights taken before dropout."""
    query, key, value = _nnx_dtypes.promote_dtype((query, key, value), dtype=dtype)
    dtype = query.dtype
    weights = _nnx_weights(
        query,
        key,
        bias,
        mask,
        broadcast_dropout,
        None,
        0.0,
        True,
        dtype,
        precision,
        module,
        is_causal=is_causal,
    )
    _emit(weights, module, linen=False)
    if not deterministic and dropout_rate > 0.0:
        gqa = query.shape[-2] != key.shape[-2]
        batch_ndim = (key.ndim - 1 if gqa else key.ndim) - 2
        weights = _dropout(weights, dropout_rng, dropout_rate, broadcast_dropout, batch_ndim, dtype)
    if weights.shape[-3] != value.shape[-2]:  # grouped-query attention
        q_heads, v_heads = weights.shape[-3], value.shape[-2]
        weights = weights.reshape(
            (*weights.shape[:-3], v_heads, q_heads // v_heads, *weights.shape[-2:])
        )
        out = jnp.einsum(
            "...hgqk,...kh1d->...qhgd", weights, value[..., None, :], precision=precision
        )
        return out.reshape((*out.shape[:-3], q_heads, out.shape[-1]))
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)


def flax_attention_fn(
    call: Callable[..., jax.Array], *, linen_if_module: bool = True
) -> Callable[..., jax.Array]:
    """An ``attention_fn`` for ``nn.MultiHeadDotProductAttention`` and ``nnx.MultiHeadAttention``
    that hands each call to ``call(query, key, value, linen, **keywords)`` with the keywords of
    the calling module's own Flax function: linen's ``dot_product_attention`` takes
    ``force_fp32_for_softmax`` and the two einsum overrides, NNX's ``is_causal``; both take
    ``bias``, ``mask``, the dropout arguments, ``dtype``, ``precision`` and ``module``.

    The keyword list is spelled out because linen passes only the keywords an
    ``attention_fn``'s signature names. A call is linen's when it carries
    ``force_fp32_for_softmax`` (linen always passes it, NNX never), or, with
    ``linen_if_module``, when ``module`` is a linen Module.
    """

    def fn(
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        bias: jax.Array | None = None,
        mask: jax.Array | None = None,
        broadcast_dropout: bool = True,
        dropout_rng: jax.Array | None = None,
        dropout_rate: float = 0.0,
        deterministic: bool = False,
        dtype: Any = None,
        precision: Any = None,
        module: Any = None,
        force_fp32_for_softmax: bool | None = None,
        qk_attn_weights_einsum: Any = None,
        attn_weights_value_einsum: Any = None,
        is_causal: bool = False,
    ) -> jax.Array:
        common: dict[str, Any] = dict(
            bias=bias,
            mask=mask,
            broadcast_dropout=broadcast_dropout,
            dropout_rng=dropout_rng,
            dropout_rate=dropout_rate,
            deterministic=deterministic,
            dtype=dtype,
            precision=precision,
            module=module,
        )
        linen = force_fp32_for_softmax is not None or (
            linen_if_module and isinstance(module, nn.Module)
        )
        if linen:
            return call(
                query,
                key,
                value,
                True,
                **common,
                force_fp32_for_softmax=force_fp32_for_softmax,
                qk_attn_weights_einsum=qk_attn_weights_einsum,
                attn_weights_value_einsum=attn_weights_value_einsum,
            )
        return call(query, key, value, False, **common, is_causal=is_causal)

    return fn


def attention_fn() -> Callable[..., jax.Array]:
    """An ``attention_fn`` for ``nn.MultiHeadDotProductAttention`` and ``nnx.MultiHeadAttention``
    that computes Flax's dot-product attention and reports the mean attention entropy per head.

    The output is the calling module's default: a linen module gets linen's
    ``dot_product_attention`` (bit for bit), an NNX module NNX's weights path (NNX's default
    takes ``jax.nn.dot_product_attention`` when it needs no weights; the two agree to float
    rounding). Masks, bias, causal masking, dropout (the same draws), dtype and precision are
    honoured. The entropy of the softmax weights (before dropout) per head,
    ``H_h = mean over batch and queries of -sum_k w log w`` (:func:`entropy_per_head`), is
    handed to :func:`jaxinit.measure` (statistic ``attention_entropy``) and, when the module
    is called with ``sow_weights=True``, sown into its ``intermediates`` as
    ``attention_entropy``.

    Example::

        attn = nn.MultiHeadDotProductAttention(4, attention_fn=jaxinit.diagnostics.attention_fn())
    """

    def call(query: jax.Array, key: jax.Array, value: jax.Array, linen: bool, **kw: Any):
        if linen:
            kw["force_fp32_for_softmax"] = bool(kw["force_fp32_for_softmax"])
            return _linen(query, key, value, **kw)
        return _nnx(query, key, value, **kw)

    fn = flax_attention_fn(call)
    fn.__jaxinit_records_entropy__ = True  # pyright: ignore[reportFunctionMemberAccess]
    return fn


_RECORDING = attention_fn()


def is_attention(path: str, module: Any) -> bool:
    """Whether ``module`` is Flax dot-product attention (``nn.MultiHeadDotProductAttention``,
    ``nn.SelfAttention``, ``nnx.MultiHeadAttention`` or a subclass): a ``select=``
    predicate."""
    del path
    return isinstance(module, nn.MultiHeadDotProductAttention | nnx.MultiHeadAttention)


def _records(fn: Any) -> bool:
    return bool(getattr(fn, "__jaxinit_records_entropy__", False))


def _linen_interceptor(f, args, kwargs, context):
    module = context.module
    if (
        context.method_name != "__call__"
        or not isinstance(module, nn.MultiHeadDotProductAttention)
        or module.attention_fn is not nn.dot_product_attention
    ):
        return f(*args, **kwargs)
    object.__setattr__(module, "attention_fn", _RECORDING)
    try:
        return f(*args, **kwargs)
    finally:
        object.__setattr__(module, "attention_fn", nn.dot_product_attention)


@contextlib.contextmanager
def recording_defaults(model: Any, linen: bool) -> Iterator[Any]:
    """Yields the model to run so that attention layers with Flax's default attention
    function report their entropy too: a linen module as is, with an interceptor active for
    the block; an NNX model as a copy whose default attention functions are replaced (the
    user's model is not touched). Layers with another attention function report only if it
    is :func:`attention_fn`."""
    if linen:
        with nn.intercept_methods(_linen_interceptor):
            yield model
        return
    copy = nnx_copy(model)
    for _, m in nnx.iter_graph(copy):
        if isinstance(m, nnx.MultiHeadAttention) and m.attention_fn is nnx.dot_product_attention:
            m.attention_fn = _RECORDING
    yield copy
