"""What train.py, generate.py and evaluate.py share: flags, errors that name their flag, and the checks made
before anything heavy loads (output paths, the backend, sizes against memory).

Light on purpose: argparse, pathlib and config.py, so ``--help`` and a bad
flag answer before Keras loads (tests/test_layout.py times it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from oasis_gan import config

CHECKPOINT_HELP = ("a checkpoint of the run: its folder, or its name such as ckpt-00000400 "
                   "(default: the newest complete one)")


class FlagError(ValueError):
    """A problem traced to one command-line flag."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """--run (required) and --checkpoint: the run a tool reads, and which of its checkpoints."""
    parser.add_argument("--run", required=True, help="run folder written by train.py")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)


def add_data_flags(parser: argparse.ArgumentParser, verb: str) -> None:
    """--demo or --data DIR (one of them, or neither: the run's own data)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--demo", action="store_true", help=f"{verb} the demo cohort")
    source.add_argument("--data", metavar="DIR", help=f"{verb} the OASIS folder DIR")


def require(parser: argparse.ArgumentParser, condition: bool, flag: str, message: str) -> None:
    """``parser.error`` naming ``flag`` unless ``condition`` holds."""
    if not condition:
        parser.error(f"{flag}: {message}")


def flag_message(error: Exception, data_flag: str = "--data", default_flag: str | None = None) -> str:
    """The error's message beginning with the flag it is about: a config field's flag, ``data_flag`` for
    a data error, a FlagError's own flag, else ``default_flag`` (when given)."""
    import data_utils

    if isinstance(error, config.ConfigError):
        return f"{config.flag_of(error.field) or error.field}: {error.reason}"
    if isinstance(error, FlagError):
        return f"{error.flag}: {error}"
    if isinstance(error, data_utils.DataError):
        return f"{data_flag}: {error}"
    return f"{default_flag}: {error}" if default_flag else str(error)


def check_writable(path, flag: str, folder: bool) -> None:
    """Raise FlagError unless ``path`` can be written (as a folder, or as a file).

    Checked before any work starts: the nearest existing folder must take a
    new file, and the path itself must not be a file where a folder is meant
    (or the reverse).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise FlagError(flag, f"{path} is a file; give a folder for the run")
    if not folder and path.is_dir():
        raise FlagError(flag, f"{path} is a folder; give a file name")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FlagError(flag, f"{existing} is a file, so {path} cannot be made")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise FlagError(flag, f"cannot write in {existing} ({exc.strerror or exc}); choose another place") from None


def check_outputs(parser: argparse.ArgumentParser, files: dict) -> None:
    """``parser.error`` naming the flag when one of ``files`` ({flag: path or None}) cannot be written, or when
    KERAS_BACKEND cannot run; before any model or data is loaded."""
    try:
        for flag, path in files.items():
            if path:
                check_writable(path, flag, folder=False)
    except FlagError as error:
        parser.error(flag_message(error))
    if config.backend_problem():
        parser.error(config.backend_problem())


def check_run_fits(parser: argparse.ArgumentParser, run, n: int, bytes_per_image, what: str):
    """The run's config, after ``parser.error`` naming --run when it cannot be read, or --n when ``n`` times
    ``bytes_per_image(config)`` cannot fit in memory; before Keras loads."""
    from oasis_gan.runs.run_folder import RunFolder

    try:
        saved = RunFolder(run).read_config()
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"--run: {error}")
    try:
        config.check_fits_in_memory("--n", n * bytes_per_image(saved),
                                    f"{what} {n} images of {saved.image_size}x{saved.image_size}")
    except ValueError as error:
        parser.error(str(error))
    return saved
