"""Audit a model's initialization: what every parameter looks like, and where it departs from
a recipe.

:func:`audit` measures each parameter of an NNX model or of linen variables (one jitted
program over the whole parameter pytree) and returns an :class:`Audit`: one :class:`Row` per
parameter and a list of :class:`Finding` s, each with a stable ``kind`` (:data:`KINDS`).

**Fans.** A weight's fans come from the layer-kind table (:mod:`jaxinit._flax.kinds`) when
its layer is known: an NNX model knows the layer owning each parameter; linen variables need
``module=`` (the module whose variables they are). The table gives the true axes of Einsum
kernels (from the equation: heads are independent copies, not fan), ConvLocal kernels
(positions are copies), DenseGeneral / LinearGeneral kernels with several axes or batch
dimensions, attention projections and embeddings. Without a known layer the fans are
:func:`jaxinit.compute_fans`' defaults (``(*receptive, in, out)``) and :attr:`Row.layer` says
``"default"``. Vectors (rank < 2) have no fans.

**Statistics per parameter** (:class:`Row`): shape, fans, ``std`` (about the mean) and
``mean``, the implied gain ``std * sqrt(fan_in)`` (the ``sigma_w`` of mean-field theory),
the depth factor (below), ``max|w| / std``, whether the values look truncated, the count of
exact zeros, and whether the tensor is constant or a multiple of the identity (``eye`` for a
matrix, the centred dirac for a conv kernel).

**Depth factor.** Over the model's weights (parameters of rank >= 2 with a nonzero, finite
std), a base quantity ``q`` is either ``std`` (models drawn with one fixed std, as GPT-2's
N(0, 0.02^2)) or ``std * sqrt(fan_in)`` (fan-scaled models: He, LeCun, Glorot): whichever of
the two has the smaller spread over the weights (median absolute deviation of ``log q``;
``std`` on a tie). A weight's depth factor is ``q / median(q)``. When most weights share the
base scale, the median is that scale and the factor of a depth-scaled weight is its depth
scaling: ``1 / sqrt(2 n_layer)`` for GPT-2's ``c_proj`` (std ``0.02 / sqrt(2 n_layer)``),
1 for the others. Parameters outside that set have ``nan``.

**Looks truncated.** For an untruncated normal of ``n`` values with standard deviation ``s``,
``P(max|w| <= t s) = (1 - 2 Q(t))^n`` with ``Q`` the normal tail. A tensor *looks truncated at
``t = max|w| / s`` standard deviations* when that probability is below ``ALPHA`` (about
``2 n Q(t) > -log(ALPHA)``): a tensor of a few thousand values drawn from a normal cut at
2 sigma (``t`` about 2.27 in units of the cut distribution's std) looks truncated, a
normal one never does (with probability ``1 - ALPHA``). Uniform values look truncated too
(they are bounded).

**Pairs.** Parameters of the same number of elements are compared through one Gram matrix
of their centred, flattened values per group: ``r_ij`` is the correlation of tensors ``i``
and ``j``. Pairs with ``r_ij >= 1 - 1e-4`` are compared value by value, and are
``"identical"`` when every value is equal (a reused PRNG key); others
with ``|r_ij| > z_P / sqrt(n)`` are ``"correlated"``, where ``n`` is the number of elements
and ``z_P`` the two-sided normal quantile at ``ALPHA / P``, ``P`` the number of pairs compared
in the whole model (under independence ``r_ij * sqrt(n)`` is about N(0, 1), so a model of
independent tensors has no finding with probability ``1 - ALPHA``). Constant and identity
tensors, and with a recipe the parameters whose rule is deterministic (``zeros()``,
``identity()``, ...), are left out: equal values are what they are meant to have.

**Against a recipe** (:class:`jaxinit.recipes.recipe.Recipe`), each parameter is compared
with the rule that wins its path:

- a deterministic rule (``zeros``, ``ones``, ``constant``, ``identity`` and any other jaxinit
  initializer that ignores its key) is drawn at the parameter's shape and dtype inside the
  jitted program and compared exactly (``"values"``);
- a random rule gives the expected std ``sqrt(init.variance(fan_in, fan_out, shape=...))``
  with the layer-aware fans, and mean (0, or ``normal``'s ``mean``). The measured std
  differs (``"std"``) when ``|std - expected| > Z * se``, with ``se = se(var) / (2 *
  expected)`` and ``se(var) = max(sqrt((m4 - var^2) / n), expected^2 * sqrt(2 / n))``: the
  standard error of a sample variance of ``n`` values (``m4`` the sample's fourth central
  moment; the second term, a normal's, keeps small tensors from a spuriously small
  estimate), ``Z`` = :data:`Z` = 5 as in the test suite (a correct tensor is flagged with
  probability about 6e-7). The mean differs (``"mean"``) when ``|mean - expected| > Z *
  max(std, expected std) / sqrt(n)``. Both tolerances also allow a few units of the dtype's
  rounding.
- a bounded rule (``truncated_normal``, ``uniform``, and ``variance_scaling``-family
  truncated-normal and uniform draws) flags ``"truncation"`` when ``max|w|`` lies beyond its
  bound: the truncation cuts nothing or is not applied (e.g. absolute bounds ``+-2`` passed
  where ``+-2`` standard deviations were meant). An untruncated normal rule flags
  ``"truncation"`` when the tensor looks truncated.
- parameters no rule matches are listed in :attr:`Audit.uncovered` (not findings).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._base import Init, _solve_tail
from .._fans import compute_fans
from .._flax import adapter as fa
from .._flax.kinds import Weight, kind_of, weight_for

__all__ = ["ALPHA", "KINDS", "Audit", "Finding", "Row", "Z", "audit"]

Z = 5.0
"""Standard errors a measured std or mean may differ from the recipe's (as ``tests/_stats``)."""

ALPHA = 2 * 0.5 * math.erfc(Z / math.sqrt(2))
"""The false-finding probability of each test (two-sided normal tail at :data:`Z`, 5.7e-7)."""

KINDS: dict[str, str] = {
    "std": "the measured std differs from the rule's variance law",
    "mean": "the measured mean differs from the rule's mean",
    "values": "a deterministic rule's values (zeros, ones, constant, identity, ...) differ",
    "truncation": "a bounded rule's bound is exceeded, or a normal rule's values look cut",
    "identical": "two parameters hold exactly the same values (a reused key)",
    "correlated": "two parameters are correlated beyond chance",
    "nonfinite": "a parameter holds NaN or inf",
}
"""Every :attr:`Finding.kind`, with its meaning."""

_TRUNC_CUT = 2.0  # variance_scaling's truncated normal is cut at +-2 sd of the untruncated one
_VS_NAMES = ("variance_scaling", "lecun", "glorot", "xavier", "he", "kaiming")
_IDENTICAL_R = 1 - 1e-4  # pairs above this correlation are compared value by value


class Row(NamedTuple):
    """One parameter's measurements (and, with a recipe, its rule's expectation).

    Attributes:
      path: The parameter's path (as :func:`jaxinit.tree.paths` names it).
      shape, dtype: Its shape and dtype name.
      layer: The layer kind its fans come from (``"dense"``, ``"einsum"``, ``"conv"``, ...),
        ``"default"`` when the layer is unknown (default axes), ``""`` for a vector.
      fan_in, fan_out: Its fans (0 for a vector).
      std, mean: Standard deviation (about the mean) and mean of its values.
      gain: ``std * sqrt(fan_in)`` (``nan`` for a vector).
      depth_factor: See the module docstring (``nan`` outside the model's weights).
      max_ratio: ``max|w| / std`` (``inf`` for a nonzero constant, ``nan`` for zeros).
      truncated: Whether the values look truncated at ``max_ratio`` standard deviations.
      zeros: How many values are exactly zero.
      constant: Whether every value is the same.
      identity: Whether it is a nonzero multiple of the identity (rank >= 2).
      finite: Whether every value is finite.
      rule: The pattern of the recipe's rule that wins the path, or None.
      expected: The rule's initializer (its ``repr``), ``""`` without a rule.
      expected_std: The std the rule's variance law gives at these fans, or None.
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    layer: str
    fan_in: int
    fan_out: int
    std: float
    mean: float
    gain: float
    depth_factor: float
    max_ratio: float
    truncated: bool
    zeros: int
    constant: bool
    identity: bool
    finite: bool
    rule: str | None = None
    expected: str = ""
    expected_std: float | None = None


class Finding(NamedTuple):
    """One departure: ``path``, a stable ``kind`` (:data:`KINDS`), a sentence, and the
    expected and measured values: numbers (a std, a mean, a bound; ``values``: 0 and the
    largest difference), or for ``identical`` and ``correlated`` the other parameter's path
    and the correlation."""

    path: str
    kind: str
    message: str
    expected: Any
    measured: Any


class Audit(NamedTuple):
    """What :func:`audit` returns.

    Attributes:
      rows: One :class:`Row` per parameter, in natural path order.
      findings: The :class:`Finding` s, by path then kind.
      uncovered: With a recipe, the parameters no rule matches; else ``()``.
      recipe: The recipe's name, or None.
      depth_law: ``"std"`` or ``"gain"``: the base quantity of the depth factor.
    """

    rows: tuple[Row, ...]
    findings: tuple[Finding, ...]
    uncovered: tuple[str, ...] = ()
    recipe: str | None = None
    depth_law: str = "std"

    @property
    def ok(self) -> bool:
        """Whether there are no findings."""
        return not self.findings

    def table(self) -> str:
        """A plain-text table: one line per parameter, then the findings and the parameters
        the recipe does not cover."""
        head = (
            "path",
            "shape",
            "layer",
            "fan_in",
            "std",
            "mean",
            "std*sqrt(fan_in)",
            "depth",
            "max/std",
            "zeros",
            "flags",
            "expected std",
            "rule",
        )
        lines = [tuple(_row_cells(r)) for r in self.rows]
        widths = [max(len(c[i]) for c in (head, *lines)) for i in range(len(head))]

        def fmt(cells: Sequence[str]) -> str:
            parts = [
                c.ljust(w) if i in (0, 1, 2, 10, 12) else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        title = f"Audit against recipe {self.recipe!r}" if self.recipe else "Audit"
        out = [title + f" (depth factor: {self.depth_law} over its median)", fmt(head)]
        out.append(fmt(["-" * w for w in widths]))
        out += [fmt(c) for c in lines]
        if any(r.layer == "default" for r in self.rows):
            out.append(
                "layer 'default': fans from the default axes (in -2, out -1); for linen "
                "variables pass module= (and x= for layers made inside nn.compact) for "
                "layer-aware fans"
            )
        out.append("")
        if self.findings:
            out.append(f"{len(self.findings)} finding(s):")
            out += [f"  {f.path}: [{f.kind}] {f.message}" for f in self.findings]
        else:
            out.append("no findings")
        if self.uncovered:
            out.append(f"not covered by the recipe ({len(self.uncovered)}):")
            out += [f"  {p}" for p in self.uncovered]
        return "\n".join(out)


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return "-" if math.isnan(x) else str(x)
    if x == 0:
        return "0"
    return f"{x:.4g}"


def _row_cells(r: Row) -> list[str]:
    flags = [
        name
        for name, on in (
            ("const", r.constant),
            ("identity", r.identity),
            ("trunc", r.truncated),
            ("nonfinite", not r.finite),
        )
        if on
    ]
    return [
        r.path,
        "x".join(map(str, r.shape)) or "()",
        r.layer or "-",
        str(r.fan_in) if r.fan_in else "-",
        _num(r.std),
        _num(r.mean),
        _num(r.gain),
        _num(r.depth_factor),
        _num(r.max_ratio),
        str(r.zeros),
        ",".join(flags),
        _num(r.expected_std),
        r.rule or "",
    ]


# --------------------------------------------------------------------------------------------
# layers of the parameters: the layer-kind table's axes


def _linen_modules(module: Any, variables: Any, x: Any) -> dict[str, Any]:
    """``{module path: bound linen module}``: the root, the submodules ``setup`` defines,
    and, with an input ``x``, every module the forward pass calls (run abstractly)."""
    root = module.bind(variables)
    found: dict[str, Any] = {"": root}

    def walk(m: Any, prefix: str) -> None:
        try:
            m._try_setup()
            children = dict(m._state.children)
        except Exception:  # a module whose setup needs its call's arguments
            return
        for name, child in children.items():
            if not fa.is_linen(child):
                continue
            path = f"{prefix}/{name}" if prefix else str(name)
            found.setdefault(path, child)
            walk(child, path)

    walk(root, "")
    if x is not None:
        from .._flax.probe import intercept

        seen: dict[str, Any] = {}

        def on_call(call: Any) -> Any:
            seen.setdefault(call.path, call.module)
            return call()

        jax.eval_shape(
            lambda v, x: intercept(module, v, x, on_call, select=lambda p, m: True)[0],
            variables,
            x,
        )
        for path, m in seen.items():
            found.setdefault(path, m)
    return found


def _weight_of(owners: Callable[[str], Any], path: str) -> tuple[str, Weight | None] | None:
    """``(kind name, Weight or None)`` of the parameter at ``path`` from its nearest known
    owning layer (the parameter named relative to it, ``"query/kernel"`` for an attention
    layer's), or None when no owner of a known kind is found."""
    parts = path.split("/")
    for cut in range(len(parts) - 1, -1, -1):
        owner = owners("/".join(parts[:cut]))
        if owner is None:
            continue
        kind = kind_of(owner)
        if kind is None:
            continue
        rel = "/".join(parts[cut:])
        if rel in kind.params:
            return kind.name, weight_for(owner, rel)
    return None


# the layers of a linen module's parameters, by (module, input spec, paths): finding them traces
# the forward pass (abstractly), which a second audit of the same model need not repeat
_LINEN_LAYERS: dict[Any, dict[str, Any]] = {}


def _layers(adapter: fa.Adapter, paths: Sequence[str], module: Any, x: Any) -> dict[str, Any]:
    """``{path: (kind name or "default", Weight or None)}``."""
    if adapter.kind == "nnx":
        graph: Mapping[tuple[Any, ...], Any] = getattr(adapter, "_nodes", {})
        nodes = {"/".join(str(p) for p in parts): node for parts, node in graph.items()}
        nodes.setdefault("", adapter.target)

        def owners(p: str) -> Any:
            return nodes.get(p)
    elif module is not None:
        spec = tuple((tuple(np.shape(v)), str(jnp.result_type(v))) for v in jax.tree.leaves(x))
        key = (module, jax.tree.structure(x), spec, tuple(paths))
        try:
            cached = _LINEN_LAYERS.get(key)
        except TypeError:  # a module that cannot be hashed
            key, cached = None, None
        if cached is not None:
            return dict(cached)
        mods = _linen_modules(module, adapter.target, x)
        out = {p: _weight_of(lambda q: mods.get(q), p) or ("default", None) for p in paths}
        if key is not None:
            while len(_LINEN_LAYERS) >= 8:
                _LINEN_LAYERS.pop(next(iter(_LINEN_LAYERS)))
            _LINEN_LAYERS[key] = out
        return dict(out)
    else:

        def owners(p: str) -> Any:
            return None

    out = {}
    for path in paths:
        found = _weight_of(owners, path)
        out[path] = ("default", None) if found is None else found
    return out


def _fans(shape: tuple[int, ...], layer: tuple[str, Weight | None]) -> tuple[str, int, int]:
    """``(layer, fan_in, fan_out)``; ``("", 0, 0)`` for a vector (a parameter the kind table
    lists without axes, or of rank < 2 where the layer is unknown)."""
    kind, weight = layer
    if (kind != "default" and weight is None) or (weight is None and len(shape) < 2):
        return "", 0, 0
    try:
        fi, fo = weight.fans(shape) if weight is not None else compute_fans(shape)
    except ValueError:  # axes that do not fit the shape
        return "", 0, 0
    return kind, int(fi), int(fo)


# --------------------------------------------------------------------------------------------
# what a rule's initializer promises


class _Expect(NamedTuple):
    exact: Init | None  # a deterministic jaxinit initializer: compare values exactly
    std: float | None
    mean: float
    bound: float | None  # largest |w| the rule can draw
    normal: bool  # an untruncated normal


def _inner(init: Any) -> Any:
    """The initializer a wrapper (``for_layer``) draws with."""
    while isinstance(init, Init) and isinstance(init.params.get("init"), Init):
        init = init.params["init"]
    return init


def _expect(init: Any, shape: tuple[int, ...], fan_in: int, fan_out: int) -> _Expect:
    if not isinstance(init, Init):
        return _Expect(None, None, 0.0, None, False)
    if not init._random:
        return _Expect(init, None, 0.0, None, False)
    try:
        std = math.sqrt(init.variance(max(fan_in, 1), max(fan_out, 1), shape=shape))
    except (ValueError, TypeError):
        std = None
    base = _inner(init)
    name, params = base.name, base.params
    mean, bound, normal = 0.0, None, False
    if name == "normal":
        mean, normal = float(params["mean"]), True
    elif name == "truncated_normal":
        s = float(params["stddev"])
        bound = s * max(abs(float(params["lower"])), abs(float(params["upper"])))
    elif name == "uniform":
        bound = max(abs(float(params["low"])), abs(float(params["high"])))
    elif name.startswith(_VS_NAMES) and std is not None:
        dist = params.get("distribution")
        if dist is None:
            dist = "uniform" if name.endswith("_uniform") else "normal"
        if dist == "normal":
            normal = True
        elif dist == "uniform":
            bound = math.sqrt(3) * std
        elif dist == "truncated_normal":
            from ..basic import truncated_moments

            bound = std * _TRUNC_CUT / truncated_moments(-_TRUNC_CUT, _TRUNC_CUT)[1]
    return _Expect(None, std, mean, bound, normal)


# --------------------------------------------------------------------------------------------
# the jitted measurement


class _Plan(NamedTuple):
    sizes: tuple[int, ...]  # elements per leaf
    generic: tuple[tuple[int, Init], ...]  # leaves whose deterministic rule is drawn and compared
    groups: tuple[tuple[int, ...], ...]  # leaves of equal size, compared pairwise


_BLOCK = 1024  # every leaf is laid out in rows of this many values, the last one padded


def _real(w: jax.Array, dtype: Any = None) -> jax.Array:
    if jnp.issubdtype(w.dtype, jnp.complexfloating):
        w = jnp.real(w)
    if dtype is None:
        dtype = jnp.float64 if w.dtype == jnp.float64 else jnp.float32
    return w.astype(dtype)


def _blocks(shapes: Sequence[tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Per row of the flat layout: its leaf, and how many of its values are real."""
    cols: dict[str, list[np.ndarray]] = {"leaf": [], "valid": []}
    for i, shape in enumerate(shapes):
        n = math.prod(shape)
        rows = -(-n // _BLOCK)
        if not rows:
            continue
        start = np.arange(rows, dtype=np.int64) * _BLOCK
        cols["leaf"].append(np.full(rows, i))
        cols["valid"].append(np.minimum(n - start, _BLOCK))
    return {
        k: np.concatenate(v).astype(np.int32) if v else np.zeros(0, np.int32)
        for k, v in cols.items()
    }


def _measure(
    leaves: tuple[jax.Array, ...], blocks: dict[str, jax.Array], plan: _Plan
) -> dict[str, Any]:
    """Every statistic of every leaf with a fixed number of operations: the leaves laid out
    as rows of ``_BLOCK`` values, reduced per row, then per leaf (segment sums over rows)."""
    wide = jnp.float64 if any(w.dtype == jnp.float64 for w in leaves) else jnp.float32
    n_leaves = len(leaves)
    parts = [
        jnp.pad(_real(w, wide).ravel(), (0, -(-n // _BLOCK) * _BLOCK - n))
        for w, n in zip(leaves, plan.sizes, strict=True)
        if n
    ]
    if not parts:
        return {"stats": {}, "grams": [], "generic": {}}
    x = jnp.concatenate(parts).reshape(-1, _BLOCK)
    seg = blocks["leaf"]
    lane = jnp.arange(_BLOCK, dtype=jnp.int32)[None, :]
    valid = lane < blocks["valid"][:, None]
    sizes = jnp.asarray(np.maximum(plan.sizes, 1), wide)

    def total(rows: jax.Array) -> jax.Array:
        return jax.ops.segment_sum(rows, seg, n_leaves, indices_are_sorted=True)

    def largest(rows: jax.Array) -> jax.Array:
        return jax.ops.segment_max(rows, seg, n_leaves, indices_are_sorted=True)

    mean = total(x.sum(1)) / sizes
    d = jnp.where(valid, x - mean[seg][:, None], 0)
    d2 = d * d
    stats = {
        "mean": mean,
        "var": total(d2.sum(1)) / sizes,
        "m4": total((d2 * d2).sum(1)) / sizes,
        "absmax": largest(jnp.abs(x).max(1)),  # the padding is 0
        "max": largest(jnp.where(valid, x, -jnp.inf).max(1)),
        "min": -largest(jnp.where(valid, -x, -jnp.inf).max(1)),
        "zeros": total(((x == 0) & valid).sum(1, dtype=jnp.int32)),
        "nonfinite": total((~jnp.isfinite(x) & valid).sum(1, dtype=jnp.int32)),
    }
    generic = {}
    for i, init in plan.generic:
        w = leaves[i]
        no_key: Any = None  # a deterministic initializer ignores its key
        want = _real(init(no_key, w.shape, w.dtype), wide)
        generic[i] = (jnp.max(jnp.abs(_real(w, wide) - want)), jnp.max(jnp.abs(want)))
    grams = []
    for group in plan.groups:
        xm = jnp.stack([_real(leaves[i], wide).ravel() - mean[i] for i in group])
        grams.append(jnp.dot(xm, xm.T, precision=jax.lax.Precision.HIGHEST) / xm.shape[1])
    return {"stats": stats, "grams": grams, "generic": generic}


def eye_mask(shape: tuple[int, ...]) -> np.ndarray:
    """Where a multiple of the identity of ``shape`` is nonzero: ``eye(a, b)`` on the last two
    dims, at the centre of the spatial dims (a conv dirac)."""
    *spatial, a, b = shape
    mask = np.zeros(shape, bool)
    centre = tuple((k - 1) // 2 for k in spatial)
    mask[centre] = np.eye(a, b, dtype=bool)
    return mask


@jax.jit
def _eye_stats(leaves: tuple[jax.Array, ...], masks: tuple[jax.Array, ...]) -> Any:
    """``(n_eye, diag, off_eye)`` per leaf: the number of identity positions, the mean value
    there, and the largest distance from ``diag * identity``."""
    out = []
    for w, m in zip(leaves, masks, strict=True):
        x = _real(w)
        n = m.sum()
        diag = jnp.where(m, x, 0).sum() / jnp.maximum(n, 1)
        out.append((n, diag, jnp.max(jnp.abs(x - jnp.where(m, diag, 0)))))
    return out


# Small programs on CPU compile at XLA's backend optimization level 0: several times faster to
# compile, which dominates below a few million values; larger ones are optimized for run time.
_FAST_BELOW = 1 << 22
_PROGRAMS = {
    "fast": jax.jit(
        _measure, static_argnums=2, compiler_options={"xla_backend_optimization_level": 0}
    ),
    "optimized": jax.jit(_measure, static_argnums=2),
}


def _program(total: int) -> Callable[..., Any]:
    fast = total < _FAST_BELOW and jax.default_backend() == "cpu"
    return _PROGRAMS["fast" if fast else "optimized"]


# --------------------------------------------------------------------------------------------
# the audit


def _fill(init: Init) -> tuple[str, float] | None:
    """``("fill", v)`` for zeros / ones / a scalar constant, ``("identity", scale)``; None
    for other deterministic initializers (drawn and compared in the program)."""
    name, params = init.name, init.params
    if name in ("zeros", "ones"):
        return "fill", float(name == "ones")
    if name == "constant" and isinstance(params.get("value"), int | float):
        return "fill", float(params["value"])
    if name == "identity" and isinstance(params.get("scale"), int | float):
        return "identity", float(params["scale"])
    return None


def _leaf(result: Mapping[str, Any], i: int, w: jax.Array, exact: Init | None) -> dict[str, Any]:
    """The statistics of leaf ``i`` from the program's result."""
    if not w.size:
        return {
            "mean": 0.0,
            "var": 0.0,
            "m4": 0.0,
            "absmax": 0.0,
            "zeros": 0,
            "finite": True,
            "constant": True,
            "identity": False,
            "exact_diff": 0.0,
            "exact_scale": 0.0,
        }
    st = {k: v[i] for k, v in result["stats"].items()}
    hi, lo = float(st["max"]), float(st["min"])
    n_eye, diag = int(st["n_eye"]), float(st["diag"])
    out = {
        "mean": float(st["mean"]),
        "var": float(st["var"]),
        "m4": float(st["m4"]),
        "absmax": float(st["absmax"]),
        "zeros": int(st["zeros"]),
        "finite": int(st["nonfinite"]) == 0,
        "constant": hi == lo,
        "identity": n_eye > 0 and w.size > 1 and float(st["off_eye"]) == 0 and diag != 0,
    }
    if exact is not None:
        fill = _fill(exact)
        if fill is None:
            diff, scale = result["generic"][i]
            out["exact_diff"], out["exact_scale"] = float(diff), float(scale)
        else:
            # the value as the parameter's dtype holds it
            v = float(np.real(np.asarray(fill[1]).astype(np.dtype(w.dtype))))
            if fill[0] == "fill":
                out["exact_diff"] = max(abs(hi - v), abs(lo - v))
            elif n_eye:
                out["exact_diff"] = float(st["off_eye"]) + abs(diag - v)
            else:
                out["exact_diff"] = max(abs(hi), abs(lo))
            out["exact_scale"] = abs(v)
    return out


def _two_sided_quantile(p: float) -> float:
    """``z`` with ``P(|N(0, 1)| > z) = p``."""
    return _solve_tail(p / 2)


def _looks_truncated(n: int, t: float) -> bool:
    """Whether ``n`` normal values with no ``|z| > t`` would have probability < ALPHA."""
    if n < 2 or not math.isfinite(t):
        return False
    tail = math.erfc(t / math.sqrt(2))  # P(|z| > t)
    return n * tail > -math.log(ALPHA)


def _eps(dtype: np.dtype) -> float:
    try:
        return float(jnp.finfo(dtype).eps)
    except ValueError:
        return 0.0


def _depth(rows: list[dict[str, Any]], eligible: list[int]) -> tuple[str, dict[int, float]]:
    if not eligible:
        return "std", {}
    stds = np.array([rows[i]["std"] for i in eligible])
    gains = np.array([rows[i]["std"] * math.sqrt(max(rows[i]["fan_in"], 1)) for i in eligible])

    def spread(q: np.ndarray) -> float:
        lq = np.log(q)
        return float(np.median(np.abs(lq - np.median(lq))))

    law, q = ("std", stds) if spread(stds) <= spread(gains) else ("gain", gains)
    ref = float(np.median(q))
    return law, {i: float(v / ref) for i, v in zip(eligible, q, strict=True)}


def audit(
    target: Any,
    recipe: Any = None,
    *,
    module: Any = None,
    x: Any = None,
) -> Audit:
    """Measure every parameter of ``target`` and, with a ``recipe``, compare it with the rule
    that wins its path (see the module docstring for every definition and tolerance).

    Args:
      target: An NNX model, or linen variables (a mapping with a ``params`` collection).
      recipe: A :class:`~jaxinit.recipes.recipe.Recipe`, or None (measure only; findings are
        then non-finite values and identical or correlated pairs).
      module: For linen variables, the linen module they belong to: its layers give
        layer-aware fans (the root and the submodules its ``setup`` defines; submodules made
        inside an ``nn.compact`` call need ``x``). Without it the fans come from the default
        axes and the table says so.
      x: For linen with ``module=``: an example input (only its shape and dtype are used: the
        forward pass runs abstractly, under ``jax.eval_shape``) so that the submodules
        created inside ``nn.compact`` calls are found too.

    Returns:
      An :class:`Audit` (rows, findings, uncovered paths).

    Raises:
      TypeError: ``target`` is neither an NNX model nor linen variables, ``recipe`` is not a
        Recipe, ``module`` is not a linen module, or ``module``/``x`` are given with an NNX
        model.

    Example:
      >>> import flax.nnx as nnx, jax, jaxinit
      >>> from jaxinit.recipes.audit import audit
      >>> from jaxinit.recipes.recipe import Recipe, Rule
      >>> model = nnx.Linear(256, 64, rngs=nnx.Rngs(0))  # Flax: lecun_normal kernel, zero bias
      >>> report = audit(model)
      >>> [(r.path, r.layer, r.fan_in) for r in report.rows]
      [('bias', '', 0), ('kernel', 'dense', 256)]
      >>> report.ok, abs(report.rows[1].gain - 1) < 0.05
      (True, True)
      >>> he = Recipe("he", (Rule("kernel", jaxinit.he_normal()), Rule("bias", jaxinit.zeros())))
      >>> [(f.path, f.kind) for f in audit(model, he).findings]  # Flax's LeCun is cut at 2 sd
      [('kernel', 'std'), ('kernel', 'truncation')]
    """
    adapter = fa.adapter_for(target, name="audit: target")
    if recipe is not None and not (hasattr(recipe, "match") and hasattr(recipe, "rules")):
        raise TypeError(
            f"audit: recipe={recipe!r} is not a Recipe; pass a jaxinit.recipes.recipe.Recipe "
            "(or None to measure only)."
        )
    if adapter.kind == "nnx" and (module is not None or x is not None):
        raise TypeError(
            "audit: module= and x= are for linen variables; an NNX model knows its layers."
        )
    if module is not None and not fa.is_linen(module):
        raise TypeError(
            f"audit: module={type(module).__name__} is not a flax.linen.Module; pass the "
            "module whose variables target is."
        )
    leaves = adapter.leaves()
    paths = [p for p, _ in leaves]
    arrays = tuple(jnp.asarray(v) for _, v in leaves)
    layers = _layers(adapter, paths, module, x)

    shapes = [tuple(int(d) for d in a.shape) for a in arrays]
    fans = [_fans(s, layers[p]) for p, s in zip(paths, shapes, strict=True)]
    rules = [recipe.match(p) if recipe is not None else None for p in paths]
    expects = [
        _expect(r.init, s, fi, fo) if r is not None else None
        for r, s, (_, fi, fo) in zip(rules, shapes, fans, strict=True)
    ]
    exact = [e.exact if e is not None else None for e in expects]

    by_size: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        if a.size >= 2 and exact[i] is None:
            by_size.setdefault(int(a.size), []).append(i)
    plan = _Plan(
        tuple(int(a.size) for a in arrays),
        tuple((i, e) for i, e in enumerate(exact) if e is not None and _fill(e) is None),
        tuple(tuple(g) for _, g in sorted(by_size.items()) if len(g) >= 2),
    )
    groups = plan.groups
    blocks = {k: jnp.asarray(v) for k, v in _blocks(shapes).items()}
    run = _program(sum(plan.sizes))
    result = jax.device_get(run(arrays, blocks, plan))
    # A multiple of the identity has no nonzero value off its min(a, b) identity positions:
    # only such leaves (and those an identity rule covers) are compared with it, in a second
    # program, so the main pass does no index arithmetic over every value.
    st = result["stats"]

    def identity_rule(init: Init | None) -> bool:
        fill = _fill(init) if init is not None else None
        return fill is not None and fill[0] == "identity"

    candidates = [
        i
        for i, s in enumerate(shapes)
        if len(s) >= 2
        and arrays[i].size > 1
        and (arrays[i].size - int(st["zeros"][i]) <= min(s[-2:]) or identity_rule(exact[i]))
    ]
    n_leaves = len(arrays)
    st["n_eye"] = np.zeros(n_leaves, np.int64)
    st["diag"] = np.zeros(n_leaves)
    st["off_eye"] = np.asarray(st["absmax"], np.float64).copy()
    if candidates:
        masks = tuple(jnp.asarray(eye_mask(shapes[i])) for i in candidates)
        eyes = jax.device_get(_eye_stats(tuple(arrays[i] for i in candidates), masks))
        for i, (n_eye, diag, off) in zip(candidates, eyes, strict=True):
            st["n_eye"][i], st["diag"][i], st["off_eye"][i] = int(n_eye), float(diag), float(off)
    stats = [_leaf(result, i, arrays[i], exact[i]) for i in range(len(arrays))]

    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    for i, path in enumerate(paths):
        st, (layer, fi, fo), a, rule = stats[i], fans[i], arrays[i], rules[i]
        n = int(a.size)
        std = math.sqrt(max(float(st["var"]), 0.0))
        absmax = float(st["absmax"])
        ratio = absmax / std if std > 0 else (math.inf if absmax > 0 else math.nan)
        finite = bool(st["finite"])
        constant = bool(st["constant"]) and n > 0
        row = dict(
            path=path,
            shape=shapes[i],
            dtype=np.dtype(a.dtype).name,
            layer=layer,
            fan_in=fi,
            fan_out=fo,
            std=std,
            mean=float(st["mean"]),
            gain=std * math.sqrt(fi) if fi else math.nan,
            depth_factor=math.nan,
            max_ratio=ratio,
            truncated=(not constant) and _looks_truncated(n, ratio),
            zeros=int(st["zeros"]),
            constant=constant,
            identity=bool(st["identity"]),
            finite=finite,
            rule=rule.where if rule is not None else None,
            expected=repr(rule.init) if rule is not None else "",
            expected_std=None,
        )
        rows.append(row)
        if not finite:
            findings.append(
                Finding(path, "nonfinite", "holds NaN or inf values", "finite", "nonfinite")
            )
            continue
        expect = expects[i]
        if rule is not None and expect is not None:
            findings += _compare(path, rule, expect, row, st, n, a.dtype)

    eligible = [
        i
        for i, r in enumerate(rows)
        if len(r["shape"]) >= 2 and r["finite"] and r["std"] > 0 and r["fan_in"]
    ]
    law, factors = _depth(rows, eligible)
    for i, f in factors.items():
        rows[i]["depth_factor"] = f

    findings += _pairs(paths, arrays, rows, groups, result["grams"])
    findings.sort(key=lambda f: (fa.natural_key(f.path), f.kind, str(f.expected)))
    uncovered = tuple(p for p, r in zip(paths, rules, strict=True) if r is None)
    return Audit(
        rows=tuple(Row(**r) for r in rows),
        findings=tuple(findings),
        uncovered=uncovered if recipe is not None else (),
        recipe=getattr(recipe, "name", None),
        depth_law=law,
    )


def _compare(
    path: str, rule: Any, e: _Expect, row: dict[str, Any], st: Mapping[str, Any], n: int, dtype
) -> list[Finding]:
    out: list[Finding] = []
    init = repr(rule.init)
    eps = _eps(np.dtype(dtype))
    if e.exact is not None:
        diff, scale = float(st["exact_diff"]), float(st["exact_scale"])
        if diff > 4 * eps * max(scale, 1e-30) and diff > 0:
            out.append(
                Finding(
                    path,
                    "values",
                    f"differs from {init} (rule {rule.where!r}) by up to {diff:.4g}",
                    0.0,
                    diff,
                )
            )
        return out
    std, mean = row["std"], row["mean"]
    if e.std is not None and n >= 2:
        row["expected_std"] = e.std
        m4, var = float(st["m4"]), float(st["var"])
        se_var = max(math.sqrt(max(m4 - var * var, 0.0) / n), e.std**2 * math.sqrt(2 / n))
        tol = Z * se_var / (2 * e.std) if e.std > 0 else 0.0
        tol += 4 * eps * e.std + 4 * eps * abs(e.mean)
        if abs(std - e.std) > tol:
            out.append(
                Finding(
                    path,
                    "std",
                    f"std {std:.4g} where {init} (rule {rule.where!r}) gives {e.std:.4g} at "
                    f"fan_in={row['fan_in'] or '-'}, fan_out={row['fan_out'] or '-'} "
                    f"({row['layer'] or 'vector'}); ratio {std / e.std if e.std else math.inf:.4g}"
                    f", tolerance {tol:.2g}",
                    e.std,
                    std,
                )
            )
        mtol = Z * max(std, e.std) / math.sqrt(n) + 4 * eps * (abs(e.mean) + e.std)
        if abs(mean - e.mean) > mtol:
            out.append(
                Finding(
                    path,
                    "mean",
                    f"mean {mean:.4g} where {init} (rule {rule.where!r}) gives {e.mean:.4g}, "
                    f"tolerance {mtol:.2g}",
                    e.mean,
                    mean,
                )
            )
    absmax = float(st["absmax"])
    if e.bound is not None and absmax > e.bound * (1 + 4 * eps):
        k = e.bound / e.std if e.std else math.nan
        out.append(
            Finding(
                path,
                "truncation",
                f"max|w| = {absmax:.4g} lies beyond the bound +-{e.bound:.4g} ({k:.3g} sd) of "
                f"{init} (rule {rule.where!r}): the truncation cuts nothing or is not applied",
                e.bound,
                absmax,
            )
        )
    elif e.normal and row["truncated"]:
        out.append(
            Finding(
                path,
                "truncation",
                f"looks truncated at +-{row['max_ratio']:.3g} sd, where {init} (rule "
                f"{rule.where!r}) draws an untruncated normal",
                math.inf,
                row["max_ratio"],
            )
        )
    return out


def _pairs(
    paths: Sequence[str],
    arrays: Sequence[jax.Array],
    rows: Sequence[dict[str, Any]],
    groups: Sequence[tuple[int, ...]],
    grams: Sequence[np.ndarray],
) -> list[Finding]:
    def usable(i: int) -> bool:
        r = rows[i]
        return r["finite"] and r["std"] > 0 and not r["constant"] and not r["identity"]

    pairs: list[tuple[int, int, float]] = []
    for group, gram in zip(groups, grams, strict=True):
        g = np.asarray(gram, np.float64)
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                i, j = group[a], group[b]
                if usable(i) and usable(j):
                    den = math.sqrt(max(g[a, a] * g[b, b], 0.0))
                    pairs.append((i, j, float(g[a, b] / den) if den > 0 else 0.0))
    if not pairs:
        return []
    z = _two_sided_quantile(ALPHA / len(pairs))
    out = []
    for i, j, r in pairs:
        n = int(arrays[i].size)
        if r >= _IDENTICAL_R and bool(jnp.array_equal(arrays[i], arrays[j])):
            kind = "identical"
            message = "holds exactly the same values as {other} (a reused key?)"
        elif abs(r) > z / math.sqrt(n):
            kind = "correlated"
            message = (
                f"is correlated with {{other}}: r = {r:.4g}, beyond the chance level "
                f"{z / math.sqrt(n):.3g} (n = {n}, {len(pairs)} pairs)"
            )
        else:
            continue
        for me, other in ((i, j), (j, i)):
            out.append(
                Finding(
                    paths[me],
                    kind,
                    message.format(other=paths[other]),
                    paths[other],
                    r,
                )
            )
    return out
