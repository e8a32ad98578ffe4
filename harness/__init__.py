"""m2-harness: a benchmarking and ablation harness for the M2 semi-supervised VAE."""

from harness.config import zoo  # noqa: F401  (registers the built-in variants, as timm's models do)
