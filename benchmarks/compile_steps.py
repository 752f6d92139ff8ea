"""How long each compiled variant of the training step takes to trace and to compile (JAX engine).

    KERAS_BACKEND=jax python benchmarks/compile_steps.py --arch stylegan --size 256 --batch-size 32 \
        --precision mixed_bfloat16 --variants plain r1_pl
    KERAS_BACKEND=jax python benchmarks/compile_steps.py --arch stylegan --size 256 --batch-size 32 \
        --precision mixed_bfloat16 --parts            # where a slow step spends its time
    ... --layers                                      # StyleGAN: each generator layer on its own

A regularised architecture trains with several variants of its step (plain,
R1, path length, both: see oasis_gan/architectures/gan.py), each compiled once.  This
prints, per variant, the seconds to trace it (Keras code) and to compile it
(XLA), then the seconds of its first call and of each later one (the mean
of CALLS), and how many compiles those calls set off (0 when jax.jit reuses
what compiled; a step that compiles again at every call shows here).
XLA_FLAGS applies as usual; --xla_gpu_autotune_level=0 shortens a GPU
compile but leaves cuDNN's default convolution algorithms, 100 to 1,000
times slower (benchmarks/conv_speed.py), so time steps with autotuning on.
The persistent compilation cache is off, so every compile is cold.

``--layers`` times each StyleGAN synthesis layer (modulated conv, noise,
to-image, the image resize) forward and with its gradient, at its own input
shape: which of them a slow generator loses its time in.

``--together`` traces the variants, then compiles them at once, each in its
own thread (XLA compiles outside Python's lock), and prints the wall time of
that: whether compiling a run's variants side by side would shorten its
start.  On 2 CPU cores it does not (StyleGAN at 64x64, batch 4: 75.1 s at
once against 63.2 s one after another, tracing included), so training
compiles each variant at its first call.

``--parts`` times the pieces of a step instead, each jitted on its own: G
forward and G's gradient, D forward and D's gradient (at the real batch),
and the adaptive augmentation of a batch with its gradient (at p = 1, every
transform on).  Their seconds per call against the whole step's say which
piece a slow step loses its time in.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("KERAS_BACKEND", "jax")

VARIANTS = ("plain", "r1", "pl", "r1_pl")
CALLS = 3  # calls after the first, averaged for "later call s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="stylegan")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_float16", "mixed_bfloat16"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--parts", action="store_true", help="time G, D and the augmentation separately")
    parser.add_argument("--layers", action="store_true",
                        help="StyleGAN: time each generator layer (forward and gradient) at its own input shape")
    parser.add_argument("--together", action="store_true",
                        help="trace the variants, then compile them at once, in threads")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from oasis_gan.architectures import gan
    from oasis_gan import engines
    from oasis_gan.config import TrainConfig

    if engines.current().__name__ != "oasis_gan.engines.jax_engine":
        raise SystemExit("KERAS_BACKEND=jax: this times the JAX engine's compiles")
    config = TrainConfig(arch=args.arch, image_size=args.size, batch_size=args.batch_size,
                         precision=args.precision).resolved()
    started = time.perf_counter()
    gan = gan.for_config(config)
    gan.build(engines.current())
    print(f"{args.arch} {args.size}px batch {args.batch_size} {args.precision} on {jax.devices()[0].device_kind}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; built in {time.perf_counter() - started:.1f} s", flush=True)
    steps = {"plain": gan.plain_step, "r1": gan.r1_step, "pl": getattr(gan, "pl_step", None),
             "r1_pl": getattr(gan, "r1_pl_step", None)}
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (args.batch_size, args.size, args.size, 1)).astype(np.float32)
    latents = rng.standard_normal((args.batch_size, config.latent_dim)).astype(np.float32)
    scalars = np.zeros(3, np.float32)
    if args.parts:
        time_parts(gan, real, latents)
        return
    if args.layers:
        time_generator_layers(gan.generator, args.batch_size, config.latent_dim)
        return
    chosen = [steps[name] for name in args.variants if steps[name] is not None]
    if args.together:  # traced one at a time (Keras code), then compiled at once, each in its own thread
        begun = time.perf_counter()
        lowered = [step.lower(real, latents, *scalars) for step in chosen]
        with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
            list(pool.map(lambda traced: traced.compile(), lowered))
        print(f"{', '.join(args.variants)}: traced one at a time and compiled at once in "
              f"{time.perf_counter() - begun:.1f} s on {os.cpu_count()} cores", flush=True)
        return
    compiles = watch_compiles()
    print("| variant | trace s | compile s | first call s | later call s | compiles during calls |\n"
          "|---|---|---|---|---|---|", flush=True)
    for name in args.variants:
        step = steps[name]
        if step is None:
            print(f"| {name} | (not used by {args.arch}) | | | | |", flush=True)
            continue
        begun = time.perf_counter()
        lowered = step.lower(real, latents, *scalars)
        traced = time.perf_counter()
        lowered.compile()
        compiled = time.perf_counter()
        compiles.clear()
        jax.block_until_ready(step(real, latents, *scalars))
        first = time.perf_counter()
        for _ in range(CALLS):
            jax.block_until_ready(step(real, latents, *scalars))
        later = (time.perf_counter() - first) / CALLS
        print(f"| {name} | {traced - begun:.1f} | {compiled - traced:.1f} | {first - compiled:.2f} | "
              f"{later:.3f} | {len(compiles)} |", flush=True)


def watch_compiles() -> list:
    """A list that collects XLA's compile messages from now on: a step that compiles again at each call shows here."""
    import logging

    import jax

    compiles = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("Finished XLA compilation"):
                compiles.append(record.getMessage())

    logging.getLogger("jax").addHandler(Collect())
    jax.config.update("jax_log_compiles", True)
    return compiles


def time_parts(gan, real, latents) -> None:
    """Seconds to compile and per call of each piece of the step, each under its own jax.jit."""
    import jax
    import jax.numpy as jnp

    from oasis_gan import augment

    generator, discriminator = gan.generator, gan.discriminator

    def run(model, trainable, inputs):
        outputs, _ = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables], inputs,
                                          training=True)
        return outputs

    def total(outputs):
        return jnp.sum(outputs.astype(jnp.float32))

    g_values = [v.value for v in generator.trainable_variables]
    d_values = [v.value for v in discriminator.trainable_variables]
    seed = jnp.array([0, 1], dtype="uint32")  # a fixed stateless seed: the same draws every call
    parts = {
        "G forward": (lambda values: run(generator, values, latents), g_values),
        "G gradient": (jax.grad(lambda values: total(run(generator, values, latents))), g_values),
        "D forward": (lambda values: run(discriminator, values, real), d_values),
        "D gradient": (jax.grad(lambda values: total(run(discriminator, values, real))), d_values),
        "augment": (lambda images: augment.augment(images, 1.0, seed), real),
        "augment gradient": (jax.grad(lambda images: total(augment.augment(images, 1.0, seed))), real),
    }
    print("| part | compile + first call s | later call s |\n|---|---|---|", flush=True)
    for name, (function, argument) in parts.items():
        print_jitted_time(name, function, argument)


def print_jitted_time(name: str, function, *arguments) -> None:
    """A table row: ``function`` under jax.jit, its compile and first call, then the mean of CALLS more."""
    import jax

    jitted = jax.jit(function)
    begun = time.perf_counter()
    jax.block_until_ready(jitted(*arguments))
    first = time.perf_counter()
    for _ in range(CALLS):
        jax.block_until_ready(jitted(*arguments))
    print(f"| {name} | {first - begun:.1f} | {(time.perf_counter() - first) / CALLS:.4f} |", flush=True)


def time_generator_layers(generator, batch_size: int, latent_dim: int) -> None:
    """StyleGAN: seconds per call of each synthesis layer's forward pass and gradient, at its input shape."""
    import jax
    import jax.numpy as jnp
    from keras import ops

    rng = np.random.default_rng(0)
    style = jnp.asarray(rng.standard_normal((batch_size, latent_dim)), jnp.float32)

    def layer_parts(name, layer, shape, with_style):
        values = [v.value for v in layer.trainable_variables]
        fixed = [v.value for v in layer.non_trainable_variables]
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)

        def forward(values, x):
            if with_style:  # a modulated conv: no training flag
                outputs, _ = layer.stateless_call(values, fixed, [x, style])
            else:
                outputs, _ = layer.stateless_call(values, fixed, x, training=True)
            return jnp.sum(outputs.astype(jnp.float32))

        print_jitted_time(f"{name} forward {shape[1]}x{shape[2]}x{shape[3]}", forward, values, x)
        print_jitted_time(f"{name} gradient", jax.grad(forward, argnums=(0, 1)), values, x)

    print("| layer | compile + first call s | later call s |\n|---|---|---|", flush=True)
    shape = (batch_size, 4, 4, int(generator.constant.shape[-1]))
    convs = iter(zip(generator.convs, generator.noises))
    for resolution, to_image in zip(generator.resolutions, generator.to_images):
        for _ in range(1 if resolution == 4 else 2):
            conv, noise = next(convs)
            layer_parts(conv.name, conv, shape, True)
            shape = tuple(conv.compute_output_shape((shape, style.shape)))
            layer_parts(noise.name, noise, shape, False)
        layer_parts(to_image.name, to_image, shape, True)
        if resolution > 4:
            image = jnp.asarray(rng.standard_normal((batch_size, resolution // 2, resolution // 2, 1)), jnp.float32)
            resize = lambda image, size=resolution: jnp.sum(  # noqa: E731
                ops.image.resize(image, (size, size), interpolation="bilinear").astype(jnp.float32))
            print_jitted_time(f"image resize to {resolution}", resize, image)
            print_jitted_time("image resize gradient", jax.grad(resize), image)


if __name__ == "__main__":
    main()
