"""pytest's set-up for the whole repository: driver.ipynb's regression check.

`python -m pytest` and `pytest --nbval driver.ipynb` both run driver.ipynb top
to bottom in a fresh kernel (nbval) and compare the outputs of its unmarked
cells (the config line, the data shape, the networks, the run folder's files,
the search's shapes) with a reference.  Two things make that check the same on
every machine and immune to a user's own runs:

* ``OASIS_GAN_REFERENCE_RUN=1`` is set here, before the kernel starts, so the
  notebook's parameters cell takes its small reference settings (the demo
  cohort, 64x64, 40 steps of 16) on a GPU machine too, and finishes in
  minutes;
* the outputs compared with are those of ``tests/reference/driver.ipynb``
  (written by ``python tools/store_notebook_outputs.py``), not the ones saved
  in driver.ipynb, which change every time a user runs and saves it.
"""

import os
from pathlib import Path

import pytest

import notebook_ui

ROOT = Path(__file__).resolve().parent
NOTEBOOK = ROOT / "driver.ipynb"

os.environ[notebook_ui.REFERENCE_RUN_VARIABLE] = "1"  # nbval's kernel inherits it

try:
    from nbval.plugin import IPyNbFile
except ImportError:  # nbval missing: pytest.ini's --nbval fails with its own message
    IPyNbFile = None

if IPyNbFile is not None and not getattr(IPyNbFile, "compares_with_reference", False):
    _nbval_collect = IPyNbFile.collect

    def _collect_against_the_reference(self):
        """nbval's cells of driver.ipynb, each given the reference's outputs to be compared with."""
        items = list(_nbval_collect(self))
        if Path(str(self.fspath)).resolve() == NOTEBOOK:
            try:
                reference = notebook_ui.reference_code_cells(NOTEBOOK, ROOT / notebook_ui.REFERENCE_NOTEBOOK)
            except ValueError as error:
                raise pytest.UsageError(str(error)) from None
            for item, cell in zip(items, reference):
                item.cell.outputs = cell.outputs
                item.cell.execution_count = cell.execution_count  # nbval leaves cells it thinks unrun unchecked
        yield from items

    IPyNbFile.collect = _collect_against_the_reference
    IPyNbFile.compares_with_reference = True


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the marks into the test ids
def pytest_collection_modifyitems(items):
    """Keep together on one pytest-xdist worker (``--dist loadgroup``) what must run in one process.

    driver.ipynb's cells run in order in one kernel, and tests that share a
    module-scoped fixture (a trained run, say) would each build it on both
    workers.  Every other test is handed out on its own, so the two workers
    finish close together.
    """
    for item in items:
        path = Path(str(item.fspath))
        fixtures = getattr(item, "_fixtureinfo", None)
        shares_a_module_fixture = fixtures is not None and any(
            definition.scope == "module" for definitions in fixtures.name2fixturedefs.values()
            for definition in definitions)
        if path == NOTEBOOK or shares_a_module_fixture:
            item.add_marker(pytest.mark.xdist_group(path.name))
