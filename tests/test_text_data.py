"""jaxinit.data.stdlib_text: the standard library's top-level sources as bytes."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest

from jaxinit import data


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "b.py").write_bytes(b"bb\n")
    (tmp_path / "a.py").write_bytes(b"a\xff\n")  # not UTF-8: bytes are read as they are
    (tmp_path / "c.txt").write_bytes(b"not python\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.py").write_bytes(b"in a subfolder\n")
    return tmp_path


def test_top_level_py_files_in_sorted_order(tmp_path):
    text = data.stdlib_text(root=_folder(tmp_path))
    assert text.dtype == np.uint8 and text.ndim == 1
    assert text.tobytes() == b"a\xff\nbb\n"


@pytest.mark.parametrize("max_bytes", [1, 2, 3, 4, 6, 7, 100])
def test_max_bytes_keeps_a_prefix(tmp_path, max_bytes):
    full = data.stdlib_text(root=_folder(tmp_path)).tobytes()
    text = data.stdlib_text(max_bytes, root=tmp_path)
    assert text.tobytes() == full[:max_bytes]


def test_the_standard_library_by_default():
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    text = data.stdlib_text(max_bytes=200_000)
    assert text.shape == (200_000,)
    want = b"".join(f.read_bytes() for f in files)[:200_000]
    assert text.tobytes() == want
    assert text.flags.writeable and text.flags.owndata  # not a view of a bytes object


def test_the_kept_path_re_exports_it():
    from jaxinit.app import data as app_data

    assert data.stdlib_text is app_data.stdlib_text
    assert "stdlib_text" in data.__all__ and "stdlib_text" in app_data.__all__


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_bad_max_bytes(bad):
    with pytest.raises(ValueError, match=r"max_bytes=.* must be an int >= 1"):
        data.stdlib_text(bad)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no \*\.py file in"):
        data.stdlib_text(root=tmp_path)
