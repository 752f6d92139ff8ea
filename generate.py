"""Generate new brain slices from a trained run.

    python generate.py --run runs/dcgan-ada-64px-001 --n 64 --out grid.png
    python generate.py --run RUN --n 1000 --out grid.png --npy samples.npy --seed 7
    python generate.py --run runs/stylegan-64px-001 --n 64 --out typical.png --truncation 0.7

Loads RUN/config.json and the generator of the run's latest checkpoint (or
--checkpoint), samples N images from seeded latent vectors, and writes them
as one PNG grid; --npy also saves the float32 (N, S, S, 1) array in [-1, 1].
For StyleGAN runs the averaged (EMA) generator is used, and --truncation PSI
(0 to 1) pulls the styles towards the average: 1 is the full variety, 0 the
one "average" slice, 0.5 to 0.8 the usual compromise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

from oasis_gan import cli

MAX_GRID = 1024  # more images than this go to --npy; the grid shows the first ones


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_run_flags(parser)
    parser.add_argument("--n", type=int, default=64, help="how many images (default 64)")
    parser.add_argument("--out", required=True, help="PNG grid to write")
    parser.add_argument("--npy", help="also save the images as a float32 .npy array")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default 0)")
    parser.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                        help="StyleGAN only: truncation psi in [0, 1] (default 1: no truncation)")
    args = parser.parse_args(argv)
    cli.require(parser, args.n >= 1, "--n", f"must be a positive integer, got {args.n}")
    cli.require(parser, args.seed >= 0, "--seed", f"must be a non-negative integer, got {args.seed}")
    cli.require(parser, args.out.lower().endswith(".png"), "--out", f"must name a .png file, got {args.out!r}")
    cli.require(parser, not args.npy or args.npy.lower().endswith(".npy"), "--npy",
                f"must name a .npy file, got {args.npy!r}")
    cli.require(parser, 0.0 <= args.truncation <= 1.0, "--truncation", f"must be a number in [0, 1], got {args.truncation}")
    cli.check_outputs(parser, {"--out": args.out, "--npy": args.npy})
    cli.check_run_fits(parser, args.run, args.n, lambda saved: 4 * (saved.image_size ** 2 + saved.latent_dim),
                       "generating")

    from oasis_gan.runs import sampling  # Keras loads here, after the flags are checked

    try:
        generator, config, state = sampling.load_generator(args.run, args.checkpoint)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        parser.error(f"--run: {error}")

    from oasis_gan.architectures import table

    cli.require(parser, args.truncation == 1.0 or table.get(config.arch).styles, "--truncation",
                f"only StyleGAN runs have a style space to truncate; {args.run} is {config.arch}")

    import data_utils
    from oasis_gan.batches import sample_latents

    latents = sample_latents(args.n, config.latent_dim, args.seed)
    images = sampling.generate_images(generator, latents, truncation_psi=args.truncation)
    try:
        data_utils.save_image_grid(args.out, images[:MAX_GRID])
        if args.npy:
            Path(args.npy).parent.mkdir(parents=True, exist_ok=True)
            np.save(args.npy, images)
    except OSError as error:
        print(f"error: could not write {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"{args.n} images of {config.image_size}x{config.image_size} from {args.run} (step {state['step']})"
          + (f", truncation psi {args.truncation:g}" if args.truncation != 1.0 else "")
          + f" -> {args.out}" + (f" (a grid of the first {MAX_GRID})" if args.n > MAX_GRID else "")
          + (f" and {args.npy}" if args.npy else (" (all of them: add --npy FILE)" if args.n > MAX_GRID else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
