"""Shared fixtures: the repository on sys.path, a private cache, tiny data sets."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own dataset cache, so none sees another's files."""
    monkeypatch.setenv("OASIS_GAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the JAX processes the tests start: a program compiles once, not per process.

    Only the tests' own processes see it: it lives in the session's temporary folder, the one that
    pytest-xdist's workers share (each worker's own is a folder inside it).
    """
    session_folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        session_folder = session_folder.parent
    cache = session_folder / "jax-cache"
    cache.mkdir(exist_ok=True)
    settings = {"JAX_COMPILATION_CACHE_DIR": str(cache),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def write_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


@pytest.fixture
def make_split():
    """make_split(root, split, {name: uint8 array}) writes one split folder."""

    def make(root: Path, split: str, images: dict) -> Path:
        folder = root / f"keras_png_slices_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, pixels in images.items():
            write_png(folder / name, pixels)
        return folder

    return make


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A 3-subject demo cohort (96 slices), built once for the whole session."""
    import data_utils

    return data_utils.make_demo_dataset(tmp_path_factory.mktemp("demo"), n_subjects=3, seed=0)


@pytest.fixture(scope="session")
def tiny_images():
    """64 brain-like 32x32 images in [-1, 1] for fast in-process training."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    images = []
    for _ in range(64):
        a, b = rng.uniform(0.6, 0.85, size=2)
        brain = (xx / a) ** 2 + (yy / b) ** 2 < 1
        ventricle = (xx / 0.12) ** 2 + (yy / rng.uniform(0.2, 0.4)) ** 2 < 1
        image = np.where(brain, 0.6, -1.0) - 1.2 * (brain & ventricle) + rng.normal(0, 0.05, (32, 32)) * brain
        images.append(np.clip(image, -1, 1))
    return np.asarray(images, dtype=np.float32)[..., None]
