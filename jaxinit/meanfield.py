"""Mean-field signal propagation through a Dense/activation chain (no Flax, no sampling).

The recursions of Poole et al. 2016 and Schoenholz et al. 2017, evaluated with the
kink-exact Gaussian quadrature of :mod:`jaxinit._quadrature`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from ._quadrature import evaluate64, gaussian_expectation
from ._types import Activation
from .gains import ACTIVATIONS, activation_fn, activation_kinks, is_activation_name
from .gains import gain as activation_gain


class Prediction(NamedTuple):
    """Mean-field prediction for each Dense layer of a chain (index 0 = first layer).

    Attributes:
      q: Second moment (= variance; the mean is 0) of each Dense layer's output (the
        pre-activation), ``q_1 = sigma_w^2 input_var + sigma_b^2``,
        ``q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2``.
      post_mean: ``E[phi(h_l)]``, the mean of each activation output.
      post_std: The standard deviation of each activation output.
      chi: ``sigma_w^2 E[phi'(sqrt(q_l) z)^2]``, the factor by which the gradient's second
        moment grows from layer ``l + 1`` back to layer ``l`` (times the width ratio).
      grad_var: Second moment of the loss gradient w.r.t. each Dense output, relative to the
        last layer's (``grad_var[-1] == 1``).
    """

    q: np.ndarray
    post_mean: np.ndarray
    post_std: np.ndarray
    chi: np.ndarray
    grad_var: np.ndarray

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of each Dense layer's output, ``sqrt(q)``."""
        return np.sqrt(self.q)

    @property
    def grad_std(self) -> np.ndarray:
        """Standard deviation of the gradient w.r.t. each Dense output, relative to the last."""
        return np.sqrt(self.grad_var)


def _check_number(fn: str, name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (number > 0 if positive else number >= 0):
            return number
    what = "> 0" if positive else ">= 0"
    raise ValueError(f"{fn}: {name}={value!r} must be a finite number {what}.")


def _resolve(fn_name: str, activation: str | Callable, param: float | None):
    """phi, phi' (both float64 NumPy-in/NumPy-out) and the kinks of a named or callable
    activation."""
    if isinstance(activation, str):
        if not is_activation_name(activation):
            raise ValueError(
                f"{fn_name}: activation={activation!r} is not a known name; use one of "
                f"{ACTIVATIONS} or pass the activation function itself."
            )
        activation_gain(activation, param)  # validates param for the name
    elif not callable(activation):
        raise TypeError(f"{fn_name}: activation={activation!r} must be a name or a callable.")
    elif param is not None:
        raise ValueError(
            f"{fn_name}: param= applies to named activations only; bind it into the "
            "callable instead, e.g. lambda x: jax.nn.elu(x, 0.5)."
        )
    phi = jax.jit(activation_fn(activation, param))
    dphi = jax.jit(jax.vmap(jax.grad(activation_fn(activation, param))))
    try:
        probe = evaluate64(dphi, np.linspace(-3.0, 3.0, 7))
    except Exception as err:
        raise TypeError(
            f"{fn_name}: activation={activation!r} must be a JAX-differentiable function "
            f"of one array ({type(err).__name__}: {err})."
        ) from err
    if probe.shape != (7,):
        raise ValueError(f"{fn_name}: activation={activation!r} must act elementwise.")
    return phi, dphi, activation_kinks(activation)


def _moments(phi, dphi, kinks, q: float) -> tuple[float, float, float]:
    """E[phi], E[phi^2] and E[phi'^2] at sqrt(q) z."""
    m1 = gaussian_expectation(phi, q, kinks=kinks)
    m2 = gaussian_expectation(lambda x: phi(x) ** 2, q, kinks=kinks)
    d2 = gaussian_expectation(lambda x: dphi(x) ** 2, q, kinks=kinks)
    return m1, m2, d2


def predict(
    activation: Activation = "relu",
    depth: int = 10,
    *,
    sigma_w: float | Sequence[float] | None = None,
    sigma_b: float = 0.0,
    input_var: float = 1.0,
    param: float | None = None,
    widths: Sequence[int] | None = None,
) -> Prediction:
    """Mean-field prediction of each layer's signal in a Dense/activation chain.

    The chain is ``h_1 = W_1 x + b_1``, ``h_l = W_l phi(h_{l-1}) + b_l`` for ``l = 2..depth``,
    with ``Var(W_l) = sigma_w^2 / fan_in`` and ``Var(b_l) = sigma_b^2`` (any zero-mean
    distribution: normal, uniform and truncated normal give the same prediction). In the
    wide limit each ``h_l`` is Gaussian with variance ``q_l``::

        q_1 = sigma_w^2 input_var + sigma_b^2
        q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2,   z ~ N(0, 1)

    and, backwards, the gradient of the loss w.r.t. ``h_l`` has second moment
    ``g_l = chi_l g_{l+1} width_{l+1} / width_l`` with
    ``chi_l = sigma_w^2 E[phi'(sqrt(q_l) z)^2]`` (with per-layer ``sigma_w``, the one of
    layer ``l + 1``, whose weights carry the gradient back). Expectations are computed by
    Gauss-Legendre quadrature with panel edges at the activation's kinks (exact to rounding
    for ReLU-like functions), ``phi'`` by ``jax.grad``.

    ``sigma_w`` in terms of common initializers (``fan_in`` scaling): He: ``gain``; LeCun
    and Xavier/Glorot on square layers: 1; PyTorch's default: ``sqrt(1/3)``; a standard
    normal: ``sqrt(fan_in)``.

    Args:
      activation: A name known to :func:`jaxinit.gain` or a JAX function of one array.
      depth: Number of Dense layers, >= 1.
      sigma_w: Weight scale, ``fan_in * Var(W)`` = ``sigma_w^2``, one number or one per
        layer; default ``jaxinit.gain(activation, param)`` (He-style init for that
        activation).
      sigma_b: Bias standard deviation.
      input_var: Second moment ``E[x^2]`` of the network's input elements.
      param: ``negative_slope`` for ``leaky_relu``, ``alpha`` for ``elu``/``celu``.
      widths: Output width of each layer (``depth`` ints) for the backward pass; default all
        equal. The forward pass does not depend on widths.

    Returns:
      A :class:`Prediction` of NumPy float64 arrays of length ``depth``.

    Example:
      >>> import jaxinit
      >>> p = jaxinit.predict("relu", 50, sigma_w=2 ** 0.5)
      >>> bool(abs(p.q[-1] - 2) < 1e-12), p.q.shape  # He: E[h_l^2] = 2 E[x^2] at every layer
      (True, (50,))
      >>> bool(jaxinit.predict("tanh", 3, sigma_w=1.0).chi[0] < 1)
      True

    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340;
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232
    """
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"predict: depth={depth!r} must be an int >= 1.")
    depth = int(depth)
    phi, dphi, kinks = _resolve("predict", activation, param)
    if sigma_w is None:
        sigma_w = activation_gain(activation, param)
    if isinstance(sigma_w, Sequence | np.ndarray):
        if len(sigma_w) != depth:
            raise ValueError(
                f"predict: sigma_w={sigma_w!r} must be one number or {depth} (one per layer)."
            )
        sw2 = np.array([_check_number("predict", "sigma_w", v) ** 2 for v in sigma_w])
    else:
        sw2 = np.full(depth, _check_number("predict", "sigma_w", sigma_w) ** 2)
    sb2 = _check_number("predict", "sigma_b", sigma_b) ** 2
    q_in = _check_number("predict", "input_var", input_var)
    if widths is None:
        ratio = np.ones(depth)
    else:
        w = np.asarray(widths)
        if w.shape != (depth,) or not np.issubdtype(w.dtype, np.integer) or (w < 1).any():
            raise ValueError(
                f"predict: widths={widths!r} must be {depth} positive ints (one per layer)."
            )
        ratio = np.append(w[1:] / w[:-1], 1.0)

    q = np.empty(depth)
    post_mean, post_std, chi = np.empty(depth), np.empty(depth), np.empty(depth)
    dphi2 = np.empty(depth)
    prev = q_in
    for layer in range(depth):
        q[layer] = sw2[layer] * prev + sb2
        m1, m2, d2 = (
            _moments(phi, dphi, kinks, q[layer]) if math.isfinite(q[layer]) else ((math.nan,) * 3)
        )
        post_mean[layer], post_std[layer] = m1, math.sqrt(max(m2 - m1 * m1, 0.0))
        chi[layer] = sw2[layer] * d2
        dphi2[layer] = d2
        prev = m2
    grad_var = np.ones(depth)
    for layer in range(depth - 2, -1, -1):
        # dL/dh_l = phi'(h_l) * W_{l+1}^T dL/dh_{l+1}: layer l+1's weights carry it back.
        grad_var[layer] = grad_var[layer + 1] * sw2[layer + 1] * dphi2[layer] * ratio[layer]
    return Prediction(q, post_mean, post_std, chi, grad_var)


def _bisect(f: Callable[[float], float], a: float, b: float, fa: float) -> float:
    """A root of ``f`` in ``[a, b]`` where ``f(a)`` and ``f(b)`` differ in sign."""
    for _ in range(200):
        m = 0.5 * (a + b)
        if m in (a, b):
            break
        fm = f(m)
        if fm == 0:
            return m
        if (fm < 0) == (fa < 0):
            a, fa = m, fm
        else:
            b = m
    return 0.5 * (a + b)


def critical_sigma_w(
    activation: Activation = "tanh", sigma_b: float = 0.0, *, param: float | None = None
) -> float:
    """The weight scale at the edge of chaos: ``chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] = 1``
    at the fixed point ``q* = sigma_w^2 E[phi(sqrt(q*) z)^2] + sigma_b^2``.

    At this ``sigma_w`` deep Dense chains neither order (inputs' correlations collapse to 1)
    nor become chaotic, and gradients neither explode nor vanish (Schoenholz et al. 2017).
    Solved in ``q*``: the two conditions give ``(q - sigma_b^2) E[phi'^2] = E[phi^2]``,
    found by a bracketing root search, and ``sigma_w = E[phi'(sqrt(q*) z)^2]^(-1/2)``.

    * Positively homogeneous activations (linear, ReLU, leaky ReLU): ``chi`` does not depend
      on ``q``, so the answer is ``E[phi'(z)^2]^(-1/2)`` (``sqrt(2)`` for ReLU) for every
      ``sigma_b`` (with ``sigma_b > 0`` the fixed point itself is at infinity).
    * ``sigma_b = 0`` and ``phi(0) = 0`` with no positive root (e.g. ``tanh``): ``q* = 0``
      and ``sigma_w = 1 / |phi'(0)|`` (1 for ``tanh``).

    Args:
      activation: A name known to :func:`jaxinit.gain` or a JAX function of one array.
      sigma_b: Bias standard deviation, >= 0.
      param: ``negative_slope`` for ``leaky_relu``, ``alpha`` for ``elu``/``celu``.

    Returns:
      ``sigma_w`` as a Python float.

    Raises:
      ValueError: If the activation has no edge of chaos for this ``sigma_b``.

    Example:
      >>> import jaxinit
      >>> round(jaxinit.critical_sigma_w("relu") ** 2, 12)
      2.0
      >>> round(jaxinit.critical_sigma_w("tanh"), 9)
      1.0
      >>> 1.0 < jaxinit.critical_sigma_w("tanh", sigma_b=0.3) < 1.5
      True

    The fixed point must be stable (the forward map's slope at ``q*`` at most 1); e.g. GELU
    with ``sigma_b = 0.1`` reaches ``chi = 1`` only at an unstable one and raises.
    """
    phi, dphi, kinks = _resolve("critical_sigma_w", activation, param)
    sb2 = _check_number("critical_sigma_w", "sigma_b", sigma_b) ** 2

    def d2(q: float) -> float:
        return gaussian_expectation(lambda x: dphi(x) ** 2, q, kinks=kinks)

    def m2(q: float) -> float:
        return gaussian_expectation(lambda x: phi(x) ** 2, q, kinks=kinks)

    def done(value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"critical_sigma_w: activation={activation!r} has no edge of chaos "
                f"(E[phi'^2] = {value!r})."
            )
        return 1.0 / math.sqrt(value)

    # Positively homogeneous: chi does not depend on q.
    probes = [d2(q) for q in (0.25, 1.0, 4.0)]
    if max(probes) - min(probes) <= 1e-12 * max(abs(p) for p in probes):
        return done(probes[1])

    def f(q: float) -> float:
        return (q - sb2) * d2(q) - m2(q)

    lo = sb2 * (1 + 1e-9) if sb2 > 0 else 1e-4
    grid = np.geomspace(lo, max(1e4, 100 * sb2), 49)
    values = [f(q) for q in grid]
    unstable = []
    for a, b, fa, fb in zip(grid[:-1], grid[1:], values[:-1], values[1:], strict=True):
        if fa * fb > 0 or fb == 0:
            continue
        q = a if fa == 0 else _bisect(f, a, b, fa)
        # Keep only fixed points the forward map converges to: dq_l/dq_{l-1} <= 1 there.
        h = 1e-5 * q
        slope = (m2(q + h) - m2(q - h)) / (2 * h) / d2(q)
        if slope <= 1 + 1e-6:
            return done(d2(q))
        unstable.append(q)
    phi0 = float(evaluate64(phi, np.zeros(1))[0])
    if sb2 == 0 and phi0 == 0:
        return done(d2(1e-12))  # the q* = 0 fixed point: sigma_w = 1 / |phi'(0)|
    where = (
        f"only at unstable fixed points q* = {[float(f'{u:.4g}') for u in unstable]}"
        if unstable
        else f"at no fixed point q* in [{lo:.3g}, {grid[-1]:.3g}]"
    )
    raise ValueError(
        f"critical_sigma_w: activation={activation!r} with sigma_b={sigma_b!r} has no edge "
        f"of chaos: chi = 1 is reached {where}; try another sigma_b."
    )
