"""FID and KID from Keras InceptionV3 features (optional; evaluate.py --fid).

    model = inception_model("imagenet")          # downloads the weights once (~90 MB)
    model = inception_model("/path/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    real, fake = inception_features(model, real_images), inception_features(model, generated)
    frechet_distance(real, fake), kernel_inception_distance(real, fake)

The features are the 2048-d average-pooled output of Keras's InceptionV3.
Numbers from it are NOT comparable with published FIDs, which use the 2015
TensorFlow Inception graph (pytorch-fid / TTUR weights): compare runs with
each other, measured by this code, on the same real set.  Grayscale slices
are repeated to three channels and resized bilinearly; they are already in
[-1, 1], the range InceptionV3 expects.  ``weights=None`` builds a randomly
initialised network (what the tests use, offline); its FID only shows that
the plumbing works.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOT_COMPARABLE = ("Keras InceptionV3 features: not comparable to published FIDs "
                  "(those use the 2015 TF Inception graph); compare runs measured by this code")
INPUT_SIZE = 299
MIN_INPUT_SIZE = 75  # InceptionV3's smallest input


def inception_model(weights="imagenet", input_size: int = INPUT_SIZE):
    """InceptionV3 to 2048-d pooled features; weights "imagenet", a local .h5/.weights.h5 path, or None."""
    import keras

    if input_size < MIN_INPUT_SIZE:
        raise ValueError(f"input_size must be at least {MIN_INPUT_SIZE} for InceptionV3, got {input_size}")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise FileNotFoundError(f"Inception weights file {weights} not found (give 'imagenet' to download them)")
    try:
        return keras.applications.InceptionV3(
            include_top=False, weights=weights, pooling="avg", input_shape=(input_size, input_size, 3)
        )
    except Exception as error:  # network down, a wrong file: say which weights and what to do
        raise RuntimeError(
            f"could not load InceptionV3 weights {weights!r} ({error}). Without a network, download "
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere and pass its path"
        ) from error


def inception_features(model, images, batch_size: int = 32) -> np.ndarray:
    """(N, 2048) float64 features of (N, S, S, 1) images in [-1, 1]."""
    import keras

    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    size = model.input_shape[1]
    parts = []
    for start in range(0, len(images), batch_size):
        batch = keras.ops.image.resize(images[start : start + batch_size], (size, size), interpolation="bilinear")
        batch = keras.ops.repeat(keras.ops.clip(batch, -1.0, 1.0), 3, axis=-1)
        parts.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(parts).astype(np.float64)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets."""
    from scipy import linalg

    _check_features(features_a, features_b, minimum=2)
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    with np.errstate(all="ignore"):
        root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product (fewer samples than dimensions): regularise
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray, subsets: int = 10,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets."""
    _check_features(features_a, features_b, minimum=2)
    size = min(subset_size, len(features_a), len(features_b))
    rng = np.random.default_rng(seed)
    dims = features_a.shape[1]
    values = []
    for _ in range(subsets):
        a = features_a[rng.choice(len(features_a), size, replace=False)]
        b = features_b[rng.choice(len(features_b), size, replace=False)]
        k_aa = (a @ a.T / dims + 1) ** 3
        k_bb = (b @ b.T / dims + 1) ** 3
        k_ab = (a @ b.T / dims + 1) ** 3
        off_diagonal = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (size * (size - 1))
        values.append(off_diagonal - 2 * k_ab.mean())
    return float(np.mean(values)), float(np.std(values))


def _check_features(features_a, features_b, minimum: int) -> None:
    for name, features in (("features_a", features_a), ("features_b", features_b)):
        if features.ndim != 2 or len(features) < minimum:
            raise ValueError(f"{name}: need a (N, D) array with N >= {minimum}, got shape {features.shape}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature sizes differ: {features_a.shape[1]} vs {features_b.shape[1]}")
