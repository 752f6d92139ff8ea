"""Run driver.ipynb top to bottom with its defaults and store the outputs in it.

    python tools/store_notebook_outputs.py

`python -m pytest` checks the notebook against these stored outputs (nbval),
so rerun this after changing the notebook or what its compared cells print,
on a CPU-only machine (the stored outputs are those of the small CPU
settings).  It runs in a fresh kernel from the repository root, as nbval
does, and refuses to store a run that raised an error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "driver.ipynb"


def main() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, leaving driver.ipynb untouched, if a cell fails
    for cell in notebook.cells:  # the widget state is per session, not worth storing
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, NOTEBOOK)
    print(f"stored the outputs of a {time.perf_counter() - start:.0f} s run in {NOTEBOOK.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
