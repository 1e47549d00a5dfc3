"""moved to jaxinit.app.cli; this path is kept.

The names here are the objects of :mod:`jaxinit.app.cli`; patch that module, not this one.
"""

from .app.cli import DATA as DATA
from .app.cli import INIT_HELP as INIT_HELP
from .app.cli import INITS as INITS
from .app.cli import MODELS as MODELS
from .app.cli import STATS_MODELS as STATS_MODELS
from .app.cli import build_parser as build_parser
from .app.cli import main as main

__all__ = [
    "DATA",
    "INITS",
    "INIT_HELP",
    "MODELS",
    "STATS_MODELS",
    "build_parser",
    "main",
]
