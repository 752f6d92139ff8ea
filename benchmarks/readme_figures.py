"""Make the README's figures from real runs.

    python benchmarks/readme_figures.py                    # trains `python train.py --demo` into runs/readme-demo
    python benchmarks/readme_figures.py --notebook --steps 700   # runs driver.ipynb with papermill
    python benchmarks/readme_figures.py --run RUN --name heldout   # figures of a finished run
    python benchmarks/readme_figures.py --run RUN --name main --n 512   # ... evaluated on 512 samples

For the run it copies into Resources/ the real-image grid, the final sample
grid, the curves (losses, D accuracy, best-match SSIM) and the training GIF,
and runs `evaluate.py` for the match figure (worst, p10, median, p90, best) and,
when the run held the test split out, the slice-level histograms.
Every file is named `<name>-<what>_<arch>-<size>px-<length>-batch<B>-<device>`
so the machine and settings that made it stay attached.  It prints the run's
training time and throughput, and evaluate.py prints its summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_command(command: list[str], what: str) -> None:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    print(f"{what} took {time.perf_counter() - start:.0f} s wall")


def settings_tag(run: Path) -> str:
    config = json.loads((run / "config.json").read_text())
    environment = json.loads((run / "environment.json").read_text())
    length = f"{config['steps']}steps" if config["steps"] else f"{config['epochs']}epochs"
    return f"{config['arch']}-{config['image_size']}px-{length}-batch{config['batch_size']}-{environment['device_tag']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="a finished run folder (default: train one now)")
    source.add_argument("--notebook", action="store_true", help="run driver.ipynb headless and use its run")
    parser.add_argument("--steps", type=int, help="with --notebook: its STEPS parameter (default: the notebook's)")
    parser.add_argument("--name", help="file name prefix (default: demo, or notebook)")
    parser.add_argument("--n", type=int, help="samples evaluate.py draws (default: evaluate.py's)")
    args = parser.parse_args()

    name = args.name or ("notebook" if args.notebook else "demo")
    if args.run:
        run = Path(args.run)
    elif args.notebook:
        run = ROOT / "runs" / "readme-notebook"
        if run.exists():
            sys.exit(f"{run} exists already; pass --run {run} --name notebook to reuse it, or remove it")
        steps = ["-p", "STEPS", str(args.steps)] if args.steps else []
        run_command([sys.executable, "-m", "papermill", "driver.ipynb", str(run.with_suffix(".ipynb")),
                     "-p", "RUN_DIR", str(run), *steps], "driver.ipynb (papermill)")
    else:
        run = ROOT / "runs" / "readme-demo"
        if run.exists():
            sys.exit(f"{run} exists already; pass --run {run} to reuse it, or remove it")
        run_command([sys.executable, "train.py", "--demo", "--out", str(run)], "python train.py --demo")

    from oasis_gan import plots
    from oasis_gan.runs.run_folder import RunFolder

    tag = settings_tag(run)
    resources = ROOT / "Resources"
    resources.mkdir(exist_ok=True)
    history = plots.read_history(run / "history.csv")
    written = []
    for source_name, what in (("real_samples.png", "real"), ("samples.png", "samples"), ("losses.png", "losses")):
        written.append(resources / f"{name}-{what}_{tag}.png")
        shutil.copyfile(run / source_name, written[-1])
    written.append(plots.save_gif(RunFolder(run).sample_grids(), resources / f"{name}-progress_{tag}.gif"))

    report = run / "evaluation.json"
    count = ["--n", str(args.n)] if args.n else []
    run_command([sys.executable, "evaluate.py", "--run", str(run), *count, "--out", str(report)], "evaluate.py")
    written.append(resources / f"{name}-matches_{tag}.png")
    shutil.copyfile(report.with_suffix(".png"), written[-1])
    levels = report.with_name(f"{report.stem}-levels.png")  # with a held-out test split only
    if levels.is_file():
        written.append(resources / f"{name}-levels_{tag}.png")
        shutil.copyfile(levels, written[-1])
    for path in written:
        print(f"wrote {path.relative_to(ROOT)}")
    rates = history["images_per_s"]
    print(f"steps: {int(history['step'][-1])}; training time {history['elapsed_s'][-1]:.0f} s; "
          f"median {sorted(rates)[len(rates) // 2]:.1f} images/s")


if __name__ == "__main__":
    main()
