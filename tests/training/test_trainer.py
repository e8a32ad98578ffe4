from __future__ import annotations

import pytest
import torch

from harness.config.variants import create_variant
from harness.training.trainer import NonFiniteLossError, Trainer, resolve_device


def _trainer(mnist, name="exact", max_steps=5, precision="fp32", compile=False, **overrides):
    variant = create_variant(name, {"epochs": 1, **overrides})
    return Trainer(
        variant,
        mnist,
        "cpu",
        max_steps=max_steps,
        progress=False,
        precision=precision,
        compile=compile,
    )


def test_labelled_and_unlabelled_sets_split_the_training_images(mnist):
    t = _trainer(mnist, labels=100)
    assert len(t.stepper.x_l) == 100 and len(t.stepper.x_u) == 59_900
    assert t.labelled_batch == 100
    assert t.full_steps_per_epoch == 59_900 // 128 and t.steps_per_epoch == 5
    assert t.alpha_full == (467 + 1) / 1  # the tutorial's rate, from the uncapped epoch


def test_epoch_report_has_every_figure(mnist):
    (report,) = _trainer(mnist).run_epoch()  # one report per seed
    assert report.epoch == 1 and report.steps == 5
    assert set(report.losses) == {"loss", "labelled", "unlabelled", "classification"}
    assert report.losses["loss"] == pytest.approx(
        report.losses["labelled"]
        + report.losses["unlabelled"]
        + report.alpha * report.losses["classification"],
        rel=1e-4,
    )
    assert 0.0 <= report.test_accuracy <= 1.0
    assert report.test_error == pytest.approx(100 * (1 - report.test_accuracy))
    assert report.samples_per_sec > 0 and report.epoch_seconds > 0
    metrics = report.metrics()
    assert {
        "train_loss",
        "train_labelled",
        "train_unlabelled",
        "train_classification",
        "test_accuracy",
        "test_error",
        "samples_per_sec",
        "epoch_seconds",
    } <= set(metrics)


@pytest.mark.parametrize(
    "name", ["exact", "tutorial-gumbel", "gumbel-st", "gumbel-anneal", "supervised-only"]
)
def test_training_is_deterministic_on_the_cpu(mnist, name):
    (a,) = _trainer(mnist, name, max_steps=3).fit()  # one history per seed
    (b,) = _trainer(mnist, name, max_steps=3).fit()
    assert a[-1].losses == b[-1].losses and a[-1].test_accuracy == b[-1].test_accuracy


def test_training_lowers_the_loss(mnist):
    t = _trainer(mnist, max_steps=20, epochs=3)
    (reports,) = t.fit()
    assert reports[-1].losses["loss"] < reports[0].losses["loss"]
    assert reports[-1].test_accuracy > 0.5


def test_resumed_run_ends_with_the_same_numbers(mnist, tmp_path):
    (straight,) = _trainer(mnist, max_steps=4, epochs=3).fit()
    ckpt = tmp_path / "run.pt"
    first = _trainer(mnist, max_steps=4, epochs=1)
    first.fit(checkpoints=[ckpt])
    resumed = _trainer(mnist, max_steps=4, epochs=3)
    assert resumed.resume_from([ckpt]) and resumed.epoch == 1
    (again,) = resumed.fit(checkpoints=[ckpt])
    assert [r.losses for r in again] == [r.losses for r in straight]
    assert again[-1].test_accuracy == straight[-1].test_accuracy


def test_checkpoint_of_another_variant_is_refused(mnist, tmp_path):
    ckpt = tmp_path / "run.pt"
    _trainer(mnist, max_steps=2).fit(checkpoints=[ckpt])
    with pytest.raises(ValueError, match="differs in temperature"):
        _trainer(mnist, temperature=0.7).resume_from([ckpt])


def test_non_finite_loss_stops_with_step_and_term(mnist):
    t = _trainer(mnist)
    model = t.stepper.model
    with torch.no_grad():
        model.dec_out.bias.fill_(float("nan"))
    before = model.enc_x.weight.clone()
    with pytest.raises(NonFiniteLossError, match=r"'loss' is nan at step 0;"):
        t.run_epoch()
    assert torch.equal(model.enc_x.weight, before)  # the bad step was not applied


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device(None).type == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_matches_the_cpu_figures_closely(data_root):
    from harness.training.data import load_splits

    splits = load_splits("mnist", data_root, "cuda", download=False)
    t = Trainer(
        create_variant("exact", {"epochs": 1}), splits, "cuda", max_steps=20, progress=False
    )
    (report,) = t.run_epoch()
    assert t.stepper.x_u.is_cuda and report.test_accuracy > 0.3


@pytest.mark.parametrize(
    ("labels", "expected"), [(100, (499, 1)), (600, (247, 3)), (3000, (235, 15))]
)
def test_paper_batch_rule_matches_kingma_et_al(labels, expected):
    from harness.training.trainer import batch_sizes

    variant = create_variant("paper-exact", {"labels": labels})
    assert batch_sizes(variant, 50_000 - labels, labels) == expected


def test_paper_exact_trains_on_50000_images_with_the_paper_batches(mnist):
    t = Trainer(
        create_variant("paper-exact", {"validation": 0}), mnist, "cpu", max_steps=1, progress=False
    )
    assert (t.batch_size, t.labelled_batch) == ((60_000 - 100) // 100, 1)
    assert t.alpha_full == pytest.approx(0.1 * 60_000 / 100)


def _one_step_terms(trainer: Trainer) -> torch.Tensor:
    trainer.stepper.generator.manual_seed(3)
    idx_u, idx_l = torch.arange(trainer.batch_size), torch.arange(trainer.labelled_batch)
    return trainer.forward_backward(idx_u, idx_l)


@pytest.mark.parametrize("name", ["exact", "tutorial-gumbel"])
def test_bf16_autocast_keeps_the_loss_close_and_in_float32(mnist, name):
    fp32 = _trainer(mnist, name)
    bf16 = _trainer(mnist, name, precision="bf16")
    terms_fp32, terms_bf16 = _one_step_terms(fp32), _one_step_terms(bf16)
    assert terms_bf16.dtype == torch.float32
    assert not torch.equal(terms_fp32, terms_bf16)  # the products did run in bfloat16
    torch.testing.assert_close(terms_bf16, terms_fp32, rtol=2e-2, atol=1e-2)
    grad = bf16.stepper.model.dec_out.weight.grad
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()


def test_an_unknown_precision_is_refused(mnist):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        _trainer(mnist, precision="fp16")


@pytest.mark.e2e
def test_a_compiled_loss_equals_the_eager_one(mnist):
    """torch.compile of the loss (alpha and temperature as tensor inputs): same terms and
    gradients as eager, and no recompilation when the annealed temperature changes."""
    eager = _trainer(mnist, "gumbel-anneal")
    compiled = _trainer(mnist, "gumbel-anneal", compile=True)
    torch.testing.assert_close(_one_step_terms(compiled), _one_step_terms(eager))
    pairs = zip(compiled.stepper.model.parameters(), eager.stepper.model.parameters(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    compiled.step = eager.step = 5000  # another temperature
    torch._dynamo.utils.counters.clear()
    torch.testing.assert_close(_one_step_terms(compiled), _one_step_terms(eager))
    assert not torch._dynamo.utils.counters["stats"].get("unique_graphs")


def test_loading_an_optimiser_state_keeps_how_this_process_runs_the_update():
    """A checkpoint of an eager or CPU run says capturable=False; a CUDA-graph run that resumes
    from it must keep capturable=True, or its first capture fails."""
    from harness.training.step import load_optimizer_state

    param = torch.nn.Parameter(torch.ones(3))
    eager = torch.optim.Adam([param], lr=0.1)
    param.grad = torch.ones(3)
    eager.step()
    saved = eager.state_dict()
    plain = torch.optim.Adam([param], lr=0.1, capturable=True)
    plain.load_state_dict(saved)
    assert plain.param_groups[0]["capturable"] is False  # what loading as it is does
    graphed = torch.optim.Adam([param], lr=0.1, capturable=True)
    load_optimizer_state(graphed, saved)
    assert graphed.param_groups[0]["capturable"] is True
    assert torch.equal(graphed.state[param]["exp_avg"], eager.state[param]["exp_avg"])
    assert graphed.state[param]["step"].dtype == torch.float32


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_adam_weight_decay_pulls_weights_toward_zero_where_the_loss_has_no_gradient(weight_decay):
    """weight_decay is Adam's L2 term (the gradient of a Gaussian prior on the weights): with a
    zero gradient from the loss, a step moves every weight toward zero by lr (Adam's normalised
    step), and leaves it where it is without it."""
    from harness.training.step import make_optimizer

    variant = create_variant("exact", {"lr": 0.1, "weight_decay": weight_decay})
    param = torch.nn.Parameter(torch.tensor([2.0, -1.0]))
    optimizer = make_optimizer(variant, [param], fused=False)
    param.grad = torch.zeros(2)
    optimizer.step()
    expected = torch.tensor([1.9, -0.9]) if weight_decay else torch.tensor([2.0, -1.0])
    torch.testing.assert_close(param.detach(), expected)
