"""Datasets and partitioners (``PARTITIONS``). ``load_split`` is the one factory from a config to
generated data, ``open_dataset`` to a real one."""

from fedsim.data.base import DataError, ImageCaptionData, ImageCaptionIndex, ImageCaptions, check_images
from fedsim.data.partition import PARTITIONS, Partitioner, dirichlet, iid, pathological, quantity_skew, sample
from fedsim.data.shapes import (
    COLORS,
    SHAPES,
    ZERO_SHOT_TEMPLATES,
    ShapesData,
    ShapesSplit,
    caption_for,
    generate,
    generate_lazily,
    target_captions,
)
from fedsim.data.sources import DATASETS, TEST_SPLITS, open_dataset

# Data fedsim generates itself (``load_split``): a name, no path, no params.
GENERATED = ("shapes",)

# Each split of an experiment comes from its own stream of the same generator, so that the
# test split is never a copy of training data but is drawn from the same distribution.
SPLITS = {"pretrain": 1, "train": 2, "test": 3, "root": 4}


def load_split(name: str, split: str, size: int, seed: int, *, lazy: bool = False) -> ShapesData | ShapesSplit:
    """The one factory from a config's ``data.name`` to a split of ``size`` samples; ``lazy``:
    its pixels rendered only for the samples a ``subset`` asks for (``ShapesSplit``: the same
    bytes), for a training split that clients take their parts of."""
    if name not in GENERATED:
        raise ValueError(f"data.name={name!r} is unknown; allowed: {', '.join(GENERATED)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; allowed: {', '.join(SPLITS)}")
    stream = seed * len(SPLITS) * 4 + SPLITS[split]
    return generate_lazily(size, stream) if lazy else generate(size, stream)


def check_source(name: str, path, params: dict, *, generated: bool = True) -> None:
    """Raise ValueError unless (``name``, ``path``, ``params``) name data a section may read:
    generated data (``GENERATED``, when ``generated``) with no path and no params, or a
    ``DATASETS`` source with a path (its own opener checks the path and the params)."""
    if generated and name in GENERATED:
        if path is not None or params:
            raise ValueError(f"name={name!r} is generated: it takes no path and no params")
        return
    if name not in DATASETS:
        allowed = [*(GENERATED if generated else ()), *DATASETS]
        raise ValueError(f"name={name!r} is unknown; allowed: {', '.join(allowed)}")
    if path is None:
        raise ValueError(f"name={name!r} needs path = the dataset's file or folder")

__all__ = [
    "COLORS",
    "DATASETS",
    "GENERATED",
    "TEST_SPLITS",
    "check_source",
    "DataError",
    "PARTITIONS",
    "Partitioner",
    "ImageCaptionData",
    "ImageCaptionIndex",
    "ImageCaptions",
    "SHAPES",
    "ZERO_SHOT_TEMPLATES",
    "ShapesData",
    "ShapesSplit",
    "caption_for",
    "check_images",
    "dirichlet",
    "generate",
    "generate_lazily",
    "iid",
    "load_split",
    "open_dataset",
    "pathological",
    "quantity_skew",
    "sample",
    "target_captions",
]
