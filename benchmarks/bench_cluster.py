"""Throughput of one run on 1 and on 2 processes (cluster.py), side by side.

    python benchmarks/bench_cluster.py                        # TensorFlow, 2 processes on 127.0.0.1
    KERAS_BACKEND=jax python benchmarks/bench_cluster.py      # the JAX engine
    python benchmarks/bench_cluster.py --compare runs/bench-1node runs/bench-2nodes   # runs made on a cluster

Without --compare it trains the same run (same global batch, same steps)
first as one process, then as two processes on this machine (TF_CONFIG, or
--coordinator for JAX, on free ports), and prints images/s and the scaling
over one process.  On one machine the two processes share its cores, so
this measures the cost of the machinery (the per-step agreement and the
gradient all-reduce between processes), not a speed-up: expect at most 1x,
and noise of 10 % or more on a shared 2-core box.

On a real cluster, train the same flags with one and with N nodes and give
the run folders to --compare (see docs/clusters.md):

    srun --nodes=1 --ntasks-per-node=1 python train.py $FLAGS --out runs/bench-1node
    srun --nodes=2 --ntasks-per-node=1 python train.py $FLAGS --out runs/bench-2nodes
    python benchmarks/bench_cluster.py --compare runs/bench-1node runs/bench-2nodes

The figure per run is the median of the history's images/s over its rows,
the first ``--skip`` rows (compilation, warm-up) left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def launch(processes: int, flags: list[str], run: Path) -> None:
    """Train ``run`` with ``processes`` local processes of one run; raise with their output if one fails."""
    jax = os.environ.get("KERAS_BACKEND") == "jax"
    from oasis_gan import cluster

    ports = cluster.free_ports(processes)
    started = []
    for index in range(processes):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("TF_CONFIG", None)
        extra = []
        if processes > 1 and jax:
            extra = ["--coordinator", f"127.0.0.1:{ports[0]}", "--num-processes", str(processes),
                     "--process-id", str(index)]
        elif processes > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                                           "task": {"type": "worker", "index": index}})
        started.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *flags, *extra, "--out", str(run)],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for process in started:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"train.py exited {process.returncode}:\n{output[-3000:]}")


def summary(run: Path, skip: int) -> dict:
    with open(run / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    config = json.loads((run / "config.json").read_text())
    kept = [float(row["images_per_s"]) for row in rows[skip:]] or [float(row["images_per_s"]) for row in rows]
    return {"run": str(run), "arch": config["arch"], "size": config["image_size"], "batch": config["batch_size"],
            "steps": int(rows[-1]["step"]) if rows else 0, "images_per_s": statistics.median(kept)}


def print_table(runs: list[Path], processes: list[str], skip: int) -> None:
    rows = [summary(run, skip) for run in runs]
    base = rows[0]["images_per_s"]
    print(f"{'processes':>9} {'arch':<11} {'size':>4} {'global batch':>12} {'steps':>6} {'images/s':>9} "
          f"{'vs first':>8}  run")
    for count, row in zip(processes, rows):
        print(f"{count:>9} {row['arch']:<11} {row['size']:>4} {row['batch']:>12} {row['steps']:>6} "
              f"{row['images_per_s']:>9.1f} {row['images_per_s'] / base:>7.2f}x  {row['run']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", nargs="+", metavar="RUN", help="print the table for finished runs instead")
    parser.add_argument("--arch", default="dcgan")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch, the same for every count")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=2, help="history rows (of 10 steps) left out as warm-up")
    parser.add_argument("--demo-root", default="data/demo", help="the demo cohort to train on (built if missing)")
    args = parser.parse_args()

    if args.compare:
        print_table([Path(run) for run in args.compare], ["?"] * len(args.compare), args.skip)
        return
    import data_utils

    data = data_utils.make_demo_dataset(args.demo_root)  # once, before the processes start
    flags = ["--data", str(data), "--arch", args.arch, "--image-size", str(args.image_size), "--batch-size",
             str(args.batch_size), "--steps", str(args.steps), "--log-every", "10", "--sample-every",
             str(args.steps), "--checkpoint-every", str(args.steps), "--ssim-every", "0", "--quiet"]
    with tempfile.TemporaryDirectory() as folder:
        runs = []
        for processes in (1, 2):
            runs.append(Path(folder) / f"{processes}-processes")
            launch(processes, flags, runs[-1])
        engine = os.environ.get("KERAS_BACKEND") or "tensorflow"
        print(f"engine: {engine}; machine: {os.cpu_count()} CPU cores, both processes on it (see the docstring)")
        print_table(runs, ["1", "2"], args.skip)


if __name__ == "__main__":
    main()
