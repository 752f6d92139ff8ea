"""Atomic, resumable checkpoints in a backend-neutral format.

A checkpoint is a folder ``RUN/checkpoints/ckpt-00001234/`` holding

    generator.weights.h5      Keras weight files (readable under any backend)
    discriminator.weights.h5
    training_state.npz        both optimizers' variables and the dropout RNG
                              states, as plain numpy arrays
    state.json                step, epoch, architecture, names of the arrays
    manifest.json             every other file's size and SHA-256, written last

and, for StyleGAN runs, ``generator_ema.weights.h5`` (EMA_MODEL, the
averaged generator used for sampling) plus the augmentation RNG in
training_state.npz and the augmentation probability in state.json.

It is written into a temporary sibling folder and renamed into place only
when complete, so a kill at any moment (even mid-save) leaves the previous
checkpoint whole; ``list_checkpoints`` ignores unfinished folders.  A save
that fails (a full disk) removes its partial folder at once and raises
``CheckpointWriteError`` naming the file and the space it needs.  Loading
verifies the manifest first: a truncated or altered file raises
``CorruptCheckpoint`` naming it, so the caller can fall back to an older
checkpoint.  Checkpoints from before manifests existed load unverified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d{8})$")
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
TRAINING_STATE = "training_state.npz"
EMA_MODEL = "generator_ema"  # StyleGAN's averaged generator, which draws its samples


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run; the message names it."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose files are damaged or incomplete (an older one may still be good)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, a read-only folder); nothing partial is left."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_manifest(folder: Path) -> None:
    """``manifest.json``: the size and SHA-256 of every other file of the checkpoint."""
    files = {path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(folder.iterdir()) if path.name != MANIFEST_FILE}
    (folder / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=2) + "\n")


def verify_checkpoint(checkpoint) -> None:
    """Raise CorruptCheckpoint naming the first file that is missing, truncated or changed.

    A checkpoint written before manifests existed passes unverified.
    """
    checkpoint = Path(checkpoint)
    manifest_path = checkpoint / MANIFEST_FILE
    if not manifest_path.is_file():
        return
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpoint(f"{manifest_path} is unreadable ({exc})") from exc
    if not isinstance(files, dict):
        raise CorruptCheckpoint(f"{manifest_path} is unreadable (its \"files\" is not a mapping)")
    for name, expected in files.items():
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            # only the checkpoint's own files are ever opened, whatever a damaged or altered manifest says
            raise CorruptCheckpoint(f"{manifest_path} names {name!r}, which is not a file of the checkpoint")
        if not isinstance(expected, dict) or not {"bytes", "sha256"} <= set(expected):
            raise CorruptCheckpoint(f"{manifest_path} is unreadable (no size and checksum for {name})")
        path = checkpoint / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{path} is missing")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CorruptCheckpoint(f"{path} has {size} bytes, the checkpoint's manifest says {expected['bytes']} "
                                    "(truncated or overwritten)")
        if _sha256(path) != expected["sha256"]:
            raise CorruptCheckpoint(f"{path} does not match its checksum in the manifest (changed or damaged)")


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _seed_states(model) -> list:
    """Dropout (and other) RNG state variables, which weight files do not hold."""
    return [variable for variable in model.variables if "seed_generator_state" in variable.path]


def _optimizer_arrays(optimizer) -> list[np.ndarray]:
    return [np.asarray(variable.numpy()) for variable in optimizer.variables]


def step_of(folder) -> int | None:
    """The step of a checkpoint folder from its name (ckpt-00001234 -> 1234), None for any other name."""
    match = _NAME.match(Path(folder).name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, folder), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted((step_of(entry), entry) for entry in folder.iterdir()
                  if step_of(entry) is not None and (entry / STATE_FILE).is_file())


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir, step: int, epoch: int, generator, discriminator, g_optimizer, d_optimizer,
                    meta: dict, keep: int = 3, extra_models: dict | None = None,
                    extra_variables: dict | None = None, size_hint: int = 0) -> Path:
    """Write a complete checkpoint for ``step`` atomically; keep the newest ``keep``.

    ``extra_models`` ({file stem: model}) are saved as more weight files and
    ``extra_variables`` ({name: [variables]}) into training_state.npz.
    ``size_hint`` (bytes) is what the error says a checkpoint needs when no
    earlier checkpoint shows it.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    final = folder / f"ckpt-{step:08d}"
    staging = folder / f".ckpt-{step:08d}.partial-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        _write_files(staging, step, epoch, generator, discriminator, g_optimizer, d_optimizer, meta,
                     extra_models, extra_variables)
    except (OSError, RuntimeError, ValueError) as exc:  # h5py reports a full disk as RuntimeError or OSError
        written = sum(path.stat().st_size for path in staging.glob("*")) if staging.is_dir() else 0
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointWriteError(_write_failure(folder, final, exc, max(written, size_hint))) from exc

    if final.exists():  # same step saved twice (e.g. Ctrl-C right after a save)
        shutil.rmtree(final)
    os.replace(staging, final)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in folder.glob(".ckpt-*.partial-*"):  # from runs killed mid-save
        if leftover != staging:
            shutil.rmtree(leftover, ignore_errors=True)
    return final


def _write_failure(folder: Path, final: Path, exc: Exception, written: int) -> str:
    """What went wrong in a save, and what it needs, for a person to act on."""
    previous = [path for _, path in list_checkpoints(folder.parent)]
    needed = max([sum(p.stat().st_size for p in path.iterdir()) for path in previous] + [written])
    try:
        free = shutil.disk_usage(folder if folder.is_dir() else folder.parent).free
    except OSError:
        free = -1
    cause = ("the disk is full" if isinstance(exc, OSError) and exc.errno == errno.ENOSPC
             or "No space left" in str(exc) or "errno = 28" in str(exc) else f"{type(exc).__name__}: {exc}")
    kept = previous[-1].name if previous else "none yet"
    return (f"could not write checkpoint {final} ({cause}); a checkpoint needs about {needed / 2**20:.1f} MiB "
            f"and {folder.parent} has {max(free, 0) / 2**20:.1f} MiB free. The partial checkpoint was removed; "
            f"the last good one ({kept}) and history.csv are untouched. Free some space and resume.")


def _write_files(staging: Path, step: int, epoch: int, generator, discriminator, g_optimizer, d_optimizer,
                 meta: dict, extra_models: dict | None, extra_variables: dict | None) -> None:
    models = {"generator": generator, "discriminator": discriminator, **(extra_models or {})}
    for name, model in models.items():
        model.save_weights(staging / f"{name}.weights.h5")
    arrays = {}
    for prefix, optimizer in (("g_optimizer", g_optimizer), ("d_optimizer", d_optimizer)):
        for index, value in enumerate(_optimizer_arrays(optimizer)):
            arrays[f"{prefix}/{index:04d}"] = value
    for prefix, model in (("g_seed", generator), ("d_seed", discriminator)):
        for index, variable in enumerate(_seed_states(model)):
            arrays[f"{prefix}/{index:04d}"] = np.asarray(variable.numpy())
    for prefix, variables in (extra_variables or {}).items():
        for index, variable in enumerate(variables):
            arrays[f"{prefix}/{index:04d}"] = np.asarray(variable.numpy())
    np.savez(staging / TRAINING_STATE, **arrays)
    state = dict(meta, step=int(step), epoch=int(epoch), saved_at=time.time(),
                 g_optimizer_variables=[v.path for v in g_optimizer.variables],
                 d_optimizer_variables=[v.path for v in d_optimizer.variables])
    (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    write_manifest(staging)
    _fsync_tree(staging)


def read_state(checkpoint: Path) -> dict:
    try:
        return json.loads((Path(checkpoint) / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"{Path(checkpoint) / STATE_FILE} is unreadable ({exc})") from exc


def _assign(variables, arrays: list, what: str, checkpoint: Path) -> None:
    if len(variables) != len(arrays):
        raise CheckpointError(
            f"{checkpoint}: {what} has {len(arrays)} arrays but this model needs {len(variables)}; "
            "the checkpoint comes from a different architecture or size"
        )
    for variable, value in zip(variables, arrays):
        if tuple(variable.shape) != tuple(value.shape):
            raise CheckpointError(
                f"{checkpoint}: {what} variable {variable.path} has shape {tuple(value.shape)} "
                f"in the checkpoint but {tuple(variable.shape)} in this model"
            )
        variable.assign(value)


def load_model_weights(model, checkpoint: Path, name: str) -> None:
    """``checkpoint/<name>.weights.h5`` into ``model``.

    A missing or unreadable file is a CorruptCheckpoint; a file that does not
    fit the model is a CheckpointError.
    """
    import h5py

    path = Path(checkpoint) / f"{name}.weights.h5"
    if not path.is_file():
        raise CorruptCheckpoint(f"{path} is missing")
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as exc:
        raise CorruptCheckpoint(f"{path} cannot be read: truncated or not a Keras weights file ({exc})") from exc
    try:
        with warnings.catch_warnings():
            # Keras only warns when a saved layer is missing and keeps fresh weights.
            warnings.simplefilter("error")
            model.load_weights(path)
    except (ValueError, OSError, KeyError, Warning) as exc:
        raise CheckpointError(
            f"{checkpoint}: cannot load {name}.weights.h5 into this model ({exc}); "
            "it was saved by a different architecture or image size, or by a version of this project whose "
            "network differed (dcgan-plus's generator gained its 3x3 output conv in 2026-11: see docs/results.md)"
        ) from exc


def restore_checkpoint(checkpoint, generator, discriminator=None, g_optimizer=None, d_optimizer=None,
                       expect: dict | None = None, extra_models: dict | None = None,
                       extra_variables: dict | None = None) -> dict:
    """Load a checkpoint into built models (and optimizers); return its state.json.

    ``expect`` (e.g. {"arch": "dcgan", "image_size": 64}) is checked against
    what the checkpoint recorded before anything is loaded.  ``extra_models``
    and ``extra_variables`` are those given to ``save_checkpoint``.
    """
    checkpoint = Path(checkpoint)
    verify_checkpoint(checkpoint)
    state = read_state(checkpoint)
    for key, wanted in (expect or {}).items():
        if state.get(key) != wanted:
            raise CheckpointError(
                f"{checkpoint} was saved with {key}={state.get(key)!r}, but this run needs {key}={wanted!r}"
            )
    models = {"generator": generator, "discriminator": discriminator, **(extra_models or {})}
    for name, model in models.items():
        if model is not None:
            load_model_weights(model, checkpoint, name)
    if g_optimizer is None and d_optimizer is None:
        return state
    try:
        stored = np.load(checkpoint / TRAINING_STATE)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptCheckpoint(f"{checkpoint / TRAINING_STATE} cannot be read: truncated or damaged ({exc})") from exc
    with stored:

        def group(prefix: str) -> list:
            return [stored[key] for key in sorted(key for key in stored.files if key.startswith(prefix + "/"))]

        for prefix, optimizer, model in (("g_optimizer", g_optimizer, generator),
                                         ("d_optimizer", d_optimizer, discriminator)):
            if optimizer is not None:
                optimizer.build(model.trainable_variables)
                _assign(optimizer.variables, group(prefix), prefix, checkpoint)
        for prefix, model in (("g_seed", generator), ("d_seed", discriminator)):
            if model is not None:
                _assign(_seed_states(model), group(prefix), prefix, checkpoint)
        for prefix, variables in (extra_variables or {}).items():
            _assign(variables, group(prefix), prefix, checkpoint)
    return state
