"""The two-sample classifier test: can a small CNN tell generated slices from real ones?

SSIM-based measures ask whether each sample has a close real match; they
do not ask whether a sample, looked at as a whole, could pass for real.  A
classifier does: train a small network to call samples "generated" and
real slices "real", then count how often it is right on slices it was not
trained on.  0.5 means it cannot tell them apart; 1.0 means every sample
gives itself away (blur, grain, a missing scalp ring, a wrong contrast).

``two_sample_accuracy(samples, real)`` takes as many of each as the smaller
set holds, splits them into ``folds`` parts with both kinds in each, and
for each part trains a fresh network on the other parts (every batch half
of each kind) and predicts this one, so every slice is predicted once by a
network that never saw it.  Each network sees ``updates`` batches of 32
(flips of the rows double the data: on OASIS's slices they swap the
near-symmetric hemispheres, so a flip is no clue to either side, while a
brain whose front and back are swapped stays one), so the time does not
grow with the number of slices: about 14 s at 64x64 on 2 CPU cores.

What it sees (``python benchmarks/classifier_check.py``: the 48-subject demo
cohort at 64x64, against 160 random training slices): 160 other training
slices 0.49, the same with grain of 6 grey levels 0.55 and of 15 grey
levels 0.89, blurred by half a pixel 0.79 and by one pixel 1.00, with front
and back swapped 0.76, with the hemispheres swapped 0.48.  Two things to
keep in mind: the real side should hold many subjects (evaluate.py uses the
training set: the slices of a few subjects give themselves away, 0.90 for
the 2 test subjects' slices), and exact copies of the real side's slices
score under 0.5 (0.36: a copy the network learned as real, labelled
generated, is called real), so read it with the near-copy share.
"""

from __future__ import annotations

import time

import numpy as np

BATCH = 32
UPDATES = 300  # batches per fold: 9,600 slices seen (about 3 s per fold at 64x64 on 2 CPU cores)
FOLDS = 4
LEARNING_RATE = 1e-3
SMALLEST_SIDE = 8  # strided convolutions halve the image until it is this small


def _network(size: int, seed: int):
    """A small all-convolutional classifier: strided 4x4 convolutions to about 8x8, then the mean of each
    channel (so it judges texture and contrast everywhere, not one position) and one logit ("real")."""
    import keras

    layers = [keras.Input((size, size, 1))]
    width, side, index = 16, size, 0
    while side > SMALLEST_SIDE:
        layers += [keras.layers.Conv2D(width, 4, strides=2, padding="same",
                                       kernel_initializer=keras.initializers.GlorotUniform(seed + index)),
                   keras.layers.LeakyReLU(0.2)]
        width, side, index = min(2 * width, 128), side // 2, index + 1
    layers += [keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + index))]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def _as_stack(images, name: str) -> np.ndarray:
    """metrics.as_image_stack's checks (shape, float in [-1, 1]), then square and at least 2 -> (N, H, W, 1)."""
    import metrics

    stack = metrics.as_image_stack(images, f"two_sample_accuracy: {name}")
    if stack.shape[1] != stack.shape[2] or len(stack) < 2:
        raise ValueError(f"two_sample_accuracy: {name} must be at least 2 square images, got shape {np.shape(images)}")
    return stack[..., None]


def fold_of_each(n: int, folds: int, rng) -> np.ndarray:
    """A fold number for each of ``n`` slices: as equal as can be, in random order."""
    return rng.permutation(np.arange(n) % folds)


def two_sample_accuracy(samples, real, *, folds: int = FOLDS, updates: int = UPDATES, seed: int = 0,
                        resamples: int = 1000) -> dict:
    """Held-out accuracy of a small CNN telling ``samples`` from ``real`` (0.5: it cannot tell).

    Returns ``classifier_accuracy``, its 95 % bootstrap interval over the predicted slices
    (``classifier_accuracy_interval``), ``classifier_n`` (slices of each kind used) and
    ``classifier_seconds``.  Deterministic for a seed on one machine.
    """
    import metrics

    samples, real = _as_stack(samples, "samples"), _as_stack(real, "real")
    if samples.shape[1:] != real.shape[1:]:
        raise ValueError(f"two_sample_accuracy: samples are {samples.shape[1:3]}, real slices {real.shape[1:3]}")
    if folds < 2 or updates < 1:
        raise ValueError(f"two_sample_accuracy: need folds >= 2 and updates >= 1, got {folds} and {updates}")
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 31])
    n = min(len(samples), len(real))
    folds = min(folds, n)
    images = np.concatenate([samples[rng.choice(len(samples), n, replace=False)],
                             real[rng.choice(len(real), n, replace=False)]])
    labels = np.concatenate([np.zeros(n, np.float32), np.ones(n, np.float32)])  # 1 = real
    fold = np.concatenate([fold_of_each(n, folds, rng), fold_of_each(n, folds, rng)])  # both kinds in each
    correct = np.zeros(2 * n, bool)
    model = _network(images.shape[1], seed=1000 * seed)  # one network, reset for each fold: compiled once
    initial = model.get_weights()
    for part in range(folds):
        train = np.flatnonzero(fold != part)
        x = np.concatenate([images[train], images[train, ::-1]])
        y = np.concatenate([labels[train], labels[train]])
        kinds = [np.flatnonzero(y == label) for label in (0, 1)]
        model.set_weights(initial)
        for variable in model.optimizer.variables:  # Adam's moments and step count (none before the first fold)
            if not variable.path.endswith("learning_rate"):
                variable.assign(np.zeros(variable.shape, variable.dtype))
        for _ in range(updates):
            batch = np.concatenate([rng.choice(kind, BATCH // 2) for kind in kinds])  # half of each kind
            model.train_on_batch(x[batch], y[batch][:, None])
        predicted = np.flatnonzero(fold == part)
        logits = np.asarray(model(images[predicted], training=False), np.float32)[:, 0]
        correct[predicted] = (logits > 0) == (labels[predicted] == 1)
    interval = metrics.bootstrap_interval(np.mean, correct.astype(np.float64),
                                          rng=np.random.default_rng([seed, 32]), resamples=resamples)
    return {"classifier_accuracy": float(correct.mean()), "classifier_accuracy_interval": interval,
            "classifier_n": int(n), "classifier_seconds": time.perf_counter() - started}
