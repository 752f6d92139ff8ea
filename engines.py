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
