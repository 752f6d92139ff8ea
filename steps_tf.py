"""The training step on TensorFlow: a GradientTape update in a tf.function.

This is the default engine (``KERAS_BACKEND`` unset or ``tensorflow``); the
notebook shows it.  ``train_step`` updates D, then G, from one batch;
``stylegan_train_step`` adds augmentation, the R1 penalty and the EMA
update.  The forward passes and losses are training.py's, shared with the
JAX engine (steps_jax.py); only the gradient bookkeeping lives here.

``compile_*`` wrap a step in a ``tf.function`` with a fixed input signature,
so it is traced once (a changed shape would otherwise retrace silently), and
with XLA when asked.  Given a ``tf.distribute.MirroredStrategy`` (see
``make_distribution``) the step runs on every replica with its slice of the
global batch; the optimizers sum the replicas' gradients, so each replica's
loss is divided by the number of replicas.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

import modelscript
import training
from config import ConfigError

NAME = "tensorflow"


def input_gradient(function, inputs):
    """``(function(inputs), d sum(function(inputs)) / d inputs)``, recorded by any enclosing tape."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = function(inputs)
        total = keras.ops.sum(outputs)
    return outputs, tape.gradient(total, inputs)


def _scaled(optimizer, objective, replicas: int):
    """What to differentiate (inside the tape): the objective over the replicas, loss-scaled under mixed_float16."""
    return optimizer.scale_loss(objective / replicas if replicas > 1 else objective)


def _apply(optimizer, tape, scaled_objective, variables) -> None:
    optimizer.apply_gradients(zip(tape.gradient(scaled_objective, variables), variables))


def train_step(generator, discriminator, g_optimizer, d_optimizer, real_images, latent_vectors,
               replicas: int = 1) -> dict:
    """One simultaneous update of D and G on a batch; returns scalar metrics."""
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
        g_loss, d_loss, metrics = training.gan_objectives(generator, discriminator, real_images, latent_vectors)
        g_scaled, d_scaled = _scaled(g_optimizer, g_loss, replicas), _scaled(d_optimizer, d_loss, replicas)
    # Train the discriminator: tell real from generated.
    _apply(d_optimizer, d_tape, d_scaled, discriminator.trainable_variables)
    # Train the generator: make the discriminator call its images real.
    _apply(g_optimizer, g_tape, g_scaled, generator.trainable_variables)
    return metrics


def stylegan_train_step(generator, generator_ema, discriminator, g_optimizer, d_optimizer, seed_generator,
                        real_images, latent_vectors, augment_p, ema_beta, r1_weight: float = 0.0,
                        replicas: int = 1) -> dict:
    """One StyleGAN2 update of D and G (``training.stylegan_objectives``), then the EMA generator moves."""
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
        g_loss, d_objective, metrics = training.stylegan_objectives(
            generator, discriminator, seed_generator, real_images, latent_vectors, augment_p, r1_weight,
            input_gradient,
        )
        g_scaled, d_scaled = _scaled(g_optimizer, g_loss, replicas), _scaled(d_optimizer, d_objective, replicas)
    # Train the discriminator: tell real from generated, with a smooth surface at the real images.
    _apply(d_optimizer, d_tape, d_scaled, discriminator.trainable_variables)
    # Train the generator: make the discriminator call its images real.
    _apply(g_optimizer, g_tape, g_scaled, generator.trainable_variables)
    if replicas == 1:
        update_ema(generator_ema, generator, ema_beta)
    return metrics


def update_ema(generator_ema, generator, beta) -> None:
    """``ema = beta * ema + (1 - beta) * G``; the running mean of w and fixed noise are copied."""
    for average, current in zip(generator_ema.trainable_variables, generator.trainable_variables):
        average.assign(current + (average - current) * beta)
    for average, current in zip(generator_ema.non_trainable_variables, generator.non_trainable_variables):
        average.assign(current)


# ------------------------------------------------------------ compilation


def _signature(generator, batch_size: int, scalars: tuple) -> list:
    latent_dim, image_size = modelscript.generator_io(generator)
    return [
        tf.TensorSpec((batch_size, image_size, image_size, 1), tf.float32, name="real_images"),
        tf.TensorSpec((batch_size, latent_dim), tf.float32, name="latent_vectors"),
        *(tf.TensorSpec((), tf.float32, name=name) for name in scalars),
    ]


def _replica_slice(tensor):
    """This replica's share of a global batch (replicas take consecutive blocks)."""
    context = tf.distribute.get_replica_context()
    share = tensor.shape[0] // context.num_replicas_in_sync
    return tensor[context.replica_id_in_sync_group * share:][:share]


def _compile(replica_step, signature, jit_compile: bool, distribution, after=None):
    """``replica_step(real, latents, *scalars)`` as one tf.function (over all replicas when distributed)."""
    if distribution is None:
        return tf.function(replica_step, input_signature=signature, jit_compile=jit_compile)
    if jit_compile:
        raise ConfigError("jit_compile", "XLA is not available with several TensorFlow devices; drop --xla "
                         "or use KERAS_BACKEND=jax, whose steps are always compiled by XLA")

    def sliced(real_images, latent_vectors, *scalars):
        return replica_step(_replica_slice(real_images), _replica_slice(latent_vectors), *scalars)

    def step(*inputs):
        per_replica = distribution.run(sliced, args=inputs)
        metrics = {key: distribution.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                   for key, value in per_replica.items()}
        if after is not None:
            after(*inputs)
        return metrics

    return tf.function(step, input_signature=signature)


def compile_train_step(generator, discriminator, g_optimizer, d_optimizer, batch_size: int,
                       jit_compile: bool = False, distribution=None):
    """``train_step`` as ``step(real_images, latent_vectors)``: traced once, XLA if asked."""
    training.build_optimizers(generator, discriminator, g_optimizer, d_optimizer)
    replicas = replica_count(distribution)

    def replica_step(real_images, latent_vectors):
        return train_step(generator, discriminator, g_optimizer, d_optimizer, real_images, latent_vectors,
                          replicas)

    return _compile(replica_step, _signature(generator, batch_size, ()), jit_compile, distribution)


def compile_stylegan_steps(generator, generator_ema, discriminator, g_optimizer, d_optimizer, seed_generator,
                           batch_size: int, r1_weight: float, jit_compile: bool = False, distribution=None):
    """``stylegan_train_step`` without and with R1, each ``step(real, latents, augment_p, ema_beta)``."""
    training.build_optimizers(generator, discriminator, g_optimizer, d_optimizer)
    replicas = replica_count(distribution)
    signature = _signature(generator, batch_size, ("augment_p", "ema_beta"))

    def after(real_images, latent_vectors, augment_p, beta):  # several replicas: EMA once, on mirrored weights
        update_ema(generator_ema, generator, beta)

    def make(weight):
        def replica_step(real_images, latent_vectors, augment_p, beta):
            return stylegan_train_step(generator, generator_ema, discriminator, g_optimizer, d_optimizer,
                                       seed_generator, real_images, latent_vectors, augment_p, beta, weight,
                                       replicas)

        return _compile(replica_step, signature, jit_compile, distribution, after)

    return make(0.0), make(r1_weight)


def compile_gather():
    """``training.gather_batch`` as a tf.function (the training set stays on the GPU)."""
    return tf.function(training.gather_batch)


# ---------------------------------------------------------------- devices


def accelerators() -> list:
    return tf.config.list_physical_devices("GPU")


def describe_devices() -> tuple[str, str]:
    """(device names, short tag for file names), e.g. ("NVIDIA H100 80GB HBM3", "gpu-nvidia-h100-80gb-hbm3")."""
    gpus = accelerators()
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    if not names:
        return f"CPU ({os.cpu_count()} cores)", f"cpu{os.cpu_count()}"
    return ", ".join(names), "gpu-" + names[0].replace(" ", "-").lower()


def versions() -> dict:
    return {"tensorflow": tf.__version__}


def set_random_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)


def enable_determinism() -> None:
    tf.config.experimental.enable_op_determinism()


def make_distribution(devices: int):
    """A MirroredStrategy over ``devices`` GPUs (all: -1), or over logical CPUs when there is no GPU.

    Returns None for a single device, where the plain step is used.
    """
    available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    count = len(available) if devices == -1 else devices
    if count > len(available):
        raise ConfigError("devices", f"{count} asked for, but TensorFlow sees {len(available)}: "
                         f"{[device.name for device in available]}")
    if count <= 1:
        return None
    return tf.distribute.MirroredStrategy([device.name for device in available[:count]])


def replica_count(distribution) -> int:
    return 1 if distribution is None else distribution.num_replicas_in_sync


def distribution_scope(distribution):
    """Where models, optimizers and RNG states must be created to be mirrored."""
    return contextlib.nullcontext() if distribution is None else distribution.scope()


def to_device(array):
    """A host array as a tensor on the (first) device."""
    return tf.convert_to_tensor(array)
