"""Variance scaling and its named cases: LeCun, Glorot/Xavier, He/Kaiming, PyTorch's default."""

from __future__ import annotations

import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from ._base import (
    Init,
    check_reach,
    clip_into,
    factory,
    largest,
    normal_reach,
    random_normal,
    random_uniform,
    real_dtype,
    sample_dtype,
)
from ._checks import check_finite, short
from ._fans import fans_of
from ._types import Activation, Axes, Initializer
from .basic import complex_truncated_std, draw_truncated, truncated_moments
from .gains import gain_for

Mode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]
_MODES = get_args(Mode)
_DISTRIBUTIONS = get_args(Distribution)
_CUT = 2.0  # truncated_normal cuts at +-2 standard deviations, as jax and PyTorch do


def _fan(mode: str, fan_in: int, fan_out: int) -> float:
    return {
        "fan_in": fan_in,
        "fan_out": fan_out,
        "fan_avg": (fan_in + fan_out) / 2,
        "fan_geo_avg": math.sqrt(fan_in * fan_out),
    }[mode]


def _check_axes(name: str, axes: Axes, arg: str) -> Axes:
    def is_int(a: object) -> bool:
        return isinstance(a, int | np.integer) and not isinstance(a, bool)

    message = f"{name}: {arg}={axes!r} must be an int or a tuple of ints."
    if isinstance(axes, bool):
        raise TypeError(message)
    if isinstance(axes, int | np.integer):
        return int(axes)
    try:
        seq = tuple(axes)
        ok = all(is_int(a) for a in seq)
    except TypeError:
        seq, ok = (), False
    if not ok:
        raise TypeError(message)
    out = tuple(int(a) for a in seq)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: {arg}={axes!r} repeats an axis; each axis can have one role.")
    return out


def _check_roles(name: str, **roles: Axes) -> None:
    """Axes given literally in two roles (e.g. ``in_axis=0, out_axis=0``) fail in the factory;
    overlaps that depend on the rank (``0`` and ``-2``) are caught when the shape is known."""
    seen: dict[int, str] = {}
    for role, axes in roles.items():
        for a in (axes,) if isinstance(axes, int) else axes:
            if a in seen:
                raise ValueError(
                    f"{name}: axis {a} is both {seen[a]} and {role} ("
                    + ", ".join(f"{r}={v!r}" for r, v in roles.items())
                    + "); each axis can have one role."
                )
            seen[a] = role


@factory
def variance_scaling(
    scale: float,
    mode: Mode = "fan_in",
    distribution: Distribution = "normal",
    *,
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
    _name: str = "variance_scaling",
    _arg: tuple[str, object, float] | None = None,
) -> Initializer:
    """Zero-mean weights with variance exactly ``scale / fan``.

    ``fan`` is ``fan_in``, ``fan_out``, ``(fan_in + fan_out) / 2`` or ``sqrt(fan_in *
    fan_out)`` as ``mode`` says, computed by :func:`compute_fans` from the shape and axes.

    * ``"normal"``: ``N(0, scale / fan)``, untruncated.
    * ``"truncated_normal"``: a normal cut at +-2 of its own standard deviation and rescaled
      (by 1 / 0.8796256610) so that the variance after the cut is exactly ``scale / fan``.
    * ``"uniform"``: ``U(-b, b)`` with ``b = sqrt(3 scale / fan)``.

    Complex dtypes get circular draws with ``E|w|^2 = scale / fan`` (uniform: uniform on the
    disk of radius ``sqrt(2 scale / fan)``; truncated: ``|w|`` cut at 2 standard deviations).
    bfloat16/float16 are drawn in float32 and cast; a ``scale`` whose draws could exceed the
    dtype's largest finite value for the shape's fan (``5.42 sqrt(scale / fan)`` for the normal,
    ``sqrt(3 scale / fan)`` for the uniform, ``2.27 sqrt(scale / fan)`` truncated) is refused
    with a ValueError when the initializer is called, not cast to inf. Variance law:
    ``init.variance(fan_in, fan_out) == scale / fan`` (also for every named case below: He,
    Glorot, LeCun, PyTorch's default).

    Args:
      scale: Variance multiplier, finite and > 0 (e.g. ``gain**2``).
      mode: One of ``"fan_in"``, ``"fan_out"``, ``"fan_avg"``, ``"fan_geo_avg"``.
      distribution: One of ``"normal"``, ``"truncated_normal"``, ``"uniform"``.
      in_axis: Axis or axes of input features (Flax kernels: ``-2``).
      out_axis: Axis or axes of output features (Flax kernels: ``-1``).
      batch_axis: Axes of independent copies, in neither fan.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> init = jaxinit.variance_scaling(2.0, "fan_in", "truncated_normal")
      >>> w = init(jax.random.key(0), (3, 3, 64, 128))
      >>> w.shape, bool(abs(w.var() / (2 / 576) - 1) < 0.02)
      ((3, 3, 64, 128), True)
    """
    scale = check_finite(_name, "scale", scale, positive=True)
    if mode not in _MODES:
        raise ValueError(f"{_name}: mode={mode!r} is not supported; use one of {_MODES}.")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(
            f"{_name}: distribution={distribution!r} is not supported; use one of {_DISTRIBUTIONS}."
        )
    in_axis = _check_axes(_name, in_axis, "in_axis")
    out_axis = _check_axes(_name, out_axis, "out_axis")
    batch_axis = _check_axes(_name, batch_axis, "batch_axis")
    _check_roles(_name, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)

    def fans(shape):
        return fans_of(shape, in_axis, out_axis, batch_axis, fn=_name)

    def sample(key, shape, dtype):
        fan_in, fan_out = fans(shape)
        std = math.sqrt(scale / _fan(mode, fan_in, fan_out))
        sd = sample_dtype(dtype)
        is_complex = jnp.issubdtype(dtype, jnp.complexfloating)
        if distribution == "normal":
            return (std * random_normal(key, shape, sd)).astype(dtype)
        if distribution == "uniform":
            if is_complex:
                kr, kp = jax.random.split(key)
                rd = real_dtype(sd)
                r = math.sqrt(2) * std * jnp.sqrt(random_uniform(kr, shape, rd))
                theta = random_uniform(kp, shape, rd, 0.0, 2 * math.pi)
                return (r * jnp.exp(1j * theta)).astype(dtype)
            b = math.sqrt(3) * std
            u = random_uniform(key, shape, sd, -b, b)
            return clip_into(u, -b, b, dtype, open_lo=False)
        if is_complex:
            s = std / complex_truncated_std(_CUT)
            return (s * draw_truncated(key, -_CUT, _CUT, shape, dtype)).astype(dtype)
        s = std / truncated_moments(-_CUT, _CUT)[1]
        z = s * draw_truncated(key, -_CUT, _CUT, shape, dtype)
        return clip_into(z, -_CUT * s, _CUT * s, dtype)

    def reach_per_std(dtype):
        """The largest |w| over the standard deviation, for the sampler in ``dtype``."""
        is_complex = jnp.issubdtype(dtype, jnp.complexfloating)
        if distribution == "normal":
            z = normal_reach(real_dtype(sample_dtype(dtype)))
            return z / math.sqrt(2) if is_complex else z
        if distribution == "uniform":
            return math.sqrt(2) if is_complex else math.sqrt(3)
        if is_complex:
            return _CUT / complex_truncated_std(_CUT)
        return _CUT / truncated_moments(-_CUT, _CUT)[1]

    def fits(shape, dtype):
        fan = _fan(mode, *fans(shape))
        std = math.sqrt(scale / fan)
        k = reach_per_std(dtype)
        if _arg is None:  # scale = (top / k)^2 fan reaches the top
            arg, value, limit = "scale", scale, (largest(dtype) / k) ** 2 * fan
        else:  # a gain g with scale = g^2, or an activation (limit None)
            arg, value, per_unit = _arg
            limit = None if per_unit is None else largest(dtype) / (k * std) * per_unit
        check_reach(_name, dtype, k * std, arg, value, limit, shape)

    params = {"scale": scale, "mode": mode, "distribution": distribution}
    if _name != "variance_scaling":
        params = {}
    params.update(in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis)
    # The named factories show only their own arguments; the full configuration identifies
    # the initializer (two he_normal(activation=<lambda>) differ by their scale, not by their
    # display), so lecun_normal() == variance_scaling(1.0, "fan_in", "normal").
    ident = ("variance_scaling", scale, mode, distribution, in_axis, out_axis, batch_axis)
    return Init(
        _name,
        sample,
        params,
        check=fans,
        ident=ident,
        variance=lambda fan_in, fan_out, shape: scale / _fan(mode, fan_in, fan_out),
        fits=fits,
    )


def _named(
    name: str,
    scale: float,
    mode: str,
    distribution: str,
    axes: dict,
    extra: dict | None = None,
    arg: tuple[str, object, float | None] | None = None,
) -> Initializer:
    init = variance_scaling(scale, mode, distribution, **axes, _name=name, _arg=arg)
    if extra:
        init._params = {**extra, **init._params}
    return init


@factory
def lecun_normal(*, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """LeCun normal: ``N(0, 1 / fan_in)``, not truncated (SELU networks, linear layers).

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.lecun_normal()(jax.random.key(0), (256, 512))
      >>> bool(abs(w.var() * 256 - 1) < 0.02)
      True

    References:
      LeCun et al. 1998, "Efficient BackProp"; Klambauer et al. 2017, arXiv:1706.02515
    """
    return _named(
        "lecun_normal",
        1.0,
        "fan_in",
        "normal",
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
    )


@factory
def lecun_uniform(*, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """LeCun uniform: ``U(-sqrt(3 / fan_in), sqrt(3 / fan_in))``, variance ``1 / fan_in``.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.lecun_uniform()(jax.random.key(0), (300, 100))
      >>> bool((abs(w) <= (3 / 300) ** 0.5).all())
      True
    """
    return _named(
        "lecun_uniform",
        1.0,
        "fan_in",
        "uniform",
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
    )


@factory
def glorot_normal(
    *, gain: float = 1.0, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()
) -> Initializer:
    """Glorot/Xavier normal: ``N(0, gain^2 * 2 / (fan_in + fan_out))``, not truncated.

    As in the paper and in ``torch.nn.init.xavier_normal_``; ``jax.nn.initializers
    .glorot_normal`` is a truncated normal instead. Alias: ``xavier_normal``.

    Args:
      gain: Multiplier of the standard deviation, finite and > 0 (e.g. ``jaxinit.gain("tanh")``).
      in_axis: Axis or axes of input features.
      out_axis: Axis or axes of output features.
      batch_axis: Axes counted in neither fan.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.glorot_normal()(jax.random.key(0), (256, 768))
      >>> bool(abs(w.var() * (256 + 768) / 2 - 1) < 0.02)
      True

    References:
      Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
      networks"
    """
    g = check_finite("glorot_normal", "gain", gain, positive=True)
    return _named(
        "glorot_normal",
        g * g,
        "fan_avg",
        "normal",
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
        {"gain": g},
        ("gain", g, g),
    )


@factory
def glorot_uniform(
    *, gain: float = 1.0, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()
) -> Initializer:
    """Glorot/Xavier uniform: ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    Alias: ``xavier_uniform``.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.glorot_uniform()(jax.random.key(0), (100, 200))
      >>> bool((abs(w) <= (6 / 300) ** 0.5).all())
      True
    """
    g = check_finite("glorot_uniform", "gain", gain, positive=True)
    return _named(
        "glorot_uniform",
        g * g,
        "fan_avg",
        "uniform",
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
        {"gain": g},
        ("gain", g, g),
    )


def _he_scale(name: str, activation: Activation, negative_slope: float | None) -> float:
    if negative_slope is not None:
        if activation != "leaky_relu":
            raise ValueError(
                f"{name}: negative_slope={negative_slope!r} applies only to "
                f"activation='leaky_relu', got activation={activation!r}."
            )
        check_finite(name, "negative_slope", negative_slope)
    scale = gain_for(name, activation, negative_slope) ** 2
    if not math.isfinite(scale):  # a gain beyond 1e154: E[phi^2] below ~1e-308
        raise ValueError(
            f"{name}: activation={short(activation)} has gain**2 = {scale!r}; its second "
            "moment is too small for a weight scale in float64."
        )
    return scale


def _he(name: str, distribution: str, activation, negative_slope, mode, axes) -> Initializer:
    scale = _he_scale(name, activation, negative_slope)
    extra = {"activation": getattr(activation, "__name__", activation)}
    if negative_slope is not None:
        extra["negative_slope"] = negative_slope
    if mode != "fan_in":
        extra["mode"] = mode
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(
            f"{name}: mode={mode!r} is not supported; use 'fan_in' (forward "
            "signal) or 'fan_out' (backward signal)."
        )
    arg = ("activation", activation, None)
    return _named(name, scale, mode, distribution, axes, extra, arg)


@factory
def he_normal(
    *,
    activation: Activation = "relu",
    negative_slope: float | None = None,
    mode: Mode = "fan_in",
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> Initializer:
    """He/Kaiming normal: ``N(0, gain(activation)^2 / fan_in)``, not truncated.

    For ReLU, ``N(0, 2 / fan_in)``. ``activation`` takes any name :func:`gain` knows or any
    callable, whose exact gain is computed by quadrature. Alias: ``kaiming_normal``.

    Args:
      activation: Name or callable; default ``"relu"``.
      negative_slope: Slope for ``activation="leaky_relu"`` (default 0.01).
      mode: ``"fan_in"`` preserves the forward signal, ``"fan_out"`` the backward one.
      in_axis: Axis or axes holding input features.
      out_axis: Axis or axes holding output features.
      batch_axis: Axes counted in neither fan.

    Returns:
      An :class:`Initializer`.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.he_normal()(jax.random.key(0), (256, 512))
      >>> w.shape, w.dtype
      ((256, 512), dtype('float32'))
      >>> bool(abs(w.var() - 2 / 256) < 1e-3)
      True

    References:
      He et al. 2015, https://arxiv.org/abs/1502.01852
    """
    return _he(
        "he_normal",
        "normal",
        activation,
        negative_slope,
        mode,
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
    )


@factory
def he_uniform(
    *,
    activation: Activation = "relu",
    negative_slope: float | None = None,
    mode: Mode = "fan_in",
    in_axis: Axes = -2,
    out_axis: Axes = -1,
    batch_axis: Axes = (),
) -> Initializer:
    """He/Kaiming uniform: ``U(-b, b)``, ``b = gain(activation) * sqrt(3 / fan_in)``.

    Arguments as :func:`he_normal`. Alias: ``kaiming_uniform``.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.he_uniform(activation="leaky_relu", negative_slope=0.2)(
      ...     jax.random.key(0), (3, 3, 16, 32))
      >>> bool((abs(w) <= jaxinit.gain("leaky_relu", 0.2) * (3 / 144) ** 0.5).all())
      True
    """
    return _he(
        "he_uniform",
        "uniform",
        activation,
        negative_slope,
        mode,
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
    )


@factory
def torch_default(*, in_axis: Axes = -2, out_axis: Axes = -1, batch_axis: Axes = ()) -> Initializer:
    """PyTorch's default for ``nn.Linear`` / ``nn.Conv*`` weights: ``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))`` (``kaiming_uniform_(a=sqrt(5))``), variance ``1 / (3 fan_in)``.

    For porting PyTorch models and as the baseline in comparisons. Pair with
    :func:`torch_bias_default`.

    Example:
      >>> import jax, jaxinit
      >>> w = jaxinit.torch_default()(jax.random.key(0), (400, 10))
      >>> bool((abs(w) <= 400 ** -0.5).all())
      True
    """
    return _named(
        "torch_default",
        1.0 / 3,
        "fan_in",
        "uniform",
        {"in_axis": in_axis, "out_axis": out_axis, "batch_axis": batch_axis},
    )


xavier_normal = glorot_normal
xavier_uniform = glorot_uniform
kaiming_normal = he_normal
kaiming_uniform = he_uniform
