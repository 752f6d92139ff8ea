"""The step engine for the running Keras backend, and a description of the machine it runs on.

``current()`` returns steps_tf (TensorFlow, the default) or steps_jax
(``KERAS_BACKEND=jax``); both offer the same functions (``compile_step``,
``compile_gather``, ``input_gradient``, devices, seeds, determinism).
"""

from __future__ import annotations

import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import keras
import numpy as np

from config import BACKENDS


def unsupported_backend_message(backend: str) -> str:
    return (f"KERAS_BACKEND={backend!r}: training runs on the {' or '.join(map(repr, BACKENDS))} backend "
            "(tensorflow when KERAS_BACKEND is unset); set KERAS_BACKEND to one of them")


def current():
    """The step module for the running Keras backend: steps_tf (TensorFlow) or steps_jax (JAX)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import steps_tf

        return steps_tf
    if backend == "jax":
        import steps_jax

        return steps_jax
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


def resolve_precision(precision: str) -> str:
    """A concrete precision for a setting: "auto" becomes mixed_bfloat16 where it is native, else float32."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if native_bfloat16() else "float32"
