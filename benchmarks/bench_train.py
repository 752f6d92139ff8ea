"""Training throughput (images/s) of the compiled GradientTape step.

    python benchmarks/bench_train.py                                  # CPU defaults: 64x64
    python benchmarks/bench_train.py --sizes 64 256 --archs dcgan dcgan-classic --batch-size 32

For each architecture, resolution and compile mode (plain tf.function, and
tf.function with XLA jit_compile) it builds the models, runs warm-up steps
(tracing and compilation excluded), then times --repeats blocks of --steps
steps and prints the median images/s, one row per configuration, all in one
run so the rows compare side by side on the same machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import tensorflow as tf

import modelscript
import training
from config import TrainConfig


def time_config(arch: str, size: int, batch_size: int, jit: bool, steps: int, repeats: int, warmup: int) -> float:
    generator = modelscript.build_generator(arch, size)
    discriminator = modelscript.build_discriminator(arch, size)
    g_optimizer, d_optimizer = training.make_optimizers(TrainConfig(demo=True, steps=1))
    for optimizer, model in ((g_optimizer, generator), (d_optimizer, discriminator)):
        optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit, reduce_retracing=True)
    def step(real_images, latent_vectors):
        return training.train_step(generator, discriminator, g_optimizer, d_optimizer, real_images, latent_vectors)

    rng = np.random.default_rng(0)
    real = tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32))
    latents = tf.constant(rng.standard_normal((batch_size, generator.input_shape[-1])).astype(np.float32))
    for _ in range(warmup):
        float(step(real, latents)["g_loss"])
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            metrics = step(real, latents)
        float(metrics["g_loss"])  # wait for the last step
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["dcgan"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["tf.function", "xla"], choices=["tf.function", "xla"])
    args = parser.parse_args()

    gpus = tf.config.list_physical_devices("GPU")
    device = gpus[0].name if gpus else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device}; TensorFlow {tf.__version__}; batch {args.batch_size}; "
          f"median of {args.repeats} x {args.steps} steps after {args.warmup} warm-up steps")
    print(f"{'arch':<14} {'size':>5} {'mode':<12} {'images/s':>9} {'ms/step':>8}")
    for arch in args.archs:
        for size in args.sizes:
            for mode in args.modes:
                rate = time_config(arch, size, args.batch_size, mode == "xla", args.steps, args.repeats, args.warmup)
                print(f"{arch:<14} {size:>5} {mode:<12} {rate:>9.1f} {1000 * args.batch_size / rate:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
