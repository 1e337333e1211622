"""WebDataset shards (``fedsim.data.wds``) written by each test: which member is a sample's image
when there are several, custom extensions, where a sample is named, and every message in full."""

import io
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from fedsim.data import DataError, open_dataset
from fedsim.data.wds import TarImages, shard_paths


def _png(color, size=(4, 4), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


RED, BLUE = (200, 10, 20), (30, 60, 220)


def _shard(path, members) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _message(path, **params) -> str:
    with pytest.raises(DataError) as e:
        open_dataset("webdataset", path, **params)
    return str(e.value)


def _pixel(index, row=0):
    return index.subset([row]).materialize(2).images[0, :, 0, 0].tolist()


def test_the_first_image_extension_in_order_is_the_samples_image(tmp_path):
    path = _shard(tmp_path / "a.tar", [("k.png", _png(RED)), ("k.webp", _png(BLUE, fmt="WEBP")),
                                       ("k.txt", b"cap")])
    assert _pixel(open_dataset("webdataset", path)) == list(RED)  # png before webp
    blue = _pixel(open_dataset("webdataset", path, image_extensions=["webp", "png"]))
    assert np.abs(np.array(blue) - BLUE).max() < 8  # webp is lossy
    # an extension list without the member's: no image
    assert "each sample needs an image (jpg) and a caption (txt)" in _message(path, image_extensions=["jpg"])


def test_a_custom_caption_extension_and_upper_case_extensions(tmp_path):
    path = _shard(tmp_path / "a.tar", [("k.JPG", _png(RED)), ("k.TXT", b"no"), ("k.caption", b"yes")])
    index = open_dataset("webdataset", path, caption_extension="caption", image_extensions=("jpg",))
    assert index.captions == ("yes",) and _pixel(index) == list(RED)
    assert open_dataset("webdataset", path, image_extensions=("jpg",)).captions == ("no",)


def test_samples_of_several_shards_are_read_from_their_own_shard(tmp_path):
    a = _shard(tmp_path / "s0.tar", [("x.txt", b"one"), ("x.png", _png(RED))])
    _shard(tmp_path / "s1.tar", [("y.png", _png(BLUE)), ("y.txt", b"two"), ("z.png", _png(RED)),
                                 ("z.txt", b"three")])
    index = open_dataset("webdataset", str(tmp_path / "s*.tar"))
    assert index.captions == ("one", "two", "three")
    assert [_pixel(index, r) for r in range(3)] == [list(RED), list(BLUE), list(RED)]
    store = index._images
    assert isinstance(store, TarImages) and store.shard.tolist() == [0, 1, 1]
    assert store.keys == ("x", "y", "z")
    assert store.origin(1) == (os.path.abspath(tmp_path / "s1.tar"), "y")
    assert store.where(2) == f"webdataset {tmp_path}/s*.tar, sample 2: key 'z' in shard {tmp_path / 's1.tar'}"
    assert index.source == f"webdataset {tmp_path}/s*.tar"
    assert shard_paths(a) == (a,)


def test_a_glob_matching_nothing_and_a_missing_shard_are_named(tmp_path):
    assert _message(str(tmp_path / "*.tar")) == f"webdataset: no file matches {tmp_path}/*.tar; put .tar shards there"
    assert _message(str(tmp_path / "s.tar")) == f"webdataset: shard {tmp_path}/s.tar is missing; put a .tar shard there"
    (tmp_path / "dir.tar").mkdir()
    assert "is missing" in _message(str(tmp_path / "dir.tar"))  # a folder is no shard


def test_a_key_without_an_image_or_a_caption_is_named_with_what_it_needs(tmp_path):
    path = _shard(tmp_path / "a.tar", [("k.png", _png(RED))])
    assert _message(path) == (f"webdataset: {path} key 'k' has members ['png']; each sample needs an image "
                              "(jpg or jpeg or png or webp) and a caption (txt)")
    path = _shard(tmp_path / "b.tar", [("k.txt", b"x"), ("k.json", b"{}")])
    assert "key 'k' has members ['json', 'txt']" in _message(path)


def test_a_member_twice_and_a_non_utf8_caption_are_named(tmp_path):
    path = _shard(tmp_path / "a.tar", [("k.png", _png(RED)), ("k.txt", b"a"), ("k.PNG", _png(RED))])
    assert _message(path) == f"webdataset: {path} holds k.png twice; keep one member per key and extension"
    path = _shard(tmp_path / "b.tar", [("k.png", _png(RED)), ("k.txt", b"\xff\xfe")])
    assert _message(path) == f"webdataset: {path} member k.txt is not UTF-8 text; put the caption there"


def test_a_shard_that_is_no_tar_and_shards_without_samples_are_named(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"x" * 2000)
    message = _message(tmp_path / "a.tar")
    assert message.startswith(f"webdataset: {tmp_path / 'a.tar'} is not an uncompressed tar (")
    assert message.endswith("); put a .tar shard there")
    path = _shard(tmp_path / "b.tar", [("__key__", b"k")])
    assert _message(path) == (f"webdataset: the shards {path} name hold no samples; "
                              "put image + .txt members in them")


def test_metadata_members_are_skipped_and_folders_keep_their_path_in_the_key(tmp_path):
    path = _shard(tmp_path / "a.tar", [("__meta__", b"m"), ("__x__/k.txt", b"no"), ("d/k.txt", b"yes"),
                                       ("d/k.png", _png(RED)), ("noext", b"?")])
    index = open_dataset("webdataset", path)
    assert index.captions == ("yes",) and index._images.keys == ("d/k",)


@pytest.mark.parametrize("value", ["jpg", [], ["jpg", ""], [3], ()])
def test_image_extensions_must_be_a_non_empty_list(tmp_path, value):
    with pytest.raises(ValueError) as e:
        open_dataset("webdataset", tmp_path, image_extensions=value)
    assert str(e.value) == (f"webdataset: image_extensions={value!r} must be a non-empty list, "
                            "e.g. ['jpg', 'png']")


@pytest.mark.parametrize("value", ["", None, 3])
def test_caption_extension_must_be_an_extension(tmp_path, value):
    with pytest.raises(ValueError) as e:
        open_dataset("webdataset", tmp_path, caption_extension=value)
    assert str(e.value) == f"webdataset: caption_extension={value!r} must be an extension, e.g. 'txt'"
