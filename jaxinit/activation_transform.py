"""DKS and TAT activation transforms, solved in JAX: jittable and differentiable.

Deep Kernel Shaping (DKS, Martens et al. 2021) and Tailored Activation Transformation (TAT,
Zhang et al. 2022) replace an activation ``phi`` by

    phi_hat(x) = output_scale * (phi(input_scale * x + input_shift) + output_shift)

(for Leaky ReLU, with a chosen ``negative_slope``), with parameters chosen so that the whole
network's kernel (its C map) is close to the identity in a controlled way. The network enters
through its *subnetwork maximizing function* ``subnet_max_func(x, r_fn)`` (TAT paper, appendix
"Additional details and pseudocode"): it composes a per-layer map ``r_fn`` the way the network
composes its nonlinear layers, and returns the maximum over subnetworks.

This module follows ``dks.base.activation_transform.get_transformed_activations`` of
google-deepmind/dks (same targets, same starting points, same acceptance rule), but every
step runs in JAX:

* Gaussian expectations use composite Gauss-Legendre quadrature on [-10, 10] with a break at
  each kink of the activation (mapped through the current input scale and shift), so
  piecewise-linear activations are integrated to rounding error, not to O(h^2);
* the local targets come from the same bisection as dks (``jax.lax.while_loop``);
* the activation parameters come from damped Newton steps (``jax.jacfwd``) tried from dks's
  starting points in dks's order; the first converged, accepted root is returned (with
  ``quadrature="dks"``, from a port of dks's solver, MINPACK's ``hybr``);
* every solve goes through ``jax.lax.custom_root``, so the parameters are differentiable with
  respect to the targets (implicit function theorem), and the whole transform can be jitted.

Computations run in the default float dtype: float64 under ``jax_enable_x64`` (recommended:
the parameters are then exact to about 1e-10 relative), float32 otherwise (about 1e-3).

Two conventions differ from dks by design. (1) dks integrates with one 100,000-node
Gauss-Legendre rule on [-10, 10] that straddles kinks. For ReLU and Leaky ReLU with a nonzero
input shift its conditions then jump each time the kink crosses a node, and have several
roots a node spacing apart; the one its solver reaches is up to about 1e-4 relative from the
exact root (3e-5 in dks's tested values), and this module returns the exact one by default.
``transform(..., quadrature="dks")`` reproduces dks instead: dks's rule (nodes and weights
from Bogaert's O(n) formulas, computed once) and dks's solver (MINPACK's ``hybr``, ported to
JAX, from dks's starting points) give dks's solutions, kinked ones included, to about 1e-10;
it is slower (1e5 nodes per evaluation) and its derivatives are those of the discretized
conditions, which ignore the jumps. (2) For odd activations (tanh, erf, ...) the parameters
with input_shift and output_shift negated define the same network up to signs; dks returns
whichever its solver finds first, this module the one with input_shift >= 0. Input scales
are reported >= 0. Where the conditions have several roots, Newton may also converge from a
starting point where dks's MINPACK solver does not (seen for TAT selu), giving another valid
root; ``quadrature="dks"`` follows dks's solver there too.

References:
  Martens et al. 2021, Rapid training of deep neural networks without skip connections or
  normalization layers using Deep Kernel Shaping, https://arxiv.org/abs/2110.01765
  Zhang et al. 2022, Deep Learning without Shortcuts: Shaping the Kernel with Tailored
  Rectifiers, https://openreview.net/forum?id=U0k7XNTiFEq
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

__all__ = [
    "ACTIVATIONS",
    "Method",
    "Quadrature",
    "TransformedActivation",
    "gaussian_mean",
    "gaussian_mean_2d",
    "leaky_relu_c_map",
    "transform",
]

Method = Literal["DKS", "TAT", "untransformed"]
_METHODS: tuple[str, ...] = get_args(Method)

Quadrature = Literal["exact", "dks"]
_QUADRATURES: tuple[str, ...] = get_args(Quadrature)

SubnetMaxFunc = Callable[[Any, Callable[[Any], Any]], Any]

# ---------------------------------------------------------------------------------------------
# Activations (the table of dks.base.activation_getter, in jax.numpy), with their kinks: the
# points where the function or one of its first two derivatives jumps.

_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def _elu(x, a=1.0, scale=1.0):
    return scale * jnp.where(x < 0, a * jnp.expm1(jnp.minimum(x, 0.0)), x)


def _leaky_relu(x, negative_slope=0.01):
    return jnp.where(x < 0, negative_slope * x, x)


def _gelu(x):
    return x * 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _gelu_exact(x):
    return x * (jax.scipy.special.erf(x / math.sqrt(2.0)) + 1) / 2


ACTIVATIONS: dict[str, tuple[Callable[..., Any], tuple[float, ...]]] = {
    "tanh": (jnp.tanh, ()),
    "sigmoid": (jax.nn.sigmoid, ()),
    "erf": (jax.scipy.special.erf, ()),
    "relu": (lambda x: jnp.maximum(x, 0.0), (0.0,)),
    "softplus": (jax.nn.softplus, ()),
    "selu": (lambda x: _elu(x, _SELU_ALPHA, _SELU_LAMBDA), (0.0,)),
    "elu": (_elu, (0.0,)),
    "swish": (lambda x: x * jax.nn.sigmoid(x), ()),
    "bentid": (lambda x: (jnp.sqrt(x**2 + 1.0) - 1.0) / 2.0 + x, ()),
    "atan": (jnp.arctan, ()),
    "asinh": (jnp.arcsinh, ()),
    "square": (lambda x: x**2, ()),
    "softsign": (lambda x: x / (1 + jnp.abs(x)), (0.0,)),
    "leaky_relu": (_leaky_relu, (0.0,)),
    "gelu": (_gelu, ()),
    "gelu_exact": (_gelu_exact, ()),
    "sin": (jnp.sin, ()),
    "cos": (jnp.cos, ()),
}
"""Named activations: ``name -> (function, kinks)``, the names of dks's activation getter."""

# Odd activations: (input_scale, input_shift, output_shift) and (input_scale, -input_shift,
# -output_shift) give the same network up to signs; the root with input_shift >= 0 is reported.
_ODD = frozenset({"tanh", "erf", "atan", "asinh", "softsign", "sin"})

# ---------------------------------------------------------------------------------------------
# Quadrature

_HALF_WIDTH = 10.0  # the Gaussian density is below 8e-23 beyond
_PANELS = 10  # panels per smooth piece
_ORDER = 16  # Gauss-Legendre nodes per panel
_LEG_X, _LEG_W = np.polynomial.legendre.leggauss(_ORDER)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _float_dtype() -> Any:
    return jnp.result_type(float)


def _nodes(breaks: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Nodes ``z`` and weights ``w`` (density included) with ``sum(w f(z)) ~ E[f(z)]``.

    ``[-10, 10]`` is cut at ``breaks`` (any values; clipped, sorted) into smooth pieces; each
    piece gets ``_PANELS`` equal panels of ``_ORDER`` Gauss-Legendre nodes.
    """
    h = _HALF_WIDTH
    inner = jnp.sort(jnp.clip(jnp.asarray(breaks, dtype).reshape(-1), -h, h))
    edges = jnp.concatenate([jnp.full((1,), -h, dtype), inner, jnp.full((1,), h, dtype)])
    frac = jnp.arange(_PANELS + 1, dtype=dtype) / _PANELS
    grid = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * frac[None, :]
    a, b = grid[:, :-1].reshape(-1, 1), grid[:, 1:].reshape(-1, 1)
    half = 0.5 * (b - a)
    z = half * jnp.asarray(_LEG_X, dtype)[None, :] + 0.5 * (a + b)
    w = half * jnp.asarray(_LEG_W, dtype)[None, :] * jnp.exp(-0.5 * z * z) / _SQRT_2PI
    return z.reshape(-1), w.reshape(-1)


# dks's rule (``quadrature="dks"``): scipy.integrate.fixed_quad with one 100,000-node
# Gauss-Legendre rule on [-10, 10], kinks ignored.
_DKS_ORDER = 100_000

# Bogaert 2014 (FastGL, BSD licence): the k-th Gauss-Legendre node from x = 1 is cos(theta_k),
# with theta_k and the weight given by expansions in 1/(n + 1/2) around the k-th zero of J0.
# Tables hold J0's first zeros and J1 at them squared; beyond, McMahon's expansion and its
# counterpart for J1^2 are exact to rounding in float64.
_J0_ZEROS = (
    2.40482555769577276862163187933, 5.52007811028631064959660411281,
    8.65372791291101221695419871266, 11.7915344390142816137430449119,
    14.9309177084877859477625939974, 18.0710639679109225431478829756,
    21.2116366298792589590783933505, 24.3524715307493027370579447632,
    27.4934791320402547958772882346, 30.6346064684319751175495789269,
    33.7758202135735686842385463467, 36.9170983536640439797694930633,
)  # fmt: skip
_J1_AT_ZEROS_SQ = (
    0.269514123941916926139021992911, 0.115780138582203695807812836182,
    0.0736863511364082151406476811985, 0.0540375731981162820417749182758,
    0.0426614290172430912655106063495, 0.0352421034909961013587473033648,
    0.0300210701030546726750888157688, 0.0261473914953080885904584675399,
    0.0231591218246913922652676382178, 0.0207838291222678576039808057297,
    0.0188504506693176678161056800214, 0.0172461575696650082995240053542,
    0.0158935181059235978027065594287,
)  # fmt: skip
# Polynomial coefficients, highest degree first (for np.polyval).
_MCMAHON = (
    5.09225462402226769498681286758e7, -8.49353580299148769921876983660e5,
    18690.4765282320653831636345064, -567.644412135183381139802038240,
    25.3364147973439050099206349206, -1.82443876720610119047619047619,
    0.246028645833333333333333333333, -0.807291666666666666666666666667e-1, 0.125,
)  # fmt: skip
_J1_SQ_ASYMPTOTIC = (
    0.185395398206345628711318848386, -0.266837393702323757700998557826e-1,
    0.496101423268883102872271417616e-2, -0.123632349727175414724737657367e-2,
    0.433710719130746277915572905025e-3, -0.228969902772111653038747229723e-3,
    0.198924364245969295201137972743e-3, -0.303380429711290253026202643516e-3,
    0.0, 0.202642367284675542887758926420,
)  # fmt: skip
_THETA_F = (
    (
        -1.29052996274280508473467968379e-12, 2.40724685864330121825976175184e-10,
        -3.13148654635992041468855740012e-8, 0.275573168962061235623801563453e-5,
        -0.148809523713909147898955880165e-3, 0.416666666665193394525296923981e-2,
        -0.416666666666662959639712457549e-1,
    ),
    (
        2.20639421781871003734786884322e-9, -7.53036771373769326811030753538e-8,
        0.161969259453836261731700382098e-5, -0.253300326008232025914059965302e-4,
        0.282116886057560434805998583817e-3, -0.209022248387852902722635654229e-2,
        0.815972221772932265640401128517e-2,
    ),
    (
        -2.97058225375526229899781956673e-8, 5.55845330223796209655886325712e-7,
        -0.567797841356833081642185432056e-5, 0.418498100329504574443885193835e-4,
        -0.251395293283965914823026348764e-3, 0.128654198542845137196151147483e-2,
        -0.416012165620204364833694266818e-2,
    ),
)  # fmt: skip
_WEIGHT_F = (
    (
        -2.20902861044616638398573427475e-14, 2.30365726860377376873232578871e-12,
        -1.75257700735423807659851042318e-10, 1.03756066927916795821098009353e-8,
        -4.63968647553221331251529631098e-7, 0.149644593625028648361395938176e-4,
        -0.326278659594412170300449074873e-3, 0.436507936507598105249726413120e-2,
        -0.305555555555553028279487898503e-1, 0.833333333333333302184063103900e-1,
    ),
    (
        3.63117412152654783455929483029e-12, 7.67643545069893130779501844323e-11,
        -7.12912857233642220650643150625e-9, 2.11483880685947151466370130277e-7,
        -0.381817918680045468483009307090e-5, 0.465969530694968391417927388162e-4,
        -0.407297185611335764191683161117e-3, 0.268959435694729660779984493795e-2,
        -0.111111111111214923138249347172e-1,
    ),
    (
        2.01826791256703301806643264922e-9, -4.38647122520206649251063212545e-8,
        5.08898347288671653137451093208e-7, -0.397933316519135275712977531366e-5,
        0.200559326396458326778521795392e-4, -0.422888059282921161626339411388e-4,
        -0.105646050254076140548678457002e-3, -0.947969308958577323145923317955e-4,
        0.656966489926484797412985260842e-2,
    ),
)  # fmt: skip


@functools.cache
def _legendre_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n``-point Gauss-Legendre rule on [-1, 1]: nodes (ascending) and weights, float64.

    Bogaert's iteration-free formulas, O(n): accurate to rounding for n >= 100, so large rules
    cost milliseconds where the eigenvalue method costs minutes. For n = 2000 the nodes are
    within 4.2e-16 of ``scipy.special.roots_legendre``'s and the weights within 1.2e-12
    relative for |x| <= 0.9 (near +-1 SciPy's weights are the less accurate ones, by up to
    2e-8); the rule integrates every Legendre polynomial of degree < 2n to 3e-15.

    References:
      Bogaert 2014, Iteration-free computation of Gauss-Legendre quadrature nodes and
      weights, SIAM J. Sci. Comput. 36(3), A1008-A1026, https://doi.org/10.1137/140954969
    """
    if n < 100:
        raise ValueError(f"_legendre_rule: n={n} must be >= 100 for the asymptotic formulas.")
    k = np.arange(1, (n + 1) // 2 + 1, dtype=np.float64)  # theta_k <= pi / 2
    small = k <= len(_J0_ZEROS)
    z = np.pi * (k - 0.25)
    j0 = np.where(small, 0.0, z + np.polyval(_MCMAHON, 1.0 / z**2) / z)
    j0[small] = _J0_ZEROS[: int(small.sum())]
    small = k <= len(_J1_AT_ZEROS_SQ)
    u = 1.0 / (k - 0.25)
    j1_sq = np.where(small, 0.0, u * np.polyval(_J1_SQ_ASYMPTOTIC, u * u))
    j1_sq[small] = _J1_AT_ZEROS_SQ[: int(small.sum())]

    h = 1.0 / (n + 0.5)
    alpha = h * j0
    a2 = alpha * alpha
    nu_over_sin = j0 / np.sin(alpha)
    s = h * h * nu_over_sin
    s2 = s * s
    f1, f2, f3 = (np.polyval(c, a2) for c in _THETA_F)
    theta = h * (j0 + alpha * s * (f1 + s2 * (f2 + s2 * f3)))
    g1, g2, g3 = (np.polyval(c, a2) for c in _WEIGHT_F)
    weight = 2.0 * h / (j1_sq * nu_over_sin * (1.0 + s2 * (g1 + s2 * (g2 + s2 * g3))))

    right = np.cos(theta)  # descending, from near 1
    if n % 2:
        right[-1] = 0.0  # theta = pi / 2 exactly
        x = np.concatenate([-right[:-1], right[::-1]])
        w = np.concatenate([weight[:-1], weight[::-1]])
    else:
        x = np.concatenate([-right, right[::-1]])
        w = np.concatenate([weight, weight[::-1]])
    x.flags.writeable = w.flags.writeable = False
    return x, w


@functools.cache
def _dks_rule() -> tuple[np.ndarray, np.ndarray]:
    """dks's rule: nodes ``z`` and weights (density included) on [-10, 10], float64."""
    x, w = _legendre_rule(_DKS_ORDER)
    z = _HALF_WIDTH * x
    wz = _HALF_WIDTH * w * np.exp(-0.5 * z * z) / _SQRT_2PI
    z.flags.writeable = wz.flags.writeable = False
    return z, wz


def _kinks_array(kinks: Sequence[float] | jax.Array, dtype: Any) -> jax.Array:
    return jnp.asarray(kinks, dtype).reshape(-1)


def gaussian_mean(
    fn: Callable[[jax.Array], jax.Array],
    *,
    kinks: Sequence[float] | jax.Array = (),
) -> jax.Array:
    """E[fn(z)] for z ~ N(0, 1), by Gauss-Legendre quadrature split at ``kinks``.

    ``[-10, 10]`` is cut at the kinks (points where ``fn`` or a derivative jumps) and each
    smooth piece is integrated by 10 panels of 16 Gauss-Legendre nodes, so piecewise-smooth
    functions are integrated to rounding error. Jittable, and differentiable in anything
    ``fn`` closes over and in ``kinks``.

    Args:
      fn: An elementwise function of an array.
      kinks: Points where ``fn`` or its first derivatives are discontinuous (traced values
        allowed).

    Returns:
      A scalar in the default float dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinit.activation_transform import gaussian_mean
      >>> moment = jax.jit(lambda k: gaussian_mean(lambda z: jnp.maximum(z - k, 0) ** 2, kinks=k))
      >>> bool(abs(moment(0.0) - 0.5) < 1e-6)
      True
    """
    dtype = _float_dtype()
    z, w = _nodes(_kinks_array(kinks, dtype), dtype)
    return jnp.sum(w * fn(z))


def gaussian_mean_2d(
    fn1: Callable[[jax.Array], jax.Array],
    fn2: Callable[[jax.Array], jax.Array],
    c: jax.Array | float,
    *,
    kinks1: Sequence[float] | jax.Array = (),
    kinks2: Sequence[float] | jax.Array = (),
) -> jax.Array:
    """E[fn1(u) fn2(c u + sqrt(1 - c^2) v)] for independent u, v ~ N(0, 1), ``-1 <= c <= 1``.

    An outer integral over ``u`` (cut at ``kinks1`` and at ``k / c`` for each ``k`` in
    ``kinks2``) of the inner conditional expectation over ``v``, which is cut at the
    conditional location ``(k - c u) / sqrt(1 - c^2)`` of each kink of ``fn2``. At ``|c| = 1``
    it is the one-dimensional E[fn1(u) fn2(c u)].

    Args:
      fn1: Elementwise function of the first input.
      fn2: Elementwise function of the second input.
      c: Correlation of the two inputs, in [-1, 1].
      kinks1: Kinks of ``fn1``.
      kinks2: Kinks of ``fn2``.

    Returns:
      A scalar in the default float dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinit.activation_transform import gaussian_mean_2d
      >>> relu = lambda x: jnp.maximum(x, 0.0)
      >>> kernel = jax.jit(lambda c: gaussian_mean_2d(relu, relu, c, kinks1=(0.0,), kinks2=(0.0,)))
      >>> bool(abs(kernel(0.0) - 1 / (2 * jnp.pi)) < 1e-6)
      True
    """
    dtype = _float_dtype()
    c = jnp.asarray(c, dtype)
    k1, k2 = _kinks_array(kinks1, dtype), _kinks_array(kinks2, dtype)
    s = jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0))
    safe_c = jnp.where(c == 0, 1.0, c)
    outer_breaks = jnp.concatenate([k1, jnp.where(c == 0, _HALF_WIDTH, k2 / safe_c)])
    u, wu = _nodes(outer_breaks, dtype)
    safe_s = jnp.where(s == 0, 1.0, s)

    def inner(ui):
        breaks = jnp.where(s == 0, _HALF_WIDTH, (k2 - c * ui) / safe_s)
        v, wv = _nodes(breaks, dtype)
        return jnp.sum(wv * fn2(c * ui + s * v))

    return jnp.sum(wu * fn1(u) * jax.vmap(inner)(u))


def leaky_relu_c_map(c: jax.Array | float, negative_slope: jax.Array | float) -> jax.Array:
    """The local C map of a Leaky ReLU scaled to Q(1) = 1 (TAT paper, eq. for C_f):

    ``((1 - a)^2 (sqrt(1 - c^2) + (pi - arccos c) c) / pi + 2 a c) / (1 + a^2)``.

    Args:
      c: Input correlation, in [-1, 1].
      negative_slope: The slope ``a`` for negative inputs.

    Returns:
      The output correlation, same shape as ``c``.

    Example:
      >>> from jaxinit.activation_transform import leaky_relu_c_map
      >>> bool(abs(leaky_relu_c_map(1.0, 0.3) - 1.0) < 1e-6)
      True
    """
    a = negative_slope
    return (
        (1 - a) ** 2 * (jnp.sqrt(1 - c**2) + (jnp.pi - jnp.arccos(c)) * c) / jnp.pi + 2 * a * c
    ) / (1 + a**2)


# ---------------------------------------------------------------------------------------------
# Result


@dataclasses.dataclass(frozen=True)
class TransformedActivation:
    """A transformed activation and its parameters (a pytree: it passes through ``jit``).

    ``self(x) = output_scale * (phi(input_scale * x + input_shift) + output_shift)``, with
    ``phi`` the base activation (called with ``negative_slope`` for Leaky ReLU).

    Attributes:
      input_scale: Scale of the input (1 where the method does not set it).
      input_shift: Shift of the input (0 where not set).
      output_shift: Shift of ``phi``'s output (0 where not set).
      output_scale: Scale of the shifted output.
      negative_slope: Leaky ReLU's negative slope; None for other activations.
      converged: Whether every solve met its tolerance (a boolean array; check it when the
        transform runs under ``jit``, where failure cannot raise).
      name: The activation's name (``fn.__name__`` for a callable).
      base: The base activation ``phi``.
      kinks: The kinks of ``phi`` used by the quadrature.
      solved: The parameters dks reports for this method, in its order.
    """

    input_scale: jax.Array
    input_shift: jax.Array
    output_shift: jax.Array
    output_scale: jax.Array
    negative_slope: jax.Array | None
    converged: jax.Array
    name: str = dataclasses.field(metadata={"static": True})
    base: Callable[..., Any] = dataclasses.field(metadata={"static": True})
    kinks: tuple[float, ...] = dataclasses.field(metadata={"static": True})
    solved: tuple[str, ...] = dataclasses.field(metadata={"static": True})

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the transformed activation elementwise (in ``x``'s float dtype)."""
        x = jnp.asarray(x)
        dt = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else _float_dtype()

        def cast(v):
            return jnp.asarray(v, dt)

        y = x.astype(dt) * cast(self.input_scale) + cast(self.input_shift)
        if self.negative_slope is None:
            y = self.base(y)
        else:
            y = self.base(y, cast(self.negative_slope))
        return (y + cast(self.output_shift)) * cast(self.output_scale)

    @property
    def input_kinks(self) -> tuple[float, ...]:
        """Where the transformed activation has its kinks, in its own input ``x``: each kink
        ``k`` of ``base`` at ``(k - input_shift) / input_scale`` (concrete parameters only),
        for quadratures over the transformed function (:func:`jaxinit.meanfield.activation`).
        """
        a, b = float(self.input_scale), float(self.input_shift)
        return tuple((k - b) / a for k in self.kinks)

    def as_dict(self) -> dict[str, jax.Array]:
        """The parameters dks reports for this method (``solved``), by name."""
        return {k: getattr(self, k) for k in self.solved}

    def c_map(self, c: jax.Array | float) -> jax.Array:
        """The local C map at correlation ``c`` for unit-variance inputs: E[phi_hat(u)
        phi_hat(c u + sqrt(1 - c^2) v)] (equal to the correlation, since Q(1) = 1)."""
        dtype = _float_dtype()
        a = jnp.asarray(self.input_scale, dtype)
        b = jnp.asarray(self.input_shift, dtype)
        breaks = _kink_locations(_kinks_array(self.kinks, dtype), a, b)
        return gaussian_mean_2d(self, self, c, kinks1=breaks, kinks2=breaks)

    def q_map(self, q: jax.Array | float) -> jax.Array:
        """The local Q map: E[phi_hat(sqrt(q) z)^2], z ~ N(0, 1)."""
        dtype = _float_dtype()
        sq = jnp.sqrt(jnp.asarray(q, dtype))
        a = jnp.asarray(self.input_scale, dtype) * sq
        b = jnp.asarray(self.input_shift, dtype)
        breaks = _kink_locations(_kinks_array(self.kinks, dtype), a, b)
        return gaussian_mean(lambda z: self(sq * z) ** 2, kinks=breaks)


jax.tree_util.register_dataclass(
    TransformedActivation,
    data_fields=[
        "input_scale",
        "input_shift",
        "output_shift",
        "output_scale",
        "negative_slope",
        "converged",
    ],
    meta_fields=["name", "base", "kinks", "solved"],
)


# ---------------------------------------------------------------------------------------------
# Local quantities of a transformed activation


def _kink_locations(kinks: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """Where ``phi(scale x + shift)`` has its kinks, in units of ``x``."""
    safe = jnp.where(scale == 0, 1.0, scale)
    return jnp.where(scale == 0, _HALF_WIDTH, (kinks - shift) / safe)


def _derivatives(
    phi: Callable[[jax.Array], jax.Array], y: jax.Array, order: int
) -> tuple[jax.Array, ...]:
    """``(phi(y), phi'(y), phi''(y))`` up to ``order`` for an elementwise ``phi``."""
    ones = jnp.ones_like(y)
    if order == 0:
        return (phi(y),)
    if order == 1:
        return jax.jvp(phi, (y,), (ones,))
    (f0, f1), (_, f2) = jax.jvp(lambda t: jax.jvp(phi, (t,), (ones,)), (y,), (ones,))
    return f0, f1, f2


class _Local:
    """Per-layer statistics of phi_hat for given raw parameters (all at q = 1).

    ``rule`` is None for the kink-aware quadrature, else fixed nodes and weights (density
    included), dks's rule for ``quadrature="dks"``.
    """

    def __init__(self, phi, kinks, scale, shift, output_shift, c_val_0, order, rule=None):
        dtype = _float_dtype()
        if rule is None:
            x, w = _nodes(_kink_locations(kinks, scale, shift), dtype)
        else:
            x, w = rule
        derivs = _derivatives(phi, scale * x + shift, order)
        f0 = derivs[0]
        if c_val_0 is not None:
            output_shift = jnp.sqrt(c_val_0) - jnp.sum(w * f0)
        g = f0 + output_shift
        output_scale = 1.0 / jnp.sqrt(jnp.sum(w * g * g))
        self.output_shift, self.output_scale = output_shift, output_scale
        phat = output_scale * g
        if order >= 1:
            d1 = output_scale * scale * derivs[1]
            self.q_slope = jnp.sum(w * phat * d1 * x)
            self.c_slope_1 = jnp.sum(w * d1 * d1)
        if order >= 2:
            d2 = output_scale * scale * scale * derivs[2]
            self.c_curv = jnp.sum(w * d2 * d2)


# ---------------------------------------------------------------------------------------------
# Solvers


def _tracing(*xs: Any) -> bool:
    return any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves(xs))


def _bisect_increasing(fn, target, start, lo, hi, *, tol, max_eval=100):
    """x with |fn(x) - target| < tol for increasing ``fn``: dks's ``_solve_increasing``.

    The same search (halve towards the bracket; double while the upper end is infinite), as a
    ``while_loop``; differentiable in ``target`` and in what ``fn`` closes over.
    Returns ``(x, converged)``.
    """
    dtype = _float_dtype()
    target = jnp.asarray(target, dtype)

    def residual(x):
        return jnp.asarray(fn(x), dtype) - target

    def solve(f, x0):
        def cond(s):
            return (~s[4]) & (s[3] < max_eval)

        def body(s):
            x, lo, hi, i, _ = s
            v = f(x)
            done = jnp.abs(v) < tol
            above, below = v > 0, v < 0
            x_up = jnp.where(jnp.isinf(hi), 2 * x, 0.5 * (x + hi))
            nx = jnp.where(done, x, jnp.where(above, 0.5 * (x + lo), jnp.where(below, x_up, x)))
            nlo = jnp.where(~done & below, x, lo)
            nhi = jnp.where(~done & above, x, hi)
            return nx, nlo, nhi, i + 1, done

        init = (x0, jnp.asarray(lo, dtype), jnp.asarray(hi, dtype), jnp.int32(0), False)
        x, _, _, _, done = jax.lax.while_loop(cond, body, init)
        return x, jnp.asarray(done).astype(
            dtype
        )  # a float flag: custom_root's JVP rejects a bool aux

    x, done = jax.lax.custom_root(
        residual,
        jnp.asarray(start, dtype),
        solve,
        lambda g, y: y / g(jnp.ones_like(y)),
        has_aux=True,
    )
    return x, done > 0


def _det(m: jax.Array) -> jax.Array:
    n = m.shape[-1]
    if n == 1:
        return m[..., 0, 0]
    if n == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    if n == 3:
        return (
            m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
            - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
            + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
        )
    raise NotImplementedError(n)


def _small_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^-1 b`` for n <= 3 by the adjugate (cheaper to compile than a LAPACK call, and
    linear in ``b``, so reverse mode can transpose it)."""
    n = a.shape[-1]
    if n == 1:
        return b / a[0, 0]
    idx = np.arange(n)
    rows = []
    for j in range(n):  # adj[j, i] = (-1)^(i + j) det(a without row i and column j)
        rows.append(
            jnp.stack(
                [(-1) ** (i + j) * _det(a[np.ix_(idx[idx != i], idx[idx != j])]) for i in range(n)]
            )
        )
    return (jnp.stack(rows) @ b) / _det(a)


def _tangent_solve(g: Callable[[jax.Array], jax.Array], y: jax.Array) -> jax.Array:
    """Solve the linear ``g(x) = y``; the Jacobian is taken at a constant, not at ``y``, so
    the solve stays linear in ``y`` (reverse mode transposes it)."""
    return _small_solve(jax.jacfwd(g)(jnp.zeros(y.shape, y.dtype)), y)


_NEWTON_ITERS = 60
_BACKTRACK = 12  # step sizes 1, 1/2, ..., 2^-11


def _newton_from_starts(f, starts, accept, ftol):
    """First root of ``f`` (trying ``starts`` in order) that converges and is accepted.

    Damped Newton: full Jacobian by ``jax.jacfwd``, the first of the step sizes 1, 1/2, ...
    that reduces max|f|. Returns ``(root, converged)``.
    """
    steps = 0.5 ** jnp.arange(_BACKTRACK, dtype=starts.dtype)

    def norm(r):
        n = jnp.max(jnp.abs(r), axis=-1)
        return jnp.where(jnp.isfinite(n), n, jnp.inf)

    def newton(p0):
        def cond(s):
            return (~s[3]) & (s[2] < _NEWTON_ITERS)

        def body(s):
            p, n, i, _ = s
            fp = f(p)
            jac = jax.jacfwd(f)(p)
            dp = _small_solve(jac, -fp)
            cand = p[None, :] + steps[:, None] * dp[None, :]
            nc = norm(jax.vmap(f)(cand))
            better = nc < n
            k = jnp.argmax(better)
            moved = better[k]
            p_new = jnp.where(moved, cand[k], p)
            n_new = jnp.where(moved, nc[k], n)
            return p_new, n_new, i + 1, (~moved) | (n_new <= ftol)

        n0 = norm(f(p0))
        p, n, _, _ = jax.lax.while_loop(cond, body, (p0, n0, jnp.int32(0), n0 <= ftol))
        return p, n <= ftol

    return _first_accepted(newton, starts, accept)


def _first_accepted(solve, starts, accept):
    """``solve`` from each starting point in order; the first converged root that ``accept``
    takes. Returns ``(root, converged)``."""

    def cond(s):
        return (~s[2]) & (s[0] < starts.shape[0])

    def body(s):
        i, _, _ = s
        p, ok = solve(starts[i])
        return i + 1, p, ok & accept(p)

    _, p, ok = jax.lax.while_loop(cond, body, (jnp.int32(0), starts[0], jnp.asarray(False)))
    return p, ok


# MINPACK's hybrd as scipy.optimize.root(method="hybr") calls it (dks's solver): Powell's
# hybrid method with a forward-difference Jacobian, Broyden updates between evaluations,
# scaling by the Jacobian's column norms, and its tests for success and slow progress.
_HYBR_XTOL = 1.49012e-8  # scipy's default, sqrt(eps) of float64; float32 uses its own sqrt(eps)
_HYBR_FACTOR = 100.0


def _dogleg(r, diag, qtb, delta, eps):
    """MINPACK ``dogleg``: the step minimizing ||qtb - R x|| within ||diag x|| <= delta."""
    d = jnp.diagonal(r)
    small = eps * jnp.max(jnp.abs(jnp.triu(r)), axis=0)  # MINPACK's guard for a zero pivot
    d = jnp.where(d == 0, jnp.where(small == 0, eps, small), d)
    r = r + jnp.diag(d - jnp.diagonal(r))
    gn = jax.scipy.linalg.solve_triangular(r, qtb, lower=False)
    qnorm = jnp.linalg.norm(diag * gn)
    grad = (r.T @ qtb) / diag
    gnorm = jnp.linalg.norm(grad)
    g = grad / jnp.where(gnorm == 0, 1.0, gnorm) / diag
    rg = jnp.linalg.norm(r @ g)
    sgnorm = jnp.where(gnorm == 0, 0.0, gnorm / jnp.where(rg == 0, 1.0, rg) / rg)
    bnorm = jnp.linalg.norm(qtb)
    dq, sd = delta / qnorm, sgnorm / delta
    temp = (bnorm / gnorm) * (bnorm / qnorm) * sd
    temp = temp - dq * sd**2 + jnp.sqrt((temp - dq) ** 2 + (1 - dq**2) * (1 - sd**2))
    alpha = jnp.where(gnorm == 0, dq, jnp.where(sgnorm >= delta, 0.0, dq * (1 - sd**2) / temp))
    step = (1 - alpha) * jnp.minimum(sgnorm, delta) * g + alpha * gn
    return jnp.where(qnorm <= delta, gn, step)


def _hybr(f, x0):
    """``scipy.optimize.root(f, x0, method="hybr")``: returns ``(x, success)``."""
    dtype = x0.dtype
    n = x0.shape[0]
    eps = jnp.finfo(dtype).eps
    h_rel = jnp.sqrt(eps)
    xtol = _HYBR_XTOL if dtype == jnp.float64 else h_rel
    maxfev = 200 * (n + 1)

    def jacobian(x, fx):
        h = jnp.where(x == 0, h_rel, h_rel * jnp.abs(x))
        xs = x[None, :] + jnp.diag(h)
        return ((jax.vmap(f)(xs) - fx[None, :]) / h[:, None]).T

    def cond(s):
        return s["info"] == 0

    def body(s):
        x, fx, fnorm = s["x"], s["f"], s["fnorm"]
        # outer loop: a new Jacobian (on the first iteration it also sets scale and bound)
        jac = jax.lax.cond(s["new_jac"], lambda: jacobian(x, fx), lambda: s["jac"])
        nfev = (s["nfev"] + jnp.where(s["new_jac"], n, 0)).astype(jnp.int32)
        cols = jnp.linalg.norm(jac, axis=0)
        init = s["new_jac"] & (s["iter"] == 1)
        diag = jnp.where(init, jnp.where(cols == 0, 1.0, cols), s["diag"])
        xnorm = jnp.where(init, jnp.linalg.norm(diag * x), s["xnorm"])
        delta = jnp.where(init, _HYBR_FACTOR * xnorm, s["delta"])
        delta = jnp.where(init & (delta == 0), _HYBR_FACTOR, delta)
        diag = jnp.where(s["new_jac"], jnp.maximum(diag, cols), diag)
        jeval = s["new_jac"]
        # inner loop: a dogleg step
        q, r = jnp.linalg.qr(jac)
        qtf = q.T @ fx
        p = -_dogleg(r, diag, qtf, delta, eps)
        pnorm = jnp.linalg.norm(diag * p)
        delta = jnp.where(s["iter"] == 1, jnp.minimum(delta, pnorm), delta)
        f1 = f(x + p)
        nfev = nfev + 1
        fnorm1 = jnp.linalg.norm(f1)
        actred = jnp.where(fnorm1 < fnorm, 1 - (fnorm1 / fnorm) ** 2, -1.0)
        lin = jnp.linalg.norm(qtf + r @ p)
        prered = jnp.where(lin < fnorm, 1 - (lin / fnorm) ** 2, 0.0)
        ratio = jnp.where(prered > 0, actred / jnp.where(prered > 0, prered, 1.0), 0.0)
        bad = ratio < 0.1
        ncsuc = jnp.where(bad, 0, s["ncsuc"] + 1).astype(jnp.int32)
        ncfail = jnp.where(bad, s["ncfail"] + 1, 0).astype(jnp.int32)
        grown = jnp.where((ratio >= 0.5) | (ncsuc > 1), jnp.maximum(delta, pnorm / 0.5), delta)
        grown = jnp.where(jnp.abs(ratio - 1) <= 0.1, pnorm / 0.5, grown)
        delta = jnp.where(bad, 0.5 * delta, grown)
        ok = ratio >= 1e-4
        x_new = jnp.where(ok, x + p, x)
        f_new = jnp.where(ok, f1, fx)
        xnorm = jnp.where(ok, jnp.linalg.norm(diag * x_new), xnorm)
        fnorm_new = jnp.where(ok, fnorm1, fnorm)
        it = s["iter"] + ok.astype(jnp.int32)
        nslow1 = jnp.where(actred >= 1e-3, 0, s["nslow1"] + 1).astype(jnp.int32)
        nslow2 = jnp.where(actred >= 0.1, 0, s["nslow2"] + jeval.astype(jnp.int32))
        nslow2 = nslow2.astype(jnp.int32)
        done = (delta <= xtol * xnorm) | (fnorm_new == 0)
        fail = (
            (nfev >= maxfev)
            | (0.1 * jnp.maximum(0.1 * delta, pnorm) <= eps * xnorm)
            | (nslow2 == 5)
            | (nslow1 == 10)
        )
        info = jnp.where(done, 1, jnp.where(fail, 2, 0)).astype(jnp.int32)
        new_jac = ncfail == 2
        # Broyden's update of the Jacobian (MINPACK applies it after failed steps too)
        broyden = jac + jnp.outer(f1 - fx - jac @ p, diag * diag * p) / pnorm**2
        return {
            "x": x_new, "f": f_new, "fnorm": fnorm_new, "jac": broyden, "diag": diag,
            "xnorm": xnorm, "delta": delta, "iter": it, "ncsuc": ncsuc, "ncfail": ncfail,
            "nslow1": nslow1, "nslow2": nslow2, "nfev": nfev, "info": info, "new_jac": new_jac,
        }  # fmt: skip

    f0 = f(x0)
    zero = jnp.int32(0)
    s0 = {
        "x": x0, "f": f0, "fnorm": jnp.linalg.norm(f0), "jac": jnp.zeros((n, n), dtype),
        "diag": jnp.ones(n, dtype), "xnorm": jnp.zeros((), dtype), "delta": jnp.zeros((), dtype),
        "iter": jnp.int32(1), "ncsuc": zero, "ncfail": zero, "nslow1": zero, "nslow2": zero,
        "nfev": jnp.int32(1), "info": zero, "new_jac": jnp.asarray(True),
    }  # fmt: skip
    s = jax.lax.while_loop(cond, body, s0)
    return s["x"], s["info"] == 1


def _hybr_from_starts(f, starts, accept):
    """dks's search: ``hybr`` from each starting point in order; the first success that is
    accepted. Returns ``(root, converged)``."""
    return _first_accepted(lambda p0: _hybr(f, p0), starts, accept)


# dks's starting points: every combination of these, then uniform draws from numpy's
# RandomState(123) in dks's order, 50 in all.
_ALWAYS_TRY = {
    "input_shift": (0.0, 1.0, -1.0),
    "input_scale": (1.0, 0.1),
    "output_shift": (0.0, 1.0, -1.0),
    "negative_slope": (0.0, 0.5),
}
_SAMPLE_LOW = {"input_shift": -3.0, "input_scale": 0.0, "output_shift": -3.0, "negative_slope": 0.0}
_SAMPLE_HIGH = {"input_shift": 3.0, "input_scale": 2.0, "output_shift": 3.0, "negative_slope": 1.0}
_NUM_TRIES = 50
_RANDOM_SEED = 123

# The largest local C'(1) a ReLU reaches with a positive input shift (dks).
_RELU_MAX_SLOPE_POS_SHIFT = 1.466942206924260361


def _starting_points(names: tuple[str, ...]) -> np.ndarray:
    pts = [tuple(p) for p in itertools.product(*(_ALWAYS_TRY[n] for n in names))]
    rng = np.random.RandomState(_RANDOM_SEED)
    for _ in range(_NUM_TRIES - len(pts)):
        pts.append(tuple(rng.uniform(low=_SAMPLE_LOW[n], high=_SAMPLE_HIGH[n]) for n in names))
    return np.asarray(pts, np.float64)


# ---------------------------------------------------------------------------------------------
# Validation

_DKS_DEFAULTS = {"c_slope_1_target": 1.5, "local_q_slope_target": 1.0}
_TAT_DEFAULTS = {"c_val_0_target": 0.9, "c_curve_target": 0.3}


def _params(what: str, given: Mapping[str, Any] | None, defaults: dict[str, float]):
    out = dict(defaults)
    if given is None:
        return out
    bad = sorted(set(given) - set(defaults))
    if bad:
        raise ValueError(
            f"transform: {what} has unknown keys {bad}; accepted keys are {sorted(defaults)}."
        )
    out.update(given)
    return out


def _check_range(name: str, value: Any, ok: Callable[[float], bool], accepted: str) -> None:
    if _tracing(value):
        return
    v = np.asarray(value)
    if v.shape != () or not ok(float(v)):
        raise ValueError(f"transform: {name}={value!r} must be {accepted}.")


def _resolve(activation: str | Callable[..., Any], kinks: Sequence[float]):
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"transform: activation={activation!r} is not a known name; use one of "
                f"{sorted(ACTIVATIONS)}, or pass an elementwise function with its kinks=."
            )
        fn, own = ACTIVATIONS[activation]
        return activation, fn, tuple(sorted({*own, *map(float, kinks)}))
    if not callable(activation):
        raise TypeError(
            f"transform: activation={activation!r} must be a name or an elementwise function."
        )
    name = getattr(activation, "__name__", type(activation).__name__)
    return name, activation, tuple(sorted(set(map(float, kinks))))


_SUBNET_MSG = (
    "transform: subnet_max_func (or max_slope_func / max_curv_func) is traced by JAX and must "
    "use jax.numpy operations on its values: write jnp.maximum(a, b) instead of max(a, b), "
    "and jnp.where instead of if/else on values."
)


def _call_traced(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except jax.errors.ConcretizationTypeError as err:
        raise TypeError(_SUBNET_MSG) from err


# ---------------------------------------------------------------------------------------------
# The transform


def transform(
    activation: str | Callable[..., Any],
    method: Method = "DKS",
    *,
    subnet_max_func: SubnetMaxFunc | None = None,
    max_slope_func: Callable[[Any], Any] | None = None,
    max_curv_func: Callable[[Any], Any] | None = None,
    dks_params: Mapping[str, Any] | None = None,
    tat_params: Mapping[str, Any] | None = None,
    kinks: Sequence[float] = (),
    tol: float | None = None,
    quadrature: Quadrature = "exact",
) -> TransformedActivation:
    """Transform an activation with DKS or TAT; jittable and differentiable in the targets.

    The JAX counterpart of dks's ``get_transformed_activations`` for one activation, with
    the same targets, starting points and acceptance rule:

    ========================  ==========================================================
    method, activation        conditions (per nonlinear layer, inputs with q = 1)
    ========================  ==========================================================
    DKS, ``"relu"``           input_shift = 1 (or -1 when the local C'(1) target is at
                              least 1.4669...), C(0) = 0, Q(1) = 1, C'(1) = local target
    DKS, other                C(0) = 0, Q(1) = 1, Q'(1) = ``local_q_slope_target``,
                              C'(1) = local target (Leaky ReLU: negative_slope and
                              input_shift are solved, input_scale = 1)
    TAT, ``"leaky_relu"``     negative_slope with max over subnetworks of C_f(0) =
                              ``c_val_0_target``; output_scale = sqrt(2 / (1 + a^2))
    TAT, other smooth         Q(1) = 1, Q'(1) = 1, C'(1) = 1, C''(1) = local target
    ========================  ==========================================================

    The local C'(1) target solves ``max_slope_func(x) = c_slope_1_target`` (DKS) and the
    local C''(1) target ``max_curv_func(x) = c_curve_target`` (TAT), both by dks's
    bisection; without them they come from ``subnet_max_func`` (composition replaced by
    multiplication, respectively addition).

    Args:
      activation: A name from :data:`ACTIVATIONS` or an elementwise JAX function
        (then give its ``kinks``).
      method: ``"DKS"``, ``"TAT"`` or ``"untransformed"``.
      subnet_max_func: The subnetwork maximizing function ``M(x, r_fn)``: apply ``r_fn``
        as the network composes its nonlinear layers and return the maximum over
        subnetworks. It is traced: use ``jnp.maximum``, not ``max``.
      max_slope_func: DKS's maximal slope function of the local C'(1) (optional).
      max_curv_func: TAT's maximal curvature function of the local C''(1) (optional).
      dks_params: ``{"c_slope_1_target": 1.5, "local_q_slope_target": 1.0}`` by default;
        values may be traced.
      tat_params: ``{"c_val_0_target": 0.9, "c_curve_target": 0.3}`` by default; values
        may be traced.
      kinks: Points where a callable ``activation`` (or its first two derivatives) jumps,
        e.g. ``(0.0,)`` for ReLU-like functions; named activations know theirs.
      tol: Stop the bisection for a local target (or Leaky ReLU's slope) when the maximal
        function is within ``tol`` of its target: dks's 1e-8 by default (1e-5 in float32).
        Smaller values (down to about 1e-14 in float64) give the exact root.
      quadrature: How the one-dimensional Gaussian means of the solve are integrated.
        ``"exact"`` (default): Gauss-Legendre panels split at the kinks, exact to rounding,
        solved by damped Newton. ``"dks"``: dks's rule, one 100,000-node Gauss-Legendre
        rule on [-10, 10] without kink breaks, solved by dks's solver (MINPACK's ``hybr``)
        from dks's starting points: dks's results, also where its rule straddles a kink
        (ReLU, shifted Leaky ReLU: up to about 1e-4 relative from the exact root). Slower;
        with kinks, derivatives are those of the discretized conditions. Use it under
        ``jax_enable_x64``, as dks computes in float64: in float32 the solver's path, and
        so the root where there are several, can differ. The two-dimensional means of
        ``c_map`` are exact in both.

    Returns:
      A :class:`TransformedActivation` (callable; a pytree of its parameters).

    Raises:
      ValueError: For an unknown method, quadrature, name or parameter key, a target out of range
        (when it is concrete), ReLU with TAT, a missing ``subnet_max_func``, or a solve that
        fails outside ``jit`` (under ``jit``, check ``converged``).
      TypeError: When ``subnet_max_func`` cannot be traced (e.g. it calls ``max``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinit.activation_transform import transform
      >>> def subnet_max_func(x, r_fn):  # a 10-layer MLP
      ...     for _ in range(10):
      ...         x = r_fn(x)
      ...     return x
      >>> t = transform("leaky_relu", "TAT", subnet_max_func=subnet_max_func,
      ...               tat_params={"c_val_0_target": 0.5})
      >>> sorted(t.as_dict()), bool(t.converged)
      (['negative_slope', 'output_scale'], True)
      >>> t(jnp.ones(3)).shape
      (3,)
      >>> g = jax.grad(lambda c0: transform(
      ...     "leaky_relu", "TAT", subnet_max_func=subnet_max_func,
      ...     tat_params={"c_val_0_target": c0}).negative_slope)(0.5)
      >>> bool(g < 0)  # a more nonlinear network needs a smaller negative slope
      True

    References:
      Martens et al. 2021, https://arxiv.org/abs/2110.01765;
      Zhang et al. 2022, https://openreview.net/forum?id=U0k7XNTiFEq;
      google-deepmind/dks, ``dks/base/activation_transform.py``.
    """
    if method not in _METHODS:
        raise ValueError(f"transform: method={method!r} is not supported; use one of {_METHODS}.")
    if quadrature not in _QUADRATURES:
        raise ValueError(
            f"transform: quadrature={quadrature!r} is not supported; use one of {_QUADRATURES}."
        )
    name, phi, kinks_t = _resolve(activation, kinks)
    dks = _params("dks_params", dks_params, _DKS_DEFAULTS)
    tat = _params("tat_params", tat_params, _TAT_DEFAULTS)
    dtype = _float_dtype()
    is_leaky = name == "leaky_relu" and phi is ACTIVATIONS["leaky_relu"][0]
    is_relu = name == "relu" and phi is ACTIVATIONS["relu"][0]
    if method == "untransformed":
        one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
        return TransformedActivation(
            one, zero, zero, one, jnp.asarray(0.01, dtype) if is_leaky else None,
            jnp.asarray(True), name=name, base=phi, kinks=kinks_t, solved=(),
        )  # fmt: skip
    if tol is not None and not (isinstance(tol, int | float) and tol > 0):
        raise ValueError(f"transform: tol={tol!r} must be a float > 0, or None for dks's 1e-8.")
    if method == "TAT" and is_relu:
        raise ValueError(
            "transform: activation='relu' is not supported with method='TAT'; use "
            "'leaky_relu', whose negative slope TAT chooses."
        )
    if method == "TAT" and is_leaky:
        _check_range("c_val_0_target", tat["c_val_0_target"], lambda v: 0 <= v <= 1, "in [0, 1]")
        needs, why = True, "TAT with leaky_relu"
    elif method == "DKS":
        _check_range("c_slope_1_target", dks["c_slope_1_target"], lambda v: v > 1, "a float > 1.0")
        needs, why = max_slope_func is None, "DKS without max_slope_func"
    else:
        _check_range("c_curve_target", tat["c_curve_target"], lambda v: v > 0, "a float > 0.0")
        needs, why = max_curv_func is None, "TAT with smooth activations without max_curv_func"
    if needs and subnet_max_func is None:
        raise ValueError(f"transform: {why} needs subnet_max_func=M(x, r_fn); got None.")
    cfg = _Config(method, name, phi, kinks_t, subnet_max_func, max_slope_func, max_curv_func, tol)
    targets = {k: jnp.asarray(v, dtype) for k, v in {**dks, **tat}.items()}
    # dks's nodes travel as arguments (1.6 MB), not as constants of the program
    rule = None if quadrature == "exact" else tuple(jnp.asarray(a, dtype) for a in _dks_rule())
    t = _transform_jit(cfg, targets, rule)
    if not _tracing(t.converged) and not bool(t.converged):
        raise ValueError(
            f"transform: no {method} parameters found for {name!r} (converged=False). The "
            "target may be out of reach for this network: a shallow Leaky ReLU network "
            "cannot reach a high C(0) target, for example. Use a smaller c_val_0_target "
            "or c_slope_1_target (a more linear network) or a deeper network."
        )
    return t


class _Config(NamedTuple):
    """The static part of a transform (functions hash by identity)."""

    method: str
    name: str
    phi: Callable[..., Any]
    kinks: tuple[float, ...]
    subnet_max_func: SubnetMaxFunc | None
    max_slope_func: Callable[[Any], Any] | None
    max_curv_func: Callable[[Any], Any] | None
    tol: float | None


def _transform_core(
    cfg: _Config,
    targets: dict[str, jax.Array],
    rule: tuple[jax.Array, jax.Array] | None = None,
) -> TransformedActivation:
    """The solve, as one program: jitted once per configuration, targets traced; ``rule``
    (fixed nodes and weights) replaces the kink-aware quadrature of the local maps."""
    method, name, phi, kinks_t = cfg.method, cfg.name, cfg.phi, cfg.kinks
    subnet_max_func, max_slope_func, max_curv_func = (
        cfg.subnet_max_func, cfg.max_slope_func, cfg.max_curv_func
    )  # fmt: skip
    dks = tat = targets
    dtype = _float_dtype()
    one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
    is_leaky = name == "leaky_relu" and phi is ACTIVATIONS["leaky_relu"][0]
    is_relu = name == "relu" and phi is ACTIVATIONS["relu"][0]

    def result(scale, shift, out_shift, out_scale, slope, ok, solved):
        return TransformedActivation(
            input_scale=jnp.asarray(scale, dtype),
            input_shift=jnp.asarray(shift, dtype),
            output_shift=jnp.asarray(out_shift, dtype),
            output_scale=jnp.asarray(out_scale, dtype),
            negative_slope=None if slope is None else jnp.asarray(slope, dtype),
            converged=jnp.asarray(ok),
            name=name,
            base=phi,
            kinks=kinks_t,
            solved=solved,
        )

    tol = cfg.tol
    if tol is None:
        tol = 1e-8 if dtype == jnp.float64 else 1e-5
    ftol = 1e-12 if dtype == jnp.float64 else 2e-5

    def need_subnet(why: str) -> SubnetMaxFunc:
        if subnet_max_func is None:  # checked by transform
            raise ValueError(f"transform: {why} needs subnet_max_func=M(x, r_fn); got None.")
        return subnet_max_func

    if method == "TAT" and is_leaky:
        c0 = tat["c_val_0_target"]
        m = need_subnet("TAT with leaky_relu")

        def one_minus_max_c0(a):
            return 1.0 - _call_traced(lambda: m(0.0, lambda c: leaky_relu_c_map(c, a)))

        slope, ok = _bisect_increasing(one_minus_max_c0, 1.0 - c0, 0.5, 0.0, 1.0, tol=tol)
        out_scale = jnp.sqrt(2.0 / (1.0 + slope**2))
        return result(one, zero, zero, out_scale, slope, ok, ("output_scale", "negative_slope"))

    if method == "DKS":
        c_slope_1 = dks["c_slope_1_target"]
        if max_slope_func is None:
            m = need_subnet("DKS without max_slope_func")

            def max_slope(x):
                return _call_traced(lambda: m(1.0, lambda y: x * y))
        else:
            msf = max_slope_func

            def max_slope(x):
                return _call_traced(lambda: msf(x))

        local_slope, ok_t = _bisect_increasing(max_slope, c_slope_1, 1.1, 1.0, jnp.inf, tol=tol)
        q_slope = jnp.asarray(dks["local_q_slope_target"], dtype)
        c_val_0: Any = 0.0
        curv_target = None
    else:  # TAT, smooth activations
        curve = tat["c_curve_target"]
        if max_curv_func is None:
            m = need_subnet("TAT with smooth activations without max_curv_func")

            def max_curv(x):
                return _call_traced(lambda: m(0.0, lambda y: x + y))
        else:
            mcf = max_curv_func

            def max_curv(x):
                return _call_traced(lambda: mcf(x))

        curv_target, ok_t = _bisect_increasing(max_curv, curve, 0.1, 0.0, jnp.inf, tol=tol)
        local_slope = one
        q_slope = one
        c_val_0 = None

    kinks_a = _kinks_array(kinks_t, dtype)
    order = 2 if curv_target is not None else 1

    if is_relu:
        names: tuple[str, ...] = ("input_scale",)
        relu_shift = jnp.where(local_slope < _RELU_MAX_SLOPE_POS_SHIFT, 1.0, -1.0).astype(dtype)
    elif is_leaky:
        names = ("negative_slope", "input_shift")
    elif c_val_0 is not None:
        names = ("input_scale", "input_shift")
    else:
        names = ("input_scale", "input_shift", "output_shift")

    def unpack(p):
        d = dict(zip(names, (p[i] for i in range(len(names))), strict=True))
        if is_relu:
            d["input_shift"] = relu_shift
        return (
            d.get("input_scale", one),
            d.get("input_shift", zero),
            d.get("output_shift", zero),
            d.get("negative_slope"),
        )

    def local(p):
        scale, shift, out_shift, slope = unpack(p)
        fn = phi if slope is None else (lambda y: phi(y, slope))
        return _Local(fn, kinks_a, scale, shift, out_shift, c_val_0, order, rule)

    def residual(p):
        st = local(p)
        res = []
        if not is_relu:  # ReLU has one degree of freedom fewer: no Q'(1) condition
            res.append(st.q_slope - q_slope)
        res.append(st.c_slope_1 - local_slope)
        if curv_target is not None:
            res.append(st.c_curv - curv_target)
        return jnp.stack(res)

    def accept(p):
        if method != "TAT":
            return jnp.asarray(True)
        st = local(p)  # dks rejects TAT solutions with input_scale * output_scale >= 2
        return p[0] * st.output_scale < 2.0

    odd = name in _ODD and phi is ACTIVATIONS[name][0]

    def canonical(p):
        # x ~ N(0, 1) is symmetric, so input_scale and -input_scale are the same solution;
        # for odd phi, so are the mirror shifts (see _ODD).
        if "input_scale" in names:
            i = names.index("input_scale")
            p = p.at[i].set(jnp.abs(p[i]))
        if odd:
            i = names.index("input_shift")
            sign = jnp.where(p[i] < 0, -1.0, 1.0).astype(p.dtype)
            p = p.at[i].multiply(sign)
            if "output_shift" in names:
                p = p.at[names.index("output_shift")].multiply(sign)
        return p

    def solve(f, _):
        if rule is None:
            p, ok = _newton_from_starts(f, starts, accept, ftol)
        else:
            # Where dks's rule straddles a kink its conditions jump each time the kink
            # crosses a node, and have several roots a node spacing apart: dks's solver,
            # from dks's starting points, picks the same one as dks.
            p, ok = _hybr_from_starts(f, starts, accept)
        return canonical(p), ok.astype(dtype)  # a float flag: custom_root's JVP rejects bools

    starts = jnp.asarray(_starting_points(names), dtype)
    p, ok_p = jax.lax.custom_root(
        residual,
        starts[0],
        solve,
        _tangent_solve,
        has_aux=True,
    )
    ok_p = ok_p > 0
    scale, shift, _, slope = unpack(p)
    st = local(p)
    if name in ("sin", "cos"):
        shift = shift - 2 * jnp.pi * jnp.floor_divide(shift, 2 * jnp.pi)
    if is_relu:
        solved = ("input_shift", "input_scale", "output_shift", "output_scale")
    elif is_leaky:
        solved = ("negative_slope", "input_shift", "output_shift", "output_scale")
    else:
        solved = ("input_scale", "input_shift", "output_shift", "output_scale")
    return result(scale, shift, st.output_shift, st.output_scale, slope, ok_t & ok_p, solved)


_transform_jit = jax.jit(_transform_core, static_argnums=0)
