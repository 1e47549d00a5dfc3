"""Griffe extension for the docs build: jaxinit's docstrings as Markdown.

jaxinit's docstrings are Google style, written to read well in ``help()``: a singular
``Example:`` heading, Sphinx roles (``:class:`Initializer```), reST literal blocks (``::``)
and the odd reST simple table. Before griffe parses a docstring, this extension

* renames ``Example:`` to ``Examples:``, the heading griffe's Google parser knows, so the
  doctests render as Python console code (any other heading becomes an admonition whose
  ``>>>`` lines Markdown reads as nested block quotes);
* turns each Sphinx role into inline code (``~`` keeps the last component, as in Sphinx);
* ends a paragraph that introduces a literal block with ``:`` instead of ``::`` (the
  indented block after it is already a Markdown code block);
* rewrites reST simple tables (``====  ====`` rules) as Markdown tables.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.M)
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::$", flags=re.M)
_RULE = re.compile(r"^(\s*)(=+(?: +=+)+)\s*$")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    """Cut ``line`` at the columns' starts, each moved right past a cell that overruns it."""
    cuts = [0]
    for start, _ in spans[1:]:
        cut = max(start, cuts[-1])
        while cut < len(line) and line[cut - 1] != " ":
            cut += 1
        cuts.append(cut)
    return [line[a:b].strip() for a, b in zip(cuts, [*cuts[1:], len(line)], strict=True)]


def _tables(text: str) -> str:
    """reST simple tables (top rule, header, rule, rows, bottom rule) as Markdown tables."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        rule = _RULE.match(lines[i])
        ends = [j for j in range(i + 1, len(lines)) if lines[j] == lines[i]] if rule else []
        if not rule or len(ends) < 2 or ends[0] != i + 2:
            out.append(lines[i])
            i += 1
            continue
        indent, cols = rule.group(1), [m.span() for m in re.finditer(r"=+", lines[i])]
        header, body = lines[i + 1], lines[i + 3 : ends[1]]
        out.append(indent + "| " + " | ".join(_cells(header, cols)) + " |")
        out.append(indent + "|" + " --- |" * len(cols))
        out += [indent + "| " + " | ".join(_cells(row, cols)) + " |" for row in body if row.strip()]
        i = ends[1] + 1
    return "\n".join(out)


def to_markdown(docstring: str) -> str:
    """The docstring with the rewrites listed in the module docstring."""
    text = _HEADING.sub(r"\1Examples:", docstring)
    text = _LITERAL.sub(r"\1:", _ROLE.sub(_role, text))
    return _tables(text)


class GoogleMarkdown(griffe.Extension):
    """Apply `to_markdown` to every docstring before it is parsed."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
