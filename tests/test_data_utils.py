"""Loading OASIS-style PNG folders, the cache, bad input, and the demo cohort."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data_utils
from data_utils import DataError, load_oasis


def gray(value: int, size: int = 32) -> np.ndarray:
    return np.full((size, size), value, dtype=np.uint8)


def test_values_shape_and_range(tmp_path, make_split):
    pixels = np.zeros((32, 32), np.uint8)
    pixels[:, 16:] = 255
    make_split(tmp_path, "train", {"case_001_slice_0.nii.png": pixels})
    make_split(tmp_path, "validate", {"case_002_slice_0.nii.png": gray(0)})
    make_split(tmp_path, "test", {"case_003_slice_0.nii.png": gray(255)})
    images = load_oasis(tmp_path, image_size=32)
    assert images.shape == (3, 32, 32, 1)
    assert images.dtype == np.float32
    assert images[0, 0, 0, 0] == -1.0 and images[0, 0, 31, 0] == 1.0
    assert images.min() == -1.0 and images.max() == 1.0


def test_natural_order_within_and_across_splits(tmp_path, make_split):
    names = ["case_10_slice_0.nii.png", "case_2_slice_10.nii.png", "case_2_slice_9.nii.png", "case_2_slice_0.nii.png"]
    make_split(tmp_path, "train", {name: gray(i * 10) for i, name in enumerate(names)})
    make_split(tmp_path, "validate", {"case_1_slice_0.nii.png": gray(200)})
    files = data_utils.list_slice_files(tmp_path, splits=("train", "validate"))
    assert [f.name for f in files] == [
        "case_2_slice_0.nii.png", "case_2_slice_9.nii.png", "case_2_slice_10.nii.png",
        "case_10_slice_0.nii.png", "case_1_slice_0.nii.png",
    ]
    images = load_oasis(tmp_path, splits=("train", "validate"), image_size=32)
    assert data_utils.to_uint8(images)[:, 0, 0].tolist() == [30, 20, 10, 0, 200]


def test_splits_subset_and_limit(tmp_path, make_split):
    make_split(tmp_path, "train", {f"case_1_slice_{i}.nii.png": gray(i) for i in range(5)})
    make_split(tmp_path, "test", {"case_9_slice_0.nii.png": gray(99)})
    assert load_oasis(tmp_path, splits=("test",), image_size=32).shape[0] == 1
    limited = load_oasis(tmp_path, splits=("train", "test"), image_size=32, limit=3)
    assert data_utils.to_uint8(limited)[:, 0, 0].tolist() == [0, 1, 2]


def test_parent_folder_is_accepted(tmp_path, make_split):
    make_split(tmp_path / "keras_png_slices_data", "train", {"case_1_slice_0.nii.png": gray(7)})
    assert load_oasis(tmp_path, splits=("train",), image_size=32).shape == (1, 32, 32, 1)


def test_rgb_rgba_palette_and_16_bit_are_converted(tmp_path):
    folder = tmp_path / "keras_png_slices_train"
    folder.mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8), "RGB").save(folder / "case_1_slice_0.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :16, 3] = 255  # left half opaque, right half transparent -> black
    Image.fromarray(rgba, "RGBA").save(folder / "case_1_slice_1.png")
    Image.fromarray(gray(90)).convert("P").save(folder / "case_1_slice_2.png")
    Image.fromarray(np.full((32, 32), 65535, np.uint16)).save(folder / "case_1_slice_3.png")
    Image.fromarray(np.full((32, 32), 257 * 40, np.uint16)).save(folder / "case_1_slice_4.png")
    pixels = data_utils.to_uint8(load_oasis(tmp_path, splits=("train",), image_size=32))
    assert pixels[0].min() == pixels[0].max() == 128
    assert pixels[1, 0, 0] == 200 and pixels[1, 0, 31] == 0
    assert pixels[2, 5, 5] == 90
    assert pixels[3, 5, 5] == 255
    assert pixels[4, 5, 5] == 40


def test_other_sizes_are_padded_and_resized(tmp_path, make_split):
    wide = np.full((40, 80), 255, np.uint8)  # not square: padded with black above and below
    make_split(tmp_path, "train", {"case_1_slice_0.png": wide, "case_1_slice_1.png": gray(60, size=16)})
    pixels = data_utils.to_uint8(load_oasis(tmp_path, splits=("train",), image_size=32))
    assert pixels.shape == (2, 32, 32)
    assert pixels[0, 0, 16] == 0 and pixels[0, 16, 16] == 255  # aspect kept: black bands top and bottom
    assert pixels[1].min() == pixels[1].max() == 60


@pytest.mark.parametrize("content", [b"not a png at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_file_is_named(tmp_path, make_split, content):
    make_split(tmp_path, "train", {"case_1_slice_0.png": gray(1)})
    bad = tmp_path / "keras_png_slices_train" / "case_1_slice_1.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match="case_1_slice_1.png"):
        load_oasis(tmp_path, splits=("train",), image_size=32)
    cache = data_utils.default_cache_dir()
    assert not cache.exists() or not list(cache.iterdir())  # no half-decoded cache file left behind


def test_missing_and_empty_folders(tmp_path, make_split):
    with pytest.raises(DataError, match="does not exist"):
        load_oasis(tmp_path / "nowhere")
    with pytest.raises(DataError, match="holds no keras_png_slices_"):
        load_oasis(tmp_path)
    (tmp_path / "keras_png_slices_train").mkdir()
    with pytest.raises(DataError, match="keras_png_slices_train holds no .png"):
        load_oasis(tmp_path, splits=("train",))
    with pytest.raises(DataError, match="keras_png_slices_validate does not exist"):
        load_oasis(tmp_path, splits=("validate",))
    with pytest.raises(DataError, match="single split folder"):
        load_oasis(tmp_path / "keras_png_slices_train")


def test_bad_arguments(tmp_path, make_split):
    make_split(tmp_path, "train", {"case_1_slice_0.png": gray(1)})
    with pytest.raises(DataError, match="splits"):
        load_oasis(tmp_path, splits=("training",))
    with pytest.raises(DataError, match="image_size"):
        load_oasis(tmp_path, image_size=0)
    with pytest.raises(DataError, match="limit"):
        load_oasis(tmp_path, splits=("train",), limit=0)


def test_cache_is_used_and_invalidated(tmp_path, make_split, monkeypatch, private_cache):
    folder = make_split(tmp_path, "train", {"case_1_slice_0.png": gray(10), "case_1_slice_1.png": gray(20)})
    first = load_oasis(tmp_path, splits=("train",), image_size=32)
    assert len(list(private_cache.glob("slices-*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded every PNG although the cache was valid")

    monkeypatch.setattr(data_utils, "_read_all", no_decoding)  # a few rows are decoded again to check the cache
    np.testing.assert_array_equal(load_oasis(tmp_path, splits=("train",), image_size=32), first)

    monkeypatch.undo()
    monkeypatch.setenv("OASIS_GAN_CACHE", str(private_cache))
    Image.fromarray(gray(30)).save(folder / "case_1_slice_1.png")
    stat = os.stat(folder / "case_1_slice_1.png")
    os.utime(folder / "case_1_slice_1.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = data_utils.to_uint8(load_oasis(tmp_path, splits=("train",), image_size=32))
    assert changed[:, 0, 0].tolist() == [10, 30]


def test_pixels_are_memory_mapped_from_the_cache_and_match_load_oasis(tmp_path, make_split, private_cache):
    make_split(tmp_path, "train", {f"case_1_slice_{i}.png": gray(40 * i) for i in range(3)})
    for _ in range(2):  # a first load (decoded into the cache file) and a cache hit
        pixels = data_utils.load_pixels(tmp_path, splits=("train",), image_size=32)
        assert isinstance(pixels, np.memmap) and pixels.dtype == np.uint8 and pixels.shape == (3, 32, 32)
        assert not pixels.flags.writeable
        assert pixels[:, 0, 0].tolist() == [0, 40, 80]
    assert [path.suffix for path in private_cache.iterdir()] == [".npy"]  # no temporary file left
    np.testing.assert_array_equal(data_utils.to_float_images(pixels), load_oasis(tmp_path, splits=("train",),
                                                                                 image_size=32))
    in_memory = data_utils.load_pixels(tmp_path, splits=("train",), image_size=32, cache=False)
    assert not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(in_memory, pixels)


def test_a_disk_too_full_for_the_cache_loads_in_memory(tmp_path, make_split, private_cache, monkeypatch):
    make_split(tmp_path, "train", {"case_1_slice_0.png": gray(10), "case_1_slice_1.png": gray(20)})

    def no_space(descriptor, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    pixels = data_utils.load_pixels(tmp_path, splits=("train",), image_size=32)
    assert not isinstance(pixels, np.memmap) and pixels[:, 0, 0].tolist() == [10, 20]
    assert not list(private_cache.iterdir())  # the reserved file was removed


def test_a_truncated_cache_file_is_decoded_again(tmp_path, make_split, private_cache):
    make_split(tmp_path, "train", {"case_1_slice_0.png": gray(10), "case_1_slice_1.png": gray(20)})
    data_utils.load_pixels(tmp_path, splits=("train",), image_size=32)
    (cache_file,) = private_cache.glob("slices-*.npy")
    cache_file.write_bytes(cache_file.read_bytes()[:300])  # a copy cut short
    assert data_utils.load_pixels(tmp_path, splits=("train",), image_size=32)[:, 0, 0].tolist() == [10, 20]
    assert cache_file.stat().st_size > 2 * 32 * 32  # written whole again


def test_image_grid_tiles_images():
    images = np.stack([np.full((8, 8, 1), v, np.float32) for v in (-1.0, 1.0, 0.0)])
    grid = data_utils.image_grid(images, columns=2, padding=1)
    assert grid.shape == (1 + 2 * 9, 1 + 2 * 9)
    assert grid[1, 1] == 0 and grid[1, 10] == 255 and grid[10, 1] == 128 and grid[10, 10] == 0


# ------------------------------------------------------------- demo cohort


def test_demo_cohort_layout_and_split(demo_dir):
    files = {split: sorted(p.name for p in (demo_dir / f"keras_png_slices_{split}").glob("*.png"))
             for split in ("train", "validate", "test")}
    assert sum(len(names) for names in files.values()) == 3 * 32
    cases = {split: {name.split("_slice_")[0] for name in names} for split, names in files.items()}
    assert all(len(found) == 1 for found in cases.values())  # one subject per split here
    assert not (cases["train"] & cases["validate"]) and not (cases["train"] & cases["test"])
    for names in files.values():
        assert {name.split("_slice_")[1] for name in names} == {f"{i}.nii.png" for i in range(32)}


def test_demo_slices_look_like_brains(demo_dir):
    images = load_oasis(demo_dir, image_size=256)
    assert images.shape == (96, 256, 256, 1)
    assert np.all(images[:, :8, :8] == -1.0)  # black background in the corners
    middle = images[16, 96:160, 96:160]  # the centre of a slice: tissue (ventricles too), no background
    assert (middle > -1 + 2 * 15 / 255).mean() > 0.95
    assert images[16].std() > 0.3  # tissue contrast, not a flat blob
    # subjects differ (deformation, contrast, noise), not copies of the template
    first_subject = data_utils.to_uint8(images[:32]).astype(int)
    second_subject = data_utils.to_uint8(images[32:64]).astype(int)
    assert np.abs(first_subject - second_subject).mean() > 5


def test_demo_cohort_is_deterministic_and_reused(tmp_path, demo_dir):
    from oasis_gan import demo_cohort

    again = demo_cohort.render_subject(0, 1)
    stored = data_utils.read_slice(next(demo_dir.glob("*/case_001_slice_5.nii.png")), 256)
    np.testing.assert_array_equal(again[5], stored)
    assert not np.array_equal(demo_cohort.render_subject(1, 1)[5], stored)
    before = {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*.png")}
    assert data_utils.make_demo_dataset(demo_dir.parent, n_subjects=3, seed=0) == demo_dir
    assert {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*.png")} == before


def test_the_demo_seed_chooses_the_cohort_and_the_training_seed_does_not(monkeypatch):
    from oasis_gan import demo_cohort
    from oasis_gan.config import ConfigError, TrainConfig

    built = []
    monkeypatch.setattr(data_utils, "make_demo_dataset", lambda root, **settings: built.append(settings))
    for config in (TrainConfig(demo=True, steps=1, seed=5), TrainConfig(demo=True, steps=1, demo_seed=2)):
        data_utils.training_folder(config.validate())
    assert [settings["seed"] for settings in built] == [0, 2]
    # another cohort seed: other subjects, split otherwise
    assert not np.array_equal(demo_cohort.render_subject(2, 1)[16], demo_cohort.render_subject(0, 1)[16])
    assert demo_cohort.subject_splits(48, 2) != demo_cohort.subject_splits(48, 0)
    assert data_utils.demo_cohort_name(TrainConfig(demo=True, steps=1)) == "demo cohort (48 subjects) in data/demo"
    assert "cohort seed 2" in data_utils.demo_cohort_name(TrainConfig(demo=True, steps=1, demo_seed=2))
    with pytest.raises(ConfigError, match="demo_seed"):
        TrainConfig(demo=True, steps=1, demo_seed=-1).validate()
    # a run folder from before the setting trained on cohort 0, and resumes and evaluates on it
    from oasis_gan.runs.run_folder import settings_from

    assert settings_from({"arch": "dcgan-ada", "demo": True, "steps": 1}, Path("config.json")).demo_seed == 0


def test_demo_cohort_refuses_to_overwrite_foreign_data(tmp_path):
    foreign = tmp_path / "keras_png_slices_data" / "keras_png_slices_train"
    foreign.mkdir(parents=True)
    (foreign / "mine.png").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="left untouched"):
        data_utils.make_demo_dataset(tmp_path, n_subjects=3)
    assert (foreign / "mine.png").read_bytes() == b"precious"


def test_a_second_builder_waits_for_the_first_and_reuses_its_cohort(tmp_path, monkeypatch):
    # Two notebooks (or runs) started together on a fresh machine: one builds, the other waits for it.
    import threading

    from oasis_gan import demo_cohort

    real_write, written, started = demo_cohort._write_subject, [], threading.Event()

    def counted(job):
        started.set()
        written.append(job[1])
        return real_write(job)

    monkeypatch.setattr(demo_cohort, "_write_subject", counted)
    results = []
    first = threading.Thread(target=lambda: results.append(data_utils.make_demo_dataset(tmp_path, 3, workers=1)))
    first.start()
    started.wait(60)
    results.append(data_utils.make_demo_dataset(tmp_path, 3, workers=1))  # starts while the first is building
    first.join(120)
    assert results == [tmp_path / "keras_png_slices_data"] * 2
    assert sorted(written) == [1, 2, 3]  # each subject rendered once: the second builder built nothing


def test_a_cohort_another_process_finishes_first_is_kept_and_ours_discarded(tmp_path, monkeypatch):
    # Where there is no lock (no fcntl), two builders run at once; the one that finishes second must not
    # delete the copy the first may already be reading.
    import contextlib

    from oasis_gan import demo_cohort

    monkeypatch.setattr(demo_cohort, "_one_builder", lambda data_dir: contextlib.nullcontext())
    target = tmp_path / "keras_png_slices_data"
    real_write = demo_cohort._write_subject
    theirs = {}

    def other_process_finishes_first(job):
        if not theirs:
            monkeypatch.setattr(demo_cohort, "_write_subject", real_write)
            data_utils.make_demo_dataset(tmp_path, n_subjects=3, workers=1)
            theirs.update({p: p.stat().st_ino for p in target.rglob("*.png")})
        return real_write(job)

    monkeypatch.setattr(demo_cohort, "_write_subject", other_process_finishes_first)
    assert data_utils.make_demo_dataset(tmp_path, n_subjects=3, workers=1) == target
    assert theirs and {p: p.stat().st_ino for p in target.rglob("*.png")} == theirs
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []  # no staging left behind


def test_a_cohort_of_other_settings_is_replaced_once_the_new_one_is_complete(tmp_path):
    first = data_utils.make_demo_dataset(tmp_path, n_subjects=3, workers=1)
    assert len(list(first.rglob("*.png"))) == 3 * 32
    again = data_utils.make_demo_dataset(tmp_path, n_subjects=4, workers=1)
    assert again == first and len(list(again.rglob("*.png"))) == 4 * 32
    assert [p.name for p in tmp_path.iterdir() if ".old-" in p.name] == []  # the old one is gone too


def test_a_diverged_generator_s_nan_and_inf_pixels_become_black_and_white_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warned "invalid value encountered in cast" on NaN
        pixels = data_utils.to_uint8(np.array([[np.nan, 1.0, -1.0, np.inf, -np.inf, 0.0]], np.float32))
    assert pixels.tolist() == [[0, 255, 0, 255, 0, 128]]
