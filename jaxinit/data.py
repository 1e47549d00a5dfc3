"""moved to jaxinit.app.data; this path is kept.

The names here are the objects of :mod:`jaxinit.app.data`; patch that module, not this one.
"""

from .app.data import DATASETS as DATASETS
from .app.data import ENV_DIRS as ENV_DIRS
from .app.data import ENV_ONLY as ENV_ONLY
from .app.data import SYSTEM_DIR as SYSTEM_DIR
from .app.data import Dataset as Dataset
from .app.data import IDXError as IDXError
from .app.data import available as available
from .app.data import digits as digits
from .app.data import fashion_mnist as fashion_mnist
from .app.data import fashion_mnist_available as fashion_mnist_available
from .app.data import load as load
from .app.data import mnist as mnist
from .app.data import read_idx as read_idx
from .app.data import search_dirs as search_dirs
from .app.data import stdlib_text as stdlib_text

__all__ = [
    "DATASETS",
    "ENV_DIRS",
    "ENV_ONLY",
    "SYSTEM_DIR",
    "Dataset",
    "IDXError",
    "available",
    "digits",
    "fashion_mnist",
    "fashion_mnist_available",
    "load",
    "mnist",
    "read_idx",
    "search_dirs",
    "stdlib_text",
]
