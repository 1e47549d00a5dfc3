"""The package as a user meets it: what ``import jaxinit`` loads, its public names, version."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import jaxinit

HEAVY = ("flax", "optax", "matplotlib", "rich", "scipy", "sklearn")


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
