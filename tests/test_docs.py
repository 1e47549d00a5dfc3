"""The documentation's examples run, and its API reference covers every public name.

Each ```python block of README.md and of every guide page in docs/ runs, in order, in one
namespace per file (a page's examples build on each other; files are independent), in a
temporary working directory. A block that must not run uses another info string (```py or
```python {.no-run}), with the reason beside it. The API reference (docs/api/) must have a
``::: path`` directive for every name in ``jaxinit.__all__``, and each path must import to
that very object (or, for a kept module path such as ``jaxinit.models``, to the module whose
names it re-exports, ``jaxinit.app.models``).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pathlib
import re
import sys
import textwrap
import types
from typing import Any

import pytest

import jaxinit

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
API_PAGES = sorted((DOCS / "api").glob("*.md"))

# A fence opening exactly "```python" (nothing after it), possibly indented (in a list or an
# admonition), and the block up to the closing fence at the same indentation.
_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
_DIRECTIVE = re.compile(r"^:::[ \t]+(\S+)", re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each runnable python block of a Markdown text."""
    return [
        (text.count("\n", 0, m.start()) + 1, textwrap.dedent(m.group("code")))
        for m in _BLOCK.finditer(text)
    ]


def run_blocks(path: pathlib.Path, blocks: list[tuple[int, str]]) -> None:
    """Run the blocks in order in one fresh module (dataclasses, hence Flax modules, look
    their module up in ``sys.modules``)."""
    module = types.ModuleType(f"jaxinit_docs_{path.stem.lower()}")
    sys.modules[module.__name__] = module
    try:
        for line, code in blocks:
            name = f"{path.relative_to(ROOT)}:{line}"
            try:
                exec(compile(code, name, "exec"), module.__dict__)
            except Exception as err:
                raise AssertionError(f"the python block at {name} failed:\n{code}") from err
    finally:
        del sys.modules[module.__name__]


# The guides whose examples train or sweep for 14-55 s each on the 2-core machine: in the slow
# set, so the default suite stays under ten minutes.
_SLOW_PAGES = {"scaling.md", "lsuv.md", "analysis.md", "signal.md", "initializers.md"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in _SLOW_PAGES else p for p in PAGES],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    """Every ```python block of the file runs, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    run_blocks(path, python_blocks(path.read_text()))  # a page without examples passes


def test_readme_quickstart_runs_alone(tmp_path, monkeypatch):
    """The README's Quickstart runs on its own: CI runs it against the installed wheel."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quickstart\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert section is not None, "README.md has no '## Quickstart' section"
    blocks = python_blocks(section.group(1))
    assert blocks, "the README's Quickstart has no python block"
    monkeypatch.chdir(tmp_path)
    run_blocks(ROOT / "README.md", blocks)


def test_block_parser():
    text = "a\n```python\nx = 1\n```\n```py\nno\n```\n```python {.no-run}\nno\n```\n"
    text += "- item\n\n    ```python\n    y = 2\n    ```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (13, "y = 2\n")]


def public_names() -> list[str]:
    """``jaxinit.__all__``, or the names ``jaxinit/__init__.py`` imports, without ``_`` ones."""
    names = getattr(jaxinit, "__all__", None)
    if names is None:
        tree = ast.parse((ROOT / "jaxinit" / "__init__.py").read_text())
        names = [
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom | ast.Import)
            for alias in node.names
        ]
    return sorted({n for n in names if not n.startswith("_")})


def resolve(path: str) -> Any:
    """The object a ``::: a.b.c`` directive names: the longest importable module, then
    attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def documented() -> dict[str, str]:
    """``path -> page`` for every ``:::`` directive of the API reference."""
    return {
        target: page.name for page in API_PAGES for target in _DIRECTIVE.findall(page.read_text())
    }


def documents(obj: Any, public: Any) -> bool:
    """Whether a directive's object documents a public one: it is that object, or the public
    name is a kept path (``jaxinit.models``) whose ``__all__`` and every name in it are those
    of the documented module (``jaxinit.app.models``)."""
    if obj is public:
        return True
    names = getattr(public, "__all__", None)
    return (
        isinstance(obj, types.ModuleType)
        and isinstance(public, types.ModuleType)
        and bool(names)
        and list(getattr(obj, "__all__", ())) == list(names)
        and all(getattr(obj, n) is getattr(public, n) for n in names)
    )


def test_api_reference_covers_every_public_name():
    """Each public name has a directive in docs/api/ that resolves to that object."""
    targets = documented()
    assert targets, "docs/api/ has no ::: directives"
    objects = {path: resolve(path) for path in targets}
    missing = [
        name
        for name in public_names()
        if not any(
            path.rsplit(".", 1)[-1] == name and documents(obj, getattr(jaxinit, name))
            for path, obj in objects.items()
        )
    ]
    assert not missing, (
        f"public names without an entry in docs/api/: {missing}; add '::: jaxinit.NAME' (or the "
        "defining module's path) to a page there"
    )


def test_api_directives_resolve():
    """No directive names something that does not exist (a renamed or removed name)."""
    for path, page in documented().items():
        try:
            resolve(path)
        except (ImportError, AttributeError) as err:
            raise AssertionError(f"docs/api/{page}: '::: {path}' does not resolve") from err


def test_guides_are_in_the_navigation():
    """Every page under docs/ is reachable from mkdocs.yml's nav."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS) for p in DOCS.rglob("*.md")]
    pages = [p.as_posix() for p in pages if not any(s.startswith("_") for s in p.parts)]
    assert [p for p in pages if p not in nav] == []


def test_cli_page_lists_every_option():
    """docs/cli.md names every subcommand and every option of the ``jaxinit`` command."""
    from jaxinit.app import cli

    page = (DOCS / "cli.md").read_text()
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {option}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        for option in action.option_strings or [action.dest]
        if option not in ("-h", "--help") and f"`{option}" not in page
    ]
    missing += [f"jaxinit {name}" for name in commands.choices if f"`jaxinit {name}`" not in page]
    assert not missing, f"docs/cli.md does not document: {missing}"


@pytest.mark.slow  # .ci/run builds the site with --strict in its own step
def test_mkdocs_build_strict(tmp_path):
    """The site builds with no warning (needs the docs extra)."""
    how = "to run this test: pip install -e '.[docs]'"
    pytest.importorskip("mkdocs", reason=f"mkdocs is not installed; {how}")
    pytest.importorskip(
        "mkdocstrings_handlers.python", reason=f"mkdocstrings is not installed; {how}"
    )
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(tmp_path / "site"))
    build(config)
    assert (tmp_path / "site" / "index.html").is_file()
