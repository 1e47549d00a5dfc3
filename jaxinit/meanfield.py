"""Mean-field signal propagation as composed per-layer maps (no Flax, no sampling).

A network at initialization is described by the maps of its layers, composed in forward
order: :func:`dense` (``q -> sigma_w^2 q + sigma_b^2``), :func:`activation`
(``q -> E[phi(sqrt(q) z)^2]``), :func:`residual` (a skip connection around a branch),
:func:`layer_norm`, :func:`rms_norm`, :func:`batch_norm`, :func:`avg_pool`,
:func:`attention` and :func:`transformer_block`, and :func:`compose`. Each map sends a
:class:`State` (the second moment ``q`` of the signal's elements, their mean, the gradient
factor ``chi`` accumulated so far and, for two inputs, the second input's moments and the
correlation ``c`` of the two signals) to the state after the layer, so a whole network is one
map and :func:`trace` lists the state after each layer. :func:`predict` and
:func:`critical_sigma_w` are built on these maps; :func:`sigma_w` reads a weight scale from an
initializer's variance law. :func:`conv` and :func:`parallel` (branches summed) serve
convolutional networks; :func:`layer` names a map after its layer and :func:`layers` reports
every named layer's output, branches included; :func:`of_model` builds the named maps of a
:mod:`jaxinit.models` network (MLP, ResNet, Transformer; linen or NNX) from its configuration,
importing Flax only when called. These are the recursions of Poole et al. 2016 and Schoenholz et
al. 2017 (the q- and C-maps), evaluated with the kink-exact Gaussian quadrature of
:mod:`jaxinit._quadrature` (nested for the two-input expectation ``E[phi(u) phi(v)]``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import jax
import numpy as np

from ._checks import check_number
from ._quadrature import bivariate_expectation, evaluate64, gaussian_expectation
from ._types import Activation
from .gains import (
    ACTIVATIONS,
    DivergentMoment,
    activation_fn,
    activation_kinks,
    check_elementwise,
    checked_expectation,
    gain_for,
    is_activation_name,
)

__all__ = [
    "ActivationMap",
    "AttentionMap",
    "AvgPoolMap",
    "BatchNormMap",
    "ConvMap",
    "DenseMap",
    "Layer",
    "LayerMap",
    "LayerNormMap",
    "Map",
    "Network",
    "ParallelMap",
    "Prediction",
    "ResidualMap",
    "State",
    "Step",
    "activation",
    "attention",
    "avg_pool",
    "batch_norm",
    "compose",
    "conv",
    "critical_sigma_w",
    "dense",
    "layer",
    "layer_norm",
    "layers",
    "of_model",
    "parallel",
    "predict",
    "residual",
    "rms_norm",
    "sigma_w",
    "trace",
    "transformer_block",
]

# Bound on sigma_w and sigma_b: their squares (the maps' factors) stay finite in float64.
_MOST_SIGMA = 1e150


class State(NamedTuple):
    """The mean-field state of a signal between two layers, for one input or for two.

    With ``c=None`` the state describes one input's signal. With a number ``c`` it describes
    the signals ``x1``, ``x2`` of two inputs (or two tokens of one sequence, for
    :func:`attention`): ``q``, ``mean`` are the first's, ``q2``, ``mean2`` the second's
    (``None``: equal to the first's), and every map carries both and their correlation.

    Attributes:
      q: Second moment ``E[x1^2]`` of each element of the signal (over inputs and
        initializations; equal to the variance when ``mean`` is 0).
      c: ``None`` for one input; for two, the correlation (cosine) of their signals,
        ``c = E[x1 x2] / sqrt(E[x1^2] E[x2^2])``, in [-1, 1] (with non-zero means, of the
        second moments, as ``q`` is). ``E[x1 x2]`` is the NNGP kernel of the two inputs.
      chi: Gradient factor accumulated over the maps applied so far: the second moment of the
        loss gradient w.r.t. the map chain's input over that w.r.t. its output (equal widths),
        for the first input.
      mean: ``E[x1]`` of each element (0 after a :func:`dense` map: its weights have mean 0).
      q2: ``E[x2^2]``, for two inputs; ``None``: equal to ``q``.
      mean2: ``E[x2]``, for two inputs; ``None``: equal to ``mean``.

    For maps that act on each input separately (all but :func:`attention`) the slope of the
    C-map at ``c = 1`` with equal inputs, ``chi_1 = C'(1)``, is ``chi q_in / q_out`` (Price's
    theorem: ``d E[x1 x2]_out / d E[x1 x2]_in`` at ``x1 = x2`` is the gradient factor);
    :func:`predict` reports it per layer.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> mf.State(2.0)
      State(q=2.0, c=None, chi=1.0, mean=0.0, q2=None, mean2=None)
      >>> s = mf.dense(1.0, 1.0).apply(mf.State(1.0, c=0.0))  # a shared bias correlates
      >>> s.q, s.c, s.q2
      (2.0, 0.5, 2.0)
    """

    q: float
    c: float | None = None
    chi: float = 1.0
    mean: float = 0.0
    q2: float | None = None
    mean2: float | None = None


class Map(Protocol):
    """A mean-field map: a small immutable object whose ``apply`` sends the :class:`State`
    before a layer (or a block of layers) to the state after it."""

    def apply(self, state: State) -> State:
        """The state after the map, given the state before it."""
        ...


class Step(NamedTuple):
    """One map of a :func:`trace` and the state after it.

    Attributes:
      map: The map.
      state: The :class:`State` after the map (``chi`` accumulated from the traced input).
      chi: The map's own gradient factor (``state.chi`` over the ``chi`` before it).
    """

    map: Map
    state: State
    chi: float


def _second(state: State) -> tuple[float, float, float]:
    """The second input's ``(q2, mean2, c)`` of a two-input state."""
    assert state.c is not None
    q2 = state.q if state.q2 is None else state.q2
    m2 = state.mean if state.mean2 is None else state.mean2
    return q2, m2, state.c


def _cosine(q12: float, q1: float, q2: float) -> float:
    """``q12 / sqrt(q1 q2)`` clipped to [-1, 1] (rounding); 1 for two zero signals."""
    d = math.sqrt(q1 * q2)
    if not d > 0:
        return 1.0 if d == 0 else math.nan
    return min(max(q12 / d, -1.0), 1.0)


def _pair(state: State, name: str) -> tuple[float, float, float, float, float]:
    """``(q1, q2, mean1, mean2, E[x1 x2])`` of a two-input state."""
    if state.c is None:
        raise ValueError(f"{name}: needs a two-input state (c is None).")
    q2, m2, c = _second(state)
    c = float(c)
    if not -1 - 1e-12 <= c <= 1 + 1e-12:
        raise ValueError(f"{name}: state.c={c!r} must be a correlation in [-1, 1].")
    return state.q, q2, state.mean, m2, c * math.sqrt(state.q * q2)


def _two(one: State, q2: float, m2: float, q12: float) -> State:
    """The two-input state with ``one``'s first input and the second's ``q2``, ``m2``."""
    return one._replace(c=_cosine(q12, one.q, q2), q2=q2, mean2=m2)


@dataclasses.dataclass(frozen=True)
class DenseMap:
    """The map of a Dense layer ``h = W x + b`` with ``Var(W) = sigma_w^2 / fan_in`` (any
    zero-mean distribution) and ``Var(b) = sigma_b^2``; built by :func:`dense`."""

    sigma_w: float
    sigma_b: float = 0.0

    def apply(self, state: State) -> State:
        """``q -> sigma_w^2 q + sigma_b^2``, mean 0, ``chi`` times ``sigma_w^2``; for two
        inputs ``E[x1 x2] -> sigma_w^2 E[x1 x2] + sigma_b^2``."""
        sw2, sb2 = self.sigma_w**2, self.sigma_b**2
        one = State(sw2 * state.q + sb2, None, state.chi * sw2, 0.0)
        if state.c is None:
            return one
        _, q2, _, _, q12 = _pair(state, "dense")
        return _two(one, sw2 * q2 + sb2, 0.0, sw2 * q12 + sb2)


def dense(sigma_w: float, sigma_b: float = 0.0) -> DenseMap:
    """The map of a Dense (or conv) layer with weights of variance ``sigma_w^2 / fan_in``.

    Forward, ``q -> sigma_w^2 q + sigma_b^2`` (``q`` is the input's second moment, so a
    non-zero input mean counts); the output has mean 0. For two inputs the cross second
    moment maps the same way, ``q12 -> sigma_w^2 q12 + sigma_b^2`` (the bias is shared, the
    weights are the same for both inputs). Backward, the gradient's second moment
    grows by ``sigma_w^2`` (times ``fan_out / fan_in`` when the widths differ). Use
    :func:`sigma_w` to read ``sigma_w`` from an initializer.

    Args:
      sigma_w: Weight scale, ``sqrt(fan_in Var(W))``, finite and >= 0.
      sigma_b: Bias standard deviation, finite and >= 0.

    Returns:
      A :class:`DenseMap`.

    Raises:
      ValueError: If ``sigma_w`` or ``sigma_b`` is negative or not finite.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> mf.dense(2.0, 0.5).apply(mf.State(1.0))
      State(q=4.25, c=None, chi=4.0, mean=0.0, q2=None, mean2=None)
    """
    return DenseMap(
        check_number("dense", "sigma_w", sigma_w, most=_MOST_SIGMA),
        check_number("dense", "sigma_b", sigma_b, most=_MOST_SIGMA),
    )


def _resolve(fn_name: str, activation: Activation, param: float | None):
    """phi, phi' (both float64 NumPy-in/NumPy-out) and the kinks of a named or callable
    activation."""
    if isinstance(activation, str):
        if not is_activation_name(activation):
            raise ValueError(
                f"{fn_name}: activation={activation!r} is not a known name; use one of "
                f"{ACTIVATIONS} or pass the activation function itself."
            )
        gain_for(fn_name, activation, param)  # validates param for the name
    elif not callable(activation):
        raise TypeError(f"{fn_name}: activation={activation!r} must be a name or a callable.")
    elif param is not None:
        raise ValueError(
            f"{fn_name}: param= applies to named activations only; bind it into the "
            "callable instead, e.g. lambda x: jax.nn.elu(x, 0.5)."
        )
    fn = activation_fn(activation, param)
    # through a closure: jit hashes its function, and a callable object holding arrays (a
    # TransformedActivation) has no hash
    phi = jax.jit(lambda x: fn(x))
    dphi = jax.jit(jax.vmap(jax.grad(lambda x: fn(x))))
    check_elementwise(
        dphi, fn_name, activation, "must be a JAX-differentiable function of one array"
    )
    return phi, dphi, activation_kinks(activation)


@dataclasses.dataclass(frozen=True)
class ActivationMap:
    """The map of an elementwise activation applied to a zero-mean Gaussian signal; built by
    :func:`activation`. Two maps of the same activation and ``param`` compare equal."""

    activation: Activation
    param: float | None = None
    phi: Callable = dataclasses.field(default=lambda x: x, compare=False, repr=False)
    dphi: Callable = dataclasses.field(default=lambda x: x, compare=False, repr=False)
    kinks: tuple[float, ...] = dataclasses.field(default=(0.0,), compare=False, repr=False)
    caller: str = dataclasses.field(default="activation", compare=False, repr=False)

    def _moment(self, fn: Callable, q: float, what: str) -> float:
        # The check gain() makes at q = 1, made at every q: an activation such as exp(x^2)
        # has finite moments for small q only, and quadrature past that gives finite garbage.
        return checked_expectation(
            self.caller,
            self.activation,
            fn,
            q,
            kinks=self.kinks,
            what=f"{what} at q={q:.6g}",
            needs="The mean-field maps need finite moments of the activation at the signal's "
            "second moment q; use a smaller sigma_w, sigma_b or input_var, or an activation "
            "that grows at most exponentially.",
        )

    def _m2(self, q: float) -> float:
        return self._moment(lambda x: self.phi(x) ** 2, q, "E[phi(sqrt(q) z)^2]")

    def _d2(self, q: float) -> float:
        return self._moment(lambda x: self.dphi(x) ** 2, q, "E[phi'(sqrt(q) z)^2]")

    def moments(self, q: float) -> tuple[float, float, float]:
        """``(E[phi(u)], E[phi(u)^2], E[phi'(u)^2])`` for ``u = sqrt(q) z``, ``z ~ N(0, 1)``
        (NaN for an infinite or NaN ``q``).

        Raises:
          ValueError: If a moment is infinite at this ``q`` (e.g. ``exp(x^2)`` for
            ``q >= 1/4``), the check :func:`jaxinit.gain` makes at ``q = 1``.
        """
        if not math.isfinite(q):
            return math.nan, math.nan, math.nan
        m2 = self._m2(q)  # first: it diverges wherever E[phi] does
        m1 = gaussian_expectation(self.phi, q, kinks=self.kinks)
        return m1, m2, self._d2(q)

    def cross(self, q1: float, q2: float, c: float) -> float:
        """``E[phi(u) phi(v)]`` for ``(u, v)`` jointly normal with mean 0, variances ``q1``,
        ``q2`` and correlation ``c`` (the activation's NNGP kernel; NaN for a non-finite
        argument), by nested kink-exact quadrature."""
        if not (math.isfinite(q1) and math.isfinite(q2) and math.isfinite(c)):
            return math.nan
        return bivariate_expectation(
            self.phi, self.phi, q1, q2, c, kinks_f=self.kinks, kinks_g=self.kinks
        )

    def apply(self, state: State) -> State:
        """``q -> E[phi(sqrt(q) z)^2]``, mean ``E[phi]``, ``chi`` times ``E[phi'^2]``; for
        two inputs ``E[x1 x2] -> E[phi(u) phi(v)]`` (:meth:`cross`)."""
        m1, m2, d2 = self.moments(state.q)
        one = State(m2, None, state.chi * d2, m1)
        if state.c is None:
            return one
        q1, q2, _, _, q12 = _pair(state, "activation")
        n1, n2, _ = (m1, m2, d2) if q2 == q1 else self.moments(q2)
        c = q12 / math.sqrt(q1 * q2) if q1 * q2 > 0 else 1.0
        return _two(one, n2, n1, self.cross(q1, q2, c))


def _activation_map(fn_name: str, phi: Activation, param: float | None) -> ActivationMap:
    f, df, kinks = _resolve(fn_name, phi, param)
    return ActivationMap(phi, param, f, df, kinks, fn_name)


def activation(phi: Activation, param: float | None = None) -> ActivationMap:
    """The map of an elementwise activation ``phi`` applied to a Gaussian pre-activation.

    The input is taken as ``N(0, q)`` (as after a :func:`dense` map). Forward,
    ``q -> E[phi(sqrt(q) z)^2]``, ``z ~ N(0, 1)``, with output mean ``E[phi(sqrt(q) z)]``;
    backward, the gradient's second moment grows by ``E[phi'(sqrt(q) z)^2]``. For two inputs
    with second moments ``q1``, ``q2`` and correlation ``c``, the cross moment becomes
    ``E[phi(u) phi(v)]`` with ``(u, v)`` jointly normal (variances ``q1``, ``q2``, correlation
    ``c``): the C-map. Expectations use Gauss-Legendre quadrature with panel edges at the
    activation's kinks (exact to rounding for ReLU-like functions; the two-input one nests
    two such rules, the inner one split at each kink's conditional location), ``phi'`` comes
    from ``jax.grad``. ReLU gives the arc-cosine kernel, ``erf`` neural-tangents' closed
    form, to about 1e-15.

    Args:
      phi: A name known to :func:`jaxinit.gain` or a JAX-differentiable function of one
        array, applied elementwise.
      param: ``negative_slope`` for ``leaky_relu``, ``alpha`` for ``elu``/``celu`` (named
        activations only).

    Returns:
      An :class:`ActivationMap`.

    Raises:
      ValueError: For an unknown name, or ``param`` with a callable.
      TypeError: If ``phi`` is neither a name nor a differentiable callable.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> s = mf.activation("relu").apply(mf.State(2.0))
      >>> round(s.q, 12), round(s.chi, 12)  # E[relu(u)^2] = q / 2, E[relu'(u)^2] = 1 / 2
      (1.0, 0.5)
    """
    return _activation_map("activation", phi, param)


def _decorrelates(m: Map) -> bool:
    """Whether a map holds a random zero-mean layer (dense, or attention's value
    projection), which makes its output uncorrelated with its input beyond the means."""
    if isinstance(m, Network):
        return any(_decorrelates(x) for x in m.maps)
    if isinstance(m, LayerMap):
        return not m.side and _decorrelates(m.map)
    if isinstance(m, ParallelMap):
        return all(_decorrelates(b) for b in m.branches)
    return isinstance(m, DenseMap | AttentionMap | ConvMap)


def _check_finite(fn_name: str, name: str, value: Any) -> float:
    return check_number(fn_name, name, value, signed=True)


@dataclasses.dataclass(frozen=True)
class ResidualMap:
    """The map of a skip connection ``skip x + alpha f(x)`` around a branch ``f``; built by
    :func:`residual`."""

    branch: Map
    alpha: float = 1.0
    skip: float = 1.0

    def apply(self, state: State) -> State:
        """``q -> skip^2 q + 2 skip alpha E[x] E[f] + alpha^2 q_f``, ``chi`` times
        ``skip^2 + alpha^2 chi_f``; for two inputs ``E[y1 y2] = skip^2 E[x1 x2] +
        skip alpha (E[x1] E[f2] + E[f1] E[x2]) + alpha^2 E[f1 f2]``."""
        return self._join(state, self.branch.apply(state._replace(chi=1.0)))

    def _join(self, state: State, b: State) -> State:
        """The state after the block from its input ``state`` and the branch's output ``b``
        (computed from ``state`` with ``chi`` 1)."""
        a, k = self.alpha, self.skip
        q = k * k * state.q + 2 * a * k * state.mean * b.mean + a * a * b.q
        one = State(q, None, state.chi * (k * k + a * a * b.chi), k * state.mean + a * b.mean)
        if state.c is None:
            return one
        if b.c is None:
            raise ValueError(
                f"residual: the branch {self.branch!r} returned a one-input state for a "
                "two-input one; every map in it must carry c."
            )
        _, q2, m1, m2, q12 = _pair(state, "residual")
        _, qb2, mb1, mb2, qb12 = _pair(b, "residual")
        return _two(
            one,
            k * k * q2 + 2 * a * k * m2 * mb2 + a * a * qb2,
            k * m2 + a * mb2,
            k * k * q12 + a * k * (m1 * mb2 + mb1 * m2) + a * a * qb12,
        )


def residual(branch: Map, alpha: float = 1.0, *, skip: float = 1.0) -> ResidualMap:
    """The map of a residual block ``y = skip x + alpha f(x)`` whose branch ``f`` holds a
    random layer (a :func:`dense` or :func:`attention` map, anywhere in it).

    The branch's random zero-mean weights make ``f(x)`` uncorrelated with ``x`` beyond the
    means (in the wide limit), so, with ``q_f``, ``m_f`` and ``chi_f`` the branch map's
    output second moment, mean and gradient factor::

        q_y = skip^2 q_x + 2 skip alpha m_x m_f + alpha^2 q_f,   m_y = skip m_x + alpha m_f
        chi = skip^2 + alpha^2 chi_f

    and for two inputs ``q12_y = skip^2 q12_x + skip alpha (m_x1 m_f2 + m_f1 m_x2) +
    alpha^2 q12_f`` (neural-tangents' ``FanOut``/``FanInSum`` rule when the means are 0).
    ``alpha = L^-1/2`` (or ``L^-1``) is the depth-scaled branch multiplier; ``skip < 1``
    with ``skip^2 + alpha^2 = 1`` keeps ``q`` (a "shortcut weight").

    Args:
      branch: The branch's map; it must hold a :func:`dense` or :func:`attention` map.
      alpha: The branch multiplier, a finite number.
      skip: The skip path's scale, a finite number.

    Returns:
      A :class:`ResidualMap`.

    Raises:
      ValueError: If the branch holds no random layer, or ``alpha`` or ``skip`` is not
        finite.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> block = mf.residual(mf.dense(1.0), alpha=0.5)  # linear branch: q (1 + alpha^2)
      >>> mf.compose(block, block).apply(mf.State(1.0)).q
      1.5625
    """
    if not hasattr(branch, "apply"):
        raise TypeError(
            f"residual: branch={branch!r} is not a mean-field map; build it with dense(...), "
            "activation(...), compose(...)."
        )
    if not _decorrelates(branch):
        raise ValueError(
            f"residual: branch={branch!r} must contain a dense(...) or attention(...) map: "
            "only a random zero-mean layer makes the branch uncorrelated with the skip path."
        )
    return ResidualMap(
        branch, _check_finite("residual", "alpha", alpha), _check_finite("residual", "skip", skip)
    )


def _check_epsilon(fn_name: str, epsilon: float) -> float:
    return check_number(fn_name, "epsilon", epsilon, most=_MOST_SIGMA)


@dataclasses.dataclass(frozen=True)
class LayerNormMap:
    """The map of a LayerNorm (``center=True``) or RMSNorm (``center=False``) over the
    feature axis, scale 1 and bias 0 (their initial values); built by :func:`layer_norm`
    and :func:`rms_norm`."""

    center: bool = True
    epsilon: float = 0.0

    def apply(self, state: State) -> State:
        """``q -> v / (v + epsilon)`` with ``v = q - mean^2`` (LayerNorm) or ``v = q``
        (RMSNorm); ``c`` becomes the centered correlation (LayerNorm) or stays (RMSNorm)."""

        def one(q: float, m: float) -> tuple[float, float, float]:
            v = q - m * m if self.center else q
            d = v + self.epsilon
            return v, d, (0.0 if self.center else m / math.sqrt(d) if d > 0 else math.nan)

        v1, d1, m1 = one(state.q, state.mean)
        out = State(v1 / d1 if d1 > 0 else math.nan, None, state.chi / d1, m1)
        if state.c is None:
            return out
        _, q2, mx1, mx2, q12 = _pair(state, "layer_norm")
        v2, d2, m2 = one(q2, mx2)
        k12 = q12 - mx1 * mx2 if self.center else q12
        return _two(out, v2 / d2 if d2 > 0 else math.nan, m2, k12 / math.sqrt(d1 * d2))


def layer_norm(epsilon: float = 0.0) -> LayerNormMap:
    """The map of a LayerNorm over the feature axis at initialization (scale 1, bias 0).

    Each example's features are centered by their mean and divided by their standard
    deviation; in the wide limit these are the element mean ``m`` and ``sqrt(q - m^2)``, so
    ``y = (x - m) / sqrt(q - m^2 + epsilon)``: ``q -> 1`` (``v / (v + epsilon)``), mean 0,
    and two inputs' correlation becomes their centered correlation (the cosine of the
    centered signals; unchanged when the means are 0). Backward, the gradient's second
    moment is divided by ``q - m^2 + epsilon`` (the projection LayerNorm's Jacobian also
    applies removes O(1/width)).

    Args:
      epsilon: Added to the variance; 0 is the wide limit, Flax's default is ``1e-6``.

    Returns:
      A :class:`LayerNormMap`.

    Raises:
      ValueError: If ``epsilon`` is negative or not finite.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> s = mf.layer_norm().apply(mf.State(5.0, c=0.6, mean=1.0))
      >>> s.q, s.mean, round(s.c, 12)  # c: (0.6 * 5 - 1) / (5 - 1)
      (1.0, 0.0, 0.5)
    """
    return LayerNormMap(True, _check_epsilon("layer_norm", epsilon))


def rms_norm(epsilon: float = 0.0) -> LayerNormMap:
    """The map of an RMSNorm over the feature axis at initialization (scale 1).

    ``y = x / sqrt(q + epsilon)`` in the wide limit: ``q -> q / (q + epsilon)`` (1 for
    ``epsilon = 0``), mean ``m / sqrt(q + epsilon)``, two inputs' correlation unchanged (the
    cosine). Backward, the gradient's second moment is divided by ``q + epsilon``.

    Args:
      epsilon: Added to the mean square; 0 is the wide limit, Flax's default is ``1e-6``.

    Returns:
      A :class:`LayerNormMap` with ``center=False``.

    Raises:
      ValueError: If ``epsilon`` is negative or not finite.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> s = mf.rms_norm().apply(mf.State(4.0, c=0.6, mean=1.0))
      >>> s.q, s.mean, s.c
      (1.0, 0.5, 0.6)
    """
    return LayerNormMap(False, _check_epsilon("rms_norm", epsilon))


@dataclasses.dataclass(frozen=True)
class BatchNormMap:
    """The map of a BatchNorm with batch statistics at initialization (scale 1, bias 0);
    built by :func:`batch_norm`."""

    batch_size: int | None = None
    epsilon: float = 0.0

    def apply(self, state: State) -> State:
        """``q -> v / (v + epsilon)``, ``v = q - mean^2``, mean 0, ``chi`` over
        ``v + epsilon``; for two inputs ``c -> -1 / (batch_size - 1)`` (0 for an infinite
        batch) times ``v / (v + epsilon)``."""
        v = state.q - state.mean**2
        d = v + self.epsilon
        out = State(v / d if d > 0 else math.nan, None, state.chi / d, 0.0)
        if state.c is None:
            return out
        _, q2, _, m2, _ = _pair(state, "batch_norm")
        v2 = q2 - m2 * m2
        n = self.batch_size
        cross = 0.0 if n is None else -1.0 / (n - 1)
        q2o = v2 / (v2 + self.epsilon) if v2 + self.epsilon > 0 else math.nan
        return _two(out, q2o, 0.0, cross * math.sqrt(out.q * q2o))


def batch_norm(batch_size: int | None = None, epsilon: float = 0.0) -> BatchNormMap:
    """The map of a BatchNorm that normalizes each feature with its batch statistics (the
    training-mode forward pass at initialization: scale 1, bias 0).

    Assumptions: each feature's values over the batch are the batch's inputs through the
    same weights, so its batch mean is the element mean ``m`` plus the component the batch's
    inputs share, and its batch variance what is left; the output has ``q = 1``
    (``v / (v + epsilon)``, ``v = q - m^2``) and mean 0 exactly per feature, whatever the
    inputs. Backward, the gradient's second moment is divided by ``v + epsilon``. For two
    inputs, the batch is taken to be exchangeable: ``batch_size`` inputs whose every pair has
    the tracked pair's correlation. Centering by the batch mean then leaves every pair the
    correlation ``-1 / (batch_size - 1)`` (the pairwise average of centered values), 0 for
    an infinite batch (``None``): BatchNorm decorrelates a batch whatever its input
    correlation.

    Args:
      batch_size: The batch size B >= 2, or ``None`` for the infinite-batch limit.
      epsilon: Added to the variance; 0 is the wide limit, Flax's default is ``1e-5``.

    Returns:
      A :class:`BatchNormMap`.

    Raises:
      ValueError: If ``batch_size`` is not an int >= 2 or ``epsilon`` is negative.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> s = mf.batch_norm(batch_size=5).apply(mf.State(3.0, c=0.9, mean=1.0))
      >>> s.q, s.mean, s.c
      (1.0, 0.0, -0.25)
    """
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 2
    ):
        raise ValueError(f"batch_norm: batch_size={batch_size!r} must be an int >= 2 or None.")
    return BatchNormMap(
        None if batch_size is None else int(batch_size), _check_epsilon("batch_norm", epsilon)
    )


@dataclasses.dataclass(frozen=True)
class AvgPoolMap:
    """The map of an average pooling over ``window`` positions; built by :func:`avg_pool`."""

    window: int
    spatial_corr: float = 0.0

    def apply(self, state: State) -> State:
        """Means kept; centered second moments times ``(1 + (window - 1) rho) / window``;
        ``chi`` over ``window^2``."""
        k, rho = self.window, self.spatial_corr
        f = (1 + (k - 1) * rho) / k
        m1 = state.mean
        out = State(m1 * m1 + f * (state.q - m1 * m1), None, state.chi / (k * k), m1)
        if state.c is None:
            return out
        _, q2, _, m2, q12 = _pair(state, "avg_pool")
        return _two(out, m2 * m2 + f * (q2 - m2 * m2), m2, m1 * m2 + f * (q12 - m1 * m2))


def avg_pool(window: int, spatial_corr: float = 0.0) -> AvgPoolMap:
    """The map of an average pooling over ``window`` positions (e.g. 4 for 2x2; the number of
    positions for global average pooling), stride equal to the window.

    Assumptions: the positions of a window have the same mean ``m`` and second moment ``q``,
    and their centered signals have pairwise correlation ``spatial_corr`` (``rho``; 0:
    independent positions, 1: a constant image); for two inputs the cross-covariance of
    different positions is ``rho`` times that of the same position. Then::

        q -> m^2 + (q - m^2) (1 + (window - 1) rho) / window,   mean kept
        q12 -> m1 m2 + (q12 - m1 m2) (1 + (window - 1) rho) / window

    Backward, each position receives ``1 / window`` of the output's gradient: the per-element
    second moment is divided by ``window^2``.

    Args:
      window: Positions averaged, an int >= 1.
      spatial_corr: ``rho``, in ``[-1 / (window - 1), 1]``.

    Returns:
      An :class:`AvgPoolMap`.

    Raises:
      ValueError: If ``window`` or ``spatial_corr`` is out of range.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> mf.avg_pool(4).apply(mf.State(2.0)).q  # four independent positions
      0.5
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"avg_pool: window={window!r} must be an int >= 1.")
    rho = _check_finite("avg_pool", "spatial_corr", spatial_corr)
    low = -1.0 / (window - 1) if window > 1 else -1.0
    if not low <= rho <= 1:
        raise ValueError(
            f"avg_pool: spatial_corr={spatial_corr!r} must be in [{low:.4g}, 1] for "
            f"window={window}."
        )
    return AvgPoolMap(int(window), rho)


@dataclasses.dataclass(frozen=True)
class AttentionMap:
    """The map of a self-attention layer with uniform attention at initialization; built by
    :func:`attention`."""

    tokens: int
    sigma_v: float = 1.0
    sigma_o: float = 1.0
    token_corr: float = 0.0
    sigma_q: float = 0.0
    sigma_k: float = 0.0

    def apply(self, state: State) -> State:
        """Every output token ``sigma_v^2 sigma_o^2 (q + (T - 1) q12) / T``, token
        correlation 1, ``chi`` times ``sigma_v^2 sigma_o^2 / T`` (uniform attention: with
        ``sigma_q sigma_k > 0`` the softmax's moments replace ``1 / T``, see
        :func:`attention`)."""
        t, g = self.tokens, (self.sigma_v * self.sigma_o) ** 2
        if state.c is None:
            q_bar, q12 = state.q, self.token_corr * state.q
        else:
            q1, q2, _, _, q12 = _pair(state, "attention")
            q_bar = 0.5 * (q1 + q2)
        if self.sigma_q * self.sigma_k > 0:
            return self._softmax(state, g, q_bar, q12)
        q = g * (q_bar + (t - 1) * q12) / t
        out = State(q, None, state.chi * g / t, 0.0)
        return out if state.c is None else _two(out, q, 0.0, q)

    def _softmax(self, state: State, g: float, q_bar: float, q12: float) -> State:
        c = min(max(q12 / q_bar, -1.0), 1.0) if q_bar > 0 else 1.0
        var = (self.sigma_q * self.sigma_k * q_bar) ** 2 * (1 - c)
        p2, p11 = _softmax_moments(self.tokens, var, c, cross=state.c is not None)
        q = g * (q12 + (q_bar - q12) * p2)
        out = State(q, None, state.chi * g * p2, 0.0)
        if state.c is None:
            return out
        return _two(out, q, 0.0, g * (q12 + (q_bar - q12) * p11))


def _softmax_moments(tokens: int, var: float, corr: float, *, cross: bool = True):
    """``(E[sum_j p_j^2], E[sum_j p_j p'_j])`` for the softmax weights ``p``, ``p'`` of two
    rows of ``tokens`` logits, each pair ``(l_j, l'_j)`` bivariate normal (mean 0, variance
    ``var``, correlation ``corr``) and the pairs independent over ``j``.

    ``1 / (Z Z') = int int exp(-t Z - t' Z') dt dt'`` turns the expectation of the ratio into
    products of one-token expectations, ``E[sum p^2] = T int t E[e^{2l} e^{-t e^l}]
    E[e^{-t e^l}]^{T-1} dt`` and likewise for ``p p'``, computed on ``t = e^u`` (trapezoid in
    ``u``) and a Gaussian grid in the logits (trapezoid in ``z``): both rules converge
    exponentially for these smooth integrands, to about 1e-10 here. The cross moment is
    ``NaN`` without ``cross``."""
    if var <= 0 or tokens == 1:
        return 1.0 / tokens, 1.0 / tokens
    if not var <= 64:  # the grids below resolve logits of std up to 8
        raise ValueError(
            f"attention: the attention logits' variance {var:.4g} is beyond 64 (std 8): the "
            "softmax is nearly one-hot; use smaller sigma_q, sigma_k or a LayerNorm first."
        )
    s, du = math.sqrt(var), 0.2
    z = np.linspace(-12.0, 12.0, 129)
    wz = np.exp(-z * z / 2)
    wz /= wz.sum()
    t = np.exp(np.arange(-12 * s - math.log(tokens) - 12, 12 * s + 6, du))
    el = np.exp(s * z)
    dec = np.exp(-np.outer(t, el))  # exp(-t e^l) on (u, z)
    phi, psi = dec @ wz, (dec * el**2) @ wz
    p2 = float(tokens * np.sum(t * t * psi * phi ** (tokens - 1)) * du)
    if not cross:
        return p2, math.nan
    r = math.sqrt(max(1 - corr * corr, 0.0))
    h, k = np.empty((z.size, t.size)), np.empty((z.size, t.size))
    for i, zi in enumerate(z):  # l' given l's z: E over z' of exp(-t' e^l') (and times e^l')
        e2 = np.exp(s * (corr * zi + r * z))
        d2 = np.exp(-np.outer(t, e2))
        h[i], k[i] = d2 @ wz, (d2 * e2) @ wz
    a, b = (dec * el * wz) @ k, (dec * wz) @ h
    p11 = float(tokens * np.sum(np.outer(t, t) * a * b ** (tokens - 1)) * du * du)
    return p2, p11


def attention(
    tokens: int,
    sigma_v: float = 1.0,
    sigma_o: float = 1.0,
    *,
    token_corr: float = 0.0,
    sigma_q: float = 0.0,
    sigma_k: float = 0.0,
) -> AttentionMap:
    """The map of a (multi-head, bidirectional) self-attention layer at initialization,
    under uniform attention.

    Assumptions: the attention weights are uniform, ``1/T`` over the ``T = tokens`` tokens
    (the logits are 0: zero-initialized queries or keys, or the small-logit limit of
    ``1/d`` scaling); the value and output projections are random with weight scales
    ``sigma_v``, ``sigma_o``; every token has the second moment ``q`` and every pair of
    tokens the cross second moment ``q12``. A two-input state is read as two tokens of one
    sequence (``c`` their correlation, ``q12 = c sqrt(q1 q2)``, ``q = (q1 + q2) / 2``); a
    one-input state takes ``q12 = token_corr q``. Then every output token is the same vector::

        q_out = sigma_v^2 sigma_o^2 (q + (T - 1) q12) / T,   mean 0,   c_out = 1

    so uniform attention collapses the rank of the sequence in one step (its output's token
    correlation is 1) and shrinks ``q`` by ``T`` for uncorrelated tokens. Backward (value path
    only; the logits' gradient is 0 when the queries or keys are 0), with gradients
    uncorrelated over tokens, the second moment grows by ``sigma_v^2 sigma_o^2 / T``. For
    causal attention these hold for the last token.

    Softmax attention (``sigma_q sigma_k > 0``, logits ``q.k / sqrt(d)`` per head, the
    default of Flax and most transformers): in the wide limit the logits are Gaussian; for a
    query, those over the keys share a component (which the softmax removes) and are
    otherwise independent with variance ``s^2 = sigma_q^2 sigma_k^2 q (q - q12)``; two
    queries' logits for the same key have correlation ``c = q12 / q``. The values are
    independent of the logits (other weights), so::

        q_out = sigma_v^2 sigma_o^2 (q12 + (q - q12) E[sum_j p_j^2])
        q12_out = sigma_v^2 sigma_o^2 (q12 + (q - q12) E[sum_j p_j p'_j])

    with ``p``, ``p'`` two queries' attention weights; both expectations are computed by
    quadrature (to about 1e-10), and are ``1 / T`` for uniform attention. The logits spread
    the attention over fewer tokens: ``q_out`` is larger and ``c_out < 1``. ``chi`` is
    ``sigma_v^2 sigma_o^2 E[sum_j p_j^2]`` (the value path; the logits' own gradient is not
    included).

    Args:
      tokens: Sequence length T >= 1.
      sigma_v: Weight scale of the value projection, ``sqrt(fan_in Var(W_v))``.
      sigma_o: Weight scale of the output projection.
      token_corr: Token correlation for one-input states, in [-1, 1].
      sigma_q: Weight scale of the query projection, for softmax attention (0: uniform).
      sigma_k: Weight scale of the key projection (0: uniform).

    Returns:
      An :class:`AttentionMap`.

    Raises:
      ValueError: If ``tokens`` is not an int >= 1 or a scale is negative.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> s = mf.attention(8).apply(mf.State(1.0, c=0.5))  # (1 + 7 * 0.5) / 8
      >>> s.q, s.c
      (0.5625, 1.0)
      >>> s = mf.attention(8, sigma_q=1.0, sigma_k=1.0).apply(mf.State(1.0, c=0.5))
      >>> bool(s.q > 0.5625), bool(0.5 < s.c < 1.0)
      (True, True)
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int | np.integer) or tokens < 1:
        raise ValueError(f"attention: tokens={tokens!r} must be an int >= 1.")
    corr = _check_finite("attention", "token_corr", token_corr)
    if not -1 <= corr <= 1:
        raise ValueError(f"attention: token_corr={token_corr!r} must be in [-1, 1].")
    return AttentionMap(
        int(tokens),
        check_number("attention", "sigma_v", sigma_v, most=_MOST_SIGMA),
        check_number("attention", "sigma_o", sigma_o, most=_MOST_SIGMA),
        corr,
        check_number("attention", "sigma_q", sigma_q, most=1e6),
        check_number("attention", "sigma_k", sigma_k, most=1e6),
    )


def transformer_block(
    tokens: int,
    *,
    norm: str = "pre",
    activation: Activation = "gelu",
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    alpha: float = 1.0,
    rms: bool = False,
    epsilon: float = 0.0,
) -> Network:
    """The map of a transformer block: attention then MLP, each in a residual, with
    LayerNorm (or RMSNorm) before the branches (pre-LN) or after the sums (post-LN).

    Pre-LN: ``x + alpha Attn(LN(x))``, then ``x + alpha MLP(LN(x))``; post-LN:
    ``LN(x + alpha Attn(x))``, then ``LN(x + alpha MLP(x))``. ``Attn`` is :func:`attention`
    (uniform attention over ``tokens``, with its assumptions) and ``MLP`` is
    ``dense(sigma_w, sigma_b), activation, dense(sigma_w, sigma_b)``; every projection has
    weight scale ``sigma_w`` (1: LeCun; a model's hidden width does not enter the forward
    maps). With pre-LN each branch adds about the same ``alpha^2 v`` to ``q`` (its input is
    normalized), so ``q`` grows linearly with depth; with post-LN ``q`` is 1 after every
    block.

    Args:
      tokens: Sequence length T >= 1.
      norm: ``"pre"`` or ``"post"``.
      activation: The MLP's activation, a name or a function.
      sigma_w: Weight scale of every projection.
      sigma_b: Bias standard deviation of the MLP's Dense layers.
      alpha: Branch multiplier of both residuals.
      rms: RMSNorm instead of LayerNorm.
      epsilon: The norms' epsilon.

    Returns:
      A :class:`Network` of four maps (two residuals and two norms).

    Raises:
      ValueError: For an unknown ``norm`` or a bad number.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> block = mf.transformer_block(16, activation="relu", sigma_w=2 ** 0.5, alpha=0.5)
      >>> [round(s.state.q, 12) for s in mf.trace(mf.compose(block, block), 1.0)]
      [1.0625, 1.5625, 1.625, 2.125]
    """
    if norm not in ("pre", "post"):
        raise ValueError(f"transformer_block: norm={norm!r} is not supported; use 'pre' or 'post'.")
    ln = LayerNormMap(not rms, _check_epsilon("transformer_block", epsilon))
    sw = check_number("transformer_block", "sigma_w", sigma_w, most=_MOST_SIGMA)
    sb = check_number("transformer_block", "sigma_b", sigma_b, most=_MOST_SIGMA)
    a = _check_finite("transformer_block", "alpha", alpha)
    attn = attention(tokens, sw, sw)
    mlp = compose(DenseMap(sw, sb), _activation_map("transformer_block", activation, None))
    mlp = compose(mlp, DenseMap(sw, sb))
    if norm == "pre":
        return compose(ResidualMap(compose(ln, attn), a), ResidualMap(compose(ln, *mlp.maps), a))
    return compose(ResidualMap(attn, a), ln, ResidualMap(mlp, a), ln)


@dataclasses.dataclass(frozen=True)
class Network:
    """Maps applied in order; built by :func:`compose`."""

    maps: tuple[Map, ...]

    def apply(self, state: State) -> State:
        """The state after every map, in order."""
        for m in self.maps:
            state = m.apply(state)
        return state


def compose(*maps: Map) -> Network:
    """The map of a network: ``maps`` applied in forward order (nested networks are
    flattened, so :func:`trace` lists their maps one by one).

    Args:
      *maps: One or more maps (:func:`dense`, :func:`activation`, :func:`residual`,
        :func:`compose`, or any object with ``apply(State) -> State``).

    Returns:
      A :class:`Network`.

    Raises:
      ValueError: If no map is given.
      TypeError: If an argument is not a map.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> layer = mf.compose(mf.dense(2 ** 0.5), mf.activation("relu"))
      >>> net = mf.compose(*[layer] * 10)  # 10 He-initialized Dense/ReLU layers
      >>> len(net.maps), round(net.apply(mf.State(1.0)).q, 12)
      (20, 1.0)
    """
    if not maps:
        raise ValueError("compose: needs at least one map, e.g. compose(dense(1.0)).")
    flat: list[Map] = []
    for i, m in enumerate(maps):
        if isinstance(m, Network):
            flat.extend(m.maps)
        elif hasattr(m, "apply"):
            flat.append(m)
        else:
            raise TypeError(
                f"compose: maps[{i}]={m!r} is not a mean-field map; use dense(...), "
                "activation(...), residual(...) or compose(...)."
            )
    return Network(tuple(flat))


def trace(network: Map, state: State | float = 1.0) -> tuple[Step, ...]:
    """Apply a map and record the state after each of its maps (each map of a
    :func:`compose`; a single map gives one step).

    Args:
      network: A map, usually from :func:`compose`.
      state: The input's :class:`State`, or its second moment ``q`` (finite, >= 0).

    Returns:
      One :class:`Step` per map, in forward order; ``steps[-1].state`` is
      ``network.apply(state)``.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> steps = mf.trace(mf.compose(mf.dense(2.0), mf.activation("linear")), 0.5)
      >>> [round(s.state.q, 12) for s in steps], [round(s.chi, 12) for s in steps]
      ([2.0, 2.0], [4.0, 1.0])
    """
    if not isinstance(state, State):
        state = State(check_number("trace", "state", state, most=_MOST_SIGMA**2))
    maps = network.maps if isinstance(network, Network) else (network,)
    steps = []
    for m in maps:
        out = m.apply(state._replace(chi=1.0))
        state = out._replace(chi=state.chi * out.chi)
        steps.append(Step(m, state, out.chi))
    return tuple(steps)


def sigma_w(init: Any, fan_in: int, fan_out: int, *, shape: Sequence[int] | None = None) -> float:
    """The weight scale ``sqrt(fan_in Var(w))`` of a jaxinit initializer, for :func:`dense`
    and :func:`predict`, from the initializer's variance law.

    Args:
      init: A jaxinit initializer (e.g. ``jaxinit.he_normal()``).
      fan_in: The layer's fan-in (``compute_fans`` of the kernel's shape).
      fan_out: The layer's fan-out.
      shape: The kernel's shape, for laws that need more than the fans (``orthogonal`` of a
        conv kernel).

    Returns:
      ``sigma_w`` as a Python float.

    Raises:
      TypeError: If ``init`` has no variance law (not a jaxinit initializer).

    Example:
      >>> import jaxinit
      >>> from jaxinit import meanfield as mf
      >>> round(mf.sigma_w(jaxinit.he_normal(), 256, 512) ** 2, 12)
      2.0
      >>> round(mf.sigma_w(jaxinit.torch_default(), 256, 512) ** 2, 12)
      0.333333333333
    """
    variance: Any = getattr(init, "variance", None)
    if not callable(variance):
        raise TypeError(
            f"sigma_w: init={init!r} is not a jaxinit initializer (it reports no variance "
            "law); pass sigma_w to dense/predict yourself: sqrt(fan_in * Var(w))."
        )
    law = cast(Callable[..., float], variance)
    return math.sqrt(fan_in * law(fan_in, fan_out, shape=shape))


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
      c: With ``input_corr=``, the correlation ``c_l`` of two inputs' Dense outputs at each
        layer (the C-map iterated, ``q`` the same for both); ``None`` otherwise.
      chi_1: ``C'(1)`` of each layer: the slope at ``c = 1`` of the map from the layer's
        input correlation to its output's (``c_{l-1} -> c_l``; the network input's for the
        first layer), ``chi_1[l] = chi[l-1] q[l-1] / q[l]`` and
        ``chi_1[0] = sigma_w^2 input_var / q[0]``. At a fixed point of ``q`` it equals
        ``chi``; ``chi_1 > 1`` is the chaotic phase, ``< 1`` the ordered one.
    """

    q: np.ndarray
    post_mean: np.ndarray
    post_std: np.ndarray
    chi: np.ndarray
    grad_var: np.ndarray
    c: np.ndarray | None = None
    chi_1: np.ndarray | None = None

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of each Dense layer's output, ``sqrt(q)``."""
        return np.sqrt(self.q)

    @property
    def grad_std(self) -> np.ndarray:
        """Standard deviation of the gradient w.r.t. each Dense output, relative to the last."""
        return np.sqrt(self.grad_var)


def predict(
    activation: Activation = "relu",
    depth: int = 10,
    *,
    sigma_w: float | Sequence[float] | None = None,
    sigma_b: float = 0.0,
    input_var: float = 1.0,
    param: float | None = None,
    widths: Sequence[int] | None = None,
    input_corr: float | None = None,
) -> Prediction:
    """Mean-field prediction of each layer's signal in a Dense/activation chain.

    The chain is ``h_1 = W_1 x + b_1``, ``h_l = W_l phi(h_{l-1}) + b_l`` for ``l = 2..depth``,
    with ``Var(W_l) = sigma_w^2 / fan_in`` and ``Var(b_l) = sigma_b^2`` (any zero-mean
    distribution: normal, uniform and truncated normal give the same prediction). In the
    wide limit each ``h_l`` is Gaussian with variance ``q_l``::

        q_1 = sigma_w^2 input_var + sigma_b^2
        q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2,   z ~ N(0, 1)

    and, for two inputs of second moment ``input_var`` and correlation ``input_corr``, the
    cross moment ``q12_1 = sigma_w^2 input_corr input_var + sigma_b^2``,
    ``q12_l = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2`` with ``(u, v)`` jointly normal
    (variance ``q_{l-1}``, correlation ``c_{l-1} = q12_{l-1} / q_{l-1}``); and, backwards,
    the gradient of the loss w.r.t. ``h_l`` has second moment
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
      input_corr: The correlation of two inputs, in [-1, 1], to predict their correlation
        ``c`` at every layer (one two-dimensional quadrature per layer).

    Returns:
      A :class:`Prediction` of NumPy float64 arrays of length ``depth`` (``c`` is ``None``
      without ``input_corr``).

    Example:
      >>> import jaxinit
      >>> p = jaxinit.predict("relu", 50, sigma_w=2 ** 0.5)
      >>> bool(abs(p.q[-1] - 2) < 1e-12), p.q.shape  # He: E[h_l^2] = 2 E[x^2] at every layer
      (True, (50,))
      >>> bool(jaxinit.predict("tanh", 3, sigma_w=1.0).chi[0] < 1)
      True
      >>> p = jaxinit.predict("relu", 20, input_corr=0.0)  # ReLU correlates inputs
      >>> bool(p.c[0] == 0 < p.c[1] < p.c[-1] < 1), bool(abs(p.chi_1[-1] - 1) < 1e-12)
      (True, True)

    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340;
      Schoenholz et al. 2017, https://arxiv.org/abs/1611.01232
    """
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"predict: depth={depth!r} must be an int >= 1.")
    depth = int(depth)
    act = _activation_map("predict", activation, param)
    if sigma_w is None:
        sigma_w = gain_for("predict", activation, param)
    if isinstance(sigma_w, Sequence | np.ndarray):
        if len(sigma_w) != depth:
            raise ValueError(
                f"predict: sigma_w={sigma_w!r} must be one number or {depth} (one per layer)."
            )
        sws = [check_number("predict", "sigma_w", v, most=_MOST_SIGMA) for v in sigma_w]
    else:
        sws = [check_number("predict", "sigma_w", sigma_w, most=_MOST_SIGMA)] * depth
    sb = check_number("predict", "sigma_b", sigma_b, most=_MOST_SIGMA)
    q_in = check_number("predict", "input_var", input_var, most=_MOST_SIGMA**2)
    if widths is None:
        ratio = np.ones(depth)
    else:
        w = np.asarray(widths)
        if w.shape != (depth,) or not np.issubdtype(w.dtype, np.integer) or (w < 1).any():
            raise ValueError(
                f"predict: widths={widths!r} must be {depth} positive ints (one per layer)."
            )
        ratio = np.append(w[1:] / w[:-1], 1.0)
    if input_corr is not None:
        c0 = check_number("predict", "input_corr", input_corr, signed=True)
        if not -1 <= c0 <= 1:
            raise ValueError(f"predict: input_corr={input_corr!r} must be in [-1, 1].")
        state = State(q_in, float(c0))
    else:
        state = State(q_in)

    # Layer by layer, as trace(compose(dense, activation, dense, ...)) would apply the maps.
    # From the layer where sigma_w stops changing, the dense output's q determines every later
    # layer: once a q repeats (a fixed point, or a cycle of float rounding), the rest repeats
    # with it, bit for bit, and is filled in instead of computed (depth=10**6 of a contracting
    # chain costs a few dozen layers).
    same_from = depth - 1
    while same_from > 0 and sws[same_from - 1] == sws[-1]:
        same_from -= 1
    rows = np.empty((6, depth))  # q, post_mean, post_std, dense chi, activation chi, c
    seen: dict[Any, int] = {}
    for layer in range(depth):
        d = DenseMap(sws[layer], sb).apply(state._replace(chi=1.0))
        key = "nan" if math.isnan(d.q) else d.q
        if d.c is not None:
            key = (key, "nan" if math.isnan(d.c) else d.c)
        if key in seen:
            first = seen[key]
            rest = np.arange(layer, depth)
            rows[:, layer:] = rows[:, first + (rest - first) % (layer - first)]
            break
        if layer >= same_from:
            seen[key] = layer
        a = act.apply(d._replace(chi=1.0))
        rows[:, layer] = (
            d.q,
            a.mean,
            math.sqrt(max(a.q - a.mean * a.mean, 0.0)),
            d.chi,
            a.chi,
            math.nan if d.c is None else d.c,
        )
        state = a
    q, post_mean, post_std, dense_chi, act_chi, c = rows
    q, post_mean, post_std = q.copy(), post_mean.copy(), post_std.copy()
    chi = dense_chi * act_chi
    # C'(1) = d q12_out / d q12_in (the gradient factor, by Price's theorem) * q_in / q_out.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        chi_1 = np.concatenate([[dense_chi[0] * q_in], chi[:-1] * q[:-1]]) / q
    grad_var = np.ones(depth)
    if depth > 1:
        # dL/dh_l = phi'(h_l) * W_{l+1}^T dL/dh_{l+1}: layer l+1's weights carry it back.
        # grad_var[l] = ((grad_var[l+1] * dense_chi[l+1]) * act_chi[l]) * ratio[l], as one
        # sequential running product (same rounding as the loop, at NumPy speed).
        layers = np.arange(depth - 2, -1, -1)
        factors = np.stack([dense_chi[layers + 1], act_chi[layers], ratio[layers]], axis=1)
        with np.errstate(over="ignore", invalid="ignore"):  # an exploding chain gives inf
            running = np.multiply.accumulate(np.concatenate([[1.0], factors.ravel()]))
        grad_var[layers] = running[3::3]
    return Prediction(
        q, post_mean, post_std, chi, grad_var, None if input_corr is None else c.copy(), chi_1
    )


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
    In map terms: ``q*`` is the fixed point of ``compose(dense(sigma_w, sigma_b),
    activation(phi))`` and ``chi`` that map's gradient factor there, which is also the slope
    ``C'(1)`` of its correlation map (Price's theorem): :func:`predict`'s ``chi_1`` tends to 1
    at this ``sigma_w``. Solved in ``q*``: the
    two conditions give ``(q - sigma_b^2) E[phi'^2] = E[phi^2]``,
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
    act = _activation_map("critical_sigma_w", activation, param)
    sb2 = check_number("critical_sigma_w", "sigma_b", sigma_b, most=_MOST_SIGMA) ** 2
    d2, m2 = act._d2, act._m2  # the activation map's E[phi'^2] and E[phi^2] at q

    def done(value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"critical_sigma_w: activation={activation!r} has no edge of chaos "
                f"(E[phi'^2] = {value!r})."
            )
        return 1.0 / math.sqrt(value)

    # Positively homogeneous: chi does not depend on q.
    try:
        probes = [d2(q) for q in (0.25, 1.0, 4.0)]
    except DivergentMoment:  # a homogeneous activation has finite moments at every q
        probes = [0.0, 1.0]
    if max(probes) - min(probes) <= 1e-12 * max(abs(p) for p in probes):
        return done(probes[1])

    def f(q: float) -> float:
        return (q - sb2) * d2(q) - m2(q)

    lo = sb2 * (1 + 1e-9) if sb2 > 0 else 1e-4
    grid = np.geomspace(lo, max(1e4, 100 * sb2), 49)
    values: list[float] = []
    diverged: DivergentMoment | None = None
    for q in grid:  # only where the moments are finite: beyond, fixed points mean nothing
        try:
            values.append(f(q))
        except DivergentMoment as err:
            diverged = err
            break
    if len(values) < len(grid):
        grid = grid[: len(values)]
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
    phi0 = float(evaluate64(act.phi, np.zeros(1))[0])
    if sb2 == 0 and phi0 == 0:
        return done(d2(1e-12))  # the q* = 0 fixed point: sigma_w = 1 / |phi'(0)|
    if diverged is not None and not len(grid):
        raise diverged
    where = (
        f"only at unstable fixed points q* = {[float(f'{u:.4g}') for u in unstable]}"
        if unstable
        else f"at no fixed point q* in [{lo:.3g}, {grid[-1]:.3g}]"
    )
    if diverged is not None:
        where += f" (beyond, the moments are infinite: {diverged})"
    raise ValueError(
        f"critical_sigma_w: activation={activation!r} with sigma_b={sigma_b!r} has no edge "
        f"of chaos: chi = 1 is reached {where}; try another sigma_b."
    )


# --------------------------------------------------------------------------------------------
# Convolutions, parallel branches, named layers, and the maps of jaxinit.models


@dataclasses.dataclass(frozen=True)
class ConvMap:
    """The map of a convolution whose kernel has variance ``sigma_w^2 / fan_in`` (``fan_in =
    kernel area x input channels``), ``coverage`` the fraction of its taps inside the image;
    built by :func:`conv`."""

    sigma_w: float
    sigma_b: float = 0.0
    coverage: float = 1.0

    def apply(self, state: State) -> State:
        """:class:`DenseMap`'s map with ``sigma_w^2`` times ``coverage``."""
        return DenseMap(self.sigma_w * math.sqrt(self.coverage), self.sigma_b).apply(state)


def conv(sigma_w: float, sigma_b: float = 0.0, *, coverage: float = 1.0) -> ConvMap:
    """The map of a convolution with weights of variance ``sigma_w^2 / fan_in``, ``fan_in =
    kernel area x input channels``.

    Each output position sums ``fan_in`` independent weights times the inputs of its patch,
    so its second moment is ``sigma_w^2`` times the patch's mean second moment, whatever the
    correlations between positions; taps that fall in the zero padding contribute nothing.
    Assumptions: every position has the same ``q`` (and mean), and ``coverage`` is the
    average, over output positions, of the fraction of a patch's taps inside the image (1
    for ``"VALID"`` padding or a 1x1 kernel; below 1 with zero padding, about ``1 - (k - 1)
    / (2 H)`` per axis for a k-wide kernel on H positions). Then::

        q -> sigma_w^2 coverage q + sigma_b^2,   q12 -> sigma_w^2 coverage q12 + sigma_b^2

    Zero padding makes ``q`` smaller at the border than inside; a later layer's map, which
    takes one ``q`` for all positions, is then exact for the average only when its own
    coverage is 1. Backward, the gradient factor is :func:`dense`'s (``sigma_w^2 coverage``;
    the stride's ``1 / stride^2`` and the width ratio are not applied).

    Args:
      sigma_w: Weight scale, ``sqrt(fan_in Var(W))``, finite and >= 0.
      sigma_b: Bias standard deviation, finite and >= 0.
      coverage: The fraction of taps inside the image, in (0, 1].

    Returns:
      A :class:`ConvMap`.

    Raises:
      ValueError: If a scale is negative or not finite, or ``coverage`` not in (0, 1].

    Example:
      >>> from jaxinit import meanfield as mf
      >>> mf.conv(2 ** 0.5, coverage=0.75).apply(mf.State(2.0)).q
      3.0000000000000004
    """
    cover = check_number("conv", "coverage", coverage, positive=True)
    if cover > 1:
        raise ValueError(f"conv: coverage={coverage!r} must be in (0, 1].")
    return ConvMap(
        check_number("conv", "sigma_w", sigma_w, most=_MOST_SIGMA),
        check_number("conv", "sigma_b", sigma_b, most=_MOST_SIGMA),
        cover,
    )


def _coverage(size: int, kernel: int, stride: int, padding: int) -> tuple[float, int]:
    """The mean fraction of a ``kernel``-wide window's taps inside ``size`` positions, over
    the output positions of a convolution with ``stride`` and zero ``padding`` (one axis),
    and the output size."""
    out = (size + 2 * padding - kernel) // stride + 1
    inside = [sum(0 <= o * stride - padding + t < size for t in range(kernel)) for o in range(out)]
    return sum(inside) / (kernel * out), out


@dataclasses.dataclass(frozen=True)
class ParallelMap:
    """The map of branches fed the same input and summed; built by :func:`parallel`."""

    branches: tuple[Map, ...]

    def apply(self, state: State) -> State:
        """Second moments add, plus the products of the branches' means."""
        return self._join(state, [b.apply(state._replace(chi=1.0)) for b in self.branches])

    def _join(self, state: State, outs: Sequence[State]) -> State:
        m = sum(o.mean for o in outs)
        q = sum(o.q for o in outs) + m * m - sum(o.mean**2 for o in outs)
        one = State(q, None, state.chi * sum(o.chi for o in outs), m)
        if state.c is None:
            return one
        pairs = [_pair(o, "parallel") for o in outs]
        m2 = sum(p[3] for p in pairs)
        q2 = sum(p[1] for p in pairs) + m2 * m2 - sum(p[3] ** 2 for p in pairs)
        m1s, m2s = [p[2] for p in pairs], [p[3] for p in pairs]
        q12 = sum(p[4] for p in pairs) + m * m2 - sum(a * b for a, b in zip(m1s, m2s, strict=True))
        return _two(one, q2, m2, q12)


def parallel(*branches: Map) -> ParallelMap:
    """The map of ``y = f_1(x) + f_2(x) + ...``: branches that see the same input, with
    independent random weights, summed (e.g. a residual block whose shortcut is a 1x1
    convolution: ``parallel(branch, conv(...))``).

    Every branch holds a random zero-mean layer, so in the wide limit the branches are
    uncorrelated beyond their means: ``q_y = sum_i q_i + sum_{i != j} m_i m_j``,
    ``m_y = sum_i m_i``, ``chi = sum_i chi_i``, and the same for the cross moment of two
    inputs.

    Args:
      *branches: Two or more maps, each holding a :func:`dense`, :func:`conv` or
        :func:`attention` map.

    Returns:
      A :class:`ParallelMap`.

    Raises:
      ValueError: If fewer than two branches are given or one holds no random layer.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> mf.parallel(mf.dense(1.0), mf.dense(2 ** 0.5)).apply(mf.State(1.0)).q
      3.0000000000000004
    """
    if len(branches) < 2:
        raise ValueError(f"parallel: needs two or more branches, got {len(branches)}.")
    for i, b in enumerate(branches):
        if not hasattr(b, "apply"):
            raise TypeError(f"parallel: branches[{i}]={b!r} is not a mean-field map.")
        if not _decorrelates(b):
            raise ValueError(
                f"parallel: branches[{i}]={b!r} must contain a dense(...), conv(...) or "
                "attention(...) map: only random zero-mean layers make the branches "
                "uncorrelated (use residual(...) for an identity shortcut)."
            )
    return ParallelMap(tuple(branches))


@dataclasses.dataclass(frozen=True)
class LayerMap:
    """A map named after the layer whose output it gives; built by :func:`layer`."""

    name: str
    map: Map
    side: bool = False

    def apply(self, state: State) -> State:
        """``map``'s output; with ``side``, the input unchanged (the layer feeds another
        path, e.g. attention's query)."""
        out = self.map.apply(state)
        return state if self.side else out


def layer(name: str, map: Map, *, side: bool = False) -> LayerMap:
    """Name a map after the layer it describes, so :func:`layers` reports the state after it
    under that name (e.g. the path :func:`jaxinit.layer_stats` gives the layer).

    Args:
      name: The layer's name.
      map: Its map.
      side: The layer's output leaves the chain (attention's query and key, which only set
        the attention weights, and its value, whose map :func:`attention` holds): the map is
        reported, and the chain goes on from the layer's input.

    Returns:
      A :class:`LayerMap`.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> net = mf.compose(mf.layer("q", mf.dense(2.0), side=True), mf.layer("out", mf.dense(3.0)))
      >>> [(x.name, x.state.q) for x in mf.layers(net, 1.0)]
      [('q', 4.0), ('out', 9.0)]
    """
    if not isinstance(name, str):
        raise TypeError(f"layer: name={name!r} must be a str.")
    if not hasattr(map, "apply"):
        raise TypeError(f"layer: map={map!r} is not a mean-field map.")
    return LayerMap(name, map, bool(side))


class Layer(NamedTuple):
    """A named layer's output, from :func:`layers`.

    Attributes:
      name: The :func:`layer`'s name.
      state: The :class:`State` of its output (``chi`` accumulated from the traced input
        along the path through the layer).
    """

    name: str
    state: State


def _walk(m: Map, state: State, out: list[Layer], chi: float) -> State:
    """Apply ``m`` to ``state`` (``chi`` 1 on entry to a branch), appending the named layers'
    outputs (their ``chi`` times ``chi``, the factor accumulated before the branch)."""
    if isinstance(m, Network):
        for x in m.maps:
            state = _walk(x, state, out, chi)
        return state
    if isinstance(m, LayerMap):
        inner = _walk(m.map, state, out, chi)
        out.append(Layer(m.name, inner._replace(chi=inner.chi * chi)))
        return state if m.side else inner
    if isinstance(m, ResidualMap):
        b = _walk(m.branch, state._replace(chi=1.0), out, chi * state.chi)
        return m._join(state, b)
    if isinstance(m, ParallelMap):
        start = state._replace(chi=1.0)
        outs = [_walk(b, start, out, chi * state.chi) for b in m.branches]
        return m._join(state, outs)
    return m.apply(state)


def layers(network: Map, state: State | float = 1.0) -> tuple[Layer, ...]:
    """The output of every :func:`layer` of a network, in forward order, residual and
    parallel branches included (where :func:`trace` lists the top-level maps only).

    Args:
      network: A map, e.g. from :func:`of_model`.
      state: The input's :class:`State`, or its second moment ``q``.

    Returns:
      One :class:`Layer` per named layer.

    Example:
      >>> from jaxinit import meanfield as mf
      >>> branch = mf.compose(mf.layer("fc", mf.dense(1.0)), mf.activation("relu"))
      >>> net = mf.residual(mf.compose(branch, mf.layer("fc2", mf.dense(2 ** 0.5))))
      >>> [(x.name, round(x.state.q, 12)) for x in mf.layers(net, 2.0)]
      [('fc', 2.0), ('fc2', 2.0)]
    """
    if not isinstance(state, State):
        state = State(check_number("layers", "state", state, most=_MOST_SIGMA**2))
    out: list[Layer] = []
    _walk(network, state._replace(chi=1.0), out, state.chi)
    return tuple(out)


def _init_sigma_w(init: Any, fan_in: int, fan_out: int, where: str) -> float:
    """``sqrt(fan_in Var(w))`` of a jaxinit initializer (:func:`sigma_w`) or of Flax's /
    ``jax.nn.initializers``' ``variance_scaling`` family (LeCun, Glorot, He: read from the
    closure's ``scale`` and ``mode``; every distribution there has variance ``scale / fan``)
    and ``normal(stddev)``."""
    if callable(getattr(init, "variance", None)):
        return sigma_w(init, fan_in, fan_out)
    code, cells = getattr(init, "__code__", None), getattr(init, "__closure__", None)
    if code is not None and cells is not None:
        env = dict(zip(code.co_freevars, (c.cell_contents for c in cells), strict=True))
        fans = {
            "fan_in": fan_in,
            "fan_out": fan_out,
            "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": math.sqrt(fan_in * fan_out),
        }
        if {"scale", "mode", "distribution"} <= env.keys() and env["mode"] in fans:
            return math.sqrt(fan_in * float(env["scale"]) / fans[env["mode"]])
        if set(env) == {"stddev"}:
            return math.sqrt(fan_in) * float(env["stddev"])
    raise TypeError(
        f"of_model: {where} kernel_init={init!r} has no known variance law; use a jaxinit "
        "initializer (e.g. jaxinit.lecun_normal()) or jax.nn.initializers' variance_scaling "
        "family (lecun_*, glorot_*, he_*) or normal."
    )


#: ``model class -> builder(model, *, input_shape, batch_size, spatial_corr,
#: uniform_attention) -> Network`` for :func:`of_model`. The modules that define models fill it
#: (``jaxinit.app.model_maps`` for :mod:`jaxinit.models`), so this module never imports them.
_MODEL_MAPS: dict[type, Callable[..., Network]] = {}


def of_model(
    model: Any,
    *,
    input_shape: Sequence[int] | None = None,
    batch_size: int | None = None,
    spatial_corr: float = 0.0,
    uniform_attention: bool = False,
) -> Network:
    """The mean-field map of a :mod:`jaxinit.models` network, from the model's own
    configuration.

    Every layer with a kernel is a :func:`layer` named by its path as
    :func:`jaxinit.layer_stats` names it (linen: ``Dense_0``, ``block0/attn/query``; NNX:
    ``layers/0``, ``blocks/0/conv1``, ``block0/mlp_in``), so :func:`layers` gives each one's
    predicted output; :func:`trace` and ``apply`` work on it as on any network. Weight scales
    come from the model's ``kernel_init`` (a jaxinit initializer, through :func:`sigma_w`,
    or Flax's default LeCun normal and the rest of ``jax.nn.initializers``'
    ``variance_scaling`` family), with each layer's fans; biases are 0 (Flax's zero bias
    init); the activation is the model's (a callable, by quadrature); norms have Flax's
    epsilons.

    * :class:`~jaxinit.models.MLP` / :class:`~jaxinit.models.NNXMLP`: ``dense``,
      ``activation`` per layer, then the head's ``dense``. Exact in the wide limit.
    * :class:`~jaxinit.models.ResNet` / :class:`~jaxinit.models.NNXResNet`: :func:`conv`
      maps (the zero padding's ``coverage`` computed from ``input_shape``; 1 with
      ``circular=True``); with ``batch_norm``, :func:`batch_norm` where the model has a
      BatchNorm (``batch_size``: samples per feature, the batch times the positions;
      ``None``: infinite); global average pooling is :func:`avg_pool` over the last feature
      map with ``spatial_corr``; the head's ``dense``. Post-activation blocks (v1, the
      default): ``act(residual(conv1, act, conv2))``, or ``act(parallel(branch, proj))``
      where the shortcut is a 1x1 convolution. Pre-activation blocks (``preact=True``, v2):
      ``residual([bn1], act, conv1, [bn2], act, conv2)``, or ``[bn1], act,
      parallel(branch, proj)`` with the projection; the stem is the conv alone and
      ``[bn_final], act`` precede the pooling. Three assumptions go beyond the maps' own,
      each exact only where said: (1) one ``q`` for all positions: zero padding leaves the
      border with a smaller ``q`` than the inside, which :func:`conv` averages (exact for
      the first conv, and for every conv with ``circular=True``, where all positions are
      alike); (2) each activation takes its input as ``N(0, q)``. In v2 it is: the stream
      is the stem's output plus the branches', independent zero-mean Gaussians in the wide
      limit, and each activation sees the stream or a conv's output; BatchNorm's
      per-channel batch statistics leave a symmetric signal of second moment ``v / (v +
      epsilon)`` exactly, and close to Gaussian for a large batch (ReLU's ``q / 2`` holds
      for any symmetric input, so with ReLU this is exact too). In v1 it is not after the
      first block: the activation after a block's sum sees a Gaussian (the branch) plus the
      block's input, itself an activation's output (for ReLU non-negative, of mean
      ``sqrt(q / 2 pi)``), so the maps are exact up to the first block's sum and
      underestimate ``q`` after it for ReLU (BatchNorm does not remove this: it normalizes
      the branch, not the sum); (3) pooling needs the correlation of positions, which
      convolutions create and these one-position maps do not track: ``spatial_corr`` is an
      input, and the head's ``q`` depends on it. With ``circular=True`` every conv's map is
      exact in the wide limit for v2 (stem, ``conv1``, ``conv2``, ``proj`` of every block),
      and up to the first block's sum for v1.
    * :class:`~jaxinit.models.Transformer` / :class:`~jaxinit.models.NNXTransformer` (and
      the single blocks): per block the query, key and value projections (side layers),
      :func:`attention` as the output projection's map, and the MLP, in pre- or post-LN
      residuals with the model's ``alpha``; ``ln_f`` and the head. Attention is softmax
      attention over ``q.k / sqrt(d)`` logits with the query and key weight scales (Flax's
      default ``attention_fn``; :func:`attention` states the wide-limit assumptions), or
      uniform with ``uniform_attention=True``. For a two-input :class:`State` the two
      inputs are two tokens of a sequence (their correlation ``c`` is the token cosine);
      tokens are alike (every pair with the same correlation); causal attention is described
      for the last token. With ``vocab_size`` the maps start after the embedding: pass the
      embedding's ``State``.

    Args:
      model: A linen :class:`~jaxinit.models.MLP`, :class:`~jaxinit.models.ResNet`,
        :class:`~jaxinit.models.Transformer` or :class:`~jaxinit.models.TransformerBlock`,
        or the NNX version of one.
      input_shape: One example's shape without the batch axis: needed by the linen MLP
        (``(features, ...)``: the first layer's fan-in), the ResNets (``(height, width,
        channels)``) and the transformers (``(tokens, dim)``, or ``(tokens,)`` with
        ``vocab_size``).
      batch_size: For BatchNorm maps, the number of samples per feature (``None``:
        infinite).
      spatial_corr: For the ResNets' global pooling, the correlation of positions
        (:func:`avg_pool`).
      uniform_attention: Take the transformers' attention as uniform (logits 0) instead of
        softmax attention over ``q.k / sqrt(d)`` logits: for an ``attention_fn`` whose
        logits vanish in the wide limit (μP's ``1/d`` scaling) or zero-initialized queries.

    Returns:
      A :class:`Network`.

    Raises:
      TypeError: For another model, or a ``kernel_init`` with no known variance law.
      ValueError: If ``input_shape`` is missing or wrong for the model.

    Example:
      >>> from flax import nnx
      >>> from jaxinit import meanfield as mf
      >>> from jaxinit.models import NNXTransformer
      >>> make = lambda: NNXTransformer(16, depth=2, num_heads=2, rngs=nnx.Rngs(0))
      >>> model = nnx.eval_shape(make)  # no weights needed: of_model reads the configuration
      >>> out = mf.layers(mf.of_model(model, input_shape=(8, 16)), mf.State(1.0, c=0.0))
      >>> [x.name for x in out[:4]]
      ['block0/attn/query', 'block0/attn/key', 'block0/attn/value', 'block0/attn/out']
      >>> bool(out[-1].state.q > out[5].state.q)  # the residual stream grows
      True
      >>> 0 < out[3].state.c < 1  # attention correlates the tokens
      True
    """
    for klass in type(model).__mro__:
        build = _MODEL_MAPS.get(klass)
        if build is not None:
            return build(
                model,
                input_shape=input_shape,
                batch_size=batch_size,
                spatial_corr=spatial_corr,
                uniform_attention=bool(uniform_attention),
            )
    raise TypeError(
        f"of_model: model={type(model).__name__} is not supported; use one of MLP, NNXMLP, "
        "ResNet, NNXResNet, Transformer, NNXTransformer, TransformerBlock, "
        "NNXTransformerBlock (jaxinit.models), or compose the maps yourself."
    )
