"""The architectures, one entry each: adding one is one entry here plus its networks.

An entry says everything the rest of the code asks about an architecture:
its name and help line (``--arch``, the notebook's menu), the settings it
chooses when they are left unset (latent size, Adam's rates and betas), whether
the regularisers are on by default (R1, a generator EMA, adaptive augmentation;
the seeds' DCGANs train without them, as they did), whether its generator has
styles (style mixing, the path-length penalty, ``generate.py --truncation``),
and its two builders as "module:function" strings, imported only when a
network is built.  A generator builder takes ``(image_size, latent_dim)``, a
discriminator builder ``(image_size)``.

This module imports nothing, so ``config`` (and ``train.py --help``) reads it
without loading Keras.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

# The DCGAN seeds trained with Adam G 2e-4, D 1e-4 (D slower so it does not run away), beta1 0.5
# (Radford et al.: 0.9 oscillates); StyleGAN2 with 2e-3 for both and betas 0 / 0.99, which its
# equalised learning rate makes stable.
DCGAN_ADAM = {"g_learning_rate": 2e-4, "d_learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.999}
CONSTANT_RATES = {"lr_end": 1.0, "lr_decay_start": 0.0}
# Seed 000's discriminator drops 0.4 of its features after every layer to slow itself down.
SEED_000_DROPOUT = 0.4
# dcgan-ada's D needs no dropout: R1 and adaptive augmentation hold it back.  Without it, both rates can double
# (G 4e-4, D 8e-4) for the first half of the run and fall to half of that by its end: chosen on the validate
# split at the demo's 2000 steps, two seeds (docs/results.md).
# Its EMA's half-life ramps to a tenth of the images seen (StyleGAN2-ADA's ramp is 0.05): in the demo's 2000 steps
# its half-life at the end is then ~200 steps, not ~100; chosen on validate, two seeds (docs/results.md).
# Its Adam has StyleGAN2's betas, 0 and 0.99 (the seeds': 0.5 and 0.999): no momentum, and step sizes that follow the
# gradients' scale over ~100 steps, not ~1000; sharper samples that a classifier finds harder to tell from real, and
# nearer matches, chosen on validate, two seeds (docs/results.md).
ADA_TRAINING = {**DCGAN_ADAM, "g_learning_rate": 4e-4, "d_learning_rate": 8e-4, "lr_end": 0.5, "lr_decay_start": 0.5,
                "beta_1": 0.0, "beta_2": 0.99, "d_dropout": 0.0, "ema_rampup": 0.1}


@dataclass(frozen=True)
class Architecture:
    name: str
    help: str
    defaults: dict  # the settings it fills when unset: latent_dim, rates and their schedule, betas, D's dropout
    regularised: bool  # R1, the generator EMA and ADA on unless set to 0 / off
    styles: bool  # a style-based generator: style mixing, path-length penalty, truncation
    generator: str  # "module:function", (image_size, latent_dim) -> keras.Model
    discriminator: str  # "module:function", (image_size[, dropout]) -> keras.Model

    def build_generator(self, image_size: int, latent_dim: int):
        return _resolve(self.generator)(image_size, latent_dim)

    @property
    def has_dropout(self) -> bool:
        """Whether its discriminator has dropout (``d_dropout`` among its defaults: seed 000's design)."""
        return "d_dropout" in self.defaults

    def build_discriminator(self, image_size: int, dropout: float | None = None):
        """``dropout``: for a discriminator that has it, None takes the default; the others refuse a rate."""
        builder = _resolve(self.discriminator)
        if not self.has_dropout:
            if dropout:
                raise ValueError(f"{self.name}'s discriminator has no dropout")
            return builder(image_size)
        return builder(image_size, dropout=self.defaults["d_dropout"] if dropout is None else dropout)


TABLE = (
    Architecture("dcgan-ada", "seed 000's networks, its discriminator without dropout, trained with StyleGAN2-ADA's "
                              "regularisers (R1, a generator EMA and adaptive augmentation) and falling rates",
                 {"latent_dim": 256, **ADA_TRAINING}, regularised=True, styles=False,
                 generator="modelscript:dcgan_generator", discriminator="modelscript:dcgan_discriminator"),
    Architecture("dcgan-plus", "dcgan-classic's networks with a 3x3 conv output and the same regularisers (the "
                               "default until 2026-12-04; its samples collapse on the demo cohort, docs/results.md)",
                 {"latent_dim": 100, **DCGAN_ADAM, **CONSTANT_RATES}, regularised=True, styles=False,
                 generator="modelscript:plus_generator", discriminator="modelscript:classic_discriminator"),
    Architecture("dcgan", "the design of seed 000, an earlier project (not --seed)",
                 {"latent_dim": 256, **DCGAN_ADAM, **CONSTANT_RATES, "d_dropout": SEED_000_DROPOUT},
                 regularised=False, styles=False,
                 generator="modelscript:dcgan_generator", discriminator="modelscript:dcgan_discriminator"),
    Architecture("dcgan-classic", "Radford et al.'s DCGAN",
                 {"latent_dim": 100, **DCGAN_ADAM, **CONSTANT_RATES}, regularised=False, styles=False,
                 generator="modelscript:classic_generator", discriminator="modelscript:classic_discriminator"),
    Architecture("stylegan", "StyleGAN2",
                 {"latent_dim": 512, "g_learning_rate": 2e-3, "d_learning_rate": 2e-3, "beta_1": 0.0,
                  "beta_2": 0.99, **CONSTANT_RATES}, regularised=True, styles=True,
                 generator="oasis_gan.architectures.stylegan:build_generator",
                 discriminator="oasis_gan.architectures.stylegan:build_discriminator"),
)
BY_NAME = {entry.name: entry for entry in TABLE}
NAMES = tuple(sorted(BY_NAME))  # the --arch choices


def get(name: str) -> Architecture:
    """The entry of ``name``; ValueError listing the names when there is none."""
    if name not in BY_NAME:
        raise ValueError(f"arch must be one of {NAMES}, got {name!r}")
    return BY_NAME[name]


def help_line() -> str:
    """``--arch``'s help: every entry with its line, the default (the first) first."""
    return "; ".join(f"{entry.name}: {entry.help}" for entry in TABLE) + f" (default {TABLE[0].name})"


def _resolve(reference: str):
    module, function = reference.split(":")
    return getattr(importlib.import_module(module), function)
