"""What the two-sample classifier sees: its accuracy for real, altered and copied slices, one table.

    python benchmarks/classifier_check.py                    # the 48-subject demo cohort at 64x64 (about 3 min)
    python benchmarks/classifier_check.py --n 128 --updates 100

Each row is a set of N slices put where evaluate.py puts the samples, against
N random training slices (classifier.two_sample_accuracy, as
evaluate.two_sample_test calls it): other training slices (what real
scores), the held-out validate and test splits (real slices of a few
subjects), exact copies of the compared slices, and other training slices
with grain or blur, or mirrored (front and back swapped, or the
hemispheres).  It shows what the measure can tell and why evaluate.py
compares with the training set, not the held-out split (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-root", default="data/demo", help="the demo cohort (built if missing)")
    parser.add_argument("--demo-subjects", type=int, default=48)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=160, help="slices of each kind (default 160)")
    parser.add_argument("--updates", type=int, help="batches per network (default: classifier.UPDATES)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from scipy import ndimage

    import data_utils
    from oasis_gan.evaluation import classifier

    folder = data_utils.make_demo_dataset(ROOT / args.demo_root, n_subjects=args.demo_subjects)
    train, validate, test = (data_utils.load_oasis(folder, (split,), args.size, progress=False)
                             for split in ("train", "validate", "test"))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train))
    reference, others = train[order[: args.n]], train[order[args.n : 2 * args.n]]

    def grain(sigma):
        return np.clip(others + rng.normal(0, sigma, others.shape), -1, 1).astype(np.float32)

    def blur(sigma):
        return np.stack([ndimage.gaussian_filter(image, (sigma, sigma, 0)) for image in others])

    rows = {
        "other training slices (real)": others,
        f"validate split ({len(validate) // 32} subjects)": validate,
        f"test split ({len(test) // 32} subjects)": test,
        "copies of the compared slices": reference,
        "grain, 6 grey levels (sigma 0.05)": grain(0.05),
        "grain, 15 grey levels (sigma 0.12)": grain(0.12),
        "blur, half a pixel": blur(0.5),
        "blur, one pixel": blur(1.0),
        "front and back swapped (columns mirrored)": others[:, :, ::-1],
        "hemispheres swapped (rows mirrored)": others[:, ::-1],
    }
    updates = args.updates or classifier.UPDATES
    print(f"{args.size}x{args.size}, {args.demo_subjects}-subject demo cohort, against {args.n} random training "
          f"slices; {updates} batches per network, seed {args.seed}\n")
    print("| set | n | accuracy [95 %] | seconds |\n|---|---|---|---|")
    for name, images in rows.items():
        result = classifier.two_sample_accuracy(images, reference, updates=updates, seed=args.seed)
        low, high = result["classifier_accuracy_interval"]
        print(f"| {name} | {result['classifier_n']} | {result['classifier_accuracy']:.2f} [{low:.2f}, {high:.2f}] | "
              f"{result['classifier_seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
