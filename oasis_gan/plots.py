"""Figures of a run: loss, discriminator-accuracy and SSIM curves; match panels.

Image grids live in data_utils (they need only numpy and PIL); this module
holds what needs matplotlib.  It never opens a window: figures are returned
(for the notebook) or written to PNG files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
# Figure (not pyplot) renders off-screen with no global backend state to set.
from matplotlib.figure import Figure


REQUIRED_COLUMNS = ("step", "epoch", "g_loss", "d_loss", "d_acc_real", "d_acc_fake", "images_per_s", "elapsed_s")
# Measured on some rows only (blank elsewhere): the median best-match SSIM of
# the fixed sample grid against a fixed subset of the training images.
# Regularised runs add the R1 penalty (on the rows whose steps applied it) and
# the augmentation probability p; StyleGAN the path-length penalty (likewise).
OPTIONAL_COLUMNS = ("nn_ssim", "r1_penalty", "augment_p", "pl_penalty")
HISTORY_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
COURSE_SSIM_BAR = 0.6  # the course's bar for this task: "SSIM > 0.6"


def is_complete_row(row: dict) -> bool:
    """Every required column present and numeric (a kill mid-write leaves a partial line)."""
    try:
        for column in REQUIRED_COLUMNS:
            float(row[column])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _optional_float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def read_history_rows(path) -> list[dict]:
    """Complete rows of a history.csv; a partial last line (from a kill) is skipped."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if is_complete_row(row)]


def read_history(path) -> dict[str, list[float]]:
    """history.csv as columns of floats (empty lists when there are no rows).

    Optional columns hold NaN on the rows where they were not measured (and
    on every row of a run written before the column existed).
    """
    columns: dict[str, list[float]] = {column: [] for column in HISTORY_COLUMNS}
    for row in read_history_rows(path):
        for column in REQUIRED_COLUMNS:
            columns[column].append(float(row[column]))
        for column in OPTIONAL_COLUMNS:
            columns[column].append(_optional_float(row.get(column)))
    return columns


def _plot_curves(history: dict[str, list[float]], loss_axes, accuracy_axes, ssim_axes=None,
                 total_steps: int | None = None) -> None:
    """G and D losses; D accuracy on real and on fake; and best-match SSIM when measured.

    With ``total_steps`` every panel spans the whole run from the start, so
    the first points do not sit alone on a zoomed-in axis.
    """
    steps = history.get("step", [])
    loss_axes.plot(steps, history.get("g_loss", []), label="generator")
    loss_axes.plot(steps, history.get("d_loss", []), label="discriminator")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("BCE loss")
    loss_axes.set_title("Losses")
    loss_axes.legend(loc="upper right")
    accuracy_axes.plot(steps, history.get("d_acc_real", []), label="D on real")
    accuracy_axes.plot(steps, history.get("d_acc_fake", []), label="D on fake")
    augment_p = [value for value in history.get("augment_p", []) if value == value]
    if augment_p:  # StyleGAN's adaptive augmentation probability, on the same 0-1 scale
        accuracy_axes.plot(steps[-len(augment_p):], augment_p, color="black", linestyle=":", label="augment p")
    accuracy_axes.set_ylim(-0.02, 1.02)
    accuracy_axes.set_xlabel("step")
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.set_title("Discriminator accuracy")
    accuracy_axes.legend(loc="lower right")
    if not steps:
        loss_axes.set_ylim(0, 2)
        loss_axes.text(0.5, 0.5, "curves appear after\nthe first logged steps", transform=loss_axes.transAxes,
                       ha="center", va="center", color="grey")
    if ssim_axes is not None:
        _plot_ssim(ssim_axes, steps, history.get("nn_ssim", []))
    total_steps = total_steps or (steps[-1] if steps else None)  # all panels share one step axis
    if total_steps:
        for axes in (loss_axes, accuracy_axes, ssim_axes):
            if axes is not None:
                axes.set_xlim(0, total_steps)


def _plot_ssim(axes, steps, values) -> None:
    measured = [(step, value) for step, value in zip(steps, values) if value == value]  # drop NaN
    if measured:
        axes.plot(*zip(*measured), marker=".", label="median best match")
    axes.axhline(COURSE_SSIM_BAR, color="grey", linestyle="--", linewidth=1, label=f"course bar {COURSE_SSIM_BAR}")
    axes.set_ylim(0, 1)
    axes.set_xlabel("step")
    axes.set_ylabel("SSIM")
    axes.set_title("Samples vs training set" if measured else "SSIM (not measured yet)")
    axes.legend(loc="upper left")  # early values sit low, where a lower legend hides them


def history_figure(history: dict[str, list[float]], figure: Figure | None = None) -> Figure:
    """Three panels: G and D losses, D accuracy on real and on fake, best-match SSIM."""
    figure = figure or Figure(figsize=(14, 3.6), layout="constrained")
    figure.clear()
    _plot_curves(history, *figure.subplots(1, 3))
    return figure


def save_history_plot(history_csv, out_png) -> Path:
    figure = history_figure(read_history(history_csv))
    figure.savefig(out_png, dpi=100)
    return Path(out_png)


def progress_figure(samples, history: dict[str, list[float]], figure: Figure | None = None, step: int = 0,
                    total_steps: int | None = None) -> Figure:
    """One figure for live training: the fixed-latent sample grid (at ``step``) beside the curves."""
    import data_utils

    figure = figure or Figure(figsize=(17, 4), layout="constrained")
    figure.clear()
    grid_axes, *curve_axes = figure.subplots(1, 4, width_ratios=(1.1, 1, 1, 1))
    grid_axes.imshow(data_utils.image_grid(samples), cmap="gray", vmin=0, vmax=255)
    grid_axes.set_axis_off()
    grid_axes.set_title(f"samples at step {step}" + (" (untrained)" if step == 0 else ""))
    _plot_curves(history, *curve_axes, total_steps=total_steps)
    return figure


BACKGROUND_LEVEL = -0.9  # pixels at or below this (in [-1, 1]) are the black background around the brain
MOSTLY_BACKGROUND = 0.25  # a slice whose brain covers less than this share of the image


def brain_fraction(image) -> float:
    """Share of an image's pixels that are brain rather than black background."""
    return float(np.mean(np.asarray(image) > BACKGROUND_LEVEL))


def matches_figure(queries, matches, scores, labels=None, figure: Figure | None = None) -> Figure:
    """Generated images (top row) above their most similar real images (bottom row), with SSIM.

    ``queries`` and ``matches``: (K, S, S[, 1]) in [-1, 1]; ``scores``: (K,);
    ``labels``: K titles for the generated images (e.g. "worst", "median").
    Each real match shows how much of it is brain: SSIM over a slice that is
    mostly black background is high because the backgrounds agree, not the
    anatomy, and such matches are marked.
    """
    count = len(queries)
    figure = figure or Figure(figsize=(2.4 * count, 5.4), layout="constrained")
    figure.clear()
    axes = figure.subplots(2, count, squeeze=False)
    background_dominated = False
    for column in range(count):
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(np.squeeze(queries[column]), cmap="gray", vmin=-1, vmax=1)
        bottom.imshow(np.squeeze(matches[column]), cmap="gray", vmin=-1, vmax=1)
        top.set_title(labels[column] if labels is not None else f"generated {column}", fontsize=9)
        brain = brain_fraction(matches[column])
        mostly_background = brain < MOSTLY_BACKGROUND
        background_dominated |= mostly_background
        bottom.set_title(f"best real match\nSSIM {float(scores[column]):.3f}, brain {100 * brain:.0f} %"
                         + ("\nmostly background!" if mostly_background else ""), fontsize=9,
                         color="firebrick" if mostly_background else "black")
        top.set_axis_off()
        bottom.set_axis_off()
    if background_dominated:
        figure.suptitle("Marked matches are mostly black background: their SSIM is high because the backgrounds "
                        "agree, not the anatomy", fontsize=9, color="firebrick")
    return figure


def levels_figure(histograms: dict, levels_per_band: int, figure: Figure | None = None) -> Figure:
    """Side-by-side bars: each set's share of slices per band of slice levels (bottom of the brain first)."""
    figure = figure or Figure(figsize=(7, 3.2), layout="constrained")
    figure.clear()
    axes = figure.subplots()
    width = 0.8 / max(1, len(histograms))
    for index, (name, shares) in enumerate(histograms.items()):
        positions = np.arange(len(shares)) + (index - (len(histograms) - 1) / 2) * width
        axes.bar(positions, shares, width=width, label=name)
    bands = len(next(iter(histograms.values()))) if histograms else 0
    axes.set_xticks(range(bands), [f"{b * levels_per_band}-{(b + 1) * levels_per_band - 1}" for b in range(bands)])
    axes.set_xlabel("slice level (bottom to top)")
    axes.set_ylabel("share of slices")
    axes.set_title("Which slice levels the samples look like")
    axes.legend(fontsize=8)
    return figure


def images_row(images, titles, figure: Figure | None = None) -> Figure:
    """Images in [-1, 1] side by side, each with its title."""
    figure = figure or Figure(figsize=(2.4 * len(images), 2.9), layout="constrained")
    figure.clear()
    for axes, image, title in zip(figure.subplots(1, len(images), squeeze=False)[0], images, titles):
        axes.imshow(np.squeeze(image), cmap="gray", vmin=-1, vmax=1)
        axes.set_title(title, fontsize=8)
        axes.set_axis_off()
    return figure


def save_gif(frame_paths, out, max_width: int = 768, frame_ms: int = 300) -> Path:
    """An animated GIF of image files (a run's sample grids), in the given order.

    Frames keep 32 gray levels: noisy early grids defeat GIF's compression,
    and 32 levels halve the file with no visible loss at this size.
    """
    from PIL import Image

    frames = []
    for path in frame_paths:
        with Image.open(path) as frame:
            frame = frame.convert("L").point(lambda value: value // 8 * 8)
            if frame.width > max_width:
                frame = frame.resize((max_width, round(frame.height * max_width / frame.width)), Image.BILINEAR)
            frames.append(frame)
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 5]  # linger on the last grid
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return Path(out)
