"""Fixtures shared by the test modules (the session's set-up is the root ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
from _experiments import experiments_importable


@pytest.fixture(scope="module")
def load() -> Iterator[Callable[[str], ModuleType]]:
    """``load("name")`` imports ``experiments/name.py`` as a module."""
    with experiments_importable() as import_module:
        yield import_module
