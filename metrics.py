"""SSIM search and the sample-quality measures built on it.

SSIM here is exactly ``skimage.metrics.structural_similarity(x, y,
data_range=2.0)`` with its defaults: a 7x7 uniform window, sample
covariance (49/48), K1=0.01, K2=0.03, and the mean of the SSIM map with a
3-pixel border cropped, on 2-D images in [-1, 1].

Because the border is cropped, only windows that lie wholly inside the image
count, so no padding rule is involved.  Each image's local means and
variances are computed once; for a pair only the cross term, the 7x7 box sum
of ``x * y``, is left.  A numba kernel does that for one reference against
many queries at a time, fused with the SSIM formula, so no per-pair map is
ever stored.

``ssim_search`` is exact: the fast kernel (float32 with float64 window
statistics; within 3e-6 of skimage on brain slices, most of that skimage's
own float32 rounding) ranks every reference,
and every reference whose fast score is within ``EXACT_MARGIN`` of the k-th
best is scored again by skimage itself.
The indices and scores returned are skimage's; ties go to the lower index,
as ``argmax`` over a skimage loop would.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from skimage.metrics import structural_similarity

WINDOW = 7
PAD = (WINDOW - 1) // 2
DATA_RANGE = 2.0
C1 = (0.01 * DATA_RANGE) ** 2
C2 = (0.03 * DATA_RANGE) ** 2
COV_NORM = WINDOW * WINDOW / (WINDOW * WINDOW - 1.0)
# The fast kernel's scores are within 3e-6 of skimage's (benchmarks/bench_ssim.py
# checks; tests allow 1e-5): every reference this close to the k-th best is
# scored again by skimage, so no rounding can change the ranking.
EXACT_MARGIN = 2e-4
# A generated image whose best training match is above this counts as a
# near-copy: "the same picture up to noise".  evaluate.py also reports how
# real held-out test slices score against the training set, the reference
# point for what a new (not copied) brain reaches.
MEMORIZED_THRESHOLD = 0.95
RANGE_TOLERANCE = 1e-3  # generators end in tanh; allow float rounding at +-1


# ------------------------------------------------------------------ input


def _image_view(images, name: str) -> np.ndarray:
    """``(N, H, W)`` view of ``(N, H, W)`` or ``(N, H, W, 1)`` images (no copy); shape checks only."""
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected images shaped (N, H, W) or (N, H, W, 1), got {array.shape}")
    if len(array) == 0:
        raise ValueError(f"{name}: no images (the set is empty)")
    return array


def as_image_stack(images, name: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, 1)`` images in [-1, 1] -> C-contiguous float32 ``(N, H, W)``."""
    array = _image_view(images, name)
    if min(array.shape[1:]) < WINDOW:
        raise ValueError(f"{name}: images of {array.shape[1:]} are smaller than the {WINDOW}x{WINDOW} SSIM window")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: expected float images in [-1, 1], got dtype {array.dtype} "
                         "(data_utils.to_float_images converts uint8)")
    low, high = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name}: images contain NaN or infinite values")
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{name}: values span [{low:.4g}, {high:.4g}], expected [-1, 1] "
                         "(SSIM uses data_range=2 for images in [-1, 1])")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_same_size(queries: np.ndarray, references: np.ndarray) -> None:
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(f"queries are {queries.shape[1]}x{queries.shape[2]} but references are "
                         f"{references.shape[1]}x{references.shape[2]}; compare images of one size")


# ---------------------------------------------------------------- kernels

# Let LLVM reorder sums and fuse multiply-adds (to vectorise the loops), but
# not replace division by an approximate reciprocal.  error_model="numpy"
# drops Python's ZeroDivisionError check, which blocks vectorisation; the
# SSIM denominators are never zero (both factors are >= C1/2 + C2/2).
_FASTMATH = {"reassoc", "contract", "nsz", "nnan", "ninf"}


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _window_stats(image, mean, contrast):
    """Per 7x7 window: the mean m and v + C2/2 (v the sample variance).

    Sums are float64 (v = E[x^2] - m^2 cancels badly in flat regions), and
    the 7-row column sums slide down the image: float64 keeps that exact
    enough, and it costs 4 operations a pixel instead of 14.
    """
    rows, cols = mean.shape
    width = image.shape[1]
    column_sum = np.zeros(width, np.float64)
    column_square = np.zeros(width, np.float64)
    pair_sum = np.empty(width - 1, np.float64)
    pair_square = np.empty(width - 1, np.float64)
    inverse_area = 1.0 / (WINDOW * WINDOW)
    half_c2 = C2 / 2
    for r in range(WINDOW):
        for c in range(width):
            value = np.float64(image[r, c])
            column_sum[c] += value
            column_square[c] += value * value
    for i in range(rows):
        if i > 0:
            for c in range(width):
                entering = np.float64(image[i + WINDOW - 1, c])
                leaving = np.float64(image[i - 1, c])
                column_sum[c] += entering - leaving
                column_square[c] += entering * entering - leaving * leaving
        for c in range(width - 1):
            pair_sum[c] = column_sum[c] + column_sum[c + 1]
            pair_square[c] = column_square[c] + column_square[c + 1]
        for j in range(cols):
            total = pair_sum[j] + pair_sum[j + 2] + pair_sum[j + 4] + column_sum[j + 6]
            square = pair_square[j] + pair_square[j + 2] + pair_square[j + 4] + column_square[j + 6]
            m = total * inverse_area
            mean[i, j] = m
            contrast[i, j] = COV_NORM * (square * inverse_area - m * m) + half_c2


@njit(cache=True, parallel=True, error_model="numpy")
def _stack_stats(images, mean, contrast):
    for n in prange(images.shape[0]):
        _window_stats(images[n], mean[n], contrast[n])


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _pair_ssim(x, y, x_mean, x_con, y_mean, y_con, column, pairs):
    """Mean SSIM of one pair, given both images' window statistics.

    All per-pixel arithmetic is float32 (numba would promote ``2 * f32`` to
    float64, so the constants are float32 too): that is what lets LLVM
    vectorise the loops.  ``column`` holds the 7-row sums of x*y, summed
    afresh for each row so no rounding drifts; ``pairs`` is scratch for the
    horizontal 7-sums (p[j] + p[j+1] shared by three of them).
    """
    rows, cols = x_mean.shape
    width = x.shape[1]
    two = np.float32(2.0)
    c1 = np.float32(C1)
    c2 = np.float32(C2)
    cov_norm = np.float32(COV_NORM)
    scale = np.float32(COV_NORM / (WINDOW * WINDOW))
    total = 0.0
    for i in range(rows):
        for c in range(width):
            column[c] = x[i, c] * y[i, c]
        for r in range(i + 1, i + WINDOW):
            for c in range(width):
                column[c] += x[r, c] * y[r, c]
        for c in range(width - 1):
            pairs[c] = column[c] + column[c + 1]
        row_total = np.float32(0.0)
        for j in range(cols):
            cross = pairs[j] + pairs[j + 2] + pairs[j + 4] + column[j + 6]
            x_m, y_m = x_mean[i, j], y_mean[i, j]
            mean_product = x_m * y_m
            covariance = cross * scale - cov_norm * mean_product
            numerator = (two * mean_product + c1) * (two * covariance + c2)
            denominator = (x_m * x_m + y_m * y_m + c1) * (x_con[i, j] + y_con[i, j])
            row_total += numerator / denominator
        total += row_total
    return total / (rows * cols)


@njit(cache=True, parallel=True, error_model="numpy")
def _score_block(queries, q_mean, q_con, references, out):
    """out[q, n] = SSIM(queries[q], references[n]); parallel over references."""
    rows, cols = q_mean.shape[1], q_mean.shape[2]
    for n in prange(references.shape[0]):
        y = references[n]
        y_mean = np.empty((rows, cols), np.float32)
        y_con = np.empty((rows, cols), np.float32)
        _window_stats(y, y_mean, y_con)
        column = np.empty(y.shape[1], np.float32)
        pairs = np.empty(y.shape[1] - 1, np.float32)
        for q in range(queries.shape[0]):
            out[q, n] = _pair_ssim(queries[q], y, q_mean[q], q_con[q], y_mean, y_con, column, pairs)


# ------------------------------------------------------------ public API


class _QueryStats:
    """Window statistics of a query set, computed once and reused for every chunk."""

    def __init__(self, queries: np.ndarray):
        shape = (len(queries), queries.shape[1] - 2 * PAD, queries.shape[2] - 2 * PAD)
        self.images = queries
        self.mean, self.contrast = np.empty(shape, np.float32), np.empty(shape, np.float32)
        _stack_stats(queries, self.mean, self.contrast)

    def score(self, references: np.ndarray) -> np.ndarray:
        out = np.empty((len(self.images), len(references)), np.float64)
        _score_block(self.images, self.mean, self.contrast, references, out)
        return out


def _chunk_rows(references: np.ndarray, budget_bytes: int = 256 << 20) -> int:
    """References per chunk so that a float32 copy of a chunk stays within the budget."""
    per_image = references.shape[1] * references.shape[2] * 4
    return max(1, budget_bytes // per_image)


def pairwise_ssim(queries, references) -> np.ndarray:
    """``(Q, N)`` SSIM of every query against every reference (fast kernel, float64 out).

    Within a few 1e-6 of skimage on each pair (not re-checked exactly; use
    ``ssim_search`` for exact best matches).  References are converted to
    float32 in bounded chunks, so a uint8-backed view costs no full copy.
    """
    queries = as_image_stack(queries, "queries")
    references = _image_view(references, "references")
    _check_same_size(queries, references)
    stats = _QueryStats(queries)
    step = _chunk_rows(references)
    return np.concatenate([
        stats.score(as_image_stack(references[start : start + step], "references"))
        for start in range(0, len(references), step)
    ], axis=1)


def ssim(x, y) -> float:
    """SSIM of two 2-D images in [-1, 1]: skimage's structural_similarity with data_range 2."""
    return float(structural_similarity(x, y, data_range=DATA_RANGE))


def ssim_search(queries, references, top_k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` most similar references of each query by SSIM, best first.

    Returns ``(indices, scores)``, each ``(Q, top_k)``: exactly what a loop
    of ``skimage.metrics.structural_similarity(q, r, data_range=2.0)`` over
    the references would rank, ties going to the lower index.
    """
    queries = as_image_stack(queries, "queries")
    references = _image_view(references, "references")
    _check_same_size(queries, references)
    if not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if top_k > len(references):
        raise ValueError(f"top_k={top_k} but there are only {len(references)} references")
    fast = pairwise_ssim(queries, references)
    indices = np.empty((len(queries), top_k), np.int64)
    scores = np.empty((len(queries), top_k), np.float64)
    for q in range(len(queries)):
        indices[q], scores[q] = _exact_top_k(queries[q], references, fast[q], top_k)
    return indices, scores


def _exact_top_k(query: np.ndarray, references: np.ndarray, fast: np.ndarray, top_k: int):
    """Re-score, with skimage, every reference that could be in the top k."""
    kth_best = np.partition(fast, len(fast) - top_k)[len(fast) - top_k]
    candidates = np.flatnonzero(fast >= kth_best - EXACT_MARGIN)
    exact = np.array([ssim(query, np.asarray(references[index], np.float32)) for index in candidates])
    order = np.lexsort((candidates, -exact))[:top_k]  # best score first, then lower index
    return candidates[order], exact[order]


def nearest_neighbour_scores(queries, references) -> np.ndarray:
    """Best-match SSIM of each query against the references (exact, as ``ssim_search``)."""
    return ssim_search(queries, references, top_k=1)[1][:, 0]


def mean_pairwise_ssim(images) -> float:
    """Mean SSIM over all distinct pairs of a set: high means the images look alike."""
    images = as_image_stack(images, "images")
    if len(images) < 2:
        raise ValueError("images: need at least 2 images for a pairwise mean")
    matrix = pairwise_ssim(images, images)
    upper = np.triu_indices(len(images), k=1)
    return float(matrix[upper].mean())


def summarize(scores) -> dict:
    """Median, 10th and 90th percentile and mean of a set of SSIM scores."""
    scores = np.asarray(scores, np.float64)
    return {
        "median": float(np.median(scores)),
        "p10": float(np.percentile(scores, 10)),
        "p90": float(np.percentile(scores, 90)),
        "mean": float(scores.mean()),
    }


# ------------------------------------------------------------ slice levels
# OASIS and the demo cohort number each subject's 32 axial slices from the bottom up; grouped into
# 8 bands of 4, a band's share says how often a set of slices shows that part of the brain.
LEVEL_BANDS = 8
LEVELS_PER_BAND = 4


def bootstrap_interval(statistic, *samples, rng, resamples: int = 1000, level: float = 0.95) -> list[float]:
    """The percentile bootstrap interval of ``statistic(*samples)``: each sample (a 1-D array of per-item
    values) drawn again with replacement, independently, ``resamples`` times -> ``[low, high]``."""
    samples = [np.asarray(sample, np.float64) for sample in samples]
    if any(sample.ndim != 1 or sample.size == 0 for sample in samples):
        raise ValueError("bootstrap_interval: each sample must be a non-empty 1-D array")
    values = [statistic(*(sample[rng.integers(0, sample.size, sample.size)] for sample in samples))
              for _ in range(resamples)]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def level_histogram(levels, bands: int = LEVEL_BANDS, per_band: int = LEVELS_PER_BAND) -> np.ndarray:
    """Share of slices in each band of ``per_band`` consecutive levels (levels past the last band go in it)."""
    levels = np.asarray(levels, dtype=np.int64)
    if levels.size == 0:
        raise ValueError("levels: need at least one slice level")
    counts = np.bincount(np.minimum(levels // per_band, bands - 1), minlength=bands).astype(np.float64)
    return counts / counts.sum()


def total_variation(p, q) -> float:
    """Total-variation distance between two histograms: 0 the same, 1 no overlap."""
    return float(0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def level_distance(levels, reference_levels) -> float:
    """How far a set of slices' level histogram is from a reference set's (total variation over 8 bands)."""
    return total_variation(level_histogram(levels), level_histogram(reference_levels))



# ------------------------------------------------------------ the power spectrum
# SSIM rewards the right layout at the right contrast; it barely sees softness (missing sulci: too little
# power in the middle frequencies) or grain (too much in the highest).  The power spectrum, averaged over
# rings of spatial frequency, shows both.
SPECTRUM_RINGS = 16  # equal steps of radial frequency from 0 to Nyquist (the corners past it are left out)
SPECTRUM_SHAPE_SHARE = 0.75  # the shape is judged on the upper 12 of 16 rings: detail and texture, not the outline
SPECTRUM_CHUNK = 64  # images transformed at a time (512 at 256x256 would take 0.5 GB at once)


def spectrum_rings(size: int) -> int:
    """SPECTRUM_RINGS, or fewer for images under 64 pixels (a quarter of the side): every ring spans two
    frequency steps, so none is empty."""
    return max(1, min(SPECTRUM_RINGS, size // 4))


def ring_power(images, rings: int | None = None) -> np.ndarray:
    """Each image's mean power per ring of spatial frequency: ``(N, rings)``, ring 0 the lowest.

    Each image's mean is removed first, so ring 0 holds the head's shape,
    not its overall brightness.  ``rings`` defaults to ``spectrum_rings``.
    Kept per image so that a set's spectrum can be resampled (bootstrap
    intervals) without transforming the images again.
    """
    stack = as_image_stack(images, "images")
    height, width = stack.shape[1:]
    rings = rings or spectrum_rings(min(height, width))
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")) / 0.5
    ring = np.where(radius <= 1.0, np.minimum((radius * rings).astype(np.int64), rings - 1), -1).ravel()
    members = (ring[:, None] == np.arange(rings)[None, :]).astype(np.float64)
    members /= members.sum(axis=0, keepdims=True)  # a ring's mean over its frequencies
    power = np.empty((len(stack), rings))
    for start in range(0, len(stack), SPECTRUM_CHUNK):
        chunk = stack[start : start + SPECTRUM_CHUNK].astype(np.float64)
        chunk -= chunk.mean(axis=(1, 2), keepdims=True)
        power[start : start + SPECTRUM_CHUNK] = (np.abs(np.fft.fft2(chunk)) ** 2).reshape(len(chunk), -1) @ members
    return power


def radial_spectrum(images, rings: int | None = None) -> np.ndarray:
    """Mean power per ring of spatial frequency, over the images: ``(rings,)`` (``ring_power``'s mean)."""
    return ring_power(images, rings).mean(axis=0)


def shape_distance(spectrum, reference_spectrum) -> float:
    """How far one radial spectrum's shape is from another's (``spectrum_shape_distance``'s rule)."""
    difference = (np.log10(np.maximum(np.asarray(spectrum, np.float64), 1e-20))
                  - np.log10(np.maximum(np.asarray(reference_spectrum, np.float64), 1e-20)))
    upper = difference[-max(1, round(SPECTRUM_SHAPE_SHARE * len(difference))):]
    return float(np.abs(upper - upper.mean()).max())


def spectrum_shape_distance(images, reference) -> float:
    """How far the shape of ``images``' spectrum is from ``reference``'s: 0 the same.

    The largest deviation of log10 power over the upper 3/4 of the rings (12
    of 16), after removing the mean deviation there (a constant offset: a
    brighter or higher-contrast set is not a differently shaped one).  Soft
    images fall below in the middle rings, grainy ones rise in the highest.
    A ring without power (flat images) counts as 1e-20.
    """
    return shape_distance(radial_spectrum(images), radial_spectrum(reference))
