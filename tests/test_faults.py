"""Faults during training never strand a run: a full disk, corrupt checkpoints, kills before the first
checkpoint, divergence, two writers, unwritable outputs.  (Signals: tests/test_cli.py.)"""

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from oasis_gan import training
from oasis_gan.config import ConfigError, TrainConfig
from oasis_gan.runs import checkpoints, run_folder
import finished_runs
import script_runner

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--image-size", "32", "--batch-size", "8", "--log-every", "2", "--sample-every", "4", "--sample-grid", "4",
         "--quiet"]


def small_config(**changes) -> TrainConfig:
    """A tiny run of seed 000's dcgan: its checkpoints are a fifth of dcgan-plus's, and faults do not depend on
    the architecture (tests/test_training.py covers each one's checkpoint parts)."""
    values = dict(data_dir="unused", arch="dcgan", image_size=32, batch_size=8, steps=8, log_every=2,
                  sample_every=4, checkpoint_every=4, sample_grid=4, seed=3, ssim_every=0)
    values.update(changes)
    return TrainConfig(**values)


def finished_run(tmp_path, tiny_images, name="run", **changes):
    """tmp_path/name: the tiny run (``small_config(**changes)``) trained to its end, to be damaged or resumed: a
    copy of this process's first such run (tests/finished_runs.py)."""
    return finished_runs.copy_of_finished(small_config(**changes), tiny_images, tmp_path / name)


def run_script(script, *args, cwd, env=None, timeout=300):
    return script_runner.run(script, *args, cwd=cwd, env=env, timeout=timeout)


def history_steps(run):
    return [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]


# ----------------------------------------------------------------- full disk


def test_a_full_disk_during_a_save_removes_the_partial_checkpoint_and_keeps_the_last_good_one(
        tmp_path, tiny_images, monkeypatch):
    run = tmp_path / "run"
    trainer = training.Trainer.new(small_config(steps=12), run, images=tiny_images, progress=False)
    real_savez = np.savez

    def savez_until_full(path, **arrays):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    trainer.start()
    for _ in range(4):
        trainer.train_one_step()  # ckpt-00000004 is written normally
    history_before = (run / "history.csv").read_text()
    monkeypatch.setattr(checkpoints.np, "savez", savez_until_full)
    with pytest.raises(checkpoints.CheckpointWriteError) as error:
        trainer.fit(progress=False)
    message = str(error.value)
    assert "ckpt-00000008" in message and "the disk is full" in message and "MiB" in message
    assert "ckpt-00000004" in message and "history.csv are untouched" in message
    assert [path.name for path in (run / "checkpoints").iterdir()] == ["ckpt-00000004"]  # no partial folder
    assert (run / "history.csv").read_text().startswith(history_before)
    assert not (run / "lock").exists()

    monkeypatch.setattr(checkpoints.np, "savez", real_savez)  # space freed: resume goes on
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False)
    assert resumed.step == 4
    assert resumed.fit(progress=False) == "done" and resumed.step == 12


def test_resume_on_a_full_disk_rewrites_nothing_it_does_not_have_to(tmp_path, tiny_images, monkeypatch):
    run = finished_run(tmp_path, tiny_images)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "history.csv.tmp"))

    monkeypatch.setattr(run_folder.csv, "DictWriter", no_space)  # any rewrite of history.csv would fail
    assert training.Trainer.resume(run, images=tiny_images, progress=False).step == 8
    shutil.rmtree(run / "checkpoints" / "ckpt-00000008")  # now rows after step 4 must go, and cannot
    with pytest.raises(run_folder.WriteError, match="the disk is full"):
        training.Trainer.resume(run, images=tiny_images, progress=False)
    assert not (run / "history.csv.tmp").exists()


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 60 MB tmpfs (needs root and a kernel that lets us mount); skipped where it cannot be had."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'}); "
                    "test_a_full_disk_during_a_save_... covers the same path with a patched writer")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_real_full_disk_stops_cleanly_and_resume_works_once_space_is_freed(tmp_path, tiny_tmpfs, demo_dir):
    run = tiny_tmpfs / "run"
    # dcgan: one of its checkpoints fits the 60 MB disk, the next does not
    result = run_script("train.py", "--data", demo_dir, "--arch", "dcgan", "--steps", 40, "--checkpoint-every", 10,
                        "--out", run, *QUICK, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "warning:" in result.stderr and "each checkpoint needs about" in result.stderr  # said up front
    assert "could not write checkpoint" in result.stderr and "the disk is full" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["ckpt-00000010"]
    assert not list(run.glob("*.tmp")) and not (run / "lock").exists()

    result = run_script("train.py", "--out", run, "--resume", "--quiet", cwd=tmp_path)  # still full
    assert result.returncode == 1 and "Traceback" not in result.stderr and not list(run.glob("*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=400m", str(tiny_tmpfs)], check=True)
    result = run_script("train.py", "--out", run, "--resume", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ckpt-00000040" in {path.name for path in (run / "checkpoints").iterdir()}


# ------------------------------------------------- stranded and corrupt runs


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_zero(tmp_path, tiny_images, capsys):
    run = tmp_path / "run"
    trainer = training.Trainer.new(small_config(checkpoint_every=100), run, images=tiny_images, progress=False)
    trainer.start()
    for _ in range(4):
        trainer.train_one_step()  # then killed: a config, history rows, no checkpoint
    assert not trainer.run.checkpoints() and (run / "config.json").is_file()
    with pytest.raises(FileExistsError, match="already holds a run; resume it"):
        training.Trainer.new(small_config(), run, images=tiny_images, progress=False)
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False)
    assert resumed.step == 0 and "starting again from step 0 with its own config" in capsys.readouterr().err
    assert resumed.config.checkpoint_every == 100 and history_steps(run) == []
    assert resumed.fit(progress=False) == "done" and resumed.step == 8


def test_divergence_writes_the_final_figures_and_a_run_without_checkpoints_can_still_resume(tmp_path, tiny_images):
    run = tmp_path / "run"
    poisoned = tiny_images.copy()
    poisoned[:] = np.nan
    trainer = training.Trainer.new(small_config(checkpoint_every=100), run, images=poisoned, progress=False)
    with pytest.raises(training.TrainingDiverged, match="none yet.*starts it again from step 0"):
        trainer.fit(progress=False)
    assert (run / "samples.png").is_file() and (run / "losses.png").is_file() and not (run / "lock").exists()
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False)
    assert resumed.step == 0 and resumed.fit(progress=False) == "done"


@pytest.mark.parametrize("victim", ["training_state.npz", "generator.weights.h5", "state.json"])
def test_a_corrupt_newest_checkpoint_is_named_skipped_and_the_newest_good_one_used(
        tmp_path, tiny_images, capsys, victim):
    run = finished_run(tmp_path, tiny_images)
    os.truncate(run / "checkpoints" / "ckpt-00000008" / victim, 100)
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False)
    assert resumed.step == 4
    err = capsys.readouterr().err
    assert f"skipping checkpoint ckpt-00000008: {run / 'checkpoints' / 'ckpt-00000008' / victim}" in err
    assert "truncated" in err


@pytest.mark.parametrize("victim", ["generator.weights.h5", "training_state.npz"])
def test_bytes_changed_in_place_without_changing_the_size_are_caught_by_the_checksum(
        tmp_path, tiny_images, capsys, victim):
    """Silent damage (a bad sector, a stray write): the size is right, the contents are not."""
    run = finished_run(tmp_path, tiny_images)
    damaged = run / "checkpoints" / "ckpt-00000008" / victim
    size = damaged.stat().st_size
    with open(damaged, "r+b") as handle:
        handle.seek(size // 2)
        original = handle.read(64)
        handle.seek(size // 2)
        handle.write(bytes(255 - byte for byte in original))
    assert damaged.stat().st_size == size
    with pytest.raises(checkpoints.CorruptCheckpoint, match="does not match its checksum"):
        checkpoints.verify_checkpoint(damaged.parent)
    assert training.Trainer.resume(run, images=tiny_images, progress=False).step == 4  # the older, good one
    assert f"skipping checkpoint ckpt-00000008: {damaged} does not match its checksum" in capsys.readouterr().err


def test_a_named_checkpoint_is_used_and_a_corrupt_one_is_refused_naming_the_file(tmp_path, tiny_images):
    run = finished_run(tmp_path, tiny_images)
    assert training.Trainer.resume(run, images=tiny_images, progress=False, checkpoint="ckpt-00000004").step == 4
    os.truncate(run / "checkpoints" / "ckpt-00000004" / "generator.weights.h5", 100)
    with pytest.raises(checkpoints.CorruptCheckpoint, match="ckpt-00000004/generator.weights.h5 has 100 bytes"):
        training.Trainer.resume(run, images=tiny_images, progress=False, checkpoint="ckpt-00000004")
    with pytest.raises(FileNotFoundError, match="ckpt-00000005 is not a complete checkpoint.*ckpt-00000004"):
        training.Trainer.resume(run, images=tiny_images, progress=False, checkpoint="ckpt-00000005")


def test_checkpoints_without_a_manifest_still_load_and_damage_is_named(tmp_path, tiny_images):
    """Checkpoints written before manifests existed: no verification, but a damaged file is still named."""
    run = finished_run(tmp_path, tiny_images)
    for folder in (run / "checkpoints").iterdir():
        (folder / checkpoints.MANIFEST_FILE).unlink()
    assert training.Trainer.resume(run, images=tiny_images, progress=False).step == 8
    os.truncate(run / "checkpoints" / "ckpt-00000008" / "training_state.npz", 100)
    os.truncate(run / "checkpoints" / "ckpt-00000004" / "discriminator.weights.h5", 100)
    with pytest.raises(checkpoints.CorruptCheckpoint) as error:
        training.Trainer.resume(run, images=tiny_images, progress=False)
    assert "training_state.npz cannot be read" in str(error.value)
    assert "discriminator.weights.h5 cannot be read: truncated" in str(error.value)
    assert "different architecture" not in str(error.value)


def test_generate_and_evaluate_skip_a_corrupt_checkpoint_and_take_one_by_name(tmp_path, demo_dir):
    run = tmp_path / "run"
    result = run_script("train.py", "--data", demo_dir, "--arch", "dcgan", "--steps", 8, "--checkpoint-every", 4,
                        "--out", run, *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    os.truncate(run / "checkpoints" / "ckpt-00000008" / "generator.weights.h5", 100)
    result = run_script("generate.py", "--run", run, "--n", 2, "--out", tmp_path / "g.png", cwd=tmp_path)
    assert result.returncode == 0 and "step 4" in result.stdout and "skipping checkpoint ckpt-00000008" in result.stderr
    result = run_script("generate.py", "--run", run, "--n", 2, "--out", tmp_path / "h.png", "--checkpoint",
                        "ckpt-00000008", cwd=tmp_path)
    assert result.returncode == 2 and "generator.weights.h5 has 100 bytes" in result.stderr
    result = run_script("evaluate.py", "--run", run, "--n", 2, "--classifier-updates", 0, "--out", tmp_path / "e.json",
                        "--quiet", cwd=tmp_path)
    assert result.returncode == 0 and json.loads((tmp_path / "e.json").read_text())["step"] == 4


# ------------------------------------------------------------ one writer


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, demo_dir):
    run = tmp_path / "run"
    first = script_runner.start("train.py", "--data", demo_dir, "--steps", 5000, "--arch", "dcgan",
                                "--checkpoint-every", 4, "--out", run, *QUICK, cwd=tmp_path)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list((run / "checkpoints").glob("ckpt-*")):
            time.sleep(0.2)
        second = run_script("train.py", "--out", run, "--resume", "--quiet", cwd=tmp_path)
        assert second.returncode == 1 and f"being trained by process {first.pid}" in second.stderr
        assert first.poll() is None  # the first writer goes on
    finally:
        first.kill()
        first.wait()
    holder = json.loads((run / "lock").read_text())
    assert holder["pid"] == first.pid  # left behind by the kill
    result = run_script("train.py", "--out", run, "--resume", "--steps", 1, "--quiet", cwd=tmp_path)
    assert "no longer running; taking the run folder over" in result.stderr
    assert not (run / "lock").exists()


# ------------------------------------------------------- checked up front


@pytest.mark.parametrize("script, args, message", [
    ("train.py", ["--demo", "--out", "{file}"], "--out: {file} is a file"),
    ("train.py", ["--demo", "--out", "/proc/run"], "--out: cannot write in /proc"),
    ("generate.py", ["--run", "{tmp}", "--out", "/proc/g.png"], "--out: cannot write in /proc"),
    ("generate.py", ["--run", "{tmp}", "--out", "{tmp}/x.png", "--npy", "{file}/s.npy"], "--npy: {file} is a file"),
    ("evaluate.py", ["--run", "{tmp}", "--out", "/proc/report.json"], "--out: cannot write in /proc"),
    ("train.py", ["--out", "runs/x"], "--demo or --data"),
    ("train.py", ["--resume"], "--resume needs --out RUN"),
    ("train.py", ["--demo", "--checkpoint", "ckpt-00000004"], "--checkpoint: picks the checkpoint"),
    ("train.py", ["--data", "{file}"], "is a file; pass the folder"),
])
def test_unwritable_outputs_and_bad_combinations_are_named_before_any_work(tmp_path, script, args, message):
    file = tmp_path / "a file.txt"
    file.write_text("not a folder")
    fill = {"file": str(file), "tmp": str(tmp_path)}
    result = run_script(script, *[arg.format(**fill) for arg in args], cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and message.format(**fill) in result.stderr, result.stderr[-1500:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unsupported_backend_is_named(tmp_path):
    for script, args in (("train.py", ["--demo"]), ("generate.py", ["--run", tmp_path, "--out", tmp_path / "g.png"])):
        result = run_script(script, *args, cwd=tmp_path, env={"KERAS_BACKEND": "torch"}, timeout=60)
        assert result.returncode == 2 and "KERAS_BACKEND='torch' is not supported" in result.stderr


def test_a_folder_without_the_default_splits_suggests_the_ones_it_has(tmp_path, make_split):
    make_split(tmp_path / "data", "train", {f"case_001_slice_{i}.nii.png": np.zeros((8, 8), np.uint8)
                                            for i in range(2)})
    result = run_script("train.py", "--data", tmp_path / "data", "--steps", 1, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "train on those with --splits train" in result.stderr


def test_resume_with_a_shorter_length_is_refused_and_changes_nothing(tmp_path, tiny_images):
    run = finished_run(tmp_path, tiny_images)
    before = (run / "config.json").read_text()
    with pytest.raises(ConfigError, match="^steps: .*already at step 8, past the 4 steps"):
        training.Trainer.resume(run, images=tiny_images, progress=False, steps=4)
    assert (run / "config.json").read_text() == before and not (run / "lock").exists()


def test_losses_that_explode_but_stay_finite_stop_the_run_as_divergence(tmp_path, tiny_images):
    # D takes steps of about 0.99 per weight (Adam with both betas 0) while G hardly moves: D wins outright, and
    # its logits, so G's loss, pass 10000 whatever the batches (seeds 3 to 6: by steps 6 to 126).  With both
    # rates at 0.99 it was a matter of the trajectory: the flips' axis alone decided whether the losses passed.
    config = small_config(steps=200, checkpoint_every=100, g_learning_rate=1e-6, d_learning_rate=0.99, beta_1=0.0,
                          beta_2=0.0)
    trainer = training.Trainer.new(config, tmp_path / "run", images=tiny_images, progress=False)
    with pytest.raises(training.TrainingDiverged, match="losses passed 10000"):
        trainer.fit(progress=False)
    assert trainer.step < 200 and (tmp_path / "run" / "losses.png").is_file()
