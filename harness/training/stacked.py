"""Several seeds of one variant trained at once, in one process and one step.

The seeds' parameters are stacked along a leading axis and the fused loss is vectorised over it
with `torch.func.vmap`, so every matrix product of a step is S times larger: small M2 models fill
a large GPU, and on the CPU the per-operation overhead is paid once for S seeds. Each seed keeps
its own initialisation, labelled images and batch order. Adam is element-wise, so one fused Adam
over the stacked parameters is S independent Adams. The Gaussian and Gumbel noise come from one
generator (vmap's randomness="different": every seed its own draws), so a seed trained in a stack
is another random draw of the same training as that seed alone, not a copy of it.

`StackedSeeds` is a step (step.py's `TrainingStep`): the trainer's loop runs it as it runs one
seed, and its seeds' states are those of one seed alone, so a stacked run saves one ordinary
checkpoint per seed, resumes from them, and each seed can be continued on its own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from harness.config.variants import Variant
from harness.training.data import Splits
from harness.training.family import TERMS, Family, get_family
from harness.training.step import (
    Batch,
    BeforeUpdate,
    autocast,
    check_precision,
    check_schedule_and_clipping,
    draw_rows,
    eager_train,
    epoch_order,
    labelled_split,
    load_optimizer_state,
    loss_options,
    make_optimizer,
)


class LossTerms(nn.Module):
    """The family's objective as a module call (the terms stacked in TERMS order), so that
    torch.func.functional_call can run it with any seed's parameters."""

    def __init__(self, family: Family, model: nn.Module) -> None:
        super().__init__()
        self.family, self.model = family, model

    def forward(self, x_l: Tensor, y_l: Tensor, x_u: Tensor, options: dict[str, Any]) -> Tensor:
        terms = self.family.objective(self.model, x_l, y_l, x_u, **options)
        return torch.stack([terms[t] for t in TERMS])


class Logits(nn.Module):
    """The family's q(y|x) logits as a module call, for functional_call."""

    def __init__(self, family: Family, model: nn.Module) -> None:
        super().__init__()
        self.family, self.model = family, model

    def forward(self, x: Tensor) -> Tensor:
        return self.family.classify(self.model, x)


class StackedSeeds:
    """The step of the seeds `seeds` of `variant` at once (`variant.seed` is not used); every
    tensor it returns has the seeds along its first axis, in the order of `seeds`."""

    randomness = "different"  # vmap's: "same" gives every seed the same noise draws (tests)

    def __init__(
        self,
        variant: Variant,
        seeds: Sequence[int],
        splits: Splits,
        device: torch.device,
        *,
        precision: str = "fp32",
    ) -> None:
        check_precision(precision)
        if variant.batch_norm or variant.dropout:
            raise ValueError(
                "stacked seeds train without batch norm and dropout (their running statistics "
                "and train/eval modes are per model); run these seeds one at a time"
            )
        self.seeds, self.device, self.precision = tuple(seeds), device, precision
        check_schedule_and_clipping(variant, stacked=True, cuda_graphs=False)
        if variant.eval_samples:
            raise ValueError(
                "eval_samples draws a afresh when classifying, which stacked seeds cannot: run "
                "the seeds apart (no --stack)"
            )
        self.variant = variant
        self.variants = [variant.replace(seed=seed) for seed in self.seeds]
        self.family = get_family(variant.family)
        models = []
        for seed in self.seeds:  # each seed initialised as it would be alone
            torch.manual_seed(seed)
            models.append(self.family.build(variant, splits.train_x.shape[1]).to(device))
        params, _ = stack_module_state(models)
        self.params = {f"model.{name}": value for name, value in params.items()}
        self.generator = torch.Generator(device).manual_seed(self.seeds[0])
        self.optimizer = make_optimizer(variant, self.params.values())
        # the module functional_call runs with a seed's parameters: shapes only, no storage
        self.template = LossTerms(self.family, copy.deepcopy(models[0]).to("meta"))
        self.logits = Logits(self.family, self.template.model)
        parts = [labelled_split(splits, v.labels, v.label_draw, device) for v in self.variants]
        self.x_l, self.y_l, self.x_u = (
            torch.stack([getattr(p, k) for p in parts]) for k in ("x_l", "y_l", "x_u")
        )
        self.std_l, self.std_u = (
            None if parts[0].std_l is None else torch.stack([getattr(p, k) for p in parts])
            for k in ("std_l", "std_u")
        )
        self.n_labelled, self.n_unlabelled = self.x_l.shape[1], self.x_u.shape[1]

    def epoch_order(self, steps: int, labelled_batch: int) -> tuple[Tensor, Tensor]:
        orders = [
            epoch_order(self.generator, self.n_unlabelled, self.n_labelled, steps, labelled_batch)
            for _ in self.seeds
        ]
        order_u, order_l = (torch.stack(part) for part in zip(*orders, strict=True))
        return order_u, order_l

    def forward_backward(self, batch: Batch) -> Tensor:
        """The loss terms of every seed on its own batch ([S, len(TERMS)]) and their gradients."""
        idx_u, idx_l = batch.idx_u, batch.idx_l
        rows = torch.arange(len(self.seeds), device=self.device)[:, None]
        options = loss_options(
            self.family, self.variants[0], self.generator, batch.alpha, batch.temperature
        )

        def seed_terms(params: dict[str, Tensor], x_l: Tensor, y_l: Tensor, x_u: Tensor) -> Tensor:
            return functional_call(self.template, params, (x_l, y_l, x_u, options))

        binarize = self.variant.binarize
        x_l = draw_rows(self.x_l, self.std_l, (rows, idx_l), self.generator, binarize)
        x_u = draw_rows(self.x_u, self.std_u, (rows, idx_u), self.generator, binarize)
        with autocast(self.device, self.precision):
            terms = vmap(seed_terms, randomness=self.randomness)(
                self.params, x_l, self.y_l[rows, idx_l], x_u
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms[:, TERMS.index("loss")].sum().backward()  # seeds share no parameter
        return terms.detach()

    def train(self, batch: Batch, before_update: BeforeUpdate | None = None) -> Tensor:
        return eager_train(self, batch, before_update)

    @torch.no_grad()
    def predictions(self, x: Tensor, chunk: int = 10_000) -> Tensor:
        def predict(params: dict[str, Tensor], part: Tensor) -> Tensor:
            return functional_call(self.logits, params, (part,)).argmax(-1)

        return torch.cat(
            [vmap(predict, in_dims=(0, None))(self.params, part) for part in x.split(chunk)], dim=1
        )

    def seed_state(self, i: int) -> dict[str, Any]:
        """Seed i's state as one seed alone has it (copies: a view would save the whole stack)."""
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = {
            index: {k: v if k == "step" else v[i].clone() for k, v in state.items()}
            for index, state in optimizer["state"].items()
        }
        prefix = len("model.")
        return {
            "model": {k[prefix:]: v[i].detach().clone() for k, v in self.params.items()},
            "optimizer": optimizer,
            "generator": self.generator.get_state(),
        }

    def load_seed_states(self, states: Sequence[dict[str, Any]]) -> None:
        with torch.no_grad():
            for name, value in self.params.items():
                value.copy_(torch.stack([s["model"][name[len("model.") :]] for s in states]))
        optimizer = copy.deepcopy(states[0]["optimizer"])
        for index, state in optimizer["state"].items():
            for k in state:
                if k != "step":
                    state[k] = torch.stack([s["optimizer"]["state"][index][k] for s in states])
        load_optimizer_state(self.optimizer, optimizer)
        self.generator.set_state(states[0]["generator"])
