"""Measures beyond the SSIM search (metrics.py at the top): the look of samples, FID and KID."""
