"""A labelled folder-per-class image set, as torchvision's ``ImageFolder`` reads it
(``root/<class>/**/<image>``), for zero-shot evaluation: class ids follow the sorted folder
names, class names are those names with ``_`` as a space, and each image's caption is a
template (CLIP's CIFAR prompts unless ``templates`` says otherwise) drawn from ``seed`` and
filled with its class name.

Images are the files with torchvision's image extensions, any case; others are ignored, as
are hidden folders and files (``.ipynb_checkpoints`` is not a class). Samples follow the
class order, then the sorted paths within a class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from fedsim.data.base import (
    CIFAR_TEMPLATES,
    DataError,
    FileImages,
    ImageCaptionIndex,
    check_seed,
    check_templates,
    parse_params,
    template_captions,
)

# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageFolderParams:
    templates: tuple[str, ...] = CIFAR_TEMPLATES
    seed: int = 0


def _images_under(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        )
    return sorted(found)


def open_imagefolder(path, **params) -> ImageCaptionIndex:
    """The labelled images under the folder ``path``."""
    p = parse_params("imagefolder", ImageFolderParams, params)
    templates = check_templates("imagefolder", p.templates)
    seed = check_seed("imagefolder", p.seed)
    root = os.fspath(path)
    if not os.path.isdir(root):
        raise DataError(f"imagefolder: {root} is missing; put one folder of images per class there")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder: {root} has no class folders; put one folder of images per class there")
    files, labels = [], []
    for label, name in enumerate(classes):
        images = _images_under(os.path.join(root, name))
        if not images:
            raise DataError(
                f"imagefolder: class folder {os.path.join(root, name)} holds no image "
                f"({', '.join(IMAGE_EXTENSIONS)}); put its images there or remove it"
            )
        files.extend(os.path.relpath(f, root) for f in images)
        labels.extend([label] * len(images))
    labels = np.asarray(labels, dtype=np.int64)
    classnames = tuple(c.replace("_", " ") for c in classes)
    source = f"imagefolder {root}"
    return ImageCaptionIndex(
        source=source,
        captions=template_captions(labels, classnames, templates, seed),
        images=FileImages(os.path.abspath(root), tuple(files), source),
        labels=labels,
        classnames=classnames,
        templates=templates,
    )
