"""Figures of one trained model: the test confusion matrix and the M2 'analogies' grid."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from harness.training.model import M2


def run_figures(model: M2, test_x: torch.Tensor, test_y: torch.Tensor, name: str) -> dict:
    """The figures a finished run logs, by file name (the analogies where M2 models the
    pixels, not M1's features)."""
    figures = {"confusion_matrix.png": confusion_matrix(model, test_x, test_y, name)}
    if model.likelihood == "bernoulli" and test_x.shape[1] == 28 * 28:
        figures["analogies.png"] = analogies(model, test_x, name)
    return figures


def confusion_counts(true: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """counts[i, j] = images of class i predicted as j."""
    return torch.bincount(true * classes + predicted, minlength=classes**2).reshape(
        classes, classes
    )


def confusion_matrix(model: M2, x: torch.Tensor, y: torch.Tensor, name: str) -> Figure:
    """The confusion matrix of `model`'s classifier on the images `x` of classes `y`."""
    model.eval()
    counts = confusion_counts(y, model.predict(x), model.num_classes)
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


@torch.no_grad()
def analogies(model: M2, images: torch.Tensor, name: str, rows: int = 8) -> Figure:
    """Each row: a test image, then its style z (the mean of q(z|x,y) at the predicted y)
    decoded with every class y, as in Kingma et al. 2014, Figure 1."""
    x = images[:rows]
    model.eval()
    K = model.num_classes
    y_pred = F.one_hot(model.classify(x).argmax(-1), K).to(x.dtype)
    z, _ = model.encode(model.encoder_x_part(x), y_pred)
    y_all = torch.eye(K, dtype=x.dtype, device=x.device)
    decoded = torch.sigmoid(model.decode(z.repeat_interleave(K, 0), y_all.repeat(rows, 1)))
    images = torch.cat([x[:, None], decoded.view(rows, K, -1)], dim=1).view(rows, K + 1, 28, 28)
    grid = images.permute(0, 2, 1, 3).reshape(rows * 28, (K + 1) * 28).cpu().numpy()
    figure, ax = plt.subplots(figsize=((K + 1) * 0.6, rows * 0.6))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([14 + 28 * i for i in range(K + 1)], ["x", *map(str, range(K))])
    ax.set_yticks([])
    ax.set_title(f"{name}: test image, then its style with each y", fontsize=8)
    figure.tight_layout()
    return figure
