"""The trainer on a GPU: the CUDA step against the CPU step, and the speed options (stacked seeds,
bf16, compile, CUDA graphs) each against the plain CUDA step; no host sync inside an epoch;
resume on CUDA. Skipped where there is no CUDA device (the GPU kit runs them: harness/gpu_kit.py).

The data are generated (no files), so the kit needs none for these. Where the estimator draws
noise, the CPU and CUDA generators draw different numbers, so exact comparisons use the
supervised-only control (no noise) and the noisy estimators are compared on the same device with
the same generator state.
"""

from __future__ import annotations

import os
import signal
import warnings

import pytest
import torch

from harness.config.variants import create_variant
from harness.training.data import synthetic_splits
from harness.training.trainer import NonFiniteWatch, Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
ESTIMATORS = ["exact", "gumbel-0.5", "gumbel-st", "tutorial-gumbel", "supervised-only"]


@pytest.fixture(autouse=True)
def _pinned_precision_and_a_time_limit():
    """Every CUDA test in full fp32 (no TF32 matmuls, whatever the machine's default), and, where
    $M2H_TEST_TIMEOUT says (the GPU kit), stopped with a TimeoutError after that many seconds so
    one hung test never costs the others."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    precision = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    limit = float(os.environ.get("M2H_TEST_TIMEOUT", "0"))

    def stop(signum, frame):
        raise TimeoutError(f"the test ran past its {limit:.0f} s")

    if limit:
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        torch.set_float32_matmul_precision(precision)


def _splits(device: str):
    return synthetic_splits(torch.device(device), train=3000, test=500, validation=500)


def _trainer(device, name="exact", steps=4, epochs=2, **options):
    variant = create_variant(name, {"epochs": epochs, "labels": 100, "validation": 500})
    return Trainer(variant, _splits(device), device, max_steps=steps, progress=False, **options)


def _batches(trainer, n=3):
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randperm(trainer.stepper.n_unlabelled, generator=g)[: trainer.batch_size],
            torch.randperm(trainer.stepper.n_labelled, generator=g)[: trainer.labelled_batch],
        )
        for _ in range(n)
    ]


def _steps(trainer, batches):
    device = trainer.device
    return torch.stack([trainer.train_step(u.to(device), lab.to(device)) for u, lab in batches])


def test_the_cuda_step_equals_the_cpu_step():
    cpu, cuda = _trainer("cpu", "supervised-only"), _trainer("cuda", "supervised-only")
    batches = _batches(cpu, 5)
    torch.testing.assert_close(
        _steps(cuda, batches).cpu(), _steps(cpu, batches), rtol=1e-4, atol=1e-4
    )
    pairs = zip(cpu.stepper.model.named_parameters(), cuda.stepper.model.parameters(), strict=True)
    for (name, a), b in pairs:
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_every_estimator_trains_on_cuda_like_on_the_cpu(name):
    """Same initial weights and batches; the noise differs between devices, so the first step's
    terms agree to a few percent and an epoch ends at a similar accuracy."""
    cpu, cuda = _trainer("cpu", name), _trainer("cuda", name)
    batches = _batches(cpu, 1)
    torch.testing.assert_close(
        _steps(cuda, batches).cpu(), _steps(cpu, batches), rtol=0.05, atol=0.05
    )
    assert abs(cuda.run_epoch()[0].test_accuracy - cpu.run_epoch()[0].test_accuracy) < 0.1


@pytest.mark.parametrize("name", ESTIMATORS)
def test_cuda_graphs_replay_the_eager_step(name):
    eager, graphed = _trainer("cuda", name), _trainer("cuda", name, cuda_graphs=True)
    batches = _batches(eager, 4)
    for trainer in (eager, graphed):
        trainer.stepper.generator.manual_seed(5)
    exact = name == "supervised-only"
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if exact else {"rtol": 0.05, "atol": 0.05}
    torch.testing.assert_close(_steps(graphed, batches), _steps(eager, batches), **tolerance)
    if name == "supervised-only":  # no noise: the same updates
        before, after = eager.stepper.model, graphed.stepper.model
        for a, b in zip(before.parameters(), after.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_a_replayed_graph_draws_new_noise_every_step():
    """Frozen noise would replay the capture's draw: the same batch twice, from the same
    weights, must give other loss terms each time for a noisy estimator."""
    graphed = _trainer("cuda", "gumbel-0.5", cuda_graphs=True)
    (batch,) = _batches(graphed, 1)
    graphed.train_step(batch[0].cuda(), batch[1].cuda())  # captures the graph
    stepper = graphed.stepper
    weights = {k: v.clone() for k, v in stepper.model.state_dict().items()}
    moments = {p: {k: v.clone() for k, v in s.items()} for p, s in stepper.optimizer.state.items()}
    first = graphed.train_step(batch[0].cuda(), batch[1].cuda())
    with torch.no_grad():  # back to the same weights and optimiser state, in place
        for k, v in stepper.model.state_dict().items():
            v.copy_(weights[k])
        for param, saved in stepper.optimizer.state.items():
            for k, v in saved.items():
                v.copy_(moments[param][k])
    second = graphed.train_step(batch[0].cuda(), batch[1].cuda())
    assert not torch.equal(first, second)


@pytest.mark.parametrize("setting", ["alpha", "temperature"])
def test_a_replayed_graph_reads_the_schedule_value_of_each_step(setting):
    """alpha and the temperature change between replays (warm-up, annealing): the graph must
    read this step's values, as the eager step does, not the capture's."""
    from harness.training.step import Batch

    eager = _trainer("cuda", "gumbel-0.5")
    graphed = _trainer("cuda", "gumbel-0.5", cuda_graphs=True)
    batches = _batches(eager, 3)
    values = {"alpha": [1.0, 50.0, 400.0], "temperature": [1.0, 0.5, 0.2]}[setting]
    for trainer in (eager, graphed):
        trainer.stepper.generator.manual_seed(5)
    terms = []
    for trainer in (eager, graphed):
        steps = []
        for (u, lab), value in zip(batches, values, strict=True):
            batch = Batch(u.cuda(), lab.cuda(), 10.0, 0.5)._replace(**{setting: value})
            steps.append(trainer.stepper.train(batch))
        terms.append(torch.stack(steps))
    torch.testing.assert_close(terms[1], terms[0], rtol=0.05, atol=0.05)


def test_resuming_with_cuda_graphs_from_an_eager_checkpoint(tmp_path):
    """The checkpoint's optimiser state says capturable=False; the graphed run keeps its own."""
    _trainer("cuda", "gumbel-st", epochs=1).fit(checkpoints=[tmp_path / "c.pt"])
    resumed = _trainer("cuda", "gumbel-st", cuda_graphs=True)
    assert resumed.resume_from([tmp_path / "c.pt"])
    (reports,) = resumed.fit()
    assert len(reports) == 2 and reports[-1].test_accuracy > 0.1


def test_cuda_graphs_train_an_epoch_to_the_eager_accuracy():
    eager = _trainer("cuda", steps=20)
    graphed = _trainer("cuda", steps=20, cuda_graphs=True)
    assert abs(eager.run_epoch()[0].test_accuracy - graphed.run_epoch()[0].test_accuracy) < 0.05


@pytest.mark.parametrize("name", ["exact", "gumbel-st"])
def test_bf16_follows_fp32_within_tolerance(name):
    fp32, bf16 = _trainer("cuda", name), _trainer("cuda", name, precision="bf16")
    batches = _batches(fp32, 3)
    for trainer in (fp32, bf16):
        trainer.stepper.generator.manual_seed(5)
    torch.testing.assert_close(_steps(bf16, batches), _steps(fp32, batches), rtol=0.03, atol=0.5)


def test_compile_follows_eager():
    import torch._inductor.config as inductor

    inductor.fallback_random = True  # the compiled loss draws its noise as eager does
    eager, compiled = _trainer("cuda"), _trainer("cuda", compile=True)
    batches = _batches(eager, 3)
    for trainer in (eager, compiled):
        trainer.stepper.generator.manual_seed(5)
    torch.testing.assert_close(
        _steps(compiled, batches), _steps(eager, batches), rtol=1e-3, atol=1e-2
    )


@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_stacked_cuda_step_is_each_seeds_cuda_step(name):
    seeds = [0, 1, 2, 3]
    variant = create_variant(name, {"epochs": 1, "labels": 100})
    splits = _splits("cuda")
    stack = Trainer(variant, splits, "cuda", 4, False, seeds=seeds)
    stack.stepper.randomness = "same"
    alone = [
        Trainer(variant.replace(seed=s), splits, "cuda", max_steps=4, progress=False) for s in seeds
    ]
    n_u, n_l = stack.stepper.n_unlabelled, stack.stepper.n_labelled
    idx_u = torch.stack([torch.randperm(n_u)[: stack.batch_size] for _ in seeds])
    idx_l = torch.stack([torch.randperm(n_l)[: stack.labelled_batch] for _ in seeds])
    idx_u, idx_l = idx_u.cuda(), idx_l.cuda()
    stack.stepper.generator.manual_seed(7)
    terms = stack.forward_backward(idx_u, idx_l)
    for i, trainer in enumerate(alone):
        trainer.stepper.generator.manual_seed(7)
        (expected,) = trainer.forward_backward(idx_u[i], idx_l[i])  # [1, terms]: one seed
        torch.testing.assert_close(terms[i], expected, rtol=1e-4, atol=1e-3)


def _syncs(fn) -> int:
    """How many synchronizing CUDA operations `fn` makes (torch's sync debug mode)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_no_host_sync_inside_an_epoch(cuda_graphs):
    trainer = _trainer("cuda", "gumbel-st", steps=30, cuda_graphs=cuda_graphs)
    trainer.run_epoch()  # warm-up: the graph is captured, the allocator settles
    order_u, order_l = trainer.epoch_order()
    watch = NonFiniteWatch(lambda where: None)
    B, B_l = trainer.batch_size, trainer.labelled_batch

    def steps() -> None:
        for i in range(20):
            values = trainer.train_step(
                order_u[i * B : (i + 1) * B], order_l[i * B_l : (i + 1) * B_l]
            )
            watch.see(values, i)

    assert _syncs(steps) == 0
    short = _trainer("cuda", steps=5, cuda_graphs=cuda_graphs)
    long = _trainer("cuda", steps=25, cuda_graphs=cuda_graphs)
    short.run_epoch()
    long.run_epoch()
    assert _syncs(short.run_epoch) == _syncs(long.run_epoch)  # per epoch, not per step


def test_resume_on_cuda_reproduces_an_uninterrupted_run(tmp_path):
    (straight,) = _trainer("cuda", "gumbel-st").fit()
    _trainer("cuda", "gumbel-st", epochs=1).fit(checkpoints=[tmp_path / "c.pt"])
    resumed = _trainer("cuda", "gumbel-st")
    assert resumed.resume_from([tmp_path / "c.pt"])
    (again,) = resumed.fit()
    assert len(again) == len(straight) == 2
    for a, b in zip(again, straight, strict=True):
        assert a.losses == pytest.approx(b.losses, rel=1e-5)
    assert again[-1].test_accuracy == pytest.approx(straight[-1].test_accuracy, abs=1e-3)
