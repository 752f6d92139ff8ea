"""SSIM nearest-neighbour search: metrics.ssim_search against a scikit-image loop, side by side.

    python benchmarks/bench_ssim.py                  # 354-subject demo cohort = 11,328 slices, 256x256
    python benchmarks/bench_ssim.py --data /path/to/keras_png_slices_data --queries 64
    python benchmarks/bench_ssim.py --sizes 256 64

Queries are real slices with noise and a flip added (stand-ins for generated
images: close to the data, never copies).  Rows, per image size:

  skimage loop      structural_similarity(q, r, data_range=2) for one query
                    against the first --skimage-refs references (what seed
                    000 ran), pairs/s extrapolated to the whole set
  ssim_search       every query against every reference, exact pass included
  ssim_search Q=1   a single query (the per-reference statistics are not shared)
  ..., 1 thread     the same with numba limited to one thread

The speedup column is over the skimage loop.  It also checks that the
search's scores match skimage's on the pairs the loop measured and that the
best match among them is the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_queries(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = images[rng.choice(len(images), count, replace=False), ..., 0]
    noisy = chosen[:, :, ::-1] + rng.normal(0, 0.05, chosen.shape).astype(np.float32)
    return np.clip(noisy, -1, 1).astype(np.float32)


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="an OASIS-style folder (default: build a 354-subject demo cohort)")
    parser.add_argument("--demo-root", default="data/demo-full", help="where the full-size demo cohort goes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--queries", type=int, default=16, help="query images for the batch search (default 16)")
    parser.add_argument("--skimage-refs", type=int, default=1000, help="references timed with skimage (default 1000)")
    args = parser.parse_args()

    import numba
    from skimage.metrics import structural_similarity

    import data_utils
    import metrics

    data_dir = Path(args.data) if args.data else data_utils.make_demo_dataset(args.demo_root, n_subjects=354,
                                                                               progress=True)
    metrics.pairwise_ssim(np.zeros((1, 16, 16), np.float32), np.zeros((2, 16, 16), np.float32))  # compile
    threads = numba.get_num_threads()
    print(f"{'size':>5} {'method':<26} {'queries':>7} {'refs':>6} {'seconds':>9} {'pairs/s':>9} {'speedup':>8}")
    for size in args.sizes:
        references = data_utils.load_oasis(data_dir, image_size=size)
        queries = make_queries(references, args.queries, seed=size)
        n = len(references)

        subset = references[: args.skimage_refs, ..., 0]
        loop_scores, loop_seconds = timed(
            lambda: np.array([structural_similarity(queries[0], r, data_range=2.0) for r in subset]))
        baseline = len(subset) / loop_seconds

        def row(method, q, seconds):
            rate = q * n / seconds
            print(f"{size:>5} {method:<26} {q:>7} {n:>6} {seconds:>9.2f} {rate:>9.0f} {rate / baseline:>7.1f}x")

        row("skimage loop (1 thread)", 1, n / baseline)
        (indices, scores), seconds = timed(metrics.ssim_search, queries, references)
        row(f"ssim_search ({threads} threads)", len(queries), seconds)
        _, seconds = timed(metrics.ssim_search, queries[:1], references)
        row(f"ssim_search Q=1 ({threads} thr.)", 1, seconds)
        numba.set_num_threads(1)
        _, seconds = timed(metrics.ssim_search, queries, references)
        row("ssim_search (1 thread)", len(queries), seconds)
        numba.set_num_threads(threads)

        fast = metrics.pairwise_ssim(queries[:1], subset)[0]
        top, _ = metrics.ssim_search(queries[:1], subset)
        print(f"      check: max |fast - skimage| over {len(subset)} pairs = {np.abs(fast - loop_scores).max():.1e}; "
              f"best match {top[0, 0]} (skimage loop: {int(np.argmax(loop_scores))}); "
              f"median best SSIM of the queries {np.median(scores[:, 0]):.3f}")
        del references
    print(f"machine: {os.cpu_count()} CPU cores; numba {numba.__version__}, {threads} threads; "
          f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
