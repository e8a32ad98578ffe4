"""A dataset of generated arrays, registered from one file outside the package as a researcher
would register their own: 8x8 grey-level images of 10 classes, each class a fixed random
prototype plus noise, 2,000 training and 500 test images. It needs no data root and no files."""

import torch

from harness.config.variants import get_variant, register_variant
from harness.training.data import Dataset, register_dataset


def read(root):
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.rand(10, 64, generator=generator)

    def draw(n):
        y = torch.arange(n) % 10
        return 0.7 * prototypes[y] + 0.3 * torch.rand(n, 64, generator=generator), y

    return (*draw(2_000), *draw(500))


register_dataset(
    Dataset(name="blobs", shape=(1, 8, 8), read=read, description="generated 8x8 prototypes")
)


@register_variant
def exact_blobs():
    """Exact M2 on the generated 8x8 images."""
    return get_variant("exact").replace(dataset="blobs", hidden=64, z_dim=8, batch_size=64)


@register_variant
def gumbel_blobs():
    """Gumbel-softmax M2 on the generated 8x8 images."""
    return exact_blobs().replace(estimator="gumbel", temperature=0.5)
