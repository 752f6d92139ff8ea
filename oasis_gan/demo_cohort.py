"""A demo cohort of whole-head T1 slices in the style of preprocessed OASIS, built from the MNI152 template.

The real OASIS slices cannot be shipped, so the project builds a stand-in in
the same layout and naming.  Its anatomy comes from the MNI ICBM152 2009a
nonlinear symmetric template (1 mm) that the nilearn package ships: the T1
brain and its grey- and white-matter probability maps (Copyright (C)
1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University; see README).  Each demo subject is
rendered the way label-driven generators (SynthSeg and its kin) make
realistic scans, not by resampling the template's blurred average intensity:

* anatomy: the tissue maps under the subject's own affine (head size and
  shape, small rotations and shifts left after atlas registration) and smooth
  random deformation; age (18 to 96) and, for some older subjects, dementia
  widen the ventricles and the sulci;
* one person's cortex: band-limited random fields perturb the tissue scores,
  so the white matter reaches into gyri and thin sulci cut the grey matter,
  where the 152-brain average is smooth; the tissue with the highest score
  wins, with a little partial volume at the boundaries;
* the whole head, modelled around the brain (no head image ships offline):
  CSF, the skull's dark inner and outer tables with grey marrow between, and
  the bright scalp fat, each layer's thickness varying around the head;
* imaging: T1 intensities at OASIS's levels (grey matter about 60-90, white
  matter about 110-160, CSF and skull dark, scalp about 180-220) with
  per-subject contrast, a little blur, a smooth bias field, Rician noise, and
  the scanner's noise floor (about 12) in the registered field of view around
  the head, on an exactly black background;
* the slice band: 32 consecutive 1 mm axial slices through the lateral
  ventricles (the third ventricle and basal ganglia at slice 0 to the
  ventricles' bodies at slice 31), 256x256, anterior to the right, as OASIS.

Everything is a pure function of the seed and the subject number, so a cohort
is reproducible and each subject can be built on its own worker.
appearance.look_measures says how close it comes to real OASIS (docs/data.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SLICES_PER_SUBJECT = 32
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
SLICE_SIZE = 256
COHORT_VERSION = 3  # 1: the skull-stripped template resampled, cerebellum to vertex; 2: too faint a noise floor
TEMPLATE_FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}
TEMPLATE_ORIGIN_MM = np.array([-98.0, -134.0, -72.0])  # MNI coordinate of voxel (0, 0, 0)
HEAD_CENTRE_MM = np.array([0.0, -17.0, 0.0])  # in-plane centre of the output slice
VENTRICLE_CENTRE_MM = np.array([0.0, -8.0, 14.0])
FIRST_SLICE_MM, SLICE_SPACING_MM = 0.0, 1.0  # MNI z of slice 0 (third ventricle, basal ganglia), then 1 mm up
PIXEL_MM = 1.0  # OASIS: 1 mm voxels, the head about 200 pixels long
BRAIN_BOX = (192, 224)  # rows (left-right) and columns (front-back) of the slice the brain can reach
SPLIT_FRACTIONS = {"validate": 0.10, "test": 0.05}  # rest is train, as in OASIS


def template_path(name: str = "t1") -> Path:
    """Path of one MNI152 volume ("t1", "gm" or "wm") inside the installed nilearn package."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the demo cohort needs the nilearn package: pip install nilearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / TEMPLATE_FILES[name]
    if not path.is_file():
        raise RuntimeError(f"nilearn is installed but its MNI152 template {path} is missing")
    return path


@lru_cache(maxsize=1)
def load_template() -> np.ndarray:
    """The T1 brain, grey- and white-matter maps stacked ``(3, x, y, z)``, float32 in [0, 1], 1 mm voxels."""
    import nibabel

    return np.stack([np.asarray(nibabel.load(template_path(name)).dataobj, dtype=np.float32) / np.float32(255.0)
                     for name in ("t1", "gm", "wm")])


def _smooth_field(rng: np.random.Generator, shape: tuple, coarse: int, amplitude: float) -> np.ndarray:
    """A smooth random field: coarse Gaussian noise, spline-upsampled to ``shape``."""
    grid = rng.normal(0.0, amplitude, size=(coarse,) * len(shape))
    zoom = [target / coarse for target in shape]
    return ndimage.zoom(grid, zoom, order=3, mode="nearest")[tuple(slice(0, n) for n in shape)]


def _band_field(rng: np.random.Generator, shape: tuple, scale_px: float, factor: int = 4) -> np.ndarray:
    """A zero-mean, unit-variance random field varying over about ``scale_px`` pixels in-plane and
    ``scale_px`` slices across: made at 1/``factor`` of the in-plane size, then enlarged."""
    slices, size = shape[0], shape[1]
    coarse = rng.normal(size=(slices, size // factor, size // factor))
    field = ndimage.gaussian_filter(coarse, (scale_px / 2.0, scale_px / (2.0 * factor), scale_px / (2.0 * factor)),
                                    mode="wrap")
    field = _upsample_slices(field, size)
    return (field - field.mean()) / (field.std() + 1e-8)


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


def subject_traits(rng: np.random.Generator) -> dict:
    """Age, dementia and the atrophy they bring (0 young and healthy, about 1 old and demented)."""
    age = float(rng.uniform(18.0, 96.0))
    demented = bool(age > 60 and rng.random() < 0.4)  # OASIS-1: about 100 of its 416 subjects, all over 60
    atrophy = float(np.clip(0.7 * max(age - 25.0, 0.0) / 71.0 + 0.35 * demented + rng.normal(0.0, 0.06), 0.0, 1.2))
    return {"age": age, "demented": demented, "atrophy": atrophy}


def _sample_tissues(rng: np.random.Generator, atrophy: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The subject's T1 brain, grey- and white-matter maps on the output grid ``(32, 256, 256)`` each."""
    size, n_slices = SLICE_SIZE, SLICES_PER_SUBJECT
    # Output grid in millimetres: rows run right -> left (x), columns posterior -> anterior (y), slices up (z).
    # The brain lies well inside a central box of the slice (BRAIN_BOX): the template is sampled there only.
    rows, columns = (np.arange(size)[(size - extent) // 2:(size + extent) // 2] for extent in BRAIN_BOX)
    row_mm, column_mm = ((index - (size - 1) / 2.0) * PIXEL_MM for index in (rows, columns))
    z_levels = FIRST_SLICE_MM + rng.normal(0.0, 1.5) + SLICE_SPACING_MM * np.arange(n_slices)
    z, x, y = np.meshgrid(z_levels.astype(np.float32), row_mm.astype(np.float32), column_mm.astype(np.float32),
                          indexing="ij")
    points = np.stack([x, y, z], axis=-1).reshape(-1, 3)

    # What atlas registration leaves: head size and shape, a little tilt and shift.
    rotation = _rotation(rng.normal(0.0, [2.5, 2.5, 2.5]))
    scale = rng.normal(1.0, 0.045) * rng.normal(1.0, 0.025, size=3)
    shift = rng.normal(0.0, [1.5, 2.5, 1.0])
    source = points @ (rotation * (1.0 / scale)).T.astype(np.float32) + (HEAD_CENTRE_MM * [1, 1, 0] + shift).astype(np.float32)

    # Ventricles widen with atrophy: sample nearer their centre.
    widening = -0.04 + 0.32 * atrophy + rng.normal(0.0, 0.03)
    offset = source - VENTRICLE_CENTRE_MM.astype(np.float32)
    falloff = np.exp(-np.sum((offset / np.float32([20.0, 30.0, 16.0])) ** 2, axis=1, keepdims=True))
    source = VENTRICLE_CENTRE_MM.astype(np.float32) + offset * np.float32(1.0 - widening * falloff)

    # Smooth random deformation, 2-3 mm, varying over a few centimetres.
    coarse_shape = (n_slices, size // 8, size // 8)
    for dim in range(3):
        field = _upsample_slices(_smooth_field(rng, coarse_shape, coarse=5, amplitude=2.0), size)
        source[:, dim] += field[:, rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1].reshape(-1)

    voxels = (source - TEMPLATE_ORIGIN_MM.astype(np.float32)).T
    volumes = np.zeros((3, n_slices, size, size), np.float32)
    for volume, sampled in zip(load_template(), volumes):
        sampled[:, rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1] = ndimage.map_coordinates(
            volume, voxels, order=1, mode="constant", cval=0.0).reshape(n_slices, len(rows), len(columns))
    return volumes[0], volumes[1], volumes[2]


def _tissue_labels(rng: np.random.Generator, t1, grey, white, atrophy: float) -> np.ndarray:
    """Soft memberships ``(3, 32, 256, 256)`` of CSF, grey and white matter inside the brain (sum to 1 there).

    One person's folding: a band-limited field moves the grey/white boundary (white matter into the
    gyri), and thin sulci, the zero-crossings of another field, cut the grey matter; with atrophy they
    widen.  The highest score wins, with a soft edge of about a pixel (partial volume).
    """
    shape = t1.shape
    brain = np.clip((t1 - 0.10) / 0.10, 0.0, 1.0)  # the template's brain (ventricles included) fades out at its edge
    csf = np.clip(brain - grey - white, 0.0, 1.0)
    folding = _band_field(rng, shape, scale_px=rng.uniform(5.0, 7.0))
    sulcus_field = _band_field(rng, shape, scale_px=rng.uniform(7.0, 9.0))
    sulcus_width = 0.10 + 0.10 * atrophy
    sulci = np.exp(-(sulcus_field / sulcus_width) ** 2) * np.clip(grey * 2.2 - 0.2, 0.0, 1.0)
    scores = np.stack([csf + 0.9 * sulci + 0.04 * atrophy,
                       grey - 0.16 * folding,
                       white + 0.16 * folding + 0.07 - 0.05 * atrophy])
    sharpened = np.exp((scores - scores.max(axis=0)) / 0.035)
    return sharpened / sharpened.sum(axis=0) * brain


def _head_layers(rng: np.random.Generator, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, the head around the brain -> (intensity of the layers outside the brain, head mask).

    Outward from the brain's smooth envelope: CSF, the skull's inner table, marrow, outer table,
    scalp muscle and the bright fat, each a band of the distance from the brain whose width varies
    smoothly around the head.
    """
    n_slices, size = brain.shape[0], brain.shape[1]
    thickness = {  # mm: CSF, inner table, marrow, outer table, muscle, fat
        "csf": rng.uniform(1.5, 2.5), "inner": rng.uniform(1.0, 1.8), "marrow": rng.uniform(1.0, 2.5),
        "outer": rng.uniform(1.0, 1.8), "muscle": rng.uniform(1.0, 2.5), "fat": rng.uniform(2.5, 4.0)}
    level = {"csf": rng.normal(30, 5), "inner": rng.normal(22, 5), "marrow": rng.normal(50, 12),
             "outer": rng.normal(24, 5), "muscle": rng.normal(60, 10), "fat": rng.normal(192, 15)}
    around = 1.0 + 0.3 * _upsample_slices(_smooth_field(rng, (n_slices, 32, 32), coarse=6, amplitude=1.0), size)
    intensity = np.zeros(brain.shape, np.float32)
    head = np.zeros(brain.shape, bool)
    for index in range(n_slices):
        envelope = ndimage.binary_fill_holes(ndimage.gaussian_filter(brain[index].astype(np.float32), 2.5) > 0.35)
        distance = ndimage.distance_transform_edt(~envelope) * PIXEL_MM / np.maximum(around[index], 0.4)
        edge = 0.0
        for name, width in thickness.items():
            band = (distance > edge) & (distance <= edge + width)
            intensity[index][band] = level[name]
            edge += width
        head[index] = distance <= edge
    return intensity, head


def _field_of_view(rng: np.random.Generator, head: np.ndarray) -> np.ndarray:
    """Where the registered scan has data around the head: its bounding box, widened, corners cut."""
    size = head.shape[-1]
    rows, columns = np.nonzero(head.any(axis=0))
    margin = rng.uniform(0.0, 3.0)
    top, bottom = rows.min() - margin, rows.max() + margin
    left, right = columns.min() - margin, columns.max() + margin
    row, column = np.mgrid[0:size, 0:size]
    inside = (row >= top) & (row <= bottom) & (column >= left) & (column <= right)
    half_height, half_width = (bottom - top) / 2, (right - left) / 2
    corner = (np.abs(row - (top + bottom) / 2) / half_height + np.abs(column - (left + right) / 2) / half_width)
    return inside & (corner <= rng.uniform(1.25, 1.45))


def render_subject(seed: int, subject: int) -> np.ndarray:
    """The 32 slices of one demo subject as uint8 ``(32, 256, 256)``."""
    rng = np.random.default_rng([seed, subject, COHORT_VERSION])
    traits = subject_traits(rng)
    t1, grey, white = _sample_tissues(rng, traits["atrophy"])
    memberships = _tissue_labels(rng, t1, grey, white, traits["atrophy"])
    brain = memberships.sum(axis=0)

    # T1 contrast at OASIS's levels; older white matter is a little darker.
    levels = np.array([rng.normal(30, 5), rng.normal(68, 6), rng.normal(126, 9) - 6 * traits["atrophy"]])
    texture = 1.0 + 0.02 * _band_field(rng, t1.shape, scale_px=2.0)
    tissue = np.tensordot(levels, memberships, axes=1) * texture
    layers, head = _head_layers(rng, brain > 0.5)
    intensity = tissue + (1.0 - np.clip(brain, 0.0, 1.0)) * layers

    # Imaging: a little blur, a smooth bias field, Rician noise, the field of view on a black background.
    intensity = ndimage.gaussian_filter(intensity, (0.0, *(2 * [rng.uniform(0.5, 0.7)])))
    intensity *= np.exp(_upsample_slices(_smooth_field(rng, (SLICES_PER_SUBJECT, 32, 32), coarse=4, amplitude=0.06),
                                         SLICE_SIZE))
    noise = rng.uniform(1.2, 2.2)
    intensity = np.hypot(intensity + rng.normal(0.0, noise, intensity.shape),
                         rng.normal(0.0, noise, intensity.shape))
    view = _field_of_view(rng, head)
    floor, spread = rng.uniform(9.0, 14.0), rng.uniform(2.0, 4.0)  # the scanner's noise floor: rarely 0
    background = np.hypot(floor + rng.normal(0.0, spread, intensity.shape), rng.normal(0.0, spread, intensity.shape))
    intensity = np.where(head, intensity, background)
    intensity = np.where(view[None], intensity, 0.0)
    return np.clip(np.rint(intensity), 0, 255).astype(np.uint8)


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

    with _one_builder(data_dir) as lock:
        if not _holds(data_dir, manifest):  # else another process built it while this one waited
            staging = _write_cohort(data_dir, split_folders, n_subjects, seed, workers, progress, lock)
            (staging / "demo_cohort.json").write_text(json.dumps(manifest))  # last: it marks the cohort complete
            _install(staging, data_dir, manifest)
    return data_dir


def _write_cohort(data_dir: Path, split_folders: dict[str, str], n_subjects: int, seed: int, workers: int | None,
                  progress: bool, lock: int | None = None) -> Path:
    """Render every subject into a new staging folder beside ``data_dir``; returns that folder.

    Interrupted (Ctrl-C, an error), it removes the staging folder and its
    worker processes before it raises.  Each worker closes its copy of the
    builders' lock (descriptor ``lock``), so the lock goes when this process
    does, and dies with this process even when it is killed (Linux): a
    killed build leaves no process behind, and its staging folder is removed
    by the next build (``_remove_leftovers``).  (Workers are forked, not
    spawned: spawning runs the user's main script again in every worker.)
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.partial-", dir=data_dir.parent))
    pool = None
    try:
        splits = subject_splits(n_subjects, seed)
        for folder in split_folders.values():
            (staging / folder).mkdir(parents=True)
        jobs = [(seed, case, str(staging / split_folders[splits[case]])) for case in sorted(splits)]
        workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
        if workers == 1:
            results = map(_write_subject, jobs)
        else:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_dies_with_parent, initargs=(lock,))
            results = pool.map(_write_subject, jobs)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(jobs), desc="building demo cohort", unit="subject")
        for _ in results:
            pass
    except BaseException:
        if pool is not None:
            for process in list(getattr(pool, "_processes", {}).values()):  # not left rendering for nobody
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    return staging


def _worker_dies_with_parent(lock: int | None) -> None:
    """In each worker: hold no copy of the builders' lock; end when the builder ends, however it ends; leave
    Ctrl-C to the builder."""
    if lock is not None:
        os.close(lock)  # a flock lasts while any copy of its descriptor is open: orphans kept it for ever
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker ends once its current subject is written
        pass
    if os.getppid() == 1:  # the builder died before the line above took effect
        os._exit(1)


@contextlib.contextmanager
def _one_builder(data_dir: Path):
    """While inside, no other process builds into ``data_dir``: the second one waits, then finds the cohort built.

    An advisory lock on a file beside the cohort (POSIX; where there is none,
    builders run at once and ``_install`` still keeps a finished cohort safe).
    The kernel releases it when its holder dies, however it dies; a waiting
    builder says whom it waits for.  Whoever holds it removes what killed
    builders left (``_remove_leftovers``).
    """
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield None
        return
    with open(data_dir.parent / f".{data_dir.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            print(f"waiting for {holder}, which is building the demo cohort in {data_dir}", file=sys.stderr,
                  flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}")
            handle.flush()
            _remove_leftovers(data_dir)
            yield handle.fileno()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(data_dir: Path) -> None:
    """Staging and set-aside folders of builders that were killed: only the lock's holder builds, so none is live."""
    for leftover in [*data_dir.parent.glob(f".{data_dir.name}.partial-*"),
                     *data_dir.parent.glob(f".{data_dir.name}.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


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
