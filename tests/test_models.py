"""Generator and discriminator shapes, ranges and argument checks at every size."""

import numpy as np
import pytest

import modelscript


@pytest.mark.parametrize("arch", ["dcgan", "dcgan-classic"])
@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_and_ranges(arch, size):
    generator = modelscript.build_generator(arch, size)
    discriminator = modelscript.build_discriminator(arch, size)
    latent_dim = modelscript.default_latent_dim(arch)
    assert generator.input_shape == (None, latent_dim)
    latents = np.random.default_rng(0).standard_normal((2, latent_dim)).astype(np.float32) * 3
    images = np.asarray(generator(latents, training=False))
    assert images.shape == (2, size, size, 1)
    assert images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.std() > 0  # not a constant output
    logits = np.asarray(discriminator(images, training=False))
    assert logits.shape == (2, 1)
    assert np.all(np.isfinite(logits))


def test_default_latent_dims_follow_the_seeds():
    assert modelscript.build_generator("dcgan", 32).input_shape[-1] == 256  # seed 000
    assert modelscript.build_generator("dcgan-classic", 32).input_shape[-1] == 100  # Radford et al.
    assert modelscript.build_generator("dcgan", 32, latent_dim=64).input_shape[-1] == 64


def test_dcgan_follows_seed_000_layers():
    generator = modelscript.build_generator("dcgan", 64)
    transposed = [layer for layer in generator.layers if layer.__class__.__name__ == "Conv2DTranspose"]
    convs = [layer for layer in generator.layers if layer.__class__.__name__ == "Conv2D"]
    assert [layer.kernel_size for layer in transposed] == [(4, 4)] * 3
    assert [layer.strides for layer in transposed] == [(2, 2)] * 3
    assert len(convs) == 2
    dropouts = [layer for layer in modelscript.build_discriminator("dcgan", 64).layers if "Dropout" in type(layer).__name__]
    assert dropouts and all(layer.rate == 0.4 for layer in dropouts)


def test_classic_uses_relu_and_glorot_normal():
    generator = modelscript.build_generator("dcgan-classic", 128)
    transposed = [layer for layer in generator.layers if layer.__class__.__name__ == "Conv2DTranspose"]
    assert len(transposed) == 5  # five fractionally-strided convs at 128 (seed 001)
    assert all(type(layer.kernel_initializer).__name__ == "GlorotNormal" for layer in transposed)
    assert any(type(layer).__name__ == "ReLU" for layer in generator.layers)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="arch must be one of"):
        modelscript.build_generator("gan")
    with pytest.raises(ValueError, match="image_size must be one of"):
        modelscript.build_discriminator("dcgan", 100)
    with pytest.raises(ValueError, match="latent_dim"):
        modelscript.build_generator("dcgan", 32, latent_dim=0)
    with pytest.raises(NotImplementedError, match="stylegan"):
        modelscript.build_generator("stylegan", 64)
