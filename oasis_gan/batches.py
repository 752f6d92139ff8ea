"""Which real images, flips and latent vectors each training step uses.

Tensor conventions: a batch of real images is ``(B, S, S, 1)`` float32 in
[-1, 1]; latent vectors ``(B, latent_dim)`` standard normal float32.  The
training set the batches come from is either that float32 array or, as
training keeps it, the uint8 pixels (0..255, memory-mapped from the data
cache); a uint8 batch is converted as it is gathered.

A step's batch is a pure function of (seed, step): every epoch is a fresh
permutation of the images, the last partial batch is dropped so every batch
has the same shape, and flips and latents are drawn from generators seeded
by (seed, step).  Resuming at step ``k`` therefore continues exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

import numpy as np

from data_utils import to_float_images

# The array axis of a batch ``(B, S, S, 1)`` that each flip axis (config.FLIP_AXES) mirrors.  OASIS's
# slices (and the demo cohort's) lie with the head's long, front-back axis across the image: mirroring
# the rows swaps the left and right hemispheres, as seed 002 did ("flipped across the horizontal axes");
# mirroring the columns puts the frontal lobes at the back, a brain no scanner shows.
FLIP_AXIS_INDEX = {"rows": 1, "columns": 2}


class BatchSampler:
    """Batches as a pure function of (seed, step): shuffled epochs, flips, latents."""

    def __init__(self, images: np.ndarray, batch_size: int, latent_dim: int, seed: int, flip: bool,
                 process: tuple[int, int] = (0, 1), flip_axis: str = "rows"):
        """``flip_axis``: the image axis a flip mirrors (``FLIP_AXIS_INDEX``); ``process``: (this
        process's id, the process count) in a run of several processes.

        Each process gathers only its consecutive block of every global batch
        (``real_batch`` and ``latent_batch``); ``batch_plan`` is the whole plan.
        """
        self.images = images
        self.batch_size = batch_size
        process_id, processes = process
        share = batch_size // processes
        self._block = slice(process_id * share, (process_id + 1) * share)
        self.latent_dim = latent_dim
        self.seed = seed
        self.flip = flip
        self.mirror_axis = FLIP_AXIS_INDEX[flip_axis]  # the array axis a flip reverses
        self.steps_per_epoch = len(images) // batch_size
        self._epoch_order: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.images))
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def batch_plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices into the images, which of them to flip) for step ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        indices = np.sort(self._order(epoch)[position * self.batch_size : (position + 1) * self.batch_size])
        if self.flip:
            flips = np.random.default_rng([self.seed, 2, step]).random(self.batch_size) < 0.5
        else:
            flips = np.zeros(self.batch_size, dtype=bool)
        return indices, flips

    def real_batch(self, step: int) -> np.ndarray:
        """This process's real images of step ``step``, gathered and flipped on the host."""
        indices, flips = (part[self._block] for part in self.batch_plan(step))
        batch = float_images(self.images[indices])
        batch[flips] = np.flip(batch[flips], axis=self.mirror_axis)
        return batch

    def latent_batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 3, step])
        return rng.standard_normal((self.batch_size, self.latent_dim)).astype(np.float32)[self._block]


def float_images(images: np.ndarray) -> np.ndarray:
    """Images ``(N, S, S, 1)`` as float32 in [-1, 1]: uint8 pixels converted, float images as they are."""
    return to_float_images(images[..., 0]) if images.dtype == np.uint8 else images


def gather_batch(images, indices, flips, mirror_axis: int = FLIP_AXIS_INDEX["rows"]):
    """``images[indices]``, mirrored along the array axis ``mirror_axis`` where ``flips``: ``real_batch`` on the
    device (keras.ops)."""
    import keras

    batch = keras.ops.take(images, indices, axis=0)
    if keras.backend.standardize_dtype(batch.dtype) == "uint8":  # data_utils.to_float_images, on the device
        batch = keras.ops.cast(batch, "float32") / 127.5 - 1.0
    return keras.ops.where(keras.ops.reshape(flips, (-1, 1, 1, 1)), keras.ops.flip(batch, axis=mirror_axis), batch)


def latent_grid(seed: int, count: int, latent_dim: int) -> np.ndarray:
    """Fixed latent vectors (a run's sample grid, the notebook's searches and walks)."""
    return np.random.default_rng([seed, 99]).standard_normal((count, latent_dim)).astype(np.float32)


def sample_latents(n: int, latent_dim: int, seed: int) -> np.ndarray:
    """The latent vectors that generate.py and evaluate.py draw for ``--seed``."""
    return np.random.default_rng([seed, 5]).standard_normal((n, latent_dim)).astype(np.float32)


def real_batches(sampler: BatchSampler, engine, distribution, max_device_bytes: int):
    """``step -> that step's real images``: gathered on the device where a single accelerator holds the
    whole training set (at most ``max_device_bytes``), else read on the host from its memory map (a set
    larger than the device's memory, several replicas, the CPU)."""
    images = sampler.images
    if distribution is None and engine.accelerators() and images.nbytes <= max_device_bytes:
        on_device, gather = engine.to_device(images), engine.compile_gather(sampler.mirror_axis)

        def gathered(step: int):
            indices, flips = sampler.batch_plan(step)
            return gather(on_device, indices, flips)

        return gathered
    return sampler.real_batch

