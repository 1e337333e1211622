"""MS-COCO captions (Chen et al., "Microsoft COCO Captions", 2015): an annotation JSON
(``images`` with ``id`` and ``file_name``, ``annotations`` with ``image_id`` and ``caption``,
e.g. ``annotations/captions_train2017.json``) and the folder of its images (``image_dir``,
relative to the JSON's folder unless absolute, e.g. ``../train2017``).

``captions_per_image="all"`` (the default) makes one sample per (image, caption) pair — every
caption COCO has, as retrieval evaluation and CLIP fine-tuning on COCO use them;
``"first"`` keeps one sample per image with its first caption in file order, so that no image
appears twice in a batch. Samples follow the order of ``images``, an image's captions the
order of ``annotations``; images without a caption are left out.

Each ``file_name`` must be a path relative to ``image_dir`` that stays inside it (no ``../``,
no absolute path) unless ``allow_outside_root = true``, so that an annotation file from
elsewhere cannot make a run read files outside its image folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from fedsim.data.base import DataError, FileImages, ImageCaptionIndex, check_flag, inside_root, parse_params

CAPTIONS_PER_IMAGE = ("all", "first")


@dataclass(frozen=True)
class CocoParams:
    image_dir: str | None = None
    captions_per_image: str = "all"
    allow_outside_root: bool = False


def _fields(path: str, entry, what: str, i: int, fields: tuple[str, ...]):
    if not isinstance(entry, dict) or any(f not in entry for f in fields):
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(f"coco: {path} {what}[{i}] needs {', '.join(fields)} (found: {found})")
    return tuple(entry[f] for f in fields)


def open_coco(path, **params) -> ImageCaptionIndex:
    """The COCO caption samples of the annotation file ``path``."""
    p = parse_params("coco", CocoParams, params)
    if not isinstance(p.image_dir, str) or not p.image_dir:
        raise ValueError(
            f"coco: image_dir={p.image_dir!r} must name the folder of the JSON's images, e.g. '../train2017'"
        )
    if p.captions_per_image not in CAPTIONS_PER_IMAGE:
        raise ValueError(
            f"coco: captions_per_image={p.captions_per_image!r} is unknown; "
            f"allowed: {', '.join(CAPTIONS_PER_IMAGE)}"
        )
    allow_outside = check_flag("coco", "allow_outside_root", p.allow_outside_root)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(
            f"coco: {path} is missing; put a COCO captions JSON (e.g. captions_train2017.json) there"
        )
    image_dir = os.path.join(os.path.dirname(os.path.abspath(path)), p.image_dir)
    if not os.path.isdir(image_dir):
        raise DataError(f"coco: image_dir {image_dir} is missing; put the images of {path} there")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"coco: {path} is not JSON ({exc}); put a COCO captions JSON there") from exc
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations")):
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"coco: {path} needs lists 'images' and 'annotations' (found: {found})")

    file_of, entry_of = {}, {}
    for i, entry in enumerate(doc["images"]):
        image_id, file_name = _fields(path, entry, "images", i, ("id", "file_name"))
        if not isinstance(file_name, str) or not file_name:
            raise DataError(
                f"coco: {path} images[{i}] has file_name={file_name!r}; put the image's path "
                "relative to image_dir (a non-empty string) there"
            )
        if not allow_outside and not inside_root(file_name):
            raise DataError(
                f"coco: {path} images[{i}] has file_name={file_name!r}, outside image_dir {image_dir}; "
                "allowed: a path relative to image_dir that stays inside it (move the image there), "
                "or set allow_outside_root = true in the source's params"
            )
        file_of[image_id] = file_name
        entry_of[image_id] = i
    captions_of: dict = {image_id: [] for image_id in file_of}
    for i, entry in enumerate(doc["annotations"]):
        image_id, caption = _fields(path, entry, "annotations", i, ("image_id", "caption"))
        if not isinstance(caption, str):
            raise DataError(f"coco: {path} annotations[{i}] has caption={caption!r}; put a string there")
        if image_id not in captions_of:
            raise DataError(
                f"coco: {path} annotations[{i}] has image_id={image_id!r}, which no entry of 'images' has"
            )
        captions_of[image_id].append(caption)
    keep = None if p.captions_per_image == "all" else 1
    files, captions, entries = [], [], []
    for image_id, texts in captions_of.items():
        for caption in texts[:keep]:
            files.append(file_of[image_id])
            captions.append(caption)
            entries.append(entry_of[image_id])
    if not files:
        raise DataError(f"coco: {path} has no captioned image; put a COCO captions JSON with annotations there")
    source = f"coco {path}"
    images = FileImages(
        image_dir, tuple(files), source, listed_at=np.asarray(entries, dtype=np.int64), listing="images[{}]"
    )
    return ImageCaptionIndex(source=source, captions=captions, images=images)
