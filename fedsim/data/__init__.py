"""Datasets and partitioners (``PARTITIONS``). ``load_split`` is the one factory from a config to
generated data, ``open_dataset`` to a real one."""

from fedsim.data.base import DataError, ImageCaptionData, ImageCaptionIndex, ImageCaptions, check_images
from fedsim.data.partition import PARTITIONS, Partitioner, dirichlet, iid, pathological, quantity_skew, sample
from fedsim.data.shapes import (
    COLORS,
    SHAPES,
    ZERO_SHOT_TEMPLATES,
    ShapesData,
    caption_for,
    generate,
    target_captions,
)
from fedsim.data.sources import DATASETS, open_dataset

# Each split of an experiment comes from its own stream of the same generator, so that the
# test split is never a copy of training data but is drawn from the same distribution.
SPLITS = {"pretrain": 1, "train": 2, "test": 3, "root": 4}


def load_split(name: str, split: str, size: int, seed: int) -> ShapesData:
    """The one factory from a config's ``data.name`` to a split of ``size`` samples."""
    if name != "shapes":
        raise ValueError(f"data.name={name!r} is unknown; allowed: shapes")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; allowed: {', '.join(SPLITS)}")
    return generate(size, seed * len(SPLITS) * 4 + SPLITS[split])

__all__ = [
    "COLORS",
    "DATASETS",
    "DataError",
    "PARTITIONS",
    "Partitioner",
    "ImageCaptionData",
    "ImageCaptionIndex",
    "ImageCaptions",
    "SHAPES",
    "ZERO_SHOT_TEMPLATES",
    "ShapesData",
    "caption_for",
    "check_images",
    "dirichlet",
    "generate",
    "iid",
    "load_split",
    "open_dataset",
    "pathological",
    "quantity_skew",
    "sample",
    "target_captions",
]
