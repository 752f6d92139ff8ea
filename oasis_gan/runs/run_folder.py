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
import time
from pathlib import Path

import numpy as np

import data_utils
from oasis_gan import plots
from oasis_gan.architectures import table
from oasis_gan.config import EMA_RAMPUP, OLD_RUNS_FLIP_AXIS, ConfigError, TrainConfig
from oasis_gan.runs import checkpoints

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
SET_ASIDE_DIR = "set-aside"  # checkpoints a resume from an older one branched away from
FRESH_LOCK_S = 2.0  # an empty lock younger than this is being written by its maker, not left behind


class WriteError(RuntimeError):
    """A file of the run folder could not be written; the message names it and says why."""


class ConfigFileError(ValueError):
    """A run's config.json that cannot be read as its settings; the message names the file."""


class HistoryError(ValueError):
    """A history.csv that cannot be read at all; the message names it.  Nothing was changed."""


class RunLocked(RuntimeError):
    """Another live process is writing the run folder."""


def free_bytes(path) -> int:
    """Free space where ``path`` (or its nearest existing parent) lives."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _write_failure(path: Path, exc: OSError) -> str:
    """What went wrong writing a file of the run folder ``path``, and what to do, for a person to act on."""
    target = exc.filename or path
    if exc.errno == errno.ENOSPC:
        return (f"could not write {target} (the disk is full; {free_bytes(path) / 2**20:.1f} MiB free). Free some "
                "space or choose another run folder; what was saved before is untouched.")
    if not path.is_dir():
        return (f"could not write {target}: the run folder {path} no longer exists (moved or deleted while "
                "training?). What was saved is wherever the folder went: resume it there with --resume.")
    if exc.errno == errno.EISDIR or Path(target).is_dir():
        return f"could not write {target}: it is a folder, not a file; move it out of the way and resume."
    return (f"could not write {target} ({exc.strerror or exc}); what was saved before is untouched. Fix the "
            "cause (permissions, a read-only disk) and resume.")


def _reports_write_errors(method):
    """Turn an OSError while writing into a WriteError that names the file and says why."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise WriteError(_write_failure(self.path, exc)) from exc

    return wrapper


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


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


def settings_from(values, path: Path) -> TrainConfig:
    """A run's saved settings (config.json's, or a checkpoint's copy) as a resolved TrainConfig, or
    ConfigFileError naming ``path``."""
    if not isinstance(values, dict):
        raise ConfigFileError(f"{path}: expected a JSON object of settings ({{\"arch\": ...}}), "
                              f"got {type(values).__name__}")
    entry = table.BY_NAME.get(values.get("arch"))
    if entry and not entry.regularised and values.get("r1_gamma") is None and values.get("ema_kimg") is None:
        # Written before R1, the EMA and augmentation applied to every architecture (config.json has
        # held resolved values since): these DCGANs trained without them, whatever "augment" says.
        values.update(r1_gamma=0.0, ema_kimg=0.0, augment="off")
    # Written before these were settings: constant rates, and seed 000's discriminator dropped 0.4 in both
    # of the architectures built from it.
    values.setdefault("lr_end", 1.0)
    values.setdefault("lr_decay_start", 0.0)
    if entry and entry.has_dropout:
        values.setdefault("d_dropout", table.SEED_000_DROPOUT)
    values.setdefault("flip_axis", OLD_RUNS_FLIP_AXIS)  # written before flips chose their axis
    values.setdefault("ema_rampup", EMA_RAMPUP)  # written before the ramp was a setting: every run ramped so
    try:
        return TrainConfig.from_dict(values).validate().resolved()
    except ConfigError as exc:
        raise ConfigFileError(f"{path}: {exc.field}: {exc.reason}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigFileError(f"{path}: not a run's settings ({exc})") from None


def _rewrite_history(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as the whole of history.csv, through a temporary file (the old one stays if this fails)."""
    temporary = path.with_name(HISTORY_FILE + ".tmp")
    try:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, plots.HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def readable_history(path: Path, has_checkpoints: bool) -> tuple[list[dict], list[str]]:
    """(the complete rows of the history.csv at ``path``, what was wrong with the rest).

    A missing file is a problem only for a run that has checkpoints; one that
    is not a file, or not text, raises HistoryError.
    """
    if not path.exists():
        return [], ([] if not has_checkpoints else ["the file is missing (a new one is started)"])
    if not path.is_file():
        raise HistoryError(f"{path} is not a file (a folder?); move it out of the way and resume again "
                           "(a new history is then started)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HistoryError(f"{path} is not a text file (byte {exc.start} cannot be read); it was left "
                           "untouched: restore it, or move it away and resume again (a new history is "
                           "then started)") from None
    lines = text.splitlines(keepends=True)
    problems = []
    columns = list(plots.HISTORY_COLUMNS)
    if lines and lines[0].split(",")[0].strip() == "step":
        columns = next(csv.reader([lines[0]]))
        lines = lines[1:]
        first = 2
    else:
        first = 1
        if lines:
            problems.append("its header line is missing (rows are read in today's column order)")
    rows, unreadable = [], []
    for number, line in enumerate(lines, start=first):
        values = next(csv.reader([line]), [])
        row = dict(zip(columns, values))
        if not line.endswith("\n") or len(values) != len(columns) or not plots.is_complete_row(row):
            if line.strip():
                unreadable.append(number)
            continue
        rows.append(row)
    if unreadable:
        cut = unreadable == [first + len(lines) - 1] and not lines[-1].endswith("\n")
        listed = ", ".join(map(str, unreadable[:10]))
        problems.append(f"line {unreadable[0]} was cut while it was written (a kill) and is dropped" if cut else
                        f"{len(unreadable)} unreadable lines dropped (lines {listed})")
    return rows, problems


class RunLock:
    """The lock file that makes one process the writer of a run folder (see the module docstring)."""

    def __init__(self, folder: Path):
        self.path = Path(folder)

    def acquire(self) -> None:
        """Make this process the folder's one writer (again, if it is already); see the module docstring.

        A lock that cannot be read (a process killed, or a disk that filled,
        while writing it) is treated as gone.  A lock that names another
        folder came with a copy of a run (``cp -a`` while it trained): that
        process writes the original, not this copy, so the copy is taken over.
        """
        path = self.path / LOCK_FILE
        me = {"pid": os.getpid(), "host": socket.gethostname(), "folder": str(self.path.resolve())}
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self.holder_of(path)
                if holder is None:
                    continue  # the holder released it between our two looks
                if not holder and _age_s(path) < FRESH_LOCK_S:
                    time.sleep(0.05)  # another process has just made it and is writing it
                    continue
                if not self._holder_counts(path, holder, me):
                    path.unlink(missing_ok=True)
                    continue
                if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                    return
                moved = (f" (it was {holder['folder']} when that process started: a folder moved while it "
                         "trained; the process stops at its next write)") if holder.get("folder") else ""
                raise RunLocked(
                    f"{self.path} is being trained by process {holder.get('pid')} on {holder.get('host')} "
                    f"(since {holder.get('since', '?')}){moved}; wait for it to finish or stop it. If that "
                    f"process is gone (it ran on another machine), delete {path}"
                ) from None
            try:
                with os.fdopen(descriptor, "w") as handle:
                    json.dump({**me, "since": time.strftime("%Y-%m-%d %H:%M:%S")}, handle)
            except OSError as exc:  # a full disk: no half-written lock is left to refuse later runs
                path.unlink(missing_ok=True)
                raise WriteError(_write_failure(self.path, exc)) from exc
            return

    def _holder_counts(self, path: Path, holder: dict, me: dict) -> bool:
        """Whether the lock's ``holder`` is a live writer of this folder (else it is taken over, with a warning)."""
        if not isinstance(holder.get("pid"), int) or not holder.get("host"):
            print(f"warning: {path} cannot be read (left by a process killed while writing it, or by a full "
                  "disk); treating it as gone and taking the run folder over", file=sys.stderr)
            return False
        origin = holder.get("folder")
        if origin and origin != me["folder"] and Path(origin).is_dir() and \
                self.holder_of(Path(origin) / LOCK_FILE) == holder:
            print(f"warning: {path} was copied with the folder from {origin}, which process {holder['pid']} "
                  "trains; this copy is not written by it: taking the copy over", file=sys.stderr)
            return False
        if holder["host"] == me["host"] and holder["pid"] != me["pid"] and not data_utils.process_alive(holder["pid"]):
            print(f"warning: {path} was left by process {holder['pid']}, which is no longer running; "
                  "taking the run folder over", file=sys.stderr)
            return False
        return True

    @staticmethod
    def holder_of(path: Path) -> dict | None:
        """The lock's contents; None when there is no lock, {} when it cannot be read."""
        try:
            holder = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def release(self) -> None:
        """Give up the lock if this process holds it."""
        path = self.path / LOCK_FILE
        holder = self.holder_of(path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            path.unlink(missing_ok=True)


class RunFolder:
    """The files of one run under ``path``."""

    def __init__(self, path):
        self.path = Path(path)
        self.history_path = self.path / HISTORY_FILE
        self.samples_dir = self.path / SAMPLES_DIR

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- one writer (RunLock)

    def acquire_lock(self) -> None:
        """Make this process the folder's one writer (again, if it is already): RunLock.acquire."""
        RunLock(self.path).acquire()

    def release_lock(self) -> None:
        """Give up the lock if this process holds it."""
        RunLock(self.path).release()

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
        """The run's config, every architecture default filled in (older folders may have left some unset).

        Without config.json (deleted by mistake) the copy in the newest
        checkpoint is used, with a warning; config.json is written again when
        the run resumes.  A config.json that cannot be a run's settings raises
        ConfigFileError naming it.
        """
        path = self.path / CONFIG_FILE
        if path.is_file():
            try:
                values = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ConfigFileError(f"{path} is not valid JSON ({exc})") from exc
        else:
            values, source = self._config_in_checkpoints()
            if values is None:
                raise FileNotFoundError(f"{path} not found: {self.path} is not a run folder made by train.py"
                                        + (" (and its checkpoints hold no copy of the config)" if source else ""))
            print(f"warning: {path} is missing; using the copy of the run's config in {source} "
                  "(config.json is written again when the run resumes)", file=sys.stderr)
        return settings_from(values, path)

    def _config_in_checkpoints(self) -> tuple[dict | None, Path | None]:
        """(the config saved in the newest checkpoint that holds one, that checkpoint), else (None, newest or None)."""
        found = [folder for _, folder in reversed(self.checkpoints())]
        for folder in found:
            try:
                saved = checkpoints.read_state(folder).get("config")
            except checkpoints.CorruptCheckpoint:
                continue
            if isinstance(saved, dict):
                return saved, folder
        return None, (found[0] if found else None)

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

        What can be read is kept and nothing is dropped silently: a partial
        last line (a kill while it was written), a missing header line or
        unreadable lines are named in a warning, and the file as it was is
        kept beside it as ``history.csv.damaged``.  A history that is not text
        at all, or not a file, raises HistoryError and is left untouched.
        """
        rows, problems = readable_history(self.history_path, bool(self.checkpoints()))
        kept = [row for row in rows if int(row["step"]) <= step]
        if not problems and len(kept) == len(rows):
            return  # nothing to drop: no rewrite, so a full disk does not stop a resume here
        if problems:
            damaged = self.history_path.with_name(HISTORY_FILE + ".damaged")
            shutil.copyfile(self.history_path, damaged)
            print(f"warning: {self.history_path}: " + "; ".join(problems) + f". {len(kept)} rows up to step {step} "
                  f"are kept; the file as it was is in {damaged}", file=sys.stderr)
        _rewrite_history(self.history_path, kept)

    def check_history(self) -> None:
        """Raise HistoryError (changing nothing) when history.csv cannot be read at all: before a resume's work."""
        readable_history(self.history_path, bool(self.checkpoints()))

    def warn_of_history_gap(self, step: int, log_every: int) -> None:
        """Say so when history.csv stops well short of ``step`` (the resumed checkpoint's): cut or emptied."""
        rows, _ = readable_history(self.history_path, bool(self.checkpoints()))
        last = max((int(row["step"]) for row in rows), default=0)
        if step - last >= log_every:  # rows come every log_every steps, and at every stop
            print(f"warning: {self.history_path} has no rows for steps {last + 1} to {step} (it was cut or "
                  "emptied): the run continues, and its curves have a gap there", file=sys.stderr)

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
        """[the checkpoint ``name``] (a folder, or its name under checkpoints/), else every complete one,
        newest first."""
        if not name:
            return [path for _, path in reversed(self.checkpoints())]
        folder = Path(name)
        if not folder.is_dir() and (self.path / checkpoints.CHECKPOINT_DIR / name).is_dir():
            folder = self.path / checkpoints.CHECKPOINT_DIR / name
        if not (folder / checkpoints.STATE_FILE).is_file():
            have = ", ".join(path.name for _, path in self.checkpoints()) or "none"
            raise FileNotFoundError(f"{name} is not a complete checkpoint of {self.path} (it has: {have})")
        return [folder]

    def set_aside_checkpoints_after(self, step: int) -> Path | None:
        """Move the checkpoints past ``step`` (and their history rows) out of the run; returns where they went.

        A run resumed from an older checkpoint (``--checkpoint``, or past a
        corrupt newer one) takes a new branch: the newer checkpoints are no
        longer its future, and left in place they would outrank the branch's
        own (pruning keeps the highest steps, a plain resume takes the
        newest).  They are moved, not deleted, to RUN/set-aside/, and the
        warning says where.
        """
        later = sorted(path for path in (self.path / checkpoints.CHECKPOINT_DIR).glob("ckpt-*")
                       if path.is_dir() and (checkpoints.step_of(path) or -1) > step)
        if not later:
            return None
        folder = self.path / SET_ASIDE_DIR / f"after-step-{step:08d}-{time.strftime('%Y%m%d-%H%M%S')}"
        folder.mkdir(parents=True)
        for path in later:
            os.replace(path, folder / path.name)
        if self.history_path.is_file():
            shutil.copyfile(self.history_path, folder / HISTORY_FILE)
        print(f"warning: resuming from step {step}, before the run's newest checkpoint: the run continues from "
              f"there, and what came after ({', '.join(path.name for path in later)} and history.csv as it was) "
              f"was moved to {folder}; delete that folder once you no longer need it", file=sys.stderr)
        return folder

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

    def set_aside_checkpoints_after(self, step: int) -> Path | None:
        return None

    def warn_of_history_gap(self, step: int, log_every: int) -> None:
        pass

    def save_sample_grid(self, step: int, images: np.ndarray) -> Path:
        return self.samples_dir / f"step_{step:08d}.png"

    def save_final_figures(self, images: np.ndarray) -> tuple[Path, Path]:
        return self.path / FINAL_SAMPLES, self.path / LOSS_PLOT

    def save_progress_gif(self) -> Path:
        return self.path / PROGRESS_GIF
