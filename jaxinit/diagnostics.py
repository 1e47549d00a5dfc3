"""Signal-propagation diagnostics of residual, normalized and attention networks at step zero.

Statistics that :func:`jaxinit.measure`, :func:`jaxinit.layer_stats` and
:func:`jaxinit.coord_check` take by name (see ``jaxinit._measure.STATS``):

- ``token_cosine``: of a ``(..., tokens, dim)`` output, the mean pairwise cosine of distinct
  tokens (:func:`token_cosine`; Noci et al. 2022's rank collapse);
- ``channel_mean_sq``: of a channels-last output, the average squared channel mean
  (:func:`channel_mean_sq`; Brock et al. 2021);
- ``channel_var``: the average channel variance (:func:`channel_var`; Brock et al. 2021);
- ``attention_entropy``: of an attention layer (or a block holding one), the mean attention
  entropy per head, ``(heads,)`` (:func:`attention_fn`; ``measure`` only);
- ``attention_entropy_mean``, ``attention_entropy_min``: its mean and minimum over heads (one
  number, so ``layer_stats`` takes them too).

``in_`` and ``grad_`` prefixes apply to the first three, as to every output statistic.
Beyond them: :func:`spp` (signal propagation plots: per residual block, the block output's
channel statistics and the branch's variance against the skip's, in one pass) and
:func:`qkv_grad_ratios` (query and key gradient norms against the value's, per attention
layer). The figures are :func:`jaxinit.plotting.plot_spp` and
:func:`jaxinit.plotting.plot_rank_collapse`; ``jaxinit stats --model transformer`` and
``jaxinit stats --model resnet --spp`` print them.

References:
  Noci et al. 2022, "Signal propagation in transformers: theoretical perspectives and the role
  of rank collapse", https://arxiv.org/abs/2206.03126.
  Brock, De and Smith 2021, "Characterizing signal propagation to close the performance gap in
  unnormalized ResNets", https://arxiv.org/abs/2101.08692.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import _measure
from ._flax import adapter as fa
from ._flax.attention import attention_fn as attention_fn
from ._flax.attention import entropy_per_head as attention_entropy
from ._flax.attention import is_attention as is_attention
from ._flax.select import Select, compile_select
from ._measure import channel_mean_sq as channel_mean_sq
from ._measure import channel_var as channel_var
from ._measure import token_cosine as token_cosine
from .analysis import _Names

__all__ = [
    "SPP",
    "attention_entropy",
    "attention_fn",
    "channel_mean_sq",
    "channel_var",
    "is_attention",
    "qkv_grad_ratios",
    "spp",
    "token_cosine",
]


class SPP(NamedTuple):
    """Signal propagation statistics per residual block, from :func:`spp` (a pytree: under
    ``jax.vmap`` each array gains the leading axes; ``names`` is static).

    Attributes:
      names: The blocks' paths, in forward order.
      mean_sq: ``(blocks,)`` average squared channel mean of each block's output.
      var: ``(blocks,)`` average channel variance of each block's output.
      branch_var: ``(blocks,)`` average channel variance of the residual branch's output.
      skip_var: ``(blocks,)`` average channel variance of the skip path (the block's input, or
        the ``skip`` layer's output where the block has one).
    """

    names: tuple[str, ...]
    mean_sq: jax.Array
    var: jax.Array
    branch_var: jax.Array
    skip_var: jax.Array

    @property
    def branch_over_skip(self) -> jax.Array:
        """``branch_var / skip_var`` per block: how much each residual branch adds."""
        return self.branch_var / self.skip_var


def _relative(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or value.startswith("/") or value.endswith("/"):
        raise ValueError(
            f"spp: {name}={value!r} must be a path relative to each block, such as 'conv2' "
            "or 'mlp/out' (no leading or trailing '/')."
        )
    return value


def spp(
    model: Any,
    *args: Any,
    blocks: Select,
    branch: str,
    skip: str | None = None,
    **apply_kwargs: Any,
) -> SPP:
    """Signal propagation statistics (Brock et al. 2021) of every residual block, in one pass.

    For each block selected by ``blocks`` (in forward order): the average squared channel mean
    and the average channel variance of its output (:func:`channel_mean_sq`,
    :func:`channel_var`), the average channel variance of its residual branch's output (the
    layer at ``{block}/{branch}``: the branch's last layer before the addition) and of its
    skip path (the block's input; or, in blocks that have it, the output of the layer at
    ``{block}/{skip}``, e.g. a projection). One :func:`jaxinit.measure` pass, so it runs under
    ``jax.jit`` and, for linen, ``jax.vmap`` over stacked variables (seeds).

    Linen: ``spp(module, variables, x, ...)``; NNX: ``spp(model, x, ...)``.

    Args:
      model: A ``flax.linen.Module`` or a ``flax.nnx.Module``.
      *args: ``variables, x`` (linen) or ``x`` (NNX).
      blocks: The residual blocks: a glob pattern over module paths (``"block*"``,
        ``"blocks/*"``), a sequence of them or a predicate ``(path, module) -> bool``.
      branch: The residual branch's output layer, relative to each block (``"conv2"``,
        ``"bn2"``, ``"attn"``).
      skip: Optional layer on the skip path, relative to each block (``"proj"``); blocks
        without it use their input.
      **apply_kwargs: Passed to the model call (``train=True`` for BatchNorm batch statistics).

    Returns:
      An :class:`SPP`.

    Raises:
      ValueError: When ``blocks`` matches no layer, or a block has no ``branch`` layer.

    Example:
      >>> import jax
      >>> from jaxinit import diagnostics
      >>> from jaxinit.models import ResNet
      >>> model = ResNet(widths=(8, 16, 32))
      >>> x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
      >>> def seed(key):
      ...     variables = model.init(key, x)
      ...     return diagnostics.spp(model, variables, x, blocks="block*", branch="conv2")
      >>> keys = jax.random.split(jax.random.key(1), 16)
      >>> s = jax.eval_shape(jax.vmap(seed), keys)  # shapes only; jax.jit runs it
      >>> s.names, s.var.shape
      (('block0', 'block1', 'block2'), (16, 3))
    """
    variables, x = fa.model_args("spp", model, args)
    compile_select(blocks, name="spp: blocks")
    if blocks is None:
        raise ValueError(
            "spp: blocks=None; pass the residual blocks, e.g. blocks='block*' or blocks='blocks/*'."
        )
    branch_ = _relative("branch", branch)
    if branch_ is None:
        raise ValueError("spp: branch=None; pass the branch's last layer, e.g. 'conv2'.")
    skip_ = _relative("skip", skip)
    with fa.variables_fit("spp"):
        found = tuple(
            _measure.output_structure(model, variables, x, select=blocks, apply_kwargs=apply_kwargs)
        )
        every = set(
            _measure.output_structure(model, variables, x, select="**", apply_kwargs=apply_kwargs)
        )
    if not found:
        raise ValueError(f"spp: blocks={blocks!r} matched no layer called by the model.")
    missing = [b for b in found if f"{b}/{branch_}" not in every]
    if missing:
        raise ValueError(
            f"spp: block {missing[0]!r} has no layer {branch_!r} (branch={branch_!r}, looked "
            f"for {missing[0] + '/' + branch_!r}); pass the branch's last layer relative to "
            "each block."
        )
    skips = {b: f"{b}/{skip_}" for b in found if skip_ is not None and f"{b}/{skip_}" in every}
    wanted = (*found, *(f"{b}/{branch_}" for b in found), *skips.values())
    m = _measure.measure(
        model,
        *args,
        stats=("channel_mean_sq", "channel_var", "in_channel_var"),
        select=tuple(dict.fromkeys(wanted)),
        **apply_kwargs,
    )

    def column(fn: Callable[[str], jax.Array]) -> jax.Array:
        return jnp.stack([fn(b) for b in found], axis=-1)

    return SPP(
        _Names(found),
        column(lambda b: m[b]["channel_mean_sq"]),
        column(lambda b: m[b]["channel_var"]),
        column(lambda b: m[f"{b}/{branch_}"]["channel_var"]),
        column(lambda b: m[skips[b]]["channel_var"] if b in skips else m[b]["in_channel_var"]),
    )


def _part(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _kernel_grads(grads: Any) -> dict[tuple[str, ...], jax.Array]:
    """``{module path parts: gradient}`` of every ``kernel`` leaf (an NNX ``Variable``'s
    ``value`` part dropped; a leading ``params`` collection too)."""
    out = {}
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        parts = tuple(_part(k) for k in path)
        if parts[-1:] == ("value",):
            parts = parts[:-1]
        if parts[-1:] != ("kernel",):
            continue
        parts = parts[:-1]
        if parts[:1] == ("params",):
            parts = parts[1:]
        out[parts] = g
    return out


def _norm(g: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))


def qkv_grad_ratios(
    loss: Callable[..., jax.Array], params: Any, *args: Any, **kwargs: Any
) -> dict[str, dict[str, jax.Array]]:
    """Query and key gradient norms against the value's, per attention layer.

    With ``g = jax.grad(loss)(params, *args, **kwargs)``, for every module holding ``query``,
    ``key`` and ``value`` sublayers with kernels (Flax's ``MultiHeadDotProductAttention`` and
    ``nnx.MultiHeadAttention``), ``q_over_v = ||g_Q|| / ||g_V||`` and
    ``k_over_v = ||g_K|| / ||g_V||`` with Frobenius norms of the kernels' gradients. Noci et
    al. 2022 show the query and key gradients vanishing against the value's as the tokens
    collapse in rank (their Theorem 3.2). Traced JAX: runs under ``jax.jit`` and ``jax.vmap``
    over stacked parameters.

    Args:
      loss: ``loss(params, *args, **kwargs) -> scalar``.
      params: Its parameters: linen ``variables`` or ``variables["params"]``; for NNX the
        state of ``nnx.split(model, nnx.Param, ...)``, with a loss that merges it.
      *args: More positional arguments of ``loss`` (a batch, labels).
      **kwargs: Keyword arguments of ``loss``.

    Returns:
      ``{attention path: {"q_over_v": ratio, "k_over_v": ratio}}`` in the parameters' order,
      paths as module paths (``"block0/attn"``), each ratio a float32 scalar.

    Raises:
      ValueError: When ``params`` holds no query/key/value kernels.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinit import diagnostics
      >>> from jaxinit.models import TransformerBlock
      >>> model = TransformerBlock(dim=16, num_heads=2)
      >>> x = jax.random.normal(jax.random.key(0), (2, 5, 16))
      >>> params = jax.eval_shape(model.init, jax.random.key(1), x)["params"]
      >>> def loss(p, x):
      ...     return jnp.mean(model.apply({"params": p}, x) ** 2)
      >>> r = jax.eval_shape(lambda p: diagnostics.qkv_grad_ratios(loss, p, x), params)
      >>> list(r), sorted(r["attn"]), r["attn"]["q_over_v"].dtype
      (['attn'], ['k_over_v', 'q_over_v'], dtype('float32'))
    """
    if not callable(loss):
        raise TypeError(
            f"qkv_grad_ratios: loss={loss!r} must be a callable (params, ...) -> scalar."
        )
    grads = jax.grad(loss)(params, *args, **kwargs)
    kernels = _kernel_grads(grads)
    out: dict[str, dict[str, jax.Array]] = {}
    for parts in kernels:
        if parts[-1:] != ("query",):
            continue
        base = parts[:-1]
        q = kernels[parts]
        k, v = kernels.get((*base, "key")), kernels.get((*base, "value"))
        if k is None or v is None:
            continue
        vn = _norm(v)
        out["/".join(base)] = {"q_over_v": _norm(q) / vn, "k_over_v": _norm(k) / vn}
    if not out:
        raise ValueError(
            "qkv_grad_ratios: params hold no attention layer (a module with query, key and "
            "value kernels); pass the parameters of a model with Flax attention."
        )
    return out
