"""MS-COCO captions (Chen et al., "Microsoft COCO Captions", 2015): an annotation JSON
(``images`` with ``id`` and ``file_name``, ``annotations`` with ``image_id`` and ``caption``,
e.g. ``annotations/captions_train2017.json``) and the folder of its images (``image_dir``,
relative to the JSON's folder unless absolute, e.g. ``../train2017``).

``captions_per_image="all"`` (the default) makes one sample per (image, caption) pair — every
caption COCO has, as retrieval evaluation and CLIP fine-tuning on COCO use them;
``"first"`` keeps one sample per image with its first caption in file order, so that no image
appears twice in a batch. Samples follow the order of ``images``, an image's captions the
order of ``annotations``; images without a caption are left out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from fedsim.data.base import DataError, FileImages, ImageCaptionIndex, parse_params

CAPTIONS_PER_IMAGE = ("all", "first")


@dataclass(frozen=True)
class CocoParams:
    image_dir: str | None = None
    captions_per_image: str = "all"


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

    file_of = {}
    for i, entry in enumerate(doc["images"]):
        image_id, file_name = _fields(path, entry, "images", i, ("id", "file_name"))
        file_of[image_id] = file_name
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
    files, captions = [], []
    for image_id, texts in captions_of.items():
        for caption in texts[:keep]:
            files.append(file_of[image_id])
            captions.append(caption)
    if not files:
        raise DataError(f"coco: {path} has no captioned image; put a COCO captions JSON with annotations there")
    source = f"coco {path}"
    images = FileImages(image_dir, tuple(files), source)
    return ImageCaptionIndex(source=source, captions=captions, images=images)
