"""Shared test helpers.

``shared_data(relpath)`` returns the path of a file under the shared real-data
folder ``<repo>/../shared/data``. Where it is absent the calling test is
skipped, except in CI (``CI=true``), where it fails: CI must have the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared_data(relpath: str | os.PathLike) -> Path:
    """Path of ``relpath`` under ../shared/data; skip (or fail in CI) when absent."""
    path = SHARED_DATA / relpath
    if not path.exists():
        message = f"shared test data {str(path)!r} is absent"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: the data must be present)")
        pytest.skip(message)
    return path
