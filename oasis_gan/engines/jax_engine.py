"""The training step on JAX (``KERAS_BACKEND=jax``): jax.vjp inside jax.jit.

The same update as tensorflow_engine.py (the same ``StepSpec`` forward passes and
losses from objectives.py), written the JAX way: the step is a pure function
of the variables' values.  ``_JittedStep`` reads the values of the Keras
variables it updates (G, D, their optimizers, RNG states; the EMA generator
when there is one), runs the jitted function, and writes the new values
back, so everything else (sampling, checkpoints, the notebook) sees ordinary
Keras models.  A ``keras.StatelessScope`` maps each variable to its traced
value while the models run, so layers that update state in the forward pass
(batch-norm statistics, dropout and noise RNGs, StyleGAN's running mean of
w) are captured too.  jax.jit always compiles with XLA.

Data parallelism: with a ``keras.distribution.DataParallel`` set before the
models are built, their variables are replicated on every device; the step
gets its batch sharded along the batch axis and XLA inserts the gradient
all-reduce.  The losses are means over the global batch, so nothing else
changes.
"""

from __future__ import annotations

import contextlib
import functools
import os

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras.src.backend.common.stateless_scope import get_stateless_scope  # the scope a step runs in (public class)

from oasis_gan import batches, cluster as cluster_module
from oasis_gan.config import ConfigError
from oasis_gan.engines import objectives


DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"
COMPILATION_CACHE = "jax"  # the folder under the project's cache (data_utils.default_cache_dir) for compiled steps


def use_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk, so a resumed or repeated run skips the compile.

    They go to ``<cache>/jax`` ($OASIS_GAN_CACHE, else ~/.cache/oasis_gan;
    delete the folder to clear it) unless JAX_COMPILATION_CACHE_DIR names
    another.  StyleGAN compiles one step per regulariser mix: at 256x256 on 2
    CPU cores its first 5 steps took 117 s with an empty cache and 36 s with
    a warm one.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return
    import data_utils

    jax.config.update("jax_compilation_cache_dir", str(data_utils.default_cache_dir() / COMPILATION_CACHE))


use_compilation_cache()  # importing this module means the JAX engine is in use; before anything compiles


def input_gradient(function, inputs):
    """``(function(inputs), d sum(function(inputs)) / d inputs)``, differentiable again.

    State that ``function`` updates (batchnorm statistics in a DCGAN's D,
    under R1) goes into the enclosing ``keras.StatelessScope`` after the
    pullback, as jax.vjp's auxiliary output: written from inside, a traced
    value would leak out of the transformation.
    """
    scope = get_stateless_scope()
    mapping = scope.state_mapping if scope is not None else {}

    def traced(values):
        before = dict(mapping)
        outputs = function(values)
        changed = {key: value for key, value in mapping.items() if before.get(key) is not value}
        mapping.clear()
        mapping.update(before)
        return outputs, changed

    outputs, pullback, changed = jax.vjp(traced, inputs, has_aux=True)
    mapping.update(changed)
    (gradient,) = pullback(jnp.ones_like(outputs))
    return outputs, gradient


class _JittedStep:
    """``pure(values, *inputs) -> (new_values, metrics)`` under jax.jit, on Keras variables' values.

    ``groups`` is a list of variable lists; ``values`` has the same nesting.
    """

    def __init__(self, groups: list, pure, batch_size: int, distribution=None):
        self.groups = groups
        self.batch_size = batch_size  # the global batch; each process passes its block of it
        self.local_batch = batch_size // jax.process_count()
        self._jitted = jax.jit(pure)
        self._batch_sharding = _batch_sharding(distribution)

    def __call__(self, real_images, latent_vectors, *scalars):
        new_values, metrics = self._jitted(*self._arguments(real_images, latent_vectors, scalars))
        for group, group_values in zip(self.groups, new_values):
            for variable, value in zip(group, group_values):
                variable.assign(value)
        return metrics

    def lower(self, real_images, latent_vectors, *scalars):
        """The step traced for these arguments, ready for XLA (``.compile()``); jax.jit keeps what that compiles."""
        return self._jitted.lower(*self._arguments(real_images, latent_vectors, scalars))

    def _arguments(self, real_images, latent_vectors, scalars) -> tuple:
        if real_images.shape[0] != self.local_batch or latent_vectors.shape[0] != self.local_batch:
            raise ValueError(f"the step was compiled for batches of {self.local_batch}, got "
                             f"{real_images.shape[0]} images and {latent_vectors.shape[0]} latent vectors")
        values = [[variable.value for variable in group] for group in self.groups]
        return (values, self._shard(real_images), self._shard(latent_vectors),
                *(jnp.float32(scalar) for scalar in scalars))

    def _shard(self, array):
        if self._batch_sharding is None:
            return array
        if jax.process_count() > 1:  # this process's block of the global batch, on its own devices
            global_shape = (self.batch_size,) + tuple(array.shape[1:])
            return jax.make_array_from_process_local_data(self._batch_sharding, np.asarray(array), global_shape)
        return jax.device_put(array, self._batch_sharding)


def _batch_sharding(distribution):
    if distribution is None:
        return None
    mesh = distribution.device_mesh.backend_mesh
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))


def _differentiate(objective_pair, g_values, d_values):
    """Gradients of G's loss w.r.t. G and of D's objective w.r.t. D: two pullbacks of one forward pass."""
    (g_loss, d_objective), pullback, aux = jax.vjp(objective_pair, g_values, d_values, has_aux=True)
    one, zero = jnp.ones_like(g_loss), jnp.zeros_like(g_loss)
    g_gradients = pullback((one, zero))[0]
    d_gradients = pullback((zero, one))[1]
    return g_gradients, d_gradients, aux


def compile_step(spec: objectives.StepSpec, distribution=None):
    """The spec's update as ``step(real_images, latent_vectors, *scalars) -> metrics`` under jax.jit."""
    generator, discriminator = spec.generator, spec.discriminator
    g_vars, d_vars = list(generator.trainable_variables), list(discriminator.trainable_variables)
    generator_others = list(generator.non_trainable_variables)
    other_vars = generator_others + list(discriminator.non_trainable_variables) + list(spec.extra_state)
    g_opt_vars, d_opt_vars = list(spec.g_optimizer.variables), list(spec.d_optimizer.variables)
    groups = [g_vars, d_vars, other_vars, g_opt_vars, d_opt_vars]
    if spec.generator_ema is not None:
        groups += [list(spec.generator_ema.trainable_variables), list(spec.generator_ema.non_trainable_variables)]

    def step(values, real_images, latent_vectors, *scalars):
        g_values, d_values, other_values, g_opt_values, d_opt_values = values[:5]

        def objective_pair(g_trainable, d_trainable):
            variables = g_vars + d_vars + other_vars + g_opt_vars + d_opt_vars
            current = list(g_trainable) + list(d_trainable) + other_values + g_opt_values + d_opt_values
            with keras.StatelessScope(state_mapping=list(zip(variables, current))) as scope:
                g_loss, d_objective, metrics = spec.forward(real_images, latent_vectors, *scalars)
                # Loss scaling under mixed_float16 (a no-op otherwise); the optimizers unscale.
                scaled = (spec.g_optimizer.scale_loss(g_loss), spec.d_optimizer.scale_loss(d_objective))
                new_others = [scope.get_current_value(variable) for variable in other_vars]
            return scaled, (metrics, new_others)

        g_gradients, d_gradients, (metrics, new_others) = _differentiate(objective_pair, g_values, d_values)
        # Train the discriminator, then the generator (the same order as tensorflow_engine).
        new_d, new_d_opt = spec.d_optimizer.stateless_apply(d_opt_values, d_gradients, d_values)
        new_g, new_g_opt = spec.g_optimizer.stateless_apply(g_opt_values, g_gradients, g_values)
        new_values = [new_g, new_d, new_others, new_g_opt, new_d_opt]
        if spec.generator_ema is not None:
            beta = spec.ema_beta(scalars)
            new_ema = [objectives.moving_average(average, current, beta)
                       for average, current in zip(values[5], new_g)]
            new_ema_state = [objectives.moving_average(average, current, beta)
                             if objectives.averaged_state(variable) else current  # RNG states: copied
                             for variable, average, current in zip(generator_others, values[6], new_others)]
            new_values += [new_ema, new_ema_state]
        return new_values, metrics

    return _JittedStep(groups, step, spec.batch_size, distribution)


def compile_gather(mirror_axis: int = batches.FLIP_AXIS_INDEX["rows"]):
    """``batches.gather_batch`` under jax.jit (the training set stays on the accelerator)."""
    return jax.jit(functools.partial(batches.gather_batch, mirror_axis=mirror_axis))


# ---------------------------------------------------------------- devices


def accelerators() -> list:
    return [device for device in jax.devices() if device.platform != "cpu"]


def accelerator_has_bfloat16(device) -> bool:
    """TPUs, and GPUs from compute capability 8.0 (A100, RTX 30xx) on, compute bfloat16 natively."""
    if device.platform == "tpu":
        return True
    try:
        return float(getattr(device, "compute_capability", 0)) >= 8.0
    except (TypeError, ValueError):  # a GPU that names no CUDA capability (ROCm)
        return False


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
    """XLA's GPU kernels are deterministic with DETERMINISM_FLAG, read once when JAX starts its backends.

    train.py calls this before anything asks JAX for its devices, so this sets the flag;
    asked later, with the backends already started without it, this refuses rather than
    silently training non-deterministically.
    """
    if DETERMINISM_FLAG in os.environ.get("XLA_FLAGS", ""):
        return
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise ConfigError("deterministic", "JAX has already started its devices without deterministic kernels; "
                                           f"set XLA_FLAGS={DETERMINISM_FLAG} before starting Python (train.py "
                                           "--deterministic does this for you)")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + DETERMINISM_FLAG).strip()


def start_cluster(cluster: cluster_module.Cluster):
    """Join the run's other processes (jax.distributed), then DataParallel over all their devices.

    Must come before anything else asks JAX for its devices (train.py calls
    it first).  Returns the distribution, None for a single process.  A
    coordinator that does not answer within ``cluster.timeout_s`` ends the
    process with a message; processes on CPUs talk through gloo.
    """
    if not cluster.multi:
        return None
    if not cluster_module.joined().multi:
        with contextlib.suppress(AttributeError, ValueError):  # option absent where gloo is the only choice
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        where = {} if cluster.source == "slurm" else dict(
            coordinator_address=cluster.coordinator, num_processes=cluster.num_processes,
            process_id=cluster.process_id)
        with cluster_module.bounded_wait(cluster, f"{cluster.describe()}: joining the coordinator "
                                                  f"{cluster.coordinator or '(from Slurm)'}"):
            try:
                jax.distributed.initialize(**where, **_timeouts(int(cluster.timeout_s)))
            except Exception as error:  # XlaRuntimeError and friends: say which address and what to check
                raise cluster_module.ClusterError(
                    f"--coordinator {cluster.coordinator}: could not join the run as {cluster.describe()}: "
                    f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from error
            if jax.process_count() != cluster.num_processes or jax.process_index() != cluster.process_id:
                raise cluster_module.ClusterError(
                    f"--num-processes/--process-id: JAX joined as process {jax.process_index()} of "
                    f"{jax.process_count()}, but {cluster.describe()} was asked for")
            agree_max([0.0])  # the first collective: every process is up
        cluster_module.record_joined(cluster)
    return make_distribution(-1)


def _timeouts(seconds: int) -> dict:
    """jax.distributed's waits (joining, a silent process, shutting down), as far as this JAX offers them."""
    import inspect

    offered = inspect.signature(jax.distributed.initialize).parameters
    names = ("initialization_timeout", "heartbeat_timeout_seconds", "shutdown_timeout_seconds")
    return {name: seconds for name in names if name in offered}


def agree_max(values) -> list[float]:
    """The element-wise maximum of ``values`` over every process (a collective: all must call it)."""
    if jax.process_count() == 1:
        return list(map(float, values))
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(values, np.float32))
    return [float(value) for value in np.max(np.asarray(gathered).reshape(jax.process_count(), -1), axis=0)]


def make_distribution(devices: int):
    """A keras.distribution.DataParallel over ``devices`` devices (all: -1), set for the whole process.

    Returns None for a single device.  On a CPU, several devices need
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts.
    In a run of several processes: every device of every process.
    """
    if cluster_module.joined().multi:
        distribution = keras.distribution.DataParallel(devices=jax.devices())
        keras.distribution.set_distribution(distribution)
        return distribution
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
