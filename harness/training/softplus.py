"""softplus(x) = log(1 + e^x), the softplus units' activation and the Bernoulli likelihood's
normaliser, computed on the CPU from vectorised operations.

PyTorch's CPU softplus kernel (its log1p) is slow, and the softplus units and the Bernoulli
likelihood spend much of an M2 step in it. Here, on the CPU,

    softplus(x) = max(x, 0) - log(sigmoid(|x|))                (sigmoid(|x|) in [1/2, 1))

whose sigmoid and log are vectorised, with the gradient d softplus / dx = sigmoid(x); the two
agree with torch's to within 1e-6 (below x of about -17, where softplus(x) < 4e-8, this gives
0). On other devices torch's fused kernel is used as it is. `benchmarks/test_speed.py`
(test_softplus_step) times a step with each, side by side; results/performance.md has the
figures.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _CPUSoftplus(torch.autograd.Function):
    generate_vmap_rule = True  # stacked seeds (torch.func.vmap) run it as it is

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        log_sigmoid = x.abs().sigmoid_().log_()  # in place: two passes over memory, not five
        return x.clamp_min(0).sub_(log_sigmoid)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return torch.sigmoid(x).mul_(grad)


def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x), elementwise: torch's kernel off the CPU, the vectorised form on it."""
    if x.device.type != "cpu":
        return F.softplus(x)
    return _CPUSoftplus.apply(x)


class Softplus(nn.Module):
    """`softplus` as a layer: the softplus units of the networks (nn.Softplus's function)."""

    def forward(self, x: Tensor) -> Tensor:
        return softplus(x)
