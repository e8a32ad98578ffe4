from __future__ import annotations

import math

import pytest
import torch

from harness.config.variants import create_variant
from harness.training.family import get_family, predict
from harness.training.trainer import NonFiniteLossError, Trainer, scores

SEEDS = [0, 1, 2]


def _variant(name: str, **overrides):
    return create_variant(name, {"epochs": 1, **overrides})


def _stack(mnist, name="exact", seeds=SEEDS, max_steps=3, **overrides) -> Trainer:
    return Trainer(_variant(name, **overrides), mnist, "cpu", max_steps, False, seeds=seeds)


def _alone(mnist, name, seed, max_steps=3, **overrides) -> Trainer:
    variant = _variant(name, seed=seed, **overrides)
    return Trainer(variant, mnist, "cpu", max_steps=max_steps, progress=False)


def test_each_seed_starts_as_it_would_alone(mnist):
    stack = _stack(mnist).stepper
    for i, seed in enumerate(SEEDS):
        alone = _alone(mnist, "exact", seed).stepper
        assert torch.equal(stack.x_l[i], alone.x_l) and torch.equal(stack.y_l[i], alone.y_l)
        assert torch.equal(stack.x_u[i], alone.x_u)
        for name, value in alone.model.named_parameters():
            assert torch.equal(stack.params[f"model.{name}"][i], value)
    assert not torch.equal(stack.x_l[0], stack.x_l[1])  # seeds draw different labelled images


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("exact", {}),
        ("paper-exact", {"labels": 600}),
        ("tutorial-gumbel", {}),
        ("gumbel-0.5", {}),
        ("gumbel-st", {}),
        ("supervised-only", {}),
    ],
)
def test_a_stacked_step_is_each_seeds_step_alone(mnist, name, overrides):
    """Same noise for every seed (randomness="same") and the same batches: the stacked loss
    terms and gradients equal those of each seed trained alone; given the same gradients, the
    one Adam over the stack updates every seed as its own Adam does."""
    stack = _stack(mnist, name, **overrides)
    stacked = stack.stepper
    stacked.randomness = "same"
    alone = [_alone(mnist, name, seed, **overrides) for seed in SEEDS]
    idx_u = torch.stack(
        [torch.randperm(stack.stepper.n_unlabelled)[: stack.batch_size] for _ in SEEDS]
    )
    idx_l = torch.stack(
        [torch.randperm(stack.stepper.n_labelled)[: stack.labelled_batch] for _ in SEEDS]
    )

    stacked.generator.manual_seed(7)
    terms = stack.forward_backward(idx_u, idx_l)
    for i, trainer in enumerate(alone):
        trainer.stepper.generator.manual_seed(7)
        (expected,) = trainer.forward_backward(idx_u[i], idx_l[i])  # [1, terms]: one seed
        torch.testing.assert_close(terms[i], expected, rtol=1e-5, atol=1e-4)
        for pname, value in trainer.stepper.model.named_parameters():
            stacked_grad = stacked.params[f"model.{pname}"].grad
            if value.grad is None:  # a network the estimator does not use (supervised-only)
                assert stacked_grad is None
                continue
            torch.testing.assert_close(stacked_grad[i], value.grad, rtol=1e-4, atol=1e-5)
            stacked_grad[i] = value.grad  # Adam's first step is sign(g): same input, same step
        trainer.stepper.optimizer.step()
    stacked.optimizer.step()
    for i, trainer in enumerate(alone):
        for pname, value in trainer.stepper.model.named_parameters():
            torch.testing.assert_close(stacked.params[f"model.{pname}"][i], value)


def test_seeds_get_their_own_noise_and_batches(mnist):
    reports = _stack(mnist, "tutorial-gumbel").run_epoch()
    losses = [r.losses["loss"] for r in reports]
    assert len(set(losses)) == len(SEEDS)
    assert all(r.epoch == 1 and r.steps == 3 for r in reports)


def test_accuracies_are_each_seeds_own(mnist):
    stack = _stack(mnist, "supervised-only", max_steps=5)
    reports = stack.run_epoch()
    for i, seed in enumerate(SEEDS):
        model = stack.seed_model(i)
        predicted = predict(get_family("m2"), model, mnist.test_x)
        accuracy = (predicted == mnist.test_y).float().mean().item()
        assert reports[i].test_accuracy == pytest.approx(accuracy)
        single = _alone(mnist, "supervised-only", seed, max_steps=5)
        single.load_seed_states([stack.seed_state_dict(i)])
        predicted = single.stepper.predictions(mnist.test_x)
        assert scores(predicted, mnist.test_y)[0] == pytest.approx([accuracy])
        assert single.seed_history(0) == stack.seed_history(i)


def test_a_stack_resumes_from_its_seeds_checkpoints_identically(mnist, tmp_path):
    paths = [tmp_path / f"seed{seed}.pt" for seed in SEEDS]
    whole = _stack(mnist, "tutorial-gumbel", epochs=2)
    whole.fit()

    first = _stack(mnist, "tutorial-gumbel", epochs=1)
    first.fit(checkpoints=paths)
    resumed = _stack(mnist, "tutorial-gumbel", epochs=2)
    assert resumed.resume_from(paths) and resumed.epoch == 1
    resumed.fit()

    assert [r.losses for r in resumed.history[-1]] == [r.losses for r in whole.history[-1]]
    for name, value in whole.stepper.params.items():
        assert torch.equal(resumed.stepper.params[name], value)


def test_a_seeds_checkpoint_continues_that_seed_alone(mnist, tmp_path):
    paths = [tmp_path / f"seed{seed}.pt" for seed in SEEDS]
    stack = _stack(mnist)
    stack.fit(checkpoints=paths)
    alone = _alone(mnist, "exact", SEEDS[1], epochs=2)
    assert alone.resume_from([paths[1]])
    for name, value in alone.stepper.model.named_parameters():
        assert torch.equal(value, stack.stepper.params[f"model.{name}"][1])
    (report,) = alone.run_epoch()
    assert report.epoch == 2 and math.isfinite(report.losses["loss"])


def test_checkpoints_at_different_epochs_are_refused(mnist, tmp_path):
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    stack = _stack(mnist, seeds=[0, 1], epochs=1)
    stack.fit(checkpoints=paths)
    later = _alone(mnist, "exact", 1, epochs=2)
    later.resume_from([paths[1]])
    later.fit(checkpoints=[paths[1]])
    with pytest.raises(ValueError, match="different epochs"):
        _stack(mnist, seeds=[0, 1], epochs=3).resume_from(paths)
    with pytest.raises(ValueError, match="another variant"):
        _stack(mnist, seeds=[1, 0], epochs=3).resume_from(paths)


def test_a_nonfinite_loss_names_the_seed(mnist):
    stack = _stack(mnist)
    with torch.no_grad():
        stack.stepper.params["model.dec_out.bias"][2].fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"seed 2") as caught:
        stack.run_epoch()
    assert caught.value.seed == 2 and caught.value.step == 0


def test_seeds_must_be_distinct(mnist):
    with pytest.raises(ValueError, match="distinct seeds"):
        _stack(mnist, seeds=[1, 1])


def test_the_stop_rule_ends_each_stacked_seed_on_its_own(tmp_path):
    """Each seed ends at the first epoch the rule says so for its own validation errors; it
    is not logged (None) or checkpointed after that, while the others train on."""
    from harness.training.data import synthetic_splits
    from harness.training.stopping import should_stop

    hard = synthetic_splits(torch.device("cpu"), 1200, 200, validation=200, signal=0.05)
    variant = create_variant(
        "supervised-only",
        {"labels": 100, "validation": 200, "patience": 1, "min_delta": 0.0, "epochs": 8},
    )
    stack = Trainer(variant, hard, "cpu", max_steps=3, progress=False, seeds=[0, 1, 2, 3])
    seen = []
    paths = [tmp_path / f"s{i}.pt" for i in range(4)]
    stack.fit([seen.append], checkpoints=paths)
    for i in range(4):
        full = [reports[i] for reports in stack.history]
        ends = next(
            (k for k in range(1, len(full) + 1) if should_stop(full[:k], 1, 0.0)), len(full)
        )
        assert len(stack.seed_history(i)) == ends
        assert [r is None for r in (epoch[i] for epoch in seen)] == [
            k > ends for k in range(1, len(seen) + 1)
        ]
        assert torch.load(paths[i], weights_only=False)["epoch"] == ends
    ends = [len(stack.seed_history(i)) for i in range(4)]
    assert len(set(ends)) > 1  # the seeds did end at different epochs
    assert len(stack.history) == max(ends)
