"""The library behind driver.ipynb and the three command-line tools.

Run from the repository's folder, as the notebook, the tools and Colab do, and
``from oasis_gan import config`` works with no install step.  The map
(docs/layout.md says more):

* ``config``: ``TrainConfig``, every setting declared once; ``machine``: the
  defaults that depend on the machine (image size, precision, length), decided once.
* ``architectures/``: the table of architectures (one entry each), StyleGAN2's
  layers (the DCGANs' networks are in the top-level modelscript.py), and the
  ``GAN`` objects that hold networks, optimizers and compiled steps.
* ``engines/``: one step engine per Keras backend (TensorFlow, JAX) behind
  one declared interface, and the objectives (losses, forward passes) they compile.
* ``training``, ``bookkeeping``, ``batches``, ``augment``: the ``Trainer`` and its parts.
* ``runs/``: a run's folder, its checkpoints, and sampling from a saved run.
* ``evaluation/``: the look measures and FID/KID (the SSIM search, which the
  course names, is the top-level metrics.py).
* ``cluster``: several processes, one run; ``cli``: what the three tools share;
  ``notebook_ui``: the notebook's widgets and live view; ``plots``: figures;
  ``demo_cohort``: the demo cohort built from the MNI152 template.

Importing the package imports nothing heavy: each module loads what it needs.
"""
