"""Finished run folders for tests that start from one: trained once per process, then copied.

Many fault and recovery tests begin the same way (train the tiny run to its
end, then damage, move or resume it); only what they do next differs.
``copy_of_finished(config, images, destination)`` trains ``config`` on
``images`` the first time this process asks for that pair, keeps that run
folder as a template, and gives every test its own copy (a run folder holds
no absolute paths, and a finished run holds no lock, so a copy is what a
user who copies a run folder has).  A copy costs a few milliseconds where
training costs a few seconds (the step's trace and first run, the figures).

Tests that check training itself (its weights, its history as it is
written, a kill during it) train their own runs.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

_templates: dict[str, Path] = {}
_folder: Path | None = None


def _template_folder() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="oasis-gan-run-templates-"))
        atexit.register(shutil.rmtree, _folder, ignore_errors=True)
    return _folder


def copy_of_finished(config, images: np.ndarray, destination: Path) -> Path:
    """``destination``: a copy of the run that trained ``config`` (a TrainConfig) on ``images`` to its end."""
    from oasis_gan import training

    key = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()
                         + np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
    template = _templates.get(key)
    if template is None:
        template = _template_folder() / key
        training.Trainer.new(config, template, images=images, progress=False).fit(progress=False)
        _templates[key] = template
    return Path(shutil.copytree(template, destination))
