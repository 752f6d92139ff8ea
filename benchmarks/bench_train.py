"""Training throughput (images/s) of the compiled GradientTape step, with FLOPs.

    python benchmarks/bench_train.py                                  # CPU defaults: 64x64
    python benchmarks/bench_train.py --sizes 64 256 --archs dcgan dcgan-classic stylegan --batch-size 32

For each architecture, resolution and compile mode (plain tf.function, and
tf.function with XLA jit_compile) it builds the models, runs warm-up steps
(tracing and compilation excluded), then times --repeats blocks of --steps
steps and prints the median images/s, one row per configuration, all in one
run so the rows compare side by side on the same machine.

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
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import tensorflow as tf

import modelscript
import training
from config import TrainConfig


# Dense bf16/fp16 tensor-core peak in TFLOP/s (vendor data sheets, without sparsity).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "V100": 125.0, "T4": 65.0}


def device_peak(device_name: str) -> float | None:
    for key, peak in GPU_PEAK_TFLOPS.items():
        if key in device_name.upper():
            return peak
    return None


def build_step(arch: str, size: int, batch_size: int, jit: bool):
    """The trainer's own compiled step for ``arch`` -> (step(index, real, latents), generator, discriminator).

    StyleGAN runs its R1 variant on every ``r1_every``-th step as the trainer
    does, with augmentation on (p = 0.2) and the EMA update included.
    """
    config = TrainConfig(demo=True, steps=1, arch=arch, image_size=size, batch_size=batch_size).validate()
    generator = modelscript.build_generator(arch, size)
    discriminator = modelscript.build_discriminator(arch, size)
    g_optimizer, d_optimizer = training.make_optimizers(config)
    if arch != "stylegan":
        compiled = training.compile_train_step(generator, discriminator, g_optimizer, d_optimizer, batch_size, jit)
        return (lambda index, real, latents: compiled(real, latents)), generator, discriminator
    generator_ema = modelscript.build_generator(arch, size)
    generator_ema.set_weights(generator.get_weights())
    plain, with_r1 = training.compile_stylegan_steps(
        generator, generator_ema, discriminator, g_optimizer, d_optimizer, keras.random.SeedGenerator(0), batch_size,
        config.resolved_r1_gamma / 2 * config.r1_every, jit)
    augment_p, ema_beta = tf.constant(0.2), tf.constant(0.999)

    def step(index, real, latents):
        compiled = with_r1 if index % config.r1_every == 0 else plain
        return compiled(real, latents, augment_p, ema_beta)

    return step, generator, discriminator


def time_config(arch: str, size: int, batch_size: int, jit: bool, steps: int, repeats: int,
                warmup: int) -> tuple[float, int, int]:
    """Median images/s, and forward and step FLOPs per image."""
    step, generator, discriminator = build_step(arch, size, batch_size, jit)
    forward = modelscript.forward_flops(generator) + 2 * modelscript.forward_flops(discriminator)
    step_flops = modelscript.train_step_flops(generator, discriminator)
    latent_dim = modelscript.generator_io(generator)[0]
    rng = np.random.default_rng(0)
    real = tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32))
    latents = tf.constant(rng.standard_normal((batch_size, latent_dim)).astype(np.float32))
    index = 0
    for _ in range(max(warmup, 2)):  # StyleGAN: traces both variants
        float(step(index, real, latents)["g_loss"])
        index += 1
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            metrics = step(index, real, latents)
            index += 1
        float(metrics["g_loss"])  # wait for the last step
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates), forward, step_flops


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

    device = training.describe_environment()["device"]
    peak = device_peak(device)
    print(f"device: {device}; TensorFlow {tf.__version__}; batch {args.batch_size}; "
          f"median of {args.repeats} x {args.steps} steps after {args.warmup} warm-up steps")
    print(f"{'arch':<14} {'size':>5} {'mode':<12} {'images/s':>9} {'ms/step':>8} {'fwd GFLOP':>10} "
          f"{'step GFLOP':>11} {'TFLOP/s':>8} {'% peak':>7}")
    for arch in args.archs:
        for size in args.sizes:
            for mode in args.modes:
                rate, forward, step_flops = time_config(arch, size, args.batch_size, mode == "xla", args.steps,
                                                        args.repeats, args.warmup)
                tflops = rate * step_flops / 1e12
                share = f"{100 * tflops / peak:>6.1f}%" if peak else f"{'n/a':>7}"
                print(f"{arch:<14} {size:>5} {mode:<12} {rate:>9.1f} {1000 * args.batch_size / rate:>8.0f} "
                      f"{forward / 1e9:>10.2f} {step_flops / 1e9:>11.2f} {tflops:>8.3f} {share}", flush=True)


if __name__ == "__main__":
    main()
