"""The core formulas against values worked out by hand on tiny inputs.

The measures (realism, recall, level distance and its noise floor, diversity,
near-copies) are composed in ``evaluate.compare_with_real`` from SSIM
searches. Here the SSIM is swapped for a similarity whose values can be
worked out on paper: each image is a constant grey level ``v`` and two
images are ``1 - |v1 - v2| / 2`` alike. Every number asserted below is
written out in the comments, so a wrong formula (a swapped ratio, another
percentile, the whole training set where a subset of N belongs) gives a
wrong number, not a number that is merely in range.
"""

import json
import re

import numpy as np
import pytest

import evaluate
import metrics
from oasis_gan.engines import objectives


def grey_images(levels) -> np.ndarray:
    """One 8x8 image per value, every pixel that value: (N, 8, 8, 1) in [-1, 1]."""
    return np.repeat(np.asarray(levels, np.float32), 64).reshape(-1, 8, 8, 1)


def similarity(queries, references) -> np.ndarray:
    """The stand-in for SSIM: 1 - |a - b| / 2 between the images' grey levels."""
    a = np.asarray(queries, np.float64).reshape(len(queries), -1)[:, 0]
    b = np.asarray(references, np.float64).reshape(len(references), -1)[:, 0]
    return 1.0 - np.abs(a[:, None] - b[None, :]) / 2.0


@pytest.fixture
def grey_ssim(monkeypatch):
    """metrics' SSIM searches, computed with ``similarity`` (ties to the lower index, as the real one)."""

    def search(queries, references, top_k=1):
        scores = similarity(queries, references)
        order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :top_k]
        return order, np.take_along_axis(scores, order, axis=1)

    def pairwise_mean(images):
        matrix = similarity(images, images)
        return float(matrix[np.triu_indices(len(images), k=1)].mean())

    monkeypatch.setattr(metrics, "ssim_search", search)
    monkeypatch.setattr(metrics, "nearest_neighbour_scores", lambda q, r: search(q, r)[1][:, 0])
    monkeypatch.setattr(metrics, "mean_pairwise_ssim", pairwise_mean)


def test_the_stand_in_similarity_ranks_as_worked_out(grey_ssim):
    indices, scores = metrics.ssim_search(grey_images([0.5]), grey_images([0.0, 0.75, 0.25]), top_k=3)
    assert indices.tolist() == [[1, 2, 0]]  # 0.75 and 0.25 tie at 0.875: the lower index first
    np.testing.assert_allclose(scores, [[0.875, 0.875, 0.75]])


def test_every_measure_against_its_hand_computed_value(grey_ssim):
    # Three training slices at levels 0, 12, 28 (bands 0, 3 and 7 of eight); two held-out slices; four
    # samples.  N = 4 is at least the training set's size, so "N random training slices" are all three.
    train, train_levels = grey_images([-0.6, 0.0, 0.6]), [0, 12, 28]
    test = grey_images([-0.5, 0.4])
    generated = grey_images([-0.55, -0.2, 0.45, 0.6])
    report, indices, scores = evaluate.compare_with_real(generated, train, test, test_held_out=True,
                                                         train_levels=train_levels, seed=0)
    # Best matches in train: -0.55 -> -0.6 (0.975), -0.2 -> 0.0 (0.9), 0.45 -> 0.6 (0.925), 0.6 -> 0.6 (1).
    assert indices[:, 0].tolist() == [0, 1, 2, 2]
    np.testing.assert_allclose(scores[:, 0], [0.975, 0.9, 0.925, 1.0])
    assert report["nn_ssim_median"] == pytest.approx(0.95)  # median of 0.9, 0.925, 0.975, 1.0
    assert report["nn_ssim_p10"] == pytest.approx(np.percentile([0.9, 0.925, 0.975, 1.0], 10))
    assert report["nn_ssim_p90"] == pytest.approx(np.percentile([0.9, 0.925, 0.975, 1.0], 90))
    assert report["memorized_fraction"] == pytest.approx(0.5)  # 0.975 and 1.0 are above 0.95
    # Diversity: the six pairs of samples, 0.825 0.5 0.425 0.675 0.6 0.925 -> 3.95 / 6; the three
    # training slices' pairs 0.7 0.4 0.7 -> 0.6.
    assert report["diversity_ssim_generated"] == pytest.approx(3.95 / 6)
    assert report["diversity_ssim_real"] == pytest.approx(0.6)
    assert report["diversity_ratio"] == pytest.approx(3.95 / 6 / 0.6)
    # Levels of the best matches: 0, 12, 28, 28 -> bands 0, 3, 7 at 1/4, 1/4, 1/2 against 1/3 each:
    # total variation (1/12 + 1/12 + 1/6) / 2 = 1/6.
    assert report["level_distance"] == pytest.approx(1 / 6)
    # Samples against the held-out slices: 0.975, 0.85, 0.975, 0.9 -> median 0.9375.
    assert report["test_nn_ssim_median"] == pytest.approx(0.9375)
    # Yardstick: the held-out slices' best matches in train: -0.5 -> -0.6 (0.95), 0.4 -> 0.6 (0.9).
    assert report["real_test_nn_ssim_median"] == pytest.approx(0.925)
    assert report["realism"] == pytest.approx(0.95 / 0.925)  # the samples' median over the yardstick's
    # Recall: the held-out slices' best matches among the samples, -0.5 -> -0.55 (0.975) and
    # 0.4 -> 0.45 (0.975), over the same among the (three) training slices, 0.925.
    assert report["recall"] == pytest.approx(0.975 / 0.925)
    assert report["recall_n_real"] == 2
    # 95 % bootstrap intervals (1000 resamples, the stream [seed, 12]): realism's is the median of the
    # samples' best scores over the median of the yardstick's, each drawn again with replacement
    # (whichever order the held-out slices were taken in).  Recall's rows are paired: -0.5 is 0.975 alike
    # its best sample and 0.95 its best training slice, 0.4 is 0.975 and 0.9, so a resample of both rows
    # gives 0.975 / 0.925 and one of a single row 0.975 / 0.95 or 0.975 / 0.9, the interval's two ends.
    def realism_interval(yardstick):
        return metrics.bootstrap_interval(lambda ours, real: np.median(ours) / np.median(real),
                                          [0.975, 0.9, 0.925, 1.0], yardstick, rng=np.random.default_rng([0, 12]))

    low, high = report["realism_interval"]
    assert any(np.allclose([low, high], realism_interval(order)) for order in ([0.95, 0.9], [0.9, 0.95]))
    assert 0.9 / 0.95 <= low <= report["realism"] <= high <= 1 / 0.9
    np.testing.assert_allclose(report["recall_interval"], [0.975 / 0.95, 0.975 / 0.9], rtol=1e-6)
    # The real slices' levels (0 and 28) resampled to N = 4 draws hold multiples of 1/4 of bands 0 and
    # 7: against a third in each of bands 0, 3, 7 that is 1/3 (two and two), 5/12 (one and three) or
    # 2/3 (all four in one band).
    assert min(abs(report["level_distance_real"] - value) for value in (1 / 3, 5 / 12, 2 / 3)) < 1e-9


def test_the_level_noise_floor_resamples_the_real_slices_to_as_many_as_the_samples(grey_ssim):
    # Two training slices at levels 0 and 28: half in band 0, half in band 7.  The two held-out slices
    # match one each, the same histogram, so unresampled their distance would be 0.  Resampled to N = 3
    # draws, the shares are thirds, never halves: the distance is 1/6 or 1/2, never 0.
    train, test = grey_images([-0.6, 0.6]), grey_images([-0.5, 0.5])
    for seed in range(4):
        report = evaluate.compare_with_real(grey_images([0.0, 0.1, 0.2]), train, test, test_held_out=True,
                                            train_levels=[0, 28], seed=seed)[0]
        assert min(abs(report["level_distance_real"] - value) for value in (1 / 6, 1 / 2)) < 1e-9
    # With as many held-out slices as samples nothing is resampled: the distance is the plain one.
    report = evaluate.compare_with_real(grey_images([0.0, 0.1]), train, test, test_held_out=True,
                                        train_levels=[0, 28])[0]
    assert report["level_distance_real"] == 0.0


def test_recall_compares_with_n_random_training_slices_not_the_whole_set(grey_ssim):
    # 49 training slices far from the one held-out slice (0.9 against -0.5: 0.3 alike) and one equal
    # to it.  Two samples at 0.0 (0.75 alike).  Two random training slices (seed 0 draws two of the far
    # ones) score 0.3, so recall is 0.75 / 0.3 = 2.5; over the whole training set it would be 0.75.
    train = grey_images([0.9] * 49 + [-0.5])
    report = evaluate.compare_with_real(grey_images([0.0, 0.0]), train, grey_images([-0.5]), test_held_out=True,
                                        seed=0)[0]
    assert report["recall"] == pytest.approx(0.75 / 0.3)


def test_without_a_held_out_split_there_is_no_realism_or_recall(grey_ssim):
    report = evaluate.compare_with_real(grey_images([0.0, 0.5]), grey_images([0.0, 0.4]), grey_images([0.1]),
                                        test_held_out=False)[0]
    assert "realism" not in report and "recall" not in report and "real_test_nn_ssim_median" not in report
    assert report["test_nn_ssim_median"] == pytest.approx(0.875)  # 0.0 -> 0.1 (0.95), 0.5 -> 0.1 (0.8)


def test_summarize_and_the_level_histogram_by_hand():
    assert metrics.summarize([0.1, 0.2, 0.3, 0.4, 1.0]) == pytest.approx(
        {"median": 0.3, "p10": 0.14, "p90": 0.76, "mean": 0.4})
    assert metrics.level_histogram([0, 3, 4, 31, 40]).tolist() == [0.4, 0.2, 0, 0, 0, 0, 0, 0.4]  # 40: the last band
    assert metrics.total_variation([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.level_distance([0, 0, 4, 4], [0, 4, 8, 12]) == pytest.approx(0.5)


def test_the_moving_average_weighs_the_average_by_beta_and_the_new_weight_by_one_minus_beta():
    assert objectives.moving_average(10.0, 0.0, 0.9) == pytest.approx(9.0)
    assert objectives.moving_average(0.0, 10.0, 0.9) == pytest.approx(1.0)
    np.testing.assert_allclose(objectives.moving_average(np.array([2.0, 4.0]), np.array([4.0, 0.0]), 0.75),
                               [2.5, 3.0])


def test_the_ema_decay_halves_the_weight_of_the_past_over_the_half_life():
    # batch 10, half-life 1 kimg = 1000 images = 100 steps: beta ** 100 = 1/2.
    assert objectives.ema_beta(10, 10**6, 1.0) == pytest.approx(0.5 ** (1 / 100))
    # With a ramp of 0.05 after 4000 images the half-life is 200 images = 20 steps.
    assert objectives.ema_beta(10, 4000, 1.0, rampup=0.05) == pytest.approx(0.5 ** (1 / 20))
    assert objectives.ema_beta(10, 10**6, 1.0, rampup=0.05) == pytest.approx(0.5 ** (1 / 100))  # ramp done


def softplus(x) -> np.ndarray:
    return np.log1p(np.exp(np.asarray(x, np.float64)))


def test_the_losses_and_accuracies_by_hand():
    real_logits = np.array([[2.0], [-1.0], [0.5], [3.0], [-2.0]], np.float32)  # D right on 3 of 5
    fake_logits = np.array([[-2.0], [1.0], [-0.5], [0.0], [3.0]], np.float32)  # D right on 2 of 5
    # D: real should score 1 (BCE -log sigmoid(r) = softplus(-r)), generated 0 (softplus(f)).
    expected_d = softplus(-real_logits).mean() + softplus(fake_logits).mean()
    assert float(objectives.discriminator_loss(real_logits, fake_logits)) == pytest.approx(expected_d, rel=1e-5)
    # G, non-saturating: its images should score 1.
    assert float(objectives.generator_loss(fake_logits)) == pytest.approx(softplus(-fake_logits).mean(), rel=1e-5)
    verdicts = {name: float(value) for name, value in objectives.verdict_metrics(real_logits, fake_logits).items()}
    assert verdicts == pytest.approx({"d_acc_real": 0.6, "d_acc_fake": 0.4})  # a logit of 0 is no verdict of fake


def write_checkpoint_files(folder, files: dict):
    from oasis_gan.runs import checkpoints

    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    checkpoints.write_manifest(folder)
    return folder


def test_verify_checkpoint_names_a_missing_a_resized_and_a_changed_file(tmp_path):
    from oasis_gan.runs import checkpoints

    good = write_checkpoint_files(tmp_path / "good", {"a.h5": b"x" * 100, "state.json": b"{}"})
    checkpoints.verify_checkpoint(good)  # passes
    manifest = (good / checkpoints.MANIFEST_FILE).read_text()
    assert "a.h5" in manifest and "state.json" in manifest and checkpoints.MANIFEST_FILE not in manifest.split("files")[1]
    for damage, message in ((lambda f: (f / "a.h5").unlink(), "a.h5 is missing"),
                            (lambda f: (f / "a.h5").write_bytes(b"x" * 99), "a.h5 has 99 bytes"),
                            (lambda f: (f / "a.h5").write_bytes(b"x" * 99 + b"y"), "a.h5 does not match its checksum"),
                            (lambda f: (f / checkpoints.MANIFEST_FILE).write_text("{"), "is unreadable")):
        folder = write_checkpoint_files(tmp_path / f"damaged{len(list(tmp_path.iterdir()))}",
                                        {"a.h5": b"x" * 100, "state.json": b"{}"})
        damage(folder)
        with pytest.raises(checkpoints.CorruptCheckpoint, match=message):
            checkpoints.verify_checkpoint(folder)
    for files, message in (([], "its \"files\" is not a mapping"),
                           ({"../outside.h5": {"bytes": 1, "sha256": "0"}}, "not a file of the checkpoint"),
                           ({"": {"bytes": 1, "sha256": "0"}}, "not a file of the checkpoint"),
                           ({"a.h5": {"bytes": 100}}, "no size and checksum for a.h5"),
                           ({"a.h5": [100]}, "no size and checksum for a.h5")):
        folder = write_checkpoint_files(tmp_path / f"altered{len(list(tmp_path.iterdir()))}",
                                        {"a.h5": b"x" * 100})
        (folder / checkpoints.MANIFEST_FILE).write_text(json.dumps({"files": files}))
        with pytest.raises(checkpoints.CorruptCheckpoint, match=re.escape(message)):
            checkpoints.verify_checkpoint(folder)
    legacy = tmp_path / "legacy"  # written before manifests: nothing to check against
    legacy.mkdir()
    (legacy / "a.h5").write_bytes(b"")
    checkpoints.verify_checkpoint(legacy)


def history(**columns) -> dict:
    rows = len(next(iter(columns.values())))
    return {"step": list(range(1, rows + 1)), **columns}


def test_history_checks_pass_a_consistent_history_and_name_each_broken_rule():
    good = history(g_loss=[0.8, 3.0], d_loss=[1.2, 0.1], d_acc_real=[0.5, 1.0], d_acc_fake=[0.25, 1.0])
    assert evaluate.history_checks(good) == [
        "history: 2 logged steps",
        "losses finite at every logged step: yes",
        "discriminator accuracies within 0 to 1: yes",
        "G loss agrees with D's verdicts on generated images (>= log 2 x accuracy on fakes): yes",
        "D loss agrees with its mistakes (>= log 2 x the share it gets wrong): yes"]
    log_2 = np.log(2.0)
    on_the_bound = history(g_loss=[log_2], d_loss=[log_2], d_acc_real=[0.5], d_acc_fake=[1.0])
    assert all(line.endswith("yes") for line in evaluate.history_checks(on_the_bound)[1:])
    # G trained to be called fake: D is sure of every fake, yet G's loss is near 0.
    wrong_target = history(g_loss=[0.05], d_loss=[0.1], d_acc_real=[1.0], d_acc_fake=[1.0])
    assert [line.endswith("yes") for line in evaluate.history_checks(wrong_target)[1:]] == [True, True, False, True]
    # D's loss low while it gets half the real images wrong.
    wrong_d = history(g_loss=[1.0], d_loss=[0.2], d_acc_real=[0.5], d_acc_fake=[0.5])
    assert [line.endswith("yes") for line in evaluate.history_checks(wrong_d)[1:]] == [True, True, True, False]
    broken = history(g_loss=[float("nan")], d_loss=[1.0], d_acc_real=[1.5], d_acc_fake=[-0.5])
    assert [line.endswith("yes") for line in evaluate.history_checks(broken)[1:3]] == [False, False]
    assert evaluate.history_checks(history(g_loss=[1.0], d_loss=[float("inf")], d_acc_real=[0.5],
                                           d_acc_fake=[0.5]))[1].endswith("NO")


def test_band_lines_say_yes_inside_no_outside_and_name_what_was_not_measured():
    bands = {"realism": (0.95, 1.05), "recall": (0.95, None), "memorized_fraction": (None, 0.0)}
    inside = evaluate.band_lines({"realism": 0.95, "recall": 0.95, "memorized_fraction": 0.0}, bands)
    assert inside == ["realism 0.95 to 1.05: yes", "recall at least 0.95: yes", "near-copy share at most 0: yes"]
    outside = evaluate.band_lines({"realism": 1.06, "recall": 0.94, "memorized_fraction": 0.01}, bands)
    assert outside == ["realism 0.95 to 1.05: NO", "recall at least 0.95: NO", "near-copy share at most 0: NO"]
    assert evaluate.band_lines({"realism": 0.9}, {"realism": (0.95, 1.05)}) == ["realism 0.95 to 1.05: NO"]
    assert evaluate.band_lines({"realism": float("nan")}, {"realism": (None, 2.0)}) == ["realism at most 2: NO"]
    assert evaluate.band_lines({}, {"recall": (0.95, None)}) == ["recall: not measured (no held-out test split)"]


def test_recall_and_its_medians_with_three_held_out_slices_and_the_defaults(grey_ssim):
    # Defaults: the test split held out, the best match only.  Training slices -0.6, 0.0, 0.6 (four
    # samples, so the "N random training slices" are all three); held-out slices -0.5, 0.1, 0.45.
    report, indices, _ = evaluate.compare_with_real(grey_images([-0.5, 0.3, 0.9, 0.95]),
                                                    grey_images([-0.6, 0.0, 0.6]), grey_images([-0.5, 0.1, 0.45]))
    assert indices.shape == (4, 1) and "realism" in report and report["test_held_out"] is True
    # Held-out slices' best matches among the samples: 1.0 (-0.5), 0.9 (0.3), 0.925 (0.3): median 0.925;
    # among the training slices: 0.95, 0.95, 0.925: median 0.95.  (The means would give other numbers.)
    assert report["recall"] == pytest.approx(0.925 / 0.95)
    assert report["recall_n_real"] == 3
    assert 0.0 <= report["search_seconds"] < 60
    assert report["search_pairs_per_s"] == pytest.approx(4 * 3 / max(report["search_seconds"], 1e-9))


def test_the_intervals_resample_medians_of_the_samples_and_of_the_held_out_rows(grey_ssim):
    # Seven held-out slices and eight samples: a resample is rarely one slice seven times, so the interval's
    # ends come from mixed resamples, where a median and a mean differ.  Every sample and held-out slice
    # is matched as ``similarity`` says; what is under test is how compare_with_real composes the matches.
    train = grey_images([-0.6, 0.0, 0.6])
    test = grey_images([-0.5, -0.3, -0.1, 0.1, 0.2, 0.5, 0.9])
    generated = grey_images([-0.9, -0.45, -0.3, 0.05, 0.2, 0.35, 0.7, 1.0])
    report = evaluate.compare_with_real(generated, train, test)[0]  # the default seed, 0
    best = similarity(generated, train).max(1)  # 0.85 0.925 0.85 0.975 0.9 0.875 0.95 0.8
    yardstick = similarity(test, train).max(1)  # N = 8 draws all seven held-out slices, in data order
    # Recall's rows: each held-out slice's best match among the samples and among N random training slices,
    # which with N = 8 are all three: the same matches as the yardstick's.
    among_samples, among_real = similarity(test, generated).max(1), yardstick

    def intervals(centre):  # realism's first, then recall's, from the one stream [seed, 12] = [0, 12]
        rng = np.random.default_rng([0, 12])
        realism = metrics.bootstrap_interval(lambda ours, real: centre(ours) / centre(real), best, yardstick,
                                             rng=rng)
        recall = metrics.bootstrap_interval(
            lambda rows: centre(among_samples[rows.astype(int)]) / centre(among_real[rows.astype(int)]),
            np.arange(7), rng=rng)
        return realism, recall

    (realism, recall), (realism_of_means, recall_of_means) = intervals(np.median), intervals(np.mean)
    np.testing.assert_allclose(report["realism_interval"], realism, rtol=1e-12)
    np.testing.assert_allclose(report["recall_interval"], recall, rtol=1e-12)
    assert not np.allclose(realism, realism_of_means) and not np.allclose(recall, recall_of_means)


def test_the_classifier_runs_only_when_asked_with_the_updates_and_seed_given(grey_ssim, monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate, "two_sample_test", lambda generated, train, updates, seed: calls.append(
        (len(generated), len(train), updates, seed)) or {"classifier_accuracy": 0.75})
    plain = evaluate.compare_with_real(grey_images([0.0, 0.1]), grey_images([0.0, -0.9, 0.5]))[0]
    assert calls == [] and "classifier_accuracy" not in plain  # off by default: it trains a network
    asked = evaluate.compare_with_real(grey_images([0.0, 0.1]), grey_images([0.0, -0.9, 0.5]), seed=4,
                                       classifier_updates=30)[0]
    assert calls == [(2, 3, 30, 4)] and asked["classifier_accuracy"] == 0.75


def test_the_course_bar_and_the_near_copy_share_by_hand(grey_ssim):
    # Best matches 0.55, 0.58, 0.99 (samples 0.9, 0.84, 0.02 against 0.0): median 0.58 is under the
    # course's 0.6 though the mean (0.707) is over it; one sample in three is a near-copy (> 0.95).
    report = evaluate.compare_with_real(grey_images([0.9, 0.84, 0.02]), grey_images([0.0, -0.9]))[0]
    assert report["course_bar_met"] is False
    assert report["memorized_fraction"] == pytest.approx(1 / 3)
    assert "realism" not in report and "test_nn_ssim_median" not in report  # no test split given
    assert "level_distance" not in report  # no slice levels given
    assert evaluate.compare_with_real(grey_images([0.0, 0.1]), grey_images([0.0, -0.9]))[0]["course_bar_met"] is True


def test_the_level_noise_floor_draws_every_held_out_slice(grey_ssim):
    # As above (two held-out slices matching levels 0 and 28, three samples): over ten seeds the resampled
    # shares are sometimes two thirds and one third (1/6), sometimes all in one band (1/2): both slices drawn.
    train, test = grey_images([-0.6, 0.6]), grey_images([-0.5, 0.5])
    distances = [evaluate.compare_with_real(grey_images([0.0, 0.1, 0.2]), train, test, train_levels=[0, 28],
                                            seed=seed)[0]["level_distance_real"] for seed in range(10)]
    assert any(abs(value - 1 / 6) < 1e-9 for value in distances)


def test_level_histogram_edges():
    assert metrics.level_histogram([5]).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="at least one"):
        metrics.level_histogram([])


def test_the_ema_decay_without_a_ramp_keeps_the_half_life_from_the_first_step():
    assert objectives.ema_beta(10, 100, 1.0) == pytest.approx(0.5 ** (10 / 1000))  # no ramp by default


def test_history_checks_hold_on_every_row_not_just_one():
    good_row = dict(g_loss=3.0, d_loss=1.5, d_acc_real=0.5, d_acc_fake=0.5)
    log_2 = float(np.log(2.0))
    bad_rows = {  # the row that breaks one rule, and the line (1-based after the count) that must say NO
        "finite": (dict(good_row, d_loss=float("nan")), 1),
        "finite G": (dict(good_row, g_loss=float("nan")), 1),
        "accuracy on real above 1": (dict(good_row, d_acc_real=1.5), 2),
        "accuracy on fakes above 1": (dict(good_row, d_acc_fake=1.5, g_loss=3.0), 2),
        "G loss": (dict(good_row, g_loss=0.05, d_acc_fake=1.0), 3),
        "D loss": (dict(good_row, d_loss=0.1), 4),
    }
    for name, (bad, line) in bad_rows.items():
        rows = [good_row, bad, good_row]
        lines = evaluate.history_checks(history(**{key: [row[key] for row in rows] for key in good_row}))
        assert lines[line].endswith("NO"), name
        if not name.startswith("finite"):  # a NaN also fails the bounds it is compared with
            assert all(text.endswith("yes") for number, text in enumerate(lines[1:], 1) if number != line), name
    # Within the tolerance of a bound (rounding in a mean over steps) is still agreement; past it is not.
    # Row 1 sits on G's bound (D sure of every fake), row 2 on D's (half of each wrong).
    def on_the_bounds(below):
        return history(g_loss=[log_2 - below, 3.0], d_loss=[3.0, log_2 - below], d_acc_real=[1.0, 0.5],
                       d_acc_fake=[1.0, 0.5])

    assert [text[-3:] for text in evaluate.history_checks(on_the_bounds(0.0005))[3:]] == ["yes", "yes"]
    assert [text[-2:] for text in evaluate.history_checks(on_the_bounds(0.01))[3:]] == ["NO", "NO"]


def test_the_radial_spectrum_and_its_shape_distance_by_hand():
    size = 64
    rows = np.arange(size)
    # a cosine of 8 cycles across the image: all its power at radius 8/32 of Nyquist, ring 4 of 16
    wave = np.repeat(np.cos(2 * np.pi * 8 * rows / size)[None, :], size, axis=0)[None].astype(np.float32) * 0.5
    spectrum = metrics.radial_spectrum(wave)
    assert int(np.argmax(spectrum)) == 4 and spectrum[4] > 1e6 * np.delete(spectrum, 4).max()
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.5, 0.5, (6, size, size)).astype(np.float32)
    assert metrics.spectrum_shape_distance(noise, noise) == 0.0
    # twice the contrast is four times the power in every ring: a constant offset, not another shape
    assert metrics.spectrum_shape_distance(noise, noise / 2) == pytest.approx(0.0, abs=1e-9)
    # smaller images get fewer rings, none of them empty
    assert [metrics.spectrum_rings(side) for side in (8, 32, 64, 256)] == [2, 8, 16, 16]
    assert np.all(metrics.radial_spectrum(noise) > 0) and len(metrics.radial_spectrum(noise)) == 16
