"""Open driver.ipynb in JupyterLab in headless Chromium, as a user would, and take screenshots.

    python tools/notebook_in_browser.py --out Resources/browser            # as it opens
    python tools/notebook_in_browser.py --run --out /tmp/screens           # Run All Cells, then each cell
    python tools/notebook_in_browser.py --run --root COPY --resources       # docs/notebook.md's four figures

Needs Debian's `chromium` and `chromium-driver`, and `pip install selenium
jupyterlab` (not in requirements.txt: only this tool and its test use them).
It starts a private JupyterLab server on a free port of 127.0.0.1, opens the
notebook, optionally runs every cell from the Run menu and waits for the
kernel, then writes one PNG per code cell (``cell-NN.png``) and the page
text (``page.txt``) under --out.  tests/test_browser.py uses ``open_notebook``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def browser_missing() -> str | None:
    """Why a browser check cannot run here (None: it can)."""
    for program in ("chromium", "chromedriver", "jupyter-lab"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install chromium chromium-driver; pip install jupyterlab)"
    try:
        import selenium  # noqa: F401  (only whether it imports)
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path):
    """A private JupyterLab server on 127.0.0.1 -> its base URL with the token.

    Its own settings folder turns off JupyterLab's windowing (cells far below the view are otherwise
    rendered only when scrolled to), so the page holds every cell, as a reader who scrolls sees them,
    and its news prompt.
    """
    import tempfile

    port, token = free_port(), secrets.token_hex(16)
    settings = Path(tempfile.mkdtemp(prefix="jupyterlab-settings-"))
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    # and JupyterLab's "Would you like to get notified about official Jupyter news?" toast, which covers a
    # corner of the last cells on a fresh settings folder
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false"}))
    server = subprocess.Popen(
        ["jupyter-lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--ServerApp.open_browser=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings)))
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start (exit code {server.poll()})") from None
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(settings, ignore_errors=True)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_notebook(driver, base: str, token: str, name: str = "driver.ipynb", timeout: float = 90,
                  cells: int | None = None):
    """Open the notebook in JupyterLab and wait until its cells are shown (all ``cells`` of them, if given)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/lab/tree/{name}?token={token}")
    WebDriverWait(driver, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
    if cells is not None:  # on a busy machine the page fills in over seconds: wait for every cell
        WebDriverWait(driver, timeout).until(
            lambda page: len(page.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) >= cells)
    time.sleep(3)  # let the outputs render


def run_all_cells(driver, timeout: float = 1200) -> None:
    """Run > Run All Cells, then wait until no cell is queued or running."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, "//li[contains(@class, 'lm-MenuBar-item')]//div[text()='Run']").click()
    time.sleep(0.5)
    driver.find_element(By.XPATH, "//li[contains(@class, 'lm-Menu-item')]//div[text()='Run All Cells']").click()
    time.sleep(5)
    deadline = time.time() + timeout
    while time.time() < deadline:
        prompts = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".jp-InputPrompt")]
        if prompts and not any("*" in prompt for prompt in prompts):
            return
        time.sleep(2)
    raise TimeoutError("the notebook did not finish running in time")


def cell_screenshots(driver, out: Path) -> list[Path]:
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    written = []
    cells = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell")
    for index, cell in enumerate(cells):
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", cell)
        time.sleep(0.4)
        path = out / f"cell-{index:02d}.png"
        cell.screenshot(str(path))
        written.append(path)
    (out / "page.txt").write_text(driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text)
    return written


# The cells docs/notebook.md shows: (what it shows, text of the first code cell that shows it; "" the first).
RESOURCE_CELLS = (("setup", ""), ("settings", "SettingsForm("), ("training", "LiveView("), ("ssim", "matches_figure("))


def code_cell_index(notebook: Path, text: str) -> int:
    """The position among the notebook's code cells (as the screenshots count them) of the first holding ``text``."""
    sources = ["".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"]
               if cell["cell_type"] == "code"]
    for index, source in enumerate(sources):
        if text in source:
            return index
    raise SystemExit(f"--resources: no code cell of {notebook} holds {text!r}")


def copy_to_resources(root: Path, written: list[Path]) -> list[Path]:
    """docs/notebook.md's figures from the run just made: Resources/browser-<what>_<arch>-<size>px-<N>steps-<device>.png."""
    runs = sorted((root / "runs").glob("notebook-*/config.json"), key=lambda path: path.stat().st_mtime)
    if not runs:
        raise SystemExit(f"--resources: no runs/notebook-*/config.json under {root}: run the notebook (--run)")
    config = json.loads(runs[-1].read_text())
    history = (runs[-1].parent / "history.csv").read_text().splitlines()
    steps = int(history[-1].split(",")[0]) if len(history) > 1 else 0
    device = json.loads((runs[-1].parent / "environment.json").read_text()).get("device_tag", "unknown")
    tag = f"{config['arch']}-{config['image_size']}px-{steps}steps-{device}"
    copied = []
    for what, text in RESOURCE_CELLS:
        target = ROOT / "Resources" / f"browser-{what}_{tag}.png"
        shutil.copyfile(written[code_cell_index(root / "driver.ipynb", text)], target)
        copied.append(target)
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/notebook-screens", help="folder for the PNGs and page.txt")
    parser.add_argument("--run", action="store_true", help="run every cell first (Run > Run All Cells)")
    parser.add_argument("--root", default=str(ROOT), help="folder the server serves (a copy keeps driver.ipynb as is)")
    parser.add_argument("--resources", action="store_true",
                        help="also copy the setup, settings, training and SSIM cells to Resources/browser-*.png, "
                             "named from the newest runs/notebook-* under --root")
    args = parser.parse_args()
    problem = browser_missing()
    if problem:
        parser.error(problem)
    with jupyter_lab(Path(args.root)) as (base, token), chromium() as driver:
        open_notebook(driver, base, token)
        if args.run:
            run_all_cells(driver)
        written = cell_screenshots(driver, Path(args.out))
    print(f"{len(written)} cell screenshots and page.txt in {args.out}")
    if args.resources:
        for path in copy_to_resources(Path(args.root), written):
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
