"""Real data for tests: skip with a reason that says how to enable the test, or fail when
``JAXINIT_REQUIRE_DATA=1`` (CI's run on the real files, where a skip would hide a gap)."""

from __future__ import annotations

import os

import pytest

from jaxinit import data

HOW = {
    "fashion-mnist": (
        "apt-get install dataset-fashion-mnist, or set JAXINIT_DATA to a folder holding "
        "fashion-mnist/ (the four IDX files)"
    ),
    "mnist": "set JAXINIT_DATA to a folder holding mnist/ (the IDX files)",
}


def require(name: str, split: str | None = None) -> None:
    """Skip the calling test unless ``name`` (``split``, or both splits) can be found."""
    if data.available(name, split):
        return
    what = f"{name} ({split} split)" if split else name
    message = f"{what} not found in {data.search_dirs(name)}; to run this test: {HOW[name]}"
    if os.environ.get("JAXINIT_REQUIRE_DATA") == "1":
        pytest.fail(f"JAXINIT_REQUIRE_DATA=1 but {message}")
    pytest.skip(message)
