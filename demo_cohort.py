"""A demo cohort of brain MRI slices built from the MNI152 template.

The real OASIS slices cannot be shipped, so the project builds a stand-in in
the same layout and naming.  Its anatomy is real: the MNI ICBM152 2009a
nonlinear symmetric T1 template (1 mm, skull-stripped) that the nilearn
package ships (Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging
Centre, Montreal Neurological Institute, McGill University; see README).
Each demo "subject" is that template under its own

* affine jitter (rotation, per-axis scale, translation, slice-level offset),
* smooth random deformation (a coarse random displacement field, cubic-spline
  upsampled),
* atrophy-like change (a radial warp about the ventricles that widens or
  narrows them),
* contrast (gamma), smooth multiplicative bias field, gain, and Gaussian noise
  inside the brain,

cut into 32 axial slices at OASIS-like levels (cerebellum to vertex),
256x256, anterior up, black background.  Everything is a pure function of the
seed and the subject number, so a cohort is reproducible and each subject can
be built on its own worker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SLICES_PER_SUBJECT = 32
SLICE_SIZE = 256
COHORT_VERSION = 1
TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_ORIGIN_MM = np.array([-98.0, -134.0, -72.0])  # MNI coordinate of voxel (0, 0, 0)
BRAIN_CENTRE_MM = np.array([0.0, -18.0, 0.0])  # in-plane centre of the output slice
VENTRICLE_CENTRE_MM = np.array([0.0, -8.0, 14.0])
SLICE_LEVELS_MM = (-38.0, 68.0)  # MNI z of the lowest and highest slice
PIXEL_MM = 0.8  # OASIS slices show the brain larger than 1 mm per pixel would
SPLIT_FRACTIONS = {"validate": 0.10, "test": 0.05}  # rest is train, as in OASIS


def template_path() -> Path:
    """Path of the T1 template inside the installed nilearn package."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the demo cohort needs the nilearn package: pip install nilearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / TEMPLATE_FILE
    if not path.is_file():
        raise RuntimeError(f"nilearn is installed but its MNI152 template {path} is missing")
    return path


@lru_cache(maxsize=1)
def load_template() -> np.ndarray:
    """The T1 template as float32 in [0, 1], indexed (x, y, z) in 1 mm voxels."""
    import nibabel

    volume = np.asarray(nibabel.load(template_path()).dataobj, dtype=np.float32)
    return volume / np.float32(255.0)


def _smooth_field(rng: np.random.Generator, shape: tuple, coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field: coarse Gaussian noise, spline-upsampled to ``shape``."""
    grid = rng.normal(0.0, amplitude, size=(coarse,) * len(shape))
    zoom = [target / coarse for target in shape]
    return ndimage.zoom(grid, zoom, order=3, mode="nearest")[tuple(slice(0, n) for n in shape)]


def _upsample_slices(field: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly enlarge each 2-D slice of ``field`` to ``size x size`` (fast, in PIL)."""
    return np.stack([
        np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))
        for plane in field
    ])


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix from small angles (degrees) about x, y and z."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def render_subject(seed: int, subject: int) -> np.ndarray:
    """The 32 slices of one demo subject as uint8 ``(32, 256, 256)``."""
    rng = np.random.default_rng([seed, subject, COHORT_VERSION])
    template = load_template()
    size, n_slices = SLICE_SIZE, SLICES_PER_SUBJECT

    # Output sampling grid in millimetres: columns run left->right (x),
    # rows run anterior->posterior (y decreasing), slices inferior->superior.
    axis = (np.arange(size) - (size - 1) / 2.0) * PIXEL_MM
    z_levels = np.linspace(*SLICE_LEVELS_MM, n_slices) + rng.uniform(-3.0, 3.0)
    z, y, x = np.meshgrid(z_levels, -axis, axis, indexing="ij")
    points = np.stack([x, y, z], axis=-1).reshape(-1, 3)

    # Affine jitter: head tilt, brain size and position differ between subjects.
    rotation = _rotation(rng.normal(0.0, [3.0, 3.0, 5.0]))
    scale = rng.normal(1.0, 0.04) * rng.normal(1.0, 0.025, size=3)
    shift = rng.normal(0.0, [2.0, 3.0, 2.0])
    source = (points @ (rotation * (1.0 / scale)).T) + BRAIN_CENTRE_MM * [1, 1, 0] + shift

    # Atrophy-like change: sample nearer to (or further from) the ventricle
    # centre, which widens (or narrows) the ventricles and the deep sulci.
    atrophy = rng.uniform(-0.08, 0.22)
    offset = source - VENTRICLE_CENTRE_MM
    falloff = np.exp(-np.sum((offset / [22.0, 30.0, 18.0]) ** 2, axis=1, keepdims=True))
    source = VENTRICLE_CENTRE_MM + offset * (1.0 - atrophy * falloff)

    # Smooth random deformation, 2-3 mm, varying over a few centimetres.
    coarse_shape = (n_slices, size // 8, size // 8)
    for dim in range(3):
        field = _smooth_field(rng, coarse_shape, coarse=5, amplitude=2.5)
        source[:, dim] += _upsample_slices(field, size).reshape(-1)

    voxels = (source - TEMPLATE_ORIGIN_MM).T
    intensity = ndimage.map_coordinates(template, voxels, order=1, mode="constant", cval=0.0)
    intensity = intensity.reshape(n_slices, size, size)
    # Template brain voxels are all above ~0.28; interpolation across the edge falls to 0.
    brain = intensity > 0.14

    # Scanner and tissue variation: contrast, bias field, gain, noise.
    intensity = np.clip(intensity, 0.0, 1.0) ** rng.uniform(0.9, 1.5)
    bias = np.exp(_upsample_slices(_smooth_field(rng, coarse_shape, coarse=4, amplitude=0.08), size))
    intensity = intensity * bias
    intensity = intensity + brain * rng.normal(0.0, rng.uniform(0.008, 0.03), size=intensity.shape)
    intensity = np.where(brain, intensity, 0.0)
    reference = np.percentile(intensity[brain], 99.5) if brain.any() else 1.0
    intensity = intensity / reference * rng.uniform(0.88, 1.0)
    return np.clip(np.rint(intensity * 255.0), 0, 255).astype(np.uint8)


def subject_splits(n_subjects: int, seed: int) -> dict[int, str]:
    """Subject-level split: case number -> "train" / "validate" / "test"."""
    order = np.random.default_rng([seed, 7]).permutation(np.arange(1, n_subjects + 1))
    n_validate = max(1, round(n_subjects * SPLIT_FRACTIONS["validate"]))
    n_test = max(1, round(n_subjects * SPLIT_FRACTIONS["test"]))
    splits = {int(case): "train" for case in order}
    for case in order[:n_validate]:
        splits[int(case)] = "validate"
    for case in order[n_validate : n_validate + n_test]:
        splits[int(case)] = "test"
    return splits


def _write_subject(job: tuple) -> int:
    seed, case, folder = job
    for index, pixels in enumerate(render_subject(seed, case)):
        Image.fromarray(pixels).save(Path(folder) / f"case_{case:03d}_slice_{index}.nii.png", optimize=False)
    return case


def build_demo_cohort(data_dir: Path, split_folders: dict[str, str], n_subjects: int = 48, seed: int = 0,
                      workers: int | None = None, progress: bool = False) -> Path:
    """Write the cohort into ``data_dir``, one folder per split (``split_folders``); reuse it when it exists.

    data_utils.make_demo_dataset gives the OASIS layout (keras_png_slices_data/keras_png_slices_train, ...).
    """
    if not isinstance(n_subjects, (int, np.integer)) or n_subjects < 3:
        raise ValueError(f"n_subjects must be an integer of at least 3 (one per split), got {n_subjects!r}")
    data_dir = Path(data_dir)
    manifest = {"version": COHORT_VERSION, "n_subjects": int(n_subjects), "seed": int(seed)}
    manifest_path = data_dir / "demo_cohort.json"
    if manifest_path.is_file():
        if _holds(data_dir, manifest):
            return data_dir
        # else a demo cohort with other settings: rebuilt below
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise FileExistsError(
            f"{data_dir} already exists and was not written by make_demo_dataset; "
            "it is left untouched: choose another root"
        )

    with _one_builder(data_dir):
        if not _holds(data_dir, manifest):  # else another process built it while this one waited
            staging = _write_cohort(data_dir, split_folders, n_subjects, seed, workers, progress)
            (staging / "demo_cohort.json").write_text(json.dumps(manifest))  # last: it marks the cohort complete
            _install(staging, data_dir, manifest)
    return data_dir


def _write_cohort(data_dir: Path, split_folders: dict[str, str], n_subjects: int, seed: int, workers: int | None,
                  progress: bool) -> Path:
    """Render every subject into a new staging folder beside ``data_dir``; returns that folder."""
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.partial-", dir=data_dir.parent))
    splits = subject_splits(n_subjects, seed)
    for folder in split_folders.values():
        (staging / folder).mkdir(parents=True)
    jobs = [(seed, case, str(staging / split_folders[splits[case]])) for case in sorted(splits)]
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    if workers == 1:
        results = map(_write_subject, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_write_subject, jobs)
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(jobs), desc="building demo cohort", unit="subject")
    try:
        for _ in results:
            pass
    finally:
        if workers != 1:
            pool.shutdown()
    return staging


@contextlib.contextmanager
def _one_builder(data_dir: Path):
    """While inside, no other process builds into ``data_dir``: the second one waits, then finds the cohort built.

    An advisory lock on a file beside the cohort (POSIX; where there is none,
    builders run at once and ``_install`` still keeps a finished cohort safe).
    """
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(data_dir.parent / f".{data_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holds(data_dir: Path, manifest: dict) -> bool:
    """Whether ``data_dir`` holds a complete cohort of these settings (its manifest is written last)."""
    try:
        return json.loads((data_dir / "demo_cohort.json").read_text()) == manifest
    except (OSError, ValueError):
        return False


def _install(staging: Path, data_dir: Path, manifest: dict) -> None:
    """Move the finished cohort into place; an older one is replaced only now that the new one is complete.

    Two processes may build the same cohort at once (two notebooks, two
    runs started together on a fresh machine): the first to finish puts its
    copy in place, and the other then finds it there and discards its own,
    so nobody deletes a cohort another process is reading.
    """
    if _holds(data_dir, manifest):
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = None
    if data_dir.exists():  # a cohort of other settings: set aside, deleted once the new one is in place
        old = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.old-", dir=data_dir.parent))
        os.replace(data_dir, old / data_dir.name)
    try:
        os.replace(staging, data_dir)
    except OSError:
        if not _holds(data_dir, manifest):  # not another builder's finished copy: a real failure
            raise
        shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
