"""Images from a generator: batches of samples, latent walks, and a trained run's generator.

Tensor conventions: latent vectors ``(N, latent_dim)`` float32; images
``(N, S, S, 1)`` float32 numpy arrays in [-1, 1].  Generators run in
inference mode (batch-norm moving statistics, no noise resampling beyond
StyleGAN's own).
"""

from __future__ import annotations

import keras
import numpy as np

import modelscript
from oasis_gan.runs import checkpoints
from oasis_gan.runs.run_folder import RunFolder

SAMPLE_BATCH = 64  # images per generator call when sampling


def generate_images(generator, latent_vectors, batch_size: int = SAMPLE_BATCH,
                    truncation_psi: float = 1.0) -> np.ndarray:
    """Generator in inference mode over many latents, in batches -> numpy [-1, 1].

    ``truncation_psi`` < 1 (StyleGAN only) trades variety for typical images.
    """
    latent_vectors = np.asarray(latent_vectors, dtype=np.float32)
    options = {} if truncation_psi == 1.0 else {"truncation_psi": truncation_psi}
    if options and not hasattr(generator, "w_avg"):
        raise ValueError(f"truncation_psi={truncation_psi}: truncation needs a StyleGAN generator")
    parts = [
        keras.ops.convert_to_numpy(generator(latent_vectors[start : start + batch_size], training=False, **options))
        for start in range(0, len(latent_vectors), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def interpolate_images(generator, start, end, count: int) -> np.ndarray:
    """``count`` images on a path from latent vector ``start`` to ``end`` (inference mode).

    StyleGAN walks a straight line between the two style vectors w, the space
    its synthesis network was trained to be smooth in; the DCGANs walk the
    great circle between the two latents, which keeps every point at the
    typical length of a Gaussian vector (a straight line would pass through
    unlikely short ones).
    """
    fractions = np.linspace(0.0, 1.0, count, dtype=np.float32)[:, None]
    start, end = (np.asarray(vector, np.float32).reshape(1, -1) for vector in (start, end))
    if hasattr(generator, "synthesize"):
        w_start, w_end = (keras.ops.convert_to_numpy(generator.map(vector)) for vector in (start, end))
        styles = generator.broadcast(w_start + (w_end - w_start) * fractions)
        return keras.ops.convert_to_numpy(generator.synthesize(styles)).astype(np.float32)
    cosine = float(np.sum(start * end) / (np.linalg.norm(start) * np.linalg.norm(end)))
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    if angle < 1e-6:
        path = start + (end - start) * fractions
    else:
        path = (np.sin((1 - fractions) * angle) * start + np.sin(fractions * angle) * end) / np.sin(angle)
    return generate_images(generator, path.astype(np.float32))


def load_generator(run_dir, checkpoint=None, averaged: bool = True):
    """(generator, config, checkpoint state) of a run: the generator that draws its samples.

    The weights are those of the newest good checkpoint (a corrupt one is
    skipped with a warning), or of ``checkpoint`` (a folder, or its name
    under RUN/checkpoints/).  Runs that keep a generator average (EMA; the
    default for dcgan-ada, dcgan-plus and stylegan) sample from it; ``averaged=False``
    gives G as trained instead.
    """
    run = RunFolder(run_dir)
    config = run.read_config()
    generator = modelscript.build_generator(config.arch, config.image_size, config.latent_dim)
    expect = {"arch": config.arch, "image_size": config.image_size, "latent_dim": config.latent_dim}

    def restore(folder):
        state = checkpoints.restore_checkpoint(folder, generator, expect=expect)
        if averaged and (folder / f"{checkpoints.EMA_MODEL}.weights.h5").is_file():
            checkpoints.load_model_weights(generator, folder, checkpoints.EMA_MODEL)
        return state

    _, state = run.restore(restore, checkpoint)
    return generator, config, state
