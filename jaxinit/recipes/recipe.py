"""Recipes: ordered maps from parameter-path patterns to initializers.

A :class:`Recipe` is a named, ordered tuple of :class:`Rule` s. Each rule pairs a glob pattern
over *parameter* paths (the grammar of :mod:`jaxinit.tree`: ``*`` within one segment, ``?``
one character, ``**`` across segments, ``**/`` zero or more leading segments) with an
initializer and the formula or citation that justifies it. For every parameter of a target,
the **first** rule whose pattern matches the whole path wins; parameters no rule matches are
left as they are. :meth:`Recipe.apply` draws each won parameter afresh with
:func:`jaxinit.tree.reinit` (one ``reinit`` per rule, over the paths that rule wins), so every
parameter is drawn with ``tree.path_key(key, path)``: its value depends on the key and its path
only, not on the other rules or on their order.

=================  ==========================================================================
Targets            linen variables (``apply`` returns new variables) or an NNX model
                   (``apply`` edits it in place and returns None), as in :mod:`jaxinit.tree`
A rule wins        the parameters it matches that no earlier rule matches
A rule must match  at least one parameter of the target (else a ValueError naming the rule),
                   unless it is ``optional=True`` (biases of a model that may have none)
A shadowed rule    (all of its matches won by earlier rules) is allowed: it is how
                   ``base | override`` replaces rules
``a | b``          ``b``'s rules first, then ``a``'s: the later recipe overrides the earlier
=================  ==========================================================================

jaxinit initializers carry a variance law (``rule.init.variance(fan_in, fan_out,
shape=...)``) and a ``repr`` that shows the factory call, so a recipe's table (``str``) says
exactly what is drawn, and :func:`jaxinit.audit` can compare a model's parameters with it.
Initializers see only a parameter's shape: fans are computed for Flax layouts (Dense
``(in, out)``, Conv ``(*spatial, in, out)``); a kernel in another layout needs an initializer
with explicit ``in_axis``/``out_axis``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import jax

from .. import tree
from .._base import Init
from .._checks import check_key, short
from .._flax.adapter import adapter_for
from .._flax.select import pattern_predicate

if TYPE_CHECKING:
    from flax import nnx

__all__ = ["Recipe", "Rule"]

Variables = Mapping[str, Any]


class Rule(NamedTuple):
    """One line of a :class:`Recipe`: the parameters ``where`` matches are drawn with ``init``.

    Attributes:
      where: A glob pattern over parameter paths (``"**/c_proj/kernel"``, ``"**/bias"``; see
        :mod:`jaxinit.tree`), matched against the whole path.
      init: An initializer ``(key, shape, dtype) -> array``; jaxinit ones
        (:class:`~jaxinit.Initializer`) carry a variance law and show their factory call.
      why: The formula or citation shown in the recipe's table.
      optional: Whether the rule may match no parameter of a target (e.g. biases of a model
        built without them); a non-optional rule that matches nothing is an error.
    """

    where: str
    init: Callable[..., jax.Array]
    why: str = ""
    optional: bool = False


def _check_rule(recipe: str, i: int, rule: Any) -> Rule:
    if not isinstance(rule, Rule):
        if isinstance(rule, tuple) and 2 <= len(rule) <= 4:
            rule = Rule(*rule)
        else:
            raise TypeError(
                f"Recipe {recipe!r}: rules[{i}]={short(rule)} is not a Rule; use "
                "Rule(where, init, why), e.g. Rule('**/kernel', jaxinit.he_normal(), "
                "'He et al. 2015')."
            )
    label = f"Recipe {recipe!r}: rules[{i}] (where={rule.where!r})"
    if not isinstance(rule.where, str) or not rule.where:
        raise TypeError(
            f"{label}: where must be a non-empty glob pattern over parameter paths, such as "
            "'**/kernel' or 'Dense_*/bias'."
        )
    if not callable(rule.init):
        raise TypeError(
            f"{label}: init={short(rule.init)} is not callable; use a jaxinit initializer such "
            "as jaxinit.normal(0.02) or any (key, shape, dtype) -> array function."
        )
    if not isinstance(rule.why, str):
        raise TypeError(f"{label}: why={short(rule.why)} must be a string.")
    if not isinstance(rule.optional, bool):
        raise TypeError(f"{label}: optional={rule.optional!r} must be True or False.")
    return rule


def _strings(recipe: str, arg: str, value: Any) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    for s in items:
        if not isinstance(s, str):
            raise TypeError(f"Recipe {recipe!r}: {arg} holds {short(s)}; use strings.")
    return items


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named, ordered list of :class:`Rule` s: for each parameter, the first rule whose
    pattern matches its path says how it is drawn (see the module docstring).

    Attributes:
      name: A short name, shown in tables and messages.
      rules: The rules, in order of precedence (a list is stored as a tuple; ``(where, init,
        why)`` tuples are taken as rules).
      references: Paper and reference-code URLs.
      notes: Caveats: what the recipe does not do (architecture changes, layouts).

    Raises:
      TypeError: a rule that is not a :class:`Rule`, a ``where`` that is not a pattern, an
        ``init`` that is not callable, or a non-string name, ``why``, reference or note.
      ValueError: no rules, or a pattern repeated (the second copy could never win).

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxinit
      >>> from jaxinit.recipes.recipe import Recipe, Rule
      >>> recipe = Recipe("demo", (
      ...     Rule("**/kernel", jaxinit.normal(0.02), "N(0, 0.02^2)"),
      ...     Rule("**/bias", jaxinit.zeros(), "0", optional=True),
      ... ))
      >>> mlp = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(4)])
      >>> variables = jax.eval_shape(mlp.init, jax.random.key(0), jnp.ones((1, 4)))  # shapes
      >>> {p: r.where for p, r in recipe.paths(variables).items() if "0" in p}
      {'layers_0/bias': '**/bias', 'layers_0/kernel': '**/kernel'}
      >>> recipe.match("layers_2/kernel").init.variance(4, 4)  # stddev^2
      0.0004
    """

    name: str
    rules: tuple[Rule, ...]
    references: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Recipe: name={short(self.name)} must be a non-empty string.")
        if isinstance(self.rules, Rule) or not isinstance(self.rules, tuple | list):
            raise TypeError(
                f"Recipe {self.name!r}: rules={short(self.rules)} must be a tuple of Rule."
            )
        rules = tuple(_check_rule(self.name, i, r) for i, r in enumerate(self.rules))
        if not rules:
            raise ValueError(f"Recipe {self.name!r}: rules=() is empty; give at least one Rule.")
        seen: dict[str, int] = {}
        for i, r in enumerate(rules):
            if r.where in seen:
                raise ValueError(
                    f"Recipe {self.name!r}: rules[{i}] repeats the pattern {r.where!r} of "
                    f"rules[{seen[r.where]}], so it could never win; remove one of them."
                )
            seen[r.where] = i
        if not isinstance(self.notes, str):
            raise TypeError(f"Recipe {self.name!r}: notes={short(self.notes)} must be a string.")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "references", _strings(self.name, "references", self.references))

    # ----------------------------------------------------------------------------------------

    def match(self, path: str) -> Rule | None:
        """The first rule whose pattern matches the whole ``path``, or None.

        Example:
          >>> import jaxinit
          >>> from jaxinit.recipes.recipe import Recipe, Rule
          >>> r = Recipe("demo", (Rule("**/c_proj/kernel", jaxinit.normal(0.004)),
          ...                     Rule("**/kernel", jaxinit.normal(0.02))))
          >>> r.match("h_3/attn/c_proj/kernel").where, r.match("h_3/attn/c_attn/kernel").where
          ('**/c_proj/kernel', '**/kernel')
          >>> r.match("ln_f/scale") is None
          True
        """
        for rule, pred in zip(self.rules, self._predicates(), strict=True):
            if pred(path, None):
                return rule
        return None

    def _predicates(self) -> list[Callable[[str, Any], bool]]:
        preds = [pattern_predicate(r.where) for r in self.rules]
        return [p for p in preds if p is not None]

    def paths(self, target: Variables | nnx.Module) -> dict[str, Rule]:
        """``{parameter path: the rule that wins it}`` for the parameters of ``target`` some
        rule matches, in natural path order (as :func:`jaxinit.tree.paths`).

        Args:
          target: Linen variables (a mapping with a ``params`` collection) or an NNX model.

        Returns:
          A dict from parameter path to :class:`Rule`; unmatched parameters are absent.

        Raises:
          TypeError: ``target`` is neither linen variables nor an NNX model.
          ValueError: a non-optional rule matches no parameter of ``target`` (the message
            names the rule and lists the target's parameters).
        """
        all_paths = adapter_for(target, name="target").paths()
        preds = self._predicates()
        won: dict[str, Rule] = {}
        for path in all_paths:
            for rule, pred in zip(self.rules, preds, strict=True):
                if pred(path, None):
                    won[path] = rule
                    break
        for i, (rule, pred) in enumerate(zip(self.rules, preds, strict=True)):
            if rule.optional or any(pred(p, None) for p in all_paths):
                continue
            shown = ", ".join(repr(p) for p in all_paths[:8])
            more = f", ... ({len(all_paths)} in all)" if len(all_paths) > 8 else ""
            raise ValueError(
                f"Recipe {self.name!r}: rules[{i}] (where={rule.where!r}, init={rule.init!r}) "
                f"matches no parameter of the target, whose parameters are {shown}{more}. "
                "Pass the pattern that names these parameters in this model (the recipe's "
                "pattern arguments), or mark the rule optional=True."
            )
        return won

    @overload
    def apply(self, target: nnx.Module, key: jax.Array) -> None: ...
    @overload
    def apply(self, target: Variables, key: jax.Array) -> Variables: ...
    def apply(self, target: Any, key: jax.Array) -> Any:
        """Draw every parameter a rule wins with that rule's initializer.

        Parameter ``p`` won by rule ``r`` becomes ``r.init(tree.path_key(key, p), p.shape,
        p.dtype)``: one :func:`jaxinit.tree.reinit` per rule over the paths it wins.
        Parameters no rule matches, and collections other than ``params``, are unchanged.
        Linen: pure, so it runs under ``jax.jit`` and ``jax.vmap`` over keys.

        Args:
          target: Linen variables or an NNX model.
          key: A single PRNG key.

        Returns:
          Linen: new variables. NNX: None (the model is edited in place).

        Raises:
          TypeError: a bad ``target`` or ``key``.
          ValueError: a non-optional rule matches no parameter (see :meth:`paths`), or an
            initializer returns the wrong shape.

        Example:
          >>> import flax.nnx as nnx, jax, jax.numpy as jnp, jaxinit
          >>> from jaxinit.recipes.recipe import Recipe, Rule
          >>> model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
          >>> Recipe("zero head", (Rule("**", jaxinit.zeros()),)).apply(model, jax.random.key(0))
          >>> bool(jnp.all(model.kernel[...] == 0)), model.kernel.shape
          (True, (4, 3))
        """
        check_key(f"Recipe {self.name!r}.apply", key, single=True)
        won = self.paths(target)
        linen = adapter_for(target, name="target").kind == "linen"
        out = target
        for rule in self.rules:
            mine = frozenset(p for p, r in won.items() if r is rule)
            if not mine:
                continue
            result = tree.reinit(out, lambda p, _, mine=mine: p in mine, rule.init, key)
            if linen:  # linen: new variables; NNX: edited in place
                out = result
        return out if linen else None

    # ----------------------------------------------------------------------------------------

    def __or__(self, other: Recipe) -> Recipe:
        """``base | override``: ``override``'s rules first, then ``base``'s (the later recipe
        overrides for the parameters both match); references joined, notes joined.

        Example:
          >>> import jaxinit
          >>> from jaxinit.recipes.recipe import Recipe, Rule
          >>> base = Recipe("base", (Rule("**/kernel", jaxinit.normal(0.02)),))
          >>> head = Recipe("head", (Rule("head/kernel", jaxinit.zeros()),))
          >>> both = base | head
          >>> both.name, [r.where for r in both.rules]
          ('base | head', ['head/kernel', '**/kernel'])
        """
        if not isinstance(other, Recipe):
            return NotImplemented
        return self.then(other)

    def then(self, other: Recipe) -> Recipe:
        """The same as ``self | other``: ``other`` overrides ``self``. A pattern in both
        keeps ``other``'s rule only."""
        if not isinstance(other, Recipe):
            raise TypeError(f"Recipe.then: other={short(other)} must be a Recipe.")
        theirs = {r.where for r in other.rules}
        rules = (*other.rules, *(r for r in self.rules if r.where not in theirs))
        refs = tuple(dict.fromkeys((*self.references, *other.references)))
        notes = "\n".join(n for n in (self.notes, other.notes) if n)
        return Recipe(f"{self.name} | {other.name}", rules, refs, notes)

    def __str__(self) -> str:
        """A plain-text table: one line per rule with its pattern, initializer and ``why``,
        then the notes and references."""
        head = ("pattern", "init", "why")
        rows = [
            (r.where + (" (optional)" if r.optional else ""), _init_repr(r.init), r.why)
            for r in self.rules
        ]
        widths = [max(len(x[c]) for x in (head, *rows)) for c in range(2)]

        def line(row: tuple[str, str, str]) -> str:
            return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip()

        out = [f"Recipe {self.name}", line(head), line(("-" * widths[0], "-" * widths[1], "---"))]
        out += [line(r) for r in rows]
        if self.notes:
            out += ["", "Notes: " + self.notes]
        if self.references:
            out += ["", "References:", *(f"  {ref}" for ref in self.references)]
        return "\n".join(out)


def _init_repr(init: Callable[..., Any]) -> str:
    """The initializer's ``repr`` for jaxinit initializers, else its qualified name."""
    if isinstance(init, Init):
        return repr(init)
    name = getattr(init, "__qualname__", None) or getattr(init, "__name__", None)
    if name is None:
        return repr(init)
    module = getattr(init, "__module__", None)
    return f"{module}.{name}" if module else name
