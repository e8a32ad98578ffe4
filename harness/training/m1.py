"""M1 (Kingma et al. 2014, section 3.1.1): a VAE on the pixels, trained without labels, whose
posterior q(z1|x) gives M2 its features in M1+M2.

The authors' network: `layers` hidden layers of `hidden` softplus units for the Gaussian encoder
q(z1|x) and for the Bernoulli decoder p(x|z1), z1 of `z_dim` dimensions, the images binarised
afresh in every batch, Adam (or, as a faithful reimplementation trains it, a Bernoulli of the grey
levels, Adam with an L2 term, gradients clipped by value: `binarize`, `weight_decay`, `clip`). It
trains on the training images alone (the validation and test images are never trained on); the
validation ELBO decides when it stops, as the validation error decides for M2. A checkpoint after
every epoch lets a cut-off M1 resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.config.m1 import M1Settings
from harness.training.checkpoint import load_checkpoint, save_checkpoint
from harness.training.distributions import bernoulli_log_prob, gaussian_kl
from harness.training.networks import NetworkSpec, mlp
from harness.training.stopping import best_position, no_improvement_for
from harness.training.trainer import NonFiniteLossError, synchronize


class M1(nn.Module):
    """Encoder q(z1|x) (a mean and a log-variance) and decoder p(x|z1) (Bernoulli logits)."""

    def __init__(self, settings: M1Settings, x_dim: int = 784) -> None:
        super().__init__()
        spec = NetworkSpec(
            hidden=(settings.hidden,) * settings.layers,
            activation="softplus",
            batch_norm=settings.batch_norm,
            dropout=settings.dropout,
        )
        self.encoder = mlp(x_dim, 2 * settings.z_dim, spec)
        self.decoder = mlp(settings.z_dim, x_dim, spec)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z1|x)."""
        loc, logvar = self.encoder(x).chunk(2, dim=-1)
        return loc, logvar


def m1_neg_elbo(model: M1, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """-ELBO(x) = -E_q(z1|x)[log p(x|z1)] + KL(q(z1|x) || N(0, I)), per image, with one
    reparameterised sample z1 = mean + exp(logvar / 2) * eps."""
    loc, logvar = model.posterior(x)
    eps = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
    z = loc + (0.5 * logvar).exp() * eps
    return -bernoulli_log_prob(model.decoder(z), x) + gaussian_kl(loc, logvar)


def binarize(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Each pixel 1 with its grey level's probability (drawn afresh at every call)."""
    return torch.bernoulli(x, generator=generator)


def targets(x: Tensor, settings: M1Settings, generator: torch.Generator | None) -> Tensor:
    """What M1's Bernoulli models: the pixels binarised afresh, or their grey levels."""
    return binarize(x, generator) if settings.binarize else x


@dataclass
class M1Epoch:
    epoch: int
    train_neg_elbo: float  # nats per image, mean over the epoch's batches
    val_neg_elbo: float | None
    epoch_seconds: float
    eval_seconds: float


@torch.no_grad()
def mean_neg_elbo(model: M1, x: Tensor, settings: M1Settings, chunk: int = 10_000) -> float:
    """-ELBO per image on `x`, with the binarisation and z1 drawn from a generator seeded with
    the settings' seed at every call, so that two epochs are compared on the same draws; batch
    norm and dropout in evaluation mode (their running statistics, no units dropped)."""
    generator = torch.Generator(x.device).manual_seed(settings.seed)
    training = model.training
    model.eval()
    total = sum(
        m1_neg_elbo(model, targets(part, settings, generator), generator).sum().item()
        for part in x.split(chunk)
    )
    model.train(training)
    return total / len(x)


def m1_outcome(settings: M1Settings, history: list[M1Epoch]) -> dict[str, Any]:
    """How a trained M1 ended: its best validation epoch (the stop rule's), how it stopped,
    and its time."""
    val = [h.val_neg_elbo for h in history if h.val_neg_elbo is not None]
    best = best_position(val, settings.min_delta) if val else len(history) - 1
    stopped = no_improvement_for(val, settings.patience, settings.min_delta)
    return {
        "epochs_run": len(history),
        "best_epoch": history[best].epoch,
        "best_val_neg_elbo": history[best].val_neg_elbo,
        "final_val_neg_elbo": history[-1].val_neg_elbo,
        "stopped_by": "patience" if stopped else "budget",
        "train_seconds": sum(h.epoch_seconds for h in history),
        "wall_seconds": sum(h.epoch_seconds + h.eval_seconds for h in history),
    }


class M1Training:
    """M1 trained to its stop rule: `fit` runs epochs until the validation -ELBO has not
    improved by more than `min_delta` nats for `patience` epochs, or `epochs` are done,
    saving `checkpoint` (if given) after each and resuming from it when it exists."""

    def __init__(
        self,
        settings: M1Settings,
        train_x: Tensor,
        val_x: Tensor,
        device: torch.device,
        checkpoint: Path | None = None,
        made_by: dict[str, Any] | None = None,
    ) -> None:
        if settings.patience and not len(val_x):
            raise ValueError("M1's stop rule needs validation images; this split holds none")
        self.settings, self.device, self.checkpoint = settings, device, checkpoint
        self.train_x, self.val_x = train_x.to(device), val_x.to(device)
        torch.manual_seed(settings.seed)
        self.model = M1(settings, train_x.shape[1]).to(device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
        self.generator = torch.Generator(device).manual_seed(settings.seed)
        self.history: list[M1Epoch] = []
        self.step = 0
        self.made_by = dict(made_by or {})
        self.segments: list[dict[str, Any]] = []  # the processes before this one
        self.first_epoch = 1
        if checkpoint is not None and checkpoint.exists():
            self._resume(load_checkpoint(checkpoint))

    def _resume(self, state: dict[str, Any]) -> None:
        if state["variant"] != self.settings.params():
            raise ValueError(f"{self.checkpoint} is of another M1 (its settings differ)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.history = [M1Epoch(**h) for h in state["history"]]
        self.step, self.segments = state["step"], list(state["segments"])
        self.first_epoch = len(self.history) + 1

    def finished(self) -> bool:
        val = [h.val_neg_elbo for h in self.history if h.val_neg_elbo is not None]
        s = self.settings
        return len(self.history) >= s.epochs or no_improvement_for(val, s.patience, s.min_delta)

    def run_epoch(self) -> M1Epoch:
        """One pass over the training images in a fresh order, each batch binarised afresh (or
        its grey levels), Adam with the settings' L2 term and gradient clipping."""
        B = self.settings.batch_size
        self.model.train()
        order = torch.randperm(len(self.train_x), generator=self.generator, device=self.device)
        steps = max(1, len(order) // B)
        total = torch.zeros((), device=self.device)
        synchronize(self.device)
        start = time.perf_counter()
        for i in range(steps):
            x = targets(self.train_x[order[i * B : (i + 1) * B]], self.settings, self.generator)
            loss = m1_neg_elbo(self.model, x, self.generator).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.settings.clip:
                nn.utils.clip_grad_value_(self.model.parameters(), self.settings.clip)
            self.optimizer.step()
            total += loss.detach()
            self.step += 1
        synchronize(self.device)
        seconds = time.perf_counter() - start
        train = total.item() / steps
        if not math.isfinite(train):
            raise NonFiniteLossError(self.step, "m1_neg_elbo", train)
        start = time.perf_counter()
        val = mean_neg_elbo(self.model, self.val_x, self.settings) if len(self.val_x) else None
        epoch = M1Epoch(len(self.history) + 1, train, val, seconds, time.perf_counter() - start)
        self.history.append(epoch)
        return epoch

    def fit(self, on_epoch: Callable[[M1Epoch], Any] | None = None) -> list[M1Epoch]:
        while not self.finished():
            epoch = self.run_epoch()
            if self.checkpoint is not None:
                save_checkpoint(self.checkpoint, self.state())
            if on_epoch is not None:
                on_epoch(epoch)
        return self.history

    def all_segments(self) -> list[dict[str, Any]]:
        """Where M1 trained: the earlier processes' segments, then this one's, if it trained."""
        last = len(self.history)
        mine = [{**self.made_by, "epochs": [self.first_epoch, last]}]
        return self.segments + (mine if last >= self.first_epoch else [])

    def state(self) -> dict[str, Any]:
        return {
            "variant": self.settings.params(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": len(self.history),
            "step": self.step,
            "history": [asdict(h) for h in self.history],
            "segments": self.all_segments(),
        }
