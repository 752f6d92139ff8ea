"""Load time and peak memory of load_oasis on a full-size (OASIS-sized) folder.

    python benchmarks/bench_load.py                       # demo cohort of 354 subjects = 11,328 slices
    python benchmarks/bench_load.py --data /path/to/keras_png_slices_data

Each measurement runs in a fresh subprocess, so its peak resident memory
(ru_maxrss) is its own.  Rows: the first load (empty cache: every PNG decoded)
and the second (cache hit), at 256x256 and at 64x64.  The ratio column is
peak memory over the size of the returned array: the loader aims at no more
than about 1.5x (it decodes into a preallocated uint8 buffer, a quarter of the
float32 result).
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
images = data_utils.load_oasis({data!r}, image_size={size}, progress=False)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "n": len(images), "array_mib": images.nbytes / 2**20,
                   "peak_mib": (peak - baseline) / 1024}}))
"""


def measure(data_dir: Path, size: int, cache_dir: str) -> dict:
    env = dict(os.environ, OASIS_GAN_CACHE=cache_dir)
    code = CHILD.format(root=str(ROOT), data=str(data_dir), size=size)
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

    print(f"{'size':>5} {'load':<7} {'images':>7} {'seconds':>8} {'images/s':>9} {'array MiB':>10} "
          f"{'peak MiB':>9} {'peak/array':>10}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as cache_dir:
            for label in ("first", "cached"):
                row = measure(data_dir, size, cache_dir)
                print(f"{size:>5} {label:<7} {row['n']:>7} {row['seconds']:>8.2f} {row['n'] / row['seconds']:>9.0f} "
                      f"{row['array_mib']:>10.0f} {row['peak_mib']:>9.0f} {row['peak_mib'] / row['array_mib']:>10.2f}")
    print(f"machine: {os.cpu_count()} CPU cores; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
