"""Schedules of the Gumbel temperature and of the classification weight alpha."""

from __future__ import annotations

import math

from harness.config.variants import Variant


def temperature_at(variant: Variant, step: int) -> float:
    """Fixed tau_0, or annealed tau_t = max(tau_min, tau_0 * exp(-r * t)) with t rounded down to
    a multiple of `anneal_every` steps (Jang et al. 2017)."""
    if variant.temperature_schedule == "fixed":
        return variant.temperature
    t = step - step % variant.anneal_every
    return max(variant.temperature_min, variant.temperature * math.exp(-variant.anneal_rate * t))


def alpha_scale(
    variant: Variant, steps_per_epoch: int, labelled_batches: int, n_labelled: int, n_total: int
) -> float:
    """The full classification weight before any warm-up.

    none: alpha itself; tutorial: alpha * (unlabelled + labelled batches) / labelled batches,
    as the Pixyz tutorial; paper: alpha * n_total / n_labelled (Kingma et al.'s alpha = 0.1 N).
    """
    if variant.alpha_scaling == "tutorial":
        return variant.alpha * (steps_per_epoch + labelled_batches) / labelled_batches
    if variant.alpha_scaling == "paper":
        return variant.alpha * n_total / n_labelled
    return variant.alpha


def alpha_ramp(variant: Variant, step: int, steps_per_epoch: int) -> float:
    """Fraction of the full weight at `step`: 1 (constant), or a linear or cosine ramp from 0
    to 1 over `alpha_warmup_epochs` epochs."""
    warmup = variant.alpha_warmup_epochs * steps_per_epoch
    if variant.alpha_schedule == "constant" or warmup <= 0:
        return 1.0
    progress = min(1.0, (step + 1) / warmup)
    if variant.alpha_schedule == "linear":
        return progress
    return 0.5 * (1.0 - math.cos(math.pi * progress))


def lr_at(variant: Variant, epochs_done: int) -> float:
    """The learning rate of the epoch after `epochs_done`: lr * lr_decay ** (epochs_done //
    lr_decay_every), never below lr_min; lr itself without a schedule (lr_decay_every 0)."""
    if not variant.lr_decay_every:
        return variant.lr
    decays = epochs_done // variant.lr_decay_every
    return max(variant.lr_min, variant.lr * variant.lr_decay**decays)
