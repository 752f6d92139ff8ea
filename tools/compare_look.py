"""The demo cohort beside real OASIS slices, measure by measure (appearance.look_measures).

    python tools/compare_look.py                                   # the default demo cohort vs the real figures
    python tools/compare_look.py --real ../shared/real-oasis-sample   # ...and vs a folder of real slices
    python tools/compare_look.py --real ~/oasis/keras_png_slices_data --demo-subjects 64 --seed 1
    python tools/compare_look.py --real DIR --figure /tmp/look.png  # real beside demo, for a local look

It prints one table: each measure on the demo cohort, on the real folder (if
given), the real OASIS figure it is judged against (appearance.REAL_OASIS,
docs/data.md), the target and whether it is met.  With --real, every real
slice is also searched for its most similar demo slice (SSIM at 128x128), and
the median of those best matches is compared with what a real slice finds
among other real subjects' slices (0.68 on real OASIS).

--figure draws real slices beside demo ones.  A figure that holds real OASIS
slices stays out of the repository: OASIS has its own data-use terms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from oasis_gan.evaluation import appearance  # noqa: E402  (the repository's modules, from its root)
import data_utils  # noqa: E402

SEARCH_SIZE = 128
REAL_BEST_MATCH_AMONG_REAL = 0.68  # median best SSIM (128x128) of a real slice among other real subjects' slices
# The demo cohort's targets against real OASIS: (measure, low, high, how the value is read).
TARGETS = [
    ("histogram_distance", None, 0.10, "absolute"),
    ("background_share", -0.04, 0.04, "difference"),
    ("faint_share", -0.02, 0.02, "difference"),
    ("ring_contrast", 0.8, 1.25, "ratio"),
    ("sharpness", 0.85, 1.2, "ratio"),
    ("png_size_spread", None, 0.10, "absolute"),
    ("head_area_variation", None, 0.08, "absolute"),
    ("best_match_ratio", 0.95, None, "absolute"),
]


def slices_of(folder: Path) -> list[Path]:
    """Every slice PNG under ``folder`` (an OASIS data folder, one split, or any folder of slices)."""
    files = sorted(folder.rglob("*.png"), key=lambda path: data_utils.natural_key(path.name))
    return [path for path in files if "_seg" not in str(path.parent.name)]


def measure_folder(files: list[Path]) -> tuple[dict, np.ndarray]:
    """look_measures of the files (levels and PNG sizes from their names and sizes), and the slices."""
    images = [data_utils.read_slice(path, 256) for path in files]
    try:
        levels = [data_utils.slice_level(path) for path in files]
    except data_utils.DataError:
        levels = None
    measures = appearance.look_measures(images, levels, [path.stat().st_size for path in files])
    return measures, np.stack(images)


def real_png_spread(folder: Path) -> float | None:
    """The per-slice-number PNG size spread from a png-sizes-by-slice.tsv beside the real slices, if there is one."""
    table = folder / "png-sizes-by-slice.tsv"
    if not table.is_file():
        return None
    rows = [line.split("\t") for line in table.read_text().splitlines() if line and line[0].isdigit()]
    medians = np.array([float(row[2]) for row in rows])
    return float(medians.max() / medians.min() - 1.0)


def best_matches(real: np.ndarray, demo: np.ndarray) -> np.ndarray:
    """Each real slice's best SSIM among the demo slices, both at SEARCH_SIZE."""
    import metrics
    from PIL import Image

    def small(images):
        resized = [np.asarray(Image.fromarray(image).resize((SEARCH_SIZE, SEARCH_SIZE), Image.Resampling.BILINEAR))
                   for image in images]
        return data_utils.to_float_images(np.stack(resized))

    return metrics.nearest_neighbour_scores(small(real), small(demo))


def verdict(name: str, value: float, reference: float) -> tuple[str, str]:
    """The target's text and whether ``value`` meets it."""
    for measure, low, high, reading in TARGETS:
        if measure != name:
            continue
        read = value / reference if reading == "ratio" else value - reference if reading == "difference" else value
        ok = (low is None or read >= low) and (high is None or read <= high)
        bounds = " to ".join(f"{bound:+g}" if reading == "difference" else f"{bound:g}" for bound in (low, high)
                             if bound is not None)
        text = {"ratio": f"{bounds} x real", "difference": f"real {bounds}",
                "absolute": ("<= " if low is None else ">= " if high is None else "") + bounds}[reading]
        return text, "yes" if ok else "NO"
    return "", ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, help="a folder of real OASIS slices (any depth)")
    parser.add_argument("--demo-root", type=Path, default=ROOT / "data" / "demo", help="where the demo cohort is kept")
    parser.add_argument("--demo-subjects", type=int, default=48, help="subjects of the demo cohort (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="the demo cohort's seed (default 0)")
    parser.add_argument("--figure", type=Path, help="draw real beside demo slices here (keep it out of git)")
    args = parser.parse_args(argv)

    demo_dir = data_utils.make_demo_dataset(args.demo_root, n_subjects=args.demo_subjects, seed=args.seed,
                                            progress=True)
    demo, demo_images = measure_folder(data_utils.list_slice_files(demo_dir))
    reference = dict(appearance.REAL_OASIS)
    real, real_images = None, None
    if args.real:
        files = slices_of(args.real)
        if not files:
            parser.error(f"--real: no PNG slices under {args.real}")
        real, real_images = measure_folder(files)
        spread = real_png_spread(args.real)
        if spread is not None:
            real["png_size_spread"] = spread
        scores = best_matches(real_images, demo_images)
        demo["best_match"] = float(np.median(scores))
        demo["best_match_ratio"] = demo["best_match"] / REAL_BEST_MATCH_AMONG_REAL

    rows = appearance.compare(demo, reference)
    if "best_match_ratio" in demo:
        rows["best_match_ratio"] = (demo["best_match_ratio"], 1.0)
    header = "| measure | demo cohort |" + (f" real folder (n={real['n']}) |" if real else "") + \
             " real OASIS | target | met |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, (value, reference_value) in rows.items():
        real_cell = ""
        if real is not None:
            real_value = (appearance.histogram_distance(real["histogram"], reference["histogram"])
                          if name == "histogram_distance" else real.get(name, float("nan")))
            real_cell = f" {real_value:.3f} |" if name != "best_match_ratio" else " |"
        target, met = verdict(name, value, reference_value)
        shown_reference = "" if name in ("histogram_distance", "best_match_ratio") else f"{reference_value:.3g}"
        print(f"| {name} | {value:.3f} |{real_cell} {shown_reference} | {target} | {met} |")
    print(f"\ndemo histogram: {demo['histogram']}\nreal histogram: {reference['histogram']} (real OASIS)")
    if real is not None:
        print(f"real folder's:  {real['histogram']}")
        print(f"each real slice's best SSIM among {len(demo_images)} demo slices ({SEARCH_SIZE}x{SEARCH_SIZE}): "
              f"median {demo['best_match']:.3f}, against {REAL_BEST_MATCH_AMONG_REAL} among other real subjects")
    if args.figure:
        from PIL import Image

        rng = np.random.default_rng(0)
        picks = demo_images[np.sort(rng.choice(len(demo_images), size=min(5, len(demo_images)), replace=False))]
        rows_of_images = [np.concatenate(list(picks), axis=1)]
        if real_images is not None:
            shown = real_images[:5]
            rows_of_images.insert(0, np.concatenate(list(shown) + [np.zeros_like(shown[0])] * (5 - len(shown)), axis=1))
        Image.fromarray(np.concatenate(rows_of_images, axis=0)).save(args.figure)
        print(f"figure: {args.figure} (top: real, bottom: demo; keep real slices out of the repository)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
