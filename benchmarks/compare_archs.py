"""Compare the architectures at the same budget (same images seen), one table.

    python benchmarks/compare_archs.py                       # CPU: 64x64, 700 steps of 16 on the demo cohort
    python benchmarks/compare_archs.py --size 256 --steps 3000 --batch-size 32 --data /path/to/oasis   # a GPU

For each architecture it trains ``python train.py`` into
``runs/compare/<arch>-<size>px-<steps>steps-batch<B>`` (a finished run there
is reused, an unfinished one resumed), with the test split held out and the
same seed, then runs ``evaluate.py --n N`` on it and copies its final sample
grid and match figure into Resources/ (``compare-samples_<tag>.png``,
``compare-matches_<tag>.png``).  It prints one Markdown table, also written
to ``Resources/compare-<size>px.md``: training time and speed as the run
logged them, and the report's best-match SSIM against the training slices,
realism, slice-level distance (beside the noise at that n), recall,
diversity ratio and near-copy share, beside the real test slices' own
scores (the yardstick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import ARCHITECTURES as ARCHS  # noqa: E402


def train(arch: str, run: Path, args) -> None:
    import checkpoints

    data = ["--data", args.data] if args.data else ["--demo"]
    if (run / "config.json").is_file():
        latest = checkpoints.latest_checkpoint(run)
        if latest is not None and int(latest.name.split("-")[1]) >= args.steps:
            print(f"{run}: finished already, reused")
            return
        command = ["train.py", "--out", str(run), "--resume", "--quiet"]
    else:
        command = ["train.py", *data, "--arch", arch, "--image-size", str(args.size), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--splits", "train", "validate", "--seed", str(args.seed),
                   "--out", str(run), "--quiet"]
    print(" ".join(["python", *command]), flush=True)
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True)


def evaluate(run: Path, args) -> dict:
    report = run / f"compare-evaluation-n{args.n}.json"
    data = ["--data", args.data] if args.data else []
    subprocess.run([sys.executable, "evaluate.py", "--run", str(run), *data, "--n", str(args.n), "--out", str(report),
                    "--quiet"], cwd=ROOT, check=True)
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=256, help="generated images per evaluation (default 256)")
    parser.add_argument("--data", help="an OASIS folder (default: the demo cohort)")
    args = parser.parse_args()

    import plots

    resources = ROOT / "Resources"
    resources.mkdir(exist_ok=True)
    rows = []
    for arch in args.archs:
        run = ROOT / "runs" / "compare" / f"{arch}-{args.size}px-{args.steps}steps-batch{args.batch_size}"
        train(arch, run, args)
        report = evaluate(run, args)
        environment = json.loads((run / "environment.json").read_text())
        tag = f"{arch}-{args.size}px-{args.steps}steps-batch{args.batch_size}-{environment['device_tag']}"
        shutil.copyfile(run / "samples.png", resources / f"compare-samples_{tag}.png")
        shutil.copyfile(run / f"compare-evaluation-n{args.n}.png", resources / f"compare-matches_{tag}.png")
        history = plots.read_history(run / "history.csv")
        rates = sorted(history["images_per_s"])
        rows.append((arch, report, history["elapsed_s"][-1], rates[len(rates) // 2], environment["device"]))

    first = rows[0][1]
    lines = [
        f"{args.steps} steps of {args.batch_size} ({args.steps * args.batch_size:,} images seen) at "
        f"{args.size}x{args.size}, seed {args.seed}, {first['data']}; evaluate.py --n {args.n}; "
        f"device: {rows[0][4]}",
        "",
        "| arch | train time | images/s | best-match SSIM vs train: median (p10-p90) | realism | level distance "
        "(noise) | recall | diversity ratio | near-copies |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for arch, report, elapsed, rate, _ in rows:
        lines.append(
            f"| {arch} | {elapsed / 60:.1f} min | {rate:.1f} | {report['nn_ssim_median']:.3f} "
            f"({report['nn_ssim_p10']:.3f}-{report['nn_ssim_p90']:.3f}) | {report.get('realism', nan):.2f} | "
            f"{report.get('level_distance', nan):.2f} ({report.get('level_distance_real', nan):.2f}) | "
            f"{report.get('recall', nan):.2f} | {report['diversity_ratio']:.2f} | "
            f"{100 * report['memorized_fraction']:.1f}% |")
    if "real_test_nn_ssim_median" in first:
        lines.append(f"| real test slices (yardstick) | | | {first['real_test_nn_ssim_median']:.3f} "
                     f"({first['real_test_nn_ssim_p10']:.3f}-{first['real_test_nn_ssim_p90']:.3f}) | 1 | | 1 | 1 | |")
    table = "\n".join(lines)
    print(table)
    out = resources / f"compare-{args.size}px.md"
    out.write_text(table + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
