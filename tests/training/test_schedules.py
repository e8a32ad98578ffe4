from __future__ import annotations

import math

import pytest

from harness.config.variants import Variant
from harness.training.schedules import alpha_ramp, alpha_scale, temperature_at


def test_fixed_temperature():
    assert temperature_at(Variant(temperature=0.3), 10_000) == 0.3


def test_annealed_temperature_follows_jang_et_al():
    v = Variant(
        temperature=1.0,
        temperature_schedule="anneal",
        temperature_min=0.5,
        anneal_rate=3e-5,
        anneal_every=2000,
    )
    assert temperature_at(v, 0) == 1.0
    assert temperature_at(v, 1999) == 1.0  # held between updates
    assert temperature_at(v, 2000) == pytest.approx(math.exp(-3e-5 * 2000))
    assert temperature_at(v, 10**7) == 0.5  # floor


def test_alpha_scalings():
    # the tutorial's rate: (unlabelled batches + labelled batches) / labelled batches
    assert alpha_scale(Variant(alpha_scaling="tutorial"), 468, 1, 100, 60_000) == 469
    # the paper's alpha = 0.1 * N: 0.1 * n_total / n_labelled
    assert alpha_scale(Variant(alpha=0.1, alpha_scaling="paper"), 100, 100, 100, 50_000) == 50
    assert alpha_scale(Variant(alpha=2.5, alpha_scaling="none"), 100, 1, 100, 50_000) == 2.5


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alpha_warmup_ramps_from_zero_to_one(schedule):
    v = Variant(alpha_schedule=schedule, alpha_warmup_epochs=2.0)
    ramp = [alpha_ramp(v, step, steps_per_epoch=10) for step in range(30)]
    assert ramp[0] < 0.1 and ramp[19] == 1.0 and ramp[29] == 1.0
    assert ramp == sorted(ramp)
    assert alpha_ramp(Variant(), 0, 10) == 1.0
