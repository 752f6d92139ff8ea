"""Widgets and live displays for driver.ipynb, kept here so the notebook's cells stay short.

Every widget starts from a plain variable of the notebook's parameters cell
and ``SettingsForm.values()`` reads them back, so a headless run (nbval,
papermill) that never touches a widget uses exactly the parameters.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import numpy as np

import data_utils
from oasis_gan import config, plots

# Under pytest (conftest.py sets it) the notebook runs with its small reference settings on any machine, and
# nbval compares its outputs with REFERENCE_NOTEBOOK's, which a user's own runs and saves never touch.
REFERENCE_RUN_VARIABLE = "OASIS_GAN_REFERENCE_RUN"
REFERENCE_NOTEBOOK = Path("tests") / "reference" / "driver.ipynb"


# What the 40-step reference run's SSIM report must show (evaluate.band_lines): it is far from real yet, so
# realism and recall near 0 (about 0.01 and -0.001 on the demo cohort: SSIM can be below 0, and so can a
# median of best matches), where a measure turned upside down reads 100 or -770; no near-copies; and real
# unseen slices matching the training set as real slices do.  Wide, so honest variation passes.
REFERENCE_BANDS = {"realism": (-0.5, 0.5), "recall": (-0.5, 0.5), "memorized_fraction": (None, 0.0),
                   "real_test_nn_ssim_median": (0.3, 0.95)}


def reference_run() -> bool:
    """True when the notebook runs as pytest's regression check (the parameters cell then takes the small settings)."""
    return os.environ.get(REFERENCE_RUN_VARIABLE) == "1"


def reference_code_cells(notebook_path, reference_path) -> list:
    """The reference notebook's code cells, after checking they have the notebook's sources cell for cell."""
    import nbformat

    current = [cell for cell in nbformat.read(notebook_path, as_version=4).cells if cell.cell_type == "code"]
    reference = [cell for cell in nbformat.read(reference_path, as_version=4).cells if cell.cell_type == "code"]
    if len(current) != len(reference) or any(a.source != b.source for a, b in zip(current, reference)):
        raise ValueError(f"{reference_path} does not match {notebook_path}'s code cells; rerun "
                         "`python tools/store_notebook_outputs.py` after changing the notebook")
    return reference


# The notebook's own settings (not a training run's: those are TrainConfig's, declared in config.py):
# variable -> (type, widget label or None for a plain variable).
NOTEBOOK_ONLY = {
    "RUN_DIR": (str, "run folder (blank: new)"),
    "RESUME": (bool, "resume that run"),
    "N_SEARCH": (int, None),  # generated slices the SSIM search checks
    "TOP_K": (int, None),  # matches kept for each
    "SEARCH_TEST": (bool, None),  # also search the test split
    "WALK_STEPS": (int, None),  # images on the latent-space walk
}
# Where the notebook's run differs from train.py's on purpose (the rest, and what depends on the machine,
# is decided as for train.py: oasis_gan/machine.py):
# * its parameters cell trains on the train and validate splits (train.py: all three, as seed 000, the
#   earlier project, did), so that the test split stays unseen for the SSIM search of step 7;
# * it draws samples, measures SSIM and saves a checkpoint every 50 steps (train.py: 100), so the live
#   view moves in a short run; these are not notebook variables, so they are set here.
NOTEBOOK_CHOICES = {"sample_every": 50, "checkpoint_every": 50, "ssim_every": 50}
LABEL_WIDTH, WIDGET_WIDTH = "210px", "460px"


def notebook_variables() -> list[str]:
    """Every variable the parameters cell must define: TrainConfig's notebook settings, then the notebook's own."""
    return list(config.notebook_settings()) + list(NOTEBOOK_ONLY)


def _widget_specs() -> dict[str, tuple]:
    """Variable -> (type, label, choices, optional) for every setting shown as a widget."""
    specs = {}
    for name, item in config.notebook_settings().items():
        meta = item.metadata
        if meta["widget"]:
            specs[name] = (meta["type"], meta["widget"], meta["choices"], item.default is None)
    for name, (kind, label) in NOTEBOOK_ONLY.items():
        if label:
            specs[name] = (kind, label, None, kind is str)
    return specs


class SettingsForm:
    """A form over the notebook's parameters; ``values()`` returns them as edited."""

    def __init__(self, namespace: dict):
        import ipywidgets as widgets

        self._specs = _widget_specs()
        self._widgets = {}
        for name, (kind, label, choices, _) in self._specs.items():
            value = namespace[name]
            options = {"description": label, "style": {"description_width": LABEL_WIDTH},
                       "layout": widgets.Layout(width=WIDGET_WIDTH)}
            if choices:
                widget = widgets.Dropdown(options=choices, value=value, **options)
            elif kind is bool:
                widget = widgets.Checkbox(value=bool(value), indent=False, **options)
            elif kind is int:
                widget = widgets.IntText(value=value or 0, **options)
            else:
                widget = widgets.Text(value="" if value is None else str(value), **options)
            self._widgets[name] = widget
        self.widget = widgets.VBox(list(self._widgets.values()))

    def values(self) -> dict:
        """The current settings, in the parameters' own types (None where 0 or blank means "unset")."""
        values = {}
        for name, (kind, label, choices, optional) in self._specs.items():
            value = self._widgets[name].value
            if kind is int and optional:
                value = value or None
            elif kind in (str, float) and not choices:
                value = value.strip() or None
            if kind is float and value is not None:
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{label} ({name}): {value!r} is not a number; "
                                     "leave it blank for the architecture's default") from None
            values[name] = value
        return values

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def parameters(namespace: dict) -> dict:
    """The notebook's settings as they stand in ``namespace`` (the parameters cell's variables)."""
    return {name: namespace[name] for name in notebook_variables()}


def machine_choices(demo: bool, accelerator: bool) -> dict:
    """The image size and batch size a machine with or without an accelerator gives a run
    (oasis_gan/machine.py, as train.py), shown as the parameters cell's values."""
    from oasis_gan import machine

    chosen = machine.machine_defaults({"demo": demo}, machine.Machine(accelerator, native_bfloat16=False))
    return {"image_size": chosen["image_size"],
            "batch_size": chosen.get("batch_size", config.TrainConfig.batch_size)}


def make_config(settings: dict) -> config.TrainConfig:
    """The validated, resolved TrainConfig of the notebook's settings; EPOCHS, when set, wins over STEPS.

    What the parameters cell leaves unset (None, or 0 in a widget) is decided by
    oasis_gan/machine.py, as for train.py: PRECISION "auto" and the length.
    """
    from oasis_gan import machine  # Keras: the parameters cell has loaded it already

    values = {item.name: settings[name] for name, item in config.notebook_settings().items()}
    values["demo"] = values["data_dir"] is None
    if values["epochs"]:
        values["steps"] = None
    return machine.resolve({**values, **NOTEBOOK_CHOICES}, machine.Machine.detect())


def new_run_dir(run_config: config.TrainConfig) -> Path:
    """The next free ``runs/notebook-<arch>-<size>px-NNN``."""
    from oasis_gan.runs.run_folder import next_run_dir

    return next_run_dir(run_config.arch, run_config.image_size, prefix="notebook-")


def describe_config(run_config: config.TrainConfig) -> str:
    """One line: the resolved settings a user checks before training."""
    c = run_config
    length = f"{c.epochs} epochs" if c.epochs else f"{c.steps} steps"
    source = ("demo cohort" if c.demo else f"OASIS folder {c.data_dir}") + f" ({'+'.join(c.splits)})"
    schedule = "" if c.lr_end >= 1 else f" (both falling from {c.lr_decay_start:.0%} of the steps to x{c.lr_end:g})"
    dropout = "" if not c.d_dropout else f"; D dropout {c.d_dropout:g}"
    return (f"{c.arch} at {c.image_size}x{c.image_size}, latent {c.latent_dim}, "
            f"batch {c.batch_size}, {length}; G lr {c.g_learning_rate:g}, D lr {c.d_learning_rate:g}{schedule}, "
            f"beta1 {c.beta_1:g}, beta2 {c.beta_2:g}{dropout}; flips {'on' if c.flip else 'off'}; seed {c.seed}; "
            f"{c.precision}"
            f"{'' if c.devices == 1 else f' on {c.devices} devices'}; data: {source}")


@contextlib.contextmanager
def native_stderr_silenced():
    """Hide what native libraries write straight to the process's stderr while inside.

    TensorFlow prints log lines (oneDNN, CUDA probing) from C++ at import,
    before its log-level setting applies; in a notebook each becomes a red
    box that looks like an error.  Python's own errors still show: they go
    through the notebook's stderr, not the process's file descriptor 2.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def enlarged(images: np.ndarray, minimum: int = 160) -> np.ndarray:
    """Images repeated pixel by pixel until at least ``minimum`` wide (small slices are hard to see)."""
    factor = max(1, -(-minimum // images.shape[2]))
    return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def png_image(pixels: np.ndarray):
    """An IPython Image of a uint8 array (its text form has no memory address, unlike PIL's)."""
    from IPython.display import Image as IPythonImage
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return IPythonImage(data=buffer.getvalue(), format="png")


def show_grid(images: np.ndarray, count: int = 16, columns: int = 8):
    """A grid of ``count`` images spread evenly through the set."""
    from IPython.display import display

    picked = images[:: max(1, len(images) // count)][:count]
    display(png_image(data_utils.image_grid(picked, columns=columns)))


class LiveView:
    """The sample grid (fixed latents) and the curves, redrawn in place, plus a progress bar."""

    def __init__(self, trainer, redraw_every: int | None = None):
        from IPython.display import display
        from tqdm.auto import tqdm

        self.trainer = trainer
        self.redraw_every = redraw_every or trainer.config.sample_every
        self.history_path = trainer.run.history_path
        self.handle = display(self._figure(), display_id=True)
        self.bar = tqdm(total=trainer.total_steps, initial=trainer.step, unit="step",
                        desc=f"{trainer.config.arch} {trainer.config.image_size}px")

    def _figure(self):
        return png_image(_figure_pixels(plots.progress_figure(
            self.trainer.sample(), plots.read_history(self.history_path), step=self.trainer.step,
            total_steps=self.trainer.total_steps)))

    def update(self, row: dict | None) -> None:
        self.bar.update(self.trainer.step - self.bar.n)
        if row is not None:
            self.bar.set_postfix(g=f"{row['g_loss']:.3f}", d=f"{row['d_loss']:.3f}", epoch=row["epoch"])
        early = row is not None and self.trainer.step < self.redraw_every  # the first curves show up at once
        if early or self.trainer.step % self.redraw_every == 0 or self.trainer.done:
            self.handle.update(self._figure())

    def close(self) -> None:
        self.handle.update(self._figure())
        self.bar.close()


def _figure_pixels(figure) -> np.ndarray:
    """A matplotlib Figure rendered to a uint8 RGB array (at 80 dpi: the notebook stores it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.set_dpi(80)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def show_figure(figure) -> None:
    """Display a matplotlib Figure as a PNG image."""
    from IPython.display import display

    display(png_image(_figure_pixels(figure)))


def match_browser(generated: np.ndarray, references: np.ndarray, indices: np.ndarray, scores: np.ndarray,
                  names: list | None = None):
    """A slider over the generated images; each shows beside its top-k matches and their SSIM."""
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=0, min=0, max=len(generated) - 1, description="sample")

    def draw(sample: int) -> None:
        images = [generated[sample]] + [references[i] for i in indices[sample]]
        titles = [f"generated {sample}"] + [
            f"#{rank + 1} SSIM {score:.3f}, brain {100 * plots.brain_fraction(references[i]):.0f} %\n"
            f"{Path(names[i]).name if names else f'image {i}'}"
            for rank, (i, score) in enumerate(zip(indices[sample], scores[sample]))]
        show_figure(plots.images_row(images, titles))

    return widgets.VBox([slider, widgets.interactive_output(draw, {"sample": slider})])


def machine_summary() -> str:
    """One line: the accelerator the Keras backend sees, or the CPU-only note."""
    import keras

    from oasis_gan import engines

    engine = engines.current()
    found = engine.accelerators()
    if found:
        return f"GPU: {engine.describe_devices()[0].split(', ')[0]} ({len(found)} visible, {keras.backend.backend()})"
    return f"CPU only ({os.cpu_count()} cores): using the demo settings (64x64, minutes, not hours)"
