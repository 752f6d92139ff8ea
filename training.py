"""The GAN training engine shared by train.py, the notebook and the tests.

Tensor conventions: images ``(B, S, S, 1)`` float32 in [-1, 1]; latent
vectors ``(B, latent_dim)`` standard normal; discriminator logits ``(B, 1)``
with real = 1 and fake = 0.

The pieces, top to bottom:

* ``gan_objectives`` and ``stylegan_objectives``: the forward pass and the
  losses of one step, in keras.ops, for any backend.  StyleGAN's adds
  adaptive augmentation of what D sees and the R1 penalty (every
  ``r1_every`` steps).
* ``compile_train_step`` and ``compile_stylegan_steps``: the update around
  them, from the running backend's engine (``engine()``): a GradientTape in
  a ``tf.function`` with fixed batch shapes (steps_tf.py, the default) or
  jax.vjp under jax.jit (steps_jax.py).  Each is compiled once.  StyleGAN's
  also moves the generator's moving average (EMA), which all sampling uses.
* ``BatchSampler``: which real images, flips and latent vectors step ``k``
  uses, a pure function of (seed, step).  Resuming at step ``k`` therefore
  continues exactly where an uninterrupted run would be.
* ``Trainer``: a run folder, the models and optimizers (in the configured
  precision, on the configured devices), history.csv, fixed-latent sample
  grids and atomic checkpoints (see checkpoints.py).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

import augment
import checkpoints
import data_utils
import modelscript
import plots
from config import ConfigError, TrainConfig

HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = plots.HISTORY_COLUMNS
SAMPLES_DIR = "samples"
FINAL_SAMPLES = "samples.png"
REAL_SAMPLES = "real_samples.png"
LOSS_PLOT = "losses.png"
FIXED_LATENTS = "fixed_latents.npy"
ENVIRONMENT_FILE = "environment.json"
SAMPLE_BATCH = 64  # images per generator call when sampling
MODEL_FIELDS = ("arch", "image_size", "latent_dim")  # fixed for the life of a run
EMA_RAMPUP = 0.05  # early on, the EMA half-life is at most 5 % of the images seen (StyleGAN2-ADA)


class TrainingDiverged(RuntimeError):
    """Losses or weights stopped being finite; the last good checkpoint is kept."""


# ------------------------------------------------------------------ losses


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


# -------------------------------------------------------------------- step
# The forward pass and the losses are written once, in keras.ops; the update
# around them is the backend's (see ``engine``): a GradientTape and a
# tf.function in steps_tf.py (the default), jax.vjp and jax.jit in
# steps_jax.py.


def as_float32(tensor):
    """Losses are computed in float32 whatever the models' (mixed) precision."""
    return keras.ops.cast(tensor, "float32")


def _verdict_metrics(real_logits, fake_logits) -> dict:
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
    return g_loss, d_loss, {"g_loss": g_loss, "d_loss": d_loss, **_verdict_metrics(real_logits, fake_logits)}


def stylegan_objectives(generator, discriminator, seed_generator, real_images, latent_vectors, augment_p,
                        r1_weight: float, input_gradient):
    """Forward pass of a StyleGAN2 step -> (g_loss, d_objective, metrics).

    D sees real and generated images through the same random augmentation
    (probability ``augment_p``, see augment.py).  With ``r1_weight`` > 0 the
    discriminator's objective gains ``r1_weight`` x the R1 penalty, the
    squared gradient norm of D at the real images (lazy regularisation: the
    caller runs this variant every ``r1_every`` steps with the weight scaled
    up to match).  ``input_gradient(fn, x)`` is the backend's
    ``(fn(x), d sum(fn(x)) / dx)``, differentiable again.
    """
    generated_images = as_float32(generator(latent_vectors, training=True))  # augmentation runs in float32
    fake_logits = as_float32(discriminator(augment.augment(generated_images, augment_p, seed_generator),
                                           training=True))

    def judge_real(images):
        return as_float32(discriminator(augment.augment(images, augment_p, seed_generator), training=True))

    g_loss = generator_loss(fake_logits)
    if r1_weight:
        real_logits, r1_gradients = input_gradient(judge_real, real_images)
        r1_penalty = keras.ops.mean(keras.ops.sum(keras.ops.square(as_float32(r1_gradients)), axis=(1, 2, 3)))
    else:
        real_logits = judge_real(real_images)
    d_loss = discriminator_loss(real_logits, fake_logits)
    metrics = {"g_loss": g_loss, "d_loss": d_loss, **_verdict_metrics(real_logits, fake_logits),
               "real_sign": keras.ops.mean(keras.ops.sign(real_logits))}  # ADA's overfitting signal r_t
    if r1_weight:
        metrics["r1_penalty"] = r1_penalty
        return g_loss, d_loss + r1_weight * r1_penalty, metrics
    return g_loss, d_loss, metrics


def gather_batch(images, indices, flips):
    """``images[indices]``, flipped left-right where ``flips``: the batch step on the device."""
    batch = keras.ops.take(images, indices, axis=0)
    return keras.ops.where(keras.ops.reshape(flips, (-1, 1, 1, 1)), keras.ops.flip(batch, axis=2), batch)


def engine():
    """The step module for the running Keras backend: steps_tf (TensorFlow) or steps_jax (JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import steps_tf

        return steps_tf
    if backend == "jax":
        import steps_jax

        return steps_jax
    raise RuntimeError(
        f"KERAS_BACKEND={backend!r}: training runs on the 'tensorflow' (default) or 'jax' backend; "
        "set KERAS_BACKEND to one of them"
    )


def compile_train_step(generator, discriminator, g_optimizer, d_optimizer, batch_size: int,
                       jit_compile: bool = False, distribution=None):
    """The DCGAN step ``step(real_images, latent_vectors) -> metrics``, compiled once for fixed shapes.

    TensorFlow: a GradientTape step in a tf.function (XLA with ``jit_compile``);
    JAX: the same step under jax.jit.
    """
    return engine().compile_train_step(generator, discriminator, g_optimizer, d_optimizer, batch_size,
                                       jit_compile=jit_compile, distribution=distribution)


def compile_stylegan_steps(generator, generator_ema, discriminator, g_optimizer, d_optimizer, seed_generator,
                           batch_size: int, r1_weight: float, jit_compile: bool = False, distribution=None):
    """The StyleGAN step without and with the R1 term, each compiled once.

    Both take ``(real_images, latent_vectors, augment_p, ema_beta)``; after
    the update the EMA generator moves: ``ema = beta * ema + (1 - beta) * G``.
    """
    return engine().compile_stylegan_steps(generator, generator_ema, discriminator, g_optimizer, d_optimizer,
                                           seed_generator, batch_size, r1_weight, jit_compile=jit_compile,
                                           distribution=distribution)


def ema_beta(batch_size: int, images_seen: int, half_life_kimg: float) -> float:
    """Per-step EMA decay for a half-life in images, ramped up over the first images (StyleGAN2-ADA)."""
    half_life = min(half_life_kimg * 1000.0, images_seen * EMA_RAMPUP)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


def make_optimizers(config: TrainConfig):
    """Adam for G and D with the configured rates (unset: the architecture's, config.OPTIMIZER_DEFAULTS)."""
    settings = config.optimizer_settings()
    betas = {"beta_1": settings["beta_1"], "beta_2": settings["beta_2"]}
    g_optimizer = keras.optimizers.Adam(settings["g_learning_rate"], **betas)
    d_optimizer = keras.optimizers.Adam(settings["d_learning_rate"], **betas)
    if config.precision == "mixed_float16":  # float16 gradients underflow without dynamic loss scaling
        return keras.optimizers.LossScaleOptimizer(g_optimizer), keras.optimizers.LossScaleOptimizer(d_optimizer)
    return g_optimizer, d_optimizer


def build_optimizers(generator, discriminator, g_optimizer, d_optimizer) -> None:
    """Create the optimizers' variables now: inside a compiled step they would cost a second trace."""
    for optimizer, model in ((g_optimizer, generator), (d_optimizer, discriminator)):
        if not optimizer.built:
            optimizer.build(model.trainable_variables)


def build_models(config: TrainConfig):
    """Generator and discriminator for a config, in its compute precision (weights stay float32)."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(config.precision)
    try:
        generator = modelscript.build_generator(config.arch, config.image_size, config.resolved_latent_dim)
        discriminator = modelscript.build_discriminator(config.arch, config.image_size)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return generator, discriminator


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


def latent_grid(seed: int, count: int, latent_dim: int) -> np.ndarray:
    """The fixed latent vectors whose images are saved as the run goes on."""
    return np.random.default_rng([seed, 99]).standard_normal((count, latent_dim)).astype(np.float32)


def describe_environment() -> dict:
    """Versions and the device, saved with a run so its figures can be attributed."""
    step_engine = engine()
    device, tag = step_engine.describe_devices()
    return {
        "device": device, "device_tag": tag, "python": platform.python_version(),
        **step_engine.versions(), "keras": keras.__version__, "backend": keras.backend.backend(),
        "numpy": np.__version__, "platform": platform.platform(),
    }


# ------------------------------------------------------------------- data


class BatchSampler:
    """Batches as a pure function of (seed, step): shuffled epochs, flips, latents.

    Every epoch is a fresh permutation of the images; the last partial batch
    is dropped so every batch has the same shape.
    """

    def __init__(self, images: np.ndarray, batch_size: int, latent_dim: int, seed: int, flip: bool):
        self.images = images
        self.batch_size = batch_size
        self.latent_dim = latent_dim
        self.seed = seed
        self.flip = flip
        self.steps_per_epoch = len(images) // batch_size
        self._epoch_order: tuple[int, np.ndarray] | None = None

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _order(self, epoch: int) -> np.ndarray:
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            order = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.images))
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def batch_plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices into the images, which of them to flip left-right) for step ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        indices = np.sort(self._order(epoch)[position * self.batch_size : (position + 1) * self.batch_size])
        if self.flip:
            flips = np.random.default_rng([self.seed, 2, step]).random(self.batch_size) < 0.5
        else:
            flips = np.zeros(self.batch_size, dtype=bool)
        return indices, flips

    def real_batch(self, step: int) -> np.ndarray:
        indices, flips = self.batch_plan(step)
        batch = self.images[indices]
        batch[flips] = batch[flips, :, ::-1]
        return batch

    def latent_batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 3, step])
        return rng.standard_normal((self.batch_size, self.latent_dim)).astype(np.float32)


def data_dir_of(config: TrainConfig, progress: bool = False):
    """The folder a config trains on: its data_dir, or the demo cohort (built on first use)."""
    if config.demo:
        return data_utils.make_demo_dataset(config.demo_root, n_subjects=config.demo_subjects, progress=progress)
    return config.data_dir


def load_training_images(config: TrainConfig, progress: bool = True) -> np.ndarray:
    """The configured data (demo cohort or a real folder) at the training size."""
    data_dir = data_dir_of(config, progress)
    return data_utils.load_oasis(
        data_dir, splits=config.splits, image_size=config.image_size, limit=config.limit, progress=progress
    )


def ssim_reference_subset(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fixed random subset of the training images (in data order) for SSIM during training."""
    return data_utils.random_subset(images, count, np.random.default_rng([seed, 7]))


# ----------------------------------------------------------------- trainer


class Trainer:
    """Owns one run folder: models, optimizers, history, samples, checkpoints.

    ``Trainer(config, run_dir, images)`` starts a new run, or with
    ``resume=True`` continues the latest checkpoint in ``run_dir`` (the
    config is then read from the run folder; ``config`` may be None).
    """

    def __init__(self, config: TrainConfig | None, run_dir, images: np.ndarray | None = None,
                 resume: bool = False, overrides: dict | None = None, progress: bool = True):
        self.run_dir = Path(run_dir)
        if resume:
            config = self._config_for_resume(overrides if overrides is not None else
                                             (config.to_dict() if config is not None else {}))
        elif config is None:
            raise ConfigError("config", "a new run needs a TrainConfig")
        else:
            config.validate()
            self._check_fresh_run_dir()
        self.config = config
        if config.deterministic:
            engine().enable_determinism()
        engine().set_random_seed(config.seed)

        self.images = load_training_images(config, progress) if images is None else images
        if self.images.ndim != 4 or self.images.shape[1:] != (config.image_size, config.image_size, 1):
            raise ConfigError(
                "image_size",
                f"images have shape {self.images.shape[1:]}, expected ({config.image_size}, {config.image_size}, 1)",
            )
        self.steps_per_epoch = config.steps_per_epoch(len(self.images))
        self.total_steps = config.total_steps(len(self.images))
        self.sampler = BatchSampler(self.images, config.batch_size, config.resolved_latent_dim, config.seed, config.flip)

        self.fixed_latents = latent_grid(config.seed, config.sample_grid, config.resolved_latent_dim)
        self.ssim_references = ssim_reference_subset(self.images, config.ssim_references, config.seed)
        self.is_stylegan = config.arch == "stylegan"
        self.generator_ema = None  # StyleGAN: the averaged generator that all sampling uses
        self.augment = augment.AdaptiveAugment(config.batch_size, config.ada_target, config.ada_kimg,
                                               enabled=self.is_stylegan and config.augment == "ada")
        self._build(config)

        self.step = 0
        self.last_checkpoint_step = -1
        self._samples: tuple[int, np.ndarray] | None = None  # (step, fixed-latent images) of the latest sample
        self._pending: list[dict] = []  # metrics of steps not yet written to history
        self._started = self._log_start = time.perf_counter()
        self._elapsed_before = 0.0
        if resume:
            self._restore_latest()
        else:
            self._start_run_folder()

    # --- setup

    def _build(self, config: TrainConfig) -> None:
        """Models, optimizers and the compiled step, on the configured devices and precision."""
        step_engine = engine()
        self.distribution = step_engine.make_distribution(config.devices)
        self.replicas = step_engine.replica_count(self.distribution)
        if config.batch_size % self.replicas:
            raise ConfigError("batch_size", f"{config.batch_size} does not split evenly over {self.replicas} "
                                            "devices; use a multiple of the device count")
        with step_engine.distribution_scope(self.distribution):
            self.generator, self.discriminator = build_models(config)
            self.g_optimizer, self.d_optimizer = make_optimizers(config)
            options = {"jit_compile": config.jit_compile, "distribution": self.distribution}
            if self.is_stylegan:
                self.generator.mixing_probability = config.style_mixing
                self.generator_ema = build_models(config)[0]
                self.generator_ema.set_weights(self.generator.get_weights())
                self.augment_seed = keras.random.SeedGenerator(config.seed)
                # Lazy R1: gamma / 2 x the penalty, on every r1_every-th step, so x r1_every.
                self._plain_step, self._r1_step = compile_stylegan_steps(
                    self.generator, self.generator_ema, self.discriminator, self.g_optimizer,
                    self.d_optimizer, self.augment_seed, config.batch_size,
                    config.resolved_r1_gamma / 2 * config.r1_every, **options,
                )
            else:
                self._step_fn = compile_train_step(self.generator, self.discriminator, self.g_optimizer,
                                                   self.d_optimizer, config.batch_size, **options)
        # On a single accelerator the training set lives on the device and batches are gathered there.
        on_device = self.distribution is None and bool(step_engine.accelerators())
        self._device_images = step_engine.to_device(self.images) if on_device else None
        self._gather = step_engine.compile_gather() if on_device else None

    def _config_for_resume(self, overrides: dict) -> TrainConfig:
        """The run's saved config, with the given settings applied on top.

        The model's shape (arch, image_size, latent_dim) must match the saved
        run; anything else (length, learning rates, data folder) may change,
        and the updated config is saved back when training goes on.
        """
        saved = TrainConfig.load(self.run_dir)
        for name in MODEL_FIELDS:
            if name in overrides and overrides[name] != getattr(saved, name):
                raise ConfigError(
                    name,
                    f"{self.run_dir} was trained with {name}={getattr(saved, name)!r} but "
                    f"{overrides[name]!r} was asked for; resume it with its own settings "
                    "or start a new run folder",
                )
        merged = TrainConfig.from_dict({**saved.to_dict(), **overrides}).validate()
        if (saved.precision == "mixed_float16") != (merged.precision == "mixed_float16"):
            raise ConfigError(
                "precision",
                f"{self.run_dir} was trained with precision {saved.precision!r}; a run cannot switch to or from "
                "mixed_float16 (its optimizer state holds the loss scale); resume it with its own precision",
            )
        if checkpoints.latest_checkpoint(self.run_dir) is None:
            raise FileNotFoundError(f"{self.run_dir} holds no complete checkpoint to resume from")
        return merged

    def _check_fresh_run_dir(self) -> None:
        if (self.run_dir / "config.json").exists() or checkpoints.latest_checkpoint(self.run_dir):
            raise FileExistsError(
                f"{self.run_dir} already holds a run; resume it (--resume / resume=True) "
                "or choose another run folder. Nothing was changed."
            )

    def _start_run_folder(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / SAMPLES_DIR).mkdir(exist_ok=True)
        self.config.save(self.run_dir)
        (self.run_dir / ENVIRONMENT_FILE).write_text(json.dumps(describe_environment(), indent=2) + "\n")
        np.save(self.run_dir / FIXED_LATENTS, self.fixed_latents)
        real = self.images[: self.config.sample_grid]
        data_utils.save_image_grid(self.run_dir / REAL_SAMPLES, real)
        with open(self.run_dir / HISTORY_FILE, "w", newline="") as handle:
            csv.writer(handle).writerow(HISTORY_COLUMNS)

    def _restore_latest(self) -> None:
        checkpoint = checkpoints.latest_checkpoint(self.run_dir)
        state = checkpoints.restore_checkpoint(
            checkpoint, self.generator, self.discriminator, self.g_optimizer, self.d_optimizer,
            expect=self._checkpoint_meta(include_time=False), **self._extra_checkpoint_parts(),
        )
        self.augment.load_state(state)
        self.step = self.last_checkpoint_step = int(state["step"])
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self._truncate_history(self.step)
        self.config.save(self.run_dir)  # with any settings changed for this resume

    def _truncate_history(self, step: int) -> None:
        """Drop history rows logged after the checkpoint we resume from.

        A kill while a row was being written can leave a partial last line;
        only complete rows (every column present) are kept.
        """
        path = self.run_dir / HISTORY_FILE
        rows = [row for row in plots.read_history_rows(path) if int(row["step"]) <= step]
        temporary = path.with_name(HISTORY_FILE + ".tmp")
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, path)

    # --- one step and its bookkeeping

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def train_one_step(self) -> dict | None:
        """Run one update and its bookkeeping; returns the history row when one is logged."""
        if self._device_images is None:
            real_images = self.sampler.real_batch(self.step)
        else:
            indices, flips = self.sampler.batch_plan(self.step)
            real_images = self._gather(self._device_images, indices, flips)
        latent_vectors = self.sampler.latent_batch(self.step)
        if self.is_stylegan:
            self._pending.append(self._stylegan_step(real_images, latent_vectors))
        else:
            self._pending.append(self._step_fn(real_images, latent_vectors))
        self.step += 1
        row = None
        if self.step % self.config.log_every == 0 or self.done:
            row = self._log()
        if self.step % self.config.sample_every == 0 or self.done:
            self.save_samples()
        if self.step % self.config.checkpoint_every == 0 or self.done:
            self.save_checkpoint()
        return row

    def _stylegan_step(self, real_images, latent_vectors) -> dict:
        """One StyleGAN update (with R1 every r1_every steps); feeds D's verdicts to ADA."""
        step_fn = self._r1_step if self.step % self.config.r1_every == 0 else self._plain_step
        beta = ema_beta(self.config.batch_size, (self.step + 1) * self.config.batch_size,
                        self.config.resolved_ema_kimg)
        metrics = step_fn(real_images, latent_vectors, np.float32(self.augment.probability), np.float32(beta))
        self.augment.observe(float(metrics.pop("real_sign")))
        return metrics

    def _log(self) -> dict | None:
        if not self._pending:
            return None
        now = time.perf_counter()
        keys = dict.fromkeys(key for metrics in self._pending for key in metrics)  # r1_penalty: some steps only
        values = {key: float(np.mean([float(m[key]) for m in self._pending if key in m])) for key in keys}
        if not all(math.isfinite(value) for value in values.values()):
            raise TrainingDiverged(self._diverged_message(values))
        row = {"step": self.step, "epoch": self.epoch, **values,
               "images_per_s": len(self._pending) * self.config.batch_size / max(now - self._log_start, 1e-9),
               "elapsed_s": self.elapsed}
        if self.augment.enabled:
            row["augment_p"] = self.augment.probability
        if self._ssim_due(len(self._pending)):
            row["nn_ssim"] = self.measure_ssim()
        with open(self.run_dir / HISTORY_FILE, "a", newline="") as handle:
            csv.DictWriter(handle, HISTORY_COLUMNS).writerow(
                {key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()}
            )
        self._pending.clear()
        self._log_start = now
        return row

    def _diverged_message(self, values: dict) -> str:
        kept = checkpoints.latest_checkpoint(self.run_dir)
        return (
            f"training diverged at step {self.step}: {values}. The last good checkpoint "
            f"({kept if kept else 'none yet'}) is kept; lower the learning rates (--g-lr/--d-lr) "
            "and resume, or start again."
        )

    @property
    def elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._started)

    def _ssim_due(self, steps_since_last_row: int) -> bool:
        """True on the first logged row at or after each multiple of ssim_every, and at the end."""
        every = self.config.ssim_every
        if not every:
            return False
        return self.done or self.step // every > (self.step - steps_since_last_row) // every

    def measure_ssim(self) -> float:
        """Median over the fixed sample grid of each image's best SSIM against the reference subset.

        The fast kernel's maxima (within ~1e-7 of skimage); evaluate.py does
        the full exact search.
        """
        import metrics

        scores = metrics.pairwise_ssim(self.sample(), self.ssim_references)
        return float(np.median(scores.max(axis=1)))

    def sample(self, latent_vectors=None) -> np.ndarray:
        """Generated images for the fixed latent grid (or the given latents)."""
        if latent_vectors is not None:
            return generate_images(self.sampling_generator, latent_vectors)
        if self._samples is None or self._samples[0] != self.step:
            self._samples = (self.step, generate_images(self.sampling_generator, self.fixed_latents))
        return self._samples[1]

    @property
    def sampling_generator(self):
        """The generator that samples and evaluation use: StyleGAN's EMA, else the generator itself."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def save_samples(self) -> Path:
        path = self.run_dir / SAMPLES_DIR / f"step_{self.step:08d}.png"
        data_utils.save_image_grid(path, self.sample())
        return path

    def save_checkpoint(self) -> Path | None:
        """Checkpoint the current step, unless it is saved already or not finite."""
        if self.step == self.last_checkpoint_step:
            return None
        pending = [float(m["g_loss"]) + float(m["d_loss"]) for m in self._pending]
        weights_finite = all(
            bool(np.isfinite(keras.ops.convert_to_numpy(v)).all()) for v in self.generator.trainable_variables
        )
        if not weights_finite or not all(math.isfinite(value) for value in pending):
            raise TrainingDiverged(self._diverged_message({"weights_finite": weights_finite}))
        path = checkpoints.save_checkpoint(
            self.run_dir, self.step, self.epoch, self.generator, self.discriminator,
            self.g_optimizer, self.d_optimizer, self._checkpoint_meta(), keep=self.config.keep_checkpoints,
            **self._extra_checkpoint_parts(),
        )
        self.last_checkpoint_step = self.step
        return path

    def _checkpoint_meta(self, include_time: bool = True) -> dict:
        """What a checkpoint records about the model, checked again on resume."""
        meta = {"arch": self.config.arch, "image_size": self.config.image_size,
                "latent_dim": self.config.resolved_latent_dim}
        if include_time:
            meta.update(backend=keras.backend.backend(), elapsed_s=self.elapsed, **self.augment.state())
        return meta

    def _extra_checkpoint_parts(self) -> dict:
        """StyleGAN's EMA generator and augmentation RNG, which a checkpoint must also hold."""
        if not self.is_stylegan:
            return {}
        return {"extra_models": {"generator_ema": self.generator_ema},
                "extra_variables": {"augment_seed": [self.augment_seed.state]}}

    # --- the whole run

    def fit(self, progress: bool = True, callback=None) -> str:
        """Train until ``total_steps``; returns "done" or "interrupted".

        Ctrl-C (KeyboardInterrupt) saves a checkpoint of the current step and
        returns "interrupted"; ``callback(trainer, row)`` is called on every
        logged row (the notebook uses it to redraw its figures).
        """
        from tqdm.auto import tqdm

        self._started = time.perf_counter()
        self._log_start = self._started
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", disable=not progress,
                   desc=f"{self.config.arch} {self.config.image_size}px")
        try:
            while not self.done:
                row = self.train_one_step()
                bar.update(1)
                if row is not None:
                    bar.set_postfix(g=f"{row['g_loss']:.3f}", d=f"{row['d_loss']:.3f}", epoch=row["epoch"])
                    if callback is not None:
                        callback(self, row)
        except KeyboardInterrupt:
            bar.close()
            self._log()
            self.save_checkpoint()
            return "interrupted"
        bar.close()
        self.finish()
        return "done"

    def finish(self) -> None:
        """Final sample grid and loss plot in the run folder."""
        data_utils.save_image_grid(self.run_dir / FINAL_SAMPLES, self.sample())
        plots.save_history_plot(self.run_dir / HISTORY_FILE, self.run_dir / LOSS_PLOT)
