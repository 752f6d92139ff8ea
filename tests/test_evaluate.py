"""evaluate.py end to end on a tiny run, checked against skimage; bad flags."""

import json

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

import metrics
from test_cli import QUICK, run_script


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_dir):
    """8 steps at 32x32 that hold the test split out (seed 000's dcgan: one compiled step, no average to keep;
    what evaluate.py reads is the same for every architecture)."""
    root = tmp_path_factory.mktemp("evaluate")
    run = root / "run"
    run_script("train.py", "--data", demo_dir, "--arch", "dcgan", "--steps", 8, "--splits", "train", "validate",
               "--out", run, *QUICK, cwd=root)
    return run


def test_report_keys_ranges_and_figure(tiny_run, tmp_path):
    out = tmp_path / "report.json"
    result = run_script("evaluate.py", "--run", tiny_run, "--n", 6, "--classifier-updates", 2, "--out", out, "--quiet",
                        cwd=tmp_path)
    report = json.loads(out.read_text())
    # The summary agrees with the per-sample scores it summarises (each can fail when a formula is wrong).
    best = np.array([sample["nn_ssim"] for sample in report["samples"]])
    assert report["nn_ssim_median"] == pytest.approx(np.median(best))
    assert report["nn_ssim_p10"] <= report["nn_ssim_median"] <= report["nn_ssim_p90"]
    assert report["memorized_fraction"] == pytest.approx(np.mean(best > metrics.MEMORIZED_THRESHOLD))
    assert report["test_held_out"] is True and report["held_out_split"] == "test" and report["n_generated"] == 6 and len(report["samples"]) == 6
    assert report["n_train_references"] > report["n_test_references"] > 0
    with Image.open(out.with_suffix(".png")) as figure:
        assert figure.size[0] > figure.size[1]
    assert "best-match SSIM" in result.stdout and "course bar" in result.stdout
    assert report["diversity_ratio"] == pytest.approx(report["diversity_ssim_generated"] / report["diversity_ssim_real"])
    assert report["level_distance"] == pytest.approx(metrics.total_variation(report["level_histogram_generated"],
                                                                             report["level_histogram_train"]))
    # Realism and recall are ratios of SSIM medians, which an 8-step generator's noise can take below 0.
    assert np.isfinite(report["recall"])
    assert report["realism"] == pytest.approx(report["nn_ssim_median"] / report["real_test_nn_ssim_median"])
    assert len(report["level_histogram_generated"]) == 8 and sum(report["level_histogram_train"]) == pytest.approx(1)
    assert (tmp_path / "report-levels.png").is_file() and "realism" in result.stdout and "recall" in result.stdout
    # The intervals of the look measures hold their value; the classifier test ran (2 updates: plumbing only)
    for key in ("realism", "recall", "level_distance", "spectrum_shape", "histogram_distance"):
        low, high = report[f"{key}_interval"]
        assert np.isfinite([low, high]).all() and low <= high, key
    assert report["classifier_n"] == 6 and 0 <= report["classifier_accuracy"] <= 1
    assert "two-sample classifier" in result.stdout


def test_held_out_validate_measures_against_that_split_and_says_when_the_run_trained_on_it(tiny_run, tmp_path):
    out = tmp_path / "validate.json"
    result = run_script("evaluate.py", "--run", tiny_run, "--n", 4, "--held-out", "validate", "--classifier-updates", 0,
                        "--out", out, "--quiet", cwd=tmp_path)
    report = json.loads(out.read_text())
    # tiny_run trained on train and validate: against validate there is no realism or recall to report
    assert report["held_out_split"] == "validate" and report["test_held_out"] is False
    assert "realism" not in report and "recall" not in report and report["n_test_references"] > 0
    assert "validate images (seen in training)" in result.stdout
    result = run_script("evaluate.py", "--run", tiny_run, "--held-out", "train", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--held-out" in result.stderr


def test_best_matches_agree_with_skimage_on_generate_py_images(tiny_run, tmp_path):
    """The same seed gives generate.py's images; each reported match scores as skimage says."""
    out = tmp_path / "report.json"
    run_script("evaluate.py", "--run", tiny_run, "--n", 4, "--seed", 3, "--classifier-updates", 0, "--out", out,
               "--quiet", cwd=tmp_path)
    run_script("generate.py", "--run", tiny_run, "--n", 4, "--seed", 3, "--out", tmp_path / "g.png",
               "--npy", tmp_path / "g.npy", cwd=tmp_path)
    generated = np.load(tmp_path / "g.npy")[..., 0]
    import data_utils

    for image, sample in zip(generated, json.loads(out.read_text())["samples"]):
        real = data_utils.to_float_images(data_utils.read_slice(sample["nn_file"], 32)[None])[0, ..., 0]
        assert structural_similarity(image, real, data_range=2.0) == pytest.approx(sample["nn_ssim"], abs=1e-4)


def test_fid_option_with_random_weights(tiny_run, tmp_path):
    out = tmp_path / "report.json"
    run_script("evaluate.py", "--run", tiny_run, "--n", 4, "--classifier-updates", 0, "--fid", "--inception-weights", "random",
               "--inception-size", 75, "--fid-real", 8, "--out", out, "--quiet", cwd=tmp_path)
    report = json.loads(out.read_text())
    assert np.isfinite(report["fid"]) and report["fid"] >= -1e-6
    assert np.isfinite(report["kid_mean"]) and "not comparable" in report["fid_note"]


def test_frechet_and_kernel_distances_on_known_features():
    from oasis_gan.evaluation import fid

    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 8))
    assert fid.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    shifted = features + 3.0  # same covariance, mean moved by 3 in each of 8 dimensions
    assert fid.frechet_distance(features, shifted) == pytest.approx(9.0 * 8, rel=1e-6)
    same_kid, _ = fid.kernel_inception_distance(features, features, subsets=3, subset_size=100)
    far_kid, _ = fid.kernel_inception_distance(features, shifted, subsets=3, subset_size=100)
    assert abs(same_kid) < 0.01 * far_kid
    with pytest.raises(ValueError, match="features_a"):
        fid.frechet_distance(features[:1], features)


@pytest.mark.parametrize("args, message", [
    (["--n", "1"], "--n: must be at least 2"),
    (["--out", "report.txt"], "--out: must name a .json file"),
    (["--memorized-threshold", "1.5"], "--memorized-threshold"),
    (["--classifier-updates", "-1"], "--classifier-updates: must be 0 (off) or more"),
    (["--data", "no/such/folder"], "--data: no/such/folder does not exist"),
    (["--fid", "--inception-weights", "missing.h5"], "--inception-weights: missing.h5 is not a file"),
])
def test_bad_flags_name_the_flag(tiny_run, tmp_path, args, message):
    result = run_script("evaluate.py", "--run", tiny_run, *args, cwd=tmp_path, check=False)
    assert result.returncode == 2 and message in result.stderr


def test_missing_run_folder_is_named(tmp_path):
    result = run_script("evaluate.py", "--run", tmp_path / "nope", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "--run:" in result.stderr and "nope" in result.stderr
