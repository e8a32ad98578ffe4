"""The whole training step captured once as a CUDA graph and replayed at every step.

A small M2 step is a few hundred short kernels, so on a large GPU the time goes to launching them.
Captured as one graph (forward, backward and the fused Adam update, its state kept on the device
with `capturable=True`), a step is one launch. The batch indices, alpha and the temperature live
in static device buffers that each step fills before the replay; the noise generator is
registered with the graph, so every replay draws new noise. The eager step stays the reference
(`OneSeed(cuda_graphs=False)`); the CUDA tests compare the two.

Capture needs warm-up steps on a side stream (they allocate the optimiser's state and let the
caching allocator settle); they would change the model, so the model, the optimiser's state and
the generator are put back as they were before the graph's first real replay.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import torch
from torch import Tensor

from harness.training.family import TERMS


class Capturable(Protocol):
    """What the graph needs of one seed's step (`step.OneSeed` is one)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    @property
    def generator(self) -> torch.Generator: ...

    def loss_terms(
        self, idx_u: Tensor, idx_l: Tensor, alpha: Any, temperature: Any, cache: bool = True
    ) -> dict[str, Tensor]: ...


class StepInput(Protocol):
    """A step's input (`step.Batch` is one): indices, alpha and the temperature."""

    idx_u: Tensor
    idx_l: Tensor
    alpha: float
    temperature: float


class GraphedStep:
    """`step`'s update as a CUDA graph for batches of `batch_size` unlabelled and
    `labelled_batch` labelled rows: call it with a `Batch` (indices, alpha and the
    temperature); it updates the model and returns the loss terms stacked in TERMS order."""

    def __init__(
        self, step: Capturable, batch_size: int, labelled_batch: int, warmup: int = 3
    ) -> None:
        device = step.device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; this run is on {device}")
        self.step = step
        self.idx_u = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.idx_l = torch.zeros(labelled_batch, dtype=torch.long, device=device)
        self.alpha = torch.zeros((), device=device)
        self.temperature = torch.ones((), device=device)

        before = _snapshot(step)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._update()
        torch.cuda.current_stream(device).wait_stream(side)
        _restore(step, before)

        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(step.generator)
        with torch.cuda.graph(self.graph):
            self.terms = self._update()

    def _update(self) -> Tensor:
        step = self.step
        terms = step.loss_terms(self.idx_u, self.idx_l, self.alpha, self.temperature, cache=False)
        step.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        step.optimizer.step()
        return torch.stack([terms[name].detach() for name in TERMS])

    def __call__(self, batch: StepInput) -> Tensor:
        self.idx_u.copy_(batch.idx_u)
        self.idx_l.copy_(batch.idx_l)
        self.alpha.fill_(batch.alpha)
        self.temperature.fill_(batch.temperature)
        self.graph.replay()
        return self.terms.clone()


def _snapshot(step: Capturable) -> dict:
    return {
        "model": copy.deepcopy(step.model.state_dict()),
        "optimizer": copy.deepcopy(step.optimizer.state_dict()["state"]),
        "generator": step.generator.get_state(),
    }


def _restore(step: Capturable, before: dict) -> None:
    """Put the model, the optimiser's state and the generator back in place (the same tensors:
    the graph will read and write these addresses)."""
    with torch.no_grad():
        for name, value in step.model.state_dict().items():
            value.copy_(before["model"][name])
        params = [p for group in step.optimizer.param_groups for p in group["params"]]
        for index, param in enumerate(params):
            saved = before["optimizer"].get(index, {})
            for key, value in step.optimizer.state[param].items():
                if key in saved:
                    value.copy_(saved[key])
                else:  # state the warm-up created: as a fresh optimiser has it
                    value.zero_()
    step.generator.set_state(before["generator"])
