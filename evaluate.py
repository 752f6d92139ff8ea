"""Report on a trained run's samples: fidelity, memorisation and diversity by SSIM.

    python evaluate.py --run runs/dcgan-64px-001 --n 64              # against the data the run used
    python evaluate.py --run RUN --demo --n 64 --out report.json
    python evaluate.py --run RUN --data /path/to/oasis --n 200 --fid --inception-weights imagenet

For N generated images (seeded latents) it finds each one's most similar
real image by SSIM (exact, as SPEC.md defines it) among the images the run
trained on, and among the test split, and writes REPORT.json:

  nn_ssim_median/p10/p90     best-match SSIM against the training images
                             (the course bar is a median above 0.6)
  test_nn_ssim_*             the same against the test split
  real_test_nn_ssim_*        real test images against the training images:
                             what a genuinely new brain scores (only when the
                             run held the test split out)
  memorized_fraction         share of samples whose best match is above
                             --memorized-threshold (a near-copy)
  diversity_ssim_generated   mean SSIM between pairs of generated images, and
  diversity_ssim_real        the same for N random training images; a much
                             higher value for the generated set is mode collapse
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

DEFAULT_N = 64
FIGURE_PICKS = ("worst", "p10", "median", "p90", "best")


class FlagError(ValueError):
    """A problem traced to one command-line flag."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder written by train.py")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--demo", action="store_true", help="compare with the demo cohort")
    source.add_argument("--data", metavar="DIR", help="compare with the OASIS folder DIR")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"generated images (default {DEFAULT_N})")
    parser.add_argument("--out", help="report JSON (default RUN/evaluation.json); the figure goes beside it (.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents and the real subsets (default 0)")
    parser.add_argument("--checkpoint", help="a checkpoint folder of the run (default: the latest)")
    parser.add_argument("--memorized-threshold", type=float, default=metrics.MEMORIZED_THRESHOLD,
                        help=f"best-match SSIM above which a sample counts as a near-copy "
                             f"(default {metrics.MEMORIZED_THRESHOLD})")
    parser.add_argument("--fid", action="store_true", help="also compute FID and KID (InceptionV3 features)")
    parser.add_argument("--inception-weights", default="imagenet",
                        help="'imagenet' (downloaded once), a local weights file, or 'random' (plumbing check)")
    parser.add_argument("--fid-real", type=int, default=2048, help="real images for FID/KID (default 2048)")
    parser.add_argument("--inception-size", type=int, default=299, help="InceptionV3 input size (default 299)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.n < 2:
        parser.error(f"--n: must be at least 2 (diversity compares pairs), got {args.n}")
    if args.seed < 0:
        parser.error(f"--seed: must be a non-negative integer, got {args.seed}")
    if not 0.0 < args.memorized_threshold <= 1.0:
        parser.error(f"--memorized-threshold: must be in (0, 1], got {args.memorized_threshold}")
    if args.out and not args.out.lower().endswith(".json"):
        parser.error(f"--out: must name a .json file, got {args.out!r}")
    if args.fid_real < 2:
        parser.error(f"--fid-real: must be at least 2, got {args.fid_real}")
    if args.data and not Path(args.data).exists():
        parser.error(f"--data: {args.data} does not exist")
    if args.fid and args.inception_size < 75:
        parser.error(f"--inception-size: InceptionV3 needs at least 75, got {args.inception_size}")
    if args.fid and args.inception_weights not in ("imagenet", "random") and not Path(args.inception_weights).is_file():
        parser.error(f"--inception-weights: {args.inception_weights} is not a file (or give 'imagenet' / 'random')")


def data_source(args: argparse.Namespace, config) -> tuple[Path, str]:
    """The folder to compare with: --data, --demo, or else the data the run trained on."""
    from config import TrainConfig
    from training import data_dir_of

    if args.data:
        return data_utils.resolve_data_dir(args.data), f"data folder {args.data}"
    if args.demo and not config.demo:  # a run on real data compared with the default demo cohort
        config = TrainConfig(demo=True, steps=1)
    if config.demo:
        return data_dir_of(config, progress=not args.quiet), \
            f"demo cohort ({config.demo_subjects} subjects) in {config.demo_root}"
    return data_utils.resolve_data_dir(config.data_dir), f"data folder {config.data_dir} (the run's own)"


def percentile_summary(prefix: str, scores: np.ndarray) -> dict:
    return {f"{prefix}_{key}": value for key, value in metrics.summarize(scores).items()}


def figure_picks(scores: np.ndarray) -> list[tuple[str, int]]:
    """Sample indices for the figure: worst, 10th percentile, median, 90th percentile, best."""
    order = np.argsort(scores, kind="stable")
    positions = (0, len(order) // 10, len(order) // 2, (9 * len(order)) // 10, len(order) - 1)
    return [(label, int(order[position])) for label, position in zip(FIGURE_PICKS, positions)]


def evaluate(args: argparse.Namespace, log=print) -> dict:
    import generate
    import plots
    from training import generate_images

    generator, config, state = generate.load_generator(args.run, args.checkpoint)
    data_dir, description = data_source(args, config)
    log(f"run {args.run} (step {state['step']}, {config.arch} {config.image_size}px); comparing with {description}")
    train_files = data_utils.list_slice_files(data_dir, config.splits)[: config.limit]
    train = data_utils.load_oasis(data_dir, config.splits, config.image_size, limit=config.limit,
                                  progress=not args.quiet)
    test_held_out = "test" not in config.splits
    test = data_utils.load_oasis(data_dir, ("test",), config.image_size, progress=not args.quiet)

    generated = generate_images(generator, generate.sample_latents(args.n, config.resolved_latent_dim, args.seed))
    log(f"searching {len(train)} training and {len(test)} test images for the best match of each of {args.n} samples")
    started = time.perf_counter()
    nn_index, nn_score = metrics.ssim_search(generated, train, top_k=1)
    search_seconds = time.perf_counter() - started
    nn_index, nn_score = nn_index[:, 0], nn_score[:, 0]
    test_score = metrics.nearest_neighbour_scores(generated, test)

    rng = np.random.default_rng([args.seed, 11])
    real_subset = data_utils.random_subset(train, args.n, rng)
    report = {
        "run": str(args.run), "step": int(state["step"]), "arch": config.arch, "image_size": config.image_size,
        "n_generated": args.n, "seed": args.seed, "data": description,
        "n_train_references": len(train), "n_test_references": len(test), "test_held_out": test_held_out,
        **percentile_summary("nn_ssim", nn_score),
        "course_bar": "median best-match SSIM > 0.6",
        "course_bar_met": bool(np.median(nn_score) > plots.COURSE_SSIM_BAR),
        **percentile_summary("test_nn_ssim", test_score),
        "memorized_threshold": args.memorized_threshold,
        "memorized_fraction": float(np.mean(nn_score > args.memorized_threshold)),
        "diversity_ssim_generated": metrics.mean_pairwise_ssim(generated),
        "diversity_ssim_real": metrics.mean_pairwise_ssim(real_subset),
        "search_seconds": search_seconds,
        "search_pairs_per_s": args.n * len(train) / max(search_seconds, 1e-9),
    }
    if test_held_out:
        real_queries = data_utils.random_subset(test, args.n, rng)
        report.update(percentile_summary("real_test_nn_ssim", metrics.nearest_neighbour_scores(real_queries, train)))
    if args.fid:
        report.update(fid_scores(args, train, generated, rng, log))
    report["samples"] = [
        {"nn_ssim": float(score), "nn_index": int(index), "nn_file": str(train_files[index])}
        for score, index in zip(nn_score, nn_index)
    ]

    out = Path(args.out) if args.out else Path(args.run) / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    picks = figure_picks(nn_score)
    figure = plots.matches_figure(
        [generated[i] for _, i in picks], [train[nn_index[i]] for _, i in picks], [nn_score[i] for _, i in picks],
        labels=[f"{label} (sample {i})" for label, i in picks],
    )
    figure.savefig(out.with_suffix(".png"), dpi=100)
    report["figure"] = str(out.with_suffix(".png"))
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(json.dumps(report, indent=2) + "\n")
    temporary.replace(out)
    report["report"] = str(out)
    return report


def fid_scores(args, train: np.ndarray, generated: np.ndarray, rng, log) -> dict:
    import fid

    weights = None if args.inception_weights == "random" else args.inception_weights
    try:
        model = fid.inception_model(weights, input_size=args.inception_size)
    except (RuntimeError, FileNotFoundError) as error:
        raise FlagError("--inception-weights", str(error)) from error
    real = data_utils.random_subset(train, args.fid_real, rng)
    log(f"InceptionV3 features of {len(real)} real and {len(generated)} generated images")
    real_features, fake_features = fid.inception_features(model, real), fid.inception_features(model, generated)
    kid_mean, kid_std = fid.kernel_inception_distance(real_features, fake_features, seed=args.seed)
    return {
        "fid": fid.frechet_distance(real_features, fake_features), "kid_mean": kid_mean, "kid_std": kid_std,
        "fid_real_images": len(real), "fid_weights": args.inception_weights, "fid_note": fid.NOT_COMPARABLE,
    }


def summary_lines(report: dict) -> list[str]:
    lines = [
        f"best-match SSIM vs {report['n_train_references']} training images: median {report['nn_ssim_median']:.3f} "
        f"(p10 {report['nn_ssim_p10']:.3f}, p90 {report['nn_ssim_p90']:.3f}); course bar > 0.6 "
        f"{'met' if report['course_bar_met'] else 'NOT met'}",
        f"vs {report['n_test_references']} test images{'' if report['test_held_out'] else ' (seen in training)'}: "
        f"median {report['test_nn_ssim_median']:.3f}",
    ]
    if "real_test_nn_ssim_median" in report:
        lines.append(f"real test images vs training images: median {report['real_test_nn_ssim_median']:.3f}")
    lines += [
        f"near-copies (best match > {report['memorized_threshold']}): {100 * report['memorized_fraction']:.1f}%",
        f"diversity (mean pairwise SSIM): generated {report['diversity_ssim_generated']:.3f}, "
        f"real {report['diversity_ssim_real']:.3f}",
        f"search: {report['search_seconds']:.1f} s ({report['search_pairs_per_s']:.0f} pairs/s)",
    ]
    if "fid" in report:
        lines.append(f"FID {report['fid']:.2f}, KID {report['kid_mean']:.4f} +- {report['kid_std']:.4f} "
                     f"({report['fid_weights']} weights; not comparable to published FIDs)")
    return lines + [f"report: {report['report']}  figure: {report['figure']}"]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    log = (lambda *a: None) if args.quiet else print
    try:
        report = evaluate(args, log)
    except FlagError as error:
        parser.error(f"{error.flag}: {error}")
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # DataError, CheckpointError, bad run folder
        parser.error(f"{'--data' if args.data and isinstance(error, data_utils.DataError) else '--run'}: {error}")
    print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
