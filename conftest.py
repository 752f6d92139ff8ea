"""pytest's set-up for the whole repository: driver.ipynb's regression check.

`python -m pytest` and `pytest --nbval driver.ipynb` both run driver.ipynb top
to bottom in a fresh kernel (nbval) and compare the outputs of its unmarked
cells (the config line, the data shape, the networks, the run folder's files,
the search's shapes) with a reference.  Two things make that check the same on
every machine and immune to a user's own runs:

* ``OASIS_GAN_REFERENCE_RUN=1`` is set here, before the kernel starts, so the
  notebook's parameters cell takes its small reference settings (a 12-subject
  demo cohort, 64x64, 40 steps of 16) on a GPU machine too, and finishes in
  minutes;
* the outputs compared with are those of ``tests/reference/driver.ipynb``
  (written by ``python tools/store_notebook_outputs.py``), not the ones saved
  in driver.ipynb, which change every time a user runs and saves it.
"""

import os
from pathlib import Path

import pytest

from oasis_gan import notebook_ui

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


# What must run in one process, in order, on one pytest-xdist worker: driver.ipynb's cells (one kernel),
# the test files whose tests share a module-scoped fixture (a trained run, say: built once, not on both
# workers), and the JAX cluster cases (four JAX processes compiling at once on two cores would double
# their time; one after the other, the second finds the first's programs in the shared XLA cache).
FILES_KEPT_TOGETHER = ("tests/test_evaluate.py", "tests/test_measures.py", "tests/test_regularisers.py",
                       "tests/test_stylegan.py")


def work_unit(nodeid: str) -> str:
    """The unit a test is handed out in: tests with the same unit run on one worker, in collection order.

    Decided from the test's id alone, so it holds whatever the plugin versions: pytest-xdist's own
    ``loadgroup`` reads ``xdist_group`` marks through an attribute that pytest 9.2 no longer has, and
    then silently spread a notebook's cells over both workers (every cell after the imports failed).
    """
    path, _, name = nodeid.partition("::")
    if path.endswith(".ipynb") or path in FILES_KEPT_TOGETHER:
        return path
    if path == "tests/test_cluster.py" and name.endswith("[jax]"):
        return "jax-processes"
    return nodeid


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: without the plugin, pytest ignores it
def pytest_xdist_make_scheduler(config, log):
    """Hand tests out one at a time (the two workers finish close together), but by work_unit()."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None  # another --dist asked for on the command line: pytest-xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:  # LoadScopeScheduling's documented override point
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Refuse a test file whose tests share a module-scoped fixture but would be spread over the workers."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        shares_a_module_fixture = fixtures is not None and any(
            definition.scope == "module" for definitions in fixtures.name2fixturedefs.values()
            for definition in definitions)
        if shares_a_module_fixture and work_unit(item.nodeid) == item.nodeid:
            raise pytest.UsageError(f"{item.nodeid.partition('::')[0]} shares a module-scoped fixture between its "
                                    f"tests: add it to FILES_KEPT_TOGETHER in conftest.py")
