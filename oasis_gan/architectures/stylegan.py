"""StyleGAN2-style generator and residual discriminator (``arch="stylegan"``).

Conventions, as in modelscript.py: latent vectors ``(B, latent_dim)``
standard normal; images channels-last ``(B, S, S, 1)`` in [-1, 1]; the
discriminator returns logits ``(B, 1)`` (real = 1, fake = 0).  Everything is
written with ``keras`` layers and ``keras.ops``, so it runs under any Keras 3
backend.

Generator (Karras et al. 2020, "StyleGAN2", with its skip outputs):

* mapping network: pixel-normalised z through ``MAPPING_LAYERS`` dense layers
  with equalised learning rate (and a 100x lower rate, as in the paper) to a
  style vector w of the latent's width;
* synthesis network: a learned constant 4x4 input, then two 3x3 modulated /
  demodulated convolutions per resolution (bilinear 2x upsampling before the
  first), each followed by per-pixel noise with a learned per-channel scale,
  a bias and LeakyReLU; a 1x1 "to image" layer at every resolution whose
  outputs are upsampled and summed, then squashed by tanh into [-1, 1];
* ``w_avg``: running mean of w, the centre that truncation (psi) pulls
  towards; style mixing during training swaps in a second latent's styles
  from a random layer on (probability ``mixing_probability``);
* ``path_lengths``: how far the image moves for a random unit step in w,
  which StyleGAN2's path-length regulariser keeps the same for every w
  (objectives.path_length_penalty).

Noise is fresh on every call when ``training=True`` and a fixed per-layer
image otherwise, so a latent vector always gives the same sample.

Discriminator: residual blocks (two 3x3 convs, average-pool downsampling, a
1x1 skip, summed with 1/sqrt(2)), minibatch standard deviation at 4x4, then
a 3x3 conv and two dense layers.  Equalised learning rate throughout.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

MAPPING_LAYERS = 4  # StyleGAN2 uses 8; its ADA paper used 2 for small data sets. Slices are one narrow domain.
MAPPING_LR_MULTIPLIER = 0.01  # the mapping network learns 100x slower (StyleGAN)
MIXING_PROBABILITY = 0.9  # style mixing regularisation (StyleGAN2 default)
W_AVG_BETA = 0.995  # running mean of w for truncation
# Path-length regularisation (StyleGAN2): every PL_EVERY-th generator step, on half the batch
# (PL_BATCH_SHRINK), against a running mean of the lengths with this decay per regularised step.
PL_EVERY = 4
PL_BATCH_SHRINK = 2
PL_DECAY = 0.01
LEAK = 0.2
ACTIVATION_GAIN = math.sqrt(2.0)  # keeps activations at unit variance after LeakyReLU
MBSTD_GROUP = 4  # minibatch standard deviation over groups of 4 images


def channels_at(resolution: int, image_size: int) -> int:
    """Feature maps at one resolution: StyleGAN2's min(max, base / resolution) rule.

    128 and 256 use base 2**13 with at most 256 maps (a GPU budget); 32 and 64
    use base 2**12 with at most 128, which keeps 64x64 training at a few
    images per second on two CPU cores.
    """
    base, most = (2**13, 256) if image_size >= 128 else (2**12, 128)
    return max(16, min(most, base // resolution))


def _unit_normal(shape, dtype=None):
    """N(0, 1) weights: equalised learning rate applies the He scale at run time."""
    return keras.random.normal(shape, dtype=dtype)


def _lrelu(x):
    return ops.leaky_relu(x, LEAK) * ACTIVATION_GAIN


# ------------------------------------------------------------------- layers


class EqualizedDense(layers.Layer):
    """Dense layer whose weights are scaled at run time by 1/sqrt(fan_in) (equalised learning rate)."""

    def __init__(self, units: int, lr_multiplier: float = 1.0, bias_init: float = 0.0, activate: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.units, self.lr_multiplier, self.bias_init, self.activate = units, lr_multiplier, bias_init, activate

    def build(self, input_shape):
        fan_in = input_shape[-1]
        self.kernel = self.add_weight(
            shape=(fan_in, self.units), name="kernel",
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.lr_multiplier))
        self.bias = self.add_weight(
            shape=(self.units,), name="bias",
            initializer=keras.initializers.Constant(self.bias_init / self.lr_multiplier))
        self.scale = self.lr_multiplier / math.sqrt(fan_in)

    def call(self, x):
        x = ops.matmul(x, self.kernel * self.scale) + self.bias * self.lr_multiplier
        return _lrelu(x) if self.activate else x

    def forward_flops(self) -> int:
        return 2 * int(self.kernel.shape[0]) * self.units

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)


class EqualizedConv2D(layers.Layer):
    """Conv (stride 1, same padding) with equalised learning rate; optional 2x average-pool after it."""

    def __init__(self, filters: int, kernel_size: int = 3, use_bias: bool = True, activate: bool = True,
                 downsample: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size
        self.use_bias, self.activate, self.downsample = use_bias, activate, downsample

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(shape=(self.kernel_size, self.kernel_size, channels, self.filters),
                                      initializer=_unit_normal, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias") if self.use_bias else None
        self.scale = 1.0 / math.sqrt(channels * self.kernel_size**2)
        self._spatial = input_shape[1:3]

    def call(self, x):
        x = ops.conv(x, self.kernel * self.scale, padding="same")
        if self.bias is not None:
            x = x + self.bias
        if self.activate:
            x = _lrelu(x)
        if self.downsample:
            x = ops.average_pool(x, 2, strides=2, padding="valid")
        return x

    def forward_flops(self) -> int:
        height, width = self._spatial
        return 2 * height * width * int(math.prod(self.kernel.shape))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.downsample:
            height, width = (None if height is None else height // 2), (None if width is None else width // 2)
        return (batch, height, width, self.filters)


class ModulatedConv2D(layers.Layer):
    """StyleGAN2's modulated convolution: per-image input scales from w, demodulated outputs.

    Computed as scale inputs -> shared conv -> scale outputs, which equals
    convolving with the per-image weights ``w_ij * s_i * d_j`` but needs no
    grouped convolution.  ``demodulate=False`` is the "to image" layer.
    """

    def __init__(self, filters: int, kernel_size: int = 3, demodulate: bool = True, upsample: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.demodulate, self.upsample = filters, kernel_size, demodulate, upsample

    def build(self, input_shape):
        image_shape, style_shape = input_shape
        channels = image_shape[-1]
        self.affine = EqualizedDense(channels, bias_init=1.0, name="affine")  # styles start at 1
        self.affine.build(style_shape)
        self.kernel = self.add_weight(shape=(self.kernel_size, self.kernel_size, channels, self.filters),
                                      initializer=_unit_normal, name="kernel")
        self.scale = 1.0 / math.sqrt(channels * self.kernel_size**2)
        height, width = image_shape[1:3]
        self._spatial = (height * 2, width * 2) if self.upsample else (height, width)

    def call(self, inputs):
        x, w = inputs
        styles = self.affine(w)  # (B, C_in)
        if self.upsample:
            height, width = self._spatial
            x = ops.image.resize(x, (height, width), interpolation="bilinear")
        weight = self.kernel * self.scale
        x = ops.conv(x * styles[:, None, None, :], weight, padding="same")
        if self.demodulate:
            # d_j = 1 / sqrt(sum_i,k (w_ijk s_i)^2): every output map back to unit variance.
            energy = ops.matmul(ops.square(styles), ops.sum(ops.square(weight), axis=(0, 1)))  # (B, C_out)
            x = x * ops.rsqrt(energy + 1e-8)[:, None, None, :]
        return x

    def forward_flops(self) -> int:
        height, width = self._spatial
        return 2 * height * width * int(math.prod(self.kernel.shape)) + self.affine.forward_flops()

    def compute_output_shape(self, input_shape):
        batch = input_shape[0][0]
        return (batch, *self._spatial, self.filters)


class NoiseBiasActivation(layers.Layer):
    """Adds per-pixel noise (learned per-channel scale, starting at 0), a bias, then LeakyReLU.

    ``training=True`` draws fresh noise; otherwise a fixed noise image (a
    non-trainable weight) is used, so sampling is deterministic.
    """

    def __init__(self, activate: bool = True, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.activate = activate
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        self.noise_scale = self.add_weight(shape=(channels,), initializer="zeros", name="noise_scale")
        self.fixed_noise = self.add_weight(shape=(height, width, 1), initializer=_unit_normal,
                                           trainable=False, name="fixed_noise")
        self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")

    def call(self, x, training=False):
        if training:
            shape = ops.shape(x)
            noise = keras.random.normal((shape[0], shape[1], shape[2], 1), dtype=x.dtype, seed=self.seed_generator)
        else:
            noise = self.fixed_noise[None]
        x = x + noise * self.noise_scale + self.bias
        return _lrelu(x) if self.activate else x

    def compute_output_shape(self, input_shape):
        return input_shape


class MinibatchStddev(layers.Layer):
    """Appends one feature map: the mean standard deviation over groups of images (StyleGAN).

    A generator that makes the same image again and again has a low value
    here, so the discriminator can see a collapse.
    """

    def call(self, x):
        batch = x.shape[0]
        group = math.gcd(MBSTD_GROUP, batch) if batch else 1
        shape = ops.shape(x)
        grouped = ops.reshape(x, (group, -1, shape[1], shape[2], shape[3]))  # image b is in group b % n
        deviation = ops.sqrt(ops.var(grouped, axis=0) + 1e-8)  # (B / group, H, W, C)
        statistic = ops.mean(deviation, axis=(1, 2, 3), keepdims=True)  # (B / group, 1, 1, 1)
        statistic = ops.tile(statistic, (group, shape[1], shape[2], 1))  # back to (B, H, W, 1)
        return ops.concatenate([x, statistic], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)


# ---------------------------------------------------------------- generator


class StyleGenerator(keras.Model):
    """Mapping network + synthesis network.  ``generator(z)`` -> images; see ``map`` and ``synthesize``."""

    def __init__(self, image_size: int, latent_dim: int, mapping_layers: int = MAPPING_LAYERS,
                 mixing_probability: float = MIXING_PROBABILITY, **kwargs):
        super().__init__(name=kwargs.pop("name", f"stylegan_generator_{image_size}"), **kwargs)
        self.image_size, self.latent_dim = image_size, latent_dim
        self.mixing_probability = mixing_probability
        self.resolutions = [2**k for k in range(2, int(math.log2(image_size)) + 1)]
        self.mapping = [
            EqualizedDense(latent_dim, lr_multiplier=MAPPING_LR_MULTIPLIER, activate=True, name=f"mapping{index}")
            for index in range(mapping_layers)
        ]
        self.convs, self.noises, self.to_images, self.to_image_biases = [], [], [], []
        for resolution in self.resolutions:
            filters = channels_at(resolution, image_size)
            for index in range(1 if resolution == 4 else 2):
                self.convs.append(ModulatedConv2D(filters, 3, upsample=index == 0 and resolution > 4,
                                                  name=f"conv{resolution}_{index}"))
                self.noises.append(NoiseBiasActivation(name=f"noise{resolution}_{index}"))
            self.to_images.append(ModulatedConv2D(1, 1, demodulate=False, name=f"to_image{resolution}"))
        # One style per conv, and the last to-image layer's after them (each
        # to-image layer shares its style with the next resolution's first conv).
        self.num_ws = len(self.convs) + 1
        self.output_gain = 1.0 / math.sqrt(len(self.resolutions))
        self.mixing_seed = keras.random.SeedGenerator(None)

    def build(self, input_shape):
        start = channels_at(4, self.image_size)
        self.constant = self.add_weight(shape=(4, 4, start), initializer=_unit_normal, name="constant")
        self.w_avg = self.add_weight(shape=(self.latent_dim,), initializer="zeros", trainable=False, name="w_avg")
        self.image_bias = self.add_weight(shape=(1,), initializer="zeros", name="image_bias")
        style_shape = (None, self.latent_dim)
        shape = (None, self.latent_dim)
        for layer in self.mapping:
            layer.build(shape)
        shape = (None, 4, 4, start)
        convs = iter(zip(self.convs, self.noises))
        for resolution, to_image in zip(self.resolutions, self.to_images):
            for _ in range(1 if resolution == 4 else 2):
                conv, noise = next(convs)
                conv.build((shape, style_shape))
                shape = conv.compute_output_shape((shape, style_shape))
                noise.build(shape)
            to_image.build((shape, style_shape))
        self.built = True

    # --- the two halves

    def map(self, latent_vectors, truncation_psi: float = 1.0, training: bool = False):
        """Latent vectors ``(B, latent_dim)`` -> style vectors w ``(B, latent_dim)``.

        In training the running mean ``w_avg`` is updated; ``truncation_psi``
        < 1 pulls w towards it (psi = 0 gives the "average" image).
        """
        x = latent_vectors * ops.rsqrt(ops.mean(ops.square(latent_vectors), axis=1, keepdims=True) + 1e-8)
        for layer in self.mapping:
            x = layer(x)
        if training:
            batch_mean = ops.cast(ops.mean(x, axis=0), "float32")  # the running mean is kept in float32
            self.w_avg.assign(batch_mean + (ops.cast(self.w_avg, "float32") - batch_mean) * W_AVG_BETA)
        if truncation_psi != 1.0:
            w_avg = ops.cast(self.w_avg, x.dtype)  # (a bfloat16 x: outside a call, variables are not cast for us)
            x = w_avg + (x - w_avg) * truncation_psi
        return x

    def synthesize(self, ws, training: bool = False):
        """Per-layer styles ``(B, num_ws, latent_dim)`` -> images ``(B, S, S, 1)`` in [-1, 1].

        Called by itself (a latent walk, a style-mixing grid) as well as from ``call``: under mixed
        precision only a call casts the variables to the compute dtype, so this casts its own.
        """
        x = ops.tile(ops.cast(self.constant, self.compute_dtype)[None], (ops.shape(ws)[0], 1, 1, 1))
        image = None
        convs = iter(enumerate(zip(self.convs, self.noises)))
        for resolution, to_image in zip(self.resolutions, self.to_images):
            for _ in range(1 if resolution == 4 else 2):
                index, (conv, noise) = next(convs)
                x = noise(conv([x, ws[:, index]]), training=training)
            skip = to_image([x, ws[:, index + 1]])
            if image is not None:
                image = ops.image.resize(image, (resolution, resolution), interpolation="bilinear")
            image = skip if image is None else image + skip
        # The summed outputs of all resolutions would start with a std of ~1.6,
        # deep in tanh's flat tails; this gain starts them near 0.6.
        return ops.tanh(image * self.output_gain + ops.cast(self.image_bias, image.dtype))

    def broadcast(self, w):
        """One style vector per layer: ``(B, D)`` -> ``(B, num_ws, D)``."""
        return ops.repeat(w[:, None, :], self.num_ws, axis=1)

    def mix(self, w_first, w_second, crossover):
        """Styles of ``w_first`` for layers before ``crossover`` (an int or scalar tensor), of ``w_second`` from it on."""
        keep = (ops.arange(self.num_ws) < crossover)[None, :, None]
        return ops.where(keep, self.broadcast(w_first), self.broadcast(w_second))

    def styles(self, latent_vectors, training=False, truncation_psi: float = 1.0):
        """Latent vectors -> per-layer styles ``(B, num_ws, latent_dim)``, style-mixed in training."""
        w = self.map(latent_vectors, truncation_psi, training=training)
        if training and self.mixing_probability > 0:
            # Style mixing: from a random layer on, use a second latent's styles.
            second = self.map(keras.random.normal(ops.shape(latent_vectors), seed=self.mixing_seed))
            crossover = keras.random.randint((), 1, self.num_ws, seed=self.mixing_seed)
            mixing = keras.random.uniform((), seed=self.mixing_seed) < self.mixing_probability
            return self.mix(w, second, ops.where(mixing, crossover, self.num_ws))
        return self.broadcast(w)

    def call(self, latent_vectors, training=False, truncation_psi: float = 1.0):
        return self.synthesize(self.styles(latent_vectors, training, truncation_psi), training=training)

    def path_lengths(self, latent_vectors, input_gradient):
        """``|J_w^T y|`` per image ``(B,)`` float32: y is image-space noise of unit expected norm,
        J the Jacobian of the (training-mode) image with respect to its styles w.

        ``input_gradient(fn, x)`` is the engine's differentiable input gradient (tensorflow_engine / jax_engine).
        """
        ws = self.styles(latent_vectors, training=True)
        size = self.image_size
        noise = keras.random.normal((ops.shape(ws)[0], size, size, 1), seed=self.mixing_seed) / size

        def weighted_image(styles):
            return ops.cast(self.synthesize(styles, training=True), "float32") * noise

        _, gradients = input_gradient(weighted_image, ws)
        gradients = ops.cast(gradients, "float32")
        return ops.sqrt(ops.mean(ops.sum(ops.square(gradients), axis=2), axis=1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 1)

    def forward_flops(self) -> int:
        parts = [*self.mapping, *self.convs, *self.to_images]
        return sum(layer.forward_flops() for layer in parts)


def build_generator(image_size: int, latent_dim: int) -> StyleGenerator:
    generator = StyleGenerator(image_size, latent_dim)
    generator.build((None, latent_dim))
    return generator


# ------------------------------------------------------------ discriminator


def build_discriminator(image_size: int) -> keras.Model:
    """Residual discriminator: ``(B, S, S, 1)`` -> ``(B, 1)`` logits."""
    images = keras.Input((image_size, image_size, 1), name="images")
    x = EqualizedConv2D(channels_at(image_size, image_size), 1, name="from_image")(images)
    resolution = image_size
    while resolution > 4:
        filters = channels_at(resolution, image_size)
        down_filters = channels_at(resolution // 2, image_size)
        skip = EqualizedConv2D(down_filters, 1, use_bias=False, activate=False, downsample=True,
                               name=f"skip{resolution}")(x)
        x = EqualizedConv2D(filters, 3, name=f"conv{resolution}_0")(x)
        x = EqualizedConv2D(down_filters, 3, downsample=True, name=f"conv{resolution}_1")(x)
        x = layers.Add(name=f"residual{resolution}")([x, skip])
        x = layers.Rescaling(1.0 / math.sqrt(2.0), name=f"residual{resolution}_scale")(x)
        resolution //= 2
    x = MinibatchStddev(name="minibatch_stddev")(x)
    x = EqualizedConv2D(channels_at(4, image_size), 3, name="conv4")(x)
    x = layers.Flatten()(x)
    x = EqualizedDense(channels_at(4, image_size), activate=True, name="dense")(x)
    logits = EqualizedDense(1, name="logit", dtype="float32")(x)
    return keras.Model(images, logits, name=f"stylegan_discriminator_{image_size}")


# ---------------------------------------------------------------- exploring


def styles_through(resolution: int) -> int:
    """How many styles (from the first) drive the layers up to ``resolution``: a crossover for ``mix``."""
    return 1 + 2 * (int(math.log2(resolution)) - 2)


def style_mixing_grid(generator: StyleGenerator, coarse_latents, fine_latents, crossover: int):
    """Images for every pair: row i takes the styles of ``coarse_latents[i]`` before ``crossover``
    (overall shape at low resolutions), column j those of ``fine_latents[j]`` from it on (detail, contrast).

    Returns ``(rows + 1) * (columns + 1)`` images in row-major order for an image grid: the top row
    shows the fine sources, the first column the coarse sources, the top-left corner is black.
    """
    coarse_w, fine_w = generator.map(coarse_latents), generator.map(fine_latents)
    rows, columns = coarse_w.shape[0], fine_w.shape[0]

    def images(styles):  # float32 whatever the generator computes in
        return ops.cast(generator.synthesize(styles), "float32")

    grid = [-ops.ones((1, generator.image_size, generator.image_size, 1)), images(generator.broadcast(fine_w))]
    for row in range(rows):
        repeated = ops.repeat(coarse_w[row : row + 1], columns, axis=0)
        grid.append(images(generator.broadcast(coarse_w[row : row + 1])))
        grid.append(images(generator.mix(repeated, fine_w, crossover)))
    return ops.convert_to_numpy(ops.concatenate(grid, axis=0))
