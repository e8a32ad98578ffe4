"""Datasets held whole on the training device, and the seeded, balanced labelled subset.

Images come from torchvision's MNIST / FashionMNIST (raw files under `<root>/<Name>/raw`),
verified against the publishers' MD5s, flattened to 784 floats in [0, 1], and moved to the
device once: batches are drawn by index, with no DataLoader.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.files import DATA_ROOT_ENV

# MD5 of each uncompressed raw file, as torchvision and the publishers give them
RAW_MD5 = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


class DataError(RuntimeError):
    """A dataset that is missing, corrupt, or cannot give what was asked of it."""


@dataclass(frozen=True)
class Splits:
    """A dataset on one device: training, held-out validation and test images with labels."""

    train_x: Tensor  # (N, 784) float in [0, 1]
    train_y: Tensor  # (N,) int64
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    # M1's features (features.py): each training row is the mean of q(z1|x), and this its
    # standard deviation, so that training draws z1 afresh; None for pixels
    train_std: Tensor | None = None


def resolve_data_root(flag: str | os.PathLike | None = None) -> Path:
    """`--data-root`, else $M2_DATA_ROOT, else ./data."""
    return Path(flag or os.environ.get(DATA_ROOT_ENV) or "data").expanduser()


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


_VERIFIED: set[tuple[Path, int, int]] = set()


def verify_raw_files(dataset: str, root: Path) -> None:
    """Raise DataError if a raw file is absent or its MD5 is not the published one."""
    folder = root / FOLDERS[dataset] / "raw"
    for name, expected in RAW_MD5[FOLDERS[dataset]].items():
        path = folder / name
        if not path.exists():
            raise DataError(_missing_message(dataset, root))
        stamp = (path.resolve(), path.stat().st_size, path.stat().st_mtime_ns)
        if stamp in _VERIFIED:  # checked already in this process, and unchanged since
            continue
        if _md5(path) != expected:
            raise DataError(
                f"{path} is corrupt: its MD5 is not the published {expected}. "
                f"Replace it with the original file (or delete it to download again)."
            )
        _VERIFIED.add(stamp)


def _missing_message(dataset: str, root: Path) -> str:
    folder = root.resolve() / FOLDERS[dataset] / "raw"
    files = ", ".join(RAW_MD5[FOLDERS[dataset]])
    return (
        f"{dataset} is not under {folder} and could not be downloaded. Put the uncompressed "
        f"files {files} there, or point --data-root / ${DATA_ROOT_ENV} at a folder that holds "
        f"{FOLDERS[dataset]}/raw/."
    )


def _torchvision_dataset(dataset: str, root: Path, train: bool, download: bool) -> Any:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[dataset]
    return cls(str(root), train=train, download=download)


def ensure_dataset(
    dataset: str, root: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Download `dataset` if it is missing (and allowed), then check its MD5s; the data root."""
    if dataset not in FOLDERS:
        raise DataError(f"unknown dataset {dataset!r}; known: {', '.join(FOLDERS)}")
    root = resolve_data_root(root)
    raw = root / FOLDERS[dataset] / "raw"
    if not all((raw / name).exists() for name in RAW_MD5[FOLDERS[dataset]]):
        if not root.is_dir():  # a typo is not a place to download into: nothing is created
            raise DataError(
                f"the data root {root.resolve()} does not exist; point --data-root / "
                f"${DATA_ROOT_ENV} at the folder that holds {FOLDERS[dataset]}/raw/"
            )
        if not download:
            raise DataError(_missing_message(dataset, root))
        made = [f for f in (root / FOLDERS[dataset], raw) if not f.exists()]
        try:
            for train in (True, False):
                _torchvision_dataset(dataset, root, train, download=True)
        except Exception as err:  # offline, or a mirror refused: one clear line
            for folder in reversed(made):  # leave no empty folder behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            reason = " ".join(str(err).split())[:200]
            raise DataError(
                f"{_missing_message(dataset, root)} (download failed: {reason})"
            ) from None
    verify_raw_files(dataset, root)
    return root


def load_splits(
    dataset: str,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    validation: int = 0,
    download: bool = True,
) -> Splits:
    """Load a dataset onto `device`; the last `validation` training images become the
    validation split (as Kingma et al. hold out the last 10,000)."""
    root = ensure_dataset(dataset, root, download)
    train = _torchvision_dataset(dataset, root, True, download=False)
    test = _torchvision_dataset(dataset, root, False, download=False)

    def flat(images: Tensor) -> Tensor:
        return images.reshape(len(images), -1).to(device=device, dtype=torch.float32) / 255.0

    train_x, train_y = flat(train.data), train.targets.to(device)
    if not 0 <= validation < len(train_x):
        raise DataError(f"validation must be in [0, {len(train_x)}), got {validation}")
    cut = len(train_x) - validation
    return Splits(
        train_x=train_x[:cut],
        train_y=train_y[:cut],
        val_x=train_x[cut:],
        val_y=train_y[cut:],
        test_x=flat(test.data),
        test_y=test.targets.to(device),
    )


def balanced_label_subset(targets: Tensor, labels: int, num_classes: int, seed: int) -> Tensor:
    """Indices of `labels` images, labels // num_classes of each class, drawn by a CPU generator
    seeded with `seed` (so every machine picks the same images). Sorted ascending."""
    if labels <= 0 or labels % num_classes:
        raise DataError(f"labels must be a positive multiple of {num_classes}, got {labels}")
    per_class = labels // num_classes
    targets = targets.cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in range(num_classes):
        pool = torch.nonzero(targets == cls).flatten()
        if len(pool) < per_class:
            raise DataError(
                f"{labels} labels need {per_class} images of class {cls}, "
                f"but the training split holds {len(pool)}"
            )
        chosen.append(pool[torch.randperm(len(pool), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def synthetic_splits(
    device: torch.device,
    train: int = 60_000,
    test: int = 10_000,
    seed: int = 0,
    validation: int = 0,
    signal: float = 0.7,
) -> Splits:
    """MNIST-shaped generated images with balanced labels: each class a fixed random prototype
    of 784 intensities (weighted `signal`) plus noise, so timing gets MNIST's shapes and tests
    get data a classifier can learn, with no files (a small `signal` makes it hard)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, 784, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        x = signal * prototypes[y] + (1 - signal) * torch.rand(n, 784, generator=g)
        return x.to(device), y.to(device)

    return Splits(*draw(train), *draw(validation), *draw(test))
