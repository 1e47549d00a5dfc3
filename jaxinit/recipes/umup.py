"""u-μP, the unit-scaled maximal update parametrization (Blake et al. 2024), for Flax.

u-μP puts μP's width scaling into the forward pass as fixed multipliers, so that every weight
is drawn from ``N(0, 1)`` and each op's output starts near unit scale, and scales each
parameter's Adam learning rate by its own fan-in. Nothing refers to a base model: the factors
come from each parameter's actual shape. This module gives the pieces a Flax model needs,
with no custom layer:

- :func:`dot_general` / :func:`conv_general_dilated`: a layer's ``dot_general=`` /
  ``conv_general_dilated=`` argument that multiplies its output by the role's multiplier
  (:func:`multiplier`), the fan-in read from the kernel's contracting axes;
- :func:`init`, :func:`init_std`: the unit-variance initialization;
- :func:`lr_factors`, :func:`optimizer`: per-parameter Adam learning rates for the roles of
  :func:`jaxinit.mup.roles`;
- unit-scaled ops: :func:`residual_split` / :func:`residual_add` with the branch weight τ,
  :func:`residual_tau` (the depth rule for τ), :func:`gelu`, :func:`silu`,
  :func:`softmax_cross_entropy`.

The rules, per role of :func:`jaxinit.mup.roles` (``fan_in``: the product of a kernel's input
axes, all but the last in Flax's layout; ``features``: an embedding table's last axis; ``L``:
the number of layers of the residual stack a parameter belongs to), taken from
graphcore-research/unit-scaling, the paper's reference implementation (files of
``unit_scaling/``):

==========  =========  ==============  =======================  ================================
role        init std   multiplier      Adam l.r. factor         source
==========  =========  ==============  =======================  ================================
input       1          1/sqrt(fan_in)  1/sqrt(fan_in)           functional.linear; optim
embedding   1          1 (a lookup)    1/sqrt(features)         functional.embedding; optim
hidden      1          1/sqrt(fan_in)  1/sqrt(fan_in)           functional.linear; optim
output      1          1/fan_in        1                        functional.linear_readout; optim
bias        0 (zeros)  1               its kernel's multiplier  _modules.Linear; see below
norm scale  0 (ones)   1               1                        _modules.LayerNorm, RMSNorm
any, depth  unchanged  unchanged       times 1/sqrt(L)          optim.lr_scale_for_depth
==========  =========  ==============  =======================  ================================

Sources, in detail: init std from ``_modules.py`` (``Linear.reset_parameters`` draws
``normal_`` weights and zero biases, ``LinearReadout`` inherits it, ``Embedding`` keeps
torch's ``N(0, 1)``, norm weights start at ones); multipliers from ``functional.py``
(``linear``: ``output_scale = 1 / fan_in ** 0.5``, ``linear_readout``: ``scale_power=(1.0,
...)``, ``embedding``: no forward scale, ``conv1d``: ``1 / (fan_in * kernel_size) ** 0.5``);
Adam factors from ``optim.py`` (``lr_scale_func_adam``: ``weight`` parameters
``_get_fan_in(param) ** -0.5``, ``output``, ``bias`` and ``norm`` parameters 1;
``_get_fan_in`` reads an embedding table's hidden size, the paper's embedding rule
``1/sqrt(fan-out)``; ``lr_scale_for_depth``: ``mup_scaling_depth ** -0.5``, set by
``_modules.DepthSequential`` to the stack's length); weight decay from
``optim.scaled_parameters`` (``independent_weight_decay``: the rate divided by the
parameter's learning rate).

Two points to note, both exact for Adam:

- The *input* multiplier of a Dense layer is ``1/sqrt(fan_in)``, as ``unit_scaling.Linear``
  applies to every non-readout linear layer; the input multiplier 1 of the paper's table is
  the embedding lookup's (a Dense layer reading one-hot vectors is an embedding: give it no
  ``dot_general``).
- ``unit_scaling.functional.linear`` scales its output *after* adding the bias, so a bias
  there has its kernel's multiplier; a Flax layer adds its bias after ``dot_general``, so here
  the bias has multiplier 1 and, instead, its Adam learning rate is its kernel's multiplier.
  Adam's update does not depend on the gradient's scale, so a zero-initialized bias then
  follows the very same trajectory (abc-symmetry: multiplier ``1/θ``, learning rate ``θ``).

Gradients are JAX's true gradients of the forward pass above: :func:`dot_general` and
:func:`conv_general_dilated` do not rescale the backward pass the way ``unit_scaling``'s ops
do (``scale_bwd``). Adam is invariant to a per-tensor gradient scale (up to its ``eps``), so
:func:`lr_factors` reproduces the library's Adam training. SGD is not: the library's SGD rule
(``lr_scale_func_sgd``) assumes its unit-scaled weight gradients, so SGD is refused here.
:func:`residual_split`, :func:`residual_add` and :func:`softmax_cross_entropy` do reproduce
the library's backward scales (``jax.custom_vjp``), as their docstrings say.

References:
  Blake et al. 2024, "u-μP: The Unit-Scaled Maximal Update Parametrization",
  https://arxiv.org/abs/2407.17465; code: https://github.com/graphcore-research/unit-scaling
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from .._checks import check_bool, check_int, check_number
from .._flax.select import pattern_predicate
from .._types import Initializer
from ..basic import normal
from .mup import Role, Roles, _empty_state, _factor_tree, _scale_by_tree

LayerRole = Literal["input", "hidden", "output"]
LAYER_ROLES: tuple[LayerRole, ...] = get_args(LayerRole)
Optimizer = Literal["adam", "adamw"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)

_SGD = (
    "u-μP's SGD rule (unit_scaling.optim.lr_scale_func_sgd) assumes unit_scaling's rescaled "
    "weight gradients, and JAX differentiates the forward pass exactly"
)


def _check_choice(fn: str, arg: str, value: Any, accepted: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in accepted:
        why = f" ({_SGD})" if arg in ("optimizer", "kind") and value == "sgd" else ""
        raise ValueError(f"{fn}: {arg}={value!r} is not supported{why}; use one of {accepted}.")
    return value


# --------------------------------------------------------------------------------------------
# forward multipliers


def multiplier(role: LayerRole, fan_in: int) -> float:
    """u-μP's forward multiplier of a layer's output: ``1/sqrt(fan_in)`` for an input or
    hidden layer (``unit_scaling.functional.linear``), ``1/fan_in`` for the readout
    (``linear_readout``).

    Args:
      role: ``"input"``, ``"hidden"`` or ``"output"``.
      fan_in: The number of inputs each output sums over (a Dense kernel's first axis, a conv
        kernel's window size times its input channels per group).

    Returns:
      The multiplier, a float.

    Raises:
      ValueError: an unknown ``role`` or a ``fan_in`` that is not a positive int.

    Example:
      >>> from jaxinit.recipes import umup
      >>> umup.multiplier("hidden", 256), umup.multiplier("output", 256)
      (0.0625, 0.00390625)
    """
    _check_choice("multiplier", "role", role, LAYER_ROLES)
    fan_in = check_int("multiplier", "fan_in", fan_in, 1)
    return 1 / fan_in if role == "output" else 1 / math.sqrt(fan_in)


def _scaled(role: LayerRole, fan_in: int, y: jax.Array) -> jax.Array:
    return y if fan_in == 0 else y * multiplier(role, fan_in)


def dot_general(role: LayerRole) -> Callable[..., jax.Array]:
    """A ``jax.lax.dot_general`` that multiplies its result by :func:`multiplier` of ``role``,
    the fan-in being the product of the right operand's (the kernel's) contracting axes.

    Pass it as the ``dot_general=`` argument of ``flax.linen.Dense``/``DenseGeneral`` or
    ``flax.nnx.Linear``/``LinearGeneral`` (Flax calls ``dot_general(inputs, kernel, ...)``;
    the bias is added after it, see the module docstring). A ``DenseGeneral`` with
    ``axis=(-2, -1)`` contracts two kernel axes, and the fan-in is their product; batch axes
    (``batch_dims``) are not contracted and do not count. For convolutions see
    :func:`conv_general_dilated`. ``Einsum`` and ``ConvTranspose`` have no such argument in
    Flax: multiply their outputs by :func:`multiplier` yourself.

    Args:
      role: ``"input"``, ``"hidden"`` or ``"output"`` (the readout); the kernel's role in
        :func:`jaxinit.mup.roles`.

    Returns:
      A function with ``jax.lax.dot_general``'s signature.

    Raises:
      ValueError: an unknown ``role``.

    Example:
      >>> import jax, numpy as np, flax.linen as nn
      >>> import jaxinit
      >>> from jaxinit.recipes import umup
      >>> layer = nn.Dense(
      ...     512, kernel_init=jaxinit.normal(1.0), dot_general=umup.dot_general("hidden")
      ... )
      >>> x = np.random.default_rng(0).standard_normal((64, 1024), np.float32)
      >>> y, variables = layer.init_with_output(jax.random.key(1), x)
      >>> y.shape, bool(abs(y.std() - 1) < 0.05)
      ((64, 512), True)
    """
    _check_choice("dot_general", "role", role, LAYER_ROLES)

    def scaled_dot_general(lhs, rhs, dimension_numbers, *args, **kwargs):
        (_, rhs_contract), _ = dimension_numbers
        fan_in = math.prod(np.shape(rhs)[d] for d in rhs_contract)
        out = jax.lax.dot_general(lhs, rhs, dimension_numbers, *args, **kwargs)
        return _scaled(role, fan_in, out)

    return scaled_dot_general


def conv_general_dilated(role: LayerRole) -> Callable[..., jax.Array]:
    """A ``jax.lax.conv_general_dilated`` that multiplies its result by :func:`multiplier` of
    ``role``, the fan-in being the kernel's size over its output-feature axis (window size
    times input channels per group), as ``unit_scaling.functional.conv1d`` does.

    Pass it as the ``conv_general_dilated=`` argument of ``flax.linen.Conv`` or
    ``flax.nnx.Conv`` (shared weights; ``ConvLocal`` and ``ConvTranspose`` do not take it).

    Args:
      role: ``"input"``, ``"hidden"`` or ``"output"``.

    Returns:
      A function with ``jax.lax.conv_general_dilated``'s signature.

    Raises:
      ValueError: an unknown ``role``.

    Example:
      >>> import numpy as np, flax.linen as nn
      >>> from jaxinit.recipes import umup
      >>> conv = nn.Conv(64, (3, 3), conv_general_dilated=umup.conv_general_dilated("hidden"))
      >>> rng = np.random.default_rng(0)
      >>> x = rng.standard_normal((8, 16, 16, 128), np.float32)
      >>> params = {"kernel": rng.standard_normal((3, 3, 128, 64), np.float32),
      ...           "bias": np.zeros(64, np.float32)}  # u-μP's N(0, 1) kernel
      >>> y = conv.apply({"params": params}, x)
      >>> y.shape, bool(abs(y[:, 1:-1, 1:-1].std() - 1) < 0.05)  # fan-in 3 * 3 * 128
      ((8, 16, 16, 64), True)
    """
    _check_choice("conv_general_dilated", "role", role, LAYER_ROLES)

    def scaled_conv(lhs, rhs, window_strides, padding, *args, **kwargs):
        numbers = kwargs.get("dimension_numbers", args[2] if len(args) > 2 else None)
        dn = jax.lax.conv_dimension_numbers(np.shape(lhs), np.shape(rhs), numbers)
        shape = np.shape(rhs)
        out_features = shape[dn.rhs_spec[0]]
        fan_in = math.prod(shape) // out_features if out_features else 0
        out = jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)
        return _scaled(role, fan_in, out)

    return scaled_conv


# --------------------------------------------------------------------------------------------
# initialization and learning rates


def init() -> Initializer:
    """u-μP's initializer for every weight (input, hidden, readout kernels and embedding
    tables): ``N(0, 1)``, as ``unit_scaling.Linear.reset_parameters`` draws it. Biases start
    at zero and norm scales at one (Flax's defaults); see :func:`init_std`.

    Returns:
      An :class:`~jaxinit.Initializer` (``jaxinit.normal(1.0)``).

    Example:
      >>> import jax
      >>> from jaxinit.recipes import umup
      >>> w = umup.init()(jax.random.key(0), (1024, 512))
      >>> w.shape, bool(abs(w.std() - 1) < 0.01)
      ((1024, 512), True)
    """
    return normal(1.0)


def _absorbed(roles: Roles) -> dict[str, float]:
    """Each parameter's forward multiplier under :func:`dot_general` (1 for embedding tables
    and vectors): the factor that :func:`init_std` and :func:`lr_factors` fold in with
    ``absorbed=True``."""
    return {
        p: _kernel_multiplier(r.role, r.shape) if len(r.shape) >= 2 else 1.0
        for p, r in roles.items()
    }


def init_std(roles: Roles, *, absorbed: bool = False) -> dict[str, float]:
    """Each parameter's u-μP initial standard deviation: 1 for a parameter of two or more axes
    (kernels, embedding tables, whatever its role), 0 for one of fewer (a bias starts at zero,
    a norm scale at one: constants).

    With ``absorbed``, the forward multipliers are folded into the weights, for a plain Flax
    model (no ``dot_general=``): a kernel's std is its multiplier (``1/sqrt(fan_in)``,
    ``1/fan_in`` for the readout), an embedding table's stays 1. With :func:`lr_factors`'s
    ``absorbed=True`` this trains exactly as the model with multipliers under Adam
    (abc-symmetry: multiplier ``1/θ``, init ``θ``, learning rate ``θ``; Adam's ``eps`` aside).

    Args:
      roles: The model's roles, from :func:`jaxinit.mup.roles`.
      absorbed: Whether the multipliers are folded into the weights.

    Returns:
      ``{path: std}`` in the roles' order.
    """
    absorbed = check_bool("init_std", "absorbed", absorbed)
    mult = _absorbed(roles) if absorbed else dict.fromkeys(roles, 1.0)
    return {p: mult[p] if len(r.shape) >= 2 else 0.0 for p, r in roles.items()}


def _depths(roles: Roles, depth: Mapping[str, int] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for glob, layers in (depth or {}).items():
        layers = check_int("lr_factors", f"depth[{glob!r}]", layers, 1)
        match = pattern_predicate(glob)
        if match is None:
            raise ValueError(f"lr_factors: depth key {glob!r} must be a glob pattern (a str).")
        hits = [p for p in roles if match(p, None)]
        if not hits:
            raise ValueError(
                f"lr_factors: depth key {glob!r} matches no parameter of {list(roles)[:8]}."
            )
        for p in hits:
            if p in out:
                raise ValueError(
                    f"lr_factors: parameter {p!r} is matched by two depth patterns; a parameter "
                    "belongs to one residual stack (unit_scaling's depth containers do not nest)."
                )
            out[p] = layers
    return out


def _kernel_beside(path: str, roles: Roles) -> Role | None:
    """The role of the ``kernel`` beside the ``bias`` at ``path`` (None if there is none)."""
    head, _, name = path.rpartition("/")
    if name != "bias":
        return None
    return roles.get(f"{head}/kernel" if head else "kernel")


def _fan_in(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1])


def _kernel_multiplier(role: str, shape: tuple[int, ...]) -> float:
    """The forward multiplier the kernel of ``role`` gets from :func:`dot_general`."""
    fan_in = _fan_in(shape)
    if role == "embedding" or fan_in == 0:
        return 1.0
    return multiplier("output" if role == "output" else "hidden", fan_in)


def lr_factors(
    roles: Roles,
    optimizer: Optimizer = "adam",
    *,
    depth: Mapping[str, int] | None = None,
    absorbed: bool = False,
) -> dict[str, float]:
    """The factor by which u-μP multiplies each parameter's learning rate (the rule table of
    the module docstring, ``unit_scaling.optim.lr_scale_func_adam``).

    Kernels of role input, hidden or fixed get ``1/sqrt(fan_in)``, embedding tables
    ``1/sqrt(features)``, readout kernels 1, a bias beside a kernel that kernel's forward
    multiplier (``1/sqrt(fan_in)``, or ``1/fan_in`` beside the readout), other vectors (norm
    scales) 1; then every parameter a ``depth`` pattern matches ``1/sqrt(L)`` more. Kernels
    are read in Flax's layout (fan-in axes first, the output axis last), as
    :func:`jaxinit.mup.roles` reads them.

    Args:
      roles: The model's roles, from :func:`jaxinit.mup.roles`; only each parameter's role
        and shape are used (u-μP has no base shapes).
      optimizer: ``"adam"`` or ``"adamw"`` (the same factors). ``"sgd"`` is refused: the
        library's SGD rule needs its rescaled backward pass (see the module docstring).
      depth: ``{glob: L}``: the parameters of a residual stack of ``L`` layers (the glob
        grammar of :func:`jaxinit.tree.paths`, e.g. ``{"blocks_*/**": 12}``), whose factors
        are divided by ``sqrt(L)`` (``unit_scaling.optim.lr_scale_for_depth``; ``L`` is the
        stack's length as ``unit_scaling.DepthSequential`` counts it).
      absorbed: For a plain Flax model whose weights carry the multipliers (see
        :func:`init_std`): each kernel's factor is multiplied by its forward multiplier.

    Returns:
      ``{path: factor}`` in the roles' order.

    Raises:
      ValueError: an unsupported ``optimizer``, or a ``depth`` entry that is not a glob with
        an int >= 1, matches nothing, or overlaps another.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxinit import mup
      >>> from jaxinit.recipes import umup
      >>> def shapes(width):
      ...     mlp = nn.Sequential([nn.Dense(width), nn.Dense(width), nn.Dense(10)])
      ...     return jax.eval_shape(mlp.init, jax.random.key(0), jnp.ones((1, 64)))
      >>> factors = umup.lr_factors(mup.roles(shapes(128), shapes(256), shapes(1024)))
      >>> factors["layers_0/kernel"], factors["layers_1/kernel"], factors["layers_2/kernel"]
      (0.125, 0.03125, 1.0)
      >>> factors["layers_1/bias"], factors["layers_2/bias"]
      (0.03125, 0.0009765625)
    """
    _check_choice("lr_factors", "optimizer", optimizer, OPTIMIZERS)
    absorbed = check_bool("lr_factors", "absorbed", absorbed)
    depths = _depths(roles, depth)
    mult = _absorbed(roles) if absorbed else dict.fromkeys(roles, 1.0)
    out = {}
    for path, r in roles.items():
        if len(r.shape) >= 2:
            if r.role == "output":
                f = 1.0
            elif r.role == "embedding":
                f = 1 / math.sqrt(r.shape[-1]) if r.shape[-1] else 1.0
            else:
                fan_in = _fan_in(r.shape)
                f = 1 / math.sqrt(fan_in) if fan_in else 1.0
        elif (k := _kernel_beside(path, roles)) is not None:
            f = _kernel_multiplier(k.role, k.shape)
        else:
            f = 1.0
        if path in depths:
            f /= math.sqrt(depths[path])
        out[path] = f * mult[path]
    return out


def optimizer(
    roles: Roles,
    params: Any,
    kind: Optimizer = "adam",
    *,
    learning_rate: float,
    weight_decay: float = 0.0,
    depth: Mapping[str, int] | None = None,
    absorbed: bool = False,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """An optax Adam (or AdamW) with each parameter's learning rate multiplied by its
    :func:`lr_factors`, built as :func:`jaxinit.mup.optimizer` builds its own.

    Weight decay is ``unit_scaling.optim.scaled_parameters``' default, independent of the
    learning rate: ``kind="adam"`` adds ``weight_decay / (learning_rate * factor) * w`` to the
    gradient (torch ``Adam``'s coupled L2 with the library's per-parameter rate);
    ``kind="adamw"`` subtracts ``weight_decay * w`` from each weight per step (torch ``AdamW``'s
    decoupled decay, ``lr * (weight_decay / lr)``).

    Args:
      roles: The model's roles, from :func:`jaxinit.mup.roles`.
      params: The pytree the optimizer updates (linen ``variables["params"]`` or
        ``variables``, or an NNX ``nnx.state(model, nnx.Param)``); gives the structure.
      kind: ``"adam"`` or ``"adamw"``; ``"sgd"`` is refused (see :func:`lr_factors`).
      learning_rate: The global learning rate ``η``, > 0.
      weight_decay: The library's ``weight_decay``, >= 0.
      depth: Residual stacks, as in :func:`lr_factors`.
      absorbed: For a plain Flax model whose weights carry the multipliers, as in
        :func:`lr_factors` (the coupled decay rate is then divided by the multiplier squared
        too, so that both forms follow one trajectory).
      **kwargs: Passed to ``optax.adam`` (``b1``, ``b2``, ``eps``, ...).

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: an unsupported ``kind``, a bad ``learning_rate``, ``weight_decay`` or
        ``depth``, or a parameter of ``params`` with no role.
    """
    _check_choice("optimizer", "kind", kind, OPTIMIZERS)
    learning_rate = check_number("optimizer", "learning_rate", learning_rate, positive=True)
    weight_decay = check_number("optimizer", "weight_decay", weight_decay)
    lr = lr_factors(roles, kind, depth=depth, absorbed=absorbed)
    mult = _absorbed(roles) if absorbed else dict.fromkeys(roles, 1.0)
    chain = []
    if weight_decay and kind == "adam":
        rates = {p: weight_decay / (learning_rate * f * mult[p]) for p, f in lr.items()}
        decay = _factor_tree(params, rates)

        def add_decay(updates, state, params=None):
            return jax.tree.map(lambda g, w, d: g + d * w, updates, params, decay), state

        chain.append(optax.GradientTransformation(_empty_state, add_decay))
    chain += [
        optax.adam(1.0, **kwargs),
        _scale_by_tree(_factor_tree(params, lr)),
        optax.scale(learning_rate),
    ]
    if weight_decay and kind == "adamw":

        def decoupled(updates, state, params=None):
            return jax.tree.map(lambda u, w: u - weight_decay * w, updates, params), state

        chain.append(optax.GradientTransformation(_empty_state, decoupled))
    return optax.chain(*chain)


# --------------------------------------------------------------------------------------------
# unit-scaled ops


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scale_fwd(x: jax.Array, scale: float) -> jax.Array:
    """``x * scale`` in the forward pass, the gradient unchanged (``unit_scaling.scale_fwd``)."""
    return x * scale


def _scale_fwd_fwd(x, scale):
    return x * scale, None


def _scale_fwd_bwd(scale, _, g):
    return (g,)


_scale_fwd.defvjp(_scale_fwd_fwd, _scale_fwd_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _scale_bwd(x: jax.Array, scale: float) -> jax.Array:
    """``x`` in the forward pass, the gradient times ``scale`` (``unit_scaling.scale_bwd``)."""
    return x


def _scale_bwd_fwd(x, scale):
    return x, None


def _scale_bwd_bwd(scale, _, g):
    return (g * scale,)


_scale_bwd.defvjp(_scale_bwd_fwd, _scale_bwd_bwd)


def _tau(fn: str, tau: float) -> tuple[float, float]:
    """``tau / sqrt(1 + tau^2)`` and ``1 / sqrt(1 + tau^2)``: the branch's and the skip's
    weights."""
    tau = check_number(fn, "tau", tau)
    denom = math.sqrt(1 + tau * tau)
    return tau / denom, 1 / denom


def residual_split(x: jax.Array, tau: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """The two inputs of a τ-weighted residual block, ``(residual, skip)``, both equal to ``x``
    (``unit_scaling.functional.residual_split``); use with :func:`residual_add`.

    Only the backward pass differs: the gradient reaching ``x`` through the branch is
    multiplied by ``tau / sqrt(1 + tau^2)`` and through the skip by ``1 / sqrt(1 + tau^2)``.
    With :func:`residual_add`, which scales the forward pass but passes gradients unchanged,
    the gradient with respect to ``x`` is exact, while the branch's own parameters see the
    gradient at unit scale (the true one times ``sqrt(1 + tau^2) / tau``), as in the library.

    Args:
      x: The block's input.
      tau: The branch's weight relative to the skip, finite and >= 0.

    Returns:
      ``(residual, skip)``: feed ``residual`` to the branch.

    Raises:
      ValueError: a ``tau`` that is not a finite number >= 0.
    """
    branch, skip = _tau("residual_split", tau)
    return _scale_bwd(x, branch), _scale_bwd(x, skip)


def residual_add(residual: jax.Array, skip: jax.Array, tau: float = 1.0) -> jax.Array:
    """``(tau * residual + skip) / sqrt(1 + tau^2)`` (``unit_scaling.functional.residual_add``):
    for independent unit-variance inputs the sum has unit variance whatever ``tau``.

    The scaling is forward only: the gradients reaching ``residual`` and ``skip`` are the
    output's gradient, unscaled; :func:`residual_split` applies the backward scales.

    Args:
      residual: The branch's output.
      skip: The skip connection (the ``skip`` of :func:`residual_split`).
      tau: The branch's weight relative to the skip, finite and >= 0; the ``tau`` given to
        :func:`residual_split`.

    Returns:
      The block's output.

    Raises:
      ValueError: a ``tau`` that is not a finite number >= 0.

    Example:
      >>> import numpy as np
      >>> from jaxinit.recipes import umup
      >>> x, w = np.random.default_rng(0).standard_normal((2, 4096, 256), np.float32)
      >>> branch, skip = umup.residual_split(x, tau=0.5)
      >>> y = umup.residual_add(branch @ w[:256] / 16, skip, tau=0.5)  # a unit-scaled Dense
      >>> y.shape, bool(abs(y.std() - 1) < 0.02)
      ((4096, 256), True)
    """
    branch, scale = _tau("residual_add", tau)
    out: jax.Array = _scale_fwd(residual, branch) + _scale_fwd(skip, scale)  # pyright: ignore[reportOperatorIssue]
    return out


def residual_tau(
    index: int, layers: int, *, residual_mult: float = 1.0, residual_attn_ratio: float = 1.0
) -> float:
    """The τ of residual branch ``index`` out of ``layers`` under u-μP's depth rule for a
    transformer (``unit_scaling.core.functional.transformer_residual_scaling_rule``, the
    paper's Appendix G).

    Branches alternate attention (even ``index``) and MLP (odd), ``layers`` being their total
    (twice the number of transformer blocks). In the final residual stream every attention
    branch then contributes the same variance, as does every MLP branch; all attention and all
    MLP branches together contribute ``residual_attn_ratio**2`` to one, and their mean
    contributes ``residual_mult**2`` times the embedding's. With both 1 (the defaults), the
    embedding, the attention branches and the MLP branches each contribute a third.

    Args:
      index: The branch's position, 0-based, < ``layers``.
      layers: The number of residual branches, >= 1.
      residual_mult: The branches' weight relative to the embedding, finite and > 0.
      residual_attn_ratio: The attention branches' weight relative to the MLP ones, finite
        and > 0.

    Returns:
      τ for :func:`residual_split` / :func:`residual_add` of that branch.

    Raises:
      ValueError: an ``index`` or ``layers`` that is not an int in range, or a non-positive
        multiplier.

    Example:
      >>> from jaxinit.recipes import umup
      >>> [round(umup.residual_tau(i, 4), 4) for i in range(4)]
      [0.7071, 0.5774, 0.5, 0.4472]
    """
    layers = check_int("residual_tau", "layers", layers, 1)
    index = check_int("residual_tau", "index", index, 0, layers - 1)
    mult = check_number("residual_tau", "residual_mult", residual_mult, positive=True)
    ratio = check_number("residual_tau", "residual_attn_ratio", residual_attn_ratio, positive=True)
    alpha_mlp = mult * math.sqrt(2 / (1 + ratio**2))
    alpha_attn = ratio * alpha_mlp
    n_attn, n_mlp = (index + 1) // 2, index // 2
    alpha = alpha_attn if index % 2 == 0 else alpha_mlp
    return alpha / math.sqrt(layers / 2 + n_attn * alpha_attn**2 + n_mlp * alpha_mlp**2)


def _log_interpolation(alpha: float, lower: float, upper: float) -> float:
    """``lower^(1 - alpha) * upper^alpha`` (``unit_scaling.core.functional``)."""
    return math.exp(alpha * math.log(upper) + (1 - alpha) * math.log(lower))


# The relu limit of gelu and silu (mult -> inf): 1 / std(relu(z)), z ~ N(0, 1).
_RELU_SCALE = math.sqrt(2 / (1 - 1 / math.pi))


def _activation_scale(fn: str, mult: float) -> float:
    mult = check_number(fn, "mult", mult, positive=True)
    return _log_interpolation(1 / (1 + 0.25 / mult**2), 2.0, _RELU_SCALE)


def gelu(x: jax.Array, mult: float = 1.0, *, approximate: bool = False) -> jax.Array:
    """Unit-scaled GELU (``unit_scaling.functional.gelu``, its default constraint
    ``to_output_scale``): ``s(mult) * gelu(mult * x) / mult``.

    ``s`` is the library's empirical model of ``1 / std`` of the output for ``x ~ N(0, 1)``:
    ``s = 2^(1 - a) * sqrt(2 / (1 - 1/pi))^a`` with ``a = 1 / (1 + 0.25 / mult^2)``, exact in
    both limits (``mult -> 0``: ``x``; ``mult -> inf``: the unit-std ReLU). The gradient is
    the true one (the constraint applies the output scale to the backward pass too).

    Unit *std* is not unit mean square: at ``mult=1`` the output has std 1.04 but mean 0.50,
    so mean square 1.33, and a Dense layer after it (multiplier ``1/sqrt(fan_in)``) outputs
    variance 1.33. Without normalization the scale of a plain stack grows through depth.

    Args:
      x: The input.
      mult: The library's ``mult``, the sharpness of the kink, finite and > 0.
      approximate: The tanh approximation; False (the exact erf form) matches torch's
        default.

    Returns:
      An array like ``x``.

    Raises:
      ValueError: a ``mult`` that is not a finite number > 0.
    """
    scale = _activation_scale("gelu", mult)
    y = (
        jax.nn.gelu(x * mult, approximate=approximate) / mult
        if mult != 1
        else jax.nn.gelu(x, approximate=approximate)
    )
    return y * scale


def silu(x: jax.Array, mult: float = 1.0) -> jax.Array:
    """Unit-scaled SiLU (``unit_scaling.functional.silu``, constraint ``to_output_scale``):
    ``s(mult) * x * sigmoid(mult * x)``, with the output scale ``s`` of :func:`gelu` (the
    library uses the same model for both).

    Args:
      x: The input.
      mult: The library's ``mult``, finite and > 0.

    Returns:
      An array like ``x``.

    Raises:
      ValueError: a ``mult`` that is not a finite number > 0.
    """
    scale = _activation_scale("silu", mult)
    return x * jax.nn.sigmoid(x * mult) * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy(logits: jax.Array, labels: jax.Array, mult: float) -> jax.Array:
    return _cross_entropy_fwd(logits, labels, mult)[0]


def _cross_entropy_fwd(logits, labels, mult):
    logp = jax.nn.log_softmax(logits * mult, axis=-1)
    picked = jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return -jnp.mean(picked), (jnp.exp(logp), labels)


def _cross_entropy_bwd(mult, res, g):
    probs, labels = res
    vocab = probs.shape[-1]
    onehot = jax.nn.one_hot(labels, vocab, dtype=probs.dtype)
    scale = vocab / math.sqrt(vocab - 1)
    return (g * scale * (probs - onehot)).astype(probs.dtype), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike, *, mult: float = 1.0) -> jax.Array:
    """Unit-scaled softmax cross-entropy (``unit_scaling.functional.cross_entropy``, mean
    reduction): the value is the usual mean cross-entropy of ``mult * logits``; the gradient
    with respect to ``logits`` is ``V / sqrt(V - 1) * (softmax(mult * logits) - onehot)`` for
    ``V`` classes, neither divided by the batch size nor multiplied by ``mult``, so that it has
    unit scale (its mean square over classes is exactly 1 at uniform logits).

    Args:
      logits: Array ``(..., V)``, ``V >= 2``.
      labels: Integer class indices, shape ``logits.shape[:-1]``.
      mult: The library's ``mult`` on the logits, finite and > 0.

    Returns:
      The mean loss, a scalar.

    Raises:
      ValueError: ``V < 2``, ``labels`` of the wrong shape or not integers, or a bad
        ``mult``.
    """
    mult = check_number("softmax_cross_entropy", "mult", mult, positive=True)
    shape, lshape = np.shape(logits), np.shape(labels)
    if len(shape) < 1 or shape[-1] < 2:
        raise ValueError(
            f"softmax_cross_entropy: logits of shape {shape} need a last axis of >= 2 classes."
        )
    if lshape != shape[:-1] or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"softmax_cross_entropy: labels of shape {lshape} and dtype "
            f"{jnp.result_type(labels)} must be integers of shape {shape[:-1]} (logits' shape "
            "without its class axis)."
        )
    return _cross_entropy(jnp.asarray(logits), jnp.asarray(labels), mult)


__all__ = [
    "LAYER_ROLES",
    "OPTIMIZERS",
    "conv_general_dilated",
    "dot_general",
    "gelu",
    "init",
    "init_std",
    "lr_factors",
    "multiplier",
    "optimizer",
    "residual_add",
    "residual_split",
    "residual_tau",
    "silu",
    "softmax_cross_entropy",
]
