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
import math
import os
import shlex
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from oasis_gan import cli  # the flags and checks the three tools share; no framework
from oasis_gan import cluster  # which process of how many; no framework
from oasis_gan import config  # no Keras: --help and flag errors answer at once
from oasis_gan import machine  # the defaults that depend on the machine; no framework until detect()


def seconds(text: str) -> float:
    """--cluster-timeout: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_arguments(parser)
    parser.add_argument("--out", metavar="RUN", help="run folder (default: runs/<arch>-<size>px-<n>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest good checkpoint")
    parser.add_argument("--checkpoint", metavar="NAME", help="with --resume: " + cli.CHECKPOINT_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    several = parser.add_argument_group(
        "several processes (one per node; see the README): TensorFlow reads TF_CONFIG or Slurm, "
        "KERAS_BACKEND=jax these flags, JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID or Slurm")
    several.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and a free port (JAX)")
    several.add_argument("--num-processes", type=int, metavar="N", help="how many processes train the run (JAX)")
    several.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0 to N-1; 0 writes "
                                                                     "the run folder (JAX)")
    several.add_argument("--cluster-timeout", type=seconds, default=cluster.DEFAULT_TIMEOUT_S, metavar="S",
                         help="seconds to wait for the other processes, at the start and on each step, before "
                              f"giving up with an error (default {cluster.DEFAULT_TIMEOUT_S:g})")
    return parser


def start_or_resume(args: argparse.Namespace, settings: dict):
    """The Trainer for these flags.  Flags are checked before Keras and the data load."""
    if config.backend_problem():
        raise RuntimeError(config.backend_problem())
    if args.checkpoint and not args.resume:
        raise argparse.ArgumentError(None, "--checkpoint: picks the checkpoint that --resume continues from; "
                                           "add --resume")
    if args.resume and not args.out:
        raise argparse.ArgumentError(None, "--resume needs --out RUN, the run folder to continue")
    found = cluster.discover(os.environ.get("KERAS_BACKEND") or "tensorflow", args.coordinator,
                             args.num_processes, args.process_id, args.cluster_timeout)
    if found.multi and not args.out:
        raise argparse.ArgumentError(None, "--out: a run of several processes needs one run folder named for all "
                                           "of them, on a file system they share")
    if not args.resume:  # the flags alone, before anything heavier is imported
        if not settings.get("demo") and not settings.get("data_dir"):
            raise config.ConfigError("data_dir", "give --demo or --data DIR")
        machine.resolve(settings, machine.CPU)  # a check of the flags only: the run's config is made below
    from oasis_gan.cli import check_writable
    from oasis_gan.runs.run_folder import RunFolder  # NumPy, PIL and matplotlib, no Keras

    if args.resume:
        deterministic = settings.get("deterministic", RunFolder(args.out).read_config().deterministic)
        if found.is_chief:  # the others only read it
            check_writable(args.out, "--out", folder=True)
    else:
        if settings.get("data_dir"):
            import data_utils

            files = data_utils.list_slice_files(settings["data_dir"], settings.get("splits", config.SPLITS))
            data_utils.slice_levels(files)  # says now if the level measures will be unavailable
        deterministic = settings.get("deterministic", False)
        if found.is_chief:
            check_writable(args.out or "runs", "--out", folder=True)

    from oasis_gan import engines  # Keras and TensorFlow (or JAX) load here
    from oasis_gan.runs.run_folder import next_run_dir
    from oasis_gan.training import Trainer

    engine = engines.current()
    if deterministic:  # JAX reads its flag when it starts its devices: before anything asks for them
        engine.enable_determinism()
    engine.start_cluster(found)  # before any other framework call (TensorFlow insists)
    if found.multi:
        print(f"{found.describe()}: {'writes' if found.is_chief else 'reads'} the run folder", flush=True)
    progress = not args.quiet and found.is_chief
    if args.resume:
        return Trainer.resume(args.out, progress=progress, checkpoint=args.checkpoint, **settings)
    here = machine.Machine.detect()
    run_config = machine.resolve(settings, here)
    if "image_size" not in settings:
        print(f"image size: {run_config.image_size} ({'GPU found' if here.accelerator else 'CPU only'}; "
              "set --image-size to choose)")
    if settings.get("precision", "auto") == "auto":
        native = "native" if here.native_bfloat16 else "not native"
        print(f"precision: {run_config.precision} (bfloat16 is {native} here; set --precision to choose)")
    run_dir = Path(args.out) if args.out else next_run_dir(run_config.arch, run_config.image_size)
    return Trainer.new(run_config, run_dir, progress=progress)


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number, as shells report them


def ending_errors() -> tuple:
    """Errors that end a run without being a usage error: another writer, a full disk."""
    from oasis_gan.runs import checkpoints
    from oasis_gan.runs import run_folder

    return run_folder.RunLocked, run_folder.WriteError, checkpoints.CheckpointWriteError


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = config.explicit_settings(args)
    try:
        trainer = start_or_resume(args, settings)
    except KeyboardInterrupt:
        print("\ninterrupted while starting: nothing was trained", file=sys.stderr)
        return EXIT_CODES[signal.SIGINT]
    except argparse.ArgumentError as error:
        parser.error(error.message)
    except (ValueError, FileNotFoundError, FileExistsError, NotImplementedError, RuntimeError) as error:
        if not isinstance(error, config.ConfigError) and isinstance(error, ending_errors()):
            print(f"error: {error}", file=sys.stderr)
            return 1
        if cluster.joined().multi:  # the others wait for this one: leave now, without the exit handlers' barriers
            print(f"error: {cli.flag_message(error)}", file=sys.stderr, flush=True)
            os._exit(2)
        parser.error(cli.flag_message(error))  # ConfigError, DataError, CheckpointError: each names its flag or file

    import keras

    if keras.backend.backend() == "jax" and not trainer.engine.accelerators():
        print("note: KERAS_BACKEND=jax on a CPU: XLA's CPU convolutions are far slower than TensorFlow's "
              "(about 20x slower for dcgan at 64x64, see docs/speed.md); unset KERAS_BACKEND on CPU-only machines",
              file=sys.stderr)
    import data_utils

    data = data_utils.demo_cohort_name(trainer.config) if trainer.config.demo else trainer.config.data_dir
    print(f"run folder: {trainer.run_dir}  ({trainer.total_steps} steps, {trainer.steps_per_epoch} per epoch, "
          f"{len(trainer.images)} images from {data}, starting at step {trainer.step})")
    from oasis_gan.runs.run_folder import FINAL_SAMPLES, LOSS_PLOT
    from oasis_gan.training import TrainingDiverged

    try:  # Ctrl-C and SIGTERM (cluster time limits, `kill`) stop after the current step, checkpoint first
        status = trainer.fit(progress=not args.quiet and trainer.cluster.is_chief)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except ending_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not trainer.cluster.multi:
            raise
        if isinstance(error, cluster.ClusterError):  # the processes disagree: each says so and leaves
            print(f"error: {error}", file=sys.stderr, flush=True)
            os._exit(cluster.CLUSTER_FAILED)
        # A collective failed: another process died or cannot be reached.  Leave at once (the exit
        # handlers would wait for it again); the chief's last checkpoint is what --resume continues.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {trainer.cluster.describe()} stopped at step {trainer.step}: another process of the run "
              f"failed or could not be reached within --cluster-timeout ({first_line}). The last checkpoint "
              f"is kept; start every process again with --resume --out {shlex.quote(str(trainer.run_dir))}",
              file=sys.stderr, flush=True)
        os._exit(cluster.CLUSTER_FAILED)
    if status == "interrupted":
        print(f"interrupted at step {trainer.step}; checkpoint saved. Continue with: "
              f"python train.py --out {shlex.quote(str(trainer.run_dir))} --resume", file=sys.stderr)
        return EXIT_CODES.get(trainer.stop_signal, EXIT_CODES[signal.SIGINT])
    print(f"done: {trainer.step} steps. Samples: {trainer.run_dir / FINAL_SAMPLES}  "
          f"losses: {trainer.run_dir / LOSS_PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
