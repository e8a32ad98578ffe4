from __future__ import annotations

import math

import pytest

from harness.config.variants import Variant
from harness.training.schedules import alpha_ramp, alpha_scale, lr_at, temperature_at


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


def test_the_learning_rate_steps_down_as_the_auxiliary_models_authors_decay_it():
    """Adam 3e-4, x0.75 every 200 epochs, never below 3e-5 (Maaløe et al.'s code)."""
    v = Variant(lr=3e-4, lr_decay=0.75, lr_decay_every=200, lr_min=3e-5)
    assert lr_at(v, 0) == lr_at(v, 199) == 3e-4
    assert lr_at(v, 200) == pytest.approx(2.25e-4) and lr_at(v, 400) == pytest.approx(1.6875e-4)
    assert lr_at(v, 10**5) == 3e-5  # the floor
    assert lr_at(Variant(lr=1e-3), 10**5) == 1e-3  # no schedule


def test_the_trainer_sets_each_epochs_learning_rate_and_clips_before_each_update(generated):
    import torch

    from harness.training.step import check_schedule_and_clipping, clip_gradients
    from harness.training.trainer import Trainer

    v = Variant(lr=1e-3, lr_decay=0.5, lr_decay_every=1, epochs=2, validation=200)
    trainer = Trainer(v, generated, "cpu", max_steps=2, progress=False)
    trainer.run_epoch()
    assert trainer.stepper.optimizer.param_groups[0]["lr"] == 1e-3
    trainer.run_epoch()
    assert trainer.stepper.optimizer.param_groups[0]["lr"] == 5e-4

    clipped = Variant(clip_norm=0.5, clip_value=0.01)
    weights = torch.nn.Parameter(torch.ones(4))
    weights.grad = torch.tensor([3.0, -4.0, 0.0, 0.0])  # norm 5
    optimizer = torch.optim.Adam([weights])
    clip_gradients(optimizer, clipped)
    assert weights.grad.abs().max() <= 0.01  # the norm to 0.5, then each element to 0.01
    with pytest.raises(ValueError, match="CUDA graphs replay one captured update"):
        check_schedule_and_clipping(v, stacked=False, cuda_graphs=True)
    with pytest.raises(ValueError, match="run the seeds apart"):
        check_schedule_and_clipping(clipped, stacked=True, cuda_graphs=False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"lr_decay": 0.0}, "lr_decay must be in (0, 1]"), ({"lr_min": 1.0}, "is above lr")],
)
def test_a_schedule_that_cannot_be_is_refused(changes, message):
    from harness.config.variants import VariantError

    with pytest.raises(VariantError, match=None) as err:
        Variant(**changes)
    assert message in str(err.value)


def test_dynamic_binarisation_draws_binary_pixels_with_the_images_means(generated):
    import torch

    from harness.config.variants import VariantError
    from harness.training.step import draw_rows
    from harness.training.trainer import Trainer

    x = torch.full((4000, 3), 0.25)
    drawn = draw_rows(x, None, (torch.arange(4000),), torch.Generator().manual_seed(0), True)
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    assert abs(drawn.mean().item() - 0.25) < 0.02
    trainer = Trainer(Variant(binarize=True), generated, "cpu", max_steps=2, progress=False)
    (report,) = trainer.run_epoch()
    assert report.losses["loss"] > 0
    with pytest.raises(VariantError, match="needs pixels and a Bernoulli likelihood"):
        Variant(binarize=True, likelihood="gaussian")
