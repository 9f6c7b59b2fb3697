"""Execute notebooks/quickstart.ipynb and notebooks/query_results.ipynb (stored without outputs)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


def _default_model_or_skip() -> None:
    from lptem_dask.models import default_model_paths

    weights, _card = default_model_paths()
    if not weights.exists():
        msg = "the shipped default model is missing; train it with `make model`"
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(msg)


def _run(name: str) -> str:
    from nbclient import NotebookClient

    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), (
        f"{name} must be stored without outputs"
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def test_quickstart_notebook_runs():
    _default_model_or_skip()
    text = _run("quickstart.ipynb")
    assert "tracks" in text and "matched centroids" in text


def test_query_results_notebook_runs():
    _default_model_or_skip()
    text = _run("query_results.ipynb")
    assert "done" in text and "bytes" in text
