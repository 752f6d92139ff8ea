"""The training step on TensorFlow: a GradientTape update in a tf.function.

This is the default engine (``KERAS_BACKEND`` unset or ``tensorflow``); the
notebook shows it.  ``train_step`` updates D, then G, from one batch, with
the forward pass and losses of the architecture's ``StepSpec`` (written once
in objectives.py and shared with the JAX engine, jax_engine.py); only the
gradient bookkeeping lives here.

``compile_step`` wraps it in a ``tf.function`` with a fixed input signature,
so it is traced once (a changed shape would otherwise retrace silently), and
with XLA when the spec asks.  Given a ``tf.distribute.MirroredStrategy``
(see ``make_distribution``) the step runs on every replica with its slice of
the global batch; the optimizers sum the replicas' gradients, so each
replica's loss is divided by the number of replicas.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from oasis_gan import batches, cluster as cluster_module
from oasis_gan.config import ConfigError
from oasis_gan.engines import objectives

_strategy = None  # the MultiWorkerMirroredStrategy, once start_cluster has joined a run of several processes


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


def train_step(spec: objectives.StepSpec, real_images, latent_vectors, *scalars, replicas: int = 1) -> dict:
    """One simultaneous update of D and G on a batch; returns scalar metrics."""
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
        g_loss, d_objective, metrics = spec.forward(real_images, latent_vectors, *scalars)
        g_scaled = _scaled(spec.g_optimizer, g_loss, replicas)
        d_scaled = _scaled(spec.d_optimizer, d_objective, replicas)
    # Train the discriminator: tell real from generated.
    _apply(spec.d_optimizer, d_tape, d_scaled, spec.discriminator.trainable_variables)
    # Train the generator: make the discriminator call its images real.
    _apply(spec.g_optimizer, g_tape, g_scaled, spec.generator.trainable_variables)
    if spec.generator_ema is not None and replicas == 1:
        update_ema(spec.generator_ema, spec.generator, spec.ema_beta(scalars))
    return metrics


def update_ema(generator_ema, generator, beta) -> None:
    """The averaged generator moves towards G: weights and float state averaged, RNG states copied."""
    for average, current in zip(generator_ema.trainable_variables, generator.trainable_variables):
        average.assign(objectives.moving_average(average, current, beta))
    for average, current in zip(generator_ema.non_trainable_variables, generator.non_trainable_variables):
        average.assign(objectives.moving_average(average, current, beta) if objectives.averaged_state(current)
                       else current)


# ------------------------------------------------------------ compilation


def _replica_slice(tensor, local_replicas: int):
    """This replica's share of this process's block of the global batch (replicas take consecutive blocks).

    Replicas are numbered process by process, so a process's replicas are
    consecutive and the one numbered ``i`` is the ``i % local_replicas``-th
    of its own.
    """
    context = tf.distribute.get_replica_context()
    share = tensor.shape[0] // local_replicas
    return tensor[(context.replica_id_in_sync_group % local_replicas) * share:][:share]


def compile_step(spec: objectives.StepSpec, distribution=None):
    """``train_step`` as ``step(real_images, latent_vectors, *scalars) -> metrics``, traced once.

    In a run of several processes the step takes this process's block of the
    global batch (``spec.batch_size`` over the process count).
    """
    processes = cluster_module.joined().num_processes
    batch = spec.batch_size // processes
    signature = [
        tf.TensorSpec((batch, spec.image_size, spec.image_size, 1), tf.float32, name="real_images"),
        tf.TensorSpec((batch, spec.latent_dim), tf.float32, name="latent_vectors"),
        *(tf.TensorSpec((), tf.float32, name=name) for name in spec.scalars),
    ]
    if distribution is None:
        return tf.function(lambda *inputs: train_step(spec, *inputs), input_signature=signature,
                           jit_compile=spec.jit_compile)
    if spec.jit_compile:
        raise ConfigError("jit_compile", "XLA is not available with several TensorFlow devices; drop --xla "
                                         "or use KERAS_BACKEND=jax, whose steps are always compiled by XLA")
    replicas = replica_count(distribution)
    local_replicas = replicas // processes

    def sliced(real_images, latent_vectors, *scalars):
        return train_step(spec, _replica_slice(real_images, local_replicas),
                          _replica_slice(latent_vectors, local_replicas), *scalars, replicas=replicas)

    def step(*inputs):
        per_replica = distribution.run(sliced, args=inputs)
        metrics = {key: distribution.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                   for key, value in per_replica.items()}
        if spec.generator_ema is not None:  # once, in cross-replica context, on the mirrored weights
            update_ema(spec.generator_ema, spec.generator, spec.ema_beta(inputs[2:]))
        return metrics

    return tf.function(step, input_signature=signature)


def compile_gather(mirror_axis: int = batches.FLIP_AXIS_INDEX["rows"]):
    """``batches.gather_batch`` as a tf.function (the training set stays on the GPU)."""
    return tf.function(functools.partial(batches.gather_batch, mirror_axis=mirror_axis))


# ---------------------------------------------------------------- devices


def accelerators() -> list:
    return tf.config.list_physical_devices("GPU")


def accelerator_has_bfloat16(device) -> bool:
    """A GPU computes bfloat16 natively from compute capability 8.0 (A100, RTX 30xx) on."""
    capability = tf.config.experimental.get_device_details(device).get("compute_capability") or (0, 0)
    return tuple(capability) >= (8, 0)


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


def start_cluster(cluster: cluster_module.Cluster):
    """Join the run's other processes: a MultiWorkerMirroredStrategy (None for a single process).

    It must be made before any other TensorFlow operation (train.py calls
    this first).  The cluster comes from TF_CONFIG or Slurm; every collective
    gives up after ``cluster.timeout_s`` seconds, so a process that died
    stops the others with an error instead of a hang.
    """
    global _strategy
    if not cluster.multi:
        return None
    if _strategy is not None:
        return _strategy
    resolver = (tf.distribute.cluster_resolver.SlurmClusterResolver() if cluster.source == "slurm"
                else tf.distribute.cluster_resolver.TFConfigClusterResolver())
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=cluster.timeout_s)
    what = f"{cluster.describe()}: joining the TensorFlow cluster"
    _bound_registration(resolver, cluster.timeout_s)
    with cluster_module.bounded_wait(cluster, what):
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                                 communication_options=options)
            agree_max_on(strategy, [0.0])  # the first collective: every worker is up
        except tf.errors.OpError as error:  # the registration deadline (DeadlineExceeded, Unavailable)
            cluster_module.give_up(cluster, what, f" ({type(error).__name__})")
    _strategy = strategy
    cluster_module.record_joined(cluster)
    return strategy


def _bound_registration(resolver, timeout_s: float) -> None:
    """Give the coordination service's wait for the other workers the deadline ``timeout_s``.

    MultiWorkerMirroredStrategy waits for every worker inside one native call
    that holds Python's interpreter lock, so no Python watchdog can run, and
    by default a worker whose peers never start waits for ever (seen: 13
    minutes, deaf to SIGTERM).  Configured here first (the strategy keeps a
    configuration it finds), registration is a barrier with this deadline,
    after which the strategy raises DeadlineExceededError: on the leader as
    on the others.
    """
    try:  # TensorFlow's own modules (2.21): should a later version move them, the Python watchdog remains
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context
    except ImportError as error:
        print(f"warning: cannot give TensorFlow's cluster join a deadline ({error}); a worker whose peers never "
              "start may wait beyond --cluster-timeout", file=sys.stderr)
        return
    spec = resolver.cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    eager = context.context()
    eager.configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs, cluster_register_timeout_in_ms=int(timeout_s * 1000))
    eager.coordination_service.cluster_register_with_barrier = True


def agree_max_on(strategy, values) -> list[float]:
    """The element-wise maximum of ``values`` over every process (a collective: all must call it)."""
    local = tf.constant([values], tf.float32)
    per_replica = strategy.run(lambda: tf.identity(local))
    return [float(value) for value in tf.reduce_max(strategy.gather(per_replica, axis=0), axis=0).numpy()]


def agree_max(values) -> list[float]:
    """``agree_max_on`` the started cluster; the values themselves for a single process."""
    return list(map(float, values)) if _strategy is None else agree_max_on(_strategy, values)


def make_distribution(devices: int):
    """A MirroredStrategy over ``devices`` GPUs (all: -1), or over logical CPUs when there is no GPU.

    Returns None for a single device, where the plain step is used; in a
    run of several processes, the MultiWorkerMirroredStrategy over all of
    them (each process uses all its GPUs, or its CPU).
    """
    if _strategy is not None:
        return _strategy
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
