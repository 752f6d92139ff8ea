"""Widgets and live displays for driver.ipynb, kept here so the notebook's cells stay short.

Every widget starts from a plain variable of the notebook's parameters cell
and ``SettingsForm.values()`` reads them back, so a headless run (nbval,
papermill) that never touches a widget uses exactly the parameters.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

import data_utils
import plots

# Parameter name -> (label, widget kind, options).  Kinds: choice, int, optional-int, optional-float, bool,
# text.  Optional numbers are empty (None: the default) or a value; 0 is a value for beta1.
FIELDS = {
    "DATA_DIR": ("OASIS folder (empty: demo cohort)", "text", None),
    "ARCH": ("architecture", "choice", ("dcgan", "dcgan-classic", "stylegan")),
    "IMAGE_SIZE": ("resolution", "choice", (32, 64, 128, 256)),
    "EPOCHS": ("epochs (0: use steps)", "optional-int", None),
    "STEPS": ("steps (0: use epochs)", "optional-int", None),
    "BATCH_SIZE": ("batch size", "int", None),
    "G_LEARNING_RATE": ("G learning rate (empty: default)", "optional-float", None),
    "D_LEARNING_RATE": ("D learning rate (empty: default)", "optional-float", None),
    "BETA_1": ("Adam beta1 (empty: default)", "optional-float", None),
    "LATENT_DIM": ("latent size (0: default)", "optional-int", None),
    "FLIP": ("left-right flips", "bool", None),
    "RUN_DIR": ("run folder (empty: new)", "text", None),
    "RESUME": ("resume that run", "bool", None),
}


class SettingsForm:
    """A form over the notebook's parameters; ``values()`` returns them as edited."""

    def __init__(self, namespace: dict):
        import ipywidgets as widgets

        self._widgets = {}
        for name, (label, kind, options) in FIELDS.items():
            value = namespace[name]
            style = {"description_width": "190px"}
            layout = widgets.Layout(width="420px")
            if kind == "choice":
                widget = widgets.Dropdown(options=options, value=value, description=label, style=style, layout=layout)
            elif kind in ("int", "optional-int"):
                widget = widgets.IntText(value=value or 0, description=label, style=style, layout=layout)
            elif kind == "bool":
                widget = widgets.Checkbox(value=bool(value), description=label, style=style, layout=layout)
            else:
                widget = widgets.Text(value="" if value is None else str(value), description=label, style=style,
                                      layout=layout)
            self._widgets[name] = widget
        self.widget = widgets.VBox(list(self._widgets.values()))

    def values(self) -> dict:
        """The current settings, in the parameters' own types (None where 0 or empty means "unset")."""
        values = {}
        for name, (_, kind, _) in FIELDS.items():
            value = self._widgets[name].value
            if kind == "optional-int":
                value = value or None
            elif kind in ("text", "optional-float"):
                value = value.strip() or None
            if kind == "optional-float" and value is not None:
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{FIELDS[name][0]} ({name}): {value!r} is not a number; "
                                     "leave it empty for the architecture's default") from None
            values[name] = value
        return values

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def make_config(settings: dict, seed: int, splits, demo_root: str, demo_subjects: int, precision: str = "float32",
                devices: int = 1):
    """The TrainConfig for the settings; EPOCHS, when set, wins over STEPS."""
    from config import TrainConfig

    epochs = settings["EPOCHS"]
    return TrainConfig(
        data_dir=settings["DATA_DIR"], demo=settings["DATA_DIR"] is None, splits=tuple(splits), demo_root=demo_root,
        demo_subjects=demo_subjects,
        arch=settings["ARCH"], image_size=settings["IMAGE_SIZE"], latent_dim=settings["LATENT_DIM"],
        epochs=epochs, steps=None if epochs else settings["STEPS"], batch_size=settings["BATCH_SIZE"],
        g_learning_rate=settings["G_LEARNING_RATE"], d_learning_rate=settings["D_LEARNING_RATE"],
        beta_1=settings["BETA_1"],
        flip=settings["FLIP"], seed=seed, sample_every=50, checkpoint_every=50, ssim_every=50,
        precision=precision, devices=devices,
    ).validate()


def new_run_dir(config) -> Path:
    """The next free ``runs/notebook-<arch>-<size>px-NNN``."""
    from config import next_run_dir

    return next_run_dir(config.arch, config.image_size, prefix="notebook-")


def describe_config(config) -> str:
    length = f"{config.epochs} epochs" if config.epochs else f"{config.steps} steps"
    source = ("demo cohort" if config.demo else f"OASIS folder {config.data_dir}") + f" ({'+'.join(config.splits)})"
    return (f"{config.arch} at {config.image_size}x{config.image_size}, latent {config.resolved_latent_dim}, "
            f"batch {config.batch_size}, {length}; G lr {config.g_learning_rate:g}, D lr {config.d_learning_rate:g}, "
            f"beta1 {config.beta_1:g}; flips {'on' if config.flip else 'off'}; seed {config.seed}; {config.precision}"
            f"{'' if config.devices == 1 else f' on {config.devices} devices'}; data: {source}")


def describe_networks(trainer) -> list[str]:
    """One line per network: its input and output shapes and parameter count."""
    import modelscript

    latent_dim, image_size = modelscript.generator_io(trainer.generator)
    shapes = [((None, latent_dim), (None, image_size, image_size, 1)),
              ((None, image_size, image_size, 1), (None, 1))]
    lines = [f"{model.name}: input {inputs} -> output {outputs}, {model.count_params():,} parameters"
             for model, (inputs, outputs) in zip((trainer.generator, trainer.discriminator), shapes)]
    if trainer.generator_ema is not None:
        lines.append(f"plus an exponential moving average of the generator ({trainer.generator_ema.count_params():,} "
                     "parameters), which draws every sample")
    return lines


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
        self.history_path = trainer.run_dir / "history.csv"
        self.handle = display(self._figure(), display_id=True)
        self.bar = tqdm(total=trainer.total_steps, initial=trainer.step, unit="step",
                        desc=f"{trainer.config.arch} {trainer.config.image_size}px")

    def _figure(self):
        return png_image(_figure_pixels(plots.progress_figure(self.trainer.sample(),
                                                              plots.read_history(self.history_path))))

    def update(self, row: dict | None) -> None:
        self.bar.update(self.trainer.step - self.bar.n)
        if row is not None:
            self.bar.set_postfix(g=f"{row['g_loss']:.3f}", d=f"{row['d_loss']:.3f}", epoch=row["epoch"])
        if self.trainer.step % self.redraw_every == 0 or self.trainer.done:
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
            f"#{rank + 1} SSIM {score:.3f}\n{Path(names[i]).name if names else f'image {i}'}"
            for rank, (i, score) in enumerate(zip(indices[sample], scores[sample]))]
        show_figure(plots.images_row(images, titles))

    return widgets.VBox([slider, widgets.interactive_output(draw, {"sample": slider})])


def machine_summary() -> str:
    """One line: the accelerator the Keras backend sees, or the CPU-only note."""
    import keras

    import training

    step_engine = training.engine()
    found = step_engine.accelerators()
    if found:
        return f"GPU: {step_engine.describe_devices()[0].split(', ')[0]} ({len(found)} visible, {keras.backend.backend()})"
    return f"CPU only ({os.cpu_count()} cores): using the small demo settings (64x64, a few minutes)"
