"""The training step on JAX (``KERAS_BACKEND=jax``): jax.vjp inside jax.jit.

The same update as steps_tf.py (the same models, forward passes and losses
from training.py), written the JAX way: the step is a pure function of the
variables' values.  ``_JittedStep`` reads the values of the Keras variables
it updates (G, D, their optimizers, RNG states; for StyleGAN the EMA
generator too), runs the jitted function, and writes the new values back,
so everything else (sampling, checkpoints, the notebook) sees ordinary Keras
models.  A ``keras.StatelessScope`` maps each variable to its traced value
while the models run, so layers that update state in the forward pass
(batch-norm statistics, dropout and noise RNGs, StyleGAN's running mean of
w) are captured too.

Data parallelism: with a ``keras.distribution.DataParallel`` set before the
models are built, their variables are replicated on every device; the step
gets its batch sharded along the batch axis and XLA inserts the gradient
all-reduce.  The losses are means over the global batch, so nothing else
changes.
"""

from __future__ import annotations

import contextlib
import os

import jax
import jax.numpy as jnp
import keras
import numpy as np

import training
from config import ConfigError

NAME = "jax"


def input_gradient(function, inputs):
    """``(function(inputs), d sum(function(inputs)) / d inputs)``, differentiable again."""
    outputs, pullback = jax.vjp(function, inputs)
    (gradient,) = pullback(jnp.ones_like(outputs))
    return outputs, gradient


class _JittedStep:
    """``pure(values, *inputs) -> (new_values, metrics)`` under jax.jit, on Keras variables' values.

    ``groups`` is a list of variable lists; ``values`` has the same nesting.
    """

    def __init__(self, groups: list, pure, distribution=None):
        self.groups = groups
        self._jitted = jax.jit(pure)
        self._batch_sharding = _batch_sharding(distribution)

    def __call__(self, real_images, latent_vectors, *scalars):
        values = [[variable.value for variable in group] for group in self.groups]
        real_images, latent_vectors = (self._shard(array) for array in (real_images, latent_vectors))
        new_values, metrics = self._jitted(values, real_images, latent_vectors,
                                           *(jnp.float32(scalar) for scalar in scalars))
        for group, group_values in zip(self.groups, new_values):
            for variable, value in zip(group, group_values):
                variable.assign(value)
        return metrics

    def _shard(self, array):
        if self._batch_sharding is None:
            return array
        return jax.device_put(array, self._batch_sharding)


def _batch_sharding(distribution):
    if distribution is None:
        return None
    mesh = distribution.device_mesh.backend_mesh
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))


def _differentiate(objectives, g_values, d_values):
    """Gradients of G's loss w.r.t. G and of D's objective w.r.t. D: two pullbacks of one forward pass."""
    (g_loss, d_objective), pullback, aux = jax.vjp(objectives, g_values, d_values, has_aux=True)
    one, zero = jnp.ones_like(g_loss), jnp.zeros_like(g_loss)
    g_gradients = pullback((one, zero))[0]
    d_gradients = pullback((zero, one))[1]
    return g_gradients, d_gradients, aux


def _state_groups(generator, discriminator, g_optimizer, d_optimizer, extra_state=()):
    """[G trainable, D trainable, other state (BN statistics, RNGs), G optimizer, D optimizer]."""
    others = list(generator.non_trainable_variables) + list(discriminator.non_trainable_variables) + list(extra_state)
    return [list(generator.trainable_variables), list(discriminator.trainable_variables), others,
            list(g_optimizer.variables), list(d_optimizer.variables)]


def _make_update(groups, g_optimizer, d_optimizer, forward):
    """The shared pure update: ``forward(*inputs)`` -> (g_loss, d_objective, metrics), run on ``values``."""
    g_vars, d_vars, other_vars, g_opt_vars, d_opt_vars = groups

    def update(values, *inputs):
        g_values, d_values, other_values, g_opt_values, d_opt_values = values

        def objectives(g_trainable, d_trainable):
            variables = g_vars + d_vars + other_vars + g_opt_vars + d_opt_vars
            values = list(g_trainable) + list(d_trainable) + other_values + g_opt_values + d_opt_values
            with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                g_loss, d_objective, metrics = forward(*inputs)
                # Loss scaling under mixed_float16 (a no-op otherwise); the optimizers unscale.
                scaled = (g_optimizer.scale_loss(g_loss), d_optimizer.scale_loss(d_objective))
                new_others = [scope.get_current_value(variable) for variable in other_vars]
            return scaled, (metrics, new_others)

        g_gradients, d_gradients, (metrics, new_others) = _differentiate(objectives, g_values, d_values)
        new_d, new_d_opt = d_optimizer.stateless_apply(d_opt_values, d_gradients, d_values)
        new_g, new_g_opt = g_optimizer.stateless_apply(g_opt_values, g_gradients, g_values)
        return [new_g, new_d, new_others, new_g_opt, new_d_opt], metrics

    return update


def compile_train_step(generator, discriminator, g_optimizer, d_optimizer, batch_size: int,
                       jit_compile: bool = True, distribution=None):
    """The DCGAN step ``step(real_images, latent_vectors) -> metrics`` under jax.jit (always XLA)."""
    training.build_optimizers(generator, discriminator, g_optimizer, d_optimizer)
    groups = _state_groups(generator, discriminator, g_optimizer, d_optimizer)

    def forward(real_images, latent_vectors):
        return training.gan_objectives(generator, discriminator, real_images, latent_vectors)

    return _JittedStep(groups, _make_update(groups, g_optimizer, d_optimizer, forward), distribution)


def compile_stylegan_steps(generator, generator_ema, discriminator, g_optimizer, d_optimizer, seed_generator,
                           batch_size: int, r1_weight: float, jit_compile: bool = True, distribution=None):
    """The StyleGAN step without and with R1, each ``step(real, latents, augment_p, ema_beta)``, jitted."""
    training.build_optimizers(generator, discriminator, g_optimizer, d_optimizer)
    groups = _state_groups(generator, discriminator, g_optimizer, d_optimizer, extra_state=[seed_generator.state])
    ema_groups = [list(generator_ema.trainable_variables), list(generator_ema.non_trainable_variables)]
    generator_others = len(generator.non_trainable_variables)

    def make(weight):
        def forward(real_images, latent_vectors, augment_p, beta):
            return training.stylegan_objectives(generator, discriminator, seed_generator, real_images,
                                                latent_vectors, augment_p, weight, input_gradient)

        update = _make_update(groups, g_optimizer, d_optimizer, forward)

        def step(values, real_images, latent_vectors, augment_p, beta):
            new_values, metrics = update(values[:5], real_images, latent_vectors, augment_p, beta)
            ema_trainable = values[5]
            new_g, new_others = new_values[0], new_values[2]
            # ema = beta * ema + (1 - beta) * G; the running mean of w and fixed noise are copied.
            new_ema = [current + (average - current) * beta for average, current in zip(ema_trainable, new_g)]
            return new_values + [new_ema, new_others[:generator_others]], metrics

        return _JittedStep(groups + ema_groups, step, distribution)

    return make(0.0), make(r1_weight)


def compile_gather():
    """``training.gather_batch`` under jax.jit (the training set stays on the accelerator)."""
    return jax.jit(training.gather_batch)


# ---------------------------------------------------------------- devices


def accelerators() -> list:
    return [device for device in jax.devices() if device.platform != "cpu"]


def describe_devices() -> tuple[str, str]:
    """(device names, short tag for file names)."""
    found = accelerators()
    if not found:
        return f"CPU ({os.cpu_count()} cores)", f"cpu{os.cpu_count()}"
    names = [device.device_kind for device in found]
    return ", ".join(names), "gpu-" + names[0].replace(" ", "-").lower()


def versions() -> dict:
    return {"jax": jax.__version__}


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed`` without its side trip into TensorFlow (which it imports if installed)."""
    import random

    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def enable_determinism() -> None:
    """XLA's GPU kernels are deterministic with this flag (must be set before JAX starts its GPU)."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()


def make_distribution(devices: int):
    """A keras.distribution.DataParallel over ``devices`` devices (all: -1), set for the whole process.

    Returns None for a single device.  On a CPU, several devices need
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts.
    """
    available = accelerators() or jax.devices()
    count = len(available) if devices == -1 else devices
    if count > len(available):
        raise ConfigError("devices", f"{count} asked for, but JAX sees {len(available)}: {available}")
    if count <= 1:
        return None
    distribution = keras.distribution.DataParallel(devices=available[:count])
    keras.distribution.set_distribution(distribution)
    return distribution


def replica_count(distribution) -> int:
    return 1 if distribution is None else int(np.prod(distribution.device_mesh.shape))


def distribution_scope(distribution):
    """DataParallel is process-wide (set by make_distribution); nothing to enter."""
    return contextlib.nullcontext()


def to_device(array):
    """A host array as an array on the (first) device."""
    return jnp.asarray(array)
