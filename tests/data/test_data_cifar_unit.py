"""CIFAR sources (``fedsim.data.cifar``) from batches each test writes: the layouts, class names,
labels, where a sample is named, the pixels held in memory, and the messages in full."""

import pickle

import numpy as np
import pytest
import torch

from fedsim.data import DataError, open_dataset
from fedsim.data.cifar import LAYOUTS, SAFE_GLOBALS, ArrayImages, BatchUnpickler

HINT = "put the file of that name from the extracted CIFAR python archive there"


def _dump(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))


def _pixels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _cifar100(root, train_labels=(0, 3), test_labels=(2,)):
    folder = root / "cifar-100-python"
    _dump({b"fine_label_names": [b"apple", b"aquarium_fish", b"maple_tree", b"bear"],
           b"coarse_label_names": [b"x"]}, folder / "meta")
    _dump({b"data": _pixels(len(train_labels)), b"fine_labels": list(train_labels),
           b"coarse_labels": [0] * len(train_labels)}, folder / "train")
    _dump({b"data": _pixels(len(test_labels), 1), b"fine_labels": list(test_labels),
           b"coarse_labels": [0] * len(test_labels)}, folder / "test")
    return folder


def test_cifar100_reads_fine_labels_and_class_names_with_spaces(tmp_path):
    folder = _cifar100(tmp_path)
    index = open_dataset("cifar100", tmp_path, templates=["a {}"])
    assert index.classnames == ("apple", "aquarium fish", "maple tree", "bear")
    assert index.labels.tolist() == [0, 3] and index.captions == ("a apple", "a bear")
    assert index.source == f"cifar100 train ({folder})"
    test = open_dataset("cifar100", tmp_path, split="test", templates=["a {}"])
    assert test.captions == ("a maple tree",) and test.source == f"cifar100 test ({folder})"


def test_the_pixels_are_held_in_memory_and_materialize_at_32_returns_them(tmp_path):
    _cifar100(tmp_path)
    index = open_dataset("cifar100", tmp_path)
    store = index._images
    assert isinstance(store, ArrayImages) and store.origin(0) is None
    assert store.where(1) == f"{index.source}, sample 1"
    images = index.materialize(32).images
    assert torch.equal(images, torch.from_numpy(_pixels(2).reshape(2, 3, 32, 32)))
    assert store.open(1).size == (32, 32)
    assert np.array_equal(np.asarray(store.open(1)), _pixels(2)[1].reshape(3, 32, 32).transpose(1, 2, 0))


def test_the_batches_folder_itself_may_be_the_path(tmp_path):
    folder = _cifar100(tmp_path)
    index = open_dataset("cifar100", folder, split="test")
    assert index.labels.tolist() == [2] and index.source == f"cifar100 test ({folder})"


def test_a_root_with_neither_the_folder_nor_the_meta_file_is_named(tmp_path):
    with pytest.raises(DataError) as e:
        open_dataset("cifar100", tmp_path)
    assert str(e.value) == (f"cifar100: {tmp_path} holds neither cifar-100-python/ nor meta; put torchvision's "
                            "extracted CIFAR python archive (the folder cifar-100-python) there")
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path)
    assert "holds neither cifar-10-batches-py/ nor batches.meta" in str(e.value)


def test_a_missing_batch_and_a_meta_without_names_are_named(tmp_path):
    folder = _cifar100(tmp_path)
    (folder / "test").unlink()
    with pytest.raises(DataError) as e:
        open_dataset("cifar100", tmp_path, split="test")
    assert str(e.value) == f"{folder / 'test'} is missing; {HINT}"
    _dump({b"label_names": [b"a"]}, folder / "meta")
    with pytest.raises(DataError) as e:
        open_dataset("cifar100", tmp_path)
    assert str(e.value) == f"{folder / 'meta'} lacks fine_label_names (found: ['label_names']); {HINT}"


def test_labels_must_fit_the_class_names(tmp_path):
    _cifar100(tmp_path, train_labels=(0, 3))
    assert open_dataset("cifar100", tmp_path).labels.tolist() == [0, 3]  # the last class is allowed
    folder = _cifar100(tmp_path, train_labels=(0, 4))
    with pytest.raises(DataError) as e:
        open_dataset("cifar100", tmp_path)
    assert str(e.value) == (f"cifar100: {folder} train batches hold 2 images and 2 labels "
                            f"(need as many, ≥ 1, each in [0, 3]); {HINT}")


def test_the_split_must_be_the_layouts(tmp_path):
    with pytest.raises(ValueError) as e:
        open_dataset("cifar100", tmp_path, split="val")
    assert str(e.value) == "cifar100: split='val' is unknown; allowed: train, test"
    assert LAYOUTS["cifar10"][1]["train"] == tuple(f"data_batch_{i}" for i in range(1, 6))


def test_float_labels_with_a_fraction_name_the_first_one(tmp_path):
    folder = _cifar100(tmp_path)
    _dump({b"data": _pixels(3), b"fine_labels": np.array([1.0, 2.5, 0.25])}, folder / "train")
    with pytest.raises(DataError) as e:
        open_dataset("cifar100", tmp_path)
    assert str(e.value) == f"{folder / 'train'}: labels hold non-integer values (e.g. 2.5); {HINT}"


def test_the_unpickler_admits_only_array_construction():
    assert ("numpy", "ndarray") in SAFE_GLOBALS and ("builtins", "eval") not in SAFE_GLOBALS
    unpickler = BatchUnpickler.__new__(BatchUnpickler)
    with pytest.raises(pickle.UnpicklingError) as e:
        unpickler.find_class("os", "system")
    assert str(e.value) == ("it names os.system, which a CIFAR batch never holds (refused, not run; "
                            "allowed: dicts, lists, bytes, str, numbers and numpy arrays)")
    bytes_ = unpickler.find_class("builtins", "bytes")
    assert bytes_() == b"" and bytes_(b"ab") == b"ab"
    with pytest.raises(pickle.UnpicklingError) as e:
        bytes_(3)
    assert str(e.value) == "it calls bytes(n), which a CIFAR batch never holds (refused)"
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray
    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is \
        unpickler.find_class("numpy._core.multiarray", "_reconstruct")
