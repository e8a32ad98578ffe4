"""A model family written outside the package, in one file, as a researcher would: softmax
regression on the pixels, trained on the labelled rows alone. It registers the family and a
variant of it; nothing else in the harness names it."""

import torch.nn.functional as F
from torch import nn

from harness.config.variants import get_variant, register_variant
from harness.training.family import Family, register_family


def build(variant, x_dim):
    return nn.Linear(x_dim, 10)


def objective(model, x_l, y_l, x_u, *, alpha, temperature, generator, label_smoothing):
    classification = F.cross_entropy(model(x_l), y_l, label_smoothing=label_smoothing)
    zero = classification.new_zeros(())
    return {
        "loss": alpha * classification,
        "labelled": zero,
        "unlabelled": zero,
        "classification": classification,
    }


register_family(
    Family(
        name="softmax-regression",
        description="softmax regression on the labelled images alone",
        build=build,
        objective=objective,
        objective_settings=lambda variant: {"label_smoothing": 0.1},
        classify=lambda model, x: model(x),
    )
)


@register_variant
def softmax_regression():
    """Softmax regression on the 100 labelled images: a floor for every M2."""
    return get_variant("supervised-only").replace(family="softmax-regression", lr=1e-2)
