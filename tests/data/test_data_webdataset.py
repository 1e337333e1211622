"""WebDataset shards as users bring them (``fedsim.data.wds``): which tar members make samples
(as the ``webdataset`` package reads them), what a malformed shard or bad params are told, and
that an image is read from its shard alone, with the shard named when it cannot be decoded."""

import gzip
import io
import re
import tarfile

import pytest
from PIL import Image

from fedsim.data import DataError, open_dataset
from fedsim.data import wds


def _png(color, size=(6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE = _png((200, 10, 20)), _png((30, 60, 220), (5, 9))


def _shard(path, members) -> str:
    """A tar of ``members``: (name, bytes) are regular files, (name, "dir") folders and
    (name, "->target") symbolic links."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def _error(path, **params) -> str:
    with pytest.raises(DataError) as e:
        open_dataset("webdataset", path, **params)
    return str(e.value)


# ---------------------------------------------------------------- which members are samples
def test_metadata_folders_links_and_extensionless_members_are_not_samples(tmp_path):
    shard = _shard(tmp_path / "s.tar", [
        ("README", b"made by img2dataset"),  # no extension: no key
        ("__meta.json__", b"{}"),  # top-level __…__: webdataset's metadata
        ("extras.d", "dir"),  # a folder whose name has a dot
        ("k0.png", RED), ("k0.txt", b"a red one"),
        ("k9.txt", "->k0.txt"),  # a link: not a regular file
        ("__k1.png", BLUE), ("__k1.txt", b"a key that starts with __"),
    ])
    index = open_dataset("webdataset", shard)
    assert index.captions == ("a red one", "a key that starts with __")


def test_a_dunder_name_inside_a_folder_is_a_member_not_metadata(tmp_path):
    # as webdataset splits it: key "__d/x", extension "y__" (only top-level __…__ is skipped)
    shard = _shard(tmp_path / "s.tar", [("k0.png", RED), ("k0.txt", b"red"), ("__d/x.y__", b"?")])
    assert _error(shard) == (
        f"webdataset: {shard} key '__d/x' has members ['y__']; each sample needs an image "
        "(jpg or jpeg or png or webp) and a caption (txt)"
    )


def test_a_key_without_an_image_is_named_with_the_extensions_it_needs(tmp_path):
    shard = _shard(tmp_path / "s.tar", [("k0.jpg", RED), ("k0.txt", b"red"), ("k1.txt", b"no image")])
    assert _error(shard, image_extensions=["webp", "jpg"]) == (
        f"webdataset: {shard} key 'k1' has members ['txt']; each sample needs an image (webp or jpg) "
        "and a caption (txt)"
    )


def test_a_member_twice_is_refused_whatever_the_case_of_its_extension(tmp_path):
    shard = _shard(tmp_path / "s.tar", [("k0.png", RED), ("k0.txt", b"red"), ("k0.PNG", BLUE)])
    assert _error(shard) == (
        f"webdataset: {shard} holds k0.png twice; keep one member per key and extension"
    )


def test_a_caption_that_is_not_utf8_names_its_member(tmp_path):
    shard = _shard(tmp_path / "s.tar", [("d/k0.png", RED), ("d/k0.txt", "café".encode("latin-1"))])
    assert _error(shard) == f"webdataset: {shard} member d/k0.txt is not UTF-8 text; put the caption there"


def test_a_compressed_shard_is_refused(tmp_path):
    plain = _shard(tmp_path / "s.tar", [("k0.png", RED), ("k0.txt", b"red")])
    packed = tmp_path / "s.tar.gz"  # offsets into a compressed stream would not be the images'
    packed.write_bytes(gzip.compress(open(plain, "rb").read()))
    assert re.fullmatch(rf"webdataset: {re.escape(str(packed))} is not an uncompressed tar \(.+\); "
                        "put a .tar shard there", _error(packed))


def test_a_missing_shard_whose_name_has_an_x_is_missing_not_an_unmatched_glob(tmp_path):
    missing = tmp_path / "shard-X.tar"
    assert _error(missing) == f"webdataset: shard {missing} is missing; put a .tar shard there"


# ---------------------------------------------------------------- params
@pytest.mark.parametrize("value", [[], "png", ["png", ""], ["png", 3]])
def test_image_extensions_must_be_a_non_empty_list_of_extensions(tmp_path, value):
    shard = _shard(tmp_path / "s.tar", [("k0.png", RED), ("k0.txt", b"red")])
    with pytest.raises(ValueError) as e:
        open_dataset("webdataset", shard, image_extensions=value)
    assert str(e.value) == (
        f"webdataset: image_extensions={value!r} must be a non-empty list, e.g. ['jpg', 'png']"
    )


@pytest.mark.parametrize("value", ["", None])
def test_caption_extension_must_be_an_extension(tmp_path, value):
    shard = _shard(tmp_path / "s.tar", [("k0.png", RED), ("k0.txt", b"red")])
    with pytest.raises(ValueError) as e:
        open_dataset("webdataset", shard, caption_extension=value)
    assert str(e.value) == f"webdataset: caption_extension={value!r} must be an extension, e.g. 'txt'"


# ---------------------------------------------------------------- reading images
def test_an_image_is_read_from_its_shard_alone(tmp_path, monkeypatch):
    """materialize seeks to the image and reads its bytes, not the rest of a big shard."""
    shard = _shard(tmp_path / "s.tar", [("k0.png", RED), ("k0.txt", b"red"), ("k0.json", bytes(300_000)),
                                        ("k1.txt", b"blue"), ("k1.png", BLUE)])
    index = open_dataset("webdataset", shard)
    reads, real_open = [], open

    class Counting(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            reads.append(len(data))
            return data

    monkeypatch.setattr(wds, "open", lambda path, mode: Counting(path, mode) if mode == "rb" else real_open(path, mode),
                        raising=False)
    images = index.materialize(4).images
    assert reads == [len(RED), len(BLUE)]
    assert images[0, :, 0, 0].tolist() == [200, 10, 20] and images[1, :, 0, 0].tolist() == [30, 60, 220]


def test_an_undecodable_image_is_named_by_source_sample_key_and_shard(tmp_path):
    shard = _shard(tmp_path / "s.tar", [("k0.png", RED), ("k0.txt", b"red"), ("k1.png", b"garbage"),
                                        ("k1.txt", b"broken")])
    index = open_dataset("webdataset", shard)
    assert index.source == f"webdataset {shard}"
    with pytest.raises(DataError) as e:
        index.materialize(4)
    assert str(e.value).startswith(f"webdataset {shard}, sample 1: key 'k1' in shard {shard} is not a readable image")


def test_members_inside_a_top_level_dunder_folder_are_skipped_as_webdataset_skips_them():
    """webdataset's tar_file_iterator skips names matching skip_meta = r"__[^/]*__($|/)": a
    top-level __…__/ folder is metadata, not samples (the real webdataset yields k0 alone)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        shard = _shard(Path(d) / "s.tar", [("k0.png", RED), ("k0.txt", b"zero"),
                                           ("__cache__/k9.png", BLUE), ("__cache__/k9.txt", b"nine")])
        assert open_dataset("webdataset", shard).captions == ("zero",)
