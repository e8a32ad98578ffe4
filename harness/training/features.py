"""M1's features: the splits M2 trains on in M1+M2, read off a trained M1's posterior q(z1|x).

Every image becomes the mean and standard deviation of q(z1|x): training draws z1 afresh from
them in every batch (step.draw_rows), validation and test use the means. The latent dimensions M1
does not use (their posterior mean hardly varies over the training images: a standard deviation
of at most `min_std`) are dropped, as Kingma et al. dropped them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.training.data import Splits
from harness.training.m1 import M1


@torch.no_grad()
def posterior_moments(model: M1, x: Tensor, chunk: int = 10_000) -> tuple[Tensor, Tensor]:
    """The mean and standard deviation of q(z1|x) for every row of `x`."""
    model.eval()
    parts = [model.posterior(part) for part in x.split(chunk)]
    loc = torch.cat([loc for loc, _ in parts])
    std = torch.cat([(0.5 * logvar).exp() for _, logvar in parts])
    return loc, std


def used_dimensions(train_loc: Tensor, min_std: float) -> Tensor:
    """The latent dimensions whose posterior mean varies over the training images with a
    standard deviation above `min_std` (all of them for 0)."""
    return (train_loc.std(dim=0) > min_std).nonzero().flatten()


def feature_splits(splits: Splits, model: M1, min_std: float) -> Splits:
    """`splits` with every image replaced by M1's features on the used dimensions: the
    training rows' posterior means with their standard deviations (`train_std`), the
    validation and test rows' means."""
    train_loc, train_std = posterior_moments(model, splits.train_x)
    keep = used_dimensions(train_loc, min_std)
    if not len(keep):
        raise ValueError(
            f"no latent dimension of M1 has a posterior-mean std above m1_min_std={min_std}; "
            "lower it (0 keeps every dimension)"
        )

    def means(x: Tensor) -> Tensor:  # of the used dimensions; none for no images
        return posterior_moments(model, x)[0][:, keep] if len(x) else x.new_zeros(0, len(keep))

    return Splits(
        train_x=train_loc[:, keep],
        train_y=splits.train_y,
        val_x=means(splits.val_x),
        val_y=splits.val_y,
        test_x=means(splits.test_x),
        test_y=splits.test_y,
        train_std=train_std[:, keep],
    )
