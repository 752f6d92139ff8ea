"""Compare the architectures at equal images seen and at equal minutes, one table each.

    python benchmarks/compare_archs.py                  # CPU: 64x64, 700 steps of 16, then 8 minutes each
    python benchmarks/compare_archs.py --budgets minutes --minutes 10
    python benchmarks/compare_archs.py --size 256 --steps 3000 --batch-size 32 --minutes 10 \\
        --data /path/to/oasis                            # a GPU
    KERAS_BACKEND=jax python benchmarks/compare_archs.py --archs dcgan-ada dcgan-plus stylegan --size 256 \\
        --budgets minutes --minutes 5 --batch-size 32 --precision mixed_bfloat16 --parallel   # all three at once

For each architecture and budget it trains ``python train.py`` into
``runs/compare/<arch>-<size>px-<budget>[-seed<S>][-cohort<V>[-subjects<N>]][-validate]-<precision>[-parallel<K>]-batch<B>``
(a finished run there is reused, an unfinished one resumed; one made with
other architecture defaults or flip axis than today's is refused, named),
with the test split held out and the same seed: ``--steps`` steps for the
equal-images budget, and ``--minutes`` of training (train.py --minutes) for
the equal-minutes one.  Then it runs ``evaluate.py --n N`` on each and copies the
final sample grid and match figure into Resources/
(``compare-samples_<tag>.png``, ``compare-matches_<tag>.png``).  It prints
one Markdown table per budget, also written to
``Resources/compare-<size>px[-seed<S>][-cohort<V>[-subjects<N>]][-validate]-<precision>[-parallel][-<budget>].md``
(the budget named when only one was asked for; cohort V is the demo cohort's version): training time,
steps and speed as the run logged them, and the report's best-match SSIM
against the training slices, realism, slice-level distance (beside the noise
at that n), recall, diversity ratio and near-copy share, beside the real
test slices' own scores (the yardstick).

``--parallel`` trains every architecture at once and then evaluates them at
once: on one GPU that none of the runs fills (a DCGAN at batch 32 does not),
a budget of minutes then costs a third of the wall time for three
architectures, and each run's images/s says what share it got.
``--report-only`` makes the tables from run folders already there (copied
back from the machine that trained them; tools/device_compare.sh runs this
script on a GPU machine without TensorFlow and sends them back).

The CPU default takes about 90 minutes on 2 cores for the five
architectures (stylegan's 700 steps alone take about 29).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oasis_gan.config import ARCHITECTURES as ARCHS  # noqa: E402
from oasis_gan.config import TrainConfig  # noqa: E402

DEMO_SUBJECTS = TrainConfig.demo_subjects

UNLIMITED_STEPS = 10**7  # the equal-minutes runs stop on the clock


def finished(run: Path) -> bool:
    """Whether the run's last session ended with the run done (its last checkpoint is its final one)."""
    from oasis_gan import plots

    if not (run / "history.csv").is_file() or not (run / "samples.png").is_file():
        return False
    config = json.loads((run / "config.json").read_text())
    history = plots.read_history(run / "history.csv")
    if not history["step"]:
        return False
    if config.get("minutes"):
        return history["elapsed_s"][-1] >= 60 * config["minutes"]
    return history["step"][-1] >= config["steps"]


def changed_defaults(run: Path, arch: str, flags: tuple = ()) -> str:
    """The architecture's table settings (rates, betas, latent size), and the flip axis, that the run's
    config.json holds at other values than today's defaults, as "d_learning_rate 0.0001 (now 0.0004)"; "" when
    none.  A setting that ``flags`` give (an ablation variant's ``--d-lr 1e-4``) is the run's own choice, not a
    stale default."""
    from oasis_gan.architectures import table
    from oasis_gan.config import OLD_RUNS_FLIP_AXIS, TrainConfig, flag_of

    config = json.loads((run / "config.json").read_text())
    given = {flag.split("=")[0] for flag in flags}  # "--d-lr 1e-4" and "--d-lr=1e-4"
    changed = [f"{name} {config[name]:g} (now {value:g})" for name, value in table.BY_NAME[arch].defaults.items()
               if name in config and config[name] != value and flag_of(name) not in given]
    flip_axis = config.get("flip_axis", OLD_RUNS_FLIP_AXIS)
    if config.get("flip", True) and flip_axis != TrainConfig.flip_axis and "--flip-axis" not in given:
        changed.append(f"flip_axis {flip_axis} (now {TrainConfig.flip_axis})")
    return ", ".join(changed)


def train_command(arch: str, run: Path, length: list[str], args, flags: tuple = ()) -> list[str] | None:
    """train.py's arguments for the run (a resume when it was started before); None when it is finished."""
    data = ["--data", args.data] if args.data else ["--demo", "--demo-root", args.demo_root,
                                                    "--demo-subjects", str(args.demo_subjects),
                                                    "--demo-seed", str(args.demo_seed)]
    if (run / "config.json").is_file():
        changed = changed_defaults(run, arch, flags)
        if changed:
            raise SystemExit(f"{run}: made with {changed}; move the folder aside (or delete it) to train it again "
                             "with the present defaults")
        if finished(run):
            print(f"{run}: finished already, reused")
            return None
        return ["train.py", "--out", str(run), "--resume", "--quiet"]
    return ["train.py", *data, "--arch", arch, *flags, "--image-size", str(args.size), *length,
            "--batch-size", str(args.batch_size), "--precision", args.precision, "--splits", *training_splits(args),
            "--seed", str(args.seed), "--out", str(run), "--quiet"]


def evaluate_command(run: Path, args) -> list[str] | None:
    """evaluate.py's arguments for the run; None when its report is newer than the run's history."""
    report = report_path(run, args)
    if report.is_file() and report.stat().st_mtime > (run / "history.csv").stat().st_mtime:
        return None
    data = ["--data", args.data] if args.data else []
    return ["evaluate.py", "--run", str(run), *data, "--n", str(args.n), "--held-out", args.held_out,
            "--out", str(report), "--quiet"]


def log_path(run: Path, job: str) -> Path:
    """Where a --parallel job writes its output: beside the run folder."""
    return run.parent / f"{run.name}.{job}.log"


def report_path(run: Path, args) -> Path:
    return run / f"compare-evaluation-n{args.n}{'-validate' if args.held_out == 'validate' else ''}.json"


def training_splits(args) -> list[str]:
    """The splits a run trains on: all but the held-out one (choosing on validate trains on train alone)."""
    return ["train"] if args.held_out == "validate" else ["train", "validate"]


def launch(jobs: list[tuple[list[str] | None, Path]], parallel: bool) -> None:
    """Run each (script arguments, log file) from the repository root; a job of None is skipped.

    One after another, printing to this terminal; or, with ``parallel``, all
    at once sharing the machine, each writing to its log file: JAX and
    TensorFlow then take GPU memory as they need it (not 75 % each) and
    numba's threads are shared out among them.
    """
    jobs = [(arguments, log) for arguments, log in jobs if arguments]
    for arguments, _ in jobs:
        print(" ".join(["python", *arguments]), flush=True)
    if not parallel:
        for arguments, _ in jobs:
            subprocess.run([sys.executable, *arguments], cwd=ROOT, check=True)
        return
    environment = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                   "NUMBA_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, len(jobs))))}
    started = []
    for arguments, log in jobs:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as stream:
            started.append((subprocess.Popen([sys.executable, *arguments], cwd=ROOT, env=environment, stdout=stream,
                                             stderr=subprocess.STDOUT), log))
    failed = [str(log) for process, log in started if process.wait() != 0]
    if failed:
        raise SystemExit(f"failed (see their logs): {', '.join(failed)}")


def train_and_evaluate_at_once(runs: list[tuple[str, tuple, Path]], length: list[str], args) -> None:
    """--parallel: train every (arch, flags, run) at once, then evaluate them all at once."""
    launch([(train_command(arch, run, length, args, flags), log_path(run, "train")) for arch, flags, run in runs],
           parallel=True)
    launch([(evaluate_command(run, args), log_path(run, "evaluate")) for _, _, run in runs], parallel=True)


def train(arch: str, run: Path, length: list[str], args, flags: tuple = ()) -> None:
    launch([(train_command(arch, run, length, args, flags), log_path(run, "train"))], parallel=False)


def evaluate(run: Path, args) -> dict:
    """evaluate.py's report of the run (reused when it is newer than the run's history)."""
    launch([(evaluate_command(run, args), log_path(run, "evaluate"))], parallel=False)
    return json.loads(report_path(run, args).read_text())


def _with_interval(report: dict, key: str, digits: int = 2) -> str:
    """"1.02 [0.98-1.06]": the measure and its 95 % bootstrap interval where the report has one."""
    value = report.get(key, float("nan"))
    low_high = report.get(f"{key}_interval")
    return f"{value:.{digits}f}" + (f" [{low_high[0]:.{digits}f}-{low_high[1]:.{digits}f}]" if low_high else "")


def markdown_row(label: str, report: dict, elapsed: float, steps: int, rate: float) -> str:
    """One table row: time, steps, speed and the report's measures (intervals in brackets, real in parentheses)."""
    nan = float("nan")
    return (f"| {label} | {elapsed / 60:.1f} min | {int(steps):,} | {rate:.1f} | {report['nn_ssim_median']:.3f} "
            f"({report['nn_ssim_p10']:.3f}-{report['nn_ssim_p90']:.3f}) | {_with_interval(report, 'realism')} | "
            f"{_with_interval(report, 'level_distance')} ({report.get('level_distance_real', nan):.2f}) | "
            f"{_with_interval(report, 'recall')} | {report['diversity_ratio']:.2f} | "
            f"{_with_interval(report, 'spectrum_shape', 3)} ({report.get('spectrum_shape_real', nan):.3f}) | "
            f"{_with_interval(report, 'histogram_distance', 3)} ({report.get('histogram_distance_real', nan):.3f}) | "
            f"{report.get('sharpness', nan):.2f} ({report.get('sharpness_real', nan):.2f}) | "
            f"{report.get('ring_contrast', nan):.2f} ({report.get('ring_contrast_real', nan):.2f}) | "
            f"{_with_interval(report, 'classifier_accuracy')} ({report.get('classifier_accuracy_real', nan):.2f}) | "
            f"{100 * report['memorized_fraction']:.1f}% |")


TABLE_HEAD = [
    "| arch | train time | steps | images/s | best-match SSIM vs train: median (p10-p90) | realism [95 %] | "
    "level distance [95 %] (noise) | recall [95 %] | diversity ratio | spectrum shape [95 %] (real) | "
    "histogram distance [95 %] (real) | sharpness (real) | scalp ring contrast (real) | "
    "classifier accuracy [95 %] (real) | near-copies |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def yardstick_row(report: dict) -> list[str]:
    if "real_test_nn_ssim_median" not in report:
        return []
    nan = float("nan")
    return [f"| real {report.get('held_out_split', 'test')} slices (yardstick) | | | | {report['real_test_nn_ssim_median']:.3f} "
            f"({report['real_test_nn_ssim_p10']:.3f}-{report['real_test_nn_ssim_p90']:.3f}) | 1 | | 1 | 1 | "
            f"{report.get('spectrum_shape_real', nan):.3f} | {report.get('histogram_distance_real', nan):.3f} | "
            f"{report.get('sharpness_real', nan):.2f} | {report.get('ring_contrast_real', nan):.2f} | "
            f"{report.get('classifier_accuracy_real', nan):.2f} | |"]


def run_summary(run: Path) -> tuple[float, int, float]:
    """(training seconds, last step, median images/s) as the run logged them."""
    from oasis_gan import plots

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
    name += f"{setting_tag(args)}-{args.precision}"
    title = f"{title}, {args.precision}"
    if args.parallel:
        name, title = f"{name}-parallel{len(args.archs)}", f"{title}, the {len(args.archs)} runs at once on one machine"
    runs = {arch: ROOT / "runs" / "compare" / f"{arch}-{args.size}px-{name}-batch{args.batch_size}"
            for arch in args.archs}
    if args.parallel and not args.report_only:
        train_and_evaluate_at_once([(arch, (), run) for arch, run in runs.items()], length, args)
    rows = []
    for arch, run in runs.items():
        if args.report_only:
            if not report_path(run, args).is_file():
                raise SystemExit(f"--report-only: {report_path(run, args)} is missing; run without --report-only "
                                 "to train and evaluate it")
            report = json.loads(report_path(run, args).read_text())
        else:
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


def add_shared_flags(parser: argparse.ArgumentParser, held_out: str = "test") -> None:
    """The flags this script and ablate_quality.py share beyond the budget's."""
    parser.add_argument("--demo-root", default="data/demo", help="where the demo cohort is (built if missing)")
    parser.add_argument("--demo-subjects", type=int, default=DEMO_SUBJECTS,
                        help=f"demo cohort size (default {DEMO_SUBJECTS}); another size rebuilds --demo-root")
    parser.add_argument("--demo-seed", type=int, default=TrainConfig.demo_seed,
                        help=f"which demo cohort (train.py --demo-seed; default {TrainConfig.demo_seed}); another "
                             "rebuilds --demo-root")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                        help="train.py --precision for every run (default float32)")
    parser.add_argument("--held-out", default=held_out, choices=("test", "validate"),
                        help=f"the split the runs are measured on (default {held_out}): choose settings on validate "
                             "(the runs then train on train alone), report the final table on test")
    parser.add_argument("--parallel", action="store_true",
                        help="train the runs at once, sharing the machine (one GPU: a budget of minutes then "
                             "gives each run a share of it), then evaluate them at once; logs beside the runs")


def cohort_tag(args) -> str:
    """What a run folder's name adds for the demo cohort: its version and any other size, so no run is reused
    for another cohort (version 1 runs, made before the cohort looked like real OASIS, have no tag)."""
    if args.data:
        return ""
    from oasis_gan.demo_cohort import COHORT_VERSION

    return (f"-cohort{COHORT_VERSION}" + (f"-subjects{args.demo_subjects}" if args.demo_subjects != DEMO_SUBJECTS else "")
            + (f"-cohortseed{args.demo_seed}" if args.demo_seed else ""))


def setting_tag(args) -> str:
    """What a run folder's name adds for a seed, cohort or held-out split other than the default."""
    return ((f"-seed{args.seed}" if args.seed != 0 else "") + cohort_tag(args)
            + ("-validate" if args.held_out == "validate" else ""))


def table_tag(args) -> str:
    """What the table file's name adds: the settings, the precision, --parallel, and the budget when only one
    was asked for (so a later run of the other budget does not overwrite it)."""
    budgets = {"images": f"-{args.steps}steps", "minutes": f"-{args.minutes:g}min"}
    return (f"{setting_tag(args)}-{args.precision}{'-parallel' if args.parallel else ''}"
            + (budgets[args.budgets[0]] if len(set(args.budgets)) == 1 else ""))


def prepare_data(args) -> None:
    """Build the demo cohort once, before runs that would otherwise each start building it."""
    if not args.data:
        import data_utils

        data_utils.make_demo_dataset(ROOT / args.demo_root, n_subjects=args.demo_subjects, seed=args.demo_seed)


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
    add_shared_flags(parser)
    parser.add_argument("--report-only", action="store_true",
                        help="train and evaluate nothing: the tables from the run folders and evaluation reports "
                             "already in runs/compare (e.g. copied back from a GPU machine)")
    args = parser.parse_args()
    if not args.report_only:
        prepare_data(args)

    resources = ROOT / "Resources"
    resources.mkdir(exist_ok=True)
    tables = []
    for budget in args.budgets:
        tables.append(compare(budget, args, resources))
        print(tables[-1] + "\n", flush=True)
    out = resources / f"compare-{args.size}px{table_tag(args)}.md"
    out.write_text("\n\n".join(tables) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
