"""Faults, second round: a run branched from an older checkpoint, killed cohort builders, damaged data caches,
damaged history, stale and copied locks, a lost config.json, and the messages for confusing input.

Each case failed (lost data, hung, or gave a traceback) before the fix it guards.  The TensorFlow worker
whose peers never start is in tests/test_cluster.py.
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import data_utils
from oasis_gan import training
from oasis_gan.runs import checkpoints, run_folder
from test_faults import ROOT, finished_run, history_steps, run_script, small_config


def checkpoint_steps(run):
    return [step for step, _ in checkpoints.list_checkpoints(run)]


# ------------------------------------------------------------ a branch from an older checkpoint


def test_resuming_from_an_older_checkpoint_makes_that_branch_the_run_s_future(tmp_path, tiny_images, capsys):
    run = finished_run(tmp_path, tiny_images, steps=12, keep_checkpoints=3)  # checkpoints 4, 8, 12
    assert checkpoint_steps(run) == [4, 8, 12]
    branch = training.Trainer.resume(run, images=tiny_images, progress=False, checkpoint="ckpt-00000004", steps=10)
    warning = capsys.readouterr().err
    assert branch.step == 4 and "ckpt-00000008, ckpt-00000012" in warning and "set-aside" in warning
    branch.fit(progress=False)
    assert checkpoint_steps(run) == [4, 8, 10]  # the branch's own 8 and 10, not the abandoned 8 and 12
    set_aside = next((run / run_folder.SET_ASIDE_DIR).iterdir())
    assert sorted(path.name for path in set_aside.iterdir()) == ["ckpt-00000008", "ckpt-00000012", "history.csv"]

    again = training.Trainer.resume(run, images=tiny_images, progress=False, steps=14)
    assert again.step == 10  # the branch goes on, not the abandoned line at 12
    again.fit(progress=False)
    assert history_steps(run) == [2, 4, 6, 8, 10, 12, 14]


def test_a_corrupt_newest_checkpoint_skipped_on_resume_cannot_outrank_the_new_ones(tmp_path, tiny_images):
    run = finished_run(tmp_path, tiny_images)  # checkpoints 4 and 8
    (run / "checkpoints" / "ckpt-00000008" / "training_state.npz").write_bytes(b"")
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False, steps=12)
    assert resumed.step == 4
    resumed.fit(progress=False)
    assert checkpoint_steps(run) == [4, 8, 12]
    checkpoints.verify_checkpoint(run / "checkpoints" / "ckpt-00000008")  # the branch's own, whole


def test_another_run_s_checkpoint_is_refused_and_nothing_changes(tmp_path, tiny_images):
    first, second = finished_run(tmp_path, tiny_images, "first"), finished_run(tmp_path, tiny_images, "second")
    before = (second / "history.csv").read_text()
    with pytest.raises(ValueError, match="not one of .*second's own"):
        training.Trainer.resume(second, images=tiny_images, progress=False,
                                checkpoint=first / "checkpoints" / "ckpt-00000004")
    assert (second / "history.csv").read_text() == before and not (second / "lock").exists()


# ------------------------------------------------------------ history.csv


@pytest.mark.parametrize("damage, warned, steps", [
    ("header", "header line is missing", [2, 4, 6, 8]),
    ("cut", "was cut while it was written", [2, 4, 6]),
])
def test_a_damaged_history_keeps_every_readable_row_and_says_so(tmp_path, tiny_images, capsys, damage, warned,
                                                                steps):
    run = finished_run(tmp_path, tiny_images, checkpoint_every=6)  # checkpoints 6 and 8, rows 2 4 6 8
    text = (run / "history.csv").read_text()
    damaged = text.split("\n", 1)[1] if damage == "header" else text[: text.rindex(",", 0, len(text) - 3) + 3]
    (run / "history.csv").write_text(damaged)
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False)
    err = capsys.readouterr().err
    assert warned in err and str(run / "history.csv") in err
    assert (run / "history.csv.damaged").read_text() == damaged
    assert history_steps(run) == steps
    if damage == "cut":  # resumed from 8 with rows to 6: the gap is named too
        assert resumed.step == 8 and "no rows for steps 7 to 8" in err


def test_an_emptied_history_is_named_as_a_gap(tmp_path, tiny_images, capsys):
    run = finished_run(tmp_path, tiny_images)
    (run / "history.csv").write_text("")
    training.Trainer.resume(run, images=tiny_images, progress=False)
    assert "no rows for steps 1 to 8" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [("binary", "is not a text file"), ("folder", "is not a file")])
def test_a_history_that_cannot_be_read_is_refused_and_left_untouched(tmp_path, tiny_images, damage, message):
    run = finished_run(tmp_path, tiny_images)
    path = run / "history.csv"
    path.unlink()
    if damage == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    else:
        path.mkdir()
    with pytest.raises(run_folder.HistoryError, match=message) as error:  # a ValueError: train.py names it
        training.Trainer.resume(run, images=tiny_images, progress=False)
    assert str(path) in str(error.value)
    assert path.is_dir() if damage == "folder" else path.read_bytes() == bytes(range(256)) * 4
    assert not (run / "lock").exists()


# ------------------------------------------------------------ config.json


def test_a_deleted_config_is_recovered_from_the_newest_checkpoint(tmp_path, tiny_images, capsys):
    run = finished_run(tmp_path, tiny_images)
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").unlink()
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False, steps=12)
    assert "config.json is missing; using the copy" in capsys.readouterr().err
    assert resumed.step == 8 and resumed.fit(progress=False) == "done"
    assert json.loads((run / "config.json").read_text()) == {**saved, "steps": 12}


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "expected a JSON object of settings"),
    ('{"arch": "dcgan", "image_size": 32, "steps": 8}', "data_dir: give a data folder"),
    ("{not json", "is not valid JSON"),
])
@pytest.mark.parametrize("script", ["train.py", "generate.py", "evaluate.py"])
def test_a_config_json_of_the_wrong_shape_is_named_by_every_tool(tmp_path, content, message, script):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    args = {"train.py": ["--out", run, "--resume"], "generate.py": ["--run", run, "--out", tmp_path / "g.png"],
            "evaluate.py": ["--run", run]}[script]
    result = run_script(script, *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert str(run / "config.json") in result.stderr and message in result.stderr


def test_relative_data_folders_are_stored_absolute(tmp_path, tiny_images, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = small_config(data_dir="data/oasis")
    training.Trainer.new(config, "run", images=tiny_images, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data_dir"] == str(tmp_path / "data" / "oasis") and Path(saved["demo_root"]).is_absolute()


# ------------------------------------------------------------ the run lock


def test_an_empty_lock_left_by_a_full_disk_is_taken_over(tmp_path, tiny_images, capsys):
    run = finished_run(tmp_path, tiny_images)
    (run / "lock").write_text("")
    os.utime(run / "lock", (time.time() - 60, time.time() - 60))
    resumed = training.Trainer.resume(run, images=tiny_images, progress=False, steps=10)
    assert "cannot be read" in capsys.readouterr().err and resumed.fit(progress=False) == "done"


def test_a_full_disk_while_the_lock_is_written_leaves_no_lock(tmp_path, monkeypatch):
    folder = run_folder.RunFolder(tmp_path / "run")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_folder.json, "dump", no_space)
    with pytest.raises(run_folder.WriteError, match="the disk is full"):
        folder.acquire_lock()
    assert not (tmp_path / "run" / "lock").exists()


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_lock_copied_with_its_folder_does_not_lock_the_copy(tmp_path, live_process, capsys):
    original = tmp_path / "original"
    original.mkdir()
    holder = {"pid": live_process, "host": socket.gethostname(), "folder": str(original.resolve())}
    (original / "lock").write_text(json.dumps(holder))
    shutil.copytree(original, tmp_path / "copy")  # cp -a while it trains
    run_folder.RunFolder(tmp_path / "copy").acquire_lock()
    assert "was copied with the folder" in capsys.readouterr().err
    with pytest.raises(run_folder.RunLocked, match=f"process {live_process}"):
        run_folder.RunFolder(original).acquire_lock()  # the original stays locked by its trainer


def test_a_folder_moved_while_training_is_named_as_moved(tmp_path, tiny_images, live_process):
    run = finished_run(tmp_path, tiny_images)
    holder = {"pid": live_process, "host": socket.gethostname(), "folder": str(run.resolve())}
    (run / "lock").write_text(json.dumps(holder))
    moved = tmp_path / "moved"
    os.replace(run, moved)
    with pytest.raises(run_folder.RunLocked, match="moved while it trained"):
        run_folder.RunFolder(moved).acquire_lock()
    with pytest.raises(run_folder.WriteError, match="no longer exists") as error:  # the trainer's next write
        run_folder.RunFolder(run).append_history({"step": 9})
    assert "Free some space" not in str(error.value)


# ------------------------------------------------------------ a checkpoint's manifest


def test_a_manifest_naming_files_outside_the_checkpoint_opens_none_of_them(tmp_path, tiny_images, monkeypatch):
    run = finished_run(tmp_path, tiny_images)
    checkpoint = run / "checkpoints" / "ckpt-00000008"
    secret = tmp_path / "secret"
    secret.write_text("not yours")
    opened = []
    monkeypatch.setattr(checkpoints, "_sha256", lambda path: opened.append(path) or "0")
    for name in ("../../../secret", str(secret)):
        (checkpoint / "manifest.json").write_text(json.dumps({"files": {name: {"bytes": 9, "sha256": "0"}}}))
        with pytest.raises(checkpoints.CorruptCheckpoint, match="not a file of the checkpoint"):
            checkpoints.verify_checkpoint(checkpoint)
    assert opened == []


# ------------------------------------------------------------ the data cache


@pytest.fixture
def slices(tmp_path, make_split):
    rng = np.random.default_rng(0)
    make_split(tmp_path / "data", "train", {f"case_{i:03d}_slice_{i % 4}.nii.png":
                                             rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(12)})
    return tmp_path / "data"


def cache_file(cache: Path) -> Path:
    (found,) = cache.glob("slices-*.npy")
    return found


@pytest.mark.parametrize("damage", ["empty", "garbage", "cut"])
def test_a_damaged_data_cache_is_named_and_rebuilt(slices, private_cache, capsys, damage):
    good = np.array(data_utils.load_pixels(slices, ("train",), image_size=16))
    path = cache_file(private_cache)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":  # the header intact, the pixels not
        pixels = np.load(path, mmap_mode="r+")
        pixels[:] = np.random.default_rng(1).integers(0, 256, pixels.shape, dtype=np.uint8)
        pixels.flush()
        del pixels
    else:
        path.write_bytes(path.read_bytes()[:-100])
    again = data_utils.load_pixels(slices, ("train",), image_size=16)
    assert np.array_equal(again, good)
    err = capsys.readouterr().err
    assert "is damaged" in err and str(path) in err


def test_a_cache_left_half_written_by_a_killed_decoder_is_removed(slices, private_cache, live_process):
    private_cache.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = private_cache / f"slices-0123-abcd.pid{dead}.tmp"
    live = private_cache / f"slices-0123-efgh.pid{live_process}.tmp"  # another process decoding now
    for path in (stale, live):
        path.write_bytes(b"\0" * 1000)
    data_utils.load_pixels(slices, ("train",), image_size=16)
    assert not stale.exists() and live.exists()


def test_names_without_slice_numbers_are_named_at_load_time(tmp_path, capsys):
    assert data_utils.slice_levels([tmp_path / "a_slice_3.png", tmp_path / "b_slice_0.png"]) == [3, 0]
    assert data_utils.slice_levels([tmp_path / "a_slice_3.png", tmp_path / "brain.png"]) is None
    assert "brain.png" in capsys.readouterr().err


# ------------------------------------------------------------ a killed demo cohort build


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


BUILD = "import data_utils, sys; data_utils.make_demo_dataset(sys.argv[1], n_subjects=6, seed=0)"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_cohort_build_leaves_no_workers_lock_or_partial_folder(tmp_path, how):
    root = tmp_path / "demo"
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    builder = subprocess.Popen([sys.executable, "-c", BUILD, str(root)], env=environment, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not list(root.glob(".keras_png_slices_data.partial-*/*/*.png")) and time.monotonic() < deadline:
        time.sleep(0.1)  # a subject written: the workers are busy
    workers = children_of(builder.pid)
    builder.send_signal(how)
    builder.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(alive(pid) for pid in workers)
    if how == signal.SIGINT:  # cleaned up at once
        assert not list(root.glob(".keras_png_slices_data.partial-*"))
    subprocess.run([sys.executable, "-c", BUILD, str(root)], env=environment, check=True, timeout=120)
    assert (root / "keras_png_slices_data" / "demo_cohort.json").is_file()
    assert not list(root.glob(".keras_png_slices_data.partial-*"))


def test_a_script_without_a_main_guard_builds_the_cohort(tmp_path):
    """Workers started by spawning would run such a script again, each waiting on the lock its parent holds."""
    script = tmp_path / "build.py"
    script.write_text(f"import data_utils\ndata_utils.make_demo_dataset({str(tmp_path / 'demo')!r}, n_subjects=3)\n")
    result = subprocess.run([sys.executable, str(script)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "waiting for" not in result.stderr, result.stderr[-2000:]


# ------------------------------------------------------------ flags that would fill memory or crash later


@pytest.mark.parametrize("script, args, flag", [
    ("train.py", ["--demo", "--latent-dim", "1000000000"], "--latent-dim"),
    ("train.py", ["--demo", "--seed", str(10**20)], "--seed"),
    ("train.py", ["--demo", "--cluster-timeout", "nan"], "--cluster-timeout"),
    ("train.py", ["--demo", "--cluster-timeout", "inf"], "--cluster-timeout"),
    ("generate.py", ["--n", "1000000000000", "--out", "g.png"], "--n"),
    ("evaluate.py", ["--n", "1000000000000"], "--n"),
])
def test_sizes_that_cannot_fit_are_named_before_any_work(tmp_path, script, args, flag):
    run = tmp_path / "run"  # the checks read only the run's config: no training needed
    run.mkdir()
    (run / "config.json").write_text(json.dumps(small_config().validate().resolved().to_dict()))
    more = ["--run", run] if script != "train.py" else ["--out", tmp_path / "new"]
    result = run_script(script, *args, *more, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and flag in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "new").exists()


def test_generate_says_how_many_images_its_grid_holds_and_reads_a_config_from_the_checkpoint(tmp_path, tiny_images):
    run = finished_run(tmp_path, tiny_images)
    (run / "config.json").unlink()
    result = run_script("generate.py", "--run", run, "--n", 1025, "--out", tmp_path / "g.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a grid of the first 1024" in result.stdout and "add --npy" in result.stdout
