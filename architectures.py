"""One object per architecture: what it builds, its step, its extra state, which generator samples.

``for_config(config)`` returns the run's ``Architecture``:

* ``DCGAN`` ("dcgan", "dcgan-classic"): G, D, two Adam optimizers and the
  plain BCE step (objectives.gan_objectives).  G draws the samples.
* ``StyleGAN2`` ("stylegan"): adds the averaged generator (EMA) that draws
  every sample, adaptive augmentation of what D sees (its probability p is
  training state), style mixing, and the lazy R1 penalty: two compiled
  variants of the step, with R1 on every ``r1_every``-th step.

The trainer (training.py) calls ``build(engine, distribution)`` once, then
``train_step(step, real_images, latent_vectors)`` per step; checkpoints take
``checkpoint_parts()`` and ``state()`` and give back ``load_state()``.
The config must be resolved (``TrainConfig.resolved``).
"""

from __future__ import annotations

import keras
import numpy as np

import augment
import checkpoints
import modelscript
import objectives
from config import TrainConfig


def make_optimizers(config: TrainConfig):
    """Adam for G and D with the config's rates and betas (mixed_float16: with dynamic loss scaling)."""
    betas = {"beta_1": config.beta_1, "beta_2": config.beta_2}
    g_optimizer = keras.optimizers.Adam(config.g_learning_rate, **betas)
    d_optimizer = keras.optimizers.Adam(config.d_learning_rate, **betas)
    if config.precision == "mixed_float16":  # float16 gradients underflow without dynamic loss scaling
        return keras.optimizers.LossScaleOptimizer(g_optimizer), keras.optimizers.LossScaleOptimizer(d_optimizer)
    return g_optimizer, d_optimizer


def build_networks(config: TrainConfig):
    """Generator and discriminator for a config, in its compute precision (weights stay float32)."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(config.precision)
    try:
        generator = modelscript.build_generator(config.arch, config.image_size, config.latent_dim)
        discriminator = modelscript.build_discriminator(config.arch, config.image_size)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return generator, discriminator


class DCGAN:
    """Seed 000's DCGAN and the classic Radford et al. DCGAN: G, D, Adam, BCE."""

    augments = False  # whether D sees adaptively augmented images (config.augment)

    def __init__(self, config: TrainConfig):
        self.config = config
        self.generator = self.discriminator = self.g_optimizer = self.d_optimizer = None
        self.augment = augment.AdaptiveAugment(config.batch_size, config.ada_target, config.ada_kimg,
                                               enabled=self.augments and config.augment == "ada")

    def build(self, engine, distribution=None) -> None:
        """Models and optimizers (inside the distribution's scope), then the compiled step."""
        with engine.distribution_scope(distribution):
            self.generator, self.discriminator = build_networks(self.config)
            self.g_optimizer, self.d_optimizer = make_optimizers(self.config)
            self._build_extras()
            # The optimizers' variables are created now: inside a compiled step they would cost a second trace.
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self._compile(engine, distribution)

    def _build_extras(self) -> None:
        """More networks or state, built in the same scope (StyleGAN's EMA and augmentation RNG)."""

    def _spec(self, forward, **more) -> objectives.StepSpec:
        return objectives.StepSpec(self.generator, self.discriminator, self.g_optimizer, self.d_optimizer,
                                   forward, self.config.batch_size, self.config.latent_dim,
                                   self.config.image_size, jit_compile=self.config.jit_compile, **more)

    def _compile(self, engine, distribution) -> None:
        def forward(real_images, latent_vectors):
            return objectives.gan_objectives(self.generator, self.discriminator, real_images, latent_vectors)

        self.step_fn = engine.compile_step(self._spec(forward), distribution)

    def train_step(self, step: int, real_images, latent_vectors) -> dict:
        """One update of D and G for step ``step``; returns its metrics."""
        return self.step_fn(real_images, latent_vectors)

    @property
    def sampling_generator(self):
        """The generator that draws samples (and is evaluated)."""
        return self.generator

    def checkpoint_parts(self) -> dict:
        """Networks and variables a checkpoint holds besides G, D and the optimizers."""
        return {}

    def state(self) -> dict:
        """Plain training state saved in the checkpoint's state.json (and restored by ``load_state``)."""
        return self.augment.state()

    def load_state(self, state: dict) -> None:
        self.augment.load_state(state)

    def history_extras(self) -> dict:
        """More history.csv columns for this architecture."""
        return {"augment_p": self.augment.probability} if self.augment.enabled else {}

    def describe(self) -> list[str]:
        """Lines about what the architecture adds to G and D (the notebook shows them)."""
        return []


class StyleGAN2(DCGAN):
    """StyleGAN2 with R1 (lazy), style mixing, a generator EMA and adaptive augmentation."""

    augments = True

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.generator_ema = self.augment_seed = None

    def _build_extras(self) -> None:
        self.generator.mixing_probability = self.config.style_mixing
        self.generator_ema = build_networks(self.config)[0]
        self.generator_ema.set_weights(self.generator.get_weights())
        self.augment_seed = keras.random.SeedGenerator(self.config.seed)

    def _compile(self, engine, distribution) -> None:
        def variant(r1_weight: float):
            def forward(real_images, latent_vectors, augment_p, ema_beta):
                return objectives.stylegan_objectives(self.generator, self.discriminator, self.augment_seed,
                                                      real_images, latent_vectors, augment_p, r1_weight,
                                                      engine.input_gradient)

            spec = self._spec(forward, scalars=("augment_p", "ema_beta"), extra_state=(self.augment_seed.state,),
                              generator_ema=self.generator_ema)
            return engine.compile_step(spec, distribution)

        # Lazy R1: gamma / 2 x the penalty on every r1_every-th step, so x r1_every there.
        self.plain_step = variant(0.0)
        self.r1_step = variant(self.config.r1_gamma / 2 * self.config.r1_every)

    def train_step(self, step: int, real_images, latent_vectors) -> dict:
        """One update (with R1 every r1_every steps); the EMA moves, and D's verdicts feed ADA."""
        step_fn = self.r1_step if step % self.config.r1_every == 0 else self.plain_step
        beta = objectives.ema_beta(self.config.batch_size, (step + 1) * self.config.batch_size,
                                   self.config.ema_kimg)
        metrics = step_fn(real_images, latent_vectors, np.float32(self.augment.probability), np.float32(beta))
        metrics = dict(metrics)
        self.augment.observe(float(metrics.pop("real_sign")))
        return metrics

    @property
    def sampling_generator(self):
        return self.generator_ema

    def checkpoint_parts(self) -> dict:
        return {"extra_models": {checkpoints.EMA_MODEL: self.generator_ema},
                "extra_variables": {"augment_seed": [self.augment_seed.state]}}

    def describe(self) -> list[str]:
        return [f"plus an exponential moving average of the generator ({self.generator_ema.count_params():,} "
                "parameters), which draws every sample"]


ARCHITECTURE_CLASSES = {"dcgan": DCGAN, "dcgan-classic": DCGAN, "stylegan": StyleGAN2}


def for_config(config: TrainConfig) -> DCGAN:
    """The architecture object of a (validated, resolved) config."""
    return ARCHITECTURE_CLASSES[config.arch](config)
