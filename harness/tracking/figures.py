"""Figures of one trained model: the test confusion matrix, and the image grids its family adds
(M2's 'analogies')."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns
import torch

from harness.config.variants import NUM_CLASSES
from harness.training.family import Family, ImageGrid, predict
from harness.training.networks import square_side

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn


def run_figures(
    family: Family, model: nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, name: str
) -> dict:
    """The figures a finished run logs, by file name."""
    model.eval()
    predicted = predict(family, model, test_x)
    figures = {"confusion_matrix.png": confusion_matrix(test_y, predicted, NUM_CLASSES, name)}
    for file, grid in family.image_grids(model, test_x).items():  # square images only
        figures[file] = image_grid(grid, name)
    return figures


def confusion_counts(true: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """counts[i, j] = images of class i predicted as j."""
    return torch.bincount(true * classes + predicted, minlength=classes**2).reshape(
        classes, classes
    )


def confusion_matrix(
    true: torch.Tensor, predicted: torch.Tensor, classes: int, name: str
) -> Figure:
    """The confusion matrix of a classifier's `predicted` classes against the `true` ones."""
    counts = confusion_counts(true, predicted, classes)
    figure, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(counts.cpu().numpy(), annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax)
    accuracy = counts.diag().sum().item() / counts.sum().item()
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"{name}: test accuracy {100 * accuracy:.2f}%",
    )
    figure.tight_layout()
    return figure


def image_grid(grid: ImageGrid, name: str) -> Figure:
    """`grid`'s images, side by side, a column label under each column."""
    rows, columns, size = grid.images.shape
    side = square_side(size)
    assert side is not None, "image grids are of square grey-level images"
    images = grid.images.reshape(rows, columns, side, side)
    pixels = images.permute(0, 2, 1, 3).reshape(rows * side, columns * side).cpu().numpy()
    figure, ax = plt.subplots(figsize=(columns * 0.6, rows * 0.6))
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([side // 2 + side * i for i in range(columns)], list(grid.columns))
    ax.set_yticks([])
    ax.set_title(f"{name}: {grid.title}", fontsize=8)
    figure.tight_layout()
    return figure
