"""Compare the architectures at equal images seen and at equal minutes, one table each.

    python benchmarks/compare_archs.py                  # CPU: 64x64, 700 steps of 16, then 8 minutes each
    python benchmarks/compare_archs.py --budgets minutes --minutes 10
    python benchmarks/compare_archs.py --size 256 --steps 3000 --batch-size 32 --minutes 10 \\
        --data /path/to/oasis                            # a GPU

For each architecture and budget it trains ``python train.py`` into
``runs/compare/<arch>-<size>px-<budget>-batch<B>`` (a finished run there is
reused, an unfinished one resumed), with the test split held out and the
same seed: ``--steps`` steps for the equal-images budget, and ``--minutes``
of training (train.py --minutes) for the equal-minutes one.  Then it runs
``evaluate.py --n N`` on each and copies the final sample grid and match
figure into Resources/ (``compare-samples_<tag>.png``,
``compare-matches_<tag>.png``).  It prints one Markdown table per budget,
also written to ``Resources/compare-<size>px.md``: training time, steps and
speed as the run logged them, and the report's best-match SSIM against the
training slices, realism, slice-level distance (beside the noise at that n),
recall, diversity ratio and near-copy share, beside the real test slices'
own scores (the yardstick).

The CPU default takes about 75 minutes on 2 cores (stylegan's 700 steps
alone take about 29).
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

UNLIMITED_STEPS = 10**7  # the equal-minutes runs stop on the clock


def finished(run: Path) -> bool:
    """Whether the run's last session ended with the run done (its last checkpoint is its final one)."""
    import plots

    if not (run / "history.csv").is_file() or not (run / "samples.png").is_file():
        return False
    config = json.loads((run / "config.json").read_text())
    history = plots.read_history(run / "history.csv")
    if not history["step"]:
        return False
    if config.get("minutes"):
        return history["elapsed_s"][-1] >= 60 * config["minutes"]
    return history["step"][-1] >= config["steps"]


def train(arch: str, run: Path, length: list[str], args, flags: tuple = ()) -> None:
    data = ["--data", args.data] if args.data else ["--demo"]
    if (run / "config.json").is_file():
        if finished(run):
            print(f"{run}: finished already, reused")
            return
        command = ["train.py", "--out", str(run), "--resume", "--quiet"]
    else:
        command = ["train.py", *data, "--arch", arch, *flags, "--image-size", str(args.size), *length,
                   "--batch-size", str(args.batch_size), "--splits", "train", "validate", "--seed", str(args.seed),
                   "--out", str(run), "--quiet"]
    print(" ".join(["python", *command]), flush=True)
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True)


def evaluate(run: Path, args) -> dict:
    """evaluate.py's report of the run (reused when it is newer than the run's history)."""
    report = run / f"compare-evaluation-n{args.n}.json"
    if report.is_file() and report.stat().st_mtime > (run / "history.csv").stat().st_mtime:
        return json.loads(report.read_text())
    data = ["--data", args.data] if args.data else []
    subprocess.run([sys.executable, "evaluate.py", "--run", str(run), *data, "--n", str(args.n), "--out", str(report),
                    "--quiet"], cwd=ROOT, check=True)
    return json.loads(report.read_text())


def markdown_row(label: str, report: dict, elapsed: float, steps: int, rate: float) -> str:
    """One table row: time, steps, speed and the report's measures."""
    nan = float("nan")
    return (f"| {label} | {elapsed / 60:.1f} min | {int(steps):,} | {rate:.1f} | {report['nn_ssim_median']:.3f} "
            f"({report['nn_ssim_p10']:.3f}-{report['nn_ssim_p90']:.3f}) | {report.get('realism', nan):.2f} | "
            f"{report.get('level_distance', nan):.2f} ({report.get('level_distance_real', nan):.2f}) | "
            f"{report.get('recall', nan):.2f} | {report['diversity_ratio']:.2f} | "
            f"{100 * report['memorized_fraction']:.1f}% |")


TABLE_HEAD = [
    "| arch | train time | steps | images/s | best-match SSIM vs train: median (p10-p90) | realism | "
    "level distance (noise) | recall | diversity ratio | near-copies |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def yardstick_row(report: dict) -> list[str]:
    if "real_test_nn_ssim_median" not in report:
        return []
    return [f"| real test slices (yardstick) | | | | {report['real_test_nn_ssim_median']:.3f} "
            f"({report['real_test_nn_ssim_p10']:.3f}-{report['real_test_nn_ssim_p90']:.3f}) | 1 | | 1 | 1 | |"]


def run_summary(run: Path) -> tuple[float, int, float]:
    """(training seconds, last step, median images/s) as the run logged them."""
    import plots

    history = plots.read_history(run / "history.csv")
    rates = sorted(history["images_per_s"])
    return history["elapsed_s"][-1], history["step"][-1], rates[len(rates) // 2]


def compare(budget: str, args, resources: Path) -> str:
    """Train and evaluate every architecture at one budget; returns its Markdown table."""
    if budget == "images":
        name, length = f"{args.steps}steps", ["--steps", str(args.steps)]
        title = f"Equal images: {args.steps} steps of {args.batch_size} ({args.steps * args.batch_size:,} images seen)"
    else:
        name, length = f"{args.minutes:g}min", ["--steps", str(UNLIMITED_STEPS), "--minutes", str(args.minutes)]
        title = f"Equal minutes: {args.minutes:g} minutes of training at batch {args.batch_size}"
    rows = []
    for arch in args.archs:
        run = ROOT / "runs" / "compare" / f"{arch}-{args.size}px-{name}-batch{args.batch_size}"
        train(arch, run, length, args)
        report = evaluate(run, args)
        environment = json.loads((run / "environment.json").read_text())
        tag = f"{arch}-{args.size}px-{name}-batch{args.batch_size}-{environment['device_tag']}"
        shutil.copyfile(run / "samples.png", resources / f"compare-samples_{tag}.png")
        shutil.copyfile(run / f"compare-evaluation-n{args.n}.png", resources / f"compare-matches_{tag}.png")
        rows.append((arch, report, *run_summary(run), environment["device"]))

    first = rows[0][1]
    lines = [f"{title} at {args.size}x{args.size}, seed {args.seed}, {first['data']}; evaluate.py --n {args.n}; "
             f"device: {rows[0][5]}", "", *TABLE_HEAD]
    lines += [markdown_row(*row[:5]) for row in rows]
    lines += yardstick_row(first)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--budgets", nargs="+", choices=("images", "minutes"), default=["images", "minutes"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=700, help="the equal-images budget (default 700)")
    parser.add_argument("--minutes", type=float, default=8.0, help="the equal-minutes budget (default 8)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=512, help="generated images per evaluation (default 512)")
    parser.add_argument("--data", help="an OASIS folder (default: the demo cohort)")
    args = parser.parse_args()

    resources = ROOT / "Resources"
    resources.mkdir(exist_ok=True)
    tables = []
    for budget in args.budgets:
        tables.append(compare(budget, args, resources))
        print(tables[-1] + "\n", flush=True)
    out = resources / f"compare-{args.size}px.md"
    out.write_text("\n\n".join(tables) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
