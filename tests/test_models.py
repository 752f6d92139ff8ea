"""Generator and discriminator shapes, ranges and argument checks at every size."""

import numpy as np
import pytest

import keras

import modelscript


@pytest.mark.parametrize("arch", ["dcgan", "dcgan-classic", "dcgan-plus"])
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
    assert images.std() > 0  # not a constant output
    logits = np.asarray(discriminator(images, training=False))
    assert logits.shape == (2, 1)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("arch", ["dcgan", "dcgan-classic", "dcgan-plus", "stylegan"])
def test_the_output_stays_in_the_image_range_even_when_driven_far_past_it(arch):
    """A tanh bounds the output: with the last layer's weights scaled up 1000x most pixels saturate at +-1."""
    generator = modelscript.build_generator(arch, 32)
    last = [layer for layer in generator.layers if layer.weights][-1]
    last.set_weights([weight * 1000 for weight in last.get_weights()])
    latents = np.random.default_rng(0).standard_normal((2, modelscript.default_latent_dim(arch))).astype(np.float32)
    images = np.asarray(generator(latents, training=False))
    assert np.abs(images).max() <= 1.0 and np.mean(np.abs(images) > 0.99) > 0.5


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
    discriminator = modelscript.build_discriminator("dcgan", 64)
    dropouts = [layer for layer in discriminator.layers if "Dropout" in type(layer).__name__]
    assert dropouts and all(layer.rate == 0.4 for layer in dropouts)


def test_classic_uses_relu_and_glorot_normal():
    generator = modelscript.build_generator("dcgan-classic", 128)
    transposed = [layer for layer in generator.layers if layer.__class__.__name__ == "Conv2DTranspose"]
    assert len(transposed) == 5  # five fractionally-strided convs at 128 (seed 001)
    assert all(type(layer.kernel_initializer).__name__ == "GlorotNormal" for layer in transposed)
    assert any(type(layer).__name__ == "ReLU" for layer in generator.layers)


def test_plus_draws_the_image_with_a_3x3_conv_and_keeps_the_classic_discriminator():
    generator = modelscript.build_generator("dcgan-plus", 64)
    transposed = [layer for layer in generator.layers if type(layer).__name__ == "Conv2DTranspose"]
    # The last upsampling keeps channels; a 3x3 conv, not a transposed one, makes the image.
    assert [layer.filters for layer in transposed] == [512, 256, 128, modelscript.REFINE_FILTERS]
    assert all(type(layer.kernel_initializer).__name__ == "GlorotNormal" for layer in transposed)
    last = generator.layers[-1]
    assert type(last).__name__ == "Conv2D" and last.kernel_size == (3, 3) and last.strides == (1, 1)
    assert last.name == "to_image" and last.filters == 1
    classic = modelscript.build_discriminator("dcgan-classic", 64)
    assert modelscript.build_discriminator("dcgan-plus", 64).count_params() == classic.count_params()


def test_the_default_dcgan_ada_is_seed_000s_networks_with_the_regularisers():
    from oasis_gan.config import TrainConfig

    default = TrainConfig(data_dir="x", steps=1, batch_size=16).validate().resolved()
    assert default.arch == "dcgan-ada" and default.latent_dim == 256
    assert (default.r1_gamma, default.ema_kimg, default.augment) == (0.0002 * 64**2 / 16, 5.0, "ada")
    # twice seed 000's G rate and 8x its D rate for half the run, then falling to half of that; no dropout in D
    assert (default.g_learning_rate, default.d_learning_rate) == (4e-4, 8e-4)
    assert (default.beta_1, default.beta_2) == (0.0, 0.99)  # StyleGAN2's Adam betas, not the seeds' 0.5 and 0.999
    assert (default.lr_end, default.lr_decay_start, default.d_dropout) == (0.5, 0.5, 0.0)
    assert default.ema_rampup == 0.1  # the EMA's half-life ramps to a tenth of the images seen (StyleGAN2-ADA: 0.05)
    asked = TrainConfig(data_dir="x", steps=1, ema_rampup=0.05).validate().resolved()
    assert asked.ema_rampup == 0.05
    seed_000 = TrainConfig(data_dir="x", steps=1, arch="dcgan").validate().resolved()
    assert (seed_000.g_learning_rate, seed_000.d_learning_rate, seed_000.lr_end, seed_000.d_dropout) == (
        2e-4, 1e-4, 1.0, 0.4)
    assert (seed_000.beta_1, seed_000.beta_2) == (0.5, 0.999)
    for build in (modelscript.build_generator, modelscript.build_discriminator):
        ada, seed = build("dcgan-ada", 64), build("dcgan", 64)
        assert ada.name == seed.name  # dcgan_generator_64, dcgan_discriminator_64
        assert [(w.path, w.shape) for w in ada.weights] == [(w.path, w.shape) for w in seed.weights]


def dropout_rates(model) -> list:
    return [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]


def test_seed_000s_discriminator_drops_what_d_dropout_says_and_the_others_refuse_it():
    from oasis_gan.config import ConfigError, TrainConfig

    assert dropout_rates(modelscript.build_discriminator("dcgan", 64)) == [0.4] * 4  # one after each conv
    assert dropout_rates(modelscript.build_discriminator("dcgan-ada", 64)) == []
    assert dropout_rates(modelscript.build_discriminator("dcgan-ada", 64, dropout=0.25)) == [0.25] * 4
    assert dropout_rates(modelscript.build_discriminator("dcgan", 64, dropout=0.0)) == []
    from oasis_gan.architectures import gan  # what a run builds from its config

    config = TrainConfig(data_dir="x", steps=1, image_size=32, d_dropout=0.3).validate().resolved()
    assert dropout_rates(gan.build_networks(config)[1]) == [0.3] * 3
    with pytest.raises(ConfigError, match="d_dropout: stylegan's discriminator has no dropout") as error:
        TrainConfig(data_dir="x", steps=1, arch="stylegan", d_dropout=0.2).validate()
    assert "dcgan-ada's and dcgan's" in error.value.reason
    with pytest.raises(ConfigError, match="d_dropout: must be a number in"):
        TrainConfig(data_dir="x", steps=1, d_dropout=1.0).validate()
    with pytest.raises(ValueError, match="dcgan-classic's discriminator has no dropout"):
        modelscript.build_discriminator("dcgan-classic", 64, dropout=0.3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="arch: must be one of"):
        modelscript.build_generator("gan")
    with pytest.raises(ValueError, match="image_size: must be one of"):
        modelscript.build_discriminator("dcgan", 100)
    with pytest.raises(ValueError, match="latent_dim"):
        modelscript.build_generator("dcgan", 32, latent_dim=0)
    with pytest.raises(ValueError, match="image_size: must be one of"):
        modelscript.build_generator("stylegan", 48)


def test_flop_count_matches_a_hand_count():
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 outputs x 3*3*3*4 multiply-adds
    x = layers.Conv2DTranspose(2, 4, strides=2, padding="same")(x)  # 8*8 inputs x 4*4*4*2
    x = layers.Flatten()(x)
    outputs = layers.Dense(5)(x)  # (16*16*2) x 5
    model = keras.Model(inputs, outputs)
    assert modelscript.forward_flops(model) == 2 * (64 * 108 + 64 * 128 + 512 * 5)


def test_dcgan_256_step_flops_are_in_the_expected_range():
    generator = modelscript.build_generator("dcgan", 256)
    discriminator = modelscript.build_discriminator("dcgan", 256)
    forward = modelscript.forward_flops(generator) + 2 * modelscript.forward_flops(discriminator)
    assert 17e9 < forward < 19e9  # the "about 17 GFLOP per image" is this forward count
    assert modelscript.train_step_flops(generator, discriminator) == 3 * forward
