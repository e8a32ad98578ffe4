from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from harness.config.variants import VariantError, create_variant, load_user_variants
from harness.training.data import (
    DataError,
    balanced_label_subset,
    load_splits,
    read_idx,
    resolve_data_root,
)
from harness.training.trainer import Trainer


def test_mnist_loads_whole_onto_the_device(mnist):
    assert mnist.train_x.shape == (60_000, 784) and mnist.test_x.shape == (10_000, 784)
    assert mnist.train_x.dtype == torch.float32
    assert mnist.train_x.min() == 0.0 and mnist.train_x.max() == 1.0
    assert torch.bincount(mnist.test_y).tolist()[:2] == [980, 1135]


def test_validation_is_the_end_of_the_training_file(data_root, mnist):
    held = load_splits("mnist", data_root, validation=10_000, download=False)
    assert len(held.train_x) == 50_000 and len(held.val_x) == 10_000
    assert torch.equal(held.val_x, mnist.train_x[50_000:])


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_the_raw_files_read_as_torchvision_reads_them(data_root, name, folder):
    """The harness reads the raw files itself (torchvision's import costs every run's start);
    what it reads is torchvision's tensors, bit for bit."""
    datasets = pytest.importorskip("torchvision.datasets")
    splits = load_splits(name, data_root, download=False)
    train = getattr(datasets, folder)(str(data_root), train=True, download=False)
    test = getattr(datasets, folder)(str(data_root), train=False, download=False)
    assert torch.equal(splits.train_x, train.data.reshape(60_000, -1).float() / 255)
    assert torch.equal(splits.test_x, test.data.reshape(10_000, -1).float() / 255)
    assert torch.equal(splits.train_y, train.targets) and splits.train_y.dtype == torch.int64
    assert torch.equal(splits.test_y, test.targets)


def test_an_idx_file_reads_back_its_bytes_and_a_damaged_one_is_refused(tmp_path):
    values = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8, generator=torch.Generator())
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (3, 4, 5))
    good = tmp_path / "good-idx3-ubyte"
    good.write_bytes(header + values.numpy().tobytes())
    assert torch.equal(read_idx(good), values)
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(header + values.numpy().tobytes()[:-1])
    with pytest.raises(DataError, match="59 bytes after its header"):
        read_idx(short)
    floats = tmp_path / "floats-idx1-ubyte"
    floats.write_bytes(bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + bytes(4))
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        read_idx(floats)


def test_fashion_mnist_loads(data_root):
    fashion = load_splits("fashion-mnist", data_root, download=False)
    assert fashion.train_x.shape == (60_000, 784)


def test_label_subset_is_balanced_and_seeded(mnist):
    a = balanced_label_subset(mnist.train_y, 100, 10, seed=0)
    assert len(a) == 100 and len(set(a.tolist())) == 100
    assert torch.bincount(mnist.train_y[a], minlength=10).tolist() == [10] * 10
    assert torch.equal(a, balanced_label_subset(mnist.train_y, 100, 10, seed=0))
    assert not torch.equal(a, balanced_label_subset(mnist.train_y, 100, 10, seed=1))
    big = balanced_label_subset(mnist.train_y, 3000, 10, seed=0)
    assert torch.bincount(mnist.train_y[big], minlength=10).tolist() == [300] * 10


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (55, "positive multiple of 10"),
        (0, "positive multiple"),
        (60_000, "need 6000 images of class 0, but the training split holds 5923"),
    ],
)
def test_impossible_label_counts(mnist, labels, message):
    with pytest.raises(DataError, match=message):
        balanced_label_subset(mnist.train_y, labels, 10, seed=0)


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_splits("mnist", tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "--data-root" in message and "M2_DATA_ROOT" in message


def test_corrupt_data_is_caught_by_md5(tmp_path, data_root):
    shutil.copytree(data_root / "MNIST", tmp_path / "MNIST")
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is corrupt"):
        load_splits("mnist", tmp_path, download=False)


def test_data_root_from_flag_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("M2_DATA_ROOT", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    assert resolve_data_root("/elsewhere").as_posix() == "/elsewhere"
    monkeypatch.delenv("M2_DATA_ROOT")
    assert resolve_data_root(None).as_posix() == "data"


def test_a_dataset_registered_from_an_outside_file_trains_without_a_data_root(tmp_path):
    load_user_variants(Path(__file__).with_name("generated_dataset.py"))
    splits = load_splits("blobs", tmp_path / "no-such-root", validation=200)
    assert splits.train_x.shape == (1_800, 64) and splits.test_x.shape == (500, 64)
    assert len(splits.val_x) == 200 and 0 <= splits.train_x.min() <= splits.train_x.max() <= 1
    variant = create_variant("exact-blobs", {"epochs": 1, "labels": 100})
    trainer = Trainer(variant, splits, "cpu", max_steps=30, progress=False)
    (report,) = trainer.run_epoch()
    assert report.test_accuracy > 0.3  # its classes are learnable
    with pytest.raises(VariantError, match="dataset 'blobz' is not a registered dataset"):
        create_variant("exact", {"dataset": "blobz"})
