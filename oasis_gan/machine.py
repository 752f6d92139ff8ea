"""The settings that depend on the machine, decided here once for train.py, the notebook and the Trainer.

Three settings have no one right value, only one per machine:

* the image side: 256 (the task's size) with an accelerator, 64 on the CPU,
  where a 256x256 step runs about 2 images/s on two cores;
* the precision "auto": mixed_bfloat16 where the training device computes
  bfloat16 natively (GPUs from A100/RTX 30xx on, CPUs with AVX512-BF16 or
  AMX), else float32 (emulated bfloat16 is slower than float32);
* the training length when neither steps nor epochs is given: the demo on a
  CPU trains the main job's length (DEMO_LENGTH: it fits 10 minutes on two
  cores, more steps in bfloat16), everything else DATA_EPOCHS passes over the
  data at the configured batch size.

``resolve(settings, machine)`` fills whichever of them ``settings`` leaves
unset and returns the validated, resolved ``TrainConfig``.  ``Machine.detect()``
asks the running Keras backend (it imports Keras); ``Machine`` can also be made
by hand (tests, or a config checked before Keras loads).  The notebook's own
choices (its splits, its bookkeeping) are in notebook_ui.NOTEBOOK_CHOICES.
"""

from __future__ import annotations

from dataclasses import dataclass

from oasis_gan.config import DATA_EPOCHS, DEMO_LENGTH, TrainConfig

CPU_IMAGE_SIZE, GPU_IMAGE_SIZE = 64, 256


@dataclass(frozen=True)
class Machine:
    accelerator: bool  # a GPU (or TPU) that the Keras backend trains on
    native_bfloat16: bool  # the training device (that accelerator, else the CPU) computes bfloat16 natively

    @classmethod
    def detect(cls) -> "Machine":
        """This machine, as the running Keras backend sees it (imports Keras)."""
        from oasis_gan import engines

        return cls(accelerator=bool(engines.current().accelerators()), native_bfloat16=engines.native_bfloat16())


CPU = Machine(accelerator=False, native_bfloat16=False)  # the plainest machine: checks made before Keras loads


def precision_for(precision: str, machine: Machine) -> str:
    """A concrete precision: "auto" becomes mixed_bfloat16 where it is native, else float32."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if machine.native_bfloat16 else "float32"


def demo_steps(precision: str) -> int:
    """The main job's length on a CPU for a (concrete) precision: what fits its 10 minutes."""
    return DEMO_LENGTH["bfloat16_steps" if precision == "mixed_bfloat16" else "steps"]


def machine_defaults(settings: dict, machine: Machine) -> dict:
    """The values this machine gives the settings that ``settings`` leaves unset (missing or None)."""
    given = {name: value for name, value in settings.items() if value is not None}
    chosen = {}
    if "image_size" not in given:
        chosen["image_size"] = GPU_IMAGE_SIZE if machine.accelerator else CPU_IMAGE_SIZE
    chosen["precision"] = precision_for(given.get("precision", "auto"), machine)
    if "steps" not in given and "epochs" not in given:
        if given.get("demo") and not machine.accelerator:
            chosen["steps"] = demo_steps(chosen["precision"])
            if "batch_size" not in given:
                chosen["batch_size"] = DEMO_LENGTH["batch_size"]
        else:
            chosen["epochs"] = DATA_EPOCHS
    return chosen


def resolve(settings: dict, machine: Machine) -> TrainConfig:
    """The run's config: ``settings`` (TrainConfig fields; missing or None: the default), with what the
    machine decides filled in, validated (ConfigError names the field) and resolved for its architecture."""
    given = {name: value for name, value in settings.items() if value is not None}
    return TrainConfig.from_dict({**given, **machine_defaults(settings, machine)}).validate().resolved()
