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

``check_images`` fully decodes every image of some views before a run (the config check calls
it), remembering the files that decoded in the fedsim cache folder so that a second check of
unchanged files only stats them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
# A check that decodes more images than this reports its progress on stderr, every
# PROGRESS_EVERY images (small sets stay quiet).
PROGRESS_OVER = 2000
PROGRESS_EVERY = 1000
# The images that decoded, under the fedsim cache folder; bump the version when the format
# (or what "decoded" means) changes, so that an old file is ignored.
CHECKED_FILE = "checked-images.json"
CHECKED_VERSION = 1


class DataError(ValueError):
    """A dataset on disk is missing, malformed or empty; the message names the path and what
    belongs there."""


class ImageStore(Protocol):
    """Where a source's images live. ``open(row)`` returns a PIL image (decoded lazily, usable
    as a context manager) for sample ``row`` of the whole source; ``where(row)`` says where
    that image is, for error messages.

    A store may also define ``origin(row)``: (absolute path of the file that holds the image,
    member within it or "" for a whole file), the key under which ``check_images`` remembers
    that the image decoded, or None where the pixels are held in memory and there is nothing
    on disk to check. A store without ``origin`` is decoded on every check."""

    def open(self, row: int) -> Image.Image: ...

    def where(self, row: int) -> str: ...


@dataclass(frozen=True)
class FileImages:
    """Images as files: sample ``row`` is ``root / files[row]``. ``listed_at`` optionally
    holds, per sample, where the file that lists the images names it (a CSV line, a COCO
    ``images`` entry), written into ``where`` with the format ``listing``."""

    root: str
    files: tuple[str, ...]
    source: str
    listed_at: np.ndarray | None = None
    listing: str = "line {}"

    def _path(self, row: int) -> str:
        return os.path.join(self.root, self.files[row])

    def open(self, row: int) -> Image.Image:
        return Image.open(self._path(row))

    def origin(self, row: int) -> tuple[str, str]:
        return os.path.abspath(self._path(row)), ""

    def where(self, row: int) -> str:
        listed = "" if self.listed_at is None else " " + self.listing.format(int(self.listed_at[row]))
        return f"{self.source}{listed}, sample {row}: image file {self._path(row)}"


def inside_root(name: str) -> bool:
    """Whether the image path ``name``, read from a data file and relative to a folder, stays
    inside that folder once ``a/../b`` is normalised: an absolute path or one that climbs
    above the folder (``../x.png``, ``a/../../x.png``) does not. Symlinks are not resolved."""
    if os.path.isabs(name):
        return False
    norm = os.path.normpath(name)
    return norm != os.pardir and not norm.startswith(os.pardir + os.sep)


def check_flag(source: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{source}: {name}={value!r} must be true or false")
    return value


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


def _decode(store: ImageStore, row: int) -> Image.Image:
    """Sample ``row``'s image fully decoded to RGB (raises one of ``_UNREADABLE`` if it cannot
    be): what ``materialize`` uses and what ``check_images`` tries."""
    with store.open(row) as image:
        return image.convert("RGB")


def _load(store: ImageStore, row: int, size: int) -> np.ndarray:
    try:
        rgb = _decode(store, row)
    except _UNREADABLE as exc:
        raise DataError(f"{store.where(row)} is not a readable image ({exc}); {_IMAGE_HINT}") from exc
    return np.asarray(clip_resize(rgb, size)).transpose(2, 0, 1)


def _checked_path() -> Path:
    # fedsim.pretrain.cache_dir's folder; that module imports the config, which this leaf
    # may not, so the two read the same variable.
    return Path(os.environ.get("FEDSIM_CACHE", Path.home() / ".cache" / "fedsim")) / CHECKED_FILE


def _read_checked() -> dict[str, tuple[int, int, set[str]]]:
    """{absolute path: (size, mtime_ns, members that decoded)} of the cache file; empty when
    there is none or it cannot be read (it only saves work, so a damaged one is ignored)."""
    try:
        with open(_checked_path(), encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("version") != CHECKED_VERSION:
            return {}
        return {file: (size, mtime, set(members)) for file, (size, mtime, members) in doc["files"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_checked(fresh: dict[str, tuple[int, int, set[str]]]) -> None:
    """Merge ``fresh`` into the cache file (an entry whose size or mtime changed is replaced,
    not merged) and write it atomically (a temporary file, then ``os.replace``), so that a
    process reading it, or a second check running beside this one, never sees half a file."""
    files = _read_checked()  # again: another process may have added to it since
    for file, (size, mtime, members) in fresh.items():
        old = files.get(file)
        if old is not None and old[:2] == (size, mtime):
            members = members | old[2]
        files[file] = (size, mtime, members)
    path = _checked_path()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    doc = {"version": CHECKED_VERSION, "files": {f: [s, m, sorted(ms)] for f, (s, m, ms) in files.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException as e:
        # no fragment left behind, whatever stopped the write (a Ctrl-C too)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(e, OSError):
            raise
        # The check itself passed; a cache folder that cannot be written only means the next
        # check decodes again.


def check_images(*views: ImageCaptionIndex) -> None:
    """Decode every image the ``views`` hold, each distinct image once however many samples
    share it, so that a missing, non-image or truncated file fails before a run instead of
    leaving a client that fails every round. Raises ``DataError`` with the number of
    unreadable images, the first five (each with its store's ``where``: file and sample) and
    what to do.

    Decoding means ``_decode``, exactly what ``materialize`` does: PIL's ``verify()`` reads
    the headers only and passes a PNG or JPEG whose pixel data is cut short. Each image that
    decoded is remembered by its store's ``origin`` (absolute path and member) with the file's
    size and mtime_ns in ``checked-images.json`` under the fedsim cache folder
    (``$FEDSIM_CACHE``, default ``~/.cache/fedsim``), so a later check of unchanged files only
    stats them and a file that changed is decoded again. Images held in memory (``origin``
    None) need no check; a store without ``origin`` is decoded every time. Above
    ``PROGRESS_OVER`` images to decode, progress goes to stderr."""
    checked = _read_checked()
    stamps: dict[str, tuple[int, int] | None] = {}
    pending: dict = {}  # distinct image → (store, first row, (file, member, stamp) or None)
    seen: set = set()
    for view in views:
        store = view._images
        origin = getattr(store, "origin", None)
        for row in view._rows.tolist():
            if origin is None:
                pending.setdefault((id(store), row), (store, row, None))
                continue
            found = origin(row)
            if found is None or found in seen:
                continue
            seen.add(found)
            file, member = found
            if file not in stamps:
                try:
                    st = os.stat(file)
                    stamps[file] = (st.st_size, st.st_mtime_ns)
                except OSError:
                    stamps[file] = None  # missing: decoding it names the problem
            stamp, known = stamps[file], checked.get(file)
            if stamp is not None and known is not None and known[:2] == stamp and member in known[2]:
                continue
            pending[found] = (store, row, None if stamp is None else (file, member, stamp))
    total = len(seen) + sum(1 for key in pending if key not in seen)
    show = len(pending) > PROGRESS_OVER
    if show:
        sources = ", ".join(sorted({v.source for v in views}))
        print(f"checking images: decoding {len(pending):,} of {sources}", file=sys.stderr, flush=True)
    problems, fresh = [], {}
    for done, (store, row, cache_key) in enumerate(pending.values(), 1):
        try:
            _decode(store, row)
        except _UNREADABLE as exc:
            problems.append(f"{store.where(row)} ({exc})")
        else:
            if cache_key is not None:
                file, member, (size, mtime) = cache_key
                fresh.setdefault(file, (size, mtime, set()))[2].add(member)
        if show and (done % PROGRESS_EVERY == 0 or done == len(pending)):
            print(f"checking images: {done:,}/{len(pending):,} decoded", file=sys.stderr, flush=True)
    if fresh:
        _write_checked(fresh)
    if problems:
        shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
        raise DataError(f"{len(problems)} of {total} images are not readable: {shown}; {_IMAGE_HINT}")


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
    view's images; ``check`` decodes every image of the view (``check_images``)."""

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
        """``check_images`` of this view: every image decodes, or a ``DataError`` names the
        ones that do not."""
        check_images(self)


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
