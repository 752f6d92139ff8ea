"""The step engines, one per Keras backend, behind one interface; and the machine they run on.

``current()`` returns the engine of the running backend: ``tensorflow_engine``
(GradientTape and ``tf.function``, the default) or ``jax_engine``
(``KERAS_BACKEND=jax``: ``jax.vjp`` and ``jax.jit``).  Each is a module with the
functions ``Engine`` declares below, and nothing else of it is used outside
this package; both compile the same forward passes (``objectives.StepSpec``).
A test checks that both modules define every function of ``Engine`` with the
same parameters.
"""

from __future__ import annotations

import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from typing import Protocol

import keras
import numpy as np

from oasis_gan.config import BACKENDS


class Engine(Protocol):
    """What the architectures, the trainer and the tools call on an engine (a module, not a class)."""

    def compile_step(self, spec, distribution=None):
        """The update of a ``StepSpec`` compiled once: ``step(real_images, latent_vectors, *scalars) -> metrics``."""

    def input_gradient(self, function, inputs):
        """``(function(inputs), d sum(function(inputs)) / d inputs)``, differentiable again (R1, path length)."""

    def compile_gather(self, mirror_axis: int = 1):
        """``gather(images_on_device, indices, flips)``: a batch taken from a training set held on the
        accelerator, mirrored along the array axis ``mirror_axis`` where ``flips`` (``batches.gather_batch``)."""

    def to_device(self, array):
        """``array`` copied to the accelerator, for ``compile_gather``."""

    def accelerators(self) -> list:
        """The GPUs (or TPUs) the backend sees; empty on a CPU-only machine."""

    def accelerator_has_bfloat16(self, device) -> bool:
        """Whether ``device`` (one of ``accelerators()``) computes bfloat16 natively."""

    def describe_devices(self) -> tuple[str, str]:
        """(a sentence about the training device, a short tag for file names)."""

    def versions(self) -> dict:
        """The framework's versions, saved with a run."""

    def set_random_seed(self, seed: int) -> None:
        """Seed the framework's own random generators."""

    def enable_determinism(self) -> None:
        """Deterministic kernels from now on (called before the devices start)."""

    def start_cluster(self, cluster):
        """Join the run's other processes (``cluster.Cluster``) before any other framework call."""

    def agree_max(self, values) -> list[float]:
        """The element-wise maximum of ``values`` over every process of the run."""

    def make_distribution(self, devices: int):
        """A data-parallel distribution over ``devices`` local replicas (-1: all), or None for one."""

    def replica_count(self, distribution) -> int:
        """Replicas of a distribution (1 for None)."""

    def distribution_scope(self, distribution):
        """A context in which variables are created for the distribution."""


ENGINE_FUNCTIONS = tuple(name for name in vars(Engine) if not name.startswith("_"))


def unsupported_backend_message(backend: str) -> str:
    return (f"KERAS_BACKEND={backend!r}: training runs on the {' or '.join(map(repr, BACKENDS))} backend "
            "(tensorflow when KERAS_BACKEND is unset); set KERAS_BACKEND to one of them")


def current() -> Engine:
    """The engine module for the running Keras backend: tensorflow_engine (TensorFlow) or jax_engine (JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from oasis_gan.engines import tensorflow_engine

        return tensorflow_engine
    if backend == "jax":
        from oasis_gan.engines import jax_engine

        return jax_engine
    raise RuntimeError(unsupported_backend_message(backend))


def describe_environment() -> dict:
    """Versions and the device, saved with a run so its figures can be attributed."""
    engine = current()
    device, tag = engine.describe_devices()
    return {
        "device": device, "device_tag": tag, "python": platform.python_version(),
        **engine.versions(), "keras": keras.__version__, "backend": keras.backend.backend(),
        "numpy": np.__version__, "platform": platform.platform(),
    }


# CPU feature flags (Linux's /proc/cpuinfo) of native bfloat16 arithmetic: AVX512-BF16, AMX
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively; False where that cannot be read (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BFLOAT16_CPU_FLAGS)
    except OSError:
        pass
    return False


def native_bfloat16() -> bool:
    """Whether the device a run trains on computes bfloat16 natively.

    An accelerator when there is one (a GPU of compute capability 8.0 or later, a TPU),
    else the CPU.  On other CPUs bfloat16 is emulated and slower than float32.
    """
    engine = current()
    found = engine.accelerators()
    if found:
        return engine.accelerator_has_bfloat16(found[0])
    return cpu_has_bfloat16()
