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
place), so a kill at any moment leaves the previous version.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

import checkpoints
import data_utils
import plots
from config import TrainConfig

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
HISTORY_FILE = "history.csv"
FIXED_LATENTS = "fixed_latents.npy"
REAL_SAMPLES = "real_samples.png"
SAMPLES_DIR = "samples"
FINAL_SAMPLES = "samples.png"
LOSS_PLOT = "losses.png"
PROGRESS_GIF = "progress.gif"


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
        return TrainConfig.from_dict(values).resolved()

    # --- history

    def append_history(self, row: dict) -> None:
        with open(self.history_path, "a", newline="") as handle:
            csv.DictWriter(handle, plots.HISTORY_COLUMNS).writerow(
                {key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()}
            )

    def truncate_history(self, step: int) -> None:
        """Drop history rows logged after ``step`` (the checkpoint a run resumes from).

        A kill while a row was being written can leave a partial last line;
        only complete rows (every column present) are kept.
        """
        rows = [row for row in plots.read_history_rows(self.history_path) if int(row["step"]) <= step]
        temporary = self.history_path.with_name(HISTORY_FILE + ".tmp")
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, plots.HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, self.history_path)

    def read_history(self) -> dict[str, list[float]]:
        return plots.read_history(self.history_path)

    # --- figures

    def fixed_latents(self) -> np.ndarray:
        return np.load(self.path / FIXED_LATENTS)

    def save_sample_grid(self, step: int, images: np.ndarray) -> Path:
        path = self.samples_dir / f"step_{step:08d}.png"
        data_utils.save_image_grid(path, images)
        return path

    def sample_grids(self) -> list[Path]:
        return sorted(self.samples_dir.glob("step_*.png"))

    def save_final_figures(self, images: np.ndarray) -> tuple[Path, Path]:
        """``samples.png`` (the final grid) and ``losses.png`` (the curves so far)."""
        samples, losses = self.path / FINAL_SAMPLES, self.path / LOSS_PLOT
        data_utils.save_image_grid(samples, images)
        plots.save_history_plot(self.history_path, losses)
        return samples, losses

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

    def checkpoint(self, name=None) -> Path:
        """The checkpoint folder ``name`` (a path, or a name under checkpoints/), else the latest complete one."""
        if name:
            folder = Path(name)
            if not folder.is_dir() and (self.path / checkpoints.CHECKPOINT_DIR / name).is_dir():
                folder = self.path / checkpoints.CHECKPOINT_DIR / name
            if not (folder / checkpoints.STATE_FILE).is_file():
                raise FileNotFoundError(f"{name} is not a complete checkpoint of {self.path}")
            return folder
        latest = self.latest_checkpoint()
        if latest is None:
            raise FileNotFoundError(f"{self.path} holds no complete checkpoint (train it first, or check "
                                    "--checkpoint)")
        return latest
