"""The README's figures of the demo cohort: one subject's 32 slices, and one slice number across subjects.

    python tools/cohort_figure.py                    # the default cohort (48 subjects, seed 0) under data/demo
    python tools/cohort_figure.py --subject 7 --slice 20

Writes Resources/demo-cohort_case-NNN-32-slices.png (8 x 4 slices at 128x128)
and Resources/demo-cohort_slice-NN-16-subjects.png (the same slice number of
the first 16 subjects, 8 x 2).  Only demo slices: real OASIS images never go
into the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import data_utils  # noqa: E402  (the repository's modules, from its root)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-root", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--demo-subjects", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subject", type=int, default=1, help="the case number of the 32-slice figure")
    parser.add_argument("--slice", type=int, default=16, help="the slice number of the across-subjects figure")
    parser.add_argument("--out", type=Path, default=ROOT / "Resources")
    args = parser.parse_args(argv)
    demo_dir = data_utils.make_demo_dataset(args.demo_root, n_subjects=args.demo_subjects, seed=args.seed,
                                            progress=True)
    files = data_utils.list_slice_files(demo_dir)
    one_subject = [path for path in files if path.name.startswith(f"case_{args.subject:03d}_slice_")]
    one_level = [path for path in files if data_utils.slice_level(path) == args.slice]
    one_level = sorted(one_level, key=lambda path: data_utils.natural_key(path.name))[:16]
    if len(one_subject) != 32:
        parser.error(f"--subject: case {args.subject} is not in the cohort (1 to {args.demo_subjects})")
    for images, columns, name in (
            (one_subject, 8, f"demo-cohort_case-{args.subject:03d}-32-slices.png"),
            (one_level, 8, f"demo-cohort_slice-{args.slice:02d}-{len(one_level)}-subjects.png")):
        stack = data_utils.to_float_images(np.stack([data_utils.read_slice(path, 128) for path in images]))
        data_utils.save_image_grid(args.out / name, stack, columns=columns)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
