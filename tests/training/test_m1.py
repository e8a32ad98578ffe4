"""M1+M2's parts on generated data: the Gaussian likelihood, M1 and its stop rule and resume,
the features M2 reads (drawn afresh in training, the means at test), and M2 learning on them."""

from __future__ import annotations

import math

import pytest
import torch

from harness.config.m1 import m1_settings
from harness.config.variants import create_variant
from harness.training.data import Splits
from harness.training.distributions import bernoulli_log_prob, decoder_log_prob, gaussian_log_prob
from harness.training.features import feature_splits, posterior_moments, used_dimensions
from harness.training.m1 import M1Training, m1_outcome
from harness.training.step import draw_rows
from harness.training.trainer import Trainer

SMALL_M1 = {"m1_hidden": 32, "m1_z_dim": 8, "m1_batch_size": 100, "validation": 200}


def small_m1(epochs: int = 2, patience: int = 0, **more):
    variant = create_variant(
        "m1m2", {**SMALL_M1, "m1_epochs": epochs, "m1_patience": patience, **more}
    )
    return m1_settings(variant)


def test_the_gaussian_log_likelihood_is_torch_distributions_normal():
    g = torch.Generator().manual_seed(0)
    loc, logvar, x = (torch.randn(4, 7, 13, generator=g, dtype=torch.float64) for _ in range(3))
    expected = torch.distributions.Normal(loc, (0.5 * logvar).exp()).log_prob(x).sum(-1)
    assert torch.allclose(gaussian_log_prob(loc, logvar, x), expected, rtol=1e-12)
    # the decoder's output: the means, then the log-variances
    out = torch.cat([loc, logvar], dim=-1)
    assert torch.equal(decoder_log_prob("gaussian", out, x), gaussian_log_prob(loc, logvar, x))
    assert torch.equal(decoder_log_prob("bernoulli", loc, x), bernoulli_log_prob(loc, x))


def test_features_are_drawn_afresh_in_training_and_are_the_means_at_test(generated):
    settings = small_m1()
    training = M1Training(settings, generated.train_x, generated.val_x, torch.device("cpu"))
    training.fit()
    features = feature_splits(generated, training.model, min_std=0.0)
    test_loc, _ = posterior_moments(training.model, generated.test_x)
    assert torch.equal(features.test_x, test_loc)  # every dimension kept at min_std 0
    assert features.train_std is not None and bool((features.train_std > 0).all())
    # training rows: a new z1 ~ q(z1|x) at every draw, centred on the mean
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(5)
    first, second = (draw_rows(features.train_x, features.train_std, (idx,), g) for _ in "ab")
    assert not torch.equal(first, second)
    many = torch.stack(
        [draw_rows(features.train_x, features.train_std, (idx,), g) for _ in range(4000)]
    )
    assert torch.allclose(many.mean(0), features.train_x[idx], atol=0.1)
    assert torch.allclose(many.std(0), features.train_std[idx], rtol=0.1)
    assert torch.equal(draw_rows(features.train_x, None, (idx,), g), features.train_x[idx])


def test_unused_latent_dimensions_are_dropped():
    loc = torch.zeros(1000, 4)
    loc[:, 0] = torch.linspace(-1, 1, 1000)  # std about 0.58: used
    loc[:, 2] = 0.05 * torch.linspace(-1, 1, 1000)  # std about 0.03: unused
    assert used_dimensions(loc, 0.1).tolist() == [0]
    assert used_dimensions(loc, 0.0).tolist() == [0, 2]


def test_m1_never_trains_on_the_validation_or_test_images(generated):
    """M1 is given the training images alone (the runner's test checks what it is given): its
    weights do not depend on the validation images, which only decide when it stops."""
    settings = small_m1(epochs=2)
    other_val = torch.rand(generated.val_x.shape, generator=torch.Generator().manual_seed(1))
    weights = []
    for val in (generated.val_x, other_val):
        training = M1Training(settings, generated.train_x, val, torch.device("cpu"))
        training.fit()
        weights.append(training.model.state_dict())
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_m1_stops_by_its_rule_on_the_validation_elbo(generated):
    settings = small_m1(epochs=200, patience=2, m1_min_delta=1000.0)  # nothing improves by 1000
    training = M1Training(settings, generated.train_x, generated.val_x, torch.device("cpu"))
    history = training.fit()
    assert len(history) == 3  # the first epoch is the best; two more without improvement
    outcome = m1_outcome(settings, history)
    assert outcome["stopped_by"] == "patience" and outcome["best_epoch"] == 1


def test_a_cut_off_m1_resumes_where_it_stopped(generated, tmp_path):
    settings = small_m1(epochs=3)
    device = torch.device("cpu")
    whole = M1Training(settings, generated.train_x, generated.val_x, device)
    whole.fit()

    class Cut(Exception):
        pass

    def cut(epoch):
        if epoch.epoch == 1:
            raise Cut

    checkpoint = tmp_path / "m1.train.pt"
    first = M1Training(settings, generated.train_x, generated.val_x, device, checkpoint)
    with pytest.raises(Cut):
        first.fit(cut)
    resumed = M1Training(settings, generated.train_x, generated.val_x, device, checkpoint)
    assert len(resumed.history) == 1
    resumed.fit()
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert [s["epochs"] for s in resumed.all_segments()] == [[1, 1], [2, 3]]
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


@pytest.fixture(scope="module")
def clear_generated():
    """Generated images whose class shows through the noise enough for a small M1 to encode it
    in a few seconds (at the default signal it learns to ignore z first)."""
    from harness.training.data import synthetic_splits

    return synthetic_splits(torch.device("cpu"), train=1200, test=200, validation=200, signal=0.9)


M1M2_SMALL = {
    **SMALL_M1,
    "m1_hidden": 64,
    "m1_batch_size": 50,
    "m1_epochs": 20,
    "m1_lr": 3e-3,
    "m1_patience": 0,
    "m1_min_std": 0.0,
    "hidden": 64,
}


@pytest.fixture(scope="module")
def m1_features(clear_generated) -> Splits:
    """The features of a small M1 trained on `clear_generated` (a few seconds)."""
    variant = create_variant("m1m2", M1M2_SMALL)
    data = clear_generated
    training = M1Training(m1_settings(variant), data.train_x, data.val_x, torch.device("cpu"))
    training.fit()
    return feature_splits(data, training.model, variant.m1_min_std)


@pytest.mark.parametrize("stacked", [False, True])
def test_m2_learns_on_m1_features_alone_and_stacked(m1_features, stacked):
    """A tiny end-to-end M1+M2 on generated data: M1 trained, its features taken, M2 (exact,
    Gaussian p(z1|y,z2)) trained on them beats chance by far, one seed alone or two stacked."""
    variant = create_variant("m1m2", {**M1M2_SMALL, "epochs": 5, "patience": 0})
    assert m1_features.train_x.shape[1] == variant.m1_z_dim
    seeds = [0, 1] if stacked else [0]
    trainer = Trainer(variant, m1_features, "cpu", progress=False, seeds=seeds)
    histories = trainer.fit()
    for history in histories:
        assert all(math.isfinite(v) for h in history for v in h.losses.values())
        assert history[-1].test_accuracy > 0.4  # chance is 0.1


@pytest.mark.parametrize("name", ["gumbel-0.5", "gumbel-st", "gumbel-anneal", "supervised-only"])
def test_every_estimator_trains_on_m1_features(m1_features, name):
    variant = create_variant(
        name, {"features": "m1", "likelihood": "gaussian", "validation": 200, "epochs": 1}
    )
    (report,) = Trainer(variant, m1_features, "cpu", max_steps=3, progress=False).run_epoch()
    assert all(math.isfinite(v) for v in report.losses.values()), report.losses
    assert report.losses["classification"] > 0


def test_m1_settings_added_later_leave_the_committed_m1s_name_at_their_defaults():
    """The M1 in results/m1 was named before binarize, weight_decay and clip existed: at their
    defaults it keeps its key (every M1+M2 record reads it by that name); set, they name another
    M1."""
    from harness.config.identity import m1_key

    default = m1_settings(create_variant("m1m2", {}))
    assert m1_key(default) == "m1-bd0ce4a89d5b"
    for change in [{"m1_binarize": False}, {"m1_weight_decay": 2e-5}, {"m1_clip": 5.0}]:
        assert m1_key(m1_settings(create_variant("m1m2", change))) != m1_key(default)


def test_m1_models_grey_levels_when_asked_and_clips_every_gradient_it_steps_on(generated):
    """binarize=False: the Bernoulli's targets are the grey levels themselves (binarize=True:
    0s and 1s drawn afresh); clip: every gradient element the optimiser steps on is within
    [-clip, clip]; weight_decay: Adam's L2 term."""
    from harness.training.m1 import targets

    g = torch.Generator().manual_seed(0)
    x = generated.train_x[:50]
    assert torch.equal(targets(x, small_m1(m1_binarize=False), g), x)
    binary = targets(x, small_m1(), g)
    assert set(binary.unique().tolist()) <= {0.0, 1.0} and not torch.equal(binary, x)

    settings = small_m1(epochs=1, m1_clip=1e-3, m1_weight_decay=2e-5, m1_binarize=False)
    training = M1Training(settings, generated.train_x, generated.val_x, torch.device("cpu"))
    assert training.optimizer.param_groups[0]["weight_decay"] == 2e-5
    largest: list[float] = []

    def record(optimizer, args, kwargs):
        largest.append(max(p.grad.abs().max().item() for p in training.model.parameters()))

    training.optimizer.register_step_pre_hook(record)
    training.fit()
    assert largest and max(largest) <= 1e-3 + 1e-9  # float32 of 1e-3
    unclipped = M1Training(
        small_m1(epochs=1), generated.train_x, generated.val_x, torch.device("cpu")
    )
    unclipped.optimizer.register_step_pre_hook(
        lambda o, a, k: largest.append(
            max(p.grad.abs().max().item() for p in unclipped.model.parameters())
        )
    )
    unclipped.fit()
    assert max(largest) > 1e-3  # the gradients the clip bounded are larger than it


def test_m1s_batch_norm_and_dropout_reach_both_its_networks_and_rest_at_evaluation():
    from harness.config.identity import m1_key
    from harness.training.m1 import M1, mean_neg_elbo

    plain = M1(small_m1(), 20)
    assert not any(isinstance(m, torch.nn.BatchNorm1d | torch.nn.Dropout) for m in plain.modules())
    settings = small_m1(m1_batch_norm=True, m1_dropout=0.5)
    model = M1(settings, 20)
    for network in (model.encoder, model.decoder):
        kinds = {type(m) for m in network.modules()}
        assert {torch.nn.BatchNorm1d, torch.nn.Dropout} <= kinds
    x = torch.rand(300, 20, generator=torch.Generator().manual_seed(0))
    model.train()
    first, second = mean_neg_elbo(model, x, settings), mean_neg_elbo(model, x, settings)
    assert first == second and model.training  # no units dropped; the mode given back
    assert m1_key(settings) != m1_key(small_m1())
    # at their defaults they leave a committed M1's key as it was (results/m1)
    assert m1_key(m1_settings(create_variant("m1m2-reimpl"))) == "m1-5241a4353c63"
