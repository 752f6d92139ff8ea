"""StyleGAN at 32x32 on the CPU: the networks, truncation and mixing, ADA, the training step, EMA, resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import modelscript
import script_runner
from oasis_gan import augment, training
from oasis_gan.architectures import stylegan
from oasis_gan.config import ConfigError, TrainConfig
from oasis_gan.engines import objectives
from oasis_gan.runs import checkpoints, sampling

LATENT = 64  # a small latent keeps these tests fast


def latents(count, seed=0, dim=LATENT):
    return np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)


def weights_of(model):
    return [np.array(variable) for variable in model.trainable_variables]


@pytest.fixture(scope="module")
def generator():
    keras.utils.set_random_seed(0)
    return modelscript.build_generator("stylegan", 32, latent_dim=LATENT)


def style_config(**changes) -> TrainConfig:
    values = dict(data_dir="unused", arch="stylegan", image_size=32, latent_dim=LATENT, batch_size=8, steps=8,
                  log_every=2, sample_every=4, checkpoint_every=4, sample_grid=4, seed=3, ssim_every=0,
                  r1_every=2, ada_kimg=1.0)
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_images):
    """8 StyleGAN steps on brain-like images, checkpointed at 4 and 8 (the module's tests share it)."""
    run_dir = tmp_path_factory.mktemp("stylegan") / "run"
    trainer = training.Trainer.new(style_config(), run_dir, images=tiny_images, progress=False)
    initial = weights_of(trainer.generator), weights_of(trainer.discriminator)
    trainer.start()
    rows = [row for row in (trainer.train_one_step() for _ in range(8)) if row]
    trainer.stop("done")
    return trainer, run_dir, initial, rows


def test_shapes_ranges_and_parameter_layout(generator):
    images = np.array(generator(latents(5)))
    assert images.shape == (5, 32, 32, 1) and images.dtype == np.float32
    assert images.std() > 0.05  # not a constant image at initialisation
    discriminator = modelscript.build_discriminator("stylegan", 32)
    assert discriminator(images).shape == (5, 1)
    assert generator.num_ws == 8  # 4x4: one conv; 8, 16, 32: two each; plus the last to-image layer
    assert modelscript.generator_io(generator) == (LATENT, 32)
    assert modelscript.build_generator("stylegan", 32).latent_dim == 512  # the architecture's default
    assert modelscript.forward_flops(generator) > 0 and modelscript.forward_flops(discriminator) > 0


def test_inference_is_deterministic_and_training_noise_is_fresh(generator):
    z = latents(3)
    np.testing.assert_array_equal(np.array(generator(z)), np.array(generator(z)))
    generator.noises[-1].noise_scale.assign(np.ones(generator.noises[-1].noise_scale.shape, np.float32))
    generator.mixing_probability = 0.0
    try:
        first, second = (np.array(generator(z, training=True)) for _ in range(2))
    finally:
        generator.noises[-1].noise_scale.assign(np.zeros(generator.noises[-1].noise_scale.shape, np.float32))
        generator.mixing_probability = 0.9
    assert np.abs(first - second).max() > 1e-4


def test_truncation_psi_zero_gives_the_mean_image(generator):
    generator.w_avg.assign(np.random.default_rng(1).standard_normal(LATENT).astype(np.float32) * 0.3)
    images = sampling.generate_images(generator, latents(4), truncation_psi=0.0)
    np.testing.assert_allclose(images, np.repeat(images[:1], 4, axis=0), atol=1e-6)
    mean_image = np.array(generator.synthesize(generator.broadcast(generator.w_avg[None])))
    np.testing.assert_allclose(images[0], mean_image[0], atol=1e-5)
    untruncated = sampling.generate_images(generator, latents(4))
    assert np.abs(untruncated - untruncated[:1]).max() > 1e-3
    with pytest.raises(ValueError, match="truncation"):
        sampling.generate_images(modelscript.build_generator("dcgan", 32), latents(2, dim=256), truncation_psi=0.5)


def test_style_mixing_takes_coarse_styles_from_one_latent_and_fine_from_the_other(generator):
    w_first, w_second = generator.map(latents(2, seed=4)), generator.map(latents(2, seed=5))
    only_first = np.array(generator.synthesize(generator.mix(w_first, w_second, generator.num_ws)))
    np.testing.assert_allclose(only_first, np.array(generator.synthesize(generator.broadcast(w_first))), atol=1e-6)
    only_second = np.array(generator.synthesize(generator.mix(w_first, w_second, 0)))
    np.testing.assert_allclose(only_second, np.array(generator.synthesize(generator.broadcast(w_second))), atol=1e-6)
    mixed = np.array(generator.synthesize(generator.mix(w_first, w_second, 4)))
    assert np.abs(mixed - only_first).max() > 1e-4 and np.abs(mixed - only_second).max() > 1e-4


def test_the_walk_the_mixing_grid_and_truncation_work_in_bfloat16_as_a_gpu_run_computes():
    """The notebook's latent walk and style-mixing grid call the generator's halves outside a call, where
    Keras does not cast the variables: in bfloat16 (a GPU's default, and AMX CPUs') they once failed."""
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        half = modelscript.build_generator("stylegan", 32, latent_dim=16)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert half.compute_dtype == "bfloat16"
    start, end = latents(2, seed=6, dim=16)
    walk = sampling.interpolate_images(half, start, end, 3)
    grid = stylegan.style_mixing_grid(half, latents(2, seed=7, dim=16), latents(3, seed=8, dim=16), crossover=3)
    truncated = sampling.generate_images(half, latents(2, seed=9, dim=16), truncation_psi=0.5)
    for images, count in ((walk, 3), (grid, 3 * 4), (truncated, 2)):
        assert images.shape == (count, 32, 32, 1) and images.dtype == np.float32 and np.isfinite(images).all()
    # The walk ends where the generator's own call lands: the same image, up to bfloat16's rounding.
    np.testing.assert_allclose(walk[[0, -1]], sampling.generate_images(half, np.stack([start, end])), atol=0.05)
    assert np.abs(walk[0] - walk[-1]).max() > 0.05  # and the two ends differ


def test_path_length_penalty_measures_against_the_running_mean_and_trains_mapping_and_synthesis(generator):
    from oasis_gan.engines import tensorflow_engine

    z = tf.constant(latents(6))
    with tf.GradientTape() as tape:
        penalty, mean_length = objectives.path_length_penalty(generator, z, 0.0, tensorflow_engine.input_gradient)
    assert penalty.shape == () and float(mean_length) > 0
    assert float(penalty) >= float(mean_length) ** 2 * (1 - 1e-5)  # against 0: the mean square length
    named = {variable.path.split("/", 1)[1]: variable for variable in generator.trainable_variables}
    reached = tape.gradient(penalty, [named["mapping0/kernel"], named["conv32_1/kernel"],
                                      named["conv8_0/affine/kernel"]])
    assert all(gradient is not None and float(tf.reduce_max(tf.abs(gradient))) > 0 for gradient in reached)
    lengths = np.array(generator.path_lengths(z[:3], tensorflow_engine.input_gradient))
    assert lengths.shape == (3,) and (lengths > 0).all() and np.isfinite(lengths).all()
    assert stylegan.PL_EVERY == 4 and stylegan.PL_BATCH_SHRINK == 2  # StyleGAN2's lazy interval, half batch


def test_augmentation_is_identity_at_p_zero_and_differentiable(tiny_images):
    seed = keras.random.SeedGenerator(0)
    images = tf.constant(tiny_images[:8])
    np.testing.assert_allclose(np.array(augment.augment(images, 0.0, seed)), tiny_images[:8], atol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(images)
        augmented = augment.augment(images, 1.0, seed)
        total = tf.reduce_sum(augmented)
    assert augmented.shape == images.shape
    assert np.abs(np.array(augmented) - tiny_images[:8]).mean() > 0.01
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, images)))) > 0


def assert_same_augment_state(state: dict, expected: dict) -> None:
    """Equal augmentation states: the same keys, equal numbers and lists (NaN equals NaN: no r_t measured yet)."""
    assert state.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(np.asarray(state[key], float), np.asarray(expected[key], float), err_msg=key)


def test_ada_controller_moves_p_towards_the_target_and_round_trips():
    controller = augment.AdaptiveAugment(batch_size=8, target=0.6, speed_kimg=1.0)
    for _ in range(augment.ADJUST_EVERY):
        controller.observe(1.0)  # D certain on every real image: over-fitting, so more augmentation
    assert controller.probability == pytest.approx(8 * augment.ADJUST_EVERY / 1000)
    for _ in range(3 * augment.ADJUST_EVERY):
        controller.observe(0.0)
    assert controller.probability == 0.0  # clipped at 0
    controller.observe(1.0)
    restored = augment.AdaptiveAugment(batch_size=8, speed_kimg=1.0)
    restored.load_state(controller.state())
    assert_same_augment_state(restored.state(), controller.state())
    assert augment.AdaptiveAugment(8, enabled=False).probability == 0.0


def test_ema_half_life():
    assert objectives.ema_beta(32, 10**9, 10.0, 0.05) ** (10_000 / 32) == pytest.approx(0.5)
    assert objectives.ema_beta(32, 64, 10.0, 0.05) == pytest.approx(0.5 ** (32 / (64 * 0.05)))  # ramped
    assert objectives.ema_beta(32, 64, 10.0) ** (10_000 / 32) == pytest.approx(0.5)  # no ramp: the half-life


def test_training_changes_weights_logs_r1_and_p_and_keeps_an_ema(trained_run):
    trainer, run_dir, (g_initial, d_initial), rows = trained_run
    assert any(not np.allclose(a, b) for a, b in zip(g_initial, weights_of(trainer.generator)))
    assert any(not np.allclose(a, b) for a, b in zip(d_initial, weights_of(trainer.discriminator)))
    assert float(np.abs(np.array(trainer.generator.w_avg)).sum()) > 0  # the running mean of w moved
    ema, raw = weights_of(trainer.sampling_generator), weights_of(trainer.generator)
    assert any(not np.allclose(a, b) for a, b in zip(ema, raw))  # the EMA lags the raw generator
    assert any(not np.allclose(a, b) for a, b in zip(ema, g_initial))  # ...but has moved
    for average, current in zip(trainer.sampling_generator.non_trainable_variables,
                                trainer.generator.non_trainable_variables):
        if not objectives.averaged_state(current):  # RNG states are copied, not averaged
            np.testing.assert_array_equal(np.array(average), np.array(current))
    assert not np.allclose(trainer.sampling_generator.w_avg, trainer.generator.w_avg)  # the mean of w: averaged
    assert all(np.isfinite(row["g_loss"]) and np.isfinite(row["d_loss"]) for row in rows)
    assert any(row["augment_p"] > 0 for row in rows)  # D is sure of the real images early on
    assert any("r1_penalty" in row and row["r1_penalty"] > 0 for row in rows)  # a squared gradient norm, not 0
    assert any("pl_penalty" in row and row["pl_penalty"] > 0 for row in rows)  # steps 0 and 4
    assert trainer.architecture.pl_mean > 0  # the running mean of path lengths moved
    assert trainer.architecture.plain_step.experimental_get_tracing_count() == 1
    assert trainer.architecture.r1_step.experimental_get_tracing_count() == 1
    assert trainer.architecture.r1_pl_step.experimental_get_tracing_count() == 1  # r1_every 2 divides PL_EVERY
    np.testing.assert_allclose(trainer.sample(), sampling.generate_images(trainer.sampling_generator,
                                                                          trainer.grid.latents))
    assert (run_dir / "checkpoints" / "ckpt-00000008" / "generator_ema.weights.h5").is_file()


def test_resume_restores_augmentation_strength_ema_and_step(trained_run, tiny_images):
    trainer, run_dir, _, _ = trained_run
    resumed = training.Trainer.resume(run_dir, images=tiny_images, progress=False, steps=10)
    assert resumed.step == 8
    assert resumed.architecture.augment.probability == trainer.architecture.augment.probability > 0
    assert_same_augment_state(resumed.architecture.augment.state(), trainer.architecture.augment.state())
    assert resumed.architecture.pl_mean == trainer.architecture.pl_mean > 0
    for restored, saved in zip(weights_of(resumed.sampling_generator), weights_of(trainer.sampling_generator)):
        np.testing.assert_array_equal(restored, saved)
    np.testing.assert_array_equal(np.array(resumed.architecture.augment_seed.state),
                                  np.array(trainer.architecture.augment_seed.state))
    resumed.train_one_step()
    assert resumed.step == 9


def test_generate_samples_from_the_ema_generator(trained_run):
    trainer, run_dir, _, _ = trained_run
    loaded, config, state = sampling.load_generator(run_dir, run_dir / "checkpoints" / "ckpt-00000008")
    assert config.arch == "stylegan" and state["step"] == 8
    for restored, saved in zip(weights_of(loaded), weights_of(trainer.sampling_generator)):
        np.testing.assert_array_equal(restored, saved)


def test_generate_py_with_truncation_zero_draws_the_average_face_for_every_latent(trained_run, tmp_path):
    _, run_dir, _, _ = trained_run
    result = script_runner.run("generate.py", "--run", run_dir, "--n", 3, "--out", tmp_path / "mean.png", "--npy",
                               tmp_path / "mean.npy", "--truncation", 0, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "truncation psi 0" in result.stdout
    samples = np.load(tmp_path / "mean.npy")
    np.testing.assert_allclose(samples, np.repeat(samples[:1], 3, axis=0), atol=1e-6)
    assert samples.std() > 0  # an image, not a blank: every latent maps to the average style
    result = script_runner.run("generate.py", "--run", run_dir, "--n", 3, "--out", tmp_path / "x.png",
                               "--truncation", 2, cwd=tmp_path)
    assert result.returncode == 2 and "--truncation: must be a number in [0, 1]" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_checkpoint_without_the_ema_is_refused(trained_run, tmp_path, tiny_images):
    _, run_dir, _, _ = trained_run
    broken = tmp_path / "run"
    import shutil

    shutil.copytree(run_dir, broken)
    for checkpoint in (broken / "checkpoints").iterdir():
        (checkpoint / "generator_ema.weights.h5").unlink()
    with pytest.raises(checkpoints.CheckpointError, match="generator_ema"):
        training.Trainer.resume(broken, images=tiny_images, progress=False)


def test_stylegan_settings_are_checked_and_defaulted():
    config = style_config().validate().resolved()
    assert (config.g_learning_rate, config.d_learning_rate, config.beta_1, config.beta_2) == (2e-3, 2e-3, 0.0, 0.99)
    assert config.r1_gamma == pytest.approx(0.0002 * 32**2 / 8) and config.ema_kimg == pytest.approx(8 * 10 / 32)
    assert config.pl_weight == 2.0  # StyleGAN2's
    assert config.ema_rampup == 0.05  # StyleGAN2-ADA's ramp of the EMA's half-life
    dcgan = TrainConfig(data_dir="x", steps=1, arch="dcgan").validate().resolved()
    assert (dcgan.g_learning_rate, dcgan.d_learning_rate, dcgan.beta_1) == (2e-4, 1e-4, 0.5)
    # The seeds' DCGANs train as they did: no R1, no EMA, no augmentation, unless asked.
    assert (dcgan.r1_gamma, dcgan.ema_kimg, dcgan.augment) == (0.0, 0.0, "off")
    plus = TrainConfig(data_dir="x", steps=1, arch="dcgan-plus", batch_size=16).validate().resolved()
    assert (plus.r1_gamma, plus.ema_kimg, plus.augment) == (pytest.approx(0.0002 * 64**2 / 16), 5.0, "ada")
    asked = TrainConfig(data_dir="x", steps=1, arch="dcgan", ema_kimg=2.0, augment="ada").validate().resolved()
    assert (asked.r1_gamma, asked.ema_kimg, asked.augment) == (0.0, 2.0, "ada")
    chosen = TrainConfig(data_dir="x", steps=1, arch="stylegan", g_learning_rate=1e-3)
    assert chosen.validate().resolved().g_learning_rate == 1e-3
    assert chosen.validate() == TrainConfig(data_dir="x", steps=1, arch="stylegan", g_learning_rate=1e-3)  # unchanged
    for changes, field in (({"augment": "diff"}, "augment"), ({"r1_gamma": -1.0}, "r1_gamma"),
                           ({"style_mixing": 1.5}, "style_mixing"), ({"ema_kimg": -1}, "ema_kimg"),
                           ({"r1_every": 0}, "r1_every"), ({"ada_kimg": None}, "ada_kimg"),
                           ({"pl_weight": -2.0}, "pl_weight"), ({"ema_rampup": 1.5}, "ema_rampup")):
        with pytest.raises(ConfigError) as error:
            style_config(**changes).validate()
        assert error.value.field == field
