"""What each change bought: the seeds' DCGANs with and without each regulariser, one table.

    python benchmarks/ablate_quality.py                 # CPU: 64x64, 700 steps of 16, seed 0 (about 40 minutes)
    python benchmarks/ablate_quality.py --variants dcgan-ada "dcgan-ada --augment off"

Each variant is an architecture and train.py flags.  It trains
``python train.py --demo --arch ARCH FLAGS`` into ``runs/ablation/<variant>``
(a finished run there is reused, an unfinished one resumed) with the test
and validate splits held out (it trains on train; ``--held-out test`` for a final table), the same seed
and length for all, runs ``evaluate.py --n N --held-out validate``
on each, and prints one Markdown table (written to
``Resources/ablation-<size>px.md``) with compare_archs.py's columns.  One
seed is one draw: the level distance in particular moves by about 0.1
between seeds, so check a change on a second ``--seed`` before believing it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_archs  # noqa: E402

VARIANTS = (
    "dcgan",
    "dcgan --ema-kimg 5",
    "dcgan-classic",
    "dcgan-classic --ema-kimg 5",
    "dcgan-classic --ema-kimg 5 --r1-gamma 0.05",
    "dcgan-plus",
    "dcgan-ada",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help="each an architecture and its train.py flags, quoted (default: the table's six)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=512, help="generated images per evaluation (default 512)")
    parser.add_argument("--data", help="an OASIS folder (default: the demo cohort)")
    compare_archs.add_shared_flags(parser, held_out="validate")
    args = parser.parse_args()
    compare_archs.prepare_data(args)

    lines = [f"{args.steps} steps of {args.batch_size} at {args.size}x{args.size}, seed {args.seed}; "
             f"evaluate.py --n {args.n} --held-out {args.held_out}", "", *compare_archs.TABLE_HEAD]
    length = ["--steps", str(args.steps)]
    variants = {}
    for variant in args.variants:
        arch, *flags = shlex.split(variant)
        slug = "_".join(part.lstrip("-") for part in (arch, *flags, *(
            [args.precision] if args.precision != "float32" else [])))
        held_out = "-validate" if args.held_out == "validate" else ""
        run = ROOT / "runs" / "ablation" / (f"{slug}-{args.size}px-{args.steps}steps-batch{args.batch_size}-"
                                            f"seed{args.seed}{compare_archs.cohort_tag(args)}{held_out}")
        variants[variant] = (arch, tuple(flags), run)
    if args.parallel:
        compare_archs.train_and_evaluate_at_once(list(variants.values()), length, args)
    first = None
    for variant, (arch, flags, run) in variants.items():
        compare_archs.train(arch, run, length, args, flags)
        report = compare_archs.evaluate(run, args)
        first = first or report
        lines.append(compare_archs.markdown_row(f"`{variant}`", report, *compare_archs.run_summary(run)))
        device = json.loads((run / "environment.json").read_text())["device"]
    lines += compare_archs.yardstick_row(first)
    lines[0] += f"; {first['data']}; device: {device}"
    table = "\n".join(lines)
    print(table)
    out = ROOT / "Resources" / f"ablation-{args.size}px{compare_archs.setting_tag(args)}.md"
    out.write_text(table + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
