"""The registry of real image–caption datasets: a name → ``open(path, **params)`` returning an
``ImageCaptionIndex``. Each opener validates its own parameters (an unknown one is a
``ValueError`` that lists the allowed ones) and its files (``DataError``)."""

from __future__ import annotations

from collections.abc import Callable

from fedsim.data.base import ImageCaptionIndex
from fedsim.data.captions_csv import open_csv
from fedsim.data.cifar import open_cifar10, open_cifar100
from fedsim.data.coco import open_coco
from fedsim.data.imagefolder import open_imagefolder
from fedsim.data.wds import open_webdataset

DATASETS: dict[str, Callable[..., ImageCaptionIndex]] = {
    "cifar10": open_cifar10,
    "cifar100": open_cifar100,
    "csv": open_csv,
    "coco": open_coco,
    "webdataset": open_webdataset,
    "imagefolder": open_imagefolder,
}

# Sources that hold their own labelled test split, and the params that select it (the
# evaluation set when a config has no ``[eval]``; every other source needs one).
TEST_SPLITS: dict[str, dict] = {
    "cifar10": {"split": "test"},
    "cifar100": {"split": "test"},
}


def open_dataset(name: str, path, **params) -> ImageCaptionIndex:
    """The index of dataset ``name`` (a ``DATASETS`` key) at ``path``."""
    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is unknown; allowed: {', '.join(DATASETS)}")
    return DATASETS[name](path, **params)
