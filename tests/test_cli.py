"""train.py and generate.py as a user runs them: end to end, kill and resume, bad flags."""

import json
import signal
import time
from pathlib import Path

import numpy as np
from PIL import Image

import data_utils
from oasis_gan import machine
import script_runner

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--image-size", "32", "--batch-size", "8", "--log-every", "2", "--sample-every", "4",
         "--checkpoint-every", "4", "--sample-grid", "4", "--quiet"]


def run_script(script, *args, cwd, check=True, timeout=300):
    result = script_runner.run(script, *args, cwd=cwd, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def history_steps(run_dir):
    from oasis_gan.plots import read_history_rows

    return [int(row["step"]) for row in read_history_rows(run_dir / "history.csv")]


def test_train_then_generate_end_to_end(tmp_path, demo_dir):
    run = tmp_path / "run"
    trained = run_script("train.py", "--data", demo_dir, "--steps", 8, "--out", run, *QUICK, cwd=tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert config["arch"] == "dcgan-ada" and config["image_size"] == 32 and config["steps"] == 8
    native = machine.precision_for("auto", machine.Machine.detect())  # --precision auto: what is native here
    assert config["precision"] == native and f"precision: {native} (bfloat16 is " in trained.stdout
    assert history_steps(run) == [2, 4, 6, 8]
    assert (run / "samples.png").is_file() and (run / "checkpoints" / "ckpt-00000008").is_dir()

    result = run_script("generate.py", "--run", run, "--n", 5, "--out", tmp_path / "grid.png",
                        "--npy", tmp_path / "s.npy", "--seed", 3, cwd=tmp_path)
    assert "step 8" in result.stdout
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (5, 32, 32, 1) and samples.dtype == np.float32
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.mode == "L" and grid.size == (3 * 34 + 2, 2 * 34 + 2)
        np.testing.assert_array_equal(np.asarray(grid), data_utils.image_grid(samples))  # the same images
    result = run_script("generate.py", "--run", run, "--n", 4, "--out", tmp_path / "t.png", "--truncation", 0.5,
                        cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--truncation" in result.stderr and "dcgan" in result.stderr
    assert not (tmp_path / "t.png").exists()


def test_sigkill_then_resume_continues_the_step_count(tmp_path, demo_dir):
    run = tmp_path / "run"
    args = ["--data", demo_dir, "--arch", "dcgan", "--steps", 400, "--out", run, *QUICK]
    process = script_runner.start("train.py", *args, cwd=tmp_path)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and not list((run / "checkpoints").glob("ckpt-*")):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*"))
    assert saved, "no checkpoint was written before the kill"
    killed_at = max(history_steps(run))

    run_script("train.py", "--out", run, "--resume", "--steps", killed_at + 8, "--quiet", cwd=tmp_path)
    steps = history_steps(run)
    assert steps == sorted(set(steps))  # no step logged twice
    assert steps[-1] == killed_at + 8
    assert steps == list(range(2, killed_at + 9, 2))
    state = json.loads((run / "checkpoints" / f"ckpt-{killed_at + 8:08d}" / "state.json").read_text())
    assert state["step"] == killed_at + 8


def test_bad_flags_name_the_flag(tmp_path):
    result = run_script("train.py", "--demo", "--batch-size", "0", "--out", tmp_path / "r", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--batch-size: must be a positive integer" in result.stderr
    result = run_script("train.py", "--demo", "--image-size", "100", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--image-size" in result.stderr
    result = run_script("train.py", "--data", tmp_path / "missing", "--steps", 2, cwd=tmp_path, check=False)
    assert result.returncode == 2 and str(tmp_path / "missing") in result.stderr
    result = run_script("train.py", "--steps", "5", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--demo or --data" in result.stderr
    result = run_script("train.py", "--resume", "--out", tmp_path / "none", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "is not a run folder" in result.stderr
    result = run_script("generate.py", "--run", tmp_path, "--n", 4, "--out", tmp_path / "g.png", cwd=tmp_path,
                        check=False)
    assert result.returncode == 2 and "--run" in result.stderr and "config.json" in result.stderr
    result = run_script("generate.py", "--run", tmp_path, "--n", 0, "--out", tmp_path / "g.png", cwd=tmp_path,
                        check=False)
    assert result.returncode == 2 and "--n: must be a positive integer" in result.stderr
    assert not list(tmp_path.glob("*.png"))  # nothing half-written


def test_resume_with_another_arch_or_onto_an_existing_run_is_refused(tmp_path, demo_dir):
    run = tmp_path / "run"
    run_script("train.py", "--data", demo_dir, "--arch", "dcgan", "--steps", 4, "--out", run, *QUICK, cwd=tmp_path)
    before = (run / "history.csv").read_text()
    result = run_script("train.py", "--out", run, "--resume", "--arch", "dcgan-classic", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--arch" in result.stderr and "'dcgan'" in result.stderr, result.stderr
    result = run_script("train.py", "--data", demo_dir, "--steps", 4, "--out", run, *QUICK, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "already holds a run" in result.stderr
    result = run_script("train.py", "--out", run, "--resume", "--arch", "stylegan", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--arch" in result.stderr and "stylegan" in result.stderr
    assert (run / "history.csv").read_text() == before


def start_training(tmp_path, run, *args, ignore_sigint=False):
    """train.py as a background process; ``ignore_sigint`` starts it as a script's ``cmd &`` would."""
    return script_runner.start("train.py", *args, "--out", run, cwd=tmp_path, ignore_sigint=ignore_sigint)


def wait_for_checkpoint(run, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and not list((run / "checkpoints").glob("ckpt-*")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)


def latest_state(run):
    latest = max((run / "checkpoints").glob("ckpt-*"))
    with np.load(latest / "training_state.npz") as stored:
        iterations = int(stored["g_optimizer/0000"]), int(stored["d_optimizer/0000"])
    return json.loads((latest / "state.json").read_text()), iterations


def test_sigint_to_a_background_run_stops_between_steps_and_resumes_exactly(tmp_path, demo_dir):
    run = tmp_path / "run"
    # --deterministic: the comparison below is exact only with it (a loaded machine can reorder a reduction)
    process = start_training(tmp_path, run, "--data", demo_dir, "--arch", "dcgan", "--steps", 2000, *QUICK,
                             "--deterministic", ignore_sigint=True)
    wait_for_checkpoint(run, process)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "SIGINT: stopping after this step" in stderr and "Continue with" in stderr
    state, iterations = latest_state(run)
    stopped = state["step"]
    assert 0 < stopped < 2000 and iterations == (stopped, stopped)  # no step applied without being counted
    assert (run / "samples.png").is_file() and (run / "losses.png").is_file()

    # The interrupted run, resumed, computes what an uninterrupted run of the same length computes.
    run_script("train.py", "--out", run, "--resume", "--steps", stopped + 4, "--quiet", cwd=tmp_path)
    run_script("train.py", "--data", demo_dir, "--arch", "dcgan", "--steps", stopped + 4,
               "--out", tmp_path / "straight", *QUICK, "--deterministic", cwd=tmp_path)
    for name in ("run", "straight"):
        run_script("generate.py", "--run", tmp_path / name, "--n", 4, "--out", tmp_path / f"{name}.png",
                   "--npy", tmp_path / f"{name}.npy", cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "run.npy"), np.load(tmp_path / "straight.npy"), atol=1e-4)


def test_sigterm_stops_with_a_checkpoint_and_exit_code_143(tmp_path, demo_dir):
    run = tmp_path / "my run"  # a space: the hint to continue quotes it
    process = start_training(tmp_path, run, "--data", demo_dir, "--arch", "dcgan", "--steps", 2000, *QUICK)
    wait_for_checkpoint(run, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert f"python train.py --out '{run}' --resume" in stderr
    state, iterations = latest_state(run)
    assert iterations == (state["step"], state["step"])
