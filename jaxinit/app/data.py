"""Real data for demos and experiments: scikit-learn's digits, Fashion-MNIST and MNIST (IDX).

No data file ships with jaxinit. A loader looks for its IDX files, in this order:

1. ``data_dir=``, when given: that folder holds the files, and nothing else is searched;
2. ``<folder>/fashion-mnist/`` (``<folder>/mnist/`` for MNIST) for each folder listed in the
   ``JAXINIT_DATA`` environment variable (several folders separated by ``os.pathsep``);
3. ``/usr/share/datasets/fashion-mnist/``, where the Debian package ``dataset-fashion-mnist``
   installs it, unless ``JAXINIT_DATA_ONLY=1``, which makes the loaders look only where they
   are told (``data_dir=`` or ``JAXINIT_DATA``), even on a machine that has the Debian files.

IDX files may be gzipped (``.gz``) or raw; their magic number, header and dimensions are
checked against the file size and the expected image shape before anything is returned.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

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

SYSTEM_DIR = Path("/usr/share/datasets")
ENV_DIRS = "JAXINIT_DATA"
ENV_ONLY = "JAXINIT_DATA_ONLY"

# IDX type codes -> big-endian dtypes.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_SPLITS = ("train", "test")
_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DATASETS = ("fashion-mnist", "mnist")


class IDXError(ValueError):
    """An IDX file whose header or size is not what it should be."""


class Dataset(NamedTuple):
    """Images and labels.

    Attributes:
      x: float32 images, ``(n, height, width, 1)``, pixel values scaled to [0, 1].
      y: int32 class labels, ``(n,)``.
      name: Where the data came from, e.g. ``"fashion-mnist/train"``.
    """

    x: np.ndarray
    y: np.ndarray
    name: str

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1

    def flat(self) -> np.ndarray:
        """Images as ``(n, height * width)`` rows."""
        return self.x.reshape(self.x.shape[0], -1)

    def standardized(self) -> Dataset:
        """Images shifted and scaled to mean 0, std 1 over the whole set."""
        x = (self.x - self.x.mean()) / self.x.std()
        return self._replace(x=x.astype(np.float32))

    def take(self, n: int | None) -> Dataset:
        """The first ``n`` examples (all when ``n`` is None)."""
        return self if n is None else self._replace(x=self.x[:n], y=self.y[:n])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw), checking its header against its contents.

    Args:
      path: The file; a name ending in ``.gz`` is decompressed.

    Returns:
      A NumPy array of the file's dtype (native byte order) and dimensions.

    Raises:
      FileNotFoundError: If the file does not exist.
      IDXError: If the magic number, type code, dimensions or size are wrong, or the gzip
        stream is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist.")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise IDXError(
                f"{str(path)!r} is not a readable gzip file: bad gzip stream ({err}). The file "
                "is corrupt or truncated; fetch it again."
            ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        hint = " (it looks gzipped: name it .gz)" if raw[:2] == b"\x1f\x8b" else ""
        raise IDXError(
            f"{str(path)!r} is not an IDX file (bad magic): it must start with two zero bytes, "
            f"got {raw[:4].hex() or 'an empty file'}{hint}."
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_TYPES)
        raise IDXError(f"{str(path)!r}: unknown IDX type code 0x{code:02x}; known: {known}.")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise IDXError(
            f"{str(path)!r}: header for {ndim} dimensions is truncated or empty ({len(raw)} bytes)."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    # Python ints: the product of four u4 dimensions can exceed any fixed-width integer.
    want = header + math.prod(dims) * dtype.itemsize
    if len(raw) != want:
        what = "truncated" if len(raw) < want else f"{len(raw) - want} bytes too long"
        raise IDXError(
            f"{str(path)!r}: header says dimensions {dims} of {dtype.name} ({want} bytes "
            f"with the header) but the file holds {len(raw)} bytes; it is {what} or corrupt "
            "(size mismatch)."
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders a loader searches for dataset ``name``, in order (see the module docstring).

    Args:
      name: ``"fashion-mnist"`` or ``"mnist"``.
      data_dir: The loader's ``data_dir=``; when given it is the only folder.

    Raises:
      ValueError: If ``JAXINIT_DATA_ONLY`` is set to something other than ``0`` or ``1``.
    """
    if data_dir is not None:
        return [Path(data_dir)]
    only = os.environ.get(ENV_ONLY, "0").strip()
    if only not in ("", "0", "1"):
        raise ValueError(f"{ENV_ONLY}={only!r} is not supported; use 0 or 1.")
    roots = [Path(d) for d in os.environ.get(ENV_DIRS, "").split(os.pathsep) if d.strip()]
    dirs = [root / name for root in roots]
    if only != "1":
        dirs.append(SYSTEM_DIR / name)
    return dirs


def _find(name: str, stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / f"{stem}.gz", d / stem):
            if candidate.is_file():
                return candidate
    return None


def _load_idx_pair(name: str, split: str, data_dir: str | os.PathLike | None) -> Dataset:
    if split not in _SPLITS:
        raise ValueError(f"{name}: split={split!r} is not supported; use one of {_SPLITS}.")
    dirs = search_dirs(name, data_dir)
    prefix = _PREFIX[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find(name, stem, dirs) for stem in stems]
    missing = [s for s, p in zip(stems, paths, strict=True) if p is None]
    if data_dir is not None and not Path(data_dir).is_dir():
        raise FileNotFoundError(
            f"{name}: data_dir {str(data_dir)!r} is not a directory; it should hold "
            f"{', '.join(stems)} (.gz or raw)."
        )
    if missing:
        where = ", ".join(str(d) for d in dirs) or f"no folder ({ENV_ONLY}=1, {ENV_DIRS} unset)"
        debian = "apt-get install dataset-fashion-mnist, " if name == "fashion-mnist" else ""
        nested = [d / name for d in dirs if (d / name).is_dir()] if data_dir is not None else []
        inside = f" ({name}/ is inside: pass {str(nested[0])!r})" if nested else ""
        raise FileNotFoundError(
            f"{name}: {', '.join(missing)} (.gz or raw) not found in {where}{inside}. To get "
            f"it: {debian}set {ENV_DIRS} to a folder holding {name}/, or pass data_dir=."
        )
    images, labels = (read_idx(p) for p in paths if p is not None)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise IDXError(
            f"{str(paths[0])!r}: expected uint8 images of shape (n, 28, 28), got "
            f"{images.dtype.name} {images.shape}."
        )
    if labels.ndim != 1 or labels.dtype != np.uint8 or labels.shape[0] != images.shape[0]:
        raise IDXError(
            f"{str(paths[1])!r}: expected {images.shape[0]} uint8 labels to match the images, "
            f"got {labels.dtype.name} {labels.shape}."
        )
    if labels.size and labels.max() > 9:
        raise IDXError(f"{str(paths[1])!r}: labels must be 0..9, found {int(labels.max())}.")
    x = (images.astype(np.float32) / 255.0)[..., None]
    return Dataset(x, labels.astype(np.int32), f"{name}/{split}")


def fashion_mnist(split: str = "train", *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 28x28 images, 10 classes.

    Args:
      split: ``"train"`` or ``"test"``.
      data_dir: Folder with the IDX files; default: search ``$JAXINIT_DATA/fashion-mnist/``
        then ``/usr/share/datasets/fashion-mnist/`` (see the module docstring).

    Raises:
      FileNotFoundError: Naming the missing files and the directories searched.
      IDXError: If a file is corrupt or not the expected shape.
    """
    return _load_idx_pair("fashion-mnist", split, data_dir)


def mnist(split: str = "test", *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST (LeCun et al.): like :func:`fashion_mnist`, searched under ``mnist/``."""
    return _load_idx_pair("mnist", split, data_dir)


def available(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
) -> bool:
    """Whether the loader of ``name`` can find the files of ``split`` (both splits when None).

    Only the search is done; headers are read when the data is loaded.

    Args:
      name: ``"fashion-mnist"`` or ``"mnist"`` (``"digits"`` ships with scikit-learn).
      split: ``"train"``, ``"test"`` or None for both.
      data_dir: As for the loaders.
    """
    if name not in _IDX_DATASETS:
        raise ValueError(
            f"available: name={name!r} is not an IDX dataset; use one of {_IDX_DATASETS}."
        )
    if split is not None and split not in _SPLITS:
        raise ValueError(
            f"available: split={split!r} is not supported; use one of {_SPLITS} or None."
        )
    dirs = search_dirs(name, data_dir)
    prefixes = [_PREFIX[split]] if split is not None else list(_PREFIX.values())
    stems = [f"{p}-{kind}" for p in prefixes for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    return all(_find(name, s, dirs) is not None for s in stems)


def fashion_mnist_available(data_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`fashion_mnist` can find both splits (headers not read)."""
    return available("fashion-mnist", data_dir=data_dir)


def digits() -> Dataset:
    """scikit-learn's bundled handwritten digits: 1,797 8x8 images, 10 classes.

    Needs scikit-learn (``pip install jaxinit[cli]``); no download.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "digits() needs scikit-learn: pip install scikit-learn (or jaxinit[cli])."
        ) from err
    bunch: Any = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    return Dataset(x, bunch.target.astype(np.int32), "digits")


def stdlib_text(
    max_bytes: int | None = None, *, root: str | os.PathLike | None = None
) -> np.ndarray:
    """Bytes of the Python standard library's source, for byte-level language models: the
    top-level ``*.py`` files of ``sysconfig.get_paths()["stdlib"]`` (subfolders such as
    ``test/`` and ``site-packages/`` are not read), in sorted name order, concatenated.

    No download and no file of jaxinit's: the text is that of the running Python, so it (and
    a model trained on it) changes with the Python version. Files are read until
    ``max_bytes`` are held; a prefix of the text is the text of a smaller ``max_bytes``.

    Args:
      max_bytes: Keep the first ``max_bytes`` bytes (all of them when None).
      root: A folder to read instead of the standard library's.

    Returns:
      A 1-D ``uint8`` array of at most ``max_bytes`` bytes.

    Raises:
      ValueError: If ``max_bytes`` is not an int >= 1.
      FileNotFoundError: If the folder holds no ``*.py`` file.

    Example:
      >>> from jaxinit import data
      >>> text = data.stdlib_text(max_bytes=1000)
      >>> text.shape, text.dtype
      ((1000,), dtype('uint8'))
    """
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int | np.integer) or max_bytes < 1
    ):
        raise ValueError(
            f"stdlib_text: max_bytes={max_bytes!r} must be an int >= 1, or None for all files."
        )
    if root is None:
        import sysconfig

        root = sysconfig.get_paths()["stdlib"]
    files = sorted(f for f in Path(root).glob("*.py") if f.is_file())
    if not files:
        raise FileNotFoundError(
            f"stdlib_text: no *.py file in {root}; pass root= a folder of them."
        )
    parts, held = [], 0
    for f in files:
        if max_bytes is not None and held >= max_bytes:
            break
        parts.append(f.read_bytes())
        held += len(parts[-1])
    text = b"".join(parts)
    return np.frombuffer(text if max_bytes is None else text[:max_bytes], np.uint8).copy()


DATASETS = ("digits", "fashion-mnist", "mnist")


def load(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name: ``"digits"``, ``"fashion-mnist"`` or ``"mnist"``.

    ``split`` is ignored for ``digits`` (one set of 1,797 images).
    """
    if name == "digits":
        return digits()
    if name == "fashion-mnist":
        return fashion_mnist(split, data_dir=data_dir)
    if name == "mnist":
        return mnist(split, data_dir=data_dir)
    raise ValueError(f"load: name={name!r} is not a known dataset; use one of {DATASETS}.")
