"""Figures of a run: the loss and discriminator-accuracy curves.

Image grids live in data_utils (they need only numpy and PIL); this module
holds what needs matplotlib.  It never opens a window: figures are returned
(for the notebook) or written to PNG files.
"""

from __future__ import annotations

import csv
from pathlib import Path

# Figure (not pyplot) renders off-screen with no global backend state to set.
from matplotlib.figure import Figure


HISTORY_COLUMNS = ("step", "epoch", "g_loss", "d_loss", "d_acc_real", "d_acc_fake", "images_per_s", "elapsed_s")


def _is_complete(row: dict) -> bool:
    """Every column present and numeric (a kill mid-write leaves a partial line)."""
    try:
        for column in HISTORY_COLUMNS:
            float(row[column])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def read_history_rows(path) -> list[dict]:
    """Complete rows of a history.csv; a partial last line (from a kill) is skipped."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if _is_complete(row)]


def read_history(path) -> dict[str, list[float]]:
    """history.csv as columns of floats (empty lists when there are no rows)."""
    columns: dict[str, list[float]] = {column: [] for column in HISTORY_COLUMNS}
    for row in read_history_rows(path):
        for column in HISTORY_COLUMNS:
            columns[column].append(float(row[column]))
    return columns


def _plot_curves(loss_axes, accuracy_axes, history: dict[str, list[float]]) -> None:
    """G and D losses on one axes, D accuracy on real and on fake on the other."""
    steps = history.get("step", [])
    loss_axes.plot(steps, history.get("g_loss", []), label="generator")
    loss_axes.plot(steps, history.get("d_loss", []), label="discriminator")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("BCE loss")
    loss_axes.set_title("Losses")
    loss_axes.legend(loc="upper right")
    accuracy_axes.plot(steps, history.get("d_acc_real", []), label="D on real")
    accuracy_axes.plot(steps, history.get("d_acc_fake", []), label="D on fake")
    accuracy_axes.set_ylim(-0.02, 1.02)
    accuracy_axes.set_xlabel("step")
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.set_title("Discriminator accuracy")
    accuracy_axes.legend(loc="lower right")


def history_figure(history: dict[str, list[float]], figure: Figure | None = None) -> Figure:
    """Two panels: G and D losses, and D accuracy on real and on fake images."""
    figure = figure or Figure(figsize=(10, 3.6), layout="constrained")
    figure.clear()
    _plot_curves(*figure.subplots(1, 2), history)
    return figure


def save_history_plot(history_csv, out_png) -> Path:
    figure = history_figure(read_history(history_csv))
    figure.savefig(out_png, dpi=100)
    return Path(out_png)


def progress_figure(samples, history: dict[str, list[float]], figure: Figure | None = None) -> Figure:
    """One figure for live training: the fixed-latent sample grid beside the curves."""
    import data_utils

    figure = figure or Figure(figsize=(13, 4), layout="constrained")
    figure.clear()
    grid_axes, loss_axes, accuracy_axes = figure.subplots(1, 3, width_ratios=(1.1, 1, 1))
    grid_axes.imshow(data_utils.image_grid(samples), cmap="gray", vmin=0, vmax=255)
    grid_axes.set_axis_off()
    grid_axes.set_title(f"samples at step {int(history['step'][-1]) if history.get('step') else 0}")
    _plot_curves(loss_axes, accuracy_axes, history)
    return figure
