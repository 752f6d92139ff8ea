"""What a GAN step computes, written once in keras.ops for every backend and engine.

Tensor conventions: images ``(B, S, S, 1)`` float32 in [-1, 1]; latent
vectors ``(B, latent_dim)`` standard normal; discriminator logits ``(B, 1)``
with real = 1 and fake = 0.  Losses are computed in float32 whatever the
models' (mixed) precision.

* ``gan_objectives``: the plain forward pass and BCE losses (the seeds'
  DCGANs as they trained).
* ``regularised_objectives``: the same with adaptive augmentation of what D
  sees (augment.py) and the R1 penalty (stylegan, dcgan-ada, dcgan-plus, and any
  architecture given --augment ada or --r1-gamma), and for stylegan the
  path-length penalty on G (``path_length_penalty``, --pl-weight).
* ``ema_beta`` and ``moving_average``: the generator's exponential moving
  average, which draws the samples when --ema-kimg is above 0.

Each objective returns ``(g_loss, d_objective, metrics)``; the engines
(tensorflow_engine.py, jax_engine.py) differentiate them.  This module imports no
engine.
"""

from __future__ import annotations

import dataclasses

import keras

from oasis_gan import augment
from oasis_gan.architectures import stylegan



def as_float32(tensor):
    return keras.ops.cast(tensor, "float32")


def discriminator_loss(real_logits, fake_logits):
    """BCE from logits: real images should score 1, generated images 0."""
    real_loss = keras.ops.binary_crossentropy(keras.ops.ones_like(real_logits), real_logits, from_logits=True)
    fake_loss = keras.ops.binary_crossentropy(keras.ops.zeros_like(fake_logits), fake_logits, from_logits=True)
    return keras.ops.mean(real_loss) + keras.ops.mean(fake_loss)


def generator_loss(fake_logits):
    """Non-saturating BCE: the generator wants its images scored as real (1)."""
    return keras.ops.mean(
        keras.ops.binary_crossentropy(keras.ops.ones_like(fake_logits), fake_logits, from_logits=True)
    )


def verdict_metrics(real_logits, fake_logits) -> dict:
    """D's accuracy on real and on generated images."""
    return {
        "d_acc_real": keras.ops.mean(keras.ops.cast(real_logits > 0, "float32")),
        "d_acc_fake": keras.ops.mean(keras.ops.cast(fake_logits < 0, "float32")),
    }


def gan_objectives(generator, discriminator, real_images, latent_vectors):
    """Forward pass of a DCGAN step -> (g_loss, d_loss, metrics)."""
    generated_images = generator(latent_vectors, training=True)
    real_logits = as_float32(discriminator(real_images, training=True))
    fake_logits = as_float32(discriminator(generated_images, training=True))
    g_loss = generator_loss(fake_logits)
    d_loss = discriminator_loss(real_logits, fake_logits)
    return g_loss, d_loss, {"g_loss": g_loss, "d_loss": d_loss, **verdict_metrics(real_logits, fake_logits)}


def path_length_penalty(generator, latent_vectors, pl_mean, input_gradient):
    """StyleGAN2's path-length penalty -> (penalty, mean length), both float32 scalars.

    On the first 1 / PL_BATCH_SHRINK of the batch: the mean squared distance
    of each image's path length (``StyleGenerator.path_lengths``) from
    ``pl_mean``, the running mean of past lengths, which the caller keeps
    (gan.StyleGAN2).  A fixed-size step in w then moves the image
    by a fixed amount wherever w is, which makes G smoother to invert and its
    styles better spread.
    """
    count = max(1, latent_vectors.shape[0] // stylegan.PL_BATCH_SHRINK)
    lengths = generator.path_lengths(latent_vectors[:count], input_gradient)
    return keras.ops.mean(keras.ops.square(lengths - pl_mean)), keras.ops.mean(lengths)


def regularised_objectives(generator, discriminator, seed_generator, real_images, latent_vectors, augment_p,
                           r1_weight: float, input_gradient, augments: bool = True, pl_weight: float = 0.0,
                           pl_mean=None):
    """Forward pass of a regularised step -> (g_objective, d_objective, metrics).

    With ``augments``, D sees real and generated images through the same
    random augmentation (probability ``augment_p``, see augment.py).  With ``r1_weight`` > 0 the
    discriminator's objective gains ``r1_weight`` x the R1 penalty, the
    squared gradient norm of D at the real images (lazy regularisation: the
    caller runs this variant every ``r1_every`` steps with the weight scaled
    up to match).  ``input_gradient(fn, x)`` is the engine's
    ``(fn(x), d sum(fn(x)) / dx)``, differentiable again.  With ``pl_weight``
    > 0 (StyleGAN, every PL_EVERY-th step, the weight scaled up to match), G's
    objective gains ``pl_weight`` x the path-length penalty against
    ``pl_mean``; metrics then hold ``pl_length``, the batch's mean length.
    """
    def judge(images):
        if augments:
            images = augment.augment(images, augment_p, seed_generator)
        return as_float32(discriminator(images, training=True))

    generated_images = as_float32(generator(latent_vectors, training=True))  # augmentation runs in float32
    fake_logits = judge(generated_images)

    g_loss = generator_loss(fake_logits)
    if r1_weight:
        real_logits, r1_gradients = input_gradient(judge, real_images)
        r1_penalty = keras.ops.mean(keras.ops.sum(keras.ops.square(as_float32(r1_gradients)), axis=(1, 2, 3)))
    else:
        real_logits = judge(real_images)
    d_loss = discriminator_loss(real_logits, fake_logits)
    metrics = {"g_loss": g_loss, "d_loss": d_loss, **verdict_metrics(real_logits, fake_logits),
               "real_sign": keras.ops.mean(keras.ops.sign(real_logits))}  # ADA's overfitting signal r_t
    g_objective, d_objective = g_loss, d_loss
    if pl_weight:
        pl_penalty, metrics["pl_length"] = path_length_penalty(generator, latent_vectors, pl_mean, input_gradient)
        metrics["pl_penalty"] = pl_penalty
        g_objective = g_loss + pl_weight * pl_penalty
    if r1_weight:
        metrics["r1_penalty"] = r1_penalty
        d_objective = d_loss + r1_weight * r1_penalty
    return g_objective, d_objective, metrics


def ema_beta(batch_size: int, images_seen: int, half_life_kimg: float, rampup: float = 0.0) -> float:
    """Per-step EMA decay for a half-life in images; with ``rampup`` > 0 the half-life is at most that
    share of the images seen (StyleGAN2-ADA's ramp, 0.05, which keeps the first, poor weights out)."""
    half_life = half_life_kimg * 1000.0
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


def moving_average(average, current, beta):
    """One EMA update of a weight: ``beta * average + (1 - beta) * current``."""
    return current + (average - current) * beta


def averaged_state(variable) -> bool:
    """Whether the EMA averages a generator's non-trainable variable like a weight, or copies it.

    Floating-point state is averaged: batchnorm's running statistics (copied,
    they would be the raw G's, out of step with the averaged weights, which
    skewed the samples towards some slice levels), StyleGAN's running mean of
    w and its fixed noise (constant).  Integer state (RNG seeds) is copied.
    """
    return "float" in str(variable.dtype)


@dataclasses.dataclass
class StepSpec:
    """One architecture's training step, as the engines (tensorflow_engine.py, jax_engine.py) compile it.

    ``forward(real_images, latent_vectors, *scalars)`` returns
    ``(g_loss, d_objective, metrics)``; the engine differentiates G's loss
    with respect to G and D's objective with respect to D, applies both
    optimizers (D first, then G), and, when ``generator_ema`` is set, moves
    it towards G by the scalar named "ema_beta".  Each scalar is a float32
    given anew at every call (augmentation probability, EMA decay), so the
    step is compiled once.
    """

    generator: object
    discriminator: object
    g_optimizer: object
    d_optimizer: object
    forward: object
    batch_size: int
    latent_dim: int
    image_size: int
    scalars: tuple = ()  # names of the float32 scalars after (real_images, latent_vectors)
    extra_state: tuple = ()  # variables the forward pass updates besides the models' own (augmentation RNG)
    generator_ema: object = None
    jit_compile: bool = False  # TensorFlow: compile with XLA (the JAX engine always does)

    def ema_beta(self, scalars):
        return scalars[self.scalars.index("ema_beta")]
