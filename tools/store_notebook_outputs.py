"""Run driver.ipynb top to bottom with its reference settings and store the outputs.

    python tools/store_notebook_outputs.py

It writes two files:

* ``tests/reference/driver.ipynb``: the outputs of the cells that are
  compared (those not tagged nbval-ignore-output).  ``python -m pytest``
  compares driver.ipynb's run with these (conftest.py), so rerun this after
  changing the notebook or what its compared cells print.
* ``driver.ipynb``: the same outputs for readers, without widgets and progress
  bars, which only work in a live session (opened later they show as text).

The run uses the small reference settings whatever the machine
(``OASIS_GAN_REFERENCE_RUN=1``, as under pytest), in a fresh kernel from the
repository root, and nothing is stored if a cell raises an error.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "driver.ipynb"
REFERENCE = ROOT / "tests" / "reference" / "driver.ipynb"
LIVE_ONLY = "application/vnd.jupyter.widget-view+json"  # widgets and tqdm bars: nothing to show without a kernel


def without_live_outputs(notebook):
    """A copy for readers: no widget views, no per-session metadata."""
    clean = copy.deepcopy(notebook)
    for cell in clean.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if LIVE_ONLY not in output.get("data", {})]
    return clean


def compared_outputs_only(notebook):
    """A copy for the check: outputs only where nbval compares them (the cells still count as run)."""
    reference = copy.deepcopy(notebook)
    for cell in reference.cells:
        if cell.cell_type == "code" and "nbval-ignore-output" in cell.metadata.get("tags", []):
            cell.outputs = []
    return reference


def main() -> None:
    os.environ["OASIS_GAN_REFERENCE_RUN"] = "1"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, leaving both files untouched, if a cell fails
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)  # widget state is per session
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(compared_outputs_only(notebook), REFERENCE)
    nbformat.write(without_live_outputs(notebook), NOTEBOOK)
    print(f"stored the outputs of a {time.perf_counter() - start:.0f} s run in {REFERENCE.relative_to(ROOT)} "
          f"and, without widgets, in {NOTEBOOK.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
