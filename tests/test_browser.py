"""driver.ipynb as it opens in JupyterLab, in headless Chromium: no widget text, no stale bars, no log noise.

Marked ``browser``: `python -m pytest -m browser` runs it alone.  It needs Debian's chromium and
chromium-driver and requirements-browser.txt (selenium, JupyterLab); where one is missing it is skipped,
saying why, except where OASIS_GAN_REQUIRE_BROWSER=1 (CI: .ci/run installs them) makes that a failure.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def browser_tool():
    spec = importlib.util.spec_from_file_location("notebook_in_browser", ROOT / "tools" / "notebook_in_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.browser
def test_the_notebook_opens_clean_in_jupyterlab(tmp_path):
    tool = browser_tool()
    problem = tool.browser_missing()
    if problem and os.environ.get("OASIS_GAN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"OASIS_GAN_REQUIRE_BROWSER=1 but {problem}")
    if problem:
        pytest.skip(f"no browser check here: {problem}")
    from selenium.webdriver.common.by import By

    shutil.copy(ROOT / "driver.ipynb", tmp_path / "driver.ipynb")  # the server never touches the repository's file
    with tool.jupyter_lab(tmp_path) as (base, token), tool.chromium() as driver:
        tool.open_notebook(driver, base, token, cells=len(json.loads((ROOT / "driver.ipynb").read_text())["cells"]))
        text = driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
        images = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
    assert "Brain MRI GAN: the driver notebook" in text
    assert "dcgan_generator_64" in text  # the default, dcgan-ada
    assert len(images) >= 5  # the stored figures render
    for noise in ("VBox(children", "IntSlider(", "HBox(children", "E0000", "I0000", "absl::"):
        assert noise not in text, noise
