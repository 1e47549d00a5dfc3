"""Gains: the factor that keeps the second moment of a signal through an activation."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeGuard, get_args

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from ._checks import check_number
from ._quadrature import evaluate64, gaussian_expectation
from ._types import Activation, ActivationName

# PyTorch's ``torch.nn.init.calculate_gain`` table.
_TORCH_ONE = (
    "linear",
    "identity",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)

# Other named activations: (function of (x, param), default param, kinks).
_NAMED: dict[str, tuple[Callable, float | None, tuple[float, ...]]] = {
    "gelu": (lambda x, p: jax.nn.gelu(x, approximate=False), None, ()),
    "gelu_tanh": (lambda x, p: jax.nn.gelu(x, approximate=True), None, ()),
    "silu": (lambda x, p: jax.nn.silu(x), None, ()),
    "swish": (lambda x, p: jax.nn.silu(x), None, ()),
    "elu": (lambda x, p: jax.nn.elu(x, p), 1.0, (0.0,)),
    "erf": (lambda x, p: jax.scipy.special.erf(x), None, ()),
    "celu": (lambda x, p: jax.nn.celu(x, p), 1.0, (0.0,)),
    "softplus": (lambda x, p: jax.nn.softplus(x), None, ()),
    "mish": (lambda x, p: jax.nn.mish(x), None, ()),
    "softsign": (lambda x, p: jax.nn.soft_sign(x), None, (0.0,)),
    "hard_tanh": (lambda x, p: jax.nn.hard_tanh(x), None, (-1.0, 1.0)),
    "relu6": (lambda x, p: jax.nn.relu6(x), None, (0.0, 6.0)),
    "hard_sigmoid": (lambda x, p: jax.nn.hard_sigmoid(x), None, (-3.0, 3.0)),
    "hard_silu": (lambda x, p: jax.nn.hard_silu(x), None, (-3.0, 3.0)),
    "hard_swish": (lambda x, p: jax.nn.hard_silu(x), None, (-3.0, 3.0)),
    "log_sigmoid": (lambda x, p: jax.nn.log_sigmoid(x), None, ()),
    "sin": (lambda x, p: jnp.sin(x), None, ()),
}

ACTIVATIONS: tuple[str, ...] = get_args(ActivationName)


def is_activation_name(name: object) -> TypeGuard[ActivationName]:
    """Whether ``name`` is one of :data:`ACTIVATIONS`."""
    return isinstance(name, str) and name in ACTIVATIONS


def activation_fn(activation: str | Callable, param: float | None = None) -> Callable:
    """The function a named activation stands for (a callable is returned as is)."""
    if callable(activation):
        return activation
    if activation in _TORCH_ONE:
        return (lambda x: x) if activation != "sigmoid" else jax.nn.sigmoid
    table = {"tanh": jnp.tanh, "relu": jax.nn.relu, "selu": jax.nn.selu}
    if activation in table:
        return table[activation]
    if activation == "leaky_relu":
        slope = 0.01 if param is None else param
        return lambda x: jax.nn.leaky_relu(x, slope)
    _check_name(activation)
    f, default, _ = _NAMED[activation]
    p = default if param is None else param
    return lambda x: f(x, p)


def activation_kinks(activation: str | Callable) -> tuple[float, ...]:
    """Points where a named activation has a kink; for a callable, its own ``input_kinks``
    when it has them (:class:`jaxinit.activation_transform.TransformedActivation`), else 0,
    the usual place."""
    if isinstance(activation, str) and activation in _NAMED:
        return (0.0, *_NAMED[activation][2])
    own = getattr(activation, "input_kinks", None)
    if isinstance(own, tuple) and own and all(isinstance(k, float | int) for k in own):
        return tuple(float(k) for k in own)
    return (0.0,)


def _check_name(activation: str, caller: str = "gain") -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{caller}: activation={activation!r} is not a known name; use one of "
            f"{ACTIVATIONS} or pass the activation function itself."
        )


def gain(activation: Activation = "linear", param: float | None = None) -> float:
    """The gain of an activation: the factor by which to scale weights so that the second
    moment of the signal is preserved through ``activation`` (PyTorch's ``calculate_gain``).

    For the names in PyTorch's table the values are PyTorch's: 1 for ``linear``, ``conv*``,
    ``conv_transpose*`` and ``sigmoid``; 5/3 for ``tanh``; sqrt(2) for ``relu``;
    sqrt(2 / (1 + slope^2)) for ``leaky_relu`` (``param`` = slope, default 0.01); 3/4 for
    ``selu``. For any other name (``gelu`` (exact erf), ``gelu_tanh``, ``silu``/``swish``,
    ``elu``/``celu`` (``param`` = alpha), ``softplus``, ``mish``, ``softsign``, ``hard_tanh``,
    ``relu6``, ``erf``, ``hard_sigmoid``, ``hard_silu``/``hard_swish``, ``log_sigmoid``,
    ``sin``) and for any callable, the exact value 1 / sqrt(E[phi(z)^2]), z ~ N(0, 1), by
    Gauss-Legendre quadrature with panel edges at the kinks (callables are assumed smooth
    except at 0 and at multiples of 1/4; relative error below 1e-12 for the named functions).
    Pass ``jnp.tanh`` rather than ``"tanh"`` for the exact tanh value (1.5925) instead of
    PyTorch's 5/3.

    Args:
      activation: A name from the lists above, or a function ``phi`` of one array argument
        (NumPy or JAX; evaluated in float64).
      param: ``negative_slope`` for ``leaky_relu``, ``alpha`` for ``elu``/``celu``.

    Returns:
      The gain as a Python float.

    Raises:
      ValueError: for an unknown name, a misplaced or non-finite ``param``, or an activation
        whose second moment is zero or infinite (e.g. ``exp(z^2 / 4)``, detected by an
        integrand that has not decayed at |z| = 12).
      TypeError: for a callable that cannot be evaluated on a float64 array.

    Example:
      >>> import jax, jaxinit
      >>> jaxinit.gain("relu") == 2 ** 0.5
      True
      >>> 1.53 < jaxinit.gain("gelu") < 1.54
      True
      >>> abs(jaxinit.gain(jax.nn.relu) - 2 ** 0.5) < 1e-12
      True
    """
    return gain_for("gain", activation, param)


def gain_for(caller: str, activation: Activation, param: float | None = None) -> float:
    """:func:`gain`, with errors naming the calling function ``caller``."""
    if callable(activation):
        if param is not None:
            raise ValueError(
                f"{caller}: param= applies to named activations only; bind it into "
                "the callable instead, e.g. lambda x: jax.nn.elu(x, 0.5)."
            )
        return _gain_of_callable(activation, caller)
    if not isinstance(activation, str):
        raise TypeError(f"{caller}: activation={activation!r} must be a name or a callable.")
    _check_name(activation, caller)
    takes_param = activation in ("leaky_relu", "elu", "celu")
    if param is not None:
        if not takes_param:
            raise ValueError(
                f"{caller}: param={param!r} was given but activation={activation!r} "
                "takes no parameter; only 'leaky_relu' (negative slope), 'elu' and "
                "'celu' (alpha) do."
            )
        param = check_number(caller, "param", param, signed=True)
    if activation in _TORCH_ONE:
        return 1.0
    if activation == "tanh":
        return 5.0 / 3
    if activation == "relu":
        return math.sqrt(2.0)
    if activation == "selu":
        return 0.75
    if activation == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    return _gain_of_name(activation, None if param is None else float(param), caller)


# The part of E[phi(z)^2] allowed beyond |z| = 11.75, where the quadrature stops at 12: any
# activation of polynomial or exponential growth leaves ~1e-25 there; a divergent one (e.g.
# exp(z^2 / 4)) leaves percents.
_TAIL_RTOL = 1e-12


class DivergentMoment(ValueError):
    """A Gaussian expectation of an activation that does not converge (its integrand has not
    decayed where the quadrature stops)."""


def checked_expectation(
    caller: str,
    activation: object,
    fn: Callable,
    q: float = 1.0,
    *,
    kinks: tuple[float, ...] = (0.0,),
    what: str = "E[phi(z)^2]",
    needs: str = "A gain needs a finite, positive second moment.",
) -> float:
    """``E[fn(sqrt(q) z)]``, or a :class:`DivergentMoment` naming ``caller``, the activation
    and ``q`` when the expectation is infinite: the one divergence check behind :func:`gain`
    and every mean-field map (:mod:`jaxinit.meanfield`)."""
    try:
        return gaussian_expectation(fn, q, kinks=kinks, tail_rtol=_TAIL_RTOL)
    except ValueError as err:
        raise DivergentMoment(
            f"{caller}: {what} is infinite for activation={activation!r} (or too heavy-tailed "
            f"for the quadrature, which stops at |z| = 12): {err} {needs}"
        ) from err


def _second_moment(
    activation: object, fn: Callable, kinks: tuple[float, ...], caller: str
) -> float:
    return checked_expectation(caller, activation, lambda x: fn(x) ** 2, kinks=kinks)


@functools.lru_cache(maxsize=128)
def _gain_of_name(activation: str, param: float | None, caller: str) -> float:
    fn = activation_fn(activation, param)
    m2 = _second_moment(activation, fn, activation_kinks(activation), caller)
    return _from_second_moment(activation, m2, caller)


def check_elementwise(fn: Callable, caller: str, activation: object, failure: str) -> None:
    """TypeError (``failure`` says what ``activation`` must be) if ``fn`` cannot run on a
    float64 array; ValueError if it does not map one elementwise."""
    try:
        probe = evaluate64(fn, np.linspace(-3.0, 3.0, 7))
    except Exception as err:
        raise TypeError(
            f"{caller}: activation={activation!r} {failure} ({type(err).__name__}: {err})."
        ) from err
    if probe.shape != (7,):
        raise ValueError(
            f"{caller}: activation={activation!r} must map an array elementwise; an input of "
            f"shape (7,) gave shape {probe.shape}."
        )


def _gain_of_callable(fn: Callable, caller: str) -> float:
    check_elementwise(fn, caller, fn, "could not be evaluated on a float64 array")
    return _from_second_moment(fn, _second_moment(fn, fn, (0.0,), caller), caller)


def _from_second_moment(activation: object, m2: float, caller: str) -> float:
    if not math.isfinite(m2) or m2 <= 0:
        raise ValueError(
            f"{caller}: E[phi(z)^2] = {m2!r} for activation={activation!r}; a gain "
            "needs a finite, positive second moment."
        )
    return 1.0 / math.sqrt(m2)
