"""The one configuration object of a training run, and the one declaration of every setting.

Each field of ``TrainConfig`` is declared once, with ``setting(...)``: its
default, its help text, the train.py flag that sets it, its choices, and the
variable of driver.ipynb's parameters cell (and widget) that shows it.
train.py builds its parser from these declarations (``add_arguments``) and
notebook_ui.py its widgets, so a new setting is one new field here.

A ``TrainConfig`` is validated once (``validate`` raises ConfigError naming
the field and changes nothing), then ``resolved()`` fills the settings left
to the architecture (latent size, learning rates, Adam betas, StyleGAN's R1
weight and EMA half-life): that resolved config is what a run folder saves
as config.json.

This module imports no TensorFlow, Keras or NumPy, so ``train.py --help``
and every flag error answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field

from oasis_gan.architectures import table

BACKENDS = ("tensorflow", "jax")  # the Keras backends a run trains on (KERAS_BACKEND; unset: tensorflow)
ARCHITECTURES = table.NAMES  # one entry each in architectures/table.py
IMAGE_SIZES = (32, 64, 128, 256)
SPLITS = ("train", "validate", "test")
AUGMENT_MODES = ("ada", "off")
EMA_RAMPUP = 0.05  # StyleGAN2-ADA's ramp of the EMA's half-life: every architecture's but those setting their own
# The image axis a flip mirrors (batches.FLIP_AXIS_INDEX): OASIS's slices lie with the head's front-back axis
# across the image, so "rows" (top and bottom swap) swaps the hemispheres; "columns" swaps front and back.
FLIP_AXES = ("rows", "columns")
OLD_RUNS_FLIP_AXIS = "columns"  # what a config.json written before flip_axis existed flipped (front and back)
# float32, or Keras mixed precision: float16 compute with loss scaling (GPUs with tensor
# cores), bfloat16 compute (recent GPUs and TPUs, and CPUs with AVX512-BF16/AMX).  "auto"
# (the default) is bfloat16 where the training device computes it natively, else float32
# (machine.precision_for); a run records what it resolved to.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# Training length when neither --epochs nor --steps is given: `--demo` alone must finish in
# under 10 minutes on 2 CPU cores, cohort build included, with the default architecture.
# dcgan-ada trains 2000 steps of 16 at 64x64 in bfloat16 in 5.7 to 7.6 minutes with the cohort
# build (343 s and 458 s measured on 2 Xeon cores with AMX, in a quiet and a busy hour; 556 s and
# 594 s on 2 AMD EPYC cores with AVX512-BF16, 64 and 60 images/s: at the edge; docs/results.md),
# where the CPU computes bfloat16 natively; float32 takes about 1.3x as long per step (measured for
# dcgan-plus on the Xeon; 1.5x for dcgan-ada on the EPYC), so 1600.  Until 2026-12-06 the length
# was 1250 and 1000, dcgan-plus's; other architectures take longer per step (dcgan-plus about
# 1.3x, stylegan about 4x): cap them with --minutes.
DEMO_LENGTH = {"steps": 1600, "bfloat16_steps": 2000, "batch_size": 16}
DATA_EPOCHS = 50
MAX_SEED = 2**32 - 1  # what every random generator here takes
MAX_LATENT_DIM = 8192  # 16x the largest architecture default; larger only fills memory


def backend_problem() -> str | None:
    """Why KERAS_BACKEND cannot train here (None: it can); checked before Keras is imported."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend and backend not in BACKENDS:
        return (f"KERAS_BACKEND={backend!r} is not supported: this project runs on "
                f"{' or '.join(BACKENDS)} (unset means tensorflow)")
    return None


def available_memory() -> int:
    """Bytes of memory this machine can give a new allocation now (MemAvailable on Linux, else all of it)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(flag: str, needed_bytes: float, what: str) -> None:
    """Raise ValueError naming ``flag`` when ``what`` needs more memory than is available, before any of it is made."""
    available = available_memory()
    if needed_bytes > 0.8 * available:
        raise ValueError(f"{flag}: {what} needs about {needed_bytes / 2**30:,.1f} GiB of memory, and this machine has "
                         f"{available / 2**30:,.1f} GiB available; ask for less")


def r1_gamma_rule(image_size: int, batch_size: int) -> float:
    """StyleGAN2-ADA's rule of thumb for the R1 weight: 0.0002 * size^2 / batch."""
    return 0.0002 * image_size**2 / batch_size


def ema_kimg_rule(batch_size: int) -> float:
    """StyleGAN2-ADA's generator-EMA half-life, in thousands of images: batch * 10 / 32."""
    return batch_size * 10 / 32


class ConfigError(ValueError):
    """A configuration value that cannot be used: ``field`` names it, ``reason`` says why."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def setting(default=None, help="", *, flag=None, type=None, choices=None, action=None, group=None,
            exclusive=None, metavar=None, notebook=None, widget=None, default_factory=None):
    """A dataclass field with its declaration: flag, help, choices, notebook variable and widget label.

    ``type`` is the value's type (int, float, str, bool); ``action`` is
    "store_true", "store_false" or "append" (several values after one flag);
    ``exclusive`` names a group of flags of which one may be given;
    ``notebook`` is the parameters cell's variable, and ``widget`` the label
    of its widget (no label: a plain variable only).
    """
    metadata = {"help": help, "flag": flag, "type": type, "choices": choices, "action": action, "group": group,
                "exclusive": exclusive, "metavar": metavar, "notebook": notebook, "widget": widget}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _arch_default_help(name: str) -> str:
    """A setting's defaults by architecture, for its help: "dcgan-ada 256, dcgan-plus 100, ..."."""
    return ", ".join(f"{entry.name} {entry.defaults[name]:g}" for entry in table.TABLE if name in entry.defaults)


def check_model(arch, image_size) -> None:
    """ConfigError (a ValueError) naming ``arch`` or ``image_size`` when either is not one of the choices."""
    if arch not in ARCHITECTURES:
        raise ConfigError("arch", f"must be one of {ARCHITECTURES}, got {arch!r}")
    if image_size not in IMAGE_SIZES:
        raise ConfigError("image_size", f"must be one of {IMAGE_SIZES}, got {image_size!r}")


@dataclass
class TrainConfig:
    # --- data
    data_dir: str | None = setting(
        None, "folder holding keras_png_slices_* (real OASIS)", flag="--data", type=str, metavar="DIR",
        exclusive="source", notebook="DATA_DIR", widget="OASIS folder (blank: demo)")
    demo: bool = setting(
        False, "train on the demo cohort (built once from the MNI152 template)", flag="--demo", type=bool,
        action="store_true", exclusive="source")
    demo_root: str = setting("data/demo", "where the demo cohort is written", flag="--demo-root", type=str,
                             notebook="DEMO_ROOT")
    demo_subjects: int = setting(48, "demo cohort size, 32 slices each (OASIS has 354 subjects)",
                                 flag="--demo-subjects", type=int, notebook="DEMO_SUBJECTS")
    demo_seed: int = setting(0, "which demo cohort: its subjects and their split into train, validate and test "
                             "(--seed seeds the training); default 0, the cohort every figure in docs/ was measured on",
                             flag="--demo-seed", type=int, notebook="DEMO_SEED")
    splits: tuple = setting(("train", "validate", "test"),
                            "splits to train on (the earlier project seed 000 trained on all three)",
                            flag="--splits", type=str, choices=SPLITS, action="append", notebook="SPLITS")
    limit: int | None = setting(None, "use only the first N images (quick trials)", flag="--limit", type=int)
    # --- model
    arch: str = setting(table.TABLE[0].name, table.help_line(),
                        flag="--arch", type=str, choices=ARCHITECTURES, notebook="ARCH", widget="architecture")
    image_size: int = setting(64, "image side; train.py's default is 256 with a GPU, 64 on the CPU",
                              flag="--image-size", type=int, choices=IMAGE_SIZES, notebook="IMAGE_SIZE",
                              widget="resolution")
    latent_dim: int | None = setting(None, f"latent size (default {_arch_default_help('latent_dim')})",
                                     flag="--latent-dim", type=int, notebook="LATENT_DIM",
                                     widget="latent size (0: default)")
    # --- optimisation
    batch_size: int = setting(32, "images per step; the last partial batch of an epoch is dropped",
                              flag="--batch-size", type=int, notebook="BATCH_SIZE", widget="batch size")
    epochs: int | None = setting(None, "passes over the data", flag="--epochs", type=int, exclusive="length",
                                 notebook="EPOCHS", widget="epochs (0: use steps)")
    steps: int | None = setting(
        None, f"generator updates (neither this nor --epochs: on a CPU, the demo's {DEMO_LENGTH['steps']} at batch "
              f"{DEMO_LENGTH['batch_size']}, "
              f"{DEMO_LENGTH['bfloat16_steps']} in bfloat16; "
              f"otherwise {DATA_EPOCHS} epochs)",
        flag="--steps", type=int, exclusive="length", notebook="STEPS", widget="steps (0: epochs, or the default)")
    minutes: float | None = setting(
        None, "also stop after this many minutes of training, counted over every session (a checkpoint is "
              "saved; --resume with a larger value goes on)", flag="--minutes", type=float, metavar="M")
    g_learning_rate: float | None = setting(
        None, f"generator learning rate (default {_arch_default_help('g_learning_rate')})", flag="--g-lr",
        type=float, notebook="G_LEARNING_RATE", widget="G learning rate (blank: default)")
    d_learning_rate: float | None = setting(
        None, f"discriminator learning rate (default {_arch_default_help('d_learning_rate')})", flag="--d-lr",
        type=float, notebook="D_LEARNING_RATE", widget="D learning rate (blank: default)")
    lr_end: float | None = setting(
        None, "both learning rates at the last step, as a share of --g-lr and --d-lr, reached linearly from "
              f"--lr-decay-start of the run, 1: constant rates (default {_arch_default_help('lr_end')})",
        flag="--lr-end", type=float)
    lr_decay_start: float | None = setting(
        None, "share of the run's steps after which the rates start falling towards --lr-end (default "
              f"{_arch_default_help('lr_decay_start')})", flag="--lr-decay-start", type=float)
    beta_1: float | None = setting(None, f"Adam beta1 (default {_arch_default_help('beta_1')})", flag="--beta1",
                                   type=float, notebook="BETA_1", widget="Adam beta1 (blank: default)")
    beta_2: float | None = setting(None, f"Adam beta2 (default {_arch_default_help('beta_2')})", flag="--beta2",
                                   type=float)
    d_dropout: float | None = setting(
        None, "dropout after each of the discriminator's layers, 0: none (default "
              f"{_arch_default_help('d_dropout')}; the other architectures' discriminators have no dropout)",
        flag="--d-dropout", type=float)
    flip: bool = setting(True, "no random left-right flips (the earlier project seed 002 flipped: hemispheres are "
                               "near-symmetric)",
                         flag="--no-flip", type=bool, action="store_false", notebook="FLIP",
                         widget="left-right flips")
    flip_axis: str = setting(
        "rows", "the image axis a flip mirrors: rows (top and bottom swap; on OASIS's slices, whose front-back axis "
                "runs across the image, the left and right hemispheres) or columns (the image's left and right; "
                "on OASIS, front and back: runs before 2026-12-07 flipped so). Default rows",
        flag="--flip-axis", type=str, choices=FLIP_AXES)
    # --- regularisers: any architecture (dcgan-ada, dcgan-plus and stylegan have all three unless set to 0 / off)
    r1_gamma: float | None = setting(
        None, "R1 penalty weight, 0: off (default: dcgan-ada, dcgan-plus and stylegan 0.0002 * size^2 / batch, the "
              "seeds' dcgans 0)", flag="--r1-gamma", type=float, group="regularisers")
    r1_every: int = setting(16, "steps between R1 penalties (lazy regularisation)", flag="--r1-every", type=int,
                            group="regularisers")
    ema_kimg: float | None = setting(
        None, "half-life of the generator's moving average (EMA), which then draws the samples, in thousands "
              "of images, 0: off (default: dcgan-ada, dcgan-plus and stylegan batch*10/32, the seeds' dcgans 0)",
        flag="--ema-kimg", type=float, group="regularisers")
    ema_rampup: float | None = setting(
        None, "the EMA's half-life is at most this share of the images seen so far, 0: no ramp (in a short run "
              f"it, not --ema-kimg, sets the half-life; default {_arch_default_help('ema_rampup')}, the others "
              f"{EMA_RAMPUP:g}, StyleGAN2-ADA's)", flag="--ema-rampup", type=float, group="regularisers")
    augment: str | None = setting(
        None, "adaptive discriminator augmentation (default: dcgan-ada, dcgan-plus and stylegan ada, the seeds' "
              "dcgans off)",
        flag="--augment", type=str, choices=AUGMENT_MODES, group="regularisers")
    ada_target: float = setting(0.6, "ADA raises p while E[sign(D(real))] is above this", flag="--ada-target",
                                type=float, group="regularisers")
    ada_kimg: float = setting(100.0, "thousands of images for p to go from 0 to 1 (ADA paper: 500)",
                              flag="--ada-kimg", type=float, group="regularisers")
    # --- architectures with styles only: stylegan (the others ignore these)
    style_mixing: float = setting(0.9, "probability that a batch mixes two latents' styles",
                                  flag="--style-mixing", type=float, group="styles")
    pl_weight: float = setting(2.0, "path-length penalty weight on G, every 4 steps, 0: off (StyleGAN2's 2)",
                               flag="--pl-weight", type=float, group="styles")
    # --- bookkeeping
    seed: int = setting(0, "one seed makes a CPU run reproducible (with --deterministic, bit for bit)",
                        flag="--seed", type=int, notebook="SEED")
    log_every: int = setting(10, "steps per history.csv row (losses averaged over them)", flag="--log-every",
                             type=int)
    sample_every: int = setting(100, "steps per sample grid from the fixed latents", flag="--sample-every",
                                type=int)
    checkpoint_every: int = setting(100, "steps per checkpoint (also at the end and on Ctrl-C)",
                                    flag="--checkpoint-every", type=int)
    keep_checkpoints: int = setting(3, "how many recent checkpoints to keep", flag="--keep-checkpoints", type=int)
    sample_grid: int = setting(36, "images in each sample grid (a square number looks best)",
                               flag="--sample-grid", type=int)
    deterministic: bool = setting(False, "deterministic kernels: bit-exact reruns (slower on a GPU)",
                                  flag="--deterministic", type=bool, action="store_true", notebook="DETERMINISTIC")
    jit_compile: bool = setting(False, "compile the TensorFlow step with XLA (for GPUs; slower on the CPU; "
                                       "not with the adaptive augmentation: add --augment off; "
                                       "the JAX engine always compiles with XLA)",
                                flag="--xla", type=bool, action="store_true")
    # --- speed and scale (none of these change what a run computes, up to rounding)
    precision: str = setting("auto", "compute precision; weights stay float32, mixed_float16 adds loss "
                                     "scaling; auto: mixed_bfloat16 where the device computes it natively "
                                     "(GPUs from A100/RTX 30xx on, CPUs with AVX512-BF16 or AMX), else float32",
                             flag="--precision", type=str, choices=PRECISIONS,
                             group="speed", notebook="PRECISION")
    devices: int = setting(1, "data-parallel replicas on this machine: GPUs, else logical CPUs (-1 or 'all': "
                              "every one)", flag="--devices", type=int, metavar="N|all", group="speed",
                           notebook="DEVICES")
    ssim_every: int = setting(100, "steps per best-match SSIM of the sample grid in history.csv (0: off)",
                              flag="--ssim-every", type=int)
    ssim_references: int = setting(256, "training images that SSIM is measured against",
                                   flag="--ssim-references", type=int)
    extra: dict = setting(help="free-form notes kept with the run", default_factory=dict)

    def __post_init__(self):
        if isinstance(self.splits, str):
            self.splits = (self.splits,)
        elif isinstance(self.splits, list):
            self.splits = tuple(self.splits)

    # --- defaults

    def resolved(self) -> "TrainConfig":
        """A copy with every setting left to the architecture filled in (its table entry, and the rules)."""
        entry = table.BY_NAME.get(self.arch)
        filled = {name: value for name, value in (entry.defaults if entry else {}).items()
                  if getattr(self, name) is None}
        regularised = entry is not None and entry.regularised
        if self.r1_gamma is None:
            filled["r1_gamma"] = r1_gamma_rule(self.image_size, self.batch_size) if regularised else 0.0
        if self.ema_kimg is None:
            filled["ema_kimg"] = ema_kimg_rule(self.batch_size) if regularised else 0.0
        if self.ema_rampup is None:
            filled.setdefault("ema_rampup", EMA_RAMPUP)  # the architecture's own, if it has one
        if self.augment is None:
            filled["augment"] = "ada" if regularised else "off"
        return dataclasses.replace(self, **filled)

    # --- checks

    def validate(self) -> "TrainConfig":
        """Check every field; raise ConfigError naming the first bad one.  Changes nothing."""
        check_model(self.arch, self.image_size)
        if not self.demo and not self.data_dir:
            raise ConfigError("data_dir", "give a data folder, or use the demo cohort (demo=True / --demo)")
        if self.demo and self.data_dir:
            raise ConfigError("data_dir", "give either a data folder or demo=True (--demo), not both")
        for name in ("batch_size", "demo_subjects", "log_every", "sample_every", "checkpoint_every",
                     "keep_checkpoints", "sample_grid", "ssim_references", "r1_every"):
            _check(self, name, _is_int, "a positive integer", lambda value: value >= 1)
        for name in ("latent_dim", "epochs", "steps", "limit"):
            _check(self, name, _is_int, "a positive integer", lambda value: value >= 1, optional=True)
        _check(self, "ssim_every", _is_int, "a non-negative integer (0: off)", lambda value: value >= 0)
        for name in ("seed", "demo_seed"):
            _check(self, name, _is_int, f"an integer from 0 to {MAX_SEED}", lambda value: 0 <= value <= MAX_SEED)
        _check(self, "latent_dim", _is_int, f"an integer from 1 to {MAX_LATENT_DIM}",
               lambda value: 1 <= value <= MAX_LATENT_DIM, optional=True)
        if self.epochs is None and self.steps is None:
            raise ConfigError("epochs", "give the training length as epochs or steps")
        if self.demo_subjects < 3:
            raise ConfigError("demo_subjects", f"must be at least 3 (one subject per split), got {self.demo_subjects}")
        for name in ("g_learning_rate", "d_learning_rate"):
            _check(self, name, _is_number, "a number in (0, 1)", lambda value: 0.0 < value < 1.0, optional=True)
        _check(self, "lr_end", _is_number, "a number in (0, 1] (1: constant rates)", lambda value: 0 < value <= 1,
               optional=True)
        _check(self, "lr_decay_start", _is_number, "a number in [0, 1)", lambda value: 0 <= value < 1, optional=True)
        _check(self, "d_dropout", _is_number, "a number in [0, 1) (0: none)", lambda value: 0 <= value < 1,
               optional=True)
        if self.d_dropout is not None and not table.get(self.arch).has_dropout:
            with_dropout = " and ".join(f"{entry.name}'s" for entry in table.TABLE if entry.has_dropout)
            raise ConfigError("d_dropout", f"{self.arch}'s discriminator has no dropout (only {with_dropout} "
                                           "have); leave it unset")
        for name in ("beta_1", "beta_2"):
            _check(self, name, _is_number, "a number in [0, 1)", lambda value: 0.0 <= value < 1.0, optional=True)
        _check(self, "r1_gamma", _is_number, "a non-negative number", lambda value: value >= 0, optional=True)
        _check(self, "minutes", _is_number, "a positive number", lambda value: value > 0, optional=True)
        _check(self, "ema_kimg", _is_number, "a non-negative number (0: off)", lambda value: value >= 0,
               optional=True)
        _check(self, "ada_kimg", _is_number, "a positive number", lambda value: value > 0)
        _check(self, "pl_weight", _is_number, "a non-negative number (0: off)", lambda value: value >= 0)
        _check(self, "ema_rampup", _is_number, "a number in [0, 1] (0: no ramp)", lambda value: 0 <= value <= 1,
               optional=True)
        for name in ("style_mixing", "ada_target"):
            _check(self, name, _is_number, "a number in [0, 1]", lambda value: 0.0 <= value <= 1.0)
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        if self.flip_axis not in FLIP_AXES:
            raise ConfigError("flip_axis", f"must be one of {FLIP_AXES}, got {self.flip_axis!r}")
        if self.augment is not None and self.augment not in AUGMENT_MODES:  # None: the architecture's default
            raise ConfigError("augment", f"must be one of {AUGMENT_MODES}, got {self.augment!r}")
        _check(self, "devices", _is_int, "a positive integer or -1 (all)", lambda value: value >= 1 or value == -1)
        if not self.splits or any(split not in SPLITS for split in self.splits):
            raise ConfigError("splits", f"must be a non-empty subset of {SPLITS}, got {self.splits!r}")
        augments = self.resolved().augment == "ada"
        if self.jit_compile and augments and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            # TensorFlow's XLA bridge has no kernel for the image transform the augmentation draws (tf2xla fails).
            why = f" ({self.arch} augments by default)" if self.augment is None else ""
            raise ConfigError("jit_compile", f"XLA cannot compile the adaptive augmentation on TensorFlow{why}: drop "
                                             "--xla, add --augment off, or use KERAS_BACKEND=jax, whose steps are "
                                             "always compiled by XLA")
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

    # --- plain values (config.json)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["splits"] = list(self.splits)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"is not a setting of this version (known: {sorted(known)})")
        return cls(**values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(config: TrainConfig, name: str, is_type, expected: str, in_range, optional: bool = False) -> None:
    value = getattr(config, name)
    if value is None and optional:
        return
    if not is_type(value) or not in_range(value):
        raise ConfigError(name, f"must be {expected}, got {value!r}")


# ------------------------------------------------------------ declarations


def declarations() -> list[dataclasses.Field]:
    """The fields of TrainConfig, in order, each with its declaration in ``metadata``."""
    return list(dataclasses.fields(TrainConfig))


def flag_of(name: str) -> str | None:
    """The train.py flag that sets field ``name`` (None: no flag)."""
    for item in declarations():
        if item.name == name:
            return item.metadata["flag"]
    return None


def notebook_settings() -> dict[str, dataclasses.Field]:
    """Parameters-cell variable -> the TrainConfig field it sets."""
    return {item.metadata["notebook"]: item for item in declarations() if item.metadata["notebook"]}


def device_count(text: str) -> int:
    """--devices: a positive count, or "all" (-1)."""
    if text == "all":
        return -1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return count


GROUP_TITLES = {"regularisers": "regularisers, for any architecture (see docs/architectures.md)",
                "styles": "architectures with styles (stylegan) only", "speed": "speed and scale (see docs/speed.md)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per declared setting, each with default None (unset: the config's or the machine's default)."""
    groups = {name: parser.add_argument_group(title) for name, title in GROUP_TITLES.items()}
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for item in declarations():
        meta = item.metadata
        if not meta["flag"]:
            continue
        target = groups[meta["group"]] if meta["group"] else parser
        if meta["exclusive"]:
            if meta["exclusive"] not in exclusive:
                exclusive[meta["exclusive"]] = target.add_mutually_exclusive_group()
            target = exclusive[meta["exclusive"]]
        shown = item.default if item.default is not dataclasses.MISSING else None
        described = meta["help"] if shown in (None, False, True) or "default" in meta["help"] else \
            f"{meta['help']} (default {' '.join(shown) if isinstance(shown, tuple) else shown})"
        options = {"dest": item.name, "default": None, "help": described}
        if meta["action"] in ("store_true", "store_false"):
            options["action"] = meta["action"]
        else:
            options["type"] = device_count if item.name == "devices" else meta["type"]
            if meta["choices"]:
                options["choices"] = meta["choices"]
            if meta["metavar"]:
                options["metavar"] = meta["metavar"]
            if meta["action"] == "append":
                options["nargs"] = "+"
        target.add_argument(meta["flag"], **options)


def explicit_settings(args: argparse.Namespace) -> dict:
    """The config fields the user set on the command line, with their exclusive partners cleared."""
    values = {item.name: getattr(args, item.name) for item in declarations()
              if item.metadata["flag"] and getattr(args, item.name, None) is not None}
    if "data_dir" in values:
        values["demo"] = False
    if values.get("demo"):
        values["data_dir"] = None
    if "steps" in values:
        values["epochs"] = None
    elif "epochs" in values:
        values["steps"] = None
    return values
