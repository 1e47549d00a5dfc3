"""The experiment scripts (``experiments/``) as importable modules, for their tests."""

from __future__ import annotations

import contextlib
import importlib
import pathlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@contextlib.contextmanager
def experiments_importable() -> Iterator[Callable[[str], ModuleType]]:
    """``importlib.import_module`` with ``experiments/`` on ``sys.path`` while it is open."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(EXPERIMENTS))
