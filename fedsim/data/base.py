"""Real image–caption datasets: a cheap index with lazy images, and the in-memory batch.

An ``ImageCaptionIndex`` holds what is small — one caption per sample, optional int labels,
optional class names and zero-shot templates — and an ``ImageStore`` that can open any one
sample's image (a file, a member of a tar shard, a row of an array). ``subset`` gives a view
that shares all of it; ``materialize`` decodes only the view's images and returns an
``ImageCaptionData``, the in-memory type with the same API as ``ShapesData`` (``images``,
``labels``, ``captions``, ``len``, ``subset``), so that a client loads its own partition and
never a whole split.

Every source's opener (one module per format, registered in ``fedsim.data.sources``) takes
``path`` and keyword parameters, validated here by ``parse_params`` against the source's
parameter dataclass; bad input raises ``DataError`` naming the path and what belongs there.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

# Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
# ICML 2021: the 18 prompt templates of CLIP's CIFAR-10/100 zero-shot evaluation
# (github.com/openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet.ipynb, data/prompts.md).
CIFAR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

# What PIL may raise on a missing, truncated or non-image file (some plugins raise
# SyntaxError on broken chunks, the size guard raises DecompressionBombError).
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_IMAGE_HINT = "put a JPEG/PNG/WebP image there or remove the sample"


class DataError(ValueError):
    """A dataset on disk is missing, malformed or empty; the message names the path and what
    belongs there."""


class ImageStore(Protocol):
    """Where a source's images live. ``open(row)`` returns a PIL image (decoded lazily, usable
    as a context manager) for sample ``row`` of the whole source; ``where(row)`` says where
    that image is, for error messages."""

    def open(self, row: int) -> Image.Image: ...

    def where(self, row: int) -> str: ...


@dataclass(frozen=True)
class FileImages:
    """Images as files: sample ``row`` is ``root / files[row]``."""

    root: str
    files: tuple[str, ...]
    source: str

    def _path(self, row: int) -> str:
        return os.path.join(self.root, self.files[row])

    def open(self, row: int) -> Image.Image:
        return Image.open(self._path(row))

    def where(self, row: int) -> str:
        return f"{self.source}, sample {row}: image file {self._path(row)}"


def clip_resize(image: Image.Image, size: int) -> Image.Image:
    """CLIP's eval transform on a PIL image: bicubic resize of the shorter side to ``size``
    (the longer to ⌊size · long / short⌋), then a ``size`` × ``size`` centre crop — exactly
    torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` as open_clip composes them,
    so pixels match the model's own preprocessing of the original file."""
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _load(store: ImageStore, row: int, size: int) -> np.ndarray:
    try:
        with store.open(row) as image:
            rgb = image.convert("RGB")
    except _UNREADABLE as exc:
        raise DataError(f"{store.where(row)} is not a readable image ({exc}); {_IMAGE_HINT}") from exc
    return np.asarray(clip_resize(rgb, size)).transpose(2, 0, 1)


class ImageCaptions(Protocol):
    """What clients, triggers, poisoning and evaluation use of a split, whatever its source:
    ``ShapesData`` and ``ImageCaptionData`` are both one."""

    images: torch.Tensor
    captions: tuple[str, ...]
    labels: torch.Tensor | None

    def __len__(self) -> int: ...

    def subset(self, indices) -> ImageCaptions: ...


@dataclass(frozen=True)
class ImageCaptionData:
    """A materialised split: ``images`` uint8 (n, 3, S, S), ``captions`` one string per image,
    ``labels`` int64 (n,) class ids or None where the source has no classes. The same API as
    ``ShapesData`` (less its ``colors``), so triggers, poisoning and evaluation take either."""

    images: torch.Tensor
    captions: tuple[str, ...]
    labels: torch.Tensor | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (n, 3, S, S), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        n = self.images.shape[0]
        if len(self.captions) != n or (self.labels is not None and self.labels.shape != (n,)):
            labels = None if self.labels is None else tuple(self.labels.shape)
            raise ValueError(
                f"{n} images need {n} captions and labels; got {len(self.captions)} captions, "
                f"labels of shape {labels}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices) -> ImageCaptionData:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageCaptionData(
            images=self.images[idx],
            captions=tuple(self.captions[i] for i in idx.tolist()),
            labels=None if self.labels is None else self.labels[idx],
        )


class ImageCaptionIndex:
    """An image–caption dataset without its pixels: captions (surrounding whitespace removed),
    optional int labels, class names and zero-shot templates, and the ``ImageStore`` that
    opens each image. ``subset`` is a view sharing all of it; ``materialize`` decodes the
    view's images; ``check`` opens every image of the view without decoding it."""

    def __init__(
        self,
        *,
        source: str,
        captions: Sequence[str],
        images: ImageStore,
        labels: Sequence[int] | np.ndarray | None = None,
        classnames: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
    ):
        self.source = source
        self._captions = tuple(c.strip() for c in captions)
        self._images = images
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.classnames = None if classnames is None else tuple(classnames)
        self.templates = None if templates is None else tuple(templates)
        self._rows = np.arange(len(self._captions))

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"ImageCaptionIndex({self.source}, {len(self)} samples)"

    @property
    def captions(self) -> tuple[str, ...]:
        return tuple(self._captions[r] for r in self._rows.tolist())

    @property
    def labels(self) -> torch.Tensor | None:
        """int64 (n,) class ids of the view — what a partitioner needs, without any image."""
        return None if self._labels is None else torch.from_numpy(self._labels[self._rows])

    def subset(self, indices) -> ImageCaptionIndex:
        """The samples at ``indices`` (positions in this view), sharing this index's storage."""
        view = copy.copy(self)
        view._rows = self._rows[torch.as_tensor(indices, dtype=torch.long).numpy()]
        return view

    def materialize(self, image_size: int) -> ImageCaptionData:
        """Decode this view's images to RGB, ``clip_resize`` them to ``image_size`` and return
        them with their captions and labels."""
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size={image_size!r} must be a positive int")
        images = np.empty((len(self), 3, image_size, image_size), dtype=np.uint8)
        for k, row in enumerate(self._rows.tolist()):
            images[k] = _load(self._images, row, image_size)
        return ImageCaptionData(images=torch.from_numpy(images), captions=self.captions, labels=self.labels)

    def check(self) -> None:
        """Open every image of the view and verify its header (cheap: no pixel decoding), so a
        missing or non-image file fails before a run instead of in the middle of it; a file
        whose pixel data alone is corrupt still fails in ``materialize``."""
        problems = []
        for row in self._rows.tolist():
            try:
                with self._images.open(row) as image:
                    image.verify()
            except _UNREADABLE as exc:
                problems.append(f"{self._images.where(row)} ({exc})")
        if problems:
            shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
            raise DataError(f"{len(problems)} of {len(self)} images are not readable: {shown}; {_IMAGE_HINT}")


def template_captions(labels: np.ndarray, classnames: Sequence[str], templates: Sequence[str], seed: int):
    """One caption per sample: a template drawn uniformly (numpy generator seeded with
    ``seed``) filled with the sample's class name."""
    choice = np.random.default_rng(seed).integers(0, len(templates), len(labels))
    return tuple(templates[t].format(classnames[y]) for t, y in zip(choice.tolist(), labels.tolist()))


def check_templates(source: str, templates) -> tuple[str, ...]:
    if isinstance(templates, str) or not templates or not all(
        isinstance(t, str) and t.count("{}") == 1 for t in templates
    ):
        raise ValueError(
            f"{source}: templates={templates!r} must be a non-empty list of strings, each with "
            "one '{}' for the class name"
        )
    return tuple(templates)


def check_seed(source: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{source}: seed={seed!r} must be an int")
    return seed


def parse_params(source: str, params_type: type, params: dict):
    """``params_type(**params)`` after rejecting any name it does not declare."""
    allowed = [f.name for f in dataclasses.fields(params_type)]
    for name in params:
        if name not in allowed:
            raise ValueError(f"{source}: unknown parameter {name!r}; allowed: {', '.join(allowed)}")
    return params_type(**params)
