"""Seconds and TFLOP/s of one 3x3 stride-1 convolution at StyleGAN's shapes (JAX), by dtype and layout.

    KERAS_BACKEND=jax python benchmarks/conv_speed.py
    XLA_FLAGS=--xla_gpu_autotune_level=0 KERAS_BACKEND=jax python benchmarks/conv_speed.py

StyleGAN's generator and discriminator are stacks of these; if one runs far
under the device's rate, this says whether the dtype, the layout (NHWC as
Keras uses, or NCHW) or the path (jax.lax directly, or keras.ops.conv) is
the cause.  Each row: the forward pass, and the gradient with respect to the
input and the kernel (what a training step runs), timed over CALLS calls
after a first that compiles.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

CALLS = 5
SHAPES = ((32, 256, 256), (128, 64, 64), (256, 32, 32))  # (size, channels in, channels out) at batch BATCH
BATCH = 32


def main() -> None:
    import jax
    import jax.numpy as jnp
    from keras import ops

    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| shape | dtype | path | forward ms | forward TFLOP/s | gradient ms | gradient TFLOP/s |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    paths = {
        "lax NHWC": lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                              dimension_numbers=("NHWC", "HWIO", "NHWC")),
        "lax NCHW": lambda x, k: jax.lax.conv_general_dilated(x.transpose(0, 3, 1, 2), k, (1, 1), "SAME",
                                                              dimension_numbers=("NCHW", "HWIO", "NCHW")),
        "keras.ops.conv": lambda x, k: ops.conv(x, k, padding="same"),
    }
    for size, channels_in, channels_out in SHAPES:
        flops = 2 * BATCH * size * size * 9 * channels_in * channels_out
        for dtype in (jnp.float32, jnp.bfloat16):
            key = jax.random.PRNGKey(0)
            x = jax.random.normal(key, (BATCH, size, size, channels_in), dtype)
            k = jax.random.normal(key, (3, 3, channels_in, channels_out), dtype)
            for name, conv in paths.items():
                forward = jax.jit(lambda x, k, conv=conv: jnp.sum(conv(x, k).astype(jnp.float32)))
                gradient = jax.jit(jax.grad(forward, argnums=(0, 1)))
                seconds = [per_call(function, x, k) for function in (forward, gradient)]
                print(f"| {BATCH}x{size}x{size}x{channels_in}->{channels_out} | {jnp.dtype(dtype).name} | {name} | "
                      f"{1000 * seconds[0]:.2f} | {flops / seconds[0] / 1e12:.1f} | {1000 * seconds[1]:.2f} | "
                      f"{2 * flops / seconds[1] / 1e12:.1f} |", flush=True)


def per_call(function, *arguments) -> float:
    import jax

    jax.block_until_ready(function(*arguments))
    begun = time.perf_counter()
    for _ in range(CALLS):
        jax.block_until_ready(function(*arguments))
    return (time.perf_counter() - begun) / CALLS


if __name__ == "__main__":
    main()
