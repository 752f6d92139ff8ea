"""Training throughput (images/s) of the training step, with FLOPs, on either backend.

    python benchmarks/bench_train.py                                   # CPU defaults: 64x64 dcgan
    python benchmarks/bench_train.py --sizes 64 256 --archs dcgan dcgan-classic stylegan --batch-size 32
    python benchmarks/bench_train.py --precisions float32 mixed_bfloat16
    python benchmarks/bench_train.py --archs dcgan-ada --batch-size 16 --precisions mixed_bfloat16 \
        --modes engine trainer --d-dropouts 0.4 0       # what the discriminator's dropout costs
    KERAS_BACKEND=jax python benchmarks/bench_train.py --sizes 256 --batch-size 256 \
        --archs dcgan stylegan --precisions float32 mixed_bfloat16        # a GPU run

Modes, one row each, all in one run so the rows compare side by side on the
same machine:

* ``plain``: the textbook step, written here and owing nothing to this
  project: a ``tf.function`` around two GradientTapes (TensorFlow only;
  DCGANs only, since StyleGAN's step has more to it).  The yardstick.
* ``engine``: the project's compiled step (the architecture's
  ``train_step``, oasis_gan/architectures/gan.py): a tf.function on TensorFlow, jax.jit on JAX.
* ``engine-xla``: the same with XLA ``jit_compile`` (TensorFlow only; JAX
  always compiles with XLA; not for the architectures that augment by
  default, whose augmentation TensorFlow's XLA cannot compile).
* ``trainer``: ``Trainer.train_one_step`` as a run calls it: drawing the
  batch (indices, flips, latents; gathered on the device when there is an
  accelerator), the compiled step and the per-step bookkeeping; the
  periodic sample grids, SSIM and checkpoints are turned off.

For each architecture, size and precision every mode (and, with
--d-dropouts, every mode at each of the discriminator's dropout rates, for
the architectures that have one) is built and warmed up
(tracing and compilation excluded), then they take turns running
blocks of --steps steps, --repeats times; each row is a mode's median
images/s.  Taking turns keeps a noisy, shared machine's drift out of the
comparison.

FLOP columns are analytic, counted from the layers
(``modelscript.forward_flops``): "fwd GFLOP" is one image through G and twice
through D (real and generated), "step GFLOP" about 3x that (forward and
backward).  TFLOP/s is step GFLOP x images/s; on a known GPU the last column
is that as a share of the device's dense bf16/fp16 tensor-core peak (float32
steps cannot reach it; the column says how far there is to go).  For
StyleGAN the count leaves out the augmentation, the EMA update and the R1
penalty's double backward pass (one step in 16), so its TFLOP/s is a slight
underestimate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np

import modelscript
from oasis_gan import engines, training
from oasis_gan.architectures import gan, table
from oasis_gan.config import ARCHITECTURES, PRECISIONS, TrainConfig

MODES = ("plain", "engine", "engine-xla", "trainer")
TENSORFLOW_ONLY = ("plain", "engine-xla")


# Dense bf16/fp16 tensor-core peak in TFLOP/s (vendor data sheets, without sparsity).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "V100": 125.0, "T4": 65.0}


def device_peak(device_name: str) -> float | None:
    for key, peak in GPU_PEAK_TFLOPS.items():
        if key in device_name.upper():
            return peak
    return None


def bench_config(arch: str, size: int, batch_size: int, precision: str, jit: bool = False,
                 d_dropout: float | None = None) -> TrainConfig:
    return TrainConfig(demo=True, steps=10**9, arch=arch, image_size=size, batch_size=batch_size,
                       precision=precision, jit_compile=jit, log_every=10, sample_every=10**9,
                       checkpoint_every=10**9, ssim_every=0, d_dropout=d_dropout).validate().resolved()


def plain_tape_step(generator, discriminator, g_optimizer, d_optimizer):
    """The textbook DCGAN step: two tapes, BCE from logits, one tf.function."""
    import tensorflow as tf

    cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(real_images, latent_vectors):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            generated = generator(latent_vectors, training=True)
            real_logits = tf.cast(discriminator(real_images, training=True), tf.float32)
            fake_logits = tf.cast(discriminator(generated, training=True), tf.float32)
            g_loss = cross_entropy(tf.ones_like(fake_logits), fake_logits)
            d_loss = (cross_entropy(tf.ones_like(real_logits), real_logits)
                      + cross_entropy(tf.zeros_like(fake_logits), fake_logits))
        d_gradients = d_tape.gradient(d_loss, discriminator.trainable_variables)
        d_optimizer.apply_gradients(zip(d_gradients, discriminator.trainable_variables))
        g_gradients = g_tape.gradient(g_loss, generator.trainable_variables)
        g_optimizer.apply_gradients(zip(g_gradients, generator.trainable_variables))
        return {"g_loss": g_loss, "d_loss": d_loss}

    return step


def build_step(arch: str, size: int, batch_size: int, mode: str, precision: str = "float32",
               d_dropout: float | None = None):
    """``step(index) -> metrics`` for one configuration, and its (generator, discriminator).

    The engine modes run the architecture's own step (oasis_gan/architectures/gan.py) on
    one fixed batch; StyleGAN runs its R1 variant on every ``r1_every``-th
    step as the trainer does, with augmentation on (p starts at 0.2) and the
    EMA update included.  ``d_dropout``: the discriminator's dropout (None: the architecture's).
    """
    config = bench_config(arch, size, batch_size, precision, jit=mode == "engine-xla", d_dropout=d_dropout)
    rng = np.random.default_rng(0)
    if mode == "trainer":
        images = rng.uniform(-1, 1, (batch_size * 8, size, size, 1)).astype(np.float32)
        trainer = training.Trainer.new(config, Path(tempfile.mkdtemp(prefix="bench-")) / "run", images=images,
                                       progress=False)

        def trainer_step(index):
            trainer.train_one_step()
            return trainer.history.pending[-1] if trainer.history.pending else {"g_loss": 0.0}

        return trainer_step, trainer.generator, trainer.discriminator
    engine = engines.current()
    real = engine.to_device(rng.uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32))
    latents = engine.to_device(rng.standard_normal((batch_size, config.latent_dim)).astype(np.float32))
    if mode == "plain":
        generator, discriminator = gan.build_networks(config)
        compiled = plain_tape_step(generator, discriminator, *gan.make_optimizers(config))
        return (lambda index: compiled(real, latents)), generator, discriminator
    model = gan.for_config(config)
    model.build(engine)
    if model.augment.enabled:
        model.augment.probability = 0.2
    return (lambda index: model.train_step(index, real, latents)), model.generator, model.discriminator


def time_modes(arch: str, size: int, batch_size: int, modes: list, precision: str, steps: int, repeats: int,
               warmup: int, d_dropouts: tuple = (None,)) -> tuple[dict, int, int]:
    """Median images/s per (mode, discriminator dropout), and forward and step FLOPs per image.

    All of them are built and warmed up first; the timed blocks then take turns
    (A, B, C, A, B, C, ...), so a machine that slows down or speeds up
    during the run affects every one alike.
    """
    built = {(mode, dropout): build_step(arch, size, batch_size, mode, precision, dropout)
             for mode in modes for dropout in d_dropouts}
    modes = list(built)
    generator, discriminator = next(iter(built.values()))[1:]
    forward = modelscript.forward_flops(generator) + 2 * modelscript.forward_flops(discriminator)
    step_flops = modelscript.train_step_flops(generator, discriminator)
    index = {mode: 0 for mode in modes}

    def run(mode, count):
        step = built[mode][0]
        for _ in range(count):
            metrics = step(index[mode])
            index[mode] += 1
        float(metrics["g_loss"])  # wait for the last step

    for mode in modes:
        run(mode, max(warmup, 2))  # StyleGAN: traces both variants
    rates = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            start = time.perf_counter()
            run(mode, steps)
            rates[mode].append(steps * batch_size / (time.perf_counter() - start))
    return {mode: statistics.median(values) for mode, values in rates.items()}, forward, step_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["dcgan"], choices=ARCHITECTURES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["plain", "engine", "engine-xla", "trainer"], choices=MODES)
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=PRECISIONS)
    parser.add_argument("--d-dropouts", nargs="+", type=float, default=[],
                        help="the discriminator's dropout rates to compare, for the architectures that have one "
                             "(dcgan, dcgan-ada; default: each architecture's own)")
    args = parser.parse_args()

    backend = keras.backend.backend()
    environment = engines.describe_environment()
    peak = device_peak(environment["device"])
    versions = ", ".join(f"{name} {environment[name]}" for name in ("tensorflow", "jax") if name in environment)
    print(f"device: {environment['device']}; Keras {keras.__version__} on {backend} ({versions}); "
          f"batch {args.batch_size}; median of {args.repeats} x {args.steps} steps after {args.warmup} warm-up steps")
    print(f"{'arch':<14} {'size':>5} {'mode':<11} {'D drop':>6} {'precision':<15} {'images/s':>9} {'ms/step':>8} "
          f"{'fwd GFLOP':>10} {'step GFLOP':>11} {'TFLOP/s':>8} {'% peak':>7}")
    for arch in args.archs:
        for size in args.sizes:
            for precision in args.precisions:
                entry = table.get(arch)
                # TensorFlow's XLA cannot compile the adaptive augmentation (TrainConfig.validate refuses it)
                xla_refused = bench_config(arch, size, args.batch_size, precision).augment == "ada"
                if "engine-xla" in args.modes and backend == "tensorflow" and xla_refused:
                    print(f"{arch}: no engine-xla row (XLA cannot compile its adaptive augmentation on TensorFlow)")
                modes = [mode for mode in args.modes if not (backend != "tensorflow" and mode in TENSORFLOW_ONLY)
                         and not (mode == "plain" and arch == "stylegan")
                         and not (mode == "engine-xla" and xla_refused)]
                if not modes:
                    continue
                dropouts = tuple(args.d_dropouts) if args.d_dropouts and entry.has_dropout else (None,)
                rates, forward, step_flops = time_modes(arch, size, args.batch_size, modes, precision, args.steps,
                                                        args.repeats, args.warmup, dropouts)
                for (mode, dropout), rate in rates.items():
                    dropout = entry.defaults.get("d_dropout") if dropout is None else dropout
                    dropout_text = "-" if dropout is None else f"{dropout:g}"
                    tflops = rate * step_flops / 1e12
                    share = f"{100 * tflops / peak:>6.1f}%" if peak else f"{'n/a':>7}"
                    label = "engine-jit" if backend == "jax" and mode == "engine" else mode
                    print(f"{arch:<14} {size:>5} {label:<11} {dropout_text:>6} {precision:<15} {rate:>9.1f} "
                          f"{1000 * args.batch_size / rate:>8.1f} {forward / 1e9:>10.2f} {step_flops / 1e9:>11.2f} "
                          f"{tflops:>8.3f} {share}", flush=True)


if __name__ == "__main__":
    main()
