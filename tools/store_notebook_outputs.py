"""Run driver.ipynb top to bottom and store its outputs: the check's, and the readers'.

    python tools/store_notebook_outputs.py            # two runs: about 10 minutes on 2 CPU cores
    python tools/store_notebook_outputs.py --quick    # one run (the check's) for both files: about 2 minutes
    python tools/store_notebook_outputs.py --reference-only   # the check's run; driver.ipynb's outputs kept

It writes two files:

* ``tests/reference/driver.ipynb``: the outputs of the cells that are
  compared (those not tagged nbval-ignore-output), from a run with the small
  reference settings whatever the machine (``OASIS_GAN_REFERENCE_RUN=1``, as
  under pytest).  ``python -m pytest`` compares driver.ipynb's run with these
  (conftest.py), so rerun this after changing the notebook or what its
  compared cells print.
* ``driver.ipynb``: for readers, the outputs of a run with the notebook's own
  settings on this machine (on 2 CPU cores: the main job at 64x64, 1600
  steps, or 2000 in bfloat16), so that the stored sample grid, losses and
  SSIM search show what a user's run gives; ``--quick`` stores the reference run's instead.  Widgets
  and progress bars are left out: they only work in a live session.

Each run starts a fresh kernel in the repository root; nothing is stored if a
cell raises an error.  A cell that gives no reply within ``--cell-timeout``
seconds (default 1200: the main job's training cell takes about 8 minutes on 2
cores) ends that run, and the run starts again once from a fresh kernel: with
ipykernel 6.31 a finished cell's reply was once lost and the client waited on
it for good (requirements.txt).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from oasis_gan import notebook_ui  # noqa: E402  (the repository's modules, from its root)

NOTEBOOK = ROOT / "driver.ipynb"
REFERENCE = ROOT / notebook_ui.REFERENCE_NOTEBOOK
CELL_TIMEOUT_S = 1200  # the main job's training cell takes about 8 minutes on 2 cores
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


def executed(reference: bool, cell_timeout: int = CELL_TIMEOUT_S, tries: int = 2):
    """driver.ipynb run top to bottom in a fresh kernel, with the reference settings or the notebook's own.

    A stalled cell (no reply in ``cell_timeout`` seconds) starts the run again
    from a fresh kernel, up to ``tries`` runs in all.
    """
    for attempt in range(1, tries + 1):
        try:
            return executed_once(reference, cell_timeout)
        except CellTimeoutError as error:
            if attempt == tries:
                raise
            print(f"a cell gave no reply in {cell_timeout} s ({str(error).splitlines()[0]}); "
                  "running the notebook again from a fresh kernel", flush=True)


def executed_once(reference: bool, cell_timeout: int):
    """One run of driver.ipynb in a fresh kernel (executed's single try)."""
    if reference:
        os.environ[notebook_ui.REFERENCE_RUN_VARIABLE] = "1"
    else:
        os.environ.pop(notebook_ui.REFERENCE_RUN_VARIABLE, None)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, leaving both files untouched, if a cell fails
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)  # widget state is per session
    print(f"{'reference' if reference else 'default'} settings: {time.perf_counter() - start:.0f} s", flush=True)
    return notebook


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="store the reference run's outputs in driver.ipynb too")
    parser.add_argument("--reference-only", action="store_true",
                        help="store only the check's reference; driver.ipynb keeps the outputs it has")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S,
                        help=f"seconds a cell may run before the run is started again once (default {CELL_TIMEOUT_S})")
    args = parser.parse_args(argv)
    if args.cell_timeout <= 0:
        parser.error(f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout}")
    reference = executed(reference=True, cell_timeout=args.cell_timeout)
    if args.reference_only:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(compared_outputs_only(reference), REFERENCE)
        print(f"stored the reference run's compared outputs in {REFERENCE.relative_to(ROOT)}")
        return
    readers = reference if args.quick else executed(reference=False, cell_timeout=args.cell_timeout)
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(compared_outputs_only(reference), REFERENCE)
    nbformat.write(without_live_outputs(readers), NOTEBOOK)
    print(f"stored the reference run's compared outputs in {REFERENCE.relative_to(ROOT)} and the "
          f"{'reference' if args.quick else 'default-settings'} run's, without widgets, in "
          f"{NOTEBOOK.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
