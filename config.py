"""The one configuration object of a training run.

A ``TrainConfig`` is filled from the CLI flags (train.py) or the notebook's
widgets, validated once (``validate`` raises ConfigError naming the field),
and saved as ``config.json`` in the run folder; resume and generate read it
back from there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from modelscript import ARCHITECTURES, IMAGE_SIZES, default_latent_dim

CONFIG_FILE = "config.json"
# Optimiser settings left as None take the architecture's own: the DCGAN seeds'
# (G 2e-4, D 1e-4, beta1 0.5), or StyleGAN2's (2e-3 for both, betas 0 and 0.99).
# Equalised learning rates are why StyleGAN can use a 10x higher rate.
OPTIMIZER_DEFAULTS = {
    "dcgan": {"g_learning_rate": 2e-4, "d_learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.999},
    "dcgan-classic": {"g_learning_rate": 2e-4, "d_learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.999},
    "stylegan": {"g_learning_rate": 2e-3, "d_learning_rate": 2e-3, "beta_1": 0.0, "beta_2": 0.99},
}
AUGMENT_MODES = ("ada", "off")
# float32, or Keras mixed precision: float16 compute with loss scaling (GPUs with tensor
# cores), bfloat16 compute (recent GPUs and TPUs, and CPUs with AVX512-BF16/AMX).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def next_run_dir(arch: str, image_size: int, root: Path = Path("runs"), prefix: str = "") -> Path:
    """The first free ``root/<prefix><arch>-<size>px-NNN``."""
    index = 1
    while (root / f"{prefix}{arch}-{image_size}px-{index:03d}").exists():
        index += 1
    return root / f"{prefix}{arch}-{image_size}px-{index:03d}"


class ConfigError(ValueError):
    """A configuration value that cannot be used; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class TrainConfig:
    # --- data
    data_dir: str | None = None  # folder holding keras_png_slices_*; None with demo=True
    demo: bool = False  # build (once) and use the demo cohort instead of data_dir
    demo_root: str = "data/demo"  # where the demo cohort is written
    demo_subjects: int = 48  # demo cohort size (32 slices each; OASIS has 354 subjects)
    splits: tuple = ("train", "validate", "test")  # seed 000 trained on all three
    limit: int | None = None  # use only the first N images (quick trials)
    # --- model
    arch: str = "dcgan"  # "dcgan" (seed 000), "dcgan-classic" (Radford et al.), "stylegan" (StyleGAN2)
    image_size: int = 64  # 64 trains in minutes on a CPU; 256 is OASIS's size (GPU)
    latent_dim: int | None = None  # None: the architecture's default (dcgan 256, classic 100, stylegan 512)
    # --- optimisation
    batch_size: int = 32  # seeds used 10-64; drop_remainder keeps shapes fixed
    epochs: int | None = None  # passes over the data; or give steps instead
    steps: int | None = None  # total generator updates; overrides epochs
    # None below: the architecture's default (OPTIMIZER_DEFAULTS), filled in by validate()
    g_learning_rate: float | None = None  # dcgans: G 2e-4 (seeds 000/001); stylegan 2e-3
    d_learning_rate: float | None = None  # dcgans: D 1e-4 so D does not run away; stylegan 2e-3
    beta_1: float | None = None  # dcgans 0.5 (Radford et al.; Adam's 0.9 is less stable); stylegan 0
    beta_2: float | None = None  # dcgans 0.999; stylegan 0.99
    flip: bool = True  # random left-right flips (seed 002): hemispheres are near-symmetric
    # --- stylegan only (the DCGANs ignore these)
    r1_gamma: float | None = None  # R1 penalty weight; None: 0.0002 * size^2 / batch (StyleGAN2-ADA's rule)
    r1_every: int = 16  # lazy regularisation: R1 on every 16th step, weighted x16
    style_mixing: float = 0.9  # probability that a training batch mixes two latents' styles
    ema_kimg: float | None = None  # half-life of the generator EMA in thousands of images; None: batch * 10 / 32
    augment: str = "ada"  # "ada": adaptive discriminator augmentation; "off"
    ada_target: float = 0.6  # ADA raises p while E[sign(D(real))] is above this
    ada_kimg: float = 100.0  # thousands of images over which p can go from 0 to 1 (ADA paper: 500)
    # --- bookkeeping
    seed: int = 0  # one seed makes a CPU run reproducible
    log_every: int = 10  # steps per history.csv row (losses averaged over them)
    sample_every: int = 100  # steps per sample grid from the fixed latents
    checkpoint_every: int = 100  # steps per checkpoint (also at the end and on Ctrl-C)
    keep_checkpoints: int = 3  # how many recent checkpoints to keep
    sample_grid: int = 36  # images in each sample grid (a square number looks best)
    deterministic: bool = False  # enable TF op determinism (bit-exact CPU reruns, slower on GPU)
    jit_compile: bool = False  # compile the step with XLA (slower on the CPU: benchmarks/bench_train.py)
    # --- speed and scale (none of these change what a run computes, up to rounding)
    precision: str = "float32"  # or "mixed_float16" / "mixed_bfloat16" (PRECISIONS); weights stay float32
    devices: int = 1  # data-parallel replicas on this machine (GPUs, else logical CPUs); -1: all
    ssim_every: int = 100  # steps per best-match SSIM of the sample grid in history.csv; 0 turns it off
    ssim_references: int = 256  # fixed random training images that SSIM is measured against
    extra: dict = field(default_factory=dict)  # free-form notes kept with the run

    @property
    def resolved_latent_dim(self) -> int:
        return self.latent_dim if self.latent_dim is not None else default_latent_dim(self.arch)

    def optimizer_settings(self) -> dict:
        """Learning rates and Adam betas, the architecture's defaults filling the unset ones."""
        defaults = OPTIMIZER_DEFAULTS.get(self.arch, OPTIMIZER_DEFAULTS["dcgan"])
        return {name: default if getattr(self, name) is None else getattr(self, name)
                for name, default in defaults.items()}

    @property
    def resolved_r1_gamma(self) -> float:
        """R1 weight: StyleGAN2-ADA's heuristic 0.0002 * size^2 / batch unless set."""
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * self.image_size**2 / self.batch_size

    @property
    def resolved_ema_kimg(self) -> float:
        """Generator EMA half-life in thousands of images: StyleGAN2-ADA's batch * 10 / 32 unless set."""
        return self.ema_kimg if self.ema_kimg is not None else self.batch_size * 10 / 32

    def validate(self) -> "TrainConfig":
        """Check every field; raise ConfigError naming the first bad one."""

        def positive_int(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")

        def unit_interval(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(name, f"must be a number in [0, 1), got {value!r}")

        if self.arch not in ARCHITECTURES:
            raise ConfigError("arch", f"must be one of {ARCHITECTURES}, got {self.arch!r}")
        for name, value in self.optimizer_settings().items():
            setattr(self, name, value)
        if self.image_size not in IMAGE_SIZES:
            raise ConfigError("image_size", f"must be one of {IMAGE_SIZES}, got {self.image_size!r}")
        if not self.demo and not self.data_dir:
            raise ConfigError("data_dir", "give a data folder, or use the demo cohort (demo=True / --demo)")
        if self.demo and self.data_dir:
            raise ConfigError("data_dir", "give either a data folder or demo=True (--demo), not both")
        for name in ("batch_size", "demo_subjects", "log_every", "sample_every", "checkpoint_every",
                     "keep_checkpoints", "sample_grid"):
            positive_int(name)
        for name in ("latent_dim", "epochs", "steps", "limit"):
            positive_int(name, allow_none=True)
        positive_int("ssim_references")
        if isinstance(self.ssim_every, bool) or not isinstance(self.ssim_every, int) or self.ssim_every < 0:
            raise ConfigError("ssim_every", f"must be a non-negative integer (0: off), got {self.ssim_every!r}")
        if self.epochs is None and self.steps is None:
            raise ConfigError("epochs", "give the training length as epochs or steps")
        if self.demo_subjects < 3:
            raise ConfigError("demo_subjects", f"must be at least 3 (one subject per split), got {self.demo_subjects}")
        for name in ("g_learning_rate", "d_learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise ConfigError(name, f"must be a number in (0, 1), got {value!r}")
        unit_interval("beta_1")
        unit_interval("beta_2")
        positive_int("r1_every")
        for name, zero_ok in (("r1_gamma", True), ("ema_kimg", False), ("ada_kimg", False)):
            value = getattr(self, name)
            if value is None and name != "ada_kimg":
                continue
            number = not isinstance(value, bool) and isinstance(value, (int, float))
            if not number or not (value >= 0 if zero_ok else value > 0):
                kind = "non-negative" if zero_ok else "positive"
                raise ConfigError(name, f"must be a {kind} number, got {value!r}")
        for name in ("style_mixing", "ada_target"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"must be a number in [0, 1], got {value!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.devices, bool) or not isinstance(self.devices, int) or not (
                self.devices >= 1 or self.devices == -1):
            raise ConfigError("devices", f"must be a positive integer or -1 (all), got {self.devices!r}")
        if self.augment not in AUGMENT_MODES:
            raise ConfigError("augment", f"must be one of {AUGMENT_MODES}, got {self.augment!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError("seed", f"must be a non-negative integer, got {self.seed!r}")
        splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)
        if not splits or any(split not in ("train", "validate", "test") for split in splits):
            raise ConfigError("splits", f"must be a non-empty subset of ('train', 'validate', 'test'), got {self.splits!r}")
        self.splits = splits
        return self

    def total_steps(self, n_images: int) -> int:
        """Generator updates in the whole run, from steps or from epochs."""
        if self.steps is not None:
            return self.steps
        return self.epochs * self.steps_per_epoch(n_images)

    def steps_per_epoch(self, n_images: int) -> int:
        if n_images < self.batch_size:
            raise ConfigError(
                "batch_size", f"{self.batch_size} is larger than the data set ({n_images} images); lower it"
            )
        return n_images // self.batch_size

    # --- persistence

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["splits"] = list(self.splits)
        return values

    def save(self, run_dir) -> Path:
        path = Path(run_dir) / CONFIG_FILE
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        temporary.replace(path)
        return path

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"is not a setting of this version (known: {sorted(known)})")
        values = dict(values)
        if "splits" in values:
            values["splits"] = tuple(values["splits"])
        return cls(**values)

    @classmethod
    def load(cls, run_dir) -> "TrainConfig":
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {run_dir} is not a run folder made by train.py")
        try:
            values = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError("config.json", f"{path} is not valid JSON ({exc})") from exc
        return cls.from_dict(values)
