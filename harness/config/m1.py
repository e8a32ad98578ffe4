"""M1's settings: what one trained M1 is (Kingma et al. 2014's VAE on the pixels, whose latent
features M2 models in M1+M2), read off an M1+M2 variant. Every M1+M2 run whose variant gives
the same settings shares one M1, trained once (`identity.m1_key` names it): the M2 seed, label
count, estimator and the feature threshold `m1_min_std` are not among them."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from harness.config.variants import Variant


@dataclass(frozen=True)
class M1Settings:
    dataset: str
    validation: int  # the held-out images: never trained on, they decide when M1 stops
    hidden: int
    layers: int
    z_dim: int
    lr: float
    batch_size: int
    epochs: int
    patience: int
    min_delta: float
    seed: int
    # added later, so they have defaults: left out of params() (so of the M1 key) at them, a
    # committed M1 keeps its name
    binarize: bool = True  # the pixels binarised afresh in every batch; False: grey levels
    weight_decay: float = 0.0  # Adam's L2 term
    clip: float = 0.0  # each gradient element clipped to [-clip, clip]; 0: none
    batch_norm: bool = False  # after each hidden layer of the encoder and the decoder
    dropout: float = 0.0

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if LATER_DEFAULTS.get(k, object()) != v}


# the settings added later: those with a default
LATER_DEFAULTS = {f.name: f.default for f in fields(M1Settings) if f.default is not MISSING}


def m1_settings(variant: Variant) -> M1Settings:
    """The M1 that `variant` (features=m1) reads its features from."""
    return M1Settings(
        dataset=variant.dataset,
        validation=variant.validation,
        hidden=variant.m1_hidden,
        layers=variant.m1_layers,
        z_dim=variant.m1_z_dim,
        lr=variant.m1_lr,
        batch_size=variant.m1_batch_size,
        epochs=variant.m1_epochs,
        patience=variant.m1_patience,
        min_delta=variant.m1_min_delta if variant.m1_patience else 0.0,
        seed=variant.m1_seed,
        binarize=variant.m1_binarize,
        weight_decay=variant.m1_weight_decay,
        clip=variant.m1_clip,
        batch_norm=variant.m1_batch_norm,
        dropout=variant.m1_dropout,
    )
