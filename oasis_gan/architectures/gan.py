"""One object per architecture: what it builds, its step, its extra state, which generator samples.

``for_config(config)`` returns the run's ``GAN``:

* every architecture has G, D, two Adam optimizers and a compiled step.  With
  none of the regularisers below (the seeds' "dcgan" and "dcgan-classic" as
  they trained) the step is the plain BCE one (objectives.gan_objectives),
  and G draws the samples.
* the regularisers, each a setting that any architecture takes ("stylegan",
  "dcgan-ada" and "dcgan-plus" have all three by default; see config.resolved):
  ``ema_kimg`` > 0 adds an averaged generator (EMA) that draws every sample;
  ``augment="ada"`` shows D adaptively augmented images (its probability p is
  training state); ``r1_gamma`` > 0 adds the lazy R1 penalty, with two
  compiled variants of the step and R1 on every ``r1_every``-th step.
* ``StyleGAN2`` ("stylegan") adds style mixing and the lazy path-length
  penalty on G (``pl_weight`` > 0: two more compiled variants, the penalty
  on every PL_EVERY-th step; its running mean of lengths is training state).

The trainer (training.py) calls ``build(engine, distribution)`` once, then
``train_step(step, real_images, latent_vectors)`` per step; checkpoints take
``checkpoint_parts()`` and ``state()`` and give back ``load_state()``.
The config must be resolved (``TrainConfig.resolved``).
"""

from __future__ import annotations

import keras
import numpy as np

import modelscript
from oasis_gan import augment, machine
from oasis_gan.architectures import stylegan, table
from oasis_gan.config import TrainConfig
from oasis_gan.engines import objectives
from oasis_gan.runs import checkpoints


class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``rate`` until ``decay_start`` of ``total_steps``, then linearly down to ``rate * end`` at the last step.

    The optimizer's step count (saved in every checkpoint) is the schedule's
    clock, so a resumed run goes on at the rate it stopped at.
    """

    def __init__(self, rate: float, total_steps: int, end: float, decay_start: float):
        self.rate, self.total_steps, self.end, self.decay_start = rate, total_steps, end, decay_start

    def __call__(self, step):
        first = self.decay_start * self.total_steps
        span = max(self.total_steps - 1 - first, 1.0)  # the last update (step total - 1) runs at rate * end
        done = keras.ops.clip((keras.ops.cast(step, "float32") - first) / span, 0.0, 1.0)
        return self.rate * (1.0 - (1.0 - self.end) * done)

    def get_config(self) -> dict:
        return {"rate": self.rate, "total_steps": self.total_steps, "end": self.end, "decay_start": self.decay_start}


def learning_rate(rate: float, config: TrainConfig, total_steps: int | None):
    """The config's rate, constant or (with ``lr_end`` < 1 and the run's length known) a ``LinearDecay``."""
    if config.lr_end >= 1.0 or not total_steps:
        return rate
    return LinearDecay(rate, total_steps, config.lr_end, config.lr_decay_start)


def make_optimizers(config: TrainConfig, total_steps: int | None = None):
    """Adam for G and D with the config's rates, schedule and betas (mixed_float16: with dynamic loss scaling).

    ``total_steps`` is the run's length, which a decaying schedule needs (without it the rates stay constant).
    """
    betas = {"beta_1": config.beta_1, "beta_2": config.beta_2}
    g_optimizer = keras.optimizers.Adam(learning_rate(config.g_learning_rate, config, total_steps), **betas)
    d_optimizer = keras.optimizers.Adam(learning_rate(config.d_learning_rate, config, total_steps), **betas)
    if config.precision == "mixed_float16":  # float16 gradients underflow without dynamic loss scaling
        return keras.optimizers.LossScaleOptimizer(g_optimizer), keras.optimizers.LossScaleOptimizer(d_optimizer)
    return g_optimizer, d_optimizer


def build_networks(config: TrainConfig):
    """Generator and discriminator for a config, in its compute precision (weights stay float32)."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(machine.precision_for(config.precision, machine.Machine.detect()))
    try:
        generator = modelscript.build_generator(config.arch, config.image_size, config.latent_dim)
        discriminator = modelscript.build_discriminator(config.arch, config.image_size, config.d_dropout)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return generator, discriminator


class GAN:
    """G, D, Adam and the BCE step, with whichever regularisers the config turns on."""

    pl_weight = 0.0  # the path-length penalty's weight: StyleGAN2 only (its generator has styles)

    def __init__(self, config: TrainConfig):
        self.config = config
        self.generator = self.discriminator = self.g_optimizer = self.d_optimizer = None
        self.generator_ema = self.augment_seed = None
        self.augment = augment.AdaptiveAugment(config.batch_size, config.ada_target, config.ada_kimg,
                                               enabled=config.augment == "ada")
        self.averages = config.ema_kimg > 0
        self.regularised = self.averages or self.augment.enabled or config.r1_gamma > 0 or self.pl_weight > 0
        self.pl_mean = 0.0  # running mean of the path lengths (with pl_weight > 0)

    def build(self, engine, distribution=None, total_steps: int | None = None) -> None:
        """Models and optimizers (inside the distribution's scope), then the compiled step(s).

        ``total_steps``, the run's length, is what a decaying learning rate (``lr_end`` < 1) falls over.
        """
        with engine.distribution_scope(distribution):
            self.generator, self.discriminator = build_networks(self.config)
            self.g_optimizer, self.d_optimizer = make_optimizers(self.config, total_steps)
            if self.averages:
                self.generator_ema = build_networks(self.config)[0]
                self.generator_ema.set_weights(self.generator.get_weights())
            if self.augment.enabled:
                self.augment_seed = keras.random.SeedGenerator(self.config.seed)
            self._build_extras()
            # The optimizers' variables are created now: inside a compiled step they would cost a second trace.
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self._compile(engine, distribution)

    def _build_extras(self) -> None:
        """What a subclass adds to the networks once they are built (StyleGAN's style mixing)."""

    def _spec(self, forward, **more) -> objectives.StepSpec:
        return objectives.StepSpec(self.generator, self.discriminator, self.g_optimizer, self.d_optimizer,
                                   forward, self.config.batch_size, self.config.latent_dim,
                                   self.config.image_size, jit_compile=self.config.jit_compile, **more)

    def _compile(self, engine, distribution) -> None:
        if not self.regularised:
            def forward(real_images, latent_vectors):
                return objectives.gan_objectives(self.generator, self.discriminator, real_images, latent_vectors)

            self.plain_step = self.r1_step = engine.compile_step(self._spec(forward), distribution)
            return

        def variant(r1_weight: float, pl_weight: float = 0.0):
            def forward(real_images, latent_vectors, augment_p, ema_beta, pl_mean):
                return objectives.regularised_objectives(
                    self.generator, self.discriminator, self.augment_seed, real_images, latent_vectors, augment_p,
                    r1_weight, engine.input_gradient, augments=self.augment.enabled, pl_weight=pl_weight,
                    pl_mean=pl_mean)

            extra_state = (self.augment_seed.state,) if self.augment.enabled else ()
            spec = self._spec(forward, scalars=("augment_p", "ema_beta", "pl_mean"), extra_state=extra_state,
                              generator_ema=self.generator_ema)
            return engine.compile_step(spec, distribution)

        # Lazy regularisation: each penalty on every N-th step only, its weight x N there
        # (R1: gamma / 2 x the penalty, N = r1_every; path length: N = PL_EVERY).
        r1_weight = self.config.r1_gamma / 2 * self.config.r1_every
        pl_weight = self.pl_weight * stylegan.PL_EVERY
        self.plain_step = variant(0.0)
        self.r1_step = variant(r1_weight) if r1_weight > 0 else self.plain_step
        if pl_weight > 0:
            self.pl_step = variant(0.0, pl_weight)
            self.r1_pl_step = variant(r1_weight, pl_weight) if r1_weight > 0 else self.pl_step

    def _step_for(self, step: int):
        """The compiled variant with the penalties due at ``step``."""
        r1_due = step % self.config.r1_every == 0
        if self.pl_weight > 0 and step % stylegan.PL_EVERY == 0:
            return self.r1_pl_step if r1_due else self.pl_step
        return self.r1_step if r1_due else self.plain_step

    def train_step(self, step: int, real_images, latent_vectors) -> dict:
        """One update of D and G for step ``step`` (with each lazy penalty when due); returns its metrics."""
        if not self.regularised:
            return self.plain_step(real_images, latent_vectors)
        beta = objectives.ema_beta(self.config.batch_size, (step + 1) * self.config.batch_size,
                                   self.config.ema_kimg, self.config.ema_rampup) if self.averages else 0.0
        metrics = dict(self._step_for(step)(real_images, latent_vectors, np.float32(self.augment.probability),
                                            np.float32(beta), np.float32(self.pl_mean)))
        self.augment.observe(float(metrics.pop("real_sign")))  # D's verdicts feed ADA
        if "pl_length" in metrics:  # the running mean the next penalty measures against
            self.pl_mean += (float(metrics.pop("pl_length")) - self.pl_mean) * stylegan.PL_DECAY
        return metrics

    @property
    def sampling_generator(self):
        """The generator that draws samples (and is evaluated): the average when there is one."""
        return self.generator_ema if self.averages else self.generator

    def checkpoint_parts(self) -> dict:
        """Networks and variables a checkpoint holds besides G, D and the optimizers."""
        parts = {}
        if self.averages:
            parts["extra_models"] = {checkpoints.EMA_MODEL: self.generator_ema}
        if self.augment.enabled:
            parts["extra_variables"] = {"augment_seed": [self.augment_seed.state]}
        return parts

    def state(self) -> dict:
        """Plain training state saved in the checkpoint's state.json (and restored by ``load_state``)."""
        return {**self.augment.state(), **({"pl_mean": self.pl_mean} if self.pl_weight > 0 else {})}

    def load_state(self, state: dict) -> None:
        self.augment.load_state(state)
        self.pl_mean = float(state.get("pl_mean", 0.0))  # checkpoints from before path-length regularisation: 0

    def history_extras(self) -> dict:
        """More history.csv columns for this architecture."""
        return {"augment_p": self.augment.probability} if self.augment.enabled else {}

    def describe(self) -> list[str]:
        """Lines about what the regularisers add to G and D (the notebook shows them)."""
        lines = []
        if self.averages:
            lines.append(f"plus an exponential moving average of the generator "
                         f"({self.generator_ema.count_params():,} parameters, half-life "
                         f"{self.config.ema_kimg:g}k images), which draws every sample")
        if self.config.r1_gamma > 0:
            lines.append(f"R1 penalty on D, gamma {self.config.r1_gamma:g}, every {self.config.r1_every} steps")
        if self.augment.enabled:
            lines.append(f"adaptive augmentation of what D sees (target {self.config.ada_target:g})")
        if self.pl_weight > 0:
            lines.append(f"path-length penalty on G, weight {self.pl_weight:g}, every {stylegan.PL_EVERY} steps")
        return lines


class StyleGAN2(GAN):
    """StyleGAN2: the regularised GAN with style mixing and the path-length penalty on its generator."""

    def __init__(self, config: TrainConfig):
        self.pl_weight = config.pl_weight
        super().__init__(config)

    def _build_extras(self) -> None:
        self.generator.mixing_probability = self.config.style_mixing


def for_config(config: TrainConfig) -> GAN:
    """The architecture object of a (validated, resolved) config: StyleGAN2 where the generator has styles."""
    return StyleGAN2(config) if table.get(config.arch).styles else GAN(config)
