"""The network registry: every registered network builds, reads images and learns; the default
networks are the tutorial's, weight for weight; a user's network plugs in by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.config.networks import NETWORKS
from harness.config.variants import VariantError, create_variant
from harness.families.m2 import M2
from harness.training.data import synthetic_splits
from harness.training.networks import BUILDERS, NetworkSpec, build_network, register_network
from harness.training.stacked import StackedSeeds
from harness.training.trainer import Trainer


def test_every_network_a_variant_can_name_has_a_builder():
    assert set(NETWORKS) == set(BUILDERS) >= {"mlp", "cnn"}


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_registered_network_maps_images_to_logits_and_passes_gradients(name, batch_norm):
    torch.manual_seed(0)
    net = build_network(name, 784, 10, NetworkSpec((64, 32), "relu", batch_norm, 0.1))
    x = torch.rand(8, 784)
    out = net(x)
    assert out.shape == (8, 10)
    out.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_the_default_networks_are_the_tutorials_weight_for_weight():
    """One hidden layer of 512 each, drawn in the order the tutorial's M2 draws them, so a seed
    gives the initial weights every committed record started from."""
    torch.manual_seed(7)
    model = M2.from_variant(create_variant("exact"))
    torch.manual_seed(7)
    reference = [
        nn.Linear(784, 512), nn.Linear(512, 10),  # q(y|x)
        nn.Linear(784, 512), nn.Linear(10, 512, bias=False),  # q(z|x,y): x part, y part
        nn.Linear(512, 64), nn.Linear(512, 64),  # its mean and log-variance
        nn.Linear(64, 512), nn.Linear(10, 512, bias=False), nn.Linear(512, 784),  # p(x|y,z)
    ]  # fmt: skip
    ours = list(model.parameters())
    theirs = [p for layer in reference for p in layer.parameters()]
    assert len(ours) == len(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_depths_widths_and_choices_come_from_the_variant():
    variant = create_variant(
        "gumbel-0.5",
        {"classifier_layers": 2, "classifier_hidden": 128, "encoder_layers": 2, "z_dim": 128,
         "decoder_layers": 3, "encoder_net": "cnn"},
    )  # fmt: skip
    model = M2.from_variant(variant)
    widths = [m.out_features for m in model.classifier if isinstance(m, nn.Linear)]
    assert widths == [128, 128, 10]
    assert any(isinstance(m, nn.Conv2d) for m in model.enc_x.modules())
    assert model.enc_loc.out_features == 128
    assert sum(isinstance(m, nn.Linear) for m in model.dec_out.modules()) == 3  # 2 hidden + out


def test_a_deeper_classifier_with_batch_norm_and_dropout_trains_on_generated_images():
    splits = synthetic_splits(torch.device("cpu"), train=600, test=200)
    variant = create_variant(
        "gumbel-0.5",
        {"classifier_layers": 2, "batch_norm": True, "dropout": 0.2, "epochs": 2, "labels": 100},
    )
    trainer = Trainer(variant, splits, "cpu", max_steps=6, progress=False)
    (reports,) = trainer.fit()
    assert len(reports) == 2 and all(r.losses["loss"] == r.losses["loss"] for r in reports)
    first = Trainer(variant, splits, "cpu", max_steps=6, progress=False).fit()[0]
    assert first[-1].test_accuracy == reports[-1].test_accuracy  # seeded dropout: it repeats


def test_a_network_registered_by_a_user_is_chosen_by_name():
    @register_network(description="one linear layer: a logistic regression")
    def linear_probe(in_dim: int, out_dim: int, spec: NetworkSpec) -> nn.Module:
        return nn.Linear(in_dim, out_dim)

    try:
        model = M2.from_variant(create_variant("exact", {"classifier_net": "linear-probe"}))
        assert isinstance(model.classifier, nn.Linear)
        assert NETWORKS["linear-probe"] == "one linear layer: a logistic regression"
    finally:
        BUILDERS.pop("linear-probe"), NETWORKS.pop("linear-probe")
    with pytest.raises(VariantError, match="'linear-probe' is not a registered network"):
        create_variant("exact", {"classifier_net": "linear-probe"})


def test_stacked_seeds_refuse_batch_norm_in_one_line():
    splits = synthetic_splits(torch.device("cpu"), train=600, test=200)
    variant = create_variant("exact", {"batch_norm": True})
    with pytest.raises(ValueError, match="stacked seeds train without batch norm"):
        StackedSeeds(variant, [0, 1], splits, torch.device("cpu"))


def test_batch_norm_and_dropout_reach_the_networks_regularised_names_and_the_decoder_swaps():
    """Issue 53: batch norm and dropout reached the classifier and the encoder, always; now the
    networks they reach are named, the decoder (dropout only) among them, and the decoder's
    later layers are a network of the registry like the others."""

    def count(module: nn.Module, kind: type) -> int:
        return sum(isinstance(m, kind) for m in module.modules())

    only_classifier = {"dropout": 0.2, "batch_norm": True, "regularised": "classifier"}
    model = M2.from_variant(create_variant("exact", {**only_classifier, "classifier_layers": 2}))
    assert count(model.classifier, nn.Dropout) == 2 and count(model.enc_x, nn.Dropout) == 0
    assert count(model.classifier, nn.BatchNorm1d) == 2
    decoder = {"dropout": 0.3, "regularised": "decoder", "decoder_layers": 3}
    model = M2.from_variant(create_variant("exact", decoder))
    assert count(model.dec_out, nn.Dropout) == 2 and count(model.classifier, nn.Dropout) == 0
    with pytest.raises(VariantError, match="would mix each image's K copies"):
        create_variant("exact", {"batch_norm": True, "regularised": "classifier,decoder"})
    with pytest.raises(VariantError, match="regularised names networks among"):
        create_variant("exact", {"dropout": 0.1, "regularised": "classifier,clasifier"})

    @register_network
    def tiny_decoder(in_dim: int, out_dim: int, spec: NetworkSpec) -> nn.Module:
        return nn.Sequential(nn.Linear(in_dim, 7), nn.Linear(7, out_dim))

    try:
        model = M2.from_variant(create_variant("exact", {"decoder_net": "tiny-decoder"}))
        assert model.dec_out[0].out_features == 7
    finally:
        BUILDERS.pop("tiny-decoder"), NETWORKS.pop("tiny-decoder")
