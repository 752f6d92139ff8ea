"""The run folder: one training run's files on disk, and nothing else.

    RUN/config.json          the resolved TrainConfig (resume, generate and evaluate read it)
    RUN/environment.json     versions and device, so figures can be attributed
    RUN/history.csv          one row per logged step (columns: plots.HISTORY_COLUMNS)
    RUN/fixed_latents.npy    the latent vectors of every sample grid
    RUN/real_samples.png     real training images, for comparison
    RUN/samples/step_*.png   a sample grid every sample_every steps
    RUN/samples.png          the final grid, RUN/losses.png the curves, RUN/progress.gif
    RUN/checkpoints/ckpt-*/  resumable checkpoints (checkpoints.py)

Every file is written whole or not at all (a temporary file renamed into
place), so a kill at any moment leaves the previous version; a write that
fails (a full disk) raises ``WriteError`` naming the file and the free space.

A run folder has one writer at a time: ``acquire_lock`` writes RUN/lock
(pid and host) and refuses while another live process holds it; a lock left
by a process that is gone is taken over with a warning.
"""

from __future__ import annotations

import csv
import errno
import functools
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import checkpoints
import data_utils
import plots
from config import REGULARISED, TrainConfig

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
HISTORY_FILE = "history.csv"
FIXED_LATENTS = "fixed_latents.npy"
REAL_SAMPLES = "real_samples.png"
SAMPLES_DIR = "samples"
FINAL_SAMPLES = "samples.png"
LOSS_PLOT = "losses.png"
PROGRESS_GIF = "progress.gif"
LOCK_FILE = "lock"


class WriteError(RuntimeError):
    """A file of the run folder could not be written; the message names it and says why."""


class RunLocked(RuntimeError):
    """Another live process is writing the run folder."""


def free_bytes(path) -> int:
    """Free space where ``path`` (or its nearest existing parent) lives."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _reports_write_errors(method):
    """Turn an OSError while writing into a WriteError that names the run folder and the free space."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            cause = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise WriteError(f"could not write {exc.filename or self.path} ({cause}; "
                             f"{free_bytes(self.path) / 2**20:.1f} MiB free). Free some space or choose another "
                             "run folder; what was saved before is untouched.") from exc

    return wrapper


def check_writable(path, flag: str, folder: bool) -> None:
    """Raise ValueError naming ``flag`` unless ``path`` can be written (as a folder, or as a file).

    Checked before any work starts: the nearest existing folder must take a
    new file, and the path itself must not be a file where a folder is meant
    (or the reverse).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{flag}: {path} is a file; give a folder for the run")
    if not folder and path.is_dir():
        raise ValueError(f"{flag}: {path} is a folder; give a file name")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag}: {existing} is a file, so {path} cannot be made")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(f"{flag}: cannot write in {existing} ({exc.strerror or exc}); choose another place") from None


def check_script_outputs(parser, files: dict) -> None:
    """For generate.py and evaluate.py: ``parser.error`` naming the flag when one of ``files`` ({flag: path
    or None}) cannot be written, or when KERAS_BACKEND cannot run; before any model or data is loaded."""
    from config import backend_problem

    try:
        for flag, path in files.items():
            if path:
                check_writable(path, flag, folder=False)
        if backend_problem():
            raise ValueError(backend_problem())
    except ValueError as error:
        parser.error(str(error))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def next_run_dir(arch: str, image_size: int, root: Path = Path("runs"), prefix: str = "") -> Path:
    """The first free ``root/<prefix><arch>-<size>px-NNN``."""
    index = 1
    while (root / f"{prefix}{arch}-{image_size}px-{index:03d}").exists():
        index += 1
    return root / f"{prefix}{arch}-{image_size}px-{index:03d}"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class RunFolder:
    """The files of one run under ``path``."""

    def __init__(self, path):
        self.path = Path(path)
        self.history_path = self.path / HISTORY_FILE
        self.samples_dir = self.path / SAMPLES_DIR

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- one writer

    def acquire_lock(self) -> None:
        """Make this process the folder's one writer (again, if it is already); see the module docstring."""
        path = self.path / LOCK_FILE
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._lock_holder(path)
                if holder is None:
                    continue  # the holder released it between our two looks
                if {key: holder.get(key) for key in me} == me:
                    return
                if holder.get("host") == me["host"] and not _process_alive(int(holder.get("pid", -1))):
                    print(f"warning: {path} was left by process {holder.get('pid')}, which is no longer running; "
                          "taking the run folder over", file=sys.stderr)
                    path.unlink(missing_ok=True)
                    continue
                raise RunLocked(
                    f"{self.path} is being trained by process {holder.get('pid')} on {holder.get('host')} "
                    f"(since {holder.get('since', '?')}); wait for it to finish or stop it. If that process is "
                    f"gone (it ran on another machine), delete {path}"
                ) from None
            with os.fdopen(descriptor, "w") as handle:
                json.dump({**me, "since": time.strftime("%Y-%m-%d %H:%M:%S")}, handle)
            return

    @staticmethod
    def _lock_holder(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: a writer killed while writing it, treated as gone

    def release_lock(self) -> None:
        """Give up the lock if this process holds it."""
        path = self.path / LOCK_FILE
        holder = self._lock_holder(path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            path.unlink(missing_ok=True)

    def holds_run(self) -> bool:
        return (self.path / CONFIG_FILE).exists() or self.latest_checkpoint() is not None

    def check_fresh(self) -> None:
        """Raise FileExistsError (changing nothing) if the folder already holds a run."""
        if self.holds_run():
            raise FileExistsError(
                f"{self.path} already holds a run; resume it (--resume / Trainer.resume) "
                "or choose another run folder. Nothing was changed."
            )

    # --- a new run

    @_reports_write_errors
    def create(self, config: TrainConfig, environment: dict, fixed_latents: np.ndarray,
               real_images: np.ndarray) -> None:
        """Start the folder of a new run; refuse (changing nothing) if it already holds one."""
        self.check_fresh()
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        _write_atomically(self.path / ENVIRONMENT_FILE, json.dumps(environment, indent=2) + "\n")
        np.save(self.path / FIXED_LATENTS, fixed_latents)
        data_utils.save_image_grid(self.path / REAL_SAMPLES, real_images)
        with open(self.history_path, "w", newline="") as handle:
            csv.writer(handle).writerow(plots.HISTORY_COLUMNS)

    # --- config

    @_reports_write_errors
    def write_config(self, config: TrainConfig) -> Path:
        path = self.path / CONFIG_FILE
        _write_atomically(path, json.dumps(config.to_dict(), indent=2) + "\n")
        return path

    def read_config(self) -> TrainConfig:
        """The run's config, every architecture default filled in (older folders may have left some unset)."""
        path = self.path / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {self.path} is not a run folder made by train.py")
        try:
            values = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc})") from exc
        if values.get("arch") not in REGULARISED and values.get("r1_gamma") is None and values.get("ema_kimg") is None:
            # Written before R1, the EMA and augmentation applied to every architecture (config.json has
            # held resolved values since): these DCGANs trained without them, whatever "augment" says.
            values.update(r1_gamma=0.0, ema_kimg=0.0, augment="off")
        return TrainConfig.from_dict(values).resolved()

    # --- history

    @_reports_write_errors
    def append_history(self, row: dict) -> None:
        with open(self.history_path, "a", newline="") as handle:
            csv.DictWriter(handle, plots.HISTORY_COLUMNS).writerow(
                {key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()}
            )

    @_reports_write_errors
    def truncate_history(self, step: int) -> None:
        """Drop history rows logged after ``step`` (the checkpoint a run resumes from).

        A kill while a row was being written can leave a partial last line;
        only complete rows (every column present) are kept.
        """
        rows = plots.read_history_rows(self.history_path)
        kept = [row for row in rows if int(row["step"]) <= step]
        lines = self.history_path.read_text().count("\n") if self.history_path.is_file() else 0
        if len(kept) == len(rows) == lines - 1 and self.history_path.read_text().endswith("\n"):
            return  # nothing to drop: no rewrite, so a full disk does not stop a resume here
        temporary = self.history_path.with_name(HISTORY_FILE + ".tmp")
        try:
            with open(temporary, "w", newline="") as handle:
                writer = csv.DictWriter(handle, plots.HISTORY_COLUMNS)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(temporary, self.history_path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise

    def read_history(self) -> dict[str, list[float]]:
        return plots.read_history(self.history_path)

    # --- figures

    def fixed_latents(self) -> np.ndarray:
        return np.load(self.path / FIXED_LATENTS)

    @_reports_write_errors
    def save_sample_grid(self, step: int, images: np.ndarray) -> Path:
        path = self.samples_dir / f"step_{step:08d}.png"
        data_utils.save_image_grid(path, images)
        return path

    def sample_grids(self) -> list[Path]:
        return sorted(self.samples_dir.glob("step_*.png"))

    @_reports_write_errors
    def save_final_figures(self, images: np.ndarray) -> tuple[Path, Path]:
        """``samples.png`` (the final grid) and ``losses.png`` (the curves so far).

        Images that are not finite (a diverged run) give way to the newest
        sample grid saved while they still were.
        """
        samples, losses = self.path / FINAL_SAMPLES, self.path / LOSS_PLOT
        grids = self.sample_grids()
        if np.isfinite(images).all() or not grids:
            data_utils.save_image_grid(samples, np.nan_to_num(images))
        else:
            shutil.copyfile(grids[-1], samples)
        plots.save_history_plot(self.history_path, losses)
        return samples, losses

    @_reports_write_errors
    def save_progress_gif(self) -> Path:
        """``progress.gif``: the saved sample grids in step order."""
        grids = self.sample_grids()
        if not grids:
            raise FileNotFoundError(f"{self.samples_dir} holds no step_*.png grids yet (train first)")
        return plots.save_gif(grids, self.path / PROGRESS_GIF)

    # --- checkpoints

    def checkpoints(self) -> list[tuple[int, Path]]:
        return checkpoints.list_checkpoints(self.path)

    def latest_checkpoint(self) -> Path | None:
        return checkpoints.latest_checkpoint(self.path)

    def checkpoint_candidates(self, name=None) -> list[Path]:
        """[the checkpoint ``name``] (a folder, or its name under checkpoints/), else every complete one, newest first."""
        if not name:
            return [path for _, path in reversed(self.checkpoints())]
        folder = Path(name)
        if not folder.is_dir() and (self.path / checkpoints.CHECKPOINT_DIR / name).is_dir():
            folder = self.path / checkpoints.CHECKPOINT_DIR / name
        if not (folder / checkpoints.STATE_FILE).is_file():
            have = ", ".join(path.name for _, path in self.checkpoints()) or "none"
            raise FileNotFoundError(f"{name} is not a complete checkpoint of {self.path} (it has: {have})")
        return [folder]

    def restore(self, restore, name=None):
        """``restore(folder)`` on checkpoint ``name``, or on the newest good one -> (folder, what it returned).

        Without a name, a corrupt checkpoint (checkpoints.CorruptCheckpoint) is
        named in a warning and the next older one is tried.  Raises
        FileNotFoundError when there is no checkpoint at all.
        """
        candidates = self.checkpoint_candidates(name)
        if not candidates:
            raise FileNotFoundError(f"{self.path} holds no complete checkpoint (train it first)")
        problems = []
        for folder in candidates:
            try:
                return folder, restore(folder)
            except checkpoints.CorruptCheckpoint as exc:
                if name:
                    raise
                problems.append(str(exc))
                print(f"warning: skipping checkpoint {folder.name}: {exc}", file=sys.stderr)
        raise checkpoints.CorruptCheckpoint(f"no usable checkpoint in {self.path}: " + "; ".join(problems))


class FollowerRunFolder(RunFolder):
    """The run folder as every process but the chief sees it: read, never written.

    In a run of several processes (cluster.py) process 0 alone writes the
    folder (config, history, figures, checkpoints, the lock); the others read
    its config and checkpoints, so the folder must be on a file system they
    all share.  Every writing method here does nothing.
    """

    def acquire_lock(self) -> None:
        pass

    def release_lock(self) -> None:
        pass

    def check_fresh(self) -> None:
        pass

    def create(self, config: TrainConfig, environment: dict, fixed_latents: np.ndarray,
               real_images: np.ndarray) -> None:
        pass

    def write_config(self, config: TrainConfig) -> Path:
        return self.path / CONFIG_FILE

    def append_history(self, row: dict) -> None:
        pass

    def truncate_history(self, step: int) -> None:
        pass

    def save_sample_grid(self, step: int, images: np.ndarray) -> Path:
        return self.samples_dir / f"step_{step:08d}.png"

    def save_final_figures(self, images: np.ndarray) -> tuple[Path, Path]:
        return self.path / FINAL_SAMPLES, self.path / LOSS_PLOT

    def save_progress_gif(self) -> Path:
        return self.path / PROGRESS_GIF
