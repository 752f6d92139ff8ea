"""driver.ipynb as users drive it: papermill parameters, and every widget backed by a variable.

`python -m pytest` also runs the notebook itself under nbval with its stored
CPU outputs (see pytest.ini); these tests cover what that run does not.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from oasis_gan import config as config_module
from oasis_gan import notebook_ui

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "driver.ipynb"


def parameters_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell is tagged 'parameters' for papermill"
    return tagged[0].source


def parameters_namespace(gpu: bool = False) -> dict:
    namespace = {"os": os, "GPU": gpu, "notebook_ui": notebook_ui}
    exec(parameters_cell(), namespace)
    return namespace


def run_fresh(arguments: list, cwd: Path, environment: dict | None = None, timeout: int = 600) -> str:
    """Run ``python ARGUMENTS`` in a fresh process -> what it printed (stdout, then stderr); a failure shows the
    output's end.

    Notebooks run this way, not through nbclient inside the suite's own process: late in the suite that
    process (gigabytes, dozens of threads) once missed the kernel's last reply and waited out nbclient's
    timeout, ten minutes, before going on.
    """
    result = subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def output_text(outputs: list) -> str:
    """What a cell's outputs show as text: streams and plain-text results."""
    return "".join(output.get("text", "") + output.get("data", {}).get("text/plain", "") for output in outputs)


def test_the_parameters_cell_defines_exactly_the_declared_notebook_settings(monkeypatch):
    namespace = parameters_namespace()
    defined = {name for name in namespace if name.isupper() and name != "GPU"}
    assert defined == set(notebook_ui.notebook_variables())
    assert namespace["IMAGE_SIZE"] == 64 and namespace["STEPS"] and namespace["EPOCHS"] is None  # CPU defaults
    monkeypatch.delenv(notebook_ui.REFERENCE_RUN_VARIABLE)  # a user's session, not pytest's
    gpu = parameters_namespace(gpu=True)
    assert (gpu["IMAGE_SIZE"], gpu["BATCH_SIZE"], gpu["STEPS"], gpu["EPOCHS"]) == (256, 32, None, None)
    # the length is left to oasis_gan/machine.py at make_config, as for train.py: 50 epochs with an accelerator


def test_under_pytest_the_notebook_takes_the_small_reference_settings_on_a_gpu_too(monkeypatch):
    monkeypatch.setenv("OASIS_DATA_DIR", "/somewhere/oasis")
    assert os.environ[notebook_ui.REFERENCE_RUN_VARIABLE] == "1"  # set by the repository's conftest.py
    cpu, gpu = parameters_namespace(gpu=False), parameters_namespace(gpu=True)
    for namespace in (cpu, gpu):
        assert (namespace["IMAGE_SIZE"], namespace["STEPS"], namespace["EPOCHS"], namespace["BATCH_SIZE"],
                namespace["DATA_DIR"], namespace["DEMO_SUBJECTS"]) == (64, 40, None, 16, None, 12)
    monkeypatch.delenv(notebook_ui.REFERENCE_RUN_VARIABLE)  # a user's session: the cohort the check must not replace
    users = parameters_namespace()
    assert (users["DEMO_ROOT"], users["DEMO_SUBJECTS"]) == ("data/demo", 48)
    assert cpu["DEMO_ROOT"] != users["DEMO_ROOT"]  # a cohort of other settings in one root would be rebuilt


def test_the_reference_outputs_match_the_notebook_and_the_notebook_opens_clean():
    reference = notebook_ui.reference_code_cells(NOTEBOOK, ROOT / notebook_ui.REFERENCE_NOTEBOOK)  # raises if they differ
    compared = [cell for cell in reference if "nbval-ignore-output" not in cell.metadata.get("tags", [])]
    assert all(cell.execution_count for cell in reference)  # nbval checks only cells it sees as run
    assert sum(bool(cell.outputs) for cell in compared) >= 5  # config, data, networks, run folder, search
    stored = nbformat.read(NOTEBOOK, as_version=4)
    for cell in stored.cells:
        for output in cell.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {}), cell.source[:60]
            text = output_text([output])
            assert not any(noise in text for noise in ("E0000", "I0000", "absl::InitializeLog", "VBox(")), text[:200]


COLLECTED_CELLS_PLUGIN = """
import json, os
def pytest_collection_finish(session):
    cells = [{"outputs": item.cell.outputs, "execution_count": item.cell.execution_count}
             for item in session.items]
    with open(os.environ["COLLECTED_CELLS"], "w") as handle:
        json.dump(cells, handle)
"""


def test_a_users_own_run_and_save_leave_the_regression_check_comparing_with_the_reference(tmp_path):
    """A notebook saved half-way through a user's own run (autosave) is checked against the reference all the same.

    driver.ipynb as committed holds a user's run: the default settings, not the reference's (the test checks
    that they differ), and the suite's own nbval run of it passes end to end.  Here, in a copy saved half-way,
    `pytest --nbval driver.ipynb` as users type it collects every cell with the reference's outputs and
    execution counts, whatever the file holds: so the check compares the same thing after any run and save.
    """
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "runs", "data", "__pycache__", ".pytest_cache"))
    saved = nbformat.read(copy / "driver.ipynb", as_version=4)
    reference = notebook_ui.reference_code_cells(NOTEBOOK, ROOT / notebook_ui.REFERENCE_NOTEBOOK)
    code = [cell for cell in saved.cells if cell.cell_type == "code"]
    assert any(output_text(cell.outputs) != output_text(expected.outputs) for cell, expected in zip(code, reference)
               if cell.outputs and "nbval-ignore-output" not in cell.metadata.get("tags", [])), \
        "driver.ipynb's stored outputs are the reference run's: this test needs a user's run there"
    for cell in code[len(code) // 2:]:  # autosave caught the run half-way
        cell.outputs, cell.execution_count = [], None
    nbformat.write(saved, copy / "driver.ipynb")

    (tmp_path / "collected_cells_plugin.py").write_text(COLLECTED_CELLS_PLUGIN)
    dump = tmp_path / "collected.json"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLLECTED_CELLS=str(dump),
                       PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    environment.pop(notebook_ui.REFERENCE_RUN_VARIABLE)  # the check sets it itself
    run_fresh(["-m", "pytest", "-p", "no:cacheprovider", "-p", "collected_cells_plugin", "--nbval", "driver.ipynb",
               "--collect-only", "-q", "-n", "0"], copy, environment, 300)
    collected = json.loads(dump.read_text())
    assert len(collected) == len(reference)
    for cell, expected in zip(collected, reference):
        assert cell["execution_count"] == expected.execution_count
        assert [output_text([output]) for output in cell["outputs"]] == [output_text([output]) for output in
                                                                         expected.outputs]


def test_every_notebook_setting_reaches_the_config_field_that_declares_it():
    namespace = parameters_namespace()
    for name, item in config_module.notebook_settings().items():
        if item.name in ("data_dir", "epochs", "splits"):
            continue  # DATA_DIR also decides demo; EPOCHS wins over STEPS; SPLITS is a list (checked below)
        changed = dict(notebook_ui.parameters(namespace))
        changed[name] = {"arch": "stylegan", "image_size": 32, "latent_dim": 7, "batch_size": 5, "steps": 9,
                         "g_learning_rate": 0.01, "d_learning_rate": 0.02, "beta_1": 0.3, "flip": False,
                         "demo_root": "elsewhere", "demo_subjects": 4, "demo_seed": 3, "seed": 11,
                         "precision": "mixed_bfloat16",
                         "devices": 2, "deterministic": True}[item.name]
        assert getattr(notebook_ui.make_config(changed), item.name) == changed[name], name
    assert notebook_ui.make_config(notebook_ui.parameters(namespace)).splits == tuple(namespace["SPLITS"])


def test_papermill_sees_every_notebook_setting_as_a_parameter():
    """`papermill -p NAME VALUE` works for each setting only if the parameters cell assigns it alone on its line
    (``A, B = 1, 2`` is not read as a parameter: papermill then warns "Passed unknown parameter")."""
    inspection = pytest.importorskip("papermill.inspection")
    found = set(inspection.inspect_notebook(str(NOTEBOOK)))
    missing = [name for name in notebook_ui.notebook_variables() if name not in found]
    assert not missing, f"not papermill parameters: {missing}"


def test_settings_form_returns_the_parameters_untouched():
    pytest.importorskip("ipywidgets")
    namespace = parameters_namespace()
    form = notebook_ui.SettingsForm(namespace)
    values = form.values()
    assert values == {name: namespace[name] for name in values}
    assert {"ARCH", "IMAGE_SIZE", "BATCH_SIZE", "RUN_DIR", "RESUME"} <= set(values)
    config = notebook_ui.make_config({**notebook_ui.parameters(namespace), **values})
    assert config.demo and config.image_size == 64 and config.steps == namespace["STEPS"]
    assert "test" not in config.splits  # the notebook keeps the test split unseen


def test_epochs_wins_over_steps():
    values = dict(notebook_ui.parameters(parameters_namespace()), DATA_DIR="somewhere", IMAGE_SIZE=32, EPOCHS=2,
                  STEPS=100, BATCH_SIZE=8, D_LEARNING_RATE=1e-3)
    config = notebook_ui.make_config(values)
    assert config.epochs == 2 and config.steps is None and not config.demo
    assert (config.g_learning_rate, config.d_learning_rate, config.beta_1) == (4e-4, 1e-3, 0.0)  # None: dcgan-ada's own
    assert (config.lr_end, config.lr_decay_start, config.d_dropout) == (0.5, 0.5, 0.0)  # dcgan-ada's, not a widget's


def test_optional_numbers_in_the_form_are_parsed_and_bad_text_is_named():
    pytest.importorskip("ipywidgets")
    namespace = parameters_namespace()
    form = notebook_ui.SettingsForm(namespace)
    form._widgets["ARCH"].value = "stylegan"
    form._widgets["BETA_1"].value = "0"
    values = form.values()
    assert values["BETA_1"] == 0.0 and values["G_LEARNING_RATE"] is None
    config = notebook_ui.make_config({**notebook_ui.parameters(namespace), **values})
    assert config.arch == "stylegan" and config.g_learning_rate == 2e-3 and config.beta_1 == 0.0
    form._widgets["G_LEARNING_RATE"].value = "fast"
    with pytest.raises(ValueError, match="G_LEARNING_RATE"):
        form.values()


def test_papermill_runs_the_notebook_headless_with_parameters(tmp_path):
    pytest.importorskip("papermill")
    # The kernel starts as a user's does: without the suite's TF_CPP_MIN_LOG_LEVEL.
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    run = tmp_path / "run"
    # One epoch of the 64 train and validate slices at batch 32: 2 steps, the first with both lazy penalties and
    # the second with none (each variant of StyleGAN's step is traced once; 8 steps would trace a third)
    parameters = dict(ARCH="stylegan", EPOCHS=1, IMAGE_SIZE=32, BATCH_SIZE=32, DEMO_ROOT=str(tmp_path / "demo"),
                      DEMO_SUBJECTS=3, RUN_DIR=str(run), N_SEARCH=4, TOP_K=2, WALK_STEPS=5)
    printed = run_fresh(["-m", "papermill", str(NOTEBOOK), str(tmp_path / "out.ipynb"), "--cwd", str(ROOT), "-k", "python3",
                         "--no-progress-bar", "--execution-timeout", "300",
                         *(part for name, value in parameters.items() for part in ("-p", name, str(value)))],
                        ROOT, environment)  # nbval runs the default dcgan; this run takes the StyleGAN branches (EMA, mixing)
    assert "unknown parameter" not in printed, printed[-3000:]  # each -p above is a parameter papermill knows
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 1 and config["steps"] is None and config["image_size"] == 32
    assert config["arch"] == "stylegan" and config["g_learning_rate"] == 2e-3
    for name in ("samples.png", "losses.png", "progress.gif", "history.csv"):
        assert (run / name).is_file(), name
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    text = "".join(output.get("text", "") for cell in executed.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []))
    assert "demo cohort (MNI152 template), 3 subjects" in text
    assert "indices (4, 2), scores (4, 2)" in text
    assert "moving average of the generator" in text and "walk: 5 images of 32x32" in text
    stderr = [output.get("text", "") for cell in executed.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("name") == "stderr"]
    assert not any(marker in text for text in stderr for marker in ("E0000", "I0000", "absl::InitializeLog")), \
        stderr  # TensorFlow's log lines are not errors: no red boxes for them
    mixing_outputs = executed.cells[-1].outputs
    assert any("image/png" in output.get("data", {}) for output in mixing_outputs)  # the style-mixing grid


def test_storing_the_outputs_runs_the_notebook_again_when_a_cell_stalls(monkeypatch):
    """A lost cell reply (seen once with ipykernel 6.31) costs one more run, not a tool that waits for good."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
    import store_notebook_outputs as store
    from nbclient.exceptions import CellTimeoutError

    runs = []

    def stalls_once(reference, cell_timeout):
        runs.append((reference, cell_timeout))
        if len(runs) == 1:
            raise CellTimeoutError("A cell timed out while it was being executed, after 5 seconds.")
        return "the notebook"

    monkeypatch.setattr(store, "executed_once", stalls_once)
    assert store.executed(reference=True, cell_timeout=5) == "the notebook"
    assert runs == [(True, 5), (True, 5)]

    def always_stalls(reference, cell_timeout):
        runs.append((reference, cell_timeout))
        raise CellTimeoutError("A cell timed out while it was being executed, after 5 seconds.")

    runs.clear()
    monkeypatch.setattr(store, "executed_once", always_stalls)
    with pytest.raises(CellTimeoutError):
        store.executed(reference=False, cell_timeout=5, tries=2)
    assert runs == [(False, 5), (False, 5)]
