"""metrics.ssim_search against scikit-image itself: values, indices, ties, bad input."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

import metrics


def skimage_matrix(queries, references):
    return np.array([[structural_similarity(q, r, data_range=2.0) for r in references] for q in queries])


def skimage_top_k(queries, references, k):
    """What a user's skimage loop + stable argsort would return (ties -> lower index)."""
    scores = skimage_matrix(queries, references)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def brain_like(count, size, seed):
    """Ellipse 'brains' with a dark 'ventricle', texture and noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    images = []
    for _ in range(count):
        a, b = rng.uniform(0.55, 0.9, 2)
        brain = (xx / a) ** 2 + (yy / b) ** 2 < 1
        ventricle = (xx / rng.uniform(0.08, 0.2)) ** 2 + (yy / rng.uniform(0.15, 0.4)) ** 2 < 1
        texture = 0.25 * np.sin(xx * rng.uniform(5, 15)) * np.cos(yy * rng.uniform(5, 15))
        image = np.where(brain, 0.4 + texture, -1.0) - 1.0 * (brain & ventricle)
        images.append(np.clip(image + brain * rng.normal(0, 0.05, image.shape), -1, 1))
    return np.asarray(images, np.float32)


@pytest.mark.parametrize("size", [7, 16, 33, 64])
def test_pairwise_matches_skimage_on_random_images(size):
    rng = np.random.default_rng(size)
    queries = rng.uniform(-1, 1, (3, size, size)).astype(np.float32)
    references = rng.uniform(-1, 1, (9, size, size)).astype(np.float32)
    references[0] = queries[0]  # identical: SSIM 1
    references[1] = -1.0  # flat background only
    np.testing.assert_allclose(metrics.pairwise_ssim(queries, references),
                               skimage_matrix(queries, references), atol=1e-5, rtol=0)


def test_pairwise_matches_skimage_on_rectangular_and_float64_images():
    rng = np.random.default_rng(1)
    queries = rng.uniform(-1, 1, (2, 20, 31))
    references = rng.uniform(-1, 1, (4, 20, 31))
    np.testing.assert_allclose(metrics.pairwise_ssim(queries, references),
                               skimage_matrix(queries, references), atol=1e-5, rtol=0)


def test_search_returns_skimage_best_matches_on_brain_like_images():
    queries, references = brain_like(6, 64, seed=1), brain_like(40, 64, seed=2)
    indices, scores = metrics.ssim_search(queries, references, top_k=3)
    expected_indices, expected_scores = skimage_top_k(queries, references, 3)
    assert indices.shape == scores.shape == (6, 3)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4, rtol=0)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_exact_ties_and_near_ties_resolve_like_a_skimage_loop():
    references = brain_like(12, 32, seed=3)
    query = references[4].copy()
    references[9] = references[4]  # exact duplicate: the lower index wins
    references[2] = np.clip(references[4] + np.float32(1e-6), -1, 1)  # near-tie
    indices, scores = metrics.ssim_search(query[None], references, top_k=3)
    expected_indices, expected_scores = skimage_top_k(query[None], references, 3)
    np.testing.assert_array_equal(indices, expected_indices)
    # skimage's own float32 rounding decides the near-tie; the exact duplicate
    # always follows its original (lower index first).
    assert set(indices[0]) == {2, 4, 9} and list(indices[0]).index(4) < list(indices[0]).index(9)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4, rtol=0)


def test_accepts_channel_axis_and_top_k_equal_to_reference_count():
    images = brain_like(5, 16, seed=4)[..., None]
    indices, scores = metrics.ssim_search(images[:2], images, top_k=5)
    assert sorted(indices[0]) == [0, 1, 2, 3, 4]
    assert indices[0, 0] == 0 and indices[1, 0] == 1
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-6)


def test_mean_pairwise_ssim_and_summaries():
    same = np.repeat(brain_like(1, 32, seed=5), 4, axis=0)
    assert metrics.mean_pairwise_ssim(same) == pytest.approx(1.0, abs=1e-6)
    varied = brain_like(6, 32, seed=6)
    pairs = [structural_similarity(a, b, data_range=2.0) for i, a in enumerate(varied) for b in varied[i + 1 :]]
    assert metrics.mean_pairwise_ssim(varied) == pytest.approx(np.mean(pairs), abs=1e-5)
    summary = metrics.summarize([0.1, 0.5, 0.9])
    assert summary["median"] == 0.5 and summary["p10"] < summary["median"] < summary["p90"]


@pytest.mark.parametrize("queries, references, top_k, message", [
    (np.zeros((2, 16)), np.zeros((3, 16, 16)), 1, "queries: expected images shaped"),
    (np.zeros((2, 16, 16)), np.zeros((0, 16, 16)), 1, "references: no images"),
    (np.zeros((0, 16, 16)), np.zeros((3, 16, 16)), 1, "queries: no images"),
    (np.full((2, 16, 16), 255.0), np.zeros((3, 16, 16)), 1, "expected [-1, 1]"),
    (np.zeros((2, 16, 16), np.uint8), np.zeros((3, 16, 16)), 1, "expected float images"),
    (np.zeros((2, 16, 16)), np.zeros((3, 32, 32)), 1, "compare images of one size"),
    (np.zeros((2, 5, 5)), np.zeros((3, 5, 5)), 1, "smaller than the 7x7"),
    (np.zeros((2, 16, 16)), np.zeros((3, 16, 16)), 4, "only 3 references"),
    (np.zeros((2, 16, 16)), np.zeros((3, 16, 16)), 0, "top_k must be a positive integer"),
    (np.full((2, 16, 16), np.nan), np.zeros((3, 16, 16)), 1, "NaN"),
])
def test_bad_input_gets_a_clear_error(queries, references, top_k, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        metrics.ssim_search(queries, references, top_k=top_k)
