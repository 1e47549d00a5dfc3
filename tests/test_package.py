"""The package as a user meets it: what ``import jaxinit`` loads, its public names, version."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pathlib
import subprocess
import sys

import pytest

import jaxinit

HEAVY = ("flax", "optax", "matplotlib", "rich", "scipy", "sklearn")
PACKAGE = pathlib.Path(jaxinit.__file__).resolve().parent
# Modules of the application layer that are also importable from their old path, jaxinit.NAME.
KEPT = ("cli", "data", "models", "plotting", "report")


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_loads_only_jax_and_numpy():
    out = _python(
        "import sys, jaxinit; jaxinit.he_normal(); jaxinit.predict; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    assert out.strip() == "[]", f"import jaxinit loaded {out.strip()}"


def test_flax_names_load_on_first_use():
    out = _python(
        "import sys, jaxinit; assert 'flax' not in sys.modules; f = jaxinit.layer_stats; "
        "print('flax' in sys.modules, f.__module__)"
    )
    assert out.split() == ["True", "jaxinit.analysis"]


@pytest.mark.parametrize("first", ["import jaxinit", "import jaxinit.lsuv", "jaxinit.LSUVReport"])
def test_lsuv_is_callable_whichever_is_loaded_first(first):
    # ``jaxinit.lsuv`` names the function and its module; every order leaves it callable.
    out = _python(
        f"import jaxinit; {first}; from jaxinit.lsuv import LSUVReport\n"
        "try:\n    jaxinit.lsuv(object(), None)\n"
        "except TypeError as err:\n    print(err)\n"
        "print(LSUVReport.__name__)"
    )
    assert "lsuv: model of type object is not a Flax module" in out
    assert out.split()[-1] == "LSUVReport"


@pytest.mark.parametrize("name", jaxinit.__all__)
def test_every_public_name_resolves(name):
    assert getattr(jaxinit, name) is not None
    assert name in dir(jaxinit)


def test_all_lists_every_public_name_once():
    assert len(set(jaxinit.__all__)) == len(jaxinit.__all__)
    assert jaxinit.__all__ == sorted(jaxinit.__all__)
    public = {n for n in vars(jaxinit) if not n.startswith("_") and n not in ("annotations",)}
    public -= {"importlib", "TYPE_CHECKING", "Any"}
    # Submodules imported for their definitions are not public names unless listed.
    public = {n for n in public if not isinstance(getattr(jaxinit, n), type(jaxinit))}
    assert public <= set(jaxinit.__all__), sorted(public - set(jaxinit.__all__))


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'he_normall'"):
        _ = jaxinit.he_normall  # type: ignore[attr-defined]


def test_version_has_one_source():
    from jaxinit._version import __version__

    assert jaxinit.__version__ == __version__
    try:
        installed = importlib.metadata.version("jaxinit")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare tree
        pytest.skip("jaxinit is not installed (pip install -e .)")
    assert installed == __version__


def _public_definitions(path: pathlib.Path) -> set[str]:
    """Names a module defines at top level (def, class, assignment), without ``_`` ones."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("name", KEPT)
def test_old_path_gives_the_app_objects(name):
    new = importlib.import_module(f"jaxinit.app.{name}")
    old = importlib.import_module(f"jaxinit.{name}")
    assert set(new.__all__) == _public_definitions(PACKAGE / "app" / f"{name}.py")
    assert old.__all__ == new.__all__
    for attr in new.__all__:
        assert getattr(old, attr) is getattr(new, attr), f"jaxinit.{name}.{attr}"


@pytest.mark.parametrize("first", ["attribute", "import"])
def test_old_paths_whichever_is_loaded_first(first):
    # ``jaxinit.models`` (the lazy attribute) and ``import jaxinit.models`` name one module,
    # in either order, and its names are those of jaxinit.app.
    load = {"attribute": "m = jaxinit.models", "import": "import jaxinit.models as m"}[first]
    _python(
        f"import sys, jaxinit\n{load}\n"
        "import jaxinit.models, jaxinit.data, jaxinit.cli, jaxinit.report, jaxinit.plotting\n"
        "from jaxinit.models import MLP\n"
        "from jaxinit.data import fashion_mnist\n"
        "import jaxinit.app.models as am, jaxinit.app.data as ad, jaxinit.app.cli as ac\n"
        "import jaxinit.app.report as ar, jaxinit.app.plotting as ap\n"
        "assert m is jaxinit.models is sys.modules['jaxinit.models']\n"
        "assert MLP is jaxinit.models.MLP is am.MLP\n"
        "assert fashion_mnist is jaxinit.data.fashion_mnist is ad.fashion_mnist\n"
        "assert jaxinit.data is sys.modules['jaxinit.data']\n"
        "assert jaxinit.cli.main is ac.main\n"
        "assert jaxinit.report.layers_table is ar.layers_table\n"
        "assert jaxinit.plotting.plot_layer_stats is ap.plot_layer_stats\n"
    )


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import of a module, at any depth (function-local
    and ``TYPE_CHECKING`` ones included); ``from . import x`` gives the package and ``.x``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _outside_app() -> list[pathlib.Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "analysis.py" in paths and PACKAGE / "app" / "cli.py" in paths
    return [p for p in paths if "app" not in p.relative_to(PACKAGE).parts[:-1]]


def test_only_the_app_layer_imports_matplotlib_or_rich():
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in _outside_app()
        for line, module in _imported(path)
        if module.split(".")[0] in ("matplotlib", "rich")
    ]
    assert not bad, "\n".join(bad)


def test_the_core_never_imports_the_app_layer():
    kept = {PACKAGE / f"{name}.py" for name in KEPT}
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in _outside_app()
        if path not in kept
        for line, module in _imported(path)
        if module == "jaxinit.app" or module.startswith("jaxinit.app.")
    ]
    assert not bad, "\n".join(bad)
    assert not [v for v in jaxinit._LAZY.values() if v[0].startswith(".app")]
    # The old paths are thin: a docstring, re-exports of their jaxinit.app module, __all__.
    for path in sorted(kept):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                assert node.level == 1 and node.module == f"app.{path.stem}", path
                assert all(a.asname == a.name for a in node.names), path
            else:
                docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                dunder_all = isinstance(node, ast.Assign) and [
                    getattr(t, "id", None) for t in node.targets
                ] == ["__all__"]
                assert docstring or dunder_all, f"{path.name}:{node.lineno}"


def _runtime_imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """Top-level module names imported by ``path`` when it runs: imports under ``if
    TYPE_CHECKING:`` (for static checkers only) are left out."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_only_the_flax_boundary_and_the_app_layer_import_flax():
    allowed = ("_flax", "app")
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports flax"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in allowed
        for line, module in _runtime_imports(path)
        if module == "flax"
    ]
    assert not bad, "\n".join(bad)
    assert any(m == "flax" for _, m in _runtime_imports(PACKAGE / "_flax" / "adapter.py"))


def test_the_command_is_the_app_main():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python >= 3.11")
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"jaxinit": "jaxinit.app.cli:main"}
