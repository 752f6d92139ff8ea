"""Train a GAN on OASIS brain slices (or the demo cohort) without the notebook.

    python train.py --demo                                   # CPU demo, 64x64, minutes
    python train.py --data /path/to/keras_png_slices_data --image-size 256 --epochs 50 --out runs/oasis256
    python train.py --out runs/oasis256 --resume             # continue after a kill

Writes RUN/config.json, RUN/history.csv, RUN/samples/step_*.png (fixed
latents), RUN/checkpoints/ckpt-*/, and at the end RUN/samples.png and
RUN/losses.png.  Ctrl-C (or SIGTERM, e.g. a Slurm time limit) saves a
checkpoint first; --resume continues from the latest one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from config import ConfigError, TrainConfig, next_run_dir

# `--demo` alone must finish in under 10 minutes on 2 CPU cores (cohort build included):
# 700 steps of batch 16 at 64x64 run about 7.5 minutes at ~26 images/s there.
DEMO_DEFAULTS = {"steps": 700, "batch_size": 16}
DATA_DEFAULT_EPOCHS = 50
FIELD_FLAGS = {  # config field -> the flag that sets it, for error messages
    "data_dir": "--data", "demo": "--demo", "demo_root": "--demo-root", "demo_subjects": "--demo-subjects",
    "splits": "--splits", "limit": "--limit", "arch": "--arch", "image_size": "--image-size",
    "latent_dim": "--latent-dim", "batch_size": "--batch-size", "epochs": "--epochs", "steps": "--steps",
    "g_learning_rate": "--g-lr", "d_learning_rate": "--d-lr", "beta_1": "--beta1", "beta_2": "--beta2",
    "flip": "--no-flip", "seed": "--seed", "log_every": "--log-every", "sample_every": "--sample-every",
    "checkpoint_every": "--checkpoint-every", "keep_checkpoints": "--keep-checkpoints",
    "sample_grid": "--sample-grid", "deterministic": "--deterministic", "ssim_every": "--ssim-every",
    "ssim_references": "--ssim-references", "jit_compile": "--xla", "precision": "--precision",
    "devices": "--devices",
    "r1_gamma": "--r1-gamma", "r1_every": "--r1-every", "style_mixing": "--style-mixing",
    "ema_kimg": "--ema-kimg", "augment": "--augment", "ada_target": "--ada-target", "ada_kimg": "--ada-kimg",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--demo", action="store_true", default=None, help="train on the demo cohort (built once)")
    source.add_argument("--data", dest="data_dir", metavar="DIR", help="folder holding keras_png_slices_*")
    parser.add_argument("--arch", choices=("dcgan", "dcgan-classic", "stylegan"))
    parser.add_argument("--image-size", type=int, choices=(32, 64, 128, 256),
                        help="default: 256 with a GPU, 64 on the CPU")
    parser.add_argument("--latent-dim", type=int,
                        help="default: the architecture's own (dcgan 256, dcgan-classic 100, stylegan 512)")
    parser.add_argument("--batch-size", type=int)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int)
    length.add_argument("--steps", type=int, help=(
        f"generator updates (--demo default: {DEMO_DEFAULTS['steps']} at batch {DEMO_DEFAULTS['batch_size']})"))
    parser.add_argument("--out", metavar="RUN", help="run folder (default: runs/<arch>-<size>px-<n>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--g-lr", dest="g_learning_rate", type=float, help="default: dcgans 2e-4, stylegan 2e-3")
    parser.add_argument("--d-lr", dest="d_learning_rate", type=float, help="default: dcgans 1e-4, stylegan 2e-3")
    parser.add_argument("--beta1", dest="beta_1", type=float, help="Adam beta1 (default: dcgans 0.5, stylegan 0)")
    parser.add_argument("--beta2", dest="beta_2", type=float, help="Adam beta2 (default: dcgans 0.999, stylegan 0.99)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="no left-right flips")
    parser.add_argument("--splits", nargs="+", choices=("train", "validate", "test"))
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--demo-root", help="where the demo cohort is written (default data/demo)")
    parser.add_argument("--demo-subjects", type=int)
    parser.add_argument("--log-every", type=int)
    parser.add_argument("--sample-every", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--keep-checkpoints", type=int)
    parser.add_argument("--sample-grid", type=int)
    parser.add_argument("--deterministic", action="store_true", default=None)
    parser.add_argument("--xla", dest="jit_compile", action="store_true", default=None,
                        help="compile the training step with XLA (for GPUs; slower on the CPU)")
    speed = parser.add_argument_group("speed and scale (see the README's 'Speed and scale')")
    speed.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                       help="compute precision (default float32; mixed_float16 adds loss scaling)")
    speed.add_argument("--devices", type=device_count, metavar="N|all",
                       help="data-parallel replicas on this machine: GPUs, else logical CPUs (default 1)")
    parser.add_argument("--ssim-every", type=int, help="steps per best-match SSIM in history.csv (0: off; default 100)")
    parser.add_argument("--ssim-references", type=int, help="training images SSIM is measured against (default 256)")
    style = parser.add_argument_group("stylegan only")
    style.add_argument("--r1-gamma", type=float, help="R1 penalty weight (default 0.0002 * size^2 / batch)")
    style.add_argument("--r1-every", type=int, help="steps between R1 penalties (lazy regularisation; default 16)")
    style.add_argument("--style-mixing", type=float, help="probability of style mixing per batch (default 0.9)")
    style.add_argument("--ema-kimg", type=float, help="generator EMA half-life, thousands of images (default batch*10/32)")
    style.add_argument("--augment", choices=("ada", "off"), help="adaptive discriminator augmentation (default ada)")
    style.add_argument("--ada-target", type=float, help="ADA's target for E[sign(D(real))] (default 0.6)")
    style.add_argument("--ada-kimg", type=float, help="thousands of images for p to go from 0 to 1 (default 100)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def explicit_settings(args: argparse.Namespace) -> dict:
    """The config fields the user set on the command line."""
    values = {name: getattr(args, name) for name in FIELD_FLAGS if getattr(args, name, None) is not None}
    if "data_dir" in values:
        values["demo"] = False
    if values.get("demo"):
        values["data_dir"] = None
    if "steps" in values:
        values["epochs"] = None
    elif "epochs" in values:
        values["steps"] = None
    return values


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


def gpu_available() -> bool:
    import training

    return bool(training.engine().accelerators())


def _jax_on_cpu() -> bool:
    import keras

    return keras.backend.backend() == "jax" and not gpu_available()


def new_config(settings: dict) -> TrainConfig:
    """A config for a new run: the user's settings over machine-aware defaults."""
    settings = dict(settings)
    if "image_size" not in settings:
        settings["image_size"] = 256 if gpu_available() else 64
        print(f"image size: {settings['image_size']} ({'GPU found' if settings['image_size'] == 256 else 'CPU only'};"
              " set --image-size to choose)")
    if settings.get("steps") is None and settings.get("epochs") is None:
        if settings.get("demo"):
            settings["steps"] = DEMO_DEFAULTS["steps"]
            settings.setdefault("batch_size", DEMO_DEFAULTS["batch_size"])
        else:
            settings["epochs"] = DATA_DEFAULT_EPOCHS
    return TrainConfig.from_dict(settings).validate()


def _stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = explicit_settings(args)

    def fail(error: Exception) -> int:
        message = str(error)
        if isinstance(error, ConfigError) and error.field in FIELD_FLAGS:
            message = f"{FIELD_FLAGS[error.field]}: {message.split(': ', 1)[1]}"
        parser.error(message)  # exits with status 2 and the usage line

    try:
        if args.resume:
            if not args.out:
                raise ConfigError("out", "--resume needs --out RUN, the run folder to continue")
            config, run_dir = None, Path(args.out)
        else:
            if not settings.get("demo") and not settings.get("data_dir"):
                raise ConfigError("data_dir", "give --demo or --data DIR")
            config = new_config(settings)
            run_dir = Path(args.out) if args.out else next_run_dir(config.arch, config.image_size)
        from training import Trainer, TrainingDiverged  # TensorFlow loads here, after the flags are checked

        trainer = Trainer(config, run_dir, resume=args.resume, overrides=settings, progress=not args.quiet)
    except (ValueError, FileNotFoundError, FileExistsError, NotImplementedError, RuntimeError) as error:
        return fail(error)  # ConfigError, DataError, CheckpointError: each names its flag or file

    if _jax_on_cpu():
        print("note: KERAS_BACKEND=jax on a CPU: XLA's CPU convolutions are far slower than TensorFlow's "
              "(about 20x slower for dcgan at 64x64, see the README); unset KERAS_BACKEND on CPU-only machines",
              file=sys.stderr)
    # SIGTERM (cluster time limits, `kill`) stops like Ctrl-C: checkpoint first.
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    print(f"run folder: {run_dir}  ({trainer.total_steps} steps, {trainer.steps_per_epoch} per epoch, "
          f"{len(trainer.images)} images, starting at step {trainer.step})")
    try:
        status = trainer.fit(progress=not args.quiet)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    if status == "interrupted":
        print(f"interrupted at step {trainer.step}; checkpoint saved. Continue with: "
              f"python train.py --out {run_dir} --resume", file=sys.stderr)
        return 130
    print(f"done: {trainer.step} steps. Samples: {run_dir / 'samples.png'}  losses: {run_dir / 'losses.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
