"""Execute notebooks/diffusion_and_interaction.ipynb (stored without outputs) on small data."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "diffusion_and_interaction.ipynb"


def test_diffusion_notebook_runs():
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), (
        "the notebook must be stored without outputs"
    )
    t0 = time.perf_counter()
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    print(f"notebook ran in {time.perf_counter() - t0:.1f} s")
    text = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "D   =" in text and "landscape minimum" in text
