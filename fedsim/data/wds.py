"""WebDataset shards (Aizman et al., "High Performance I/O For Large Scale Deep Learning",
2019; the format of LAION and img2dataset): uncompressed tar files in which the members that
share a key (the name up to the first dot of its base name) form one sample, here an image
(``.jpg``/``.jpeg``/``.png``/``.webp``, first found in ``image_extensions`` order) and its
caption (``.txt``, UTF-8).

``path`` is one shard, a brace pattern (``shards/{000000..000099}.tar``, expanded by the
``webdataset`` package as its ``WebDataset(urls)`` does) or a glob (``shards/*.tar``, sorted).

The ``webdataset`` package only streams shards front to back, and a client must load its own
partition without reading every image of the split. So ``open_webdataset`` reads each shard's
tar headers once with ``tarfile`` (the data of the ``.txt`` members only, for the captions),
keys and extensions split exactly as ``webdataset`` splits them (its ``base_plus_ext``, lower-
cased extensions, ``__…__`` metadata members skipped), and keeps each image's byte offset and
size; ``materialize`` then seeks to and reads only the images it needs. Samples follow shard
order, then the order of their first member within a shard.
"""

from __future__ import annotations

import glob
import io
import os
import re
import tarfile
from dataclasses import dataclass

import numpy as np
from PIL import Image
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext

from fedsim.data.base import DataError, ImageCaptionIndex, parse_params


@dataclass(frozen=True)
class WdsParams:
    image_extensions: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
    caption_extension: str = "txt"


@dataclass(frozen=True)
class TarImages:
    """Images as members of tar shards: sample ``row`` is ``size[row]`` bytes at
    ``offset[row]`` of ``shards[shard[row]]``."""

    shards: tuple[str, ...]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    keys: tuple[str, ...]
    source: str

    def open(self, row: int) -> Image.Image:
        with open(self.shards[self.shard[row]], "rb") as f:
            f.seek(int(self.offset[row]))
            return Image.open(io.BytesIO(f.read(int(self.size[row]))))

    def origin(self, row: int) -> tuple[str, str]:
        # a key names one sample of its shard, so the shard's path, size and mtime with the
        # key say whether this image was decoded before
        return os.path.abspath(self.shards[self.shard[row]]), self.keys[row]

    def where(self, row: int) -> str:
        return f"{self.source}, sample {row}: key {self.keys[row]!r} in shard {self.shards[self.shard[row]]}"


def shard_paths(pattern: str) -> tuple[str, ...]:
    """The shards a path, brace pattern or glob names, each checked to exist."""
    paths = []
    for name in expand_urls(pattern):
        if any(c in name for c in "*?["):
            matched = sorted(glob.glob(name))
            if not matched:
                raise DataError(f"webdataset: no file matches {name}; put .tar shards there")
            paths.extend(matched)
        elif not os.path.isfile(name):
            raise DataError(f"webdataset: shard {name} is missing; put a .tar shard there")
        else:
            paths.append(name)
    return tuple(paths)


# webdataset.tariterators.tar_file_iterator's ``skip_meta``: members named __…__ or inside a
# top-level __…__/ folder are not samples
_SKIP_META = re.compile(r"__[^/]*__($|/)")


def _index_shard(shard: str, p: WdsParams):
    """(key, caption, image offset, image size) of each sample of ``shard``."""
    try:
        tar = tarfile.open(shard, mode="r:")
    except tarfile.ReadError as exc:
        raise DataError(
            f"webdataset: {shard} is not an uncompressed tar ({exc}); put a .tar shard there"
        ) from exc
    with tar:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        for member in tar:
            name = member.name
            if not member.isreg() or ("/" not in name and name.startswith("__") and name.endswith("__")):
                continue
            if _SKIP_META.match(name):  # webdataset's tar_file_iterator skip_meta: a __…__/ folder too
                continue
            key, ext = base_plus_ext(name)
            if key is None:
                continue
            ext = ext.lower()
            if ext in members.setdefault(key, {}):
                raise DataError(
                    f"webdataset: {shard} holds {key}.{ext} twice; keep one member per key and extension"
                )
            members[key][ext] = member
        samples = []
        for key, by_ext in members.items():
            image = next((by_ext[e] for e in p.image_extensions if e in by_ext), None)
            caption = by_ext.get(p.caption_extension)
            if image is None or caption is None:
                raise DataError(
                    f"webdataset: {shard} key {key!r} has members {sorted(by_ext)}; each sample needs "
                    f"an image ({' or '.join(p.image_extensions)}) and a caption ({p.caption_extension})"
                )
            try:
                text = tar.extractfile(caption).read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"webdataset: {shard} member {caption.name} is not UTF-8 text; put the caption there"
                ) from exc
            samples.append((key, text, image.offset_data, image.size))
    return samples


def open_webdataset(path, **params) -> ImageCaptionIndex:
    """The image–caption samples of the shards ``path`` names."""
    p = parse_params("webdataset", WdsParams, params)
    if isinstance(p.image_extensions, str) or not p.image_extensions or not all(
        isinstance(e, str) and e for e in p.image_extensions
    ):
        raise ValueError(
            f"webdataset: image_extensions={p.image_extensions!r} must be a non-empty list, e.g. ['jpg', 'png']"
        )
    if not isinstance(p.caption_extension, str) or not p.caption_extension:
        raise ValueError(
            f"webdataset: caption_extension={p.caption_extension!r} must be an extension, e.g. 'txt'"
        )
    shards = shard_paths(os.fspath(path))
    keys, captions, shard_ids, offsets, sizes = [], [], [], [], []
    for i, shard in enumerate(shards):
        for key, caption, offset, size in _index_shard(shard, p):
            keys.append(key)
            captions.append(caption)
            shard_ids.append(i)
            offsets.append(offset)
            sizes.append(size)
    if not keys:
        raise DataError(f"webdataset: the shards {path} name hold no samples; put image + .txt members in them")
    source = f"webdataset {path}"
    return ImageCaptionIndex(
        source=source,
        captions=captions,
        images=TarImages(
            shards=shards,
            shard=np.asarray(shard_ids, dtype=np.int32),
            offset=np.asarray(offsets, dtype=np.int64),
            size=np.asarray(sizes, dtype=np.int64),
            keys=tuple(keys),
            source=source,
        ),
    )
