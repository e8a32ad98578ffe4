"""The training step of one seed, and the interface every step gives the trainer's loop.

A step owns what is trained: the model, its optimiser and noise generator, and the seed's
labelled and unlabelled images on the device. The loop (trainer.py) draws batch indices, sets
alpha and the temperature, and keeps the history; it sees a step only through `TrainingStep`, so
one seed (`OneSeed`, eager, compiled or replayed as a CUDA graph) and several seeds stacked under
vmap (`stacked.StackedSeeds`) run in the same loop. Every step returns its loss terms with a
leading seed axis, [S, len(TERMS)], and one accuracy per seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from harness.config.variants import NUM_CLASSES, Variant
from harness.training.data import Splits, balanced_label_subset
from harness.training.family import TERMS, Family, get_family, predict

PRECISIONS = ("fp32", "bf16")

BeforeUpdate = Callable[[Tensor], Any]


class Batch(NamedTuple):
    """A step's input: indices into the unlabelled and the labelled images ([B] for one seed,
    [S, B] for a stack of S), and alpha and the temperature at this step."""

    idx_u: Tensor
    idx_l: Tensor
    alpha: float
    temperature: float


class TrainingStep(Protocol):
    """What the trainer's loop needs of a step, for S seeds (S = len(seeds))."""

    seeds: tuple[int, ...]
    variant: Variant  # the settings every seed shares
    n_labelled: int  # labelled training images per seed
    n_unlabelled: int
    optimizer: torch.optim.Optimizer

    def epoch_order(self, steps: int, labelled_batch: int) -> tuple[Tensor, Tensor]:
        """Each seed's unlabelled indices in a fresh random order, and its labelled ones cycled
        to cover `steps` batches ([S, n] each for a stack, [n] for one seed)."""
        ...

    def forward_backward(self, batch: Batch) -> Tensor:
        """The loss terms on a batch, [S, len(TERMS)], and their gradients; no update."""
        ...

    def train(self, batch: Batch, before_update: BeforeUpdate | None = None) -> Tensor:
        """One update on a batch; returns the loss terms, [S, len(TERMS)] (no host sync)."""
        ...

    def predictions(self, x: Tensor) -> Tensor:
        """Each seed's class prediction argmax q(y|x) for the rows of x, [S, n]."""
        ...

    def seed_state(self, i: int) -> dict[str, Any]:
        """Seed i's model, optimiser state and the generator, as a checkpoint holds them."""
        ...

    def load_seed_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Put every seed's `seed_state` back."""
        ...


def eager_train(
    step: TrainingStep, batch: Batch, before_update: BeforeUpdate | None = None
) -> Tensor:
    """Forward and backward, `before_update` (the NaN watch: a bad step is never applied),
    then the update."""
    values = step.forward_backward(batch)
    if before_update is not None:
        before_update(values)
    clip_gradients(step.optimizer, step.variant)
    step.optimizer.step()
    return values


def clip_gradients(optimizer: torch.optim.Optimizer, variant: Variant) -> None:
    """The variant's clipping before an update: the joint norm of all gradients to clip_norm,
    then each element to +-clip_value (either 0: not done)."""
    if not (variant.clip_norm or variant.clip_value):
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if variant.clip_norm:
        torch.nn.utils.clip_grad_norm_(params, variant.clip_norm)
    if variant.clip_value:
        torch.nn.utils.clip_grad_value_(params, variant.clip_value)


# settings a captured CUDA graph cannot follow: they change the update or draw afresh each step
EAGER_ONLY = ("lr_decay_every", "clip_norm", "clip_value", "binarize")


def check_schedule_and_clipping(variant: Variant, stacked: bool, cuda_graphs: bool) -> None:
    """Refuse what the schedule and clipping cannot do: a captured graph replays a fixed update,
    and stacked seeds share one parameter tensor per weight, whose norm would mix the seeds."""
    eager = [
        k for k in ("lr_decay_every", "clip_norm", "clip_value", "binarize") if getattr(variant, k)
    ]
    if cuda_graphs and eager:
        raise ValueError(
            f"CUDA graphs replay one captured update: {', '.join(eager)} need an eager step "
            "(run without --cuda-graphs)"
        )
    if stacked and variant.clip_norm:
        raise ValueError(
            "clip_norm clips each run's gradient norm; stacked seeds share one tensor per "
            "weight: run the seeds apart (no --stack)"
        )


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def autocast(device: torch.device, precision: str, cache: bool = True) -> torch.autocast:
    """bf16 matrix products in the forward and backward passes (the loss itself in float32),
    or nothing."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=cache
    )


def make_optimizer(
    variant: Variant,
    params: Iterable[torch.nn.Parameter],
    fused: bool = True,
    capturable: bool = False,
) -> torch.optim.Optimizer:
    """Adam (with the variant's L2 term) or AdamW (torch's decoupled decay); `fused` runs the
    whole update in one kernel per step (CPU and CUDA) instead of a handful of element-wise ops
    per parameter; `capturable` keeps its step count on the device, so the update can be
    captured in a CUDA graph."""
    if variant.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=variant.lr, fused=fused, capturable=capturable)
    return torch.optim.Adam(
        params,
        lr=variant.lr,
        weight_decay=variant.weight_decay,
        fused=fused,
        capturable=capturable,
    )


# how this process runs the update, not what was learned: kept when a state is loaded
EXECUTION_FLAGS = ("capturable", "fused", "foreach", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved optimiser `state`, keeping this optimiser's execution flags: a checkpoint
    saved by an eager or CPU run says capturable=False, and loading it as it is would make the
    first CUDA-graph capture fail. Where capturable, the step counts move onto the parameters'
    device, where the captured update reads them."""
    kept = [{k: g[k] for k in EXECUTION_FLAGS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, kept, strict=True):
        group.update(flags)
        if group.get("capturable"):
            for param in group["params"]:
                saved = optimizer.state.get(param, {})
                if "step" in saved:
                    saved["step"] = saved["step"].to(param.device, torch.float32)


class SeedData(NamedTuple):
    """One seed's training rows: the labelled ones with their classes, the unlabelled ones,
    and, for M1's features, each row's posterior standard deviation (None for pixels)."""

    x_l: Tensor
    y_l: Tensor
    x_u: Tensor
    std_l: Tensor | None
    std_u: Tensor | None


def labelled_split(splits: Splits, labels: int, seed: int, device: torch.device) -> SeedData:
    """`labels` training images balanced over the classes and drawn with `seed`, their classes,
    and the other training images (unlabelled)."""
    labelled = balanced_label_subset(splits.train_y, labels, NUM_CLASSES, seed)
    is_labelled = torch.zeros(len(splits.train_y), dtype=torch.bool)
    is_labelled[labelled] = True
    labelled, unlabelled = labelled.to(device), (~is_labelled).nonzero().flatten().to(device)
    std = splits.train_std
    return SeedData(
        splits.train_x[labelled],
        splits.train_y[labelled],
        splits.train_x[unlabelled],
        None if std is None else std[labelled],
        None if std is None else std[unlabelled],
    )


def draw_rows(
    x: Tensor,
    std: Tensor | None,
    index: tuple[Tensor, ...],
    generator: torch.Generator,
    binarize: bool = False,
) -> Tensor:
    """The rows `x[index]`; for M1's features (`std` given) a fresh draw of each,
    z1 = mean + std * eps with eps ~ N(0, I), as M1+M2 trains on samples of q(z1|x); with
    `binarize`, pixels drawn afresh as x_b ~ Bernoulli(x) (dynamic binarisation)."""
    rows = x[index]
    if binarize:
        return torch.bernoulli(rows, generator=generator)
    if std is None:
        return rows
    noise = torch.randn(rows.shape, generator=generator, device=x.device, dtype=x.dtype)
    return rows + std[index] * noise


def epoch_order(
    generator: torch.Generator, n_unlabelled: int, n_labelled: int, steps: int, labelled_batch: int
) -> tuple[Tensor, Tensor]:
    """Unlabelled indices in a fresh random order; labelled ones, reshuffled each cycle, repeated
    to cover `steps` batches of `labelled_batch`."""
    device = generator.device
    order_u = torch.randperm(n_unlabelled, generator=generator, device=device)
    cycles = math.ceil(steps * labelled_batch / n_labelled)
    order_l = torch.cat(
        [torch.randperm(n_labelled, generator=generator, device=device) for _ in range(cycles)]
    )
    return order_u, order_l


def loss_options(
    family: Family, variant: Variant, generator: torch.Generator, alpha: Any, temperature: Any
) -> dict[str, Any]:
    """The family objective's arguments but the rows: its settings of `variant`, the generator,
    and alpha and the temperature as given (floats, or 0-d tensors when compiled or graphed, so
    that a changing value is an input, not a recompilation or a constant baked into the
    graph)."""
    return {
        **family.objective_settings(variant),
        "alpha": alpha,
        "temperature": temperature,
        "generator": generator,
    }


class OneSeed:
    """The step of `variant` at its own seed: eager (the reference), with a compiled loss, or, on
    CUDA, forward, backward and the update captured once as a graph and replayed (graphs.py)."""

    def __init__(
        self,
        variant: Variant,
        splits: Splits,
        device: torch.device,
        *,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        check_precision(precision)
        if cuda_graphs and variant.batch_rule == "alternating":
            raise ValueError(
                "CUDA graphs replay one batch shape; batch_rule=alternating has two (labelled "
                "and unlabelled steps): run it without --cuda-graphs"
            )
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; this run is on {device}")
        check_schedule_and_clipping(variant, stacked=False, cuda_graphs=cuda_graphs)
        self.variant, self.device = variant, device
        self.seeds: tuple[int, ...] = (variant.seed,)
        self.precision, self.compiled, self.cuda_graphs = precision, compile, cuda_graphs
        self.family = get_family(variant.family)
        objective = self.family.objective
        self.loss_fn = torch.compile(objective) if compile else objective
        torch.manual_seed(variant.seed)
        self.model = self.family.build(variant, splits.train_x.shape[1]).to(device)
        self.generator = torch.Generator(device).manual_seed(variant.seed)
        self.optimizer = make_optimizer(variant, self.model.parameters(), capturable=cuda_graphs)
        self.x_l, self.y_l, self.x_u, self.std_l, self.std_u = labelled_split(
            splits, variant.labels, variant.label_draw, device
        )
        self.n_labelled, self.n_unlabelled = len(self.x_l), len(self.x_u)
        self.graphed: Any = None  # the captured step (graphs.py), made at the first update

    def epoch_order(self, steps: int, labelled_batch: int) -> tuple[Tensor, Tensor]:
        return epoch_order(
            self.generator, self.n_unlabelled, self.n_labelled, steps, labelled_batch
        )

    def loss_terms(
        self, idx_u: Tensor, idx_l: Tensor, alpha: Any, temperature: Any, cache: bool = True
    ) -> dict[str, Tensor]:
        """The family's objective on a batch drawn by index (`cache`: autocast's weight cache,
        which a CUDA graph capture must do without)."""
        options = loss_options(self.family, self.variant, self.generator, alpha, temperature)
        binarize = self.variant.binarize
        x_l = draw_rows(self.x_l, self.std_l, (idx_l,), self.generator, binarize)
        x_u = draw_rows(self.x_u, self.std_u, (idx_u,), self.generator, binarize)
        with autocast(self.device, self.precision, cache):
            return self.loss_fn(self.model, x_l, self.y_l[idx_l], x_u, **options)

    def forward_backward(self, batch: Batch) -> Tensor:
        scalar = torch.tensor if self.compiled else float
        alpha, temperature = scalar(batch.alpha), scalar(batch.temperature)
        terms = self.loss_terms(batch.idx_u, batch.idx_l, alpha, temperature)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        return torch.stack([terms[t].detach() for t in TERMS])[None]

    def train(self, batch: Batch, before_update: BeforeUpdate | None = None) -> Tensor:
        """Eager, `eager_train`. With CUDA graphs forward, backward and the update are one
        replay of the step captured at the first call (after any resume), and `before_update`
        sees the terms after it."""
        if not self.cuda_graphs:
            return eager_train(self, batch, before_update)
        if self.graphed is None:
            from harness.training.graphs import GraphedStep

            self.graphed = GraphedStep(self, len(batch.idx_u), len(batch.idx_l))
        values = self.graphed(batch)[None]
        if before_update is not None:
            before_update(values)
        return values

    @torch.no_grad()
    def predictions(self, x: Tensor) -> Tensor:
        self.model.eval()
        predicted = predict(self.family, self.model, x)
        self.model.train()
        return predicted[None]

    def seed_state(self, i: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_seed_states(self, states: Sequence[dict[str, Any]]) -> None:
        (state,) = states
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.generator.set_state(state["generator"])
