"""Report on a trained run's samples: fidelity, memorisation and diversity by SSIM.

    python evaluate.py --run runs/dcgan-ada-64px-001 --n 64              # against the data the run used
    python evaluate.py --run RUN --demo --n 64 --out report.json
    python evaluate.py --run RUN --data /path/to/oasis --n 200 --fid --inception-weights imagenet

For N generated images (seeded latents) it finds each one's most similar
real image by SSIM (exact: skimage's, data_range 2; see metrics.py) among the images the run
trained on, and among the test split, and writes REPORT.json:

  nn_ssim_median/p10/p90     best-match SSIM against the training images
                             (the course bar is a median above 0.6, plots.COURSE_SSIM_BAR)
  test_nn_ssim_*             the same against the test split
  real_test_nn_ssim_*        real test images against the training images:
                             what a genuinely new brain scores (only when the
                             run held the test split out)
  memorized_fraction         share of samples whose best match is above
                             --memorized-threshold (a near-copy)
  diversity_ssim_generated   mean SSIM between pairs of generated images, and
  diversity_ssim_real        the same for N random training images; a much
                             higher value for the generated set is mode collapse
  spectrum_shape             how far the shape of the samples' power spectrum (over
  spectrum_shape_real        rings of spatial frequency) is from the held-out
                             slices': softness and grain both show; _real is N real
                             training slices' distance, the noise at N (held out only)
  histogram_distance(_real)  the intensity histogram's distance from the held-out
                             slices' (0 the same, 1 disjoint), and N real training slices',
                             over the visible pixels (above 8 of 255; _nonzero: above 0)
  ring_contrast(_real),      the scalp ring's contrast and the sharpness inside
  sharpness(_real)           the head (appearance.py), the samples' and real slices'
  classifier_accuracy        how often a small CNN, trained on other slices, tells a
  classifier_accuracy_real   sample from a real training slice (0.5: it cannot); _real:
                             the same for N other training slices (--classifier-updates 0: off)
  *_interval                 95 % bootstrap intervals (realism, recall, level distance,
                             spectrum shape, histogram distance, classifier accuracy)
  fid, kid_mean, kid_std     with --fid (Keras InceptionV3; see fid.py)

and REPORT.png: the worst, median and best matches side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

import data_utils
import metrics
from oasis_gan import cli
from oasis_gan.evaluation import appearance, classifier
from oasis_gan.plots import COURSE_SSIM_BAR

DEFAULT_N = 64
HELD_OUT_SPLITS = ("test", "validate")
BOOTSTRAP_RESAMPLES = 1000  # for the 95 % intervals (realism, recall, level distance, spectrum, histogram)
FIGURE_PICKS = ("worst", "p10", "median", "p90", "best")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_run_flags(parser)
    cli.add_data_flags(parser, "compare with")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"generated images (default {DEFAULT_N})")
    parser.add_argument("--out", help="report JSON (default RUN/evaluation.json); the figure goes beside it (.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents and the real subsets (default 0)")
    parser.add_argument("--held-out", default="test", choices=HELD_OUT_SPLITS,
                        help="the split the samples are measured against (default test). Choose settings on "
                             "validate (train with --splits train), report on test once")
    parser.add_argument("--memorized-threshold", type=float, default=metrics.MEMORIZED_THRESHOLD,
                        help=f"best-match SSIM above which a sample counts as a near-copy "
                             f"(default {metrics.MEMORIZED_THRESHOLD})")
    parser.add_argument("--classifier-updates", type=int, default=classifier.UPDATES,
                        help="batches each two-sample classifier trains on per fold (default %(default)s: about 30 s for both at "
                             "64x64 on 2 CPU cores, 16 times that at 256x256); 0 leaves the classifier test out")
    parser.add_argument("--fid", action="store_true", help="also compute FID and KID (InceptionV3 features)")
    parser.add_argument("--inception-weights", default="imagenet",
                        help="'imagenet' (downloaded once), a local weights file, or 'random' (plumbing check)")
    parser.add_argument("--fid-real", type=int, default=2048, help="real images for FID/KID (default 2048)")
    parser.add_argument("--inception-size", type=int, default=299, help="InceptionV3 input size (default 299)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Each flag's own rule (cli.require names the flag), before anything is loaded."""
    weights = args.inception_weights
    for condition, flag, message in (
        (args.n >= 2, "--n", f"must be at least 2 (diversity compares pairs), got {args.n}"),
        (args.seed >= 0, "--seed", f"must be a non-negative integer, got {args.seed}"),
        (0.0 < args.memorized_threshold <= 1.0, "--memorized-threshold", f"must be in (0, 1], got {args.memorized_threshold}"),
        (not args.out or args.out.lower().endswith(".json"), "--out", f"must name a .json file, got {args.out!r}"),
        (args.classifier_updates >= 0, "--classifier-updates", f"must be 0 (off) or more, got {args.classifier_updates}"),
        (args.fid_real >= 2, "--fid-real", f"must be at least 2, got {args.fid_real}"),
        (not args.data or Path(args.data).exists(), "--data", f"{args.data} does not exist"),
        (not args.fid or args.inception_size >= 75, "--inception-size", f"InceptionV3 needs at least 75, got {args.inception_size}"),
        (not args.fid or weights in ("imagenet", "random") or Path(weights).is_file(), "--inception-weights",
         f"{weights} is not a file (or give 'imagenet' / 'random')"),
    ):
        cli.require(parser, condition, flag, message)


SEARCH_COPIES = 8  # float32 images held per sample while its best matches are searched (the images, SSIM's maps)


def data_source(config, data_dir=None, demo: bool = False, progress: bool = True) -> tuple[Path, str]:
    """The folder to compare with: ``data_dir``, the demo cohort, or else the data the run trained on."""
    from oasis_gan.config import TrainConfig

    if data_dir:
        return data_utils.resolve_data_dir(data_dir), f"data folder {data_dir}"
    if demo and not config.demo:  # a run on real data compared with the default demo cohort
        config = TrainConfig(demo=True, steps=1)
    if config.demo:
        return data_utils.training_folder(config, progress), data_utils.demo_cohort_name(config)
    return data_utils.resolve_data_dir(config.data_dir), f"data folder {config.data_dir} (the run's own)"


def reference_images(config, data_dir=None, demo: bool = False, held_out: str = "test", progress: bool = True):
    """The real images a run's samples are compared with -> (train, train_files, held-out images, description).

    ``train`` is what the run trained on (its splits, at its size); the
    held-out images are the split ``held_out`` (HELD_OUT_SPLITS); the folder
    is ``data_dir``, the demo cohort, or the run's own data (``data_source``).
    """
    if held_out not in HELD_OUT_SPLITS:
        raise ValueError(f"held_out: must be one of {HELD_OUT_SPLITS}, got {held_out!r}")
    folder, description = data_source(config, data_dir, demo, progress)
    train_files = data_utils.list_slice_files(folder, config.splits)[: config.limit]
    train = data_utils.load_oasis(folder, config.splits, config.image_size, limit=config.limit, progress=progress)
    return train, train_files, data_utils.load_oasis(folder, (held_out,), config.image_size, progress=progress), description


def percentile_summary(prefix: str, scores: np.ndarray) -> dict:
    return {f"{prefix}_{key}": value for key, value in metrics.summarize(scores).items()}


def figure_picks(scores: np.ndarray) -> list[tuple[str, int]]:
    """Sample indices for the figure: worst, 10th percentile, median, 90th percentile, best."""
    order = np.argsort(scores, kind="stable")
    positions = (0, len(order) // 10, len(order) // 2, (9 * len(order)) // 10, len(order) - 1)
    return [(label, int(order[position])) for label, position in zip(FIGURE_PICKS, positions)]


def matches_figure(generated: np.ndarray, references: np.ndarray, best_index: np.ndarray, best_score: np.ndarray):
    """The worst, p10, median, p90 and best samples beside their best matches (a matplotlib Figure)."""
    from oasis_gan import plots

    picks = figure_picks(best_score)
    return plots.matches_figure(
        [generated[i] for _, i in picks], [references[best_index[i]] for _, i in picks],
        [best_score[i] for _, i in picks], labels=[f"{label} (sample {i})" for label, i in picks],
    )


def compare_with_real(generated: np.ndarray, train: np.ndarray, test: np.ndarray | None = None, *,
                      test_held_out: bool = True, top_k: int = 1, seed: int = 0, train_levels=None,
                      memorized_threshold: float = metrics.MEMORIZED_THRESHOLD,
                      classifier_updates: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """How close generated images come to real ones, by SSIM -> (report, indices, scores).

    ``indices`` and ``scores`` (each ``(N, top_k)``, best first) are every
    sample's best matches among ``train``.  The report holds the best-match
    summary, the near-copy share and the diversity of generated and real
    images; with ``test`` also the samples' best matches there.  When the run
    never saw the test split (``test_held_out``) it adds the yardstick (real
    test slices' best matches among ``train``) and the measures built on it:

    * realism: the samples' median best match over the yardstick's;
    * recall: real test slices' median best match among the N samples, over
      the same among N random training slices (does the generator cover what
      real brains look like as well as as many real slices do?);
    * with ``train_levels`` (each training image's slice number), level
      coverage: the total-variation distance between the slice levels of the
      samples' best matches and the training set's, over 8 bands of 4 levels,
      beside the same distance for real test slices (resampled to N), the
      noise at that N.
    """
    started = time.perf_counter()
    indices, scores = metrics.ssim_search(generated, train, top_k=top_k)
    search_seconds = time.perf_counter() - started
    best = scores[:, 0]
    rng = np.random.default_rng([seed, 11])
    n = len(generated)
    real_subset = data_utils.random_subset(train, n, rng)
    report = {
        "n_generated": n, "n_train_references": len(train),
        **percentile_summary("nn_ssim", best),
        "course_bar": f"median best-match SSIM > {COURSE_SSIM_BAR}",
        "course_bar_met": bool(np.median(best) > COURSE_SSIM_BAR),
        "memorized_threshold": memorized_threshold,
        "memorized_fraction": float(np.mean(best > memorized_threshold)),
        "diversity_ssim_generated": metrics.mean_pairwise_ssim(generated),
        "diversity_ssim_real": metrics.mean_pairwise_ssim(real_subset),
        "search_seconds": search_seconds,
        "search_pairs_per_s": n * len(train) / max(search_seconds, 1e-9),
    }
    report["diversity_ratio"] = report["diversity_ssim_generated"] / report["diversity_ssim_real"]
    if train_levels is not None:
        train_levels = np.asarray(train_levels)
        report["level_histogram_train"] = metrics.level_histogram(train_levels).tolist()
        report["level_histogram_generated"] = metrics.level_histogram(train_levels[indices[:, 0]]).tolist()
        report["level_distance"] = metrics.level_distance(train_levels[indices[:, 0]], train_levels)
    if classifier_updates:
        report.update(two_sample_test(generated, train, classifier_updates, seed))
    if test is None:
        return report, indices, scores
    report.update(n_test_references=len(test), test_held_out=test_held_out,
                  **percentile_summary("test_nn_ssim", metrics.nearest_neighbour_scores(generated, test)))
    if test_held_out:
        real_queries = data_utils.random_subset(test, n, rng)
        real_index, real_score = (array[:, 0] for array in metrics.ssim_search(real_queries, train))
        report.update(percentile_summary("real_test_nn_ssim", real_score))
        report["realism"] = report["nn_ssim_median"] / report["real_test_nn_ssim_median"]
        among_samples = metrics.nearest_neighbour_scores(real_queries, generated)
        among_real = metrics.nearest_neighbour_scores(real_queries, real_subset)
        report.update(recall=float(np.median(among_samples) / np.median(among_real)), recall_n_real=len(real_queries))
        # 95 % bootstrap intervals: realism over the samples and the held-out slices; recall over the
        # held-out slices (each keeps its best match among the samples and among the training slices).
        # Slices of one subject are not independent, so with few held-out subjects these are too narrow.
        bootstrap = np.random.default_rng([seed, 12])
        report["realism_interval"] = metrics.bootstrap_interval(
            lambda ours, real: np.median(ours) / np.median(real), best, real_score, rng=bootstrap,
            resamples=BOOTSTRAP_RESAMPLES)
        paired = np.arange(len(real_queries))
        report["recall_interval"] = metrics.bootstrap_interval(
            lambda rows: np.median(among_samples[rows.astype(int)]) / np.median(among_real[rows.astype(int)]),
            paired, rng=bootstrap, resamples=BOOTSTRAP_RESAMPLES)
        # The spectrum's shape against the held-out slices, beside as many real training slices' (the noise)
        rings = {name: metrics.ring_power(images) for name, images in
                 (("samples", generated), ("held_out", test), ("real", real_subset))}
        report["spectrum_shape"] = metrics.shape_distance(rings["samples"].mean(0), rings["held_out"].mean(0))
        report["spectrum_shape_real"] = metrics.shape_distance(rings["real"].mean(0), rings["held_out"].mean(0))
        report["spectrum_shape_interval"] = metrics.bootstrap_interval(
            lambda ours, theirs: metrics.shape_distance(rings["samples"][ours.astype(int)].mean(0),
                                                        rings["held_out"][theirs.astype(int)].mean(0)),
            np.arange(n), np.arange(len(test)), rng=bootstrap, resamples=BOOTSTRAP_RESAMPLES)
        # The look: intensities against the held-out slices; the scalp ring and sharpness beside real ones
        report.update(appearance.against_held_out(data_utils.to_uint8(generated), data_utils.to_uint8(test),
                                                  data_utils.to_uint8(real_subset), rng=bootstrap,
                                                  resamples=BOOTSTRAP_RESAMPLES))
        if train_levels is not None:
            matched = train_levels[real_index]
            resampled = matched[rng.integers(0, len(matched), n)] if len(matched) < n else matched
            report["level_histogram_real"] = metrics.level_histogram(matched).tolist()
            report["level_distance_real"] = metrics.level_distance(resampled, train_levels)
            report["level_distance_interval"] = metrics.bootstrap_interval(
                lambda levels: metrics.level_distance(levels.astype(int), train_levels),
                train_levels[indices[:, 0]], rng=bootstrap, resamples=BOOTSTRAP_RESAMPLES)
    return report, indices, scores


def two_sample_test(generated: np.ndarray, train: np.ndarray, updates: int, seed: int) -> dict:
    """The classifier test (classifier.py): can a small CNN tell the samples from as many real training
    slices?  Beside it, as many other training slices against the same ones: what real slices score
    (about 0.5).  The real side is the training set, not the held-out split: a set of slices from a few
    subjects gives itself away (the demo's 2 test subjects' slices were told from training slices 86 % of
    the time, its 5 validate subjects' 67 %: docs/evaluation.md), and the training set holds many."""
    order = np.random.default_rng([seed, 13]).permutation(len(train))
    reference, others = train[order[: len(generated)]], train[order[len(generated) : 2 * len(generated)]]
    report = classifier.two_sample_accuracy(generated, reference, updates=updates, seed=seed)
    if len(others) >= 2:
        real = classifier.two_sample_accuracy(others, reference, updates=updates, seed=seed)
        report.update(classifier_accuracy_real=real["classifier_accuracy"],
                      classifier_seconds=report["classifier_seconds"] + real["classifier_seconds"])
    return report


def evaluate_run(run_dir, *, data_dir=None, demo: bool = False, n: int = DEFAULT_N, seed: int = 0,
                 held_out: str = "test", checkpoint=None, memorized_threshold: float = metrics.MEMORIZED_THRESHOLD, out=None,
                 fid: dict | None = None, classifier_updates: int = classifier.UPDATES, progress: bool = True,
                 log=print) -> dict:
    """Evaluate ``n`` samples of a run (the report above); write REPORT.json and its figure.

    ``held_out`` names the split measured against (the report's ``test_*``
    keys hold its figures, ``held_out_split`` names it); ``fid`` (e.g.
    ``{"weights": "imagenet", "real": 2048, "input_size": 299}``) adds FID and KID; ``classifier_updates``
    0 leaves out the two-sample classifier test.  Returns the report, with the paths it wrote.
    """
    from oasis_gan.runs import sampling
    from oasis_gan.batches import sample_latents

    generator, config, state = sampling.load_generator(run_dir, checkpoint)
    train, train_files, test, description = reference_images(config, data_dir, demo, held_out, progress)
    log(f"run {run_dir} (step {state['step']}, {config.arch} {config.image_size}px); comparing with {description}")

    generated = sampling.generate_images(generator, sample_latents(n, config.latent_dim, seed))
    log(f"searching {len(train)} training and {len(test)} {held_out} images for the best match of each of {n} samples")
    summary, indices, scores = compare_with_real(generated, train, test, test_held_out=held_out not in config.splits,
                                                 seed=seed, memorized_threshold=memorized_threshold,
                                                 train_levels=data_utils.slice_levels(train_files),
                                                 classifier_updates=classifier_updates)
    nn_index, nn_score = indices[:, 0], scores[:, 0]
    report = {"run": str(run_dir), "step": int(state["step"]), "arch": config.arch, "image_size": config.image_size,
              "seed": seed, "data": description, "held_out_split": held_out, **summary}
    if fid:
        report.update(fid_scores(train, generated, np.random.default_rng([seed, 12]), seed=seed, log=log, **fid))
    report["samples"] = [
        {"nn_ssim": float(score), "nn_index": int(index), "nn_file": str(train_files[index])}
        for score, index in zip(nn_score, nn_index)
    ]

    out = Path(out) if out else Path(run_dir) / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    matches_figure(generated, train, nn_index, nn_score).savefig(out.with_suffix(".png"), dpi=100)
    report["figure"] = str(out.with_suffix(".png"))
    if "level_histogram_train" in report:
        _save_levels_figure(report, out.with_name(out.stem + "-levels.png"))
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(out)
    report["report"] = str(out)
    return report


def _save_levels_figure(report: dict, path: Path) -> None:
    from oasis_gan import plots

    plots.levels_figure({name: report[f"level_histogram_{key}"] for name, key in
                         (("training set", "train"), ("samples' best matches", "generated"),
                          ("real test slices' best matches", "real")) if f"level_histogram_{key}" in report},
                        metrics.LEVELS_PER_BAND).savefig(path, dpi=100)
    report["levels_figure"] = str(path)


def fid_scores(train: np.ndarray, generated: np.ndarray, rng, *, weights: str = "imagenet", real: int = 2048,
               input_size: int = 299, seed: int = 0, log=print) -> dict:
    """FID and KID between ``real`` random training images and the generated ones (InceptionV3 features)."""
    from oasis_gan.evaluation import fid

    try:
        model = fid.inception_model(None if weights == "random" else weights, input_size=input_size)
    except (RuntimeError, FileNotFoundError) as error:
        raise cli.FlagError("--inception-weights", str(error)) from error
    reals = data_utils.random_subset(train, real, rng)
    log(f"InceptionV3 features of {len(reals)} real and {len(generated)} generated images")
    real_features, fake_features = fid.inception_features(model, reals), fid.inception_features(model, generated)
    kid_mean, kid_std = fid.kernel_inception_distance(real_features, fake_features, seed=seed)
    return {
        "fid": fid.frechet_distance(real_features, fake_features), "kid_mean": kid_mean, "kid_std": kid_std,
        "fid_real_images": len(reals), "fid_weights": weights, "fid_note": fid.NOT_COMPARABLE,
    }


# The main job's targets (docs/results.md): what a good run's report shows, as (low, high) bands.
TARGETS = {"realism": (0.95, 1.05), "recall": (0.95, None), "diversity_ratio": (0.8, 1.2),
           "memorized_fraction": (None, 0.0)}
BAND_NAMES = {"realism": "realism", "recall": "recall", "diversity_ratio": "diversity ratio",
              "memorized_fraction": "near-copy share", "real_test_nn_ssim_median": "yardstick (real vs real)",
              "level_distance": "level distance"}


def band_lines(report: dict, bands: dict) -> list[str]:
    """One line per measure of ``bands`` ({key: (low, high)}, None for no bound): is it inside?

    The lines hold the bands and the verdicts, not the values (summary_lines shows those), so a run
    that is right prints the same lines on every machine: the notebook's regression check compares them.
    """
    lines = []
    for key, (low, high) in bands.items():
        if key not in report:
            lines.append(f"{BAND_NAMES.get(key, key)}: not measured (no held-out test split)")
            continue
        value = report[key]
        inside = (low is None or value >= low) and (high is None or value <= high) and np.isfinite(value)
        band = (f"{low:g} to {high:g}" if low is not None and high is not None
                else f"at least {low:g}" if low is not None else f"at most {high:g}")
        lines.append(f"{BAND_NAMES.get(key, key)} {band}: {'yes' if inside else 'NO'}")
    return lines


LOG_2 = float(np.log(2.0))


def history_checks(history: dict[str, list[float]], tolerance: float = 1e-3) -> list[str]:
    """Checks that hold for every correct run of any length, on history.csv's columns (plots.read_history).

    With real = 1 and fake = 0, each generated image that D calls fake (logit < 0) adds more than log 2
    to the non-saturating G loss, and each image D gets wrong adds at least log 2 to D's loss.  So on
    every logged row (a mean over steps keeps it) g_loss >= log 2 * d_acc_fake, and d_loss >=
    log 2 * ((1 - d_acc_real) + (1 - d_acc_fake)).  A generator trained towards the wrong label, or a
    loss or accuracy with a flipped sign, breaks one of them within a few steps.
    """
    steps = len(history.get("step", []))
    g_loss, d_loss = np.asarray(history["g_loss"], float), np.asarray(history["d_loss"], float)
    accuracy_real, accuracy_fake = (np.asarray(history[key], float) for key in ("d_acc_real", "d_acc_fake"))
    finite = bool(np.isfinite(g_loss).all() and np.isfinite(d_loss).all())
    g_agrees = bool(np.all(g_loss >= LOG_2 * accuracy_fake - tolerance))
    d_agrees = bool(np.all(d_loss >= LOG_2 * ((1 - accuracy_real) + (1 - accuracy_fake)) - tolerance))
    in_range = bool(np.all((0 <= accuracy_real) & (accuracy_real <= 1) & (0 <= accuracy_fake) & (accuracy_fake <= 1)))
    verdict = {True: "yes", False: "NO"}
    return [f"history: {steps} logged steps",
            f"losses finite at every logged step: {verdict[finite]}",
            f"discriminator accuracies within 0 to 1: {verdict[in_range]}",
            f"G loss agrees with D's verdicts on generated images (>= log 2 x accuracy on fakes): {verdict[g_agrees]}",
            f"D loss agrees with its mistakes (>= log 2 x the share it gets wrong): {verdict[d_agrees]}"]


def interval(report: dict, key: str, digits: int = 2) -> str:
    """" [low, high]" where the report holds the measure's bootstrap interval, else ""."""
    low_high = report.get(f"{key}_interval")
    return f" [{low_high[0]:.{digits}f}, {low_high[1]:.{digits}f}]" if low_high else ""


def summary_lines(report: dict) -> list[str]:
    """The report in a few lines (what evaluate.py prints and the notebook shows)."""
    split = report.get("held_out_split", "test")
    lines = [
        f"best-match SSIM of {report['n_generated']} samples vs {report['n_train_references']} training images: "
        f"median {report['nn_ssim_median']:.3f} (p10 {report['nn_ssim_p10']:.3f}, p90 {report['nn_ssim_p90']:.3f}); "
        f"course bar > {COURSE_SSIM_BAR} {'met' if report['course_bar_met'] else 'NOT met'}",
    ]
    if "test_nn_ssim_median" in report:
        lines.append(f"vs {report['n_test_references']} {split} images"
                     f"{'' if report['test_held_out'] else ' (seen in training)'}: "
                     f"median {report['test_nn_ssim_median']:.3f}")
    if "real_test_nn_ssim_median" in report:
        lines.append(f"yardstick, real {split} images vs training images: median {report['real_test_nn_ssim_median']:.3f}")
    if "realism" in report:
        lines.append(f"realism {report['realism']:.2f}{interval(report, 'realism')} (the samples' median best "
                     "match over the yardstick's; real unseen slices score about 1: above 1, read it with the "
                     "near-copy share, since copying training slices raises it too)")
    if "level_distance" in report:
        noise = (f"; real {split} slices {report['level_distance_real']:.2f}, the noise at n={report['n_generated']}"
                 if "level_distance_real" in report else "")
        lines.append(f"slice levels: distance {report['level_distance']:.2f}{interval(report, 'level_distance')} "
                     "from the training set's "
                     f"(0 the same, 1 disjoint{noise})")
    if "spectrum_shape" in report:
        lines.append(f"spectrum shape: {report['spectrum_shape']:.3f}{interval(report, 'spectrum_shape', 3)} from the real {split} slices' (0 the same; "
                     f"{report['spectrum_shape_real']:.3f} for as many real training slices)")
    if "histogram_distance" in report:
        lines.append(f"look vs the real {split} slices: intensity histogram distance (pixels above 8) "
                     f"{report['histogram_distance']:.3f}"
                     f"{interval(report, 'histogram_distance', 3)} "
                     f"(as many real training slices: {report['histogram_distance_real']:.3f}); scalp ring contrast "
                     f"{report['ring_contrast']:.2f} (real training slices {report['ring_contrast_real']:.2f}); "
                     f"sharpness {report['sharpness']:.3f} (real {report['sharpness_real']:.3f})")
    if "classifier_accuracy" in report:
        real = (f"; other real training slices against the same: {report['classifier_accuracy_real']:.2f}"
                if "classifier_accuracy_real" in report else "")
        lines.append(f"two-sample classifier: tells samples from real training slices with accuracy "
                     f"{report['classifier_accuracy']:.2f}{interval(report, 'classifier_accuracy')} "
                     f"({report['classifier_n']} of each; 0.5 = it cannot tell them apart{real})")
    if "recall" in report:
        lines.append(f"recall {report['recall']:.2f}{interval(report, 'recall')} ({report['recall_n_real']} real {split} slices' median best match "
                     f"among the {report['n_generated']} samples, over the same among as many training slices)")
    lines += [
        f"near-copies (best match > {report['memorized_threshold']}): {100 * report['memorized_fraction']:.1f}%",
        f"diversity (mean pairwise SSIM): generated {report['diversity_ssim_generated']:.3f}, "
        f"real {report['diversity_ssim_real']:.3f}, ratio {report['diversity_ratio']:.2f}",
        f"search: {report['search_seconds']:.1f} s ({report['search_pairs_per_s']:.0f} pairs/s)",
    ]
    if "fid" in report:
        lines.append(f"FID {report['fid']:.2f}, KID {report['kid_mean']:.4f} +- {report['kid_std']:.4f} "
                     f"({report['fid_weights']} weights; not comparable to published FIDs)")
    if "report" in report:
        lines.append(f"report: {report['report']}  figures: {report['figure']}"
                     + (f", {report['levels_figure']}" if "levels_figure" in report else ""))
    return lines


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    cli.check_outputs(parser, {"--out": args.out})
    cli.check_run_fits(parser, args.run, args.n, lambda config: SEARCH_COPIES * 4 * config.image_size ** 2, "evaluating")
    log = (lambda *a: None) if args.quiet else print
    fid_options = {"weights": args.inception_weights, "real": args.fid_real,
                   "input_size": args.inception_size} if args.fid else None
    try:
        report = evaluate_run(args.run, data_dir=args.data, demo=args.demo, n=args.n, seed=args.seed,
                              held_out=args.held_out, checkpoint=args.checkpoint, memorized_threshold=args.memorized_threshold,
                              out=args.out, fid=fid_options, classifier_updates=args.classifier_updates,
                              progress=not args.quiet, log=log)
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # FlagError, DataError, CheckpointError, a bad run
        parser.error(cli.flag_message(error, data_flag="--data" if args.data else "--run", default_flag="--run"))
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
