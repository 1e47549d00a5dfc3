"""Mean-field signal propagation as composed per-layer maps (no Flax, no sampling).

A network at initialization is described by the maps of its layers, composed in forward
order: :func:`dense` (``q -> sigma_w^2 q + sigma_b^2``), :func:`activation`
(``q -> E[phi(sqrt(q) z)^2]``), :func:`residual` (a skip connection around a branch) and
:func:`compose`. Each map sends a :class:`State` (the second moment ``q`` of the signal's
elements, their mean, the gradient factor ``chi`` accumulated so far, and room for the
correlation ``c`` of two inputs) to the state after the layer, so a whole network is one map
and :func:`trace` lists the state after each layer. :func:`predict` and
:func:`critical_sigma_w` are built on these maps; :func:`sigma_w` reads a weight scale from an
initializer's variance law. These are the recursions of Poole et al. 2016 and Schoenholz et
al. 2017, evaluated with the kink-exact Gaussian quadrature of :mod:`jaxinit._quadrature`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import jax
import numpy as np

from ._checks import check_number
from ._quadrature import evaluate64, gaussian_expectation
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
    "DenseMap",
    "Map",
    "Network",
    "Prediction",
    "ResidualMap",
    "State",
    "Step",
    "activation",
    "compose",
    "critical_sigma_w",
    "dense",
    "predict",
    "residual",
    "sigma_w",
    "trace",
]

# Bound on sigma_w and sigma_b: their squares (the maps' factors) stay finite in float64.
_MOST_SIGMA = 1e150


class State(NamedTuple):
    """The mean-field state of a signal between two layers.

    Attributes:
      q: Second moment ``E[x^2]`` of each element of the signal (over inputs and
        initializations; equal to the variance when ``mean`` is 0).
      c: Correlation of the signals of two different inputs. Reserved for the correlation
        map: every map here carries one input and needs ``c=None``.
      chi: Gradient factor accumulated over the maps applied so far: the second moment of the
        loss gradient w.r.t. the map chain's input over that w.r.t. its output (equal widths).
      mean: ``E[x]`` of each element (0 after a :func:`dense` map: its weights have mean 0).

    Example:
      >>> from jaxinit import meanfield as mf
      >>> mf.State(2.0)
      State(q=2.0, c=None, chi=1.0, mean=0.0)
    """

    q: float
    c: float | None = None
    chi: float = 1.0
    mean: float = 0.0


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


def _one_input(name: str, state: State) -> None:
    if state.c is not None:
        raise NotImplementedError(
            f"{name}: state.c={state.c!r}; the correlation map of two inputs is not "
            "implemented, so maps take a state with c=None."
        )


@dataclasses.dataclass(frozen=True)
class DenseMap:
    """The map of a Dense layer ``h = W x + b`` with ``Var(W) = sigma_w^2 / fan_in`` (any
    zero-mean distribution) and ``Var(b) = sigma_b^2``; built by :func:`dense`."""

    sigma_w: float
    sigma_b: float = 0.0

    def apply(self, state: State) -> State:
        """``q -> sigma_w^2 q + sigma_b^2``, mean 0, ``chi`` times ``sigma_w^2``."""
        _one_input("dense", state)
        sw2 = self.sigma_w**2
        return State(sw2 * state.q + self.sigma_b**2, None, state.chi * sw2, 0.0)


def dense(sigma_w: float, sigma_b: float = 0.0) -> DenseMap:
    """The map of a Dense (or conv) layer with weights of variance ``sigma_w^2 / fan_in``.

    Forward, ``q -> sigma_w^2 q + sigma_b^2`` (``q`` is the input's second moment, so a
    non-zero input mean counts); the output has mean 0. Backward, the gradient's second moment
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
      State(q=4.25, c=None, chi=4.0, mean=0.0)
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
    phi = jax.jit(activation_fn(activation, param))
    dphi = jax.jit(jax.vmap(jax.grad(activation_fn(activation, param))))
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

    def apply(self, state: State) -> State:
        """``q -> E[phi(sqrt(q) z)^2]``, mean ``E[phi]``, ``chi`` times ``E[phi'^2]``."""
        _one_input("activation", state)
        m1, m2, d2 = self.moments(state.q)
        return State(m2, None, state.chi * d2, m1)


def _activation_map(fn_name: str, phi: Activation, param: float | None) -> ActivationMap:
    f, df, kinks = _resolve(fn_name, phi, param)
    return ActivationMap(phi, param, f, df, kinks, fn_name)


def activation(phi: Activation, param: float | None = None) -> ActivationMap:
    """The map of an elementwise activation ``phi`` applied to a Gaussian pre-activation.

    The input is taken as ``N(0, q)`` (as after a :func:`dense` map). Forward,
    ``q -> E[phi(sqrt(q) z)^2]``, ``z ~ N(0, 1)``, with output mean ``E[phi(sqrt(q) z)]``;
    backward, the gradient's second moment grows by ``E[phi'(sqrt(q) z)^2]``. Expectations
    use Gauss-Legendre quadrature with panel edges at the activation's kinks (exact to
    rounding for ReLU-like functions), ``phi'`` comes from ``jax.grad``.

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


def _starts_with_dense(m: Map) -> bool:
    if isinstance(m, Network):
        return _starts_with_dense(m.maps[0])
    return isinstance(m, DenseMap)


@dataclasses.dataclass(frozen=True)
class ResidualMap:
    """The map of a skip connection ``x + alpha f(x)`` around a branch ``f``; built by
    :func:`residual`."""

    branch: Map
    alpha: float = 1.0

    def apply(self, state: State) -> State:
        """``q -> q + 2 alpha E[x] E[f] + alpha^2 q_f``, ``chi`` times
        ``1 + alpha^2 chi_f``."""
        _one_input("residual", state)
        b = self.branch.apply(State(state.q, None, 1.0, state.mean))
        a = self.alpha
        q = state.q + 2 * a * state.mean * b.mean + a * a * b.q
        return State(q, None, state.chi * (1 + a * a * b.chi), state.mean + a * b.mean)


def residual(branch: Map, alpha: float = 1.0) -> ResidualMap:
    """The map of a residual block ``y = x + alpha f(x)`` whose branch ``f`` starts with a
    Dense layer.

    The branch's random zero-mean weights make ``f(x)`` uncorrelated with ``x`` beyond the
    means (in the wide limit), so, with ``q_f``, ``m_f`` and ``chi_f`` the branch map's
    output second moment, mean and gradient factor::

        q_y = q_x + 2 alpha m_x m_f + alpha^2 q_f,     m_y = m_x + alpha m_f
        chi = 1 + alpha^2 chi_f

    Args:
      branch: The branch's map; it must begin with a :func:`dense` map.
      alpha: The branch multiplier, a finite number.

    Returns:
      A :class:`ResidualMap`.

    Raises:
      ValueError: If the branch does not begin with a dense map or ``alpha`` is not finite.

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
    if not _starts_with_dense(branch):
        raise ValueError(
            f"residual: branch={branch!r} must begin with a dense(...) map: only a random "
            "zero-mean layer makes the branch uncorrelated with the skip path."
        )
    a = alpha
    if isinstance(a, bool) or not isinstance(a, int | float | np.integer | np.floating):
        raise ValueError(f"residual: alpha={alpha!r} must be a finite number.")
    if not math.isfinite(float(a)):
        raise ValueError(f"residual: alpha={alpha!r} must be a finite number.")
    return ResidualMap(branch, float(a))


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

    # Layer by layer, as trace(compose(dense, activation, dense, ...)) would apply the maps.
    # From the layer where sigma_w stops changing, the dense output's q determines every later
    # layer: once a q repeats (a fixed point, or a cycle of float rounding), the rest repeats
    # with it, bit for bit, and is filled in instead of computed (depth=10**6 of a contracting
    # chain costs a few dozen layers).
    same_from = depth - 1
    while same_from > 0 and sws[same_from - 1] == sws[-1]:
        same_from -= 1
    rows = np.empty((5, depth))  # q, post_mean, post_std, dense chi, activation chi
    seen: dict[Any, int] = {}
    state = State(q_in)
    for layer in range(depth):
        d = DenseMap(sws[layer], sb).apply(state._replace(chi=1.0))
        key = "nan" if math.isnan(d.q) else d.q
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
        )
        state = a
    q, post_mean, post_std, dense_chi, act_chi = rows
    q, post_mean, post_std = q.copy(), post_mean.copy(), post_std.copy()
    chi = dense_chi * act_chi
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
    In map terms: ``q*`` is the fixed point of ``compose(dense(sigma_w, sigma_b),
    activation(phi))`` and ``chi`` that map's gradient factor there. Solved in ``q*``: the
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
