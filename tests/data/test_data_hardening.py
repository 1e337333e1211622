"""Data a run cannot use is refused before it starts (issue #20, items 4 and 6): images that do
not decode, CSVs that are not UTF-8, COCO entries without a file name, image paths that leave
the data folder, and ``extends`` pointing at a folder. Datasets are written on the fly."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import fedsim.data.base as base
from fedsim.config import ConfigError
from fedsim.data import DataError, check_images, open_dataset
from fedsim.runner import load
from tests.data.test_data_config import CSV_WITH_EVAL, write_config, write_csv_set, write_imagefolder
from tests.data.test_data_sources import png_bytes, write_coco, write_shard


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test has its own cache of decoded images (none left from another test)."""
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / base.CHECKED_FILE


@pytest.fixture
def decodes(monkeypatch):
    """The (store's where, row) of every full decode, in order."""
    calls, real = [], base._decode

    def counted(store, row):
        calls.append(store.where(row))
        return real(store, row)

    monkeypatch.setattr(base, "_decode", counted)
    return calls


def noise(size=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def truncated(fmt: str) -> bytes:
    """A noise image of format ``fmt`` cut to half its bytes: its header is intact."""
    buffer = io.BytesIO()
    noise().save(buffer, format=fmt)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.fixture
def byod(tmp_path):
    write_csv_set(tmp_path / "data", 12)
    write_imagefolder(tmp_path / "evalset")
    return tmp_path


# ---------------------------------------------------------------- item 4: decode before a run


def test_truncated_png_in_a_csv_source_is_refused_by_the_config_check(byod):
    bad = byod / "data" / "img" / "7.png"
    bad.write_bytes(truncated("PNG"))
    with pytest.raises(ConfigError) as e:
        load(write_config(byod, CSV_WITH_EVAL))
    message = str(e.value)
    # the field, the CSV and its line (header + row 7), the sample, the image file, what to do
    for fragment in ("data: 1 of 12 images are not readable", "captions.csv line 9, sample 7",
                     f"image file {bad}", "put a JPEG/PNG/WebP image there or remove the sample"):
        assert fragment in message


def test_truncated_eval_image_is_refused_under_eval(byod):
    bad = byod / "evalset" / "dog" / "2.png"
    bad.write_bytes(truncated("PNG"))
    with pytest.raises(ConfigError, match=r"eval: 1 of 12 images are not readable: imagefolder .*dog/2\.png"):
        load(write_config(byod, CSV_WITH_EVAL))


def test_root_view_images_are_checked_too(tmp_path):
    from fedsim.app.data_plan import source_splits

    write_csv_set(tmp_path / "data", 30)
    write_imagefolder(tmp_path / "evalset")
    config, sizes = write_config(tmp_path, CSV_WITH_EVAL), ["data.train_size=20", "data.root_size=3"]
    _, root = source_splits(load(config, sizes))
    row = root._rows.tolist()[1]
    (tmp_path / "data" / "img" / f"{row}.png").write_bytes(truncated("PNG"))
    with pytest.raises(ConfigError, match=rf"data: 1 of 23 images are not readable: .*sample {row}: .*{row}\.png"):
        load(config, sizes)


def test_truncated_jpeg_passes_verify_but_not_the_check(tmp_path):
    # PIL's verify() reads headers only: the reason the check decodes every pixel
    (tmp_path / "cut.jpg").write_bytes(truncated("JPEG"))
    with Image.open(tmp_path / "cut.jpg") as image:
        image.verify()
    (tmp_path / "c.csv").write_text("image,caption\ncut.jpg,a cut photo\n")
    with pytest.raises(DataError, match=r"1 of 1 images are not readable: csv .*c\.csv line 2, sample 0: "
                                        r"image file .*cut\.jpg \(image file is truncated"):
        open_dataset("csv", tmp_path / "c.csv").check()


def test_a_second_check_only_stats_and_a_changed_file_is_decoded_again(byod, decodes, own_cache):
    config = write_config(byod, CSV_WITH_EVAL)
    load(config)
    assert len(decodes) == 24  # 12 training images, 12 evaluation images
    doc = json.loads(own_cache.read_text())
    assert doc["version"] == base.CHECKED_VERSION and len(doc["files"]) == 24
    assert [p.name for p in own_cache.parent.iterdir()] == [base.CHECKED_FILE]  # no temporary left
    decodes.clear()
    load(config)
    assert decodes == []
    # a new size and mtime: decoded again, and again only that one
    changed = byod / "data" / "img" / "3.png"
    noise(20).save(changed)
    decodes.clear()
    load(config)
    assert len(decodes) == 1 and "sample 3" in decodes[0]
    # the same size, a new mtime (a file rewritten in place)
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    decodes.clear()
    load(config)
    assert len(decodes) == 1 and "sample 3" in decodes[0]
    # now truncated, with its mtime restored: the size differs, so it is decoded and refused
    changed.write_bytes(truncated("PNG"))
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(ConfigError, match="3.png"):
        load(config)


def test_an_unreadable_image_is_not_remembered(tmp_path, decodes):
    (tmp_path / "cut.png").write_bytes(truncated("PNG"))
    noise(8).save(tmp_path / "ok.png")
    (tmp_path / "c.csv").write_text("image,caption\nok.png,fine\ncut.png,cut\n")
    index = open_dataset("csv", tmp_path / "c.csv")
    for _ in range(2):
        with pytest.raises(DataError, match="1 of 2 images are not readable"):
            index.check()
    files = [w.split(": image file ")[1] for w in decodes]
    assert files == [str(tmp_path / n) for n in ("ok.png", "cut.png", "cut.png")]


def test_a_damaged_or_old_cache_file_is_ignored(tmp_path, decodes, own_cache):
    noise(8).save(tmp_path / "ok.png")
    (tmp_path / "c.csv").write_text("image,caption\nok.png,fine\n")
    index = open_dataset("csv", tmp_path / "c.csv")
    own_cache.parent.mkdir(parents=True)
    for junk in ("{not json", json.dumps([1, 2]), json.dumps({"version": 0, "files": {}}),
                 json.dumps({"version": base.CHECKED_VERSION, "files": {"x": 3}})):
        own_cache.write_text(junk)
        decodes.clear()
        index.check()
        assert len(decodes) == 1
    decodes.clear()
    index.check()
    assert decodes == []


def test_an_image_shared_by_several_samples_is_decoded_once(tmp_path, decodes):
    write_coco(tmp_path)
    index = open_dataset("coco", tmp_path / "annotations" / "captions_train2017.json", image_dir="../train2017")
    assert len(index) == 3  # image 9 has two captions
    check_images(index, index.subset([0]))
    assert len(decodes) == 2


def test_tar_members_are_remembered_by_shard_size_mtime_and_key(tmp_path, decodes, own_cache):
    members = [(f"k{i}.png", png_bytes((10 * i, 0, 0))) for i in range(3)]
    members += [(f"k{i}.txt", f"caption {i}".encode()) for i in range(3)]
    write_shard(tmp_path / "s.tar", members)
    index = open_dataset("webdataset", tmp_path / "s.tar")
    index.subset([0, 2]).check()
    assert len(decodes) == 2
    assert sorted(json.loads(own_cache.read_text())["files"][str(tmp_path / "s.tar")][2]) == ["k0", "k2"]
    decodes.clear()
    index.check()
    assert len(decodes) == 1 and "key 'k1'" in decodes[0]
    write_shard(tmp_path / "s.tar", members[:2] + [("k2.png", b"garbage")] + members[3:])
    index = open_dataset("webdataset", tmp_path / "s.tar")
    decodes.clear()
    with pytest.raises(DataError, match=r"1 of 3 images are not readable: .*key 'k2' in shard .*s\.tar"):
        index.check()
    assert len(decodes) == 3


def test_images_in_memory_leave_nothing_in_the_cache(tmp_path, own_cache):
    from tests.data.test_data_sources import write_cifar

    write_cifar(tmp_path, "cifar10", np.random.default_rng(0))
    open_dataset("cifar10", tmp_path).check()  # arrays: no file whose change the cache could see
    assert not own_cache.exists()


def test_progress_only_for_long_checks(tmp_path, monkeypatch, capsys):
    for i in range(7):
        noise(8, i).save(tmp_path / f"{i}.png")
    (tmp_path / "c.csv").write_text("image,caption\n" + "".join(f"{i}.png,c{i}\n" for i in range(7)))
    index = open_dataset("csv", tmp_path / "c.csv")
    index.subset([0, 1]).check()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(base, "PROGRESS_OVER", 4)
    monkeypatch.setattr(base, "PROGRESS_EVERY", 2)
    index.check()  # 5 left to decode
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("checking images: decoding 5 of csv ")
    assert err[1:] == [f"checking images: {k}/5 decoded" for k in (2, 4, 5)]


def test_unwritable_cache_folder_does_not_fail_the_check(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "file" / "below"))  # a file is in the way
    noise(8).save(tmp_path / "ok.png")
    (tmp_path / "c.csv").write_text("image,caption\nok.png,fine\n")
    open_dataset("csv", tmp_path / "c.csv").check()


def test_shapes_reads_no_file_and_writes_no_cache(own_cache):
    load(None)
    assert not own_cache.parent.exists()


# ---------------------------------------------------------------- item 6a: CSV encoding


def test_non_utf8_csv_names_the_file_and_the_line(tmp_path, byod):
    path = tmp_path / "latin1.csv"
    # far past the first block the text reader decodes, so the line is found, not guessed
    rows = "".join(f"img/{i % 3}.png,caption {i}\n" for i in range(2000))
    path.write_bytes(b"image,caption\n" + rows.encode() + "img/0.png,café\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"csv: {path} line 2002 is not UTF-8 \(byte 0xe9 at column 14: "
                                        r".*\); save the file as UTF-8"):
        open_dataset("csv", path)
    path.write_bytes(b"\xef\xbb\xbfimage,capti\xf3n\n")  # a byte-order mark, then a bad header
    with pytest.raises(DataError, match=r"line 1 is not UTF-8 \(byte 0xf3 at column 12"):
        open_dataset("csv", path)
    captions = byod / "data" / "captions.csv"
    captions.write_bytes(captions.read_bytes().replace(b"number 4", b"n\xfamero 4"))
    with pytest.raises(ConfigError, match=r"data: csv: .*captions\.csv line 6 is not UTF-8"):
        load(write_config(byod, CSV_WITH_EVAL))


# ---------------------------------------------------------------- item 6b: COCO file_name


@pytest.mark.parametrize("file_name", [7, None, ["a.png"], ""])
def test_coco_file_name_must_be_a_string(tmp_path, file_name):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "captions_train2017.json"
    doc = json.loads(path.read_text())
    doc["images"][1]["file_name"] = file_name
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as e:
        open_dataset("coco", path, image_dir="../train2017")
    assert str(e.value).startswith(f"coco: {path} images[1] has file_name={file_name!r}; put the image's path "
                                   "relative to image_dir (a non-empty string) there")


def test_coco_check_names_the_images_entry(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "train2017" / "000000000009.jpg").write_bytes(truncated("JPEG"))
    index = open_dataset("coco", tmp_path / "annotations" / "captions_train2017.json", image_dir="../train2017")
    with pytest.raises(DataError, match=r"1 of 2 images .*captions_train2017\.json images\[1\], sample 1: "
                                        r"image file .*000000000009\.jpg"):
        index.check()


# ---------------------------------------------------------------- item 6c: paths outside the data folder


def outside_csv(tmp_path, image: str):
    (tmp_path / "data" / "img").mkdir(parents=True, exist_ok=True)
    noise(8).save(tmp_path / "data" / "img" / "in.png")
    noise(8, 1).save(tmp_path / "outside.png")
    path = tmp_path / "data" / "c.csv"
    path.write_text(f"image,caption\nimg/in.png,inside\n{image},escaped\n")
    return path


@pytest.mark.parametrize("image", ["../outside.png", "img/../../outside.png", "ABS"])
def test_csv_paths_leaving_the_csv_folder_are_refused_unless_allowed(tmp_path, image):
    image = str(tmp_path / "outside.png") if image == "ABS" else image
    path = outside_csv(tmp_path, image)
    with pytest.raises(DataError) as e:
        open_dataset("csv", path)
    for fragment in (f"csv: {path} line 3 has image={image!r}, outside the CSV's folder {tmp_path / 'data'}",
                     "allowed: a path relative to that folder", "allow_outside_root = true"):
        assert fragment in str(e.value)
    index = open_dataset("csv", path, allow_outside_root=True)
    index.check()
    assert index.materialize(4).images.shape == (2, 3, 4, 4)


def test_csv_paths_that_stay_inside_are_accepted(tmp_path):
    path = outside_csv(tmp_path, "img/../img/in.png")
    open_dataset("csv", path).check()


def test_allow_outside_root_is_a_bool_and_reaches_the_source_from_the_config(byod):
    with pytest.raises(ValueError, match="csv: allow_outside_root='yes' must be true or false"):
        open_dataset("csv", byod / "data" / "captions.csv", allow_outside_root="yes")
    captions = byod / "data" / "captions.csv"
    noise(8).save(byod / "elsewhere.png")
    captions.write_text(captions.read_text().replace("img/5.png", "../elsewhere.png"))
    with pytest.raises(ConfigError, match=r"data: csv: .* line 7 has image='\.\./elsewhere\.png', outside"):
        load(write_config(byod, CSV_WITH_EVAL))
    allowed = CSV_WITH_EVAL.replace('path = "data/captions.csv"',
                                    'path = "data/captions.csv"\nparams = { allow_outside_root = true }')
    load(write_config(byod, allowed))


@pytest.mark.parametrize("file_name", ["../000000000009.jpg", "ABS"])
def test_coco_file_names_leaving_image_dir_are_refused_unless_allowed(tmp_path, file_name):
    write_coco(tmp_path)
    noise(8).save(tmp_path / "000000000009.jpg")
    file_name = str(tmp_path / "000000000009.jpg") if file_name == "ABS" else file_name
    path = tmp_path / "annotations" / "captions_train2017.json"
    doc = json.loads(path.read_text())
    doc["images"][1]["file_name"] = file_name
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as e:
        open_dataset("coco", path, image_dir="../train2017")
    for fragment in (f"coco: {path} images[1] has file_name={file_name!r}, outside image_dir",
                     "train2017", "allow_outside_root = true"):
        assert fragment in str(e.value)
    index = open_dataset("coco", path, image_dir="../train2017", allow_outside_root=True)
    index.check()
    with pytest.raises(ValueError, match="coco: allow_outside_root=1 must be true or false"):
        open_dataset("coco", path, image_dir="../train2017", allow_outside_root=1)


# ---------------------------------------------------------------- item 6d: extends a folder


def test_extends_a_folder_says_it_is_a_folder(tmp_path):
    (tmp_path / "configs").mkdir()
    child = tmp_path / "child.toml"
    child.write_text('extends = "configs"\nseed = 1\n')
    with pytest.raises(ConfigError) as e:
        load(child)
    assert str(e.value) == (f"{child}: extends='configs' ({tmp_path / 'configs'}) is a folder, not a TOML "
                            "file; allowed: a path to another TOML file, relative to this one")
    child.write_text('extends = "/"\n')
    with pytest.raises(ConfigError, match=r"extends='/' \(/\) is a folder, not a TOML file"):
        load(child)
    child.write_text('extends = "gone.toml"\n')
    with pytest.raises(ConfigError, match=r"extends='gone.toml' \(.*gone.toml\) does not exist; allowed: a path"):
        load(child)
    with pytest.raises(ConfigError, match=rf"config file '{tmp_path}' is a folder, not a TOML file"):
        load(tmp_path)
