"""Read and write OASIS-style brain MRI slices.

Tensor conventions (shared by every module of the project):
    images in memory are float32, channels-last ``(N, H, W, 1)``, values in
    [-1, 1] (a PNG value ``u`` in 0..255 becomes ``u / 127.5 - 1``).

The preprocessed OASIS set ("keras_png_slices_data") looks like::

    keras_png_slices_data/
        keras_png_slices_train/      case_001_slice_0.nii.png ...
        keras_png_slices_validate/
        keras_png_slices_test/

``load_oasis`` reads any folder laid out like that (real OASIS, or the demo
cohort that ``make_demo_dataset`` writes) into one float32 array;
``load_pixels`` into the uint8 array training keeps (a quarter of the size).
Decoding runs on a thread pool straight into a preallocated cache file, and
``load_pixels`` hands that file back memory-mapped, so a second load of an
unchanged folder takes milliseconds and a set larger than memory still
trains.  This module knows nothing of TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oasis_gan.config import SPLITS  # ("train", "validate", "test"), declared once with the settings

SPLIT_FOLDER = "keras_png_slices_{}"
DATASET_FOLDER = "keras_png_slices_data"
# Bump when the decoding below changes, so old cache files are not reused.
LOADER_VERSION = 2
CONVERT_CHUNK = 256  # images converted uint8 -> float32 at a time


class DataError(ValueError):
    """Input data that cannot be used; the message names the file or folder."""


CACHE_CHECK_ROWS = 6  # rows of a cache compared with their PNGs each time it is opened


def natural_key(name: str) -> list:
    """Sort key that orders ``case_2_slice_10`` after ``case_2_slice_9``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def resolve_data_dir(data_dir) -> Path:
    """Return the folder that holds the ``keras_png_slices_*`` folders.

    Accepts that folder itself or its parent (the folder the OASIS zip was
    unpacked into).
    """
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is a file; pass the folder that holds {SPLIT_FOLDER.format('train')}/ "
                        f"(usually '{DATASET_FOLDER}')")
    if not path.is_dir():
        raise DataError(
            f"data folder {path} does not exist; pass the folder that holds "
            f"{SPLIT_FOLDER.format('train')}/ (usually '{DATASET_FOLDER}')"
        )
    def holds_splits(folder: Path) -> bool:
        return any((folder / SPLIT_FOLDER.format(split)).is_dir() for split in SPLITS)

    if holds_splits(path):
        return path
    if holds_splits(path / DATASET_FOLDER):
        return path / DATASET_FOLDER
    if path.name.startswith(SPLIT_FOLDER.format("")):
        raise DataError(
            f"{path} is a single split folder; pass its parent {path.parent}, "
            f"which holds the {SPLIT_FOLDER.format('*')} folders"
        )
    raise DataError(
        f"{path} holds no {SPLIT_FOLDER.format('*')} folders; expected "
        f"{SPLIT_FOLDER.format('train')}/, {SPLIT_FOLDER.format('validate')}/ "
        f"and {SPLIT_FOLDER.format('test')}/ inside it"
    )


def list_slice_files(data_dir, splits=SPLITS) -> list[Path]:
    """PNG files of the given splits, split by split, each in natural order."""
    if isinstance(splits, str):
        splits = (splits,)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise DataError(f"splits must be a non-empty subset of {SPLITS}, got {tuple(splits)}")
    root = resolve_data_dir(data_dir)
    files: list[Path] = []
    for split in splits:
        folder = root / SPLIT_FOLDER.format(split)
        if not folder.is_dir():
            present = [name for name in SPLITS if (root / SPLIT_FOLDER.format(name)).is_dir()]
            hint = f"; this data set has {', '.join(present)}: train on those with --splits {' '.join(present)}" \
                if present else ""
            raise DataError(f"split folder {folder} does not exist (asked for split '{split}'){hint}")
        pngs = sorted(
            (entry for entry in folder.iterdir() if entry.suffix.lower() == ".png" and entry.is_file()),
            key=lambda entry: natural_key(entry.name),
        )
        if not pngs:
            raise DataError(f"split folder {folder} holds no .png files")
        files.extend(pngs)
    return files


_SLICE_NUMBER = re.compile(r"slice_(\d+)")


def slice_level(path) -> int:
    """The axial slice number in an OASIS-style file name (``case_001_slice_12.nii.png`` -> 12), bottom up."""
    match = _SLICE_NUMBER.search(Path(path).name)
    if match is None:
        raise DataError(f"{path}: no slice number in the file name (expected ..._slice_<N>...)")
    return int(match.group(1))


def slice_levels(files: list[Path]) -> list[int] | None:
    """Each file's slice number; None (with a warning naming a file) when some name has none.

    Training needs no slice numbers, but the level measures of evaluate.py
    do: without them those measures are left out of its report.
    """
    unnumbered = [path for path in files if _SLICE_NUMBER.search(Path(path).name) is None]
    if unnumbered:
        print(f"warning: {len(unnumbered)} of {len(files)} file names have no slice number (..._slice_<N>..., "
              f"e.g. {unnumbered[0]}): the slice-level measures of evaluate.py will be left out", file=sys.stderr)
        return None
    return [slice_level(path) for path in files]


def _to_uint8_gray(image: Image.Image) -> np.ndarray:
    """Any PIL image mode -> 2-D uint8 grayscale (16-bit scaled, alpha over black)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        # PNGs are at most 16 bits deep; PIL opens 16-bit grayscale as I or I;16.
        return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def _fit_square(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Pad a non-square slice to a square (centred, black) and resize to image_size."""
    height, width = pixels.shape
    if height != width:
        side = max(height, width)
        square = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        square[top : top + height, left : left + width] = pixels
        pixels = square
    if pixels.shape[0] != image_size:
        shrinking = pixels.shape[0] > image_size
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
        pixels = np.asarray(Image.fromarray(pixels).resize((image_size, image_size), resample))
    return pixels


def read_slice(path, image_size: int = 256) -> np.ndarray:
    """Read one PNG as a ``(image_size, image_size)`` uint8 array.

    RGB/RGBA/palette images become grayscale, 16-bit images are scaled to 8
    bits, and other sizes are padded to a square and resized.  A file that is
    not a readable image raises DataError naming it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            pixels = _to_uint8_gray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable PNG image ({exc})") from exc
    if pixels.ndim != 2 or min(pixels.shape) == 0:
        raise DataError(f"{path}: expected a 2-D grayscale slice, got shape {pixels.shape}")
    return _fit_square(pixels, image_size)


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: $OASIS_GAN_CACHE, else ~/.cache/oasis_gan."""
    configured = os.environ.get("OASIS_GAN_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "oasis_gan"


def _cache_key(files: list[Path], image_size: int) -> str:
    """Hash of every file's path, size and modification time, and the settings."""
    digest = hashlib.sha256(json.dumps({"version": LOADER_VERSION, "size": image_size}).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _read_all(files: list[Path], image_size: int, workers: int | None, progress: bool,
              pixels: np.ndarray | None = None) -> np.ndarray:
    """Decode every file in parallel into ``pixels``, a preallocated uint8 array (a new one if None)."""
    if pixels is None:
        pixels = np.empty((len(files), image_size, image_size), dtype=np.uint8)

    def decode_into(index: int) -> None:
        pixels[index] = read_slice(files[index], image_size)

    workers = workers or min(32, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(decode_into, range(len(files)))
        if progress:
            from tqdm.auto import tqdm

            jobs = tqdm(jobs, total=len(files), desc="decoding PNGs", unit="img")
        for _ in jobs:  # re-raises the first DataError, naming its file
            pass
    return pixels


def _open_cache(path: Path, files: list[Path], image_size: int) -> np.ndarray | None:
    """The cached pixels memory-mapped read-only; None when missing (or damaged: then removed, saying so).

    A cache is damaged when it cannot be read as an array of the right shape
    (a zero-byte or cut file), or when sample rows differ from their PNGs
    (the first, the last and a few between, decoded again: a cheap check of
    its contents).
    """
    if not path.is_file():
        return None
    shape = (len(files), image_size, image_size)
    try:
        cached = np.load(path, mmap_mode="r")
        problem = None if cached.shape == shape and cached.dtype == np.uint8 else \
            f"it holds {cached.dtype} {cached.shape}, not uint8 {shape}"
    except (OSError, ValueError, EOFError) as exc:
        problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    if problem is None:
        rows = sorted({0, len(files) - 1, *np.linspace(0, len(files) - 1, CACHE_CHECK_ROWS).astype(int).tolist()})
        different = [row for row in rows if not np.array_equal(cached[row], read_slice(files[row], image_size))]
        if different:
            problem = f"its image {different[0]} differs from {files[different[0]]} (damaged)"
    if problem is None:
        return cached
    print(f"warning: the data cache {path} is damaged ({problem}): decoding the PNGs again", file=sys.stderr)
    path.unlink(missing_ok=True)
    return None


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete cache files left half-written by decoders that were killed (their process is gone)."""
    for leftover in folder.glob("slices-*.tmp"):
        owner = leftover.name.rsplit(".", 2)[-2] if leftover.name.count(".") >= 2 else ""
        if owner.startswith("pid") and owner[3:].isdigit() and not process_alive(int(owner[3:])):
            leftover.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _new_cache_file(path: Path, shape: tuple) -> tuple[np.ndarray, Path] | None:
    """A writable memory map of a new ``.npy`` file beside ``path``, every block allocated; None if none can be made.

    The blocks are reserved up front (posix_fallocate), so a disk too small
    for the cache fails here with ENOSPC rather than with SIGBUS halfway
    through the decoding.  A cache folder that cannot be written means no
    cache.  The file's name carries this process's id, so a later load can
    tell one left by a killed decoder and remove it.
    """
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path.parent)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=path.stem + "-", suffix=f".pid{os.getpid()}.tmp")
        os.close(handle)
        temporary = Path(name)
        pixels = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        if hasattr(os, "posix_fallocate"):
            descriptor = os.open(temporary, os.O_RDWR)
            try:
                os.posix_fallocate(descriptor, 0, temporary.stat().st_size)
            finally:
                os.close(descriptor)
        return pixels, temporary
    except OSError:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        return None


def to_float_images(pixels: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W)`` -> float32 ``(N, H, W, 1)`` in [-1, 1], converted in chunks."""
    images = np.empty(pixels.shape + (1,), dtype=np.float32)
    for start in range(0, len(pixels), CONVERT_CHUNK):
        chunk = pixels[start : start + CONVERT_CHUNK].astype(np.float32)
        images[start : start + CONVERT_CHUNK, ..., 0] = chunk / np.float32(127.5) - np.float32(1.0)
    return images


def _check_load_arguments(image_size, limit) -> None:
    if not isinstance(image_size, (int, np.integer)) or not 8 <= image_size <= 4096:
        raise DataError(f"image_size must be an integer from 8 to 4096, got {image_size!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")


def load_pixels(
    data_dir,
    splits=SPLITS,
    image_size: int = 256,
    limit: int | None = None,
    cache: bool = True,
    cache_dir=None,
    workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Load OASIS-style PNG slices as one uint8 ``(N, S, S)`` array (the PNG values, 0..255).

    The arguments are ``load_oasis``'s.  With the cache on, the array is the
    cache file memory-mapped read-only: a second load takes milliseconds at
    any size, only the pages a batch touches come into memory, and a set
    larger than memory can be trained on.  A first load decodes the PNGs
    straight into a new cache file, so it does not need the memory either.
    Without the cache (or where its folder cannot be written) the array is
    an ordinary one in memory.
    """
    _check_load_arguments(image_size, limit)
    files = list_slice_files(data_dir, splits)
    if limit is not None:
        files = files[:limit]
    if not cache:
        return _read_all(files, image_size, workers, progress)

    shape = (len(files), image_size, image_size)
    cache_path = Path(cache_dir or default_cache_dir()) / f"slices-{_cache_key(files, image_size)}.npy"
    cached = _open_cache(cache_path, files, image_size)
    if cached is not None:
        return cached
    target = _new_cache_file(cache_path, shape)
    if target is None:  # no room or no permission for a cache: decode into memory
        return _read_all(files, image_size, workers, progress)
    pixels, temporary = target
    try:
        _read_all(files, image_size, workers, progress, pixels)
        pixels.flush()
        del pixels
        os.replace(temporary, cache_path)
    finally:
        temporary.unlink(missing_ok=True)  # after a failed decode; gone already after the replace
    return np.load(cache_path, mmap_mode="r")


def load_oasis(
    data_dir,
    splits=SPLITS,
    image_size: int = 256,
    limit: int | None = None,
    cache: bool = True,
    cache_dir=None,
    workers: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Load OASIS-style PNG slices into one float32 ``(N, S, S, 1)`` array in [-1, 1].

    data_dir:   the folder that holds the ``keras_png_slices_*`` folders.
    splits:     which of "train", "validate", "test" to read, in this order;
                files within a split are in natural order (case, then slice).
    image_size: side S of the returned images; other sizes are resized.
    limit:      read only the first ``limit`` files (after ordering).
    cache:      keep a decoded copy (uint8) keyed on the files' names, sizes
                and modification times; any change to the folder invalidates it.

    Training keeps ``load_pixels``'s uint8 array instead (a quarter of the
    memory, memory-mapped) and converts each batch where it is gathered.
    """
    return to_float_images(load_pixels(data_dir, splits, image_size, limit, cache, cache_dir, workers, progress))


def random_subset(images: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` images drawn without replacement (all of them if fewer), kept in data order."""
    chosen = rng.choice(len(images), size=min(count, len(images)), replace=False)
    return images[np.sort(chosen)]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [-1, 1] (any leading shape, optional channel) -> uint8 0..255; NaN (a diverged
    generator's) shows as black."""
    images = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=-1.0, posinf=1.0, neginf=-1.0)
    if images.ndim >= 3 and images.shape[-1] == 1:
        images = images[..., 0]
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile ``(N, H, W[, 1])`` images in [-1, 1] into one uint8 grid (black gaps)."""
    pixels = to_uint8(images)
    count, height, width = pixels.shape
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding), np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    return grid


def save_png(path, pixels: np.ndarray) -> None:
    """Write a 2-D uint8 array as a grayscale PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    Image.fromarray(pixels, mode=None).save(temporary, format="PNG")
    os.replace(temporary, path)


def save_image_grid(path, images: np.ndarray, columns: int | None = None) -> None:
    """Save images in [-1, 1] as one PNG grid."""
    save_png(path, image_grid(images, columns))


def training_folder(config, progress: bool = False) -> Path:
    """The folder a run config (config.TrainConfig) trains on: its data_dir, or its demo cohort (built on first use)."""
    if config.demo:
        return make_demo_dataset(config.demo_root, n_subjects=config.demo_subjects, seed=config.demo_seed,
                                 progress=progress)
    return resolve_data_dir(config.data_dir)


def demo_cohort_name(config) -> str:
    """How a run config's demo cohort is named in printed lines: "demo cohort (48 subjects) in data/demo"."""
    seed = f", cohort seed {config.demo_seed}" if config.demo_seed else ""
    return f"demo cohort ({config.demo_subjects} subjects{seed}) in {config.demo_root}"


def make_demo_dataset(root, n_subjects: int = 48, seed: int = 0, workers: int | None = None, progress: bool = False) -> Path:
    """Write the demo cohort under ``root`` and return the data_dir for load_oasis.

    Each subject is the MNI152 template under its own deformation, atrophy,
    contrast, bias field and noise, cut into 32 axial 256x256 slices and
    written with OASIS names and a subject-level train/validate/test split.
    An existing cohort built with the same settings is reused.
    """
    from oasis_gan.demo_cohort import build_demo_cohort

    folders = {split: SPLIT_FOLDER.format(split) for split in SPLITS}
    return build_demo_cohort(Path(root) / DATASET_FOLDER, folders, n_subjects=n_subjects, seed=seed,
                             workers=workers, progress=progress)
