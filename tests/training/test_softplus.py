"""The harness's softplus (softplus.py) against torch's: values, gradients, under vmap and in a
compiled function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.training.networks import ACTIVATIONS
from harness.training.softplus import Softplus, softplus


def test_values_and_gradients_match_torch_softplus_across_its_range():
    x = torch.cat([torch.linspace(-40.0, 40.0, 20_001), 5 * torch.randn(10_000)])
    x.requires_grad_(True)
    ours = softplus(x)
    (grad_ours,) = torch.autograd.grad(ours.sum(), x)
    theirs = F.softplus(x)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-7, rtol=1e-6)
    assert (ours >= 0).all() and torch.isfinite(grad_ours).all()


def test_large_inputs_stay_exact_and_finite():
    x = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], requires_grad=True)
    y = softplus(x)
    y.sum().backward()
    assert y.tolist() == pytest.approx([0.0, 0.0, 0.6931472, 100.0, 1e4], abs=1e-6)
    assert x.grad.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0], abs=1e-7)


def test_batched_by_vmap_as_the_stacked_seeds_run_it():
    x = torch.randn(3, 50, 7)

    def f(row):
        return softplus(row).square().sum()

    batched = torch.func.vmap(torch.func.grad(f))(x)
    one_by_one = torch.stack([torch.func.grad(f)(row) for row in x])
    torch.testing.assert_close(batched, one_by_one)
    torch.testing.assert_close(batched, 2 * F.softplus(x) * torch.sigmoid(x), atol=1e-6, rtol=1e-6)


def test_compiles_to_the_same_values():
    x = torch.randn(64, 32)
    compiled = torch.compile(lambda t: softplus(t).sum(-1), fullgraph=True)
    torch.testing.assert_close(compiled(x), F.softplus(x).sum(-1), atol=1e-5, rtol=1e-6)


def test_the_softplus_units_are_this_softplus():
    layer = ACTIVATIONS["softplus"]()
    assert isinstance(layer, Softplus)
    x = torch.randn(10, 5)
    torch.testing.assert_close(layer(x), F.softplus(x), atol=1e-6, rtol=1e-6)
