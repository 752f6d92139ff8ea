"""Make the README's figures from a real run of the default demo command.

    python benchmarks/readme_figures.py            # trains `python train.py --demo` into runs/readme-demo
    python benchmarks/readme_figures.py --run runs/readme-demo   # reuse a finished run

Copies the run's real-image grid, final sample grid and loss curves into
Resources/, named for the machine and settings that made them, and prints the
run's wall time and throughput from history.csv.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run folder (default: train one now)")
    args = parser.parse_args()

    run = Path(args.run) if args.run else ROOT / "runs" / "readme-demo"
    if not args.run:
        if run.exists():
            sys.exit(f"{run} exists already; pass --run {run} to reuse it, or remove it")
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--demo", "--out", str(run)], cwd=ROOT, check=True)
        print(f"python train.py --demo took {time.perf_counter() - start:.0f} s wall")

    import plots

    config = json.loads((run / "config.json").read_text())
    environment = json.loads((run / "environment.json").read_text())
    history = plots.read_history(run / "history.csv")
    tag = f"{config['arch']}-{config['image_size']}px-{config['steps']}steps-batch{config['batch_size']}-{environment['device_tag']}"
    resources = ROOT / "Resources"
    resources.mkdir(exist_ok=True)
    for source, name in (("real_samples.png", "demo-real"), ("samples.png", "demo-samples"),
                         ("losses.png", "demo-losses")):
        target = resources / f"{name}_{tag}.png"
        shutil.copyfile(run / source, target)
        print(f"wrote {target.relative_to(ROOT)}")
    rates = history["images_per_s"]
    print(f"steps: {int(history['step'][-1])}; training time {history['elapsed_s'][-1]:.0f} s; "
          f"median {sorted(rates)[len(rates) // 2]:.1f} images/s; device: {environment['device']}")


if __name__ == "__main__":
    main()
