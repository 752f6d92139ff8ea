"""Which generator of a run covers the slice levels: the raw G, its average (EMA), and variants of both.

    python benchmarks/diagnose_generators.py --run runs/main                    # the run's own data
    python benchmarks/diagnose_generators.py --run runs/main --n 512 --recompute-batches 200

A run holds two generators in each checkpoint: G as trained and, with
``--ema-kimg`` above 0, its exponential moving average, which draws the
samples.  This script evaluates, on the same latents and with evaluate.py's
measures (``evaluate.compare_with_real``: realism, slice-level distance,
recall, diversity ratio), each of:

* ``raw <checkpoint>``: G as it was at each kept checkpoint;
* ``raw mean``: the plain mean of those G's weights and batchnorm statistics
  (a long, flat average over the last checkpoints);
* ``ema <checkpoint>``: the EMA generator as saved;
* ``ema, batchnorm recomputed``: the newest EMA generator with its batchnorm
  statistics measured anew on its own outputs (``--recompute-batches``
  batches of ``--batch-size`` latents in training mode), as weight averages
  are usually fixed up (SWA's update_bn).

It prints one Markdown table.  It needs a run that held the test split out
(``train.py --splits train validate``) for realism and recall, and a
generator with batchnorm (the DCGANs) for the recomputed row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data_utils  # noqa: E402
import evaluate  # noqa: E402
from oasis_gan.batches import sample_latents  # noqa: E402
from oasis_gan.runs import checkpoints  # noqa: E402
from oasis_gan.runs import sampling  # noqa: E402
from oasis_gan.runs.run_folder import RunFolder  # noqa: E402

COLUMNS = ("generator", "realism", "level distance", "recall", "diversity ratio", "share of slices 20-23")


def generator_at(run_dir, checkpoint: Path, averaged: bool):
    return sampling.load_generator(run_dir, checkpoint, averaged=averaged)[0]


def recompute_batchnorm(generator, batches: int, batch_size: int, seed: int) -> None:
    """Batchnorm's running statistics measured on the generator's own batches (its weights unchanged)."""
    rng = np.random.default_rng([seed, 31])
    for _ in range(batches):
        generator(rng.standard_normal((batch_size, generator.input_shape[-1])).astype(np.float32), training=True)


def row(name: str, generator, latents, train, test, levels) -> str:
    generated = sampling.generate_images(generator, latents)
    report, _, _ = evaluate.compare_with_real(generated, train, test, train_levels=levels)
    band_20_23 = report["level_histogram_generated"][5]
    return (f"| {name} | {report['realism']:.3f} | {report['level_distance']:.3f} | {report['recall']:.3f} | "
            f"{report['diversity_ratio']:.2f} | {band_20_23:.2f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run folder made by train.py")
    parser.add_argument("--data", help="the OASIS folder the run used (default: its own, or its demo cohort)")
    parser.add_argument("--n", type=int, default=512, help="generated images per row (default 512)")
    parser.add_argument("--recompute-batches", type=int, default=200,
                        help="batches that recompute the EMA's batchnorm statistics (default 200)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    run = RunFolder(args.run)
    config = run.read_config()
    if "test" in config.splits:
        parser.error(f"--run: {args.run} trained on the test split; realism and recall need it held out")
    train, files, test, description = evaluate.reference_images(config, args.data, progress=False)
    levels = [data_utils.slice_level(path) for path in files]
    latents = sample_latents(args.n, config.latent_dim, args.seed)
    kept = [folder for _, folder in checkpoints.list_checkpoints(args.run)]
    averaged = (kept[-1] / f"{checkpoints.EMA_MODEL}.weights.h5").is_file()

    print(f"{args.run} ({config.arch} {config.image_size}px), {description}; {args.n} samples each\n")
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    raw = [generator_at(args.run, folder, averaged=False) for folder in kept]
    for folder, generator in zip(kept, raw):
        print(row(f"raw {folder.name}", generator, latents, train, test, levels), flush=True)
    if len(raw) > 1:
        mean = raw[-1]
        mean.set_weights([np.mean(values, axis=0) for values in zip(*(model.get_weights() for model in raw))])
        print(row(f"raw mean of {len(raw)}", mean, latents, train, test, levels), flush=True)
    if not averaged:
        return
    for folder in kept:
        averaged_generator = generator_at(args.run, folder, averaged=True)
        print(row(f"ema {folder.name}", averaged_generator, latents, train, test, levels), flush=True)
    newest = generator_at(args.run, kept[-1], averaged=True)
    if any("moving_mean" in variable.path for variable in newest.non_trainable_variables):
        recompute_batchnorm(newest, args.recompute_batches, args.batch_size, args.seed)
        print(row(f"ema {kept[-1].name}, batchnorm recomputed", newest, latents, train, test, levels), flush=True)


if __name__ == "__main__":
    main()
