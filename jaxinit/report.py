"""moved to jaxinit.app.report; this path is kept.

The names here are the objects of :mod:`jaxinit.app.report`; patch that module, not this one.
"""

from .app.report import CELL as CELL
from .app.report import compare_table as compare_table
from .app.report import console as console
from .app.report import gain_table as gain_table
from .app.report import layers_table as layers_table
from .app.report import lsuv_table as lsuv_table

__all__ = [
    "CELL",
    "compare_table",
    "console",
    "gain_table",
    "layers_table",
    "lsuv_table",
]
