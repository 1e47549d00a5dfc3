"""Initialization recipes for residual networks and transformers.

Each function returns a :class:`~jaxinit.recipes.recipe.Recipe`: ordered rules from
parameter-path patterns to jaxinit initializers, applied with ``recipe.apply(target, key)``
(linen variables -> new variables; NNX model -> edited in place). Every scaled initializer is a
jaxinit one (``normal``, ``variance_scaling``, ``glorot_normal`` ...), so its variance law is
known and the recipe's table shows it.

=======================  ====================================================================
recipe                   what it sets
=======================  ====================================================================
:func:`gpt2`             N(0, 0.02) everywhere, residual output projections 0.02/sqrt(2 L)
:func:`zero_init_residual`  the last norm scale (or kernel) of each residual branch to 0
:func:`fixup`            He branch layers times L^(-1/(2m-2)), last branch layer and head 0
:func:`deepnorm`         xavier_normal with gain beta = (8N)^(-1/4) on v/out/fc1/fc2
:func:`t_fixup`          xavier with gain 0.67 N^(-1/4) (encoder) or (9M)^(-1/4) (decoder)
:func:`skipinit`         residual scalar gates alpha = 0
:func:`rezero`           ReZero's ``resweight`` = 0
:func:`layerscale`       LayerScale diagonal gates 0.1 / 1e-5 / 1e-6 by depth (CaiT)
:func:`spectral`         std = (1/sqrt(fan_in)) min(1, sqrt(fan_out/fan_in))
:func:`query_folding`    the query kernel's variance divided by d_head
=======================  ====================================================================

Patterns are arguments with defaults for the reference code's names (nanoGPT's ``c_proj``,
torchscale's ``fc1``/``v_proj``, Fixup's ``conv1``/``bias1a``/``scale``); pass the names of
your model. Initializers see only a parameter's shape: fans are those of Flax layouts (Dense
``(in, out)``, Conv ``(*spatial, in, out)``, Embed ``(vocab, features)``). Kernels in other
layouts (``DenseGeneral``/``MultiHeadDotProductAttention``'s ``(in, heads, head_dim)``,
einsum kernels) need explicit axes, as :func:`query_folding` takes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from .._base import Init, factory, random_normal, sample_dtype
from .._checks import check_finite, check_int, short
from .._fans import fans_of
from .._types import Axes, Initializer
from ..basic import constant, normal, ones, zeros
from ..variance_scaling import (
    Distribution,
    Mode,
    _check_axes,
    _check_roles,
    glorot_normal,
    glorot_uniform,
    he_normal,
    variance_scaling,
)
from .recipe import Recipe, Rule

__all__ = [
    "DeepNormConstants",
    "deepnorm",
    "deepnorm_constants",
    "fixup",
    "gpt2",
    "layerscale",
    "query_folding",
    "rezero",
    "skipinit",
    "spectral",
    "spectral_normal",
    "t_fixup",
    "zero_init_residual",
]

Patterns = str | Sequence[str]


def _patterns(fn: str, arg: str, value: Any, *, empty_ok: bool = False) -> tuple[str, ...]:
    """``value`` (a pattern or a sequence of them) as a tuple of non-empty strings."""
    items = (value,) if isinstance(value, str) else value
    ok = isinstance(items, Sequence) and all(isinstance(s, str) and s for s in items)
    if not ok or (not items and not empty_ok):
        accepted = "a glob pattern over parameter paths such as '**/c_proj/kernel', or a "
        accepted += "sequence of them" + (" (() for none)" if empty_ok else "")
        raise TypeError(f"{fn}: {arg}={short(value)} is not supported; use {accepted}.")
    return tuple(items)


def _rules(
    patterns: Sequence[str], init: Any, why: str, *, optional: bool = False
) -> tuple[Rule, ...]:
    return tuple(Rule(p, init, why, optional) for p in patterns)


def _under(prefix: str, patterns: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{prefix}/{p}" for p in patterns)


# --------------------------------------------------------------------------------------------
# GPT-2 / nanoGPT


def gpt2(
    n_layer: int,
    std: float = 0.02,
    *,
    residual_out: Patterns = ("**/c_proj/kernel",),
    kernels: Patterns = "**/kernel",
    embeddings: Patterns = "**/embedding",
    biases: Patterns = "**/bias",
    norm_scales: Patterns = "**/scale",
) -> Recipe:
    """GPT-2's initialization as nanoGPT writes it: ``N(0, std^2)`` on every kernel and
    embedding, residual output projections ``N(0, (std / sqrt(2 n_layer))^2)``, biases 0,
    LayerNorm scales 1.

    Reference code: karpathy/nanoGPT ``model.py``: ``GPT._init_weights`` sets
    ``torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)`` for every ``nn.Linear`` and
    ``nn.Embedding`` and ``zeros_`` for Linear biases; then ``GPT.__init__`` ("apply special
    scaled init to the residual projections, per GPT-2 paper") redraws every parameter whose
    name ends in ``c_proj.weight`` (the attention output ``attn.c_proj`` and the MLP output
    ``mlp.c_proj``) with ``std=0.02/math.sqrt(2 * config.n_layer)``: the factor 2 counts the
    two residual branches per block. nanoGPT's ``LayerNorm`` starts at weight 1, bias 0. For
    12 layers the projections get ``0.02 / sqrt(24) = 0.0040825``.

    The GPT-2 paper (Radford et al. 2019, "Language Models are Unsupervised Multitask
    Learners", section 2.3): "We scale the weights of residual layers at initialization by a
    factor of 1/sqrt(N) where N is the number of residual layers."

    The rules, first match wins: ``residual_out`` -> ``normal(std / sqrt(2 n_layer))``,
    ``kernels`` -> ``normal(std)``, ``embeddings`` -> ``normal(std)``, ``biases`` -> 0,
    ``norm_scales`` -> 1 (the last three optional: nanoGPT's ``bias=False`` has no biases).
    A fused QKV kernel (nanoGPT's ``c_attn``) is one kernel and gets ``std``.

    Args:
      n_layer: The number of transformer blocks, an int >= 1.
      std: The base standard deviation, finite and > 0.
      residual_out: Pattern(s) of the residual output projections (every block's attention
        and MLP output kernels).
      kernels: Pattern(s) of the other kernels (Dense, the LM head).
      embeddings: Pattern(s) of the token and position embeddings (Flax ``Embed``).
      biases: Pattern(s) of biases (Dense and LayerNorm).
      norm_scales: Pattern(s) of LayerNorm scales.

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      ValueError: ``n_layer`` is not an int >= 1, or ``std`` is not finite and > 0.
      TypeError: a pattern argument is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import gpt2
      >>> recipe = gpt2(12)
      >>> rule = recipe.match("h_0/mlp/c_proj/kernel")
      >>> round(rule.init.variance(128, 32) ** 0.5, 7)
      0.0040825
      >>> recipe.match("h_0/attn/c_attn/kernel").where
      '**/kernel'

    References:
      https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf
      https://github.com/karpathy/nanoGPT/blob/master/model.py
    """
    fn = "gpt2"
    n = check_int(fn, "n_layer", n_layer, 1)
    s = check_finite(fn, "std", std, positive=True)
    proj = s / math.sqrt(2 * n)
    rules = (
        *_rules(
            _patterns(fn, "residual_out", residual_out),
            normal(proj),
            f"std / sqrt(2 n_layer) = {s:g} / sqrt({2 * n}) (nanoGPT c_proj.weight)",
        ),
        *_rules(_patterns(fn, "kernels", kernels), normal(s), "N(0, std^2) (nanoGPT nn.Linear)"),
        *_rules(
            _patterns(fn, "embeddings", embeddings, empty_ok=True),
            normal(s),
            "N(0, std^2) (nanoGPT nn.Embedding)",
            optional=True,
        ),
        *_rules(_patterns(fn, "biases", biases, empty_ok=True), zeros(), "0", optional=True),
        *_rules(
            _patterns(fn, "norm_scales", norm_scales, empty_ok=True),
            ones(),
            "1 (LayerNorm weight)",
            optional=True,
        ),
    )
    return Recipe(
        f"gpt2(n_layer={n})",
        rules,
        (
            "https://cdn.openai.com/better-language-models/"
            "language_models_are_unsupervised_multitask_learners.pdf",
            "https://github.com/karpathy/nanoGPT/blob/master/model.py",
        ),
        "Weight tying (nanoGPT's lm_head = wte) is the model's business: a tied parameter is "
        "one parameter and is drawn once.",
    )


# --------------------------------------------------------------------------------------------
# zero-init residual, SkipInit, ReZero, LayerScale


def zero_init_residual(where: Patterns = ("**/bn2/scale",)) -> Recipe:
    """Zero the last normalization scale (or the last kernel) of every residual branch, so
    that each block starts as the identity.

    Goyal et al. 2017 ("Accurate, Large Minibatch SGD", section 5.1): every BN scale gamma
    starts at 1 except the last BN of each residual block, whose gamma starts at 0. Reference
    code:
    torchvision ``models/resnet.py``, ``ResNet.__init__(zero_init_residual=True)``:
    ``nn.init.constant_(m.bn3.weight, 0)`` for every ``Bottleneck`` and
    ``nn.init.constant_(m.bn2.weight, 0)`` for every ``BasicBlock``. Flax's ImageNet example
    (``examples/imagenet/models.py``) does the same with ``scale_init=zeros_init()`` on the
    last ``BatchNorm`` of ``ResNetBlock``/``BottleneckResNetBlock``.

    The default pattern names a basic block's ``bn2`` (torchvision's names); pass
    ``"**/bn3/scale"`` for bottleneck blocks, ``"**/ResNetBlock_*/BatchNorm_1/scale"`` for
    Flax's example, or the branch's last kernel (``"**/c_proj/kernel"``) where the branch
    has no normalization at its end.

    Args:
      where: Pattern(s) of the parameters to zero, each of which must match.

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe` with one ``zeros()`` rule per pattern.

    Raises:
      TypeError: ``where`` is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import zero_init_residual
      >>> r = zero_init_residual(("**/bn3/scale",))
      >>> r.match("layer1_0/bn3/scale").init, r.match("layer1_0/bn2/scale") is None
      (jaxinit.zeros(), True)

    References:
      https://arxiv.org/abs/1706.02677
      https://github.com/pytorch/vision/blob/main/torchvision/models/resnet.py
    """
    pats = _patterns("zero_init_residual", "where", where)
    return Recipe(
        "zero_init_residual",
        _rules(pats, zeros(), "0: the last norm scale of each residual branch (Goyal et al.)"),
        (
            "https://arxiv.org/abs/1706.02677",
            "https://github.com/pytorch/vision/blob/main/torchvision/models/resnet.py",
        ),
    )


def skipinit(where: Patterns = "**/skip_gain") -> Recipe:
    """SkipInit: the learnable scalar multiplier at the end of every residual branch starts
    at 0, so a normalization-free residual network starts as the identity.

    De & Smith 2020 ("Batch Normalization Biases Residual Blocks Towards the Identity
    Function in Deep Networks"): SkipInit puts a learnable scalar multiplier alpha at the end
    of each residual branch of a network without normalization and initializes it to 0 (or
    to a small constant, at most 1/sqrt(d) for d blocks: use a
    :class:`~jaxinit.recipes.recipe.Rule` with ``jaxinit.constant(alpha)`` for that). The
    paper publishes no reference code.

    Args:
      where: Pattern(s) of the scalar gates (one parameter per branch).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      TypeError: ``where`` is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import skipinit
      >>> skipinit().rules[0].where, skipinit().rules[0].init
      ('**/skip_gain', jaxinit.zeros())

    References:
      https://arxiv.org/abs/2002.10444
    """
    pats = _patterns("skipinit", "where", where)
    return Recipe(
        "skipinit",
        _rules(pats, zeros(), "alpha = 0 (De & Smith 2020)"),
        ("https://arxiv.org/abs/2002.10444",),
    )


def rezero(where: Patterns = "**/resweight") -> Recipe:
    """ReZero: ``x + alpha * F(x)`` with ``alpha`` a learnable scalar initialized to 0.

    Bachlechner et al. 2020 ("ReZero is All You Need: Fast Convergence at Large Depth"):
    ``x_{i+1} = x_i + alpha_i F(x_i)`` with ``alpha_i = 0`` at initialization. Reference
    code: majumderb/rezero
    ``rezero/transformer/rztx.py``, ``RZTXEncoderLayer``:
    ``self.resweight = nn.Parameter(torch.Tensor([0]))``, hence the default pattern.

    Args:
      where: Pattern(s) of the residual weights.

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      TypeError: ``where`` is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import rezero
      >>> rezero().match("layers_3/resweight").init
      jaxinit.zeros()

    References:
      https://arxiv.org/abs/2003.04887
      https://github.com/majumderb/rezero/blob/master/rezero/transformer/rztx.py
    """
    pats = _patterns("rezero", "where", where)
    return Recipe(
        "rezero",
        _rules(pats, zeros(), "alpha = 0 (ReZero)"),
        (
            "https://arxiv.org/abs/2003.04887",
            "https://github.com/majumderb/rezero/blob/master/rezero/transformer/rztx.py",
        ),
    )


def layerscale(
    init_value: float | None = None,
    *,
    depth: int | None = None,
    where: Patterns = "**/gamma_*",
) -> Recipe:
    """LayerScale (CaiT): a per-channel diagonal gate ``diag(lambda)`` on each residual
    branch, every ``lambda`` starting at a small ``epsilon``.

    Touvron et al. 2021 ("Going deeper with Image Transformers", section 2, LayerScale): the
    diagonal starts at epsilon = 0.1 for depth up to 18, 1e-5 for depth 24 and 1e-6 for
    deeper networks.
    Reference code: facebookresearch/deit ``cait_models.py``, ``LayerScale_Block``:
    ``self.gamma_1 = nn.Parameter(init_values * torch.ones((dim)))`` (and ``gamma_2``), with
    ``init_scale=1e-5`` for the 24-layer models (``cait_XXS24``, ``cait_S24``) and ``1e-6``
    for 36 and more (``cait_S36``, ``cait_M36``, ``cait_M48``).

    Give ``init_value``, or ``depth`` to take the paper's value: 0.1 for ``depth <= 18``,
    1e-5 for ``depth <= 24``, 1e-6 above.

    Args:
      init_value: The initial value of every gate, finite and > 0.
      depth: The number of blocks, an int >= 1, when ``init_value`` is None.
      where: Pattern(s) of the gates (default: CaiT's ``gamma_1``, ``gamma_2``).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      ValueError: neither or both of ``init_value`` and ``depth``, or a bad value.
      TypeError: ``where`` is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import layerscale
      >>> layerscale(depth=24).rules[0].init, layerscale(depth=12).rules[0].init
      (jaxinit.constant(value=1e-05), jaxinit.constant(value=0.1))
    """
    fn = "layerscale"
    if (init_value is None) == (depth is None):
        raise ValueError(
            f"{fn}: give exactly one of init_value= (the gates' value) and depth= (to take "
            f"CaiT's 0.1 / 1e-5 / 1e-6); got init_value={init_value!r}, depth={depth!r}."
        )
    if init_value is not None:
        eps = check_finite(fn, "init_value", init_value, positive=True)
        why = f"epsilon = {eps:g}"
    else:
        d = check_int(fn, "depth", depth, 1)
        eps = 0.1 if d <= 18 else (1e-5 if d <= 24 else 1e-6)
        why = f"epsilon = {eps:g} for depth {d} (CaiT: 0.1 to 18, 1e-5 to 24, 1e-6 above)"
    pats = _patterns(fn, "where", where)
    return Recipe(
        f"layerscale({eps:g})",
        _rules(pats, constant(eps), why),
        (
            "https://arxiv.org/abs/2103.17239",
            "https://github.com/facebookresearch/deit/blob/main/cait_models.py",
        ),
    )


# --------------------------------------------------------------------------------------------
# Fixup


def fixup(
    num_blocks: int,
    m: int = 2,
    *,
    branch: Patterns | None = None,
    last: Patterns | None = None,
    classifier: Patterns = "**/fc/kernel",
    classifier_bias: Patterns = "**/fc/bias",
    scalar_biases: Patterns = "**/bias?*",
    multipliers: Patterns = "**/scale",
    others: Patterns = "**/kernel",
) -> Recipe:
    """Fixup (Zhang, Dauphin & Ma 2019): train residual networks without normalization.

    The paper's rule (section 3): initialize the classification layer and the last layer of
    each residual branch to 0; initialize every other layer with a standard method (He et
    al. 2015) and scale only the weight layers inside residual branches by L^(-1/(2m-2));
    add a scalar multiplier (initialized at 1) in every branch and a scalar bias
    (initialized at 0) before each convolution, linear and element-wise activation layer.
    L is the number of residual branches and m the number of layers in each.

    Reference code: hongyi-zhang/Fixup ``cifar/models/fixup_resnet_cifar.py``,
    ``FixupResNet.__init__``: ``nn.init.normal_(m.conv1.weight, mean=0, std=np.sqrt(2 /
    (m.conv1.weight.shape[0] * np.prod(m.conv1.weight.shape[2:]))) * self.num_layers **
    (-0.5))`` (PyTorch's ``shape[0]`` is the output channels: He normal with **fan_out**),
    ``nn.init.constant_(m.conv2.weight, 0)``, and the ``nn.Linear`` classifier's weight and
    bias 0; ``bias1a``... ``bias2b`` start at 0 and ``scale`` at 1. ``num_layers =
    sum(layers)`` is the number of blocks (54 for ResNet-110). The ImageNet bottleneck
    (``imagenet/models/fixup_resnet_imagenet.py``, m = 3) scales ``conv1`` and ``conv2`` by
    ``num_layers ** (-0.25)`` and its 1x1 ``downsample`` convolutions get unscaled He normal
    (fan_out).

    Here: ``branch`` kernels -> ``variance_scaling(2 L^(-1/(m-1)), "fan_out", "normal")``
    (std ``sqrt(2/fan_out) L^(-1/(2m-2))``; ResNet-110: 54^(-1/2) = 0.13608 times He);
    ``last`` kernels, ``classifier`` and ``classifier_bias`` -> 0; ``scalar_biases`` -> 0;
    ``multipliers`` -> 1; any other kernel (``others``: the stem, projection shortcuts) ->
    ``he_normal(mode="fan_out")`` (optional). Flax conv kernels are ``(*spatial, in, out)``,
    so ``fan_out = prod(spatial) * out``, as PyTorch's ``shape[0] * prod(shape[2:])``. The
    CIFAR reference leaves its stem ``conv1`` at PyTorch's default
    (:func:`jaxinit.torch_default`); pass ``others=()`` to leave such layers as the model
    drew them.

    Default patterns (Flax names of the reference's modules): ``branch`` is
    ``*/**/conv1/kernel`` ... ``*/**/conv{m-1}/kernel`` and ``last`` is
    ``*/**/conv{m}/kernel``: ``*/**/`` needs at least one enclosing module, so the stem
    ``conv1`` at the root is not a branch layer. ``**/bias?*`` matches ``bias1a``,
    ``bias2b`` ... but not a layer's ``bias``.

    Args:
      num_blocks: L, the number of residual branches, an int >= 1.
      m: The number of weight layers in each branch, an int >= 2.
      branch: Pattern(s) of the branch layers before the last (default above).
      last: Pattern(s) of each branch's last layer (default above).
      classifier: Pattern(s) of the classifier kernel.
      classifier_bias: Pattern(s) of the classifier bias (optional).
      scalar_biases: Pattern(s) of Fixup's scalar biases.
      multipliers: Pattern(s) of Fixup's scalar multipliers.
      others: Pattern(s) of every other kernel (optional; ``()`` for none).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      ValueError: ``num_blocks`` not an int >= 1 or ``m`` not an int >= 2.
      TypeError: a pattern argument is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import fixup
      >>> recipe = fixup(54)  # ResNet-110
      >>> law = recipe.match("layer1_0/conv1/kernel").init.variance
      >>> round((law(144, 144) / (2 / 144)) ** 0.5, 5)  # times He (fan_out = 9 * 16)
      0.13608
      >>> recipe.match("conv1/kernel").where, recipe.match("fc/kernel").init
      ('**/kernel', jaxinit.zeros())

    References:
      https://arxiv.org/abs/1901.09321
      https://github.com/hongyi-zhang/Fixup/blob/master/cifar/models/fixup_resnet_cifar.py
    """
    fn = "fixup"
    L = check_int(fn, "num_blocks", num_blocks, 1)
    m = check_int(fn, "m", m, 2)
    if branch is None:
        branch = tuple(f"*/**/conv{i}/kernel" for i in range(1, m))
    if last is None:
        last = f"*/**/conv{m}/kernel"
    factor = L ** (-1 / (2 * m - 2))
    rules = (
        *_rules(
            _patterns(fn, "last", last),
            zeros(),
            "0: the last layer of each residual branch",
        ),
        *_rules(
            _patterns(fn, "branch", branch),
            variance_scaling(2.0 * factor**2, "fan_out", "normal"),
            f"He (fan_out) * L^(-1/(2m-2)) = {L}^(-1/{2 * m - 2}) = {factor:.5g}",
        ),
        *_rules(_patterns(fn, "classifier", classifier), zeros(), "0: the classification layer"),
        *_rules(
            _patterns(fn, "classifier_bias", classifier_bias, empty_ok=True),
            zeros(),
            "0: the classification layer",
            optional=True,
        ),
        *_rules(
            _patterns(fn, "scalar_biases", scalar_biases, empty_ok=True),
            zeros(),
            "0: scalar biases",
        ),
        *_rules(
            _patterns(fn, "multipliers", multipliers, empty_ok=True),
            ones(),
            "1: scalar multipliers",
        ),
        *_rules(
            _patterns(fn, "others", others, empty_ok=True),
            he_normal(mode="fan_out"),
            "He (fan_out), unscaled: layers outside the branches",
            optional=True,
        ),
    )
    return Recipe(
        f"fixup(L={L}, m={m})",
        rules,
        (
            "https://arxiv.org/abs/1901.09321",
            "https://github.com/hongyi-zhang/Fixup/blob/master/cifar/models/fixup_resnet_cifar.py",
        ),
        "Fixup also needs the scalar biases and multipliers in the model's forward pass; the "
        "recipe only initializes them.",
    )


# --------------------------------------------------------------------------------------------
# DeepNorm


class DeepNormConstants(NamedTuple):
    """DeepNorm's residual weight ``alpha`` and init gain ``beta`` (Wang et al. 2022, table
    in section 3). For an encoder-decoder model, ``alpha``/``beta`` are the encoder's and
    ``decoder_alpha``/``decoder_beta`` the decoder's; otherwise the latter are None."""

    alpha: float
    beta: float
    decoder_alpha: float | None = None
    decoder_beta: float | None = None


def deepnorm_constants(n_layer: int, *, decoder_layers: int | None = None) -> DeepNormConstants:
    """DeepNorm's ``alpha`` and ``beta``.

    ==========================  =========================  ===========================
    architecture                alpha                      beta
    ==========================  =========================  ===========================
    encoder-only (N layers)     (2N)^(1/4)                 (8N)^(-1/4)
    decoder-only (M layers)     (2M)^(1/4)                 (8M)^(-1/4)
    encoder-decoder, encoder    0.81 (N^4 M)^(1/16)        0.87 (N^4 M)^(-1/16)
    encoder-decoder, decoder    (3M)^(1/4)                 (12M)^(-1/4)
    ==========================  =========================  ===========================

    ``alpha`` is not an initialization: it multiplies the residual stream inside the
    post-LayerNorm, ``LN(alpha x + G(x))`` (an architecture change the model must make).

    Args:
      n_layer: N, the encoder's (or the only stack's) number of layers, an int >= 1.
      decoder_layers: M for an encoder-decoder model, an int >= 1; None for one stack.

    Returns:
      :class:`DeepNormConstants`.

    Raises:
      ValueError: a layer count that is not an int >= 1.

    Example:
      >>> from jaxinit.recipes.residual import deepnorm_constants
      >>> c = deepnorm_constants(100)
      >>> round(c.alpha, 5), round(c.beta, 5), c.decoder_beta
      (3.7606, 0.18803, None)
    """
    n = check_int("deepnorm_constants", "n_layer", n_layer, 1)
    if decoder_layers is None:
        return DeepNormConstants((2 * n) ** 0.25, (8 * n) ** -0.25)
    mm = check_int("deepnorm_constants", "decoder_layers", decoder_layers, 1)
    return DeepNormConstants(
        0.81 * (n**4 * mm) ** (1 / 16),
        0.87 * (n**4 * mm) ** (-1 / 16),
        (3 * mm) ** 0.25,
        (12 * mm) ** -0.25,
    )


def _stack_prefixes(
    fn: str, two: bool, encoder: str | None, decoder: str | None
) -> tuple[str, str]:
    enc = encoder if encoder is not None else ("encoder/**" if two else "**")
    dec = decoder if decoder is not None else ("decoder/**" if two else "**")
    for arg, v in (("encoder", enc), ("decoder", dec)):
        if not isinstance(v, str) or not v:
            raise TypeError(f"{fn}: {arg}={short(v)} must be a non-empty path pattern prefix.")
    return enc, dec


def deepnorm(
    n_layer: int,
    *,
    decoder_layers: int | None = None,
    scaled: Patterns = ("fc1/kernel", "fc2/kernel", "v_proj/kernel", "out_proj/kernel"),
    unscaled: Patterns = ("q_proj/kernel", "k_proj/kernel"),
    encoder: str | None = None,
    decoder: str | None = None,
) -> Recipe:
    """DeepNet's initialization (Wang et al. 2022): ``xavier_normal`` with gain ``beta`` on
    the FFN, value and output projections, gain 1 on the query and key projections.

    The paper's pseudocode (figure 2): ``xavier_normal_(w, gain=beta)`` for ``w`` in
    ``ffn``, ``v_proj``, ``out_proj`` and ``xavier_normal_(w, gain=1)`` for ``q_proj``,
    ``k_proj``; ``beta`` from the table of :func:`deepnorm_constants` (one stack of N
    layers: ``beta = (8N)^(-1/4)``, 0.18803 for N = 100). ``alpha`` is an architecture
    change (``LN(alpha x + G(x))``), not an init: get it from :func:`deepnorm_constants`.

    Reference code: microsoft/torchscale ``torchscale/architecture/encoder.py``
    (``Encoder.__init__``, ``if args.deepnorm``): ``init_scale = math.pow(8.0 *
    args.encoder_layers, 0.25)`` (encoder-decoder: ``math.pow(math.pow(N, 4) * M, 0.0625) /
    1.15``), then ``p.data.div_(init_scale)`` for every parameter whose name contains
    ``fc1``, ``fc2``, ``out_proj`` or ``v_proj``; ``decoder.py`` divides by ``(8M)^(1/4)``
    or ``(12M)^(1/4)``. torchscale divides *its own* init, which differs from the paper's
    pseudocode: ``xavier_uniform_`` with gain ``1/sqrt(2)`` on q/k/v
    (``MultiheadAttention.reset_parameters``), gain 1 on ``out_proj``, PyTorch's default
    on ``fc1``/``fc2``, and it divides their biases too. This recipe follows the paper;
    biases and other parameters are left as the model drew them.

    Patterns are ``{stack}/{pattern}``: with one stack the prefix is ``**`` (every layer);
    with ``decoder_layers`` the encoder's parameters are those under ``encoder`` (default
    ``encoder/**``) and the decoder's under ``decoder`` (default ``decoder/**``), each with
    its own ``beta``; the decoder's cross-attention ``v_proj``/``out_proj`` are scaled as in
    torchscale. Kernels must be 2-D ``(in, out)`` (Dense); for Flax's
    ``MultiHeadDotProductAttention`` (``query``/``key``/``value``/``out``, 3-D kernels) write
    rules with ``jaxinit.glorot_normal(gain=beta, in_axis=..., out_axis=...)``.

    Args:
      n_layer: N, the number of layers of the encoder (or of the only stack).
      decoder_layers: M for an encoder-decoder model; None for one stack.
      scaled: Patterns, under each stack's prefix, of the kernels that get gain ``beta``.
      unscaled: Patterns, under each stack's prefix, of the kernels that get gain 1.
      encoder: The encoder's prefix pattern (default above).
      decoder: The decoder's prefix pattern (default above).

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      ValueError: a layer count that is not an int >= 1.
      TypeError: a pattern argument is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import deepnorm
      >>> recipe = deepnorm(100)
      >>> recipe.match("layers_7/ffn/fc1/kernel").init
      jaxinit.glorot_normal(gain=0.1880301546543197, in_axis=-2, out_axis=-1, batch_axis=())
      >>> recipe.match("layers_7/attn/q_proj/kernel").init
      jaxinit.glorot_normal(gain=1.0, in_axis=-2, out_axis=-1, batch_axis=())

    References:
      https://arxiv.org/abs/2203.00555
      https://github.com/microsoft/torchscale/blob/main/torchscale/architecture/encoder.py
    """
    fn = "deepnorm"
    c = deepnorm_constants(n_layer, decoder_layers=decoder_layers)
    two = decoder_layers is not None
    enc, dec = _stack_prefixes(fn, two, encoder, decoder)
    sc = _patterns(fn, "scaled", scaled)
    un = _patterns(fn, "unscaled", unscaled, empty_ok=True)
    if two:
        assert c.decoder_beta is not None
        stacks = [
            (enc, c.beta, f"beta = 0.87 (N^4 M)^(-1/16) = {c.beta:.5g}"),
            (dec, c.decoder_beta, f"beta = (12M)^(-1/4) = {c.decoder_beta:.5g}"),
        ]
    else:
        stacks = [(enc, c.beta, f"beta = (8N)^(-1/4) = {c.beta:.5g}")]
    rules: list[Rule] = []
    for prefix, beta, why in stacks:
        rules += _rules(_under(prefix, sc), glorot_normal(gain=beta), f"xavier_normal, {why}")
        rules += _rules(_under(prefix, un), glorot_normal(), "xavier_normal, gain 1 (q, k)")
    name = f"deepnorm(N={n_layer}" + (f", M={decoder_layers})" if two else ")")
    return Recipe(
        name,
        tuple(rules),
        (
            "https://arxiv.org/abs/2203.00555",
            "https://github.com/microsoft/torchscale/blob/main/torchscale/architecture/encoder.py",
        ),
        f"alpha = {c.alpha:.5g}"
        + (f" (decoder {c.decoder_alpha:.5g})" if two else "")
        + " multiplies the residual inside the post-LN, LN(alpha x + G(x)): an architecture "
        "change, not part of this recipe.",
    )


# --------------------------------------------------------------------------------------------
# T-Fixup


def t_fixup(
    encoder_layers: int | None = None,
    decoder_layers: int | None = None,
    *,
    scaled: Patterns = ("fc1/kernel", "fc2/kernel", "v_proj/kernel", "out_proj/kernel"),
    qk: Patterns = ("q_proj/kernel", "k_proj/kernel"),
    embeddings: Patterns = ("embed_tokens/embedding",),
    biases: Patterns = "bias",
    qk_gain: float = 2**-0.5,
    encoder: str | None = None,
    decoder: str | None = None,
) -> Recipe:
    """T-Fixup (Huang, Perez, Ba & Volkovs 2020): a transformer without LayerNorm or
    warm-up, by scaling Xavier-initialized weights with the depth.

    The paper's T-Fixup algorithm: Xavier initialization for every parameter but the
    input embeddings, ``N(0, d^(-1/2))`` for the embeddings; scale the value and output
    projections of every encoder attention block and the weights of every encoder MLP by
    ``0.67 N^(-1/4)``, those of the decoder (self and cross attention, MLP) by
    ``(9M)^(-1/4)``, and the input embeddings by ``(9M)^(-1/4)``.

    Reference code: layer6ai-labs/T-Fixup ``fairseq/modules/transformer_layer.py``,
    ``TransformerEncoderLayer.fixup_initialization``: ``fc1.weight``, ``fc2.weight``,
    ``self_attn.out_proj.weight`` times ``0.67 * en_layers ** (-1/4)``, and
    ``self_attn.v_proj.weight`` times the same and ``2**0.5`` (undoing fairseq's
    ``xavier_uniform_(v_proj.weight, gain=1/math.sqrt(2))``); the decoder layer the same
    with ``(9 * de_layers) ** (-1/4)`` (``encoder_attn`` too). The base init is fairseq's
    (``fairseq/models/transformer.py``): ``Linear`` -> ``xavier_uniform_`` with zero bias,
    ``q_proj``/``k_proj`` ``xavier_uniform_`` with gain ``1/sqrt(2)``, ``Embedding`` ->
    ``normal_(std=embedding_dim ** -0.5)``, which ``TransformerEncoder.__init__`` multiplies
    by ``(9 * encoder_layers) ** (-1/4)`` and ``TransformerDecoder.__init__`` by ``(9 *
    decoder_layers) ** (-1/4)`` (unless the embeddings are shared). The code scales the
    encoder's embeddings with N where the paper writes M; this recipe follows the code.

    Here, per stack with ``factor`` = ``0.67 N^(-1/4)`` (encoder) or ``(9M)^(-1/4)``
    (decoder): ``scaled`` -> ``glorot_uniform(gain=factor)``; ``qk`` ->
    ``glorot_uniform(gain=qk_gain)``; ``embeddings`` -> ``variance_scaling((9 L)^(-1/2),
    "fan_out")`` = ``N(0, d^(-1/2) (9 L)^(-1/4))`` in std, with ``d`` = the embedding's
    features (Flax ``Embed`` is ``(vocab, d)``); ``biases`` -> 0 (optional).

    Give ``encoder_layers`` (N), ``decoder_layers`` (M) or both. With both, the encoder's
    parameters are those under ``encoder`` (default ``encoder/**``) and the decoder's under
    ``decoder`` (default ``decoder/**``); with one, ``**`` (every layer).

    Args:
      encoder_layers: N, an int >= 1, or None for a decoder-only model.
      decoder_layers: M, an int >= 1, or None for an encoder-only model.
      scaled: Patterns, under each stack's prefix, of the v/out/FFN kernels.
      qk: Patterns of the query/key kernels (``()`` to leave them).
      embeddings: Patterns of the token embeddings (``()`` to leave them).
      biases: Patterns of the biases set to 0 (optional).
      qk_gain: Xavier gain of ``qk``: fairseq's ``1/sqrt(2)``, the paper's 1.
      encoder: The encoder's prefix pattern.
      decoder: The decoder's prefix pattern.

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      ValueError: no layer count, a count that is not an int >= 1, or a bad ``qk_gain``.
      TypeError: a pattern argument is not a pattern or a sequence of patterns.

    Example:
      >>> import jaxinit
      >>> from jaxinit.recipes.residual import t_fixup
      >>> recipe = t_fixup(6, 6)
      >>> recipe.match("encoder/layers_0/fc1/kernel").init == jaxinit.glorot_uniform(
      ...     gain=0.67 * 6 ** -0.25)
      True
      >>> v = recipe.match("decoder/layers_0/self_attn/v_proj/kernel").init
      >>> v == jaxinit.glorot_uniform(gain=(9 * 6) ** -0.25)
      True

    References:
      https://proceedings.mlr.press/v119/huang20f.html
      https://github.com/layer6ai-labs/T-Fixup/blob/master/fairseq/modules/transformer_layer.py
    """
    fn = "t_fixup"
    if encoder_layers is None and decoder_layers is None:
        raise ValueError(
            f"{fn}: give encoder_layers= (N), decoder_layers= (M) or both; got neither."
        )
    g = check_finite(fn, "qk_gain", qk_gain, positive=True)
    two = encoder_layers is not None and decoder_layers is not None
    enc, dec = _stack_prefixes(fn, two, encoder, decoder)
    sc = _patterns(fn, "scaled", scaled)
    qks = _patterns(fn, "qk", qk, empty_ok=True)
    emb = _patterns(fn, "embeddings", embeddings, empty_ok=True)
    bias = _patterns(fn, "biases", biases, empty_ok=True)
    stacks = []
    if encoder_layers is not None:
        n = check_int(fn, "encoder_layers", encoder_layers, 1)
        stacks.append((enc, 0.67 * n**-0.25, f"0.67 N^(-1/4), N={n}", 9 * n, f"(9N)^(-1/4), N={n}"))
    if decoder_layers is not None:
        mm = check_int(fn, "decoder_layers", decoder_layers, 1)
        stacks.append(
            (dec, (9 * mm) ** -0.25, f"(9M)^(-1/4), M={mm}", 9 * mm, f"(9M)^(-1/4), M={mm}")
        )
    rules: list[Rule] = []
    for prefix, factor, why, nine_l, ewhy in stacks:
        rules += _rules(_under(prefix, sc), glorot_uniform(gain=factor), f"xavier_uniform * {why}")
        rules += _rules(
            _under(prefix, emb),
            variance_scaling((nine_l) ** -0.5, "fan_out", "normal"),
            f"N(0, d^(-1/2)) * {ewhy}",
        )
    pre = "**" if not two else None
    qk_pats = _under(pre, qks) if pre else (*_under(enc, qks), *_under(dec, qks))
    rules += _rules(qk_pats, glorot_uniform(gain=g), f"xavier_uniform, gain {g:.5g} (fairseq)")
    bias_pats = _under(pre, bias) if pre else (*_under(enc, bias), *_under(dec, bias))
    rules += _rules(bias_pats, zeros(), "0 (fairseq Linear)", optional=True)
    parts = [f"N={encoder_layers}"] if encoder_layers is not None else []
    parts += [f"M={decoder_layers}"] if decoder_layers is not None else []
    return Recipe(
        f"t_fixup({', '.join(parts)})",
        tuple(rules),
        (
            "https://proceedings.mlr.press/v119/huang20f.html",
            "https://github.com/layer6ai-labs/T-Fixup/blob/master/fairseq/modules/transformer_layer.py",
        ),
        "T-Fixup also removes LayerNorm and learning-rate warm-up; the recipe only initializes.",
    )


# --------------------------------------------------------------------------------------------
# spectral condition


@factory
def spectral_normal(
    *, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()
) -> Initializer:
    """Normal weights with the spectral condition's scale:
    ``std = (1 / sqrt(fan_in)) * min(1, sqrt(fan_out / fan_in))``.

    Yang, Simon & Bernstein 2023 ("A Spectral Condition for Feature Learning",
    Parametrization 1): ``sigma_l = Theta(1/sqrt(n_{l-1}) * min{1, sqrt(n_l / n_{l-1})})``
    makes the spectral norm of each weight ``Theta(sqrt(fan_out / fan_in))``. Variance law:
    ``init.variance(fan_in, fan_out) == min(1, fan_out / fan_in) / fan_in``.

    Args:
      in_axis: Axis or axes of input features (Flax kernels: ``-2``).
      out_axis: Axis or axes of output features.
      batch_axis: Axes counted in neither fan.

    Returns:
      An :class:`~jaxinit.Initializer`.

    Example:
      >>> from jaxinit.recipes.residual import spectral_normal
      >>> init = spectral_normal()
      >>> bool(init.variance(512, 128) == (1 / 512) * (128 / 512))
      True
      >>> init.variance(128, 512) * 128
      1.0

    References:
      https://arxiv.org/abs/2310.17813
    """
    name = "recipes.spectral_normal"
    in_axis = _check_axes(name, in_axis, "in_axis")
    out_axis = _check_axes(name, out_axis, "out_axis")
    batch_axis = _check_axes(name, batch_axis, "batch_axis")
    _check_roles(name, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)

    def fans(shape):
        return fans_of(shape, in_axis, out_axis, batch_axis, fn=name)

    def var_of(fan_in: int, fan_out: int) -> float:
        return min(1.0, fan_out / fan_in) / fan_in

    def sample(key: jax.Array | None, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        assert key is not None
        s = math.sqrt(var_of(*fans(shape)))
        return (s * random_normal(key, shape, sample_dtype(dtype))).astype(dtype)

    return Init(
        name,
        sample,
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
        check=fans,
        variance=lambda fan_in, fan_out, shape: var_of(fan_in, fan_out),
    )


def spectral(
    where: Patterns = "**/kernel",
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> Recipe:
    """The spectral condition's initialization on the selected kernels:
    ``std = (1 / sqrt(fan_in)) * min(1, sqrt(fan_out / fan_in))`` (:func:`spectral_normal`).

    Yang, Simon & Bernstein 2023, "A Spectral Condition for Feature Learning"
    (Parametrization 1); the paper gives the scaling, not code. Biases and other parameters
    are left as they are.

    Args:
      where: Pattern(s) of the kernels.
      in_axis: Axis or axes of input features.
      out_axis: Axis or axes of output features.
      batch_axis: Axes counted in neither fan.

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      TypeError: ``where`` is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import spectral
      >>> law = spectral().rules[0].init.variance
      >>> law(64, 256) * 64, law(256, 64) * 256  # min(1, fan_out / fan_in)
      (1.0, 0.25)

    References:
      https://arxiv.org/abs/2310.17813
    """
    pats = _patterns("spectral", "where", where)
    init = spectral_normal(in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
    return Recipe(
        "spectral",
        _rules(pats, init, "(1/sqrt(fan_in)) min(1, sqrt(fan_out/fan_in))"),
        ("https://arxiv.org/abs/2310.17813",),
    )


# --------------------------------------------------------------------------------------------
# query folding


def query_folding(
    head_dim: int,
    *,
    where: Patterns = "**/query/kernel",
    bias: Patterns = "**/query/bias",
    scale: float = 1.0,
    mode: Mode = "fan_in",
    distribution: Distribution = "truncated_normal",
    in_axis: Axes = -3,
    out_axis: Axes = (-2, -1),
) -> Recipe:
    """Fold the attention logits' ``1/sqrt(d_head)`` into the query projection's init: the
    query kernel gets ``variance_scaling(scale / head_dim, mode, distribution)`` (its std
    divided by ``sqrt(head_dim)``), its bias 0 (a zero bias folds to itself).

    Reference code: google-research/t5x ``t5x/examples/t5/layers.py``,
    ``MultiHeadDotProductAttention.__call__``: ``depth_scaling =
    jnp.sqrt(self.head_dim)``, ``query_init = lambda *args: self.kernel_init(*args) /
    depth_scaling``, with the note "T5 does not explicitly rescale the attention logits by
    1/sqrt(depth_kq)! This is folded into the initializers of the linear transformations,
    which is equivalent under Adafactor." The model must then *not* divide the logits by
    ``sqrt(d_head)`` (e.g. Flax attention with a ``attention_fn`` that skips the scaling).

    **Caveat.** Folding is the same function at initialization, but not the same training
    dynamics under Adam (or SGD): Adam's update of ``W_q`` has a size set by the learning
    rate, not by ``W_q``'s scale, so with ``W_q / sqrt(d_head)`` each step moves the logits
    ``sqrt(d_head)`` times more than with the explicit ``1/sqrt(d_head)`` on the logits.
    Adafactor's updates are relative to the parameter's scale, which is why T5 calls it
    equivalent there.

    The defaults fit Flax's ``MultiHeadDotProductAttention``: ``query`` is a
    ``DenseGeneral`` kernel of shape ``(in, heads, head_dim)`` (fan_in = ``in``: ``in_axis
    =-3``, ``out_axis=(-2, -1)``) drawn by default with ``lecun_normal`` (truncated normal,
    variance ``1 / fan_in``), so the default is Flax's own init divided by
    ``sqrt(head_dim)``. For a 2-D ``(in, heads * head_dim)`` kernel pass ``in_axis=-2,
    out_axis=-1``. A fused QKV kernel (nanoGPT's ``c_attn``) cannot be folded by a
    per-parameter rule.

    Args:
      head_dim: d_head, an int >= 1.
      where: Pattern(s) of the query kernels.
      bias: Pattern(s) of the query biases, set to 0 (optional; ``()`` to leave them).
      scale: The unfolded init's variance scale (``variance_scaling``'s), finite and > 0.
      mode: The unfolded init's fan mode.
      distribution: The unfolded init's distribution.
      in_axis: Axis or axes of input features.
      out_axis: Axis or axes of output features.

    Returns:
      A :class:`~jaxinit.recipes.recipe.Recipe`.

    Raises:
      ValueError: ``head_dim`` not an int >= 1, or a bad ``scale``, ``mode`` or
        ``distribution``.
      TypeError: a pattern argument is not a pattern or a sequence of patterns.

    Example:
      >>> from jaxinit.recipes.residual import query_folding
      >>> law = query_folding(64).rules[0].init.variance
      >>> law(512, 512) * 512 * 64  # (1 / fan_in) / head_dim
      1.0

    References:
      https://github.com/google-research/t5x/blob/main/t5x/examples/t5/layers.py
    """
    fn = "query_folding"
    d = check_int(fn, "head_dim", head_dim, 1)
    s = check_finite(fn, "scale", scale, positive=True)
    init = variance_scaling(s / d, mode, distribution, in_axis=in_axis, out_axis=out_axis)
    rules = (
        *_rules(
            _patterns(fn, "where", where),
            init,
            f"the unfolded init / sqrt(head_dim) = / sqrt({d}) (t5x query_init)",
        ),
        *_rules(
            _patterns(fn, "bias", bias, empty_ok=True),
            zeros(),
            "0 (folded: 0 / sqrt(d))",
            optional=True,
        ),
    )
    return Recipe(
        f"query_folding(head_dim={d})",
        rules,
        ("https://github.com/google-research/t5x/blob/main/t5x/examples/t5/layers.py",),
        "The model must not also divide the logits by sqrt(head_dim). Under Adam folding "
        "changes the training dynamics (see the docstring).",
    )
