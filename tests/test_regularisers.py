"""The regularisers any architecture takes (R1, a generator EMA, adaptive augmentation), on the DCGANs.

dcgan-plus has all three by default; the seeds' DCGANs train exactly as
before unless a flag asks for one.  StyleGAN's own tests (test_stylegan.py)
cover the same machinery with style mixing on top.
"""

import json

import numpy as np
import pytest

from oasis_gan import training
from oasis_gan.config import ConfigError, TrainConfig
from oasis_gan.runs import checkpoints, sampling
from oasis_gan.runs.run_folder import RunFolder


def weights_of(model):
    return [np.array(variable) for variable in model.weights]


def small_config(**changes) -> TrainConfig:
    values = dict(data_dir="unused", arch="dcgan-plus", image_size=32, latent_dim=16, batch_size=8, steps=6,
                  log_every=2, sample_every=3, checkpoint_every=3, sample_grid=4, seed=1, ssim_every=0, r1_every=2,
                  ada_kimg=1.0)
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def plus_run(tmp_path_factory, tiny_images):
    run_dir = tmp_path_factory.mktemp("plus") / "run"
    trainer = training.Trainer.new(small_config(), run_dir, images=tiny_images, progress=False)
    trainer.start()
    rows = [row for row in (trainer.train_one_step() for _ in range(6)) if row]
    trainer.stop("done")
    return trainer, run_dir, rows


def test_dcgan_plus_trains_with_r1_augmentation_and_an_ema_that_draws_the_samples(plus_run):
    trainer, run_dir, rows = plus_run
    architecture = trainer.architecture
    assert architecture.regularised and trainer.sampling_generator is architecture.generator_ema
    ema, raw = weights_of(architecture.generator_ema), weights_of(architecture.generator)
    assert any(not np.allclose(a, b) for a, b in zip(ema, raw))  # the average lags G
    # ...and so do its batchnorm statistics: averaged with the weights, not copied from G
    ema_stats, raw_stats = ([np.array(v) for v in model.non_trainable_variables]
                            for model in (architecture.generator_ema, architecture.generator))
    assert len(ema_stats) == len(raw_stats) > 0
    assert all(not np.allclose(a, b) for a, b in zip(ema_stats, raw_stats))
    assert all(np.isfinite(row["g_loss"]) and np.isfinite(row["d_loss"]) for row in rows)
    assert any(row.get("r1_penalty", 0) > 0 for row in rows)  # measured, and a squared gradient norm is not 0
    assert any(row["augment_p"] > 0 for row in rows)
    assert not any("pl_penalty" in row for row in rows) and "pl_mean" not in architecture.state()  # StyleGAN's only
    assert architecture.plain_step.experimental_get_tracing_count() == 1
    assert (run_dir / "checkpoints" / "ckpt-00000006" / f"{checkpoints.EMA_MODEL}.weights.h5").is_file()


def test_dcgan_plus_resumes_its_average_and_augmentation(plus_run, tiny_images):
    trainer, run_dir, _ = plus_run
    resumed = training.Trainer.resume(run_dir, images=tiny_images, progress=False, steps=7)
    assert resumed.architecture.augment.probability == trainer.architecture.augment.probability
    for restored, saved in zip(weights_of(resumed.sampling_generator), weights_of(trainer.sampling_generator)):
        np.testing.assert_array_equal(restored, saved)
    loaded, config, _ = sampling.load_generator(run_dir)
    assert config.arch == "dcgan-plus"
    for restored, saved in zip(weights_of(loaded), weights_of(trainer.sampling_generator)):
        np.testing.assert_array_equal(restored, saved)
    raw, _, _ = sampling.load_generator(run_dir, averaged=False)  # G as trained, not its average
    for restored, saved in zip(weights_of(raw), weights_of(trainer.generator)):
        np.testing.assert_array_equal(restored, saved)


def test_the_seed_dcgan_takes_an_ema_alone_when_asked(tmp_path, tiny_images):
    config = small_config(arch="dcgan", ema_kimg=1.0, steps=3)
    trainer = training.Trainer.new(config, tmp_path / "run", images=tiny_images, progress=False)
    assert trainer.config.augment == "off" and trainer.config.r1_gamma == 0.0
    trainer.fit(progress=False)
    architecture = trainer.architecture
    assert architecture.regularised and architecture.augment_seed is None
    assert architecture.r1_step is architecture.plain_step  # no R1 variant compiled
    assert trainer.sampling_generator is architecture.generator_ema
    assert (tmp_path / "run" / "checkpoints" / "ckpt-00000003" / f"{checkpoints.EMA_MODEL}.weights.h5").is_file()


def test_the_seed_dcgans_train_as_they_did_by_default(tmp_path, tiny_images):
    trainer = training.Trainer.new(small_config(arch="dcgan-classic", steps=2), tmp_path / "run",
                                   images=tiny_images, progress=False)
    trainer.fit(progress=False)
    assert not trainer.architecture.regularised and trainer.sampling_generator is trainer.generator
    assert not (tmp_path / "run" / "checkpoints" / "ckpt-00000002" / f"{checkpoints.EMA_MODEL}.weights.h5").exists()


def test_an_average_or_augmentation_cannot_be_switched_on_or_off_when_resuming(plus_run, tiny_images):
    _, run_dir, _ = plus_run
    for changes, field in (({"ema_kimg": 0.0}, "ema_kimg"), ({"augment": "off"}, "augment")):
        with pytest.raises(ConfigError, match="cannot be turned off") as error:
            training.Trainer.resume(run_dir, images=tiny_images, progress=False, **changes)
        assert error.value.field == field
    resumed = training.Trainer.resume(run_dir, images=tiny_images, progress=False, ema_kimg=3.0, r1_gamma=0.0)
    assert resumed.config.ema_kimg == 3.0 and resumed.config.r1_gamma == 0.0  # values may change


def test_a_dcgan_folder_from_before_the_regularisers_reads_back_without_them(tmp_path):
    """Older config.json files left r1_gamma and ema_kimg unset and said augment "ada" for every DCGAN."""
    run = RunFolder(tmp_path / "old")
    run.path.mkdir()
    values = small_config(arch="dcgan").to_dict()
    del values["minutes"]
    values.update(r1_gamma=None, ema_kimg=None, augment="ada")
    (run.path / "config.json").write_text(json.dumps(values))
    config = run.read_config()
    assert (config.r1_gamma, config.ema_kimg, config.augment) == (0.0, 0.0, "off")


@pytest.mark.parametrize("arch", ["dcgan-ada", "dcgan", "stylegan"])
def test_a_folder_from_before_the_schedule_dropout_flip_and_ramp_settings_reads_back_as_it_trained(tmp_path, arch):
    """config.json files from before --lr-end, --lr-decay-start, --d-dropout, --flip-axis and --ema-rampup:
    constant rates, seed 000's discriminator with its dropout of 0.4 in dcgan-ada too (whose default is now
    none), flips of the columns (the default is now the rows) and the EMA's ramp of 0.05 (dcgan-ada's is now
    0.1), so a resume goes on as the run began."""
    run = RunFolder(tmp_path / "old")
    run.path.mkdir()
    values = small_config(arch=arch).validate().resolved().to_dict()
    assert values["flip_axis"] == "rows"
    for name in ("lr_end", "lr_decay_start", "d_dropout", "flip_axis", "ema_rampup"):
        del values[name]
    (run.path / "config.json").write_text(json.dumps(values))
    config = run.read_config()
    assert (config.lr_end, config.lr_decay_start, config.flip_axis, config.ema_rampup) == (1.0, 0.0, "columns", 0.05)
    assert config.d_dropout == (None if arch == "stylegan" else 0.4)
