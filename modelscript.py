"""Generators and discriminators for brain MRI slices.

Conventions: images are channels-last ``(B, S, S, 1)`` in [-1, 1] (the
generators end in tanh); discriminators return raw logits ``(B, 1)``
(real = 1, fake = 0).  S is a power of two from 32 to 256.  Models use only
``keras`` layers, so they build under any Keras 3 backend.  This module does
no I/O and no plotting.

Architectures (``arch``):

``"dcgan-ada"`` (the default)
    seed 000's networks ("dcgan" below), the discriminator without its
    dropout, trained with the regularisers of StyleGAN2-ADA
    (oasis_gan/architectures/gan.py): R1 on D, a generator EMA that draws the
    samples, and adaptive augmentation, which hold D back instead.  On the
    demo cohort at the CPU budget it is the most realistic (docs/results.md).
``"dcgan-plus"`` (the default until 2026-12-04)
    dcgan-classic's networks, but the generator's last upsampling keeps 32
    channels (batchnorm, ReLU) and a 3x3 conv draws the image from them (less
    pixel speckle than a transposed conv straight to the image leaves),
    trained with the same regularisers.  On the demo cohort built since
    2026-12 (whole head, T1 contrast) its samples collapse to one image
    (docs/results.md); it stays so its runs load and compare.
``"dcgan"`` (seed 000's design)
    G: latent 256 -> dense -> (S/8, S/8, C) -> three 4x4 stride-2 transposed
    convs (256, 128, 64 filters) -> two 3x3 convs (32, then 1 + tanh);
    batchnorm and LeakyReLU(0.2) after every layer but the last.  4x4 kernels
    (divisible by the stride) avoid the checkerboard artefacts that seed 000
    saw with 5x5.  D: 4x4 stride-2 convs (64, 128, 256, 256, ...) down to 4x4,
    LeakyReLU(0.2), batchnorm (not on the first layer), dropout 0.4
    (``--d-dropout``), then a dense logit.
``"dcgan-classic"`` (Radford et al. 2016, as seeds 001 and 003 describe)
    G: latent 100 -> dense -> (4, 4, 1024) -> fractionally-strided 4x4 convs
    halving the filters up to S (five of them at 128, six at 256), ReLU and
    batchnorm, tanh output, Glorot-normal initialisation.  D: the mirror, with
    LeakyReLU(0.2), batchnorm after the first layer, no dropout.
``"stylegan"`` (StyleGAN2, as seeds 002 and 004 aimed for; oasis_gan/architectures/stylegan.py)
    G: mapping network (equalised learning rate) to a style vector w, a
    learned constant 4x4 input, modulated/demodulated 3x3 convs with
    per-layer noise, skip "to image" outputs, tanh.  D: residual blocks with
    minibatch standard deviation.  Trained with R1, style mixing, a generator
    EMA and adaptive augmentation (oasis_gan/engines/objectives.py, oasis_gan/augment.py).

Each architecture is one entry of oasis_gan/architectures/table.py (its
defaults, its regularisers, its two builders below, by name).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from oasis_gan.architectures import stylegan, table
from oasis_gan.config import check_model

LEAK = 0.2  # LeakyReLU slope, as in Radford et al. and all seeds
# Keras's default batchnorm momentum (0.99) averages over ~100 steps; the GAN's
# weights move faster than that early on, and inference-mode samples (which use
# the moving statistics) come out nearly black.  0.9 is PyTorch's default and
# what DCGAN implementations were tuned with.
BN_MOMENTUM = 0.9
REFINE_FILTERS = 32  # dcgan-plus: channels of the last upsampling, from which a 3x3 conv draws the image
DENSE_UNITS_CAP = 2**17  # dcgan: keeps the projection under ~33M weights at 256x256


def check_arch(arch: str, image_size: int) -> None:
    """Raise ValueError naming the bad argument (the check TrainConfig.validate makes)."""
    check_model(arch, image_size)


def default_latent_dim(arch: str) -> int:
    return table.get(arch).defaults["latent_dim"]


def _resolve_latent(arch: str, latent_dim: int | None) -> int:
    latent_dim = default_latent_dim(arch) if latent_dim is None else latent_dim
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    return latent_dim


def build_generator(arch: str = "dcgan", image_size: int = 256, latent_dim: int | None = None) -> keras.Model:
    """``(B, latent_dim)`` latent vectors -> ``(B, S, S, 1)`` images in [-1, 1]."""
    check_arch(arch, image_size)
    return table.get(arch).build_generator(image_size, _resolve_latent(arch, latent_dim))


def build_discriminator(arch: str = "dcgan", image_size: int = 256, dropout: float | None = None) -> keras.Model:
    """``(B, S, S, 1)`` images -> ``(B, 1)`` logits (real = 1, fake = 0).

    ``dropout``: for the architectures whose discriminator has dropout (dcgan, dcgan-ada); None
    takes the architecture's default.
    """
    check_arch(arch, image_size)
    return table.get(arch).build_discriminator(image_size, dropout)


def io_shapes(model: keras.Model) -> tuple[tuple, tuple]:
    """(input shape, output shape) of any model built here, batch axis None.

    Functional models know them; StyleGAN's generator (a subclassed model)
    is run once on a zero latent vector to find its output.
    """
    if isinstance(model, stylegan.StyleGenerator):
        output = model(keras.ops.zeros((1, model.latent_dim)), training=False)
        return (None, model.latent_dim), (None, *output.shape[1:])
    return tuple(model.input_shape), tuple(model.output_shape)


def generator_io(generator) -> tuple[int, int]:
    """(latent_dim, image_size) of any generator built here."""
    inputs, outputs = io_shapes(generator)
    return inputs[-1], outputs[1]


# ----------------------------------------------------------------- dcgan


def dcgan_generator(image_size: int, latent_dim: int) -> keras.Model:
    start = image_size // 8  # three stride-2 upsamplings reach image_size
    channels = min(256, DENSE_UNITS_CAP // (start * start))
    latent_vectors = keras.Input((latent_dim,), name="latent_vectors")
    x = layers.Dense(start * start * channels, use_bias=False, name="project")(latent_vectors)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="project_bn")(x)
    x = layers.LeakyReLU(LEAK)(x)
    x = layers.Reshape((start, start, channels))(x)
    for index, filters in enumerate((256, 128, 64)):
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False, name=f"up{index}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"up{index}_bn")(x)
        x = layers.LeakyReLU(LEAK)(x)
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="refine")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="refine_bn")(x)
    x = layers.LeakyReLU(LEAK)(x)
    images = layers.Conv2D(1, 3, padding="same", activation="tanh", dtype="float32", name="to_image")(x)
    return keras.Model(latent_vectors, images, name=f"dcgan_generator_{image_size}")


def dcgan_discriminator(image_size: int, dropout: float) -> keras.Model:
    """Seed 000's discriminator; ``dropout`` after each layer (seed 000: 0.4, which slows it down; 0: none)."""
    images = keras.Input((image_size, image_size, 1), name="images")
    x = images
    for index in range(int(math.log2(image_size // 4))):
        filters = min(256, 64 * 2**index)
        x = layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=index == 0, name=f"down{index}")(x)
        if index > 0:  # no batchnorm on the input layer (Radford et al.)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"down{index}_bn")(x)
        x = layers.LeakyReLU(LEAK)(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    logits = layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(images, logits, name=f"dcgan_discriminator_{image_size}")


# --------------------------------------------------------- dcgan-classic

_GLOROT = "glorot_normal"


def classic_generator(image_size: int, latent_dim: int, refine: bool = False) -> keras.Model:
    """dcgan-classic's generator; ``refine`` (dcgan-plus) ends in a 3x3 conv instead of a transposed one.

    A 4x4 stride-2 transposed conv straight to the image gives each of the four
    pixel phases its own 2x2 slice of the kernel, which shows as pixel-level
    speckle; with ``refine`` the last upsampling keeps a few feature channels
    (batchnorm, ReLU) and a 3x3 conv draws the image from them.
    """
    latent_vectors = keras.Input((latent_dim,), name="latent_vectors")
    x = layers.Dense(4 * 4 * 1024, use_bias=False, kernel_initializer=_GLOROT, name="project")(latent_vectors)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="project_bn")(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((4, 4, 1024))(x)
    n_up = int(math.log2(image_size // 4))
    for index in range(n_up - 1):
        filters = max(32, 512 // 2**index)
        x = layers.Conv2DTranspose(
            filters, 4, strides=2, padding="same", use_bias=False, kernel_initializer=_GLOROT, name=f"up{index}"
        )(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"up{index}_bn")(x)
        x = layers.ReLU()(x)
    if not refine:
        images = layers.Conv2DTranspose(
            1, 4, strides=2, padding="same", activation="tanh", kernel_initializer=_GLOROT, dtype="float32",
            name="to_image",
        )(x)
        return keras.Model(latent_vectors, images, name=f"classic_generator_{image_size}")
    x = layers.Conv2DTranspose(REFINE_FILTERS, 4, strides=2, padding="same", use_bias=False,
                               kernel_initializer=_GLOROT, name=f"up{n_up - 1}")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"up{n_up - 1}_bn")(x)
    x = layers.ReLU()(x)
    images = layers.Conv2D(1, 3, padding="same", activation="tanh", kernel_initializer=_GLOROT, dtype="float32",
                           name="to_image")(x)
    return keras.Model(latent_vectors, images, name=f"plus_generator_{image_size}")


def plus_generator(image_size: int, latent_dim: int) -> keras.Model:
    """dcgan-plus's generator: dcgan-classic's, drawing the image with a 3x3 conv (``refine``)."""
    return classic_generator(image_size, latent_dim, refine=True)


def classic_discriminator(image_size: int) -> keras.Model:
    images = keras.Input((image_size, image_size, 1), name="images")
    x = images
    n_down = int(math.log2(image_size // 4))
    for index in range(n_down):
        filters = min(1024, 64 * 2 ** max(0, index - (n_down - 4)))  # ends at 512 before the 4x4 map
        x = layers.Conv2D(
            filters, 4, strides=2, padding="same", use_bias=index == 0, kernel_initializer=_GLOROT, name=f"down{index}"
        )(x)
        if index > 0:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"down{index}_bn")(x)
        x = layers.LeakyReLU(LEAK)(x)
    x = layers.Flatten()(x)
    logits = layers.Dense(1, kernel_initializer=_GLOROT, dtype="float32", name="logit")(x)
    return keras.Model(images, logits, name=f"classic_discriminator_{image_size}")


# ---------------------------------------------------------------- FLOPs


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations of one image's forward pass, counted from the layers.

    Counts the multiply-adds of Dense, Conv2D and Conv2DTranspose layers as 2
    FLOPs each (bias, batchnorm and activations add well under 1 % here and
    are left out).  A transposed conv scatters every input pixel through its
    k x k x C_out kernel, so it is counted on its input size.
    """
    if hasattr(model, "forward_flops"):  # stylegan's generator counts its own layers
        return int(model.forward_flops())
    total = 0
    for layer in model.layers:
        if hasattr(layer, "forward_flops"):  # stylegan's equalised and modulated layers
            total += layer.forward_flops()
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
        elif isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            kernel_h, kernel_w, channels_in, channels_out = (
                layer.kernel.shape if isinstance(layer, layers.Conv2D) else
                (*layer.kernel.shape[:2], layer.kernel.shape[3], layer.kernel.shape[2]))
            spatial = layer.input.shape if isinstance(layer, layers.Conv2DTranspose) else layer.output.shape
            total += 2 * kernel_h * kernel_w * channels_in * channels_out * spatial[1] * spatial[2]
    return int(total)


def train_step_flops(generator: keras.Model, discriminator: keras.Model) -> int:
    """FLOPs per image of one training step (``tensorflow_engine.train_step``).

    The step runs G once and D twice (real and generated) forward, then back
    through all three; a backward pass costs about twice its forward pass
    (gradients for the inputs and for the weights), so the step is about
    3 x (G + 2 D) forward passes.
    """
    return 3 * (forward_flops(generator) + 2 * forward_flops(discriminator))
