"""Initialization presets read from the code of real training codebases.

Each function returns a :class:`~jaxinit.recipes.recipe.Recipe` that draws the parameters of a
standard pre-norm transformer (token and position embeddings, attention query/key/value/out
projections, MLP input/gate/output kernels, norms, biases, unembedding) as the named codebase
does by default. The source is cited per preset: repository, file, function, and the commit
read. Values that the reference code derives from a layer's shape are derived from the shape
here too (``variance_scaling`` with the fan the code uses), except where Flax layouts differ
from the reference's: a query/key/value kernel is ``(d_model, heads, head_dim)`` in
``nn.MultiHeadDotProductAttention`` and ``nnx.MultiHeadAttention`` but ``(d_model, heads *
head_dim)`` in T5X, so its standard deviation is computed from ``d_model`` (and ``head_dim`` or
``qkv_features``), the arguments every preset that needs them takes.

Parameter paths follow jaxinit's own models (:class:`jaxinit.models.TransformerBlock` and the
byte-level transformer of :mod:`jaxinit.app.models`): ``embed/embedding``, ``pos/embedding``,
``*attn/{query,key,value,out}/kernel`` (Flax's attention modules), ``*mlp_in/kernel``
(``mlp_in`` or ``block0_mlp_in``), ``*mlp_out/kernel``, ``head/kernel``, norms' ``scale``, and
``bias``. Pass ``patterns=Patterns(...)`` to name another model's
parameters (e.g. ``Patterns(mlp_in="**/wi_0/kernel", mlp_gate="**/wi_1/kernel")``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .._checks import check_finite, check_int, short
from .._types import Initializer
from ..basic import normal, ones, truncated_normal, uniform, zeros
from ..variance_scaling import Distribution, glorot_uniform, variance_scaling
from .recipe import Recipe, Rule

__all__ = ["Patterns", "big_vision_vit", "maxtext", "nanodo", "olmo_core", "t5x"]


class Patterns(NamedTuple):
    """Where each kind of parameter lives: glob patterns over parameter paths (the grammar of
    :mod:`jaxinit.tree`). The defaults name jaxinit's own models and Flax's attention modules.

    Attributes:
      embed: Token embedding table ``(vocab, d_model)``.
      pos: Learned position embedding (optional in every preset).
      query: Query kernel, ``(d_model, heads, head_dim)`` or ``(d_model, heads * head_dim)``.
      key: Key kernel, same layouts.
      value: Value kernel, same layouts.
      out: Attention output kernel, ``(heads, head_dim, d_model)`` or ``(heads * head_dim,
        d_model)``.
      mlp_in: MLP input kernel ``(d_model, d_ff)``.
      mlp_gate: Second input kernel of a gated MLP (optional; SwiGLU / gated GELU).
      mlp_out: MLP output kernel ``(d_ff, d_model)``.
      head: Unembedding kernel ``(d_model, vocab)`` (optional: tied models have none).
      norm: Norm scales.
      bias: Biases (optional).
      stem: ViT patch-embedding conv kernel (:func:`big_vision_vit` only).
      cls: ViT class token (:func:`big_vision_vit` only, optional).
      relpos: T5 relative position bias table (:func:`t5x` only, optional).

    Example:
      >>> from jaxinit.recipes.presets import Patterns
      >>> Patterns(mlp_in="**/wi_0/kernel").mlp_in, Patterns().out
      ('**/wi_0/kernel', '**/out/kernel')
    """

    embed: str = "**/embed/embedding"
    pos: str = "**/pos/embedding"
    query: str = "**/query/kernel"
    key: str = "**/key/kernel"
    value: str = "**/value/kernel"
    out: str = "**/out/kernel"
    mlp_in: str = "**/*mlp_in/kernel"
    mlp_gate: str = "**/*mlp_gate/kernel"
    mlp_out: str = "**/*mlp_out/kernel"
    head: str = "**/head/kernel"
    norm: str = "**/scale"
    bias: str = "**/bias"
    stem: str = "**/embedding/kernel"
    cls: str = "**/cls"
    relpos: str = "**/rel_embedding"


DEFAULT_PATTERNS = Patterns()
"""The default :class:`Patterns`: jaxinit's models and Flax's attention modules."""


def _patterns(fn: str, patterns: object) -> Patterns:
    if not isinstance(patterns, Patterns):
        raise TypeError(
            f"{fn}: patterns={short(patterns)} is not a Patterns; use "
            "jaxinit.recipes.presets.Patterns(...) with the paths of your model."
        )
    return patterns


def _fan_in(distribution: Distribution) -> Initializer:
    """``Var = 1 / fan_in`` with ``fan_in`` the product of all axes but the last, as the
    reference codes compute it for output projections and Dense kernels."""
    return variance_scaling(1.0, "fan_in", distribution)


_MAXTEXT = "github.com/google/maxtext @ e64f6813 (2024-10-10)"
_T5X = "github.com/google-research/t5x @ cc342d41 (2026-04-21)"
_NANODO = "github.com/google-deepmind/nanodo @ 10aefde"
_BIG_VISION = "github.com/google-research/big_vision @ 0127fb6b (2025-05-19)"
_OLMO_CORE = "github.com/allenai/OLMo-core @ fa6c5014 (2026-06-22)"


def maxtext(d_model: int, head_dim: int, *, patterns: Patterns = DEFAULT_PATTERNS) -> Recipe:
    """MaxText's default initialization of its decoder (``decoder_block: "llama2"``).

    Read in google/maxtext (``MaxText/``, commit e64f6813):

    ==========================  ==============================================================
    ``layers/models.py``        ``Transformer.setup``: ``token_embedder`` is ``Embed`` with
                                ``embedding_init=nn.initializers.normal(stddev=1.0)``
    ``layers/attentions.py``    ``Attention.kernel_init = nd_dense_init(1.0, "fan_in",
                                "normal")``; ``query_projection`` divides it by
                                ``sqrt(head_dim)`` ("T5 does not explicitly rescale the
                                attention logits ... folded into the initializers");
                                ``kv_projection``, ``out_projection`` use it unchanged, with
                                ``in_axis`` the contracted axes (``embed``; ``heads, kv``)
    ``layers/linears.py``       ``DenseGeneral.kernel_init`` and ``MlpBlock.kernel_init`` are
                                ``nd_dense_init(1.0, "fan_in", "truncated_normal")``: the
                                MLP ``wi_0``/``wi_1``/``wo`` and the untied ``logits_dense``
                                (``logits_via_embedding: False`` in ``configs/base.yml``)
    ``layers/normalizations``   ``RMSNorm.scale_init = nn.initializers.ones``
    ==========================  ==============================================================

    So: embedding ``N(0, 1)``; query ``N(0, 1 / (d_model * head_dim))``; key, value
    ``N(0, 1 / d_model)``; attention output ``N(0, 1 / (heads * head_dim))``; MLP kernels and
    unembedding a truncated normal (cut at 2 standard deviations, rescaled) of variance
    ``1 / fan_in``; norm scales 1; biases (MaxText's default layers have none) 0.

    Args:
      d_model: Model width (the query/key/value kernels' fan-in), an int >= 1.
      head_dim: Dimension per attention head, an int >= 1.
      patterns: Where the parameters are (:class:`Patterns`).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Example:
      >>> from jaxinit.recipes.presets import maxtext
      >>> recipe = maxtext(512, 64)
      >>> rule = recipe.match("block0_attn/query/kernel")  # Var = 1 / (d_model * head_dim)
      >>> rule.where, round(rule.init.variance(512, 512) * 512 * 64, 9)
      ('**/query/kernel', 1.0)
    """
    fn = "maxtext"
    d_model = check_int(fn, "d_model", d_model, 1)
    head_dim = check_int(fn, "head_dim", head_dim, 1)
    p = _patterns(fn, patterns)
    src = "MaxText/layers/"
    rules = (
        Rule(p.embed, normal(1.0), f"N(0, 1): {src}models.py Transformer.setup token_embedder"),
        Rule(
            p.pos,
            normal(1.0),
            f"N(0, 1): {src}models.py Decoder position_embedder (trainable_position_size > 0)",
            optional=True,
        ),
        Rule(
            p.query,
            normal(1 / math.sqrt(d_model * head_dim)),
            f"N(0, 1/(d_model*head_dim)): {src}attentions.py query_projection, "
            "nd_dense_init(1, fan_in, normal) / sqrt(head_dim)",
        ),
        Rule(p.key, normal(1 / math.sqrt(d_model)), f"N(0, 1/d_model): {src}attentions.py"),
        Rule(p.value, normal(1 / math.sqrt(d_model)), f"N(0, 1/d_model): {src}attentions.py"),
        Rule(
            p.out,
            _fan_in("normal"),
            f"N(0, 1/(heads*head_dim)): {src}attentions.py out_projection",
        ),
        Rule(p.mlp_in, _fan_in("truncated_normal"), f"Var 1/fan_in: {src}linears.py MlpBlock"),
        Rule(
            p.mlp_gate,
            _fan_in("truncated_normal"),
            f"Var 1/fan_in: {src}linears.py MlpBlock",
            optional=True,
        ),
        Rule(p.mlp_out, _fan_in("truncated_normal"), f"Var 1/fan_in: {src}linears.py MlpBlock"),
        Rule(
            p.head,
            _fan_in("truncated_normal"),
            f"Var 1/d_model: {src}linears.py DenseGeneral (logits_dense)",
            optional=True,
        ),
        Rule(p.norm, ones(), f"1: {src}normalizations.py RMSNorm", optional=True),
        Rule(p.bias, zeros(), f"0: {src}initializers.py default_bias_init", optional=True),
    )
    return Recipe(
        "maxtext",
        rules,
        references=(_MAXTEXT,),
        notes="Truncated normals are cut at 2 standard deviations and rescaled to the stated "
        "variance (jax.nn.initializers.variance_scaling). Logits tied to the embedding "
        "(logits_via_embedding: True) have no head kernel.",
    )


def t5x(d_model: int, head_dim: int, *, patterns: Patterns = DEFAULT_PATTERNS) -> Recipe:
    """T5X's T5 v1.1 initialization (``t5x/examples/t5``), for a decoder-only stack of its
    layers.

    Read in google-research/t5x (commit cc342d41):

    ==========================  ==============================================================
    ``examples/t5/network.py``  ``Transformer.setup``: ``token_embedder`` with
                                ``embedding_init=nn.initializers.normal(stddev=1.0)``;
                                ``relpos_bias`` with ``variance_scaling(1.0, 'fan_avg',
                                'uniform')``; ``logits_dense`` is a ``DenseGeneral`` with its
                                default init (``t5_1_1/base.gin``: ``logits_via_embedding =
                                False``, ``mlp_activations = ('gelu', 'linear')``)
    ``examples/t5/layers.py``   ``MultiHeadDotProductAttention.kernel_init =
                                variance_scaling(1.0, 'fan_in', 'normal')``; ``query_init``
                                divides it by ``sqrt(head_dim)``; kernels are stored flat,
                                ``(d_model, heads * head_dim)``; ``DenseGeneral`` and
                                ``MlpBlock`` use ``variance_scaling(1.0, 'fan_in',
                                'truncated_normal')``; ``LayerNorm`` (RMS) ``scale_init =
                                ones``
    ==========================  ==============================================================

    So the same values as :func:`maxtext` (MaxText inherited them), plus the relative position
    bias table ``(heads, 32)``: ``U`` with variance ``2 / (heads + 32)``.

    Args:
      d_model: Model width, an int >= 1.
      head_dim: Dimension per attention head, an int >= 1.
      patterns: Where the parameters are (:class:`Patterns`).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Example:
      >>> from jaxinit.recipes.presets import t5x
      >>> t5x(768, 64).match("decoder/layers_0/relpos_bias/rel_embedding").where
      '**/rel_embedding'
    """
    fn = "t5x"
    d_model = check_int(fn, "d_model", d_model, 1)
    head_dim = check_int(fn, "head_dim", head_dim, 1)
    p = _patterns(fn, patterns)
    lay, net = "t5x/examples/t5/layers.py", "t5x/examples/t5/network.py"
    attn = f"{lay} MultiHeadDotProductAttention"
    rules = (
        Rule(p.embed, normal(1.0), f"N(0, 1): {net} Transformer.setup token_embedder"),
        Rule(
            p.relpos,
            variance_scaling(1.0, "fan_avg", "uniform"),
            f"Var 2/(heads+buckets): {net} relpos_bias",
            optional=True,
        ),
        Rule(
            p.query,
            normal(1 / math.sqrt(d_model * head_dim)),
            f"N(0, 1/(d_model*head_dim)): {attn} query_init",
        ),
        Rule(p.key, normal(1 / math.sqrt(d_model)), f"N(0, 1/d_model): {attn}"),
        Rule(p.value, normal(1 / math.sqrt(d_model)), f"N(0, 1/d_model): {attn}"),
        Rule(p.out, _fan_in("normal"), f"N(0, 1/(heads*head_dim)): {attn} out"),
        Rule(p.mlp_in, _fan_in("truncated_normal"), f"Var 1/fan_in: {lay} MlpBlock"),
        Rule(
            p.mlp_gate,
            _fan_in("truncated_normal"),
            f"Var 1/fan_in: {lay} MlpBlock",
            optional=True,
        ),
        Rule(p.mlp_out, _fan_in("truncated_normal"), f"Var 1/fan_in: {lay} MlpBlock"),
        Rule(
            p.head,
            _fan_in("truncated_normal"),
            f"Var 1/d_model: {lay} DenseGeneral (logits_dense)",
            optional=True,
        ),
        Rule(p.norm, ones(), f"1: {lay} LayerNorm", optional=True),
        Rule(p.bias, zeros(), "0: T5 layers have no biases", optional=True),
    )
    return Recipe(
        "t5x (T5 v1.1)",
        rules,
        references=(_T5X,),
        notes="Truncated normals are cut at 2 standard deviations and rescaled to the stated "
        "variance. T5 keeps logits unscaled by 1/sqrt(head_dim): the factor is in the query "
        "init, so use it with attention that does not divide by sqrt(head_dim) again. T5 has "
        "no learned position embedding (relative position biases): a model's position table "
        "is left as it is.",
    )


def _glorot_flat(fn: str, d_model: int, qkv_features: int | None) -> tuple[int, float]:
    """``(qkv_features, bound)``: Flax's ``xavier_uniform`` on the flattened ``(d_model,
    qkv_features)`` kernel ``DenseGeneral`` passes to its initializer, ``U(-b, b)`` with
    ``b = sqrt(6 / (d_model + qkv_features))``."""
    qkv = d_model if qkv_features is None else check_int(fn, "qkv_features", qkv_features, 1)
    return qkv, math.sqrt(6 / (d_model + qkv))


def nanodo(
    d_model: int, qkv_features: int | None = None, *, patterns: Patterns = DEFAULT_PATTERNS
) -> Recipe:
    """nanodo's initialization (``DoConfig`` defaults).

    Read in google-deepmind/nanodo (commit 10aefde):

    ======================  ==================================================================
    ``nanodo/model.py``     ``DoConfig.kernel_init = nn.initializers.xavier_uniform()``,
                            ``DoConfig.embed_init = variance_scaling(1.0, 'fan_in', 'normal',
                            out_axis=0)``; ``TransformerDo.setup`` uses ``embed_init`` for the
                            token and position tables (``(V, D)``, ``(L, D)``: fan-in ``D``);
                            ``CausalAttn``: query/key/value ``DenseGeneral`` to ``(H, Dh)``
                            and ``attn_out_proj`` from ``(H, Dh)``, no bias; ``Mlp``: two
                            ``Dense`` without bias; ``LayerNorm(use_bias=False)``; logits are
                            ``embed.attend`` (tied, no head kernel)
    ``nanodo/fsdp.py``      ``init``: each layer type gets ``docfg.kernel_init`` or
                            ``docfg.embed_init`` (sharding only)
    ======================  ==================================================================

    Flax's ``DenseGeneral`` draws its kernel flat, ``(prod(in axes), prod(features))``, so
    ``xavier_uniform`` sees ``(d_model, H * Dh)`` for query/key/value and ``(H * Dh, d_model)``
    for the output: ``U(-b, b)``, ``b = sqrt(6 / (d_model + H * Dh))`` for all four. So:
    embeddings ``N(0, 1 / d_model)``; attention kernels that uniform; MLP kernels
    Glorot uniform ``U(+-sqrt(6 / (d_model + d_ff)))``; norm scales 1.

    Args:
      d_model: Model width ``D``, an int >= 1.
      qkv_features: ``H * Dh`` (default ``d_model``, nanodo's ``D = H * Dh``).
      patterns: Where the parameters are (:class:`Patterns`).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Example:
      >>> from jaxinit.recipes.presets import nanodo
      >>> nanodo(512).match("block0_attn/out/kernel").init
      jaxinit.uniform(low=-0.07654655446197431, high=0.07654655446197431)
    """
    fn = "nanodo"
    d_model = check_int(fn, "d_model", d_model, 1)
    _, bound = _glorot_flat(fn, d_model, qkv_features)
    p = _patterns(fn, patterns)
    src = "nanodo/model.py"
    attn = uniform(-bound, bound)
    why_attn = f"U(+-sqrt(6/(D+H*Dh))): {src} DoConfig.kernel_init on the flat kernel"
    embed = normal(1 / math.sqrt(d_model))
    rules = (
        Rule(p.embed, embed, f"N(0, 1/D): {src} DoConfig.embed_init"),
        Rule(p.pos, embed, f"N(0, 1/D): {src} DoConfig.embed_init", optional=True),
        Rule(p.query, attn, why_attn),
        Rule(p.key, attn, why_attn),
        Rule(p.value, attn, why_attn),
        Rule(p.out, attn, why_attn),
        Rule(p.mlp_in, glorot_uniform(), f"U(+-sqrt(6/(D+F))): {src} Mlp"),
        Rule(p.mlp_gate, glorot_uniform(), f"U(+-sqrt(6/(D+F))): {src} Mlp", optional=True),
        Rule(p.mlp_out, glorot_uniform(), f"U(+-sqrt(6/(F+D))): {src} Mlp"),
        Rule(p.head, glorot_uniform(), "kernel_init: nanodo/fsdp.py init('head')", optional=True),
        Rule(p.norm, ones(), f"1: {src} LayerNorm(use_bias=False)", optional=True),
        Rule(p.bias, zeros(), "0: nanodo's layers have no biases", optional=True),
    )
    return Recipe(
        "nanodo",
        rules,
        references=(_NANODO,),
        notes="nanodo ties the unembedding to the token embedding (embed.attend); a model "
        "with a head kernel gets kernel_init (Glorot uniform), as fsdp.init('head') gives.",
    )


def big_vision_vit(
    d_model: int, qkv_features: int | None = None, *, patterns: Patterns = DEFAULT_PATTERNS
) -> Recipe:
    """big_vision's ViT initialization (``big_vision/models/vit.py``, default options).

    Read in google-research/big_vision (commit 0127fb6b), ``big_vision/models/vit.py``:

    =====================  ===================================================================
    ``_Model.__call__``    patch ``embedding``: ``nn.Conv`` with Flax's default init
                           (``lecun_normal``: truncated normal of variance ``1 / fan_in``,
                           fan-in ``patch * patch * channels``; bias 0); ``head_zeroinit=True``:
                           ``head`` kernel ``zeros`` (bias 0); ``cls`` token ``zeros``
    ``get_posemb``         ``"learn"``: ``normal(stddev=1/np.sqrt(width))``
    ``Encoder1DBlock``     ``nn.MultiHeadDotProductAttention(kernel_init=xavier_uniform())``
                           (biases: Flax's default, 0); ``nn.LayerNorm()`` (scale 1, bias 0)
    ``MlpBlock``           ``kernel_init=xavier_uniform()``, ``bias_init=normal(stddev=1e-6)``
    =====================  ===================================================================

    Attention kernels are drawn flat by ``DenseGeneral``: ``U(-b, b)``, ``b = sqrt(6 /
    (d_model + qkv_features))``, for query, key, value and output alike.

    Default patterns for big_vision's own names: pass e.g. ``Patterns(pos="**/pos_embedding",
    mlp_in="**/MlpBlock_0/Dense_0/kernel", mlp_out="**/MlpBlock_0/Dense_1/kernel")`` for its
    model; ``patterns.mlp_in``/``mlp_out`` with ``kernel`` replaced by ``bias`` name the MLP
    biases.

    Args:
      d_model: Width, an int >= 1.
      qkv_features: Attention ``heads * head_dim`` (default ``d_model``, as in big_vision).
      patterns: Where the parameters are (:class:`Patterns`): ``stem``, ``pos``, ``cls``,
        attention, MLP, ``head``, ``norm``, ``bias``.

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Example:
      >>> from jaxinit.recipes.presets import big_vision_vit
      >>> big_vision_vit(384).match("mlp_in/bias").init
      jaxinit.normal(stddev=1e-06, mean=0.0)
    """
    fn = "big_vision_vit"
    d_model = check_int(fn, "d_model", d_model, 1)
    _, bound = _glorot_flat(fn, d_model, qkv_features)
    p = _patterns(fn, patterns)
    src = "big_vision/models/vit.py"
    attn = uniform(-bound, bound)
    why_attn = f"U(+-sqrt(6/(D+qkv))): {src} Encoder1DBlock xavier_uniform, flat kernel"
    mlp_bias = normal(1e-6)
    rules = (
        Rule(
            p.stem,
            _fan_in("truncated_normal"),
            f"Var 1/fan_in (lecun_normal): {src} _Model embedding, nn.Conv default",
        ),
        Rule(
            p.pos,
            normal(1 / math.sqrt(d_model)),
            f"N(0, 1/width): {src} get_posemb('learn')",
            optional=True,
        ),
        Rule(p.cls, zeros(), f"0: {src} _Model cls", optional=True),
        Rule(p.query, attn, why_attn),
        Rule(p.key, attn, why_attn),
        Rule(p.value, attn, why_attn),
        Rule(p.out, attn, why_attn),
        Rule(p.mlp_in, glorot_uniform(), f"xavier_uniform: {src} MlpBlock"),
        Rule(p.mlp_out, glorot_uniform(), f"xavier_uniform: {src} MlpBlock"),
        Rule(_bias_of(p.mlp_in), mlp_bias, f"N(0, 1e-12): {src} MlpBlock bias_init"),
        Rule(_bias_of(p.mlp_out), mlp_bias, f"N(0, 1e-12): {src} MlpBlock bias_init"),
        Rule(p.head, zeros(), f"0: {src} _Model head_zeroinit=True", optional=True),
        Rule(p.norm, ones(), f"1: {src} nn.LayerNorm()", optional=True),
        Rule(p.bias, zeros(), "0: Flax's default bias_init", optional=True),
    )
    return Recipe(
        "big_vision ViT",
        rules,
        references=(_BIG_VISION,),
        notes="posemb='sincos2d' has no parameter; pool_type='map' adds a MAPHead "
        "(xavier_uniform probe and attention) that this recipe does not name.",
    )


def _bias_of(kernel_pattern: str) -> str:
    head, sep, last = kernel_pattern.rpartition("/")
    if last != "kernel":
        raise ValueError(
            f"big_vision_vit: the MLP kernel pattern {kernel_pattern!r} does not end in "
            "'/kernel', so its bias cannot be named; give patterns whose MLP entries end in "
            "'/kernel'."
        )
    return f"{head}{sep}bias"


def olmo_core(std: float = 0.02, *, patterns: Patterns = DEFAULT_PATTERNS) -> Recipe:
    """OLMo-core's default initialization (``InitMethod.normal``, ``init_std=0.02``).

    Read in allenai/OLMo-core (commit fa6c5014), ``src/olmo_core/``:

    ==================================  ======================================================
    ``nn/transformer/config.py``        ``TransformerConfig.init_method = InitMethod.normal``,
                                        ``init_std = 0.02``
    ``nn/transformer/init.py``          ``init_linear``: ``trunc_normal_(mean=0, std=std,
                                        a=-3*std, b=3*std)``, bias 0;
                                        ``InitMethod.init_embeddings``,
                                        ``init_feed_forward`` (w1, w2, w3),
                                        ``init_final_w_out``: that truncated normal with
                                        ``std`` for ``InitMethod.normal``
    ``nn/attention/__init__.py``        ``Attention.init_weights``: ``w_q``, ``w_k``,
                                        ``w_v``, ``w_out`` by ``init_linear(std)``
    ``nn/transformer/model.py``         ``Transformer.init_weights`` calls them with
                                        ``std=init_std``
    ``nn/layer_norm.py``                ``reset_parameters``: weight 1, bias 0
    ==================================  ======================================================

    So every embedding, projection and MLP kernel and the unembedding is ``N(0, std^2)`` cut
    at ``+-3 std`` (not rescaled: the standard deviation is ``0.98649 std``); biases 0, norm
    scales 1.

    Args:
      std: ``init_std``, finite and > 0.
      patterns: Where the parameters are (:class:`Patterns`).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Example:
      >>> from jaxinit.recipes.presets import olmo_core
      >>> olmo_core().match("head/kernel").init
      jaxinit.truncated_normal(stddev=0.02, lower=-3.0, upper=3.0)
    """
    fn = "olmo_core"
    std = check_finite(fn, "std", std, positive=True)
    p = _patterns(fn, patterns)
    w = truncated_normal(std, -3.0, 3.0)
    init = "src/olmo_core/nn/transformer/init.py"
    why = f"trunc N(0, std^2) at +-3 std: {init} init_linear"
    rules = (
        Rule(p.embed, w, f"trunc N(0, std^2) at +-3 std: {init} InitMethod.init_embeddings"),
        Rule(p.query, w, why),
        Rule(p.key, w, why),
        Rule(p.value, w, why),
        Rule(p.out, w, why),
        Rule(p.mlp_in, w, why),
        Rule(p.mlp_gate, w, why, optional=True),
        Rule(p.mlp_out, w, why),
        Rule(p.head, w, f"{why} (InitMethod.init_final_w_out)", optional=True),
        Rule(p.norm, ones(), "1: src/olmo_core/nn/layer_norm.py reset_parameters", optional=True),
        Rule(p.bias, zeros(), f"0: {init} init_linear", optional=True),
    )
    return Recipe(
        "olmo_core",
        rules,
        references=(_OLMO_CORE,),
        notes="Other InitMethods (llama, llama_depth, fan_in, normalized) scale the output "
        "projections by depth or width; this is the default, InitMethod.normal. OLMo-core "
        "uses RoPE: a model's learned position table is left as it is.",
    )
