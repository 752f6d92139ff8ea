"""How a set of slices looks, in numbers: what makes an OASIS slice look like one.

One function, ``look_measures``, over any set of 8-bit slices (a list of
``(H, W)`` uint8 arrays, e.g. PNGs as read from disk, 0 = background), with
the slice number of each where known:

* ``histogram``: the non-zero pixels' intensities in 8 bins of 32 (shares);
  ``visible_histogram`` the same over the pixels above the faint level,
  which samples are judged by (``against_held_out``);
* ``background_share``: the share of pixels exactly 0;
* ``faint_share``: the share of faint pixels (1 to 8): real OASIS has few, in
  a thin rim around the head, its background being black or the scanner's
  noise floor (about 12) within the field of view;
* ``ring_contrast``: the head's outer 10 px (95th percentile) over the median
  inside it: about 2.6 for a whole head with its bright scalp ring, about 1
  for a skull-stripped brain;
* ``sharpness``: mean |Laplacian| inside the head's outer 10 px over the
  mean intensity there (one person's scan is crisper than an average
  template; the ring's own edges are left out);
* ``head_area``: the head's share of the image, and ``head_area_variation``:
  the coefficient of variation of its mean per slice number (a band of slices
  through the ventricles keeps it nearly constant; cerebellum to vertex does
  not);
* ``png_size_spread``: the largest over the smallest per-slice-number median
  PNG file size, minus 1 (from file sizes, when given).

``compare`` puts two sets side by side, with the histogram's total-variation
distance.  ``REAL_OASIS`` holds the figures measured on real OASIS slices
(docs/data.md says where they come from).  Images here are uint8, not the
float [-1, 1] of training; nothing here imports TensorFlow.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HISTOGRAM_BINS = 8  # of 32 grey levels each
RING_WIDTH = 10  # pixels of the head's outer band
HEAD_THRESHOLD = 40  # grey level above the background's faint noise (up to about 30)
FAINT_LEVEL = 8  # grey levels 1 to this count as faint

# Real OASIS (keras_png_slices_data), measured on real slices with these same definitions; the PNG size
# spread and slice numbers from the sizes of all 11,328 real files.  Provenance: docs/data.md.
REAL_OASIS = {
    "histogram": [0.25, 0.18, 0.24, 0.22, 0.07, 0.02, 0.01, 0.004],
    "mean_nonzero": 71.0,
    "background_share": 0.53,
    "faint_share": 0.012,
    "ring_contrast": 2.6,
    "sharpness": 0.16,
    "head_area": 0.38,
    "head_area_variation": 0.04,
    "png_size_spread": 0.061,
}


def head_mask(image: np.ndarray) -> np.ndarray:
    """The head: pixels brighter than the background noise, closed and with holes (skull, ventricles) filled."""
    bright = ndimage.gaussian_filter(np.asarray(image, np.float32), 1.0) > HEAD_THRESHOLD
    closed = ndimage.binary_closing(bright, structure=np.ones((5, 5), bool), iterations=2)
    filled = ndimage.binary_fill_holes(closed)
    labels, count = ndimage.label(filled)
    if count == 0:
        return filled
    sizes = ndimage.sum(filled, labels, index=np.arange(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def ring_width(size: int) -> int:
    """The head's outer band in pixels: RING_WIDTH at 256x256, as wide a share of the head when smaller."""
    return max(2, round(RING_WIDTH * size / 256))


def image_measures(image: np.ndarray) -> dict:
    """The measures of one uint8 slice (see the module's docstring)."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected one (H, W) uint8 slice, got {image.shape} {image.dtype}")
    pixels = image.astype(np.float32)
    head = head_mask(image)
    inner = ndimage.binary_erosion(head, iterations=ring_width(min(image.shape)))
    ring = head & ~inner
    nonzero = pixels[image > 0]
    histogram = np.histogram(nonzero, bins=HISTOGRAM_BINS, range=(0, 256))[0].astype(np.float64)
    visible = np.histogram(pixels[image > FAINT_LEVEL], bins=HISTOGRAM_BINS, range=(0, 256))[0].astype(np.float64)
    inside = pixels[inner]
    laplacian = np.abs(ndimage.laplace(pixels))[inner]
    return {
        "histogram": histogram,  # counts: shares once summed over a set
        "visible_histogram": visible,
        "nonzero_sum": float(nonzero.sum()), "nonzero_count": int(nonzero.size),
        "background_share": float(np.mean(image == 0)),
        "faint_share": float(np.mean((image > 0) & (image <= FAINT_LEVEL))),
        "ring_contrast": float(np.percentile(pixels[ring], 95) / max(np.median(pixels[inner]), 1.0))
        if inner.any() and ring.any() else float("nan"),
        "sharpness": float(laplacian.mean() / max(inside.mean(), 1.0)) if inner.any() else float("nan"),
        "head_area": float(head.mean()),
    }


def look_measures(images, levels=None, png_sizes=None) -> dict:
    """The look of a set of uint8 slices: medians over the slices, the histogram over all their pixels.

    ``levels`` (each slice's number) gives ``head_area_variation`` and, with ``png_sizes`` (bytes of
    each slice's PNG file), ``png_size_spread``.
    """
    return summarize([image_measures(image) for image in images], levels, png_sizes)


def summarize(per_image: list[dict], levels=None, png_sizes=None) -> dict:
    """``look_measures`` from the slices' own ``image_measures``."""
    if not per_image:
        raise ValueError("look_measures: no slices")
    result = {"n": len(per_image)}
    for key in ("histogram", "visible_histogram"):
        counts = np.sum([measures[key] for measures in per_image], axis=0)
        result[key] = (counts / max(counts.sum(), 1)).round(4).tolist()
    result["mean_nonzero"] = (sum(m["nonzero_sum"] for m in per_image)
                              / max(sum(m["nonzero_count"] for m in per_image), 1))
    for key in ("background_share", "faint_share", "ring_contrast", "sharpness", "head_area"):
        values = np.array([measures[key] for measures in per_image])
        result[key] = float(np.median(values[~np.isnan(values)])) if not np.isnan(values).all() else float("nan")
    if levels is not None:
        levels = np.asarray(levels)
        areas = np.array([measures["head_area"] for measures in per_image])
        by_level = np.array([areas[levels == level].mean() for level in np.unique(levels)])
        result["head_area_variation"] = float(by_level.std() / by_level.mean()) if len(by_level) > 1 else 0.0
        if png_sizes is not None:
            sizes = np.asarray(png_sizes, np.float64)
            medians = np.array([np.median(sizes[levels == level]) for level in np.unique(levels)])
            result["png_size_spread"] = float(medians.max() / medians.min() - 1.0)
    return result


def histogram_distance(p, q) -> float:
    """Total-variation distance between two intensity histograms (counts or shares): 0 the same, 1 no overlap."""
    import metrics  # here, not at the top: the look measures need no SSIM kernels

    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return metrics.total_variation(p / p.sum(), q / q.sum())


def against_held_out(samples, held_out, real, *, rng=None, resamples: int = 1000) -> dict:
    """The look of ``samples`` against real slices, each beside its real value.

    All three are uint8 sets of one size; ``real`` holds as many real slices as ``samples`` (random
    training slices).  ``histogram_distance`` is the samples' intensity histogram's distance from the
    held-out one's, ``histogram_distance_real`` the same for ``real``: the noise at that n; with ``rng``
    also ``histogram_distance_interval``, the 95 % bootstrap interval over the samples and the held-out
    slices.  These histograms count the visible pixels, above the faint level: a generator's tanh draws
    black as 0 to 8 (it nears -1 without reaching it), a shade eyes cannot tell from black, and counted
    as tissue that shade outweighed the tissue's own levels.  ``histogram_distance_nonzero`` keeps the
    look measures' definition (every non-zero pixel), for comparison.

    ``ring_contrast`` and ``sharpness`` are the samples' medians, ``*_real`` those of ``real``: both are
    traits of a subject (the ring's median over one subject's slices spans 1.6 to 2.8 at 64x64 across the
    demo cohort), so many subjects' slices are the fairer comparison than one or two held out.
    """
    per_image = {name: [image_measures(image) for image in images] for name, images in
                 (("samples", samples), ("held_out", held_out), ("real", real))}
    looks = {name: summarize(measures) for name, measures in per_image.items()}
    result = {
        "histogram_distance": histogram_distance(looks["samples"]["visible_histogram"],
                                                 looks["held_out"]["visible_histogram"]),
        "histogram_distance_real": histogram_distance(looks["real"]["visible_histogram"],
                                                      looks["held_out"]["visible_histogram"]),
        "histogram_distance_nonzero": histogram_distance(looks["samples"]["histogram"],
                                                         looks["held_out"]["histogram"]),
        "ring_contrast": looks["samples"]["ring_contrast"], "ring_contrast_real": looks["real"]["ring_contrast"],
        "sharpness": looks["samples"]["sharpness"], "sharpness_real": looks["real"]["sharpness"],
    }
    if rng is not None:
        import metrics

        counts = {name: np.array([m["visible_histogram"] for m in measures]) for name, measures in per_image.items()}
        result["histogram_distance_interval"] = metrics.bootstrap_interval(
            lambda ours, theirs: histogram_distance(counts["samples"][ours.astype(int)].sum(axis=0),
                                                    counts["held_out"][theirs.astype(int)].sum(axis=0)),
            np.arange(len(counts["samples"])), np.arange(len(counts["held_out"])), rng=rng, resamples=resamples)
    return result


def compare(measured: dict, reference: dict = REAL_OASIS) -> dict:
    """Each measure beside the reference's, with the ratio (or, for the histogram, the distance)."""
    rows = {"histogram_distance": (histogram_distance(measured["histogram"], reference["histogram"]), 0.0)}
    for key in ("mean_nonzero", "background_share", "faint_share", "ring_contrast", "sharpness", "head_area",
                "head_area_variation", "png_size_spread"):
        if key in measured and key in reference:
            rows[key] = (measured[key], reference[key])
    return rows
