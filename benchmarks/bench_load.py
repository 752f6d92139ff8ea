"""Load time and peak memory of the two loaders on a full-size (OASIS-sized) folder.

    python benchmarks/bench_load.py                       # demo cohort of 354 subjects = 11,328 slices
    python benchmarks/bench_load.py --data /path/to/keras_png_slices_data

Side by side, in one run: ``load_oasis`` (float32 in [-1, 1], what the course
asks for and what training kept before) and ``load_pixels`` (uint8 memory-
mapped from the cache, what training keeps now).  Each measurement runs in a
fresh subprocess, so its peak resident memory (ru_maxrss) is its own.  Rows:
the first load (empty cache: every PNG decoded) and the second (cache hit),
at 256x256 and at 64x64; "load" is the call alone, "+ epoch" also reads
every image once (what one epoch of training touches, so a memory map's
pages count too).  The ratio column is that peak over the float32 array's
size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, data_utils
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
images = data_utils.{loader}({data!r}, image_size={size}, progress=False)
seconds = time.perf_counter() - start
load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total = sum(float(images[i : i + 256].sum()) for i in range(0, len(images), 256))  # one pass: every page read
epoch_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pixels_per_image = images.shape[1] * images.shape[2]
print(json.dumps({{"seconds": seconds, "n": len(images), "float32_mib": len(images) * pixels_per_image * 4 / 2**20,
                   "load_mib": (load_peak - baseline) / 1024, "epoch_mib": (epoch_peak - baseline) / 1024}}))
"""
LOADERS = ("load_oasis", "load_pixels")


def measure(loader: str, data_dir: Path, size: int, cache_dir: str) -> dict:
    env = dict(os.environ, OASIS_GAN_CACHE=cache_dir)
    code = CHILD.format(root=str(ROOT), loader=loader, data=str(data_dir), size=size)
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an OASIS-style folder (default: build a 354-subject demo cohort)")
    parser.add_argument("--demo-root", default="data/demo-full", help="where the full-size demo cohort goes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 64])
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import time

    import data_utils

    if args.data:
        data_dir = Path(args.data)
    else:
        start = time.perf_counter()
        data_dir = data_utils.make_demo_dataset(args.demo_root, n_subjects=354, seed=0, progress=True)
        print(f"demo cohort ready in {time.perf_counter() - start:.1f} s: {data_dir}")

    print(f"{'size':>5} {'loader':<12} {'cache':<7} {'images':>7} {'seconds':>8} {'float32 MiB':>11} "
          f"{'peak MiB load':>13} {'+ epoch':>8} {'ratio':>6}")
    for size in args.sizes:
        for loader in LOADERS:
            with tempfile.TemporaryDirectory() as cache_dir:
                for label in ("first", "cached"):
                    row = measure(loader, data_dir, size, cache_dir)
                    print(f"{size:>5} {loader:<12} {label:<7} {row['n']:>7} {row['seconds']:>8.2f} "
                          f"{row['float32_mib']:>11.0f} {row['load_mib']:>13.0f} {row['epoch_mib']:>8.0f} "
                          f"{row['epoch_mib'] / row['float32_mib']:>6.2f}")
    print(f"machine: {os.cpu_count()} CPU cores; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
