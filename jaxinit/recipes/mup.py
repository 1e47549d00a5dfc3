"""Width parametrizations: parameter roles, and SP / μP as init, learning-rate and weight-decay
factors per role.

A parametrization says how each parameter's initialization and learning rate scale with
width, so that hyperparameters tuned on a narrow proxy transfer to a wide model (Tensor
Programs V, Yang et al. 2022). It needs to know, for each parameter, which of its dimensions
grow with width: :func:`roles` finds them by comparing the abstract shapes of a base and a
delta model (as ``mup.set_base_shapes`` does), or takes them from path patterns.

Roles, for a parameter whose target width is ``m`` times its base width along its infinite
dimensions (``m_in`` along its fan-in, ``m_out`` along its fan-out):

============  ==========================================  =====================
role          which dimensions grow                        example
============  ==========================================  =====================
input         fan-out only                                 first Dense kernel
embedding     fan-out only, named ``embedding``            ``nn.Embed``
hidden        fan-in and fan-out                           inner Dense/Conv
output        fan-in only                                  readout kernel
vector        the one axis of a 1-D parameter              bias, norm scale
fixed         none                                         readout bias
============  ==========================================  =====================

μP here is microsoft/mup's (``MuReadout``, ``MuSGD``, ``MuAdam``), with the readout's forward
multiplier ``1/m_in`` folded into its kernel: ``W (x / m) = (W / m) x``. Training ``W / m``
with the learning rate scaled by ``1/m`` (SGD: the gradient is ``m`` times larger and the
step must be ``1/m`` as large, so ``m * (1/m²)``; Adam: scale-free in the gradient, so
``1/m``) follows the same trajectory as mup's readout, so a plain Flax ``Dense`` serves as the
readout and :func:`jaxinit.measure` sees the output mup sees. The factors (multiply the
standard parametrization's init and learning rate), from ``mup/layer.py``, ``mup/optim.py``
and ``mup/shape.py``:

============  ===============  ===================  ===========  ===================
role          init             SGD learning rate     Adam l.r.    coupled weight decay
============  ===============  ===================  ===========  ===================
input         1                ``m_out``             1            1 / (l.r. factor)
embedding     1                ``m_out``             1            1 / (l.r. factor)
hidden        1                ``m_out / m_in``      ``1/m_in``   1 / (l.r. factor)
output        ``1/sqrt(m_in)`` ``1/m_in``            ``1/m_in``   1 / (l.r. factor)
vector        1 (bias: below) ``m_out``             1            1 / (l.r. factor)
fixed         1                1                     1            1
============  ===============  ===================  ===========  ===================

The bias of a layer whose kernel has a growing fan-in (the readout's included) is multiplied
by ``sqrt(m_in)`` of that kernel (``mup.layer.rescale_linear_bias``, ``MuReadout``), so its
variance stays that of the base model (a zero bias stays zero). The readout's bias is
``fixed``: its learning rate is not scaled. At base width every factor is 1, so μP
reproduces SP bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import tree
from .._checks import check_bool, check_int, check_number
from .._flax import adapter as fa
from .._flax.attention import flax_attention_fn

ROLES = ("input", "embedding", "hidden", "output", "vector", "fixed")
PARAMETRIZATIONS = ("sp", "mup", "completep")
OPTIMIZERS = ("sgd", "adam")


class Role(NamedTuple):
    """One parameter's role and how much its dimensions grew.

    Attributes:
      path: the parameter's path (as :func:`jaxinit.tree.paths` names it).
      role: one of :data:`ROLES`.
      shape, base_shape: the target's and the base model's shapes.
      infinite: per axis, whether it grows with width.
      m_in, m_out: width multipliers along the fan-in (all axes but the last) and the fan-out
        (the last axis); 1 where nothing grows.
      block: whether the parameter lies inside a residual branch (CompleteP scales those).
      m_depth: the depth multiplier ``L / L_base`` of the model (1 at the base depth).
    """

    path: str
    role: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    infinite: tuple[bool, ...]
    m_in: float
    m_out: float
    block: bool = False
    m_depth: float = 1.0

    @property
    def width_mult(self) -> float:
        """mup's ``width_mult``: the multiplier of the last growing axis (the fan-in of a
        hidden kernel, the only growing axis otherwise)."""
        if self.role in ("hidden", "output"):
            return self.m_in
        return self.m_out


class Roles(Mapping[str, Role]):
    """Roles by parameter path, in the target's path order; ``str(roles)`` is a table."""

    def __init__(self, roles: Sequence[Role]):
        self._roles = {r.path: r for r in roles}

    def __getitem__(self, path: str) -> Role:
        return self._roles[path]

    def __iter__(self):
        return iter(self._roles)

    def __len__(self) -> int:
        return len(self._roles)

    def table(self, parametrization: str = "mup", optimizer: str = "sgd") -> str:
        """A plain-text table: path, role, shape, base shape, multipliers, and the
        ``parametrization``'s init and learning-rate factors for ``optimizer``."""
        init = init_factors(self, parametrization)
        lr = lr_factors(self, parametrization, optimizer)
        head = ("path", "role", "shape", "base", "m_in", "m_out", "init x", f"{optimizer} lr x")
        rows = [
            (
                r.path,
                r.role,
                "x".join(map(str, r.shape)),
                "x".join(map(str, r.base_shape)),
                f"{r.m_in:g}",
                f"{r.m_out:g}",
                f"{init[r.path]:.4g}",
                f"{lr[r.path]:.4g}",
            )
            for r in self.values()
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
            for line in [head, *rows]
        ]
        return "\n".join(s.rstrip() for s in lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Roles({len(self)} parameters: {[r.role for r in self.values()]})"


def _shapes(target: Any) -> dict[str, tuple[int, ...]]:
    return {p: tuple(np.shape(w)) for p, w in tree.get(target, tree.paths(target)).items()}


def _role_of(path: str, infinite: tuple[bool, ...]) -> str:
    if not any(infinite):
        return "fixed"
    if len(infinite) == 1:
        return "vector"
    grows_in, grows_out = any(infinite[:-1]), infinite[-1]
    if grows_in and grows_out:
        return "hidden"
    if grows_in:
        return "output"
    return "embedding" if path.rsplit("/", 1)[-1] == "embedding" else "input"


def _mult(shape, base, axes) -> float:
    return float(math.prod(shape[a] for a in axes) / math.prod(base[a] for a in axes))


def roles(
    base: Any,
    delta: Any,
    target: Any | None = None,
    *,
    patterns: Mapping[str, str] | None = None,
    blocks: str | Sequence[str] | None = None,
    depth_mult: float = 1.0,
) -> Roles:
    """Each parameter's role, from which of its axes differ between ``base`` and ``delta``.

    Args:
      base: the base model's parameters, as :mod:`jaxinit.tree` takes them (linen variables or
        an NNX model); abstract ones (``jax.eval_shape(module.init, ...)``,
        ``nnx.eval_shape(...)``) cost nothing.
      delta: the same model at another width: an axis whose size differs grows with width.
      target: the model being parametrized (default ``base``): multipliers are its sizes over
        the base's.
      patterns: ``{glob: role}`` overriding the inferred role of the parameters a glob
        matches (the grammar of :func:`jaxinit.tree.paths`), for layouts the shapes do not
        decide (a readout whose output size also grows, an attention kernel with a head axis).
      blocks: glob(s) of the parameters inside residual branches (``"block_*/**"``), which
        CompleteP's depth rules scale.
      depth_mult: the target's depth over the base depth, ``L / L_base`` (CompleteP).

    Kernels are taken in Flax's layout, fan-in axes first and the fan-out axis last (Dense
    ``(in, out)``, Conv ``(*spatial, in, out)``, Embed ``(vocab, features)``).
    """
    target = base if target is None else target
    assert target is not None  # base is a parameter tree
    depth_mult = check_number("roles", "depth_mult", depth_mult, positive=True)
    in_block: set[str] = set()
    for glob in [blocks] if isinstance(blocks, str) else list(blocks or ()):
        try:
            in_block.update(tree.paths(target, glob))
        except ValueError as err:
            raise ValueError(f"roles: blocks glob {glob!r} matches no parameter.") from err
    b, d, t = _shapes(base), _shapes(delta), _shapes(target)
    for name, other in (("delta", d), ("target", t)):
        if set(other) != set(b):
            extra = sorted(set(other) ^ set(b))[:5]
            raise ValueError(
                f"roles: {name} has different parameters from base (paths {extra} are in one "
                "only); pass the same model at another width."
            )
    overrides: dict[str, str] = {}
    for glob, role in (patterns or {}).items():
        if role not in ROLES:
            raise ValueError(f"roles: patterns[{glob!r}]={role!r}; a role is one of {ROLES}.")
        try:
            matched = tree.paths(target, glob)
        except ValueError as err:  # matches nothing
            raise ValueError(
                f"roles: patterns key {glob!r} matches no parameter of {list(t)}."
            ) from err
        overrides.update(dict.fromkeys(matched, role))
    out = []
    for path, shape in t.items():
        bs, ds = b[path], d[path]
        if len(bs) != len(ds) or len(shape) != len(bs):
            raise ValueError(
                f"roles: parameter {path!r} has shapes {bs} (base), {ds} (delta) and {shape} "
                "(target); the same number of axes is needed."
            )
        infinite = tuple(x != y for x, y in zip(bs, ds, strict=False))
        role = overrides.get(path) or _role_of(path, infinite)
        if sum(infinite) > 2 and path not in overrides:
            raise ValueError(
                f"roles: parameter {path!r} grows along {sum(infinite)} axes {bs} -> {ds}; "
                "give its role with patterns={...}."
            )
        in_axes = [a for a in range(len(shape) - 1) if infinite[a]]
        out_axes = [len(shape) - 1] if infinite and infinite[-1] else []
        if len(shape) == 1:
            in_axes, out_axes = [], [0] if infinite[0] else []
        out.append(
            Role(
                path,
                role,
                shape,
                bs,
                infinite,
                _mult(shape, bs, in_axes),
                _mult(shape, bs, out_axes),
                path in in_block,
                depth_mult,
            )
        )
    return Roles(out)


def branch_multiplier(depth_mult: float, alpha: float = 1.0) -> float:
    """CompleteP's residual-branch multiplier ``depth_mult ** -alpha``: a block computes
    ``x + branch_multiplier(L / L_base, alpha) * f(x)``. With ``L_base = 1`` it is the paper's
    ``L^-alpha``; at the base depth it is 1 (SP's plain residual add).

    Args:
      depth_mult: the depth over the base depth, ``L / L_base``.
      alpha: the depth exponent: 1 (CompleteP), 0.5 (depth-μP), 0 (no scaling).
    """
    depth_mult = check_number("branch_multiplier", "depth_mult", depth_mult, positive=True)
    alpha = _check_alpha("branch_multiplier", alpha)
    return float(depth_mult**-alpha)


def _check_alpha(fn: str, alpha: float) -> float:
    alpha = check_number(fn, "alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{fn}: alpha={alpha!r}; a depth exponent in [0, 1] is accepted.")
    return alpha


def _check(parametrization: str, optimizer: str | None = None) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization={parametrization!r}; one of {PARAMETRIZATIONS} is accepted."
        )
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}; one of {OPTIMIZERS} is accepted.")


def _kernel_of(path: str, roles: Roles) -> Role | None:
    """The role of the kernel beside the bias at ``path`` (None if there is none)."""
    head, _, last = path.rpartition("/")
    if last != "bias":
        return None
    return roles.get(f"{head}/kernel" if head else "kernel")  # a bare Dense: "bias", "kernel"


def init_factors(roles: Roles, parametrization: str = "mup") -> dict[str, float]:
    """The factor by which each parameter's standard (SP) initialization is multiplied."""
    _check(parametrization)
    out = {}
    for r in roles.values():
        f = 1.0
        if parametrization in ("mup", "completep"):
            if r.role == "output":
                f = 1 / math.sqrt(r.m_in)
            elif (k := _kernel_of(r.path, roles)) is not None:  # a bias: constant variance
                f = math.sqrt(k.m_in)
        out[r.path] = f
    return out


def lr_factors(
    roles: Roles, parametrization: str = "mup", optimizer: str = "sgd", *, alpha: float = 1.0
) -> dict[str, float]:
    """The factor by which each parameter's learning rate is multiplied; CompleteP multiplies
    μP's by ``m_depth ** (alpha - 1)`` (Adam) or ``m_depth ** (2 alpha - 1)`` (SGD) inside the
    residual branches."""
    _check(parametrization, optimizer)
    alpha = _check_alpha("lr_factors", alpha)
    out = {}
    for r in roles.values():
        f = 1.0
        if parametrization in ("mup", "completep"):
            if r.role in ("input", "embedding"):
                f = r.m_out if optimizer == "sgd" else 1.0
            elif r.role == "hidden":
                f = r.m_out / r.m_in if optimizer == "sgd" else 1 / r.m_in
            elif r.role == "output":
                f = 1 / r.m_in
            elif r.role == "vector":
                f = r.m_out if optimizer == "sgd" else 1.0
        if parametrization == "completep" and r.block:
            f *= r.m_depth ** ((2 * alpha - 1) if optimizer == "sgd" else (alpha - 1))
        out[r.path] = f
    return out


def eps_factors(
    roles: Roles, parametrization: str = "mup", *, alpha: float = 1.0
) -> dict[str, float]:
    """The factor by which each parameter's Adam ε is multiplied. SP and μP (as
    microsoft/mup's ``MuAdam``) leave ε alone; CompleteP scales it by ``1 / width_mult`` and,
    inside the residual branches, by ``m_depth ** -alpha`` (Dey et al. 2025, eq. 40; nanoGPT-mup
    ``configure_optimizers``), so ε stays below the shrinking gradients."""
    _check(parametrization)
    alpha = _check_alpha("eps_factors", alpha)
    out = {}
    for r in roles.values():
        f = 1.0
        if parametrization == "completep" and r.role != "fixed":
            f = 1 / r.width_mult
            if r.block:
                f *= r.m_depth**-alpha
        out[r.path] = f
    return out


def parametrize(
    target: Any,
    roles: Roles,
    parametrization: str = "mup",
    *,
    readout_zero_init: bool = False,
) -> Any:
    """``target`` (initialized in the standard parametrization) with each parameter multiplied
    by its :func:`init_factors`; with ``readout_zero_init``, the output kernels and their
    biases zeroed. Linen variables: returns new ones; NNX model: edited in place (returns
    None), as :mod:`jaxinit.tree` does."""
    factors = init_factors(roles, parametrization)
    scaled = {p: f for p, f in factors.items() if f != 1.0}
    out = target
    if scaled:
        res = tree.scale(out, list(scaled), scaled)
        out = out if res is None else res
    if readout_zero_init:
        readout = [r.path for r in roles.values() if r.role == "output"]
        readout += [p for p in roles if (k := _kernel_of(p, roles)) and k.role == "output"]
        if not readout:
            raise ValueError("parametrize: readout_zero_init=True but no parameter is an output.")
        res = tree.zero(out, readout)
        out = out if res is None else res
    return out if isinstance(target, Mapping) else None


def _empty_state(params: Any) -> optax.EmptyState:
    return optax.EmptyState()


def _scale_by_tree(factors: Any) -> optax.GradientTransformation:
    def update(updates, state, params=None):
        return jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors), state

    return optax.GradientTransformation(_empty_state, update)


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _factor_tree(params: Any, factors: Mapping[str, float]) -> Any:
    """``params``' structure with each leaf replaced by its path's factor. ``params`` is what
    the loss is differentiated with respect to: linen ``variables`` or ``variables["params"]``,
    or an NNX ``nnx.State`` of parameters."""

    def factor(path, _):
        names = [_key_name(k) for k in path]
        for start in range(len(names)):  # tolerate a leading collection name ("params")
            for end in (len(names), len(names) - 1):  # and a trailing "value" (NNX)
                p = "/".join(names[start:end])
                if p in factors:
                    return factors[p]
        raise ValueError(
            f"optimizer: parameter {'/'.join(names)!r} has no role; the roles were found for "
            f"{list(factors)[:6]}... Build the roles from this model."
        )

    return jax.tree_util.tree_map_with_path(factor, params)


def optimizer(
    roles: Roles,
    params: Any,
    parametrization: str = "mup",
    kind: str = "sgd",
    *,
    learning_rate: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    alpha: float = 1.0,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """An optax optimizer (``kind``: SGD or Adam) with each parameter's learning rate multiplied
    by its :func:`lr_factors` and, for Adam, its ε by its :func:`eps_factors`.

    Args:
      roles: the parameters' roles (:func:`roles`).
      params: gives the pytree structure: an NNX model's ``nnx.state(model, nnx.Param)``, or
        linen ``variables["params"]``.
      parametrization: ``"sp"``, ``"mup"`` or ``"completep"``.
      kind: ``"sgd"`` or ``"adam"``.
      learning_rate: the base learning rate.
      weight_decay: the base weight-decay rate. Coupled (the default, as ``torch.optim`` and
        mup's ``MuSGD``/``MuAdam``): ``wd * w`` is added to the gradient, with ``wd`` divided by
        the parameter's learning-rate factor. Decoupled (AdamW): ``wd * w`` is added to the
        update, with ``wd`` divided by the width part of the factor only, so ``lr * wd`` keeps
        CompleteP's depth factor (nanoGPT-mup's ``weight_decay / width_lr_scaling``).
      decoupled_weight_decay: whether the decay is decoupled (AdamW) rather than coupled.
      alpha: CompleteP's depth exponent.
      **kwargs: passed to ``optax.sgd``/``optax.adam`` (``momentum``, ``b1``, ``eps``, ...).

    Adam's ε is a single number in optax; a parameter's ε is multiplied by ``c`` exactly by
    dividing its gradient by ``c`` before Adam, since ``(m/c) / (sqrt(v/c^2) + eps) =
    m / (sqrt(v) + c eps)``.
    """
    _check(parametrization, kind)
    learning_rate = check_number("optimizer", "learning_rate", learning_rate, positive=True)
    weight_decay = check_number("optimizer", "weight_decay", weight_decay)
    decoupled_weight_decay = check_bool(
        "optimizer", "decoupled_weight_decay", decoupled_weight_decay
    )
    alpha = _check_alpha("optimizer", alpha)
    lr = lr_factors(roles, parametrization, kind, alpha=alpha)
    eps = eps_factors(roles, parametrization, alpha=alpha) if kind == "adam" else {}
    rescaled_eps = {p: f for p, f in eps.items() if f != 1.0}
    chain = []
    if weight_decay and not decoupled_weight_decay:
        chain.append(_add_decay(_factor_tree(params, {p: weight_decay / f for p, f in lr.items()})))
    if rescaled_eps:
        chain.append(_scale_by_tree(_factor_tree(params, {p: 1 / eps.get(p, 1.0) for p in lr})))
    chain.append(optax.sgd(1.0, **kwargs) if kind == "sgd" else optax.adam(1.0, **kwargs))
    if weight_decay and decoupled_weight_decay:
        # optax's transforms above end with a -1 (descent); the decay must point the same way
        width = lr_factors(roles, parametrization, kind, alpha=1.0)
        chain.append(
            _add_decay(_factor_tree(params, {p: -weight_decay / f for p, f in width.items()}))
        )
    chain += [_scale_by_tree(_factor_tree(params, lr)), optax.scale(learning_rate)]
    return optax.chain(*chain)


def _add_decay(decay: Any) -> optax.GradientTransformation:
    def update(updates, state, params=None):
        if params is None:
            raise ValueError(
                "optimizer: weight decay needs params in update(grads, state, params)."
            )
        return jax.tree.map(lambda g, w, d: g + d * w, updates, params, decay), state

    return optax.GradientTransformation(_empty_state, update)


def _head_scale(query: jax.Array, base_head_dim: int | None) -> jax.Array:
    """The factor that turns Flax's ``1/sqrt(d)`` logit scale into μP's ``sqrt(d_base)/d``."""
    d = query.shape[-1]
    base = 1 if base_head_dim is None else base_head_dim
    return jnp.asarray(math.sqrt(base) / math.sqrt(d), query.dtype)


def _check_head_dim(fn: str, base_head_dim: int | None) -> int | None:
    return None if base_head_dim is None else check_int(fn, "base_head_dim", base_head_dim, 1)


def attention_scale(head_dim: int, base_head_dim: int | None = None) -> float:
    """μP's attention-logit multiplier: ``sqrt(base_head_dim) / head_dim`` (``1 / head_dim``
    with no base), in place of the standard ``1 / sqrt(head_dim)``.

    Under μP the query and key of a wide head become correlated during training, so their dot
    product grows like ``d`` rather than ``sqrt(d)``; scaling by ``1/d`` keeps the logits
    ``O(1)`` (Tensor Programs V, section 3; ``mup``'s ``attn_mult / d`` in its examples). With
    ``base_head_dim`` the factor equals ``1/sqrt(d)`` at the base width, so μP reproduces SP
    there.
    """
    head_dim = check_int("attention_scale", "head_dim", head_dim, 1)
    base = _check_head_dim("attention_scale", base_head_dim)
    return (math.sqrt(base) if base is not None else 1.0) / head_dim


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    base_head_dim: int | None = None,
    **kwargs: Any,
) -> jax.Array:
    """Flax's ``dot_product_attention`` with μP's logit scale :func:`attention_scale` instead
    of ``1/sqrt(d)``: the query is multiplied by ``sqrt(d) * attention_scale(d)`` before
    Flax's own ``1/sqrt(d)``. Every other argument (mask, bias, dropout, dtype, ``module``)
    goes to ``flax.nnx.dot_product_attention`` unchanged. Arrays are ``[..., length, heads,
    head_dim]`` as in Flax."""
    base = _check_head_dim("dot_product_attention", base_head_dim)
    query = query * _head_scale(query, base)
    return fa.dot_product_attention(query, key, value, linen=False, **kwargs)


def attention_fn(base_head_dim: int | None = None) -> Callable[..., jax.Array]:
    """An ``attention_fn`` for ``nnx.MultiHeadAttention`` and ``nn.MultiHeadDotProductAttention``
    with μP's logit scale ``sqrt(base_head_dim) / head_dim`` (see :func:`attention_scale`).

    The query is multiplied by ``sqrt(d) * attention_scale(d)`` and handed to the calling
    module's own Flax function (linen's or NNX's, which round differently), so at the base
    head dimension the module's output is its default's, bit for bit. The function names every
    keyword argument those modules pass (linen keeps only the ones the signature names), so
    masks, dropout and dtype reach Flax.

    Args:
      base_head_dim: the head dimension at the base width, where the scale is the standard
        ``1/sqrt(head_dim)``; None gives ``1/head_dim``.

    Example::

        attn = nnx.MultiHeadAttention(
            num_heads=4, in_features=256, decode=False, rngs=rngs,
            attention_fn=jaxinit.mup.attention_fn(base_head_dim=16),
        )
    """
    base = _check_head_dim("attention_fn", base_head_dim)

    def call(query: jax.Array, key: jax.Array, value: jax.Array, linen: bool, **kw: Any):
        query = query * _head_scale(query, base)
        return fa.dot_product_attention(query, key, value, linen=linen, **kw)

    return flax_attention_fn(call, linen_if_module=False)


__all__ = [
    "OPTIMIZERS",
    "PARAMETRIZATIONS",
    "ROLES",
    "Role",
    "Roles",
    "attention_fn",
    "attention_scale",
    "branch_multiplier",
    "dot_product_attention",
    "eps_factors",
    "init_factors",
    "lr_factors",
    "optimizer",
    "parametrize",
    "roles",
]
