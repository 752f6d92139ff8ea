"""The architectures: one table entry each (``table``), StyleGAN2's networks, and the GAN objects (``gan``)."""
