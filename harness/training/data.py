"""Datasets held whole on the training device, the registry that names them, and the seeded,
balanced labelled subset.

A dataset is a `Dataset` descriptor, registered by name (`register_dataset`, as a family or a
network is): its images' shape, its classes, the raw files it reads (with their MD5s) and how
it reads its training and test images as flattened floats in [0, 1]. MNIST and Fashion-MNIST are
torchvision's (raw files under `<root>/<Name>/raw`, verified against the publishers' MD5s); a
dataset with no files (generated arrays, a researcher's own) needs no data root. Splits are moved
to the device once: batches are drawn by index, with no DataLoader.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from harness.config.datasets import DATASETS as DATASET_NAMES
from harness.config.datasets import name_dataset
from harness.config.variants import NUM_CLASSES
from harness.files import DATA_ROOT_ENV


class DataError(RuntimeError):
    """A dataset that is missing, corrupt, or cannot give what was asked of it."""


Images = tuple[Tensor, Tensor, Tensor, Tensor]  # train_x, train_y, test_x, test_y


@dataclass(frozen=True)
class Dataset:
    """What the harness knows of a dataset: `shape` (channels, height, width) of an image and
    its `classes`; `read(root)` its training and test images, each flattened to floats in
    [0, 1], with their int64 classes, on the CPU; the raw `files` it reads under
    `<root>/<folder>/raw`, by MD5 (none: it needs no data root), and `download(root)` to fetch
    them (None: they cannot be downloaded)."""

    name: str
    shape: tuple[int, int, int]
    read: Callable[[Path], Images]
    classes: int = NUM_CLASSES
    folder: str = ""
    files: dict[str, str] = field(default_factory=dict)
    download: Callable[[Path], None] | None = None
    description: str = ""


DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    """Register `dataset` under its name, so that a variant's `dataset` can name it."""
    if dataset.classes != NUM_CLASSES:
        raise DataError(
            f"dataset {dataset.name!r} has {dataset.classes} classes; the harness's variants "
            f"and tables have {NUM_CLASSES} so far"
        )
    DATASETS[dataset.name] = dataset
    name_dataset(dataset.name, dataset.description or DATASET_NAMES.get(dataset.name, ""))
    return dataset


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def flatten_images(images: Tensor) -> Tensor:
    """Images of 8-bit grey levels, (N, H, W) or (N, C, H, W), as (N, C*H*W) floats in [0, 1]."""
    return images.reshape(len(images), -1).to(torch.float32) / 255.0


def read_idx(path: Path) -> Tensor:
    """The unsigned bytes of an IDX file (LeCun's format of MNIST's raw files): two zero bytes,
    the type 0x08, the number of dimensions, each dimension as a big-endian 32-bit integer,
    then the bytes in C order. Torchvision's reader gives the same tensor, but importing
    torchvision costs about 2 s of every run's start (its models import torch._dynamo), and the
    files were checked against their MD5s first."""
    data = path.read_bytes()
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise DataError(f"{path} holds {len(body)} bytes after its header, not {dims}'s")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _torchvision(name: str, folder: str, files: dict[str, str]) -> Dataset:
    """One of torchvision's 28x28 grey-level datasets (`folder` is its class's name):
    downloaded by torchvision, read from its raw files (`read_idx`)."""

    def read(root: Path) -> Images:
        raw = root / folder / "raw"
        images = [
            flatten_images(read_idx(raw / f"{s}-images-idx3-ubyte")) for s in ("train", "t10k")
        ]
        labels = [read_idx(raw / f"{s}-labels-idx1-ubyte").long() for s in ("train", "t10k")]
        return images[0], labels[0], images[1], labels[1]

    def download(root: Path) -> None:
        from torchvision import datasets

        for train in (True, False):
            getattr(datasets, folder)(str(root), train=train, download=True)

    return register_dataset(Dataset(name, (1, 28, 28), read, NUM_CLASSES, folder, files, download))


# MD5 of each uncompressed raw file, as torchvision and the publishers give them
_torchvision(
    "mnist",
    "MNIST",
    {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
)
_torchvision(
    "fashion-mnist",
    "FashionMNIST",
    {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
)


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
    descriptor = get_dataset(dataset)
    folder = root / descriptor.folder / "raw"
    for name, expected in descriptor.files.items():
        path = folder / name
        if not path.exists():
            raise DataError(_missing_message(descriptor, root))
        stamp = (path.resolve(), path.stat().st_size, path.stat().st_mtime_ns)
        if stamp in _VERIFIED:  # checked already in this process, and unchanged since
            continue
        if _md5(path) != expected:
            raise DataError(
                f"{path} is corrupt: its MD5 is not the published {expected}. "
                f"Replace it with the original file (or delete it to download again)."
            )
        _VERIFIED.add(stamp)


def _missing_message(dataset: Dataset, root: Path) -> str:
    folder = root.resolve() / dataset.folder / "raw"
    return (
        f"{dataset.name} is not under {folder} and could not be downloaded. Put the "
        f"uncompressed files {', '.join(dataset.files)} there, or point --data-root / "
        f"${DATA_ROOT_ENV} at a folder that holds {dataset.folder}/raw/."
    )


def ensure_dataset(
    dataset: str, root: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """Download `dataset` if it is missing (and allowed), then check its MD5s; the data root
    (a dataset with no files needs none: it is returned unchecked)."""
    descriptor = get_dataset(dataset)
    root = resolve_data_root(root)
    if not descriptor.files:
        return root
    raw = root / descriptor.folder / "raw"
    if not all((raw / name).exists() for name in descriptor.files):
        if not root.is_dir():  # a typo is not a place to download into: nothing is created
            raise DataError(
                f"the data root {root.resolve()} does not exist; point --data-root / "
                f"${DATA_ROOT_ENV} at the folder that holds {descriptor.folder}/raw/"
            )
        if not download or descriptor.download is None:
            raise DataError(_missing_message(descriptor, root))
        made = [f for f in (root / descriptor.folder, raw) if not f.exists()]
        try:
            descriptor.download(root)
        except Exception as err:  # offline, or a mirror refused: one clear line
            for folder in reversed(made):  # leave no empty folder behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            reason = " ".join(str(err).split())[:200]
            raise DataError(
                f"{_missing_message(descriptor, root)} (download failed: {reason})"
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
    train_x, train_y, test_x, test_y = (t.to(device) for t in get_dataset(dataset).read(root))
    if not 0 <= validation < len(train_x):
        raise DataError(f"validation must be in [0, {len(train_x)}), got {validation}")
    cut = len(train_x) - validation
    return Splits(
        train_x=train_x[:cut],
        train_y=train_y[:cut],
        val_x=train_x[cut:],
        val_y=train_y[cut:],
        test_x=test_x,
        test_y=test_y,
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
