"""Adaptive discriminator augmentation (ADA; Karras et al. 2020) for grayscale slices.

A discriminator trained on a few thousand slices memorises them, and the
generator then learns nothing useful.  ADA shows the discriminator real
*and* generated images through the same random transformations, each
applied with probability ``p``.  Because the generator's images go through
them too, the transformations do not "leak" into what it learns, as long
as ``p`` stays below about 0.8.  ``p`` is tuned as training goes:
``r_t = E[sign(D(real))]`` above the target (0.6) means that D is
over-confident on the training images, so ``p`` rises; below it, ``p``
falls.

Images are ``(B, S, S, 1)`` in [-1, 1].  ``augment`` uses only ``keras.ops``,
so gradients flow through it (to G, and to the input for R1) under any
backend.  The transformations, each drawn per image with probability ``p``:

* geometric, as one bilinear affine warp: x-flip, translation (up to 1/8 of
  the size), isotropic scaling (log-normal, std 0.2 ln 2) and rotation
  (uniform over the circle); outside the image is filled with black (-1),
  the slices' own background;
* colour: brightness (+N(0, 0.2)) and contrast (x log-normal, std 0.5 ln 2).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

TRANSLATE = 0.125  # of the image size
SCALE_STD = 0.2 * math.log(2.0)
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5 * math.log(2.0)
ADJUST_EVERY = 4  # steps between updates of p (ADA: every 4 minibatches)


def augment(images, probability, seed_generator):
    """Randomly transformed copies of ``images``; ``probability`` may be a scalar tensor."""
    shape = ops.shape(images)
    batch, size = shape[0], images.shape[1]

    def chance():
        return ops.cast(keras.random.uniform((batch,), seed=seed_generator) < probability, images.dtype)

    flip = 1.0 - 2.0 * chance() * ops.cast(keras.random.uniform((batch,), seed=seed_generator) < 0.5, images.dtype)
    translated = chance()
    shift_x, shift_y = (translated * keras.random.uniform((batch,), -TRANSLATE, TRANSLATE, seed=seed_generator) * size
                        for _ in range(2))
    scale = ops.exp(chance() * keras.random.normal((batch,), stddev=SCALE_STD, seed=seed_generator))
    angle = chance() * keras.random.uniform((batch,), -math.pi, math.pi, seed=seed_generator)

    # affine_transform maps each output pixel (x, y) to the input pixel it
    # samples: input = centre + R(-angle) (flip * (output - centre)) / scale - shift.
    centre = (size - 1) / 2.0
    cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
    a0, a1 = cos * flip, sin
    b0, b1 = -sin * flip, cos
    a2 = centre - a0 * centre - a1 * centre - shift_x
    b2 = centre - b0 * centre - b1 * centre - shift_y
    zeros = ops.zeros_like(a0)
    transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    images = ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="constant",
                                        fill_value=-1.0)

    brightness = chance() * keras.random.normal((batch,), stddev=BRIGHTNESS_STD, seed=seed_generator)
    contrast = ops.exp(chance() * keras.random.normal((batch,), stddev=CONTRAST_STD, seed=seed_generator))
    return images * contrast[:, None, None, None] + brightness[:, None, None, None]


class AdaptiveAugment:
    """The probability ``p`` and its controller.  ``state()``/``load_state()`` go into checkpoints.

    ``observe(real_sign)`` takes each step's mean of sign(D(real logits));
    every ``ADJUST_EVERY`` steps ``p`` moves by ``batch * ADJUST_EVERY /
    (speed_kimg * 1000)`` towards more or less augmentation, so it can go
    from 0 to 1 in ``speed_kimg`` thousand images.
    """

    def __init__(self, batch_size: int, target: float = 0.6, speed_kimg: float = 100.0, probability: float = 0.0,
                 enabled: bool = True):
        self.batch_size, self.target, self.speed_kimg, self.enabled = batch_size, target, speed_kimg, enabled
        self.probability = float(probability) if enabled else 0.0
        self._signs: list[float] = []
        self.last_rt = float("nan")

    def observe(self, real_sign: float) -> None:
        if not self.enabled:
            return
        self._signs.append(float(real_sign))
        if len(self._signs) >= ADJUST_EVERY:
            self.last_rt = float(np.mean(self._signs))
            step = self.batch_size * len(self._signs) / (self.speed_kimg * 1000.0)
            self.probability = float(np.clip(self.probability + np.sign(self.last_rt - self.target) * step, 0.0, 1.0))
            self._signs.clear()

    def state(self) -> dict:
        return {"augment_p": self.probability, "augment_signs": list(self._signs), "augment_rt": self.last_rt}

    def load_state(self, state: dict) -> None:
        if self.enabled:
            self.probability = float(state.get("augment_p", 0.0))
            self._signs = [float(value) for value in state.get("augment_signs", [])]
            self.last_rt = float(state.get("augment_rt", float("nan")))
