"""The shared pieces of the real data sources (``fedsim.data.base``): path and parameter checks
with their exact messages, the index and its views, the in-memory batch's validation, where an
image is named in errors, and the cache of decoded images. Files are written by each test."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import fedsim.data.base as base
from fedsim.data import DataError, ImageCaptionData, ImageCaptionIndex, check_images
from fedsim.data.base import (
    FileImages,
    check_flag,
    check_seed,
    check_templates,
    clip_resize,
    inside_root,
    parse_params,
    template_captions,
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / base.CHECKED_FILE


def _png(path, color=(10, 20, 30), size=(4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _index(root, files, captions=None, **kw):
    captions = captions or [f"c{i}" for i in range(len(files))]
    return ImageCaptionIndex(source="src", captions=captions, images=FileImages(str(root), tuple(files), "src"), **kw)


# --------------------------------------------------------------------------- small checks
@pytest.mark.parametrize("name, inside", [
    ("a.png", True), ("a/b.png", True), ("./a.png", True), ("a/../b.png", True), ("..a/b.png", True),
    ("...png", True), ("/abs/a.png", False), ("../a.png", False), ("a/../../b.png", False), ("..", False),
    ("a/..", True),
])
def test_inside_root(name, inside):
    assert inside_root(name) is inside


def test_check_flag_takes_bools_only():
    assert check_flag("csv", "allow_outside_root", True) is True
    assert check_flag("csv", "allow_outside_root", False) is False
    with pytest.raises(ValueError, match=r"^csv: allow_outside_root=1 must be true or false$"):
        check_flag("csv", "allow_outside_root", 1)
    with pytest.raises(ValueError, match=r"^coco: flag='yes' must be true or false$"):
        check_flag("coco", "flag", "yes")


def test_check_seed_takes_ints_only():
    assert check_seed("cifar10", 7) == 7
    for bad in (True, 1.0, "1", None):
        with pytest.raises(ValueError, match=rf"^cifar10: seed={bad!r} must be an int$"):
            check_seed("cifar10", bad)


def test_check_templates_needs_strings_with_exactly_one_slot():
    assert check_templates("x", ["a {}.", "b {}"]) == ("a {}.", "b {}")
    message = r"must be a non-empty list of strings, each with one '\{\}' for the class name$"
    for bad in ("a {}", [], ["a {}", "no slot"], ["{} and {}"], ["a {}", 3], None):
        with pytest.raises(ValueError, match=rf"^imagefolder: templates={bad!r} ".replace("[", r"\[").replace(
                "]", r"\]").replace("{", r"\{").replace("}", r"\}") + message):
            check_templates("imagefolder", bad)


def test_parse_params_names_an_unknown_parameter_with_the_allowed_ones():
    from fedsim.data.wds import WdsParams

    assert parse_params("webdataset", WdsParams, {"caption_extension": "txt"}) == WdsParams()
    with pytest.raises(ValueError, match=r"^webdataset: unknown parameter 'size'; allowed: "
                                         r"image_extensions, caption_extension$"):
        parse_params("webdataset", WdsParams, {"caption_extension": "txt", "size": 3})


def test_template_captions_fill_a_seeded_template_with_each_class_name():
    labels = np.array([0, 1, 1, 0, 2] * 8)
    names = ("cat", "dog", "red fox")
    one = template_captions(labels, names, ("a {}.",), seed=0)
    assert one == tuple(f"a {names[y]}." for y in labels)
    two = template_captions(labels, names, ("a {}.", "the {}!"), seed=3)
    assert all(c in (f"a {names[y]}.", f"the {names[y]}!") for c, y in zip(two, labels))
    assert {c.startswith("a ") for c in two} == {True, False}  # both templates drawn
    assert two == template_captions(labels, names, ("a {}.", "the {}!"), seed=3)
    assert two != template_captions(labels, names, ("a {}.", "the {}!"), seed=4)
    choice = np.random.default_rng(3).integers(0, 2, len(labels))
    assert [c.startswith("the ") for c in two] == [bool(t) for t in choice]


# --------------------------------------------------------------------------- clip_resize
def _bands(w, h):
    """An image whose column x has the value x (red) and row y the value y (green)."""
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[:, :, 0] = np.arange(w)[None, :]
    pixels[:, :, 1] = np.arange(h)[:, None]
    return Image.fromarray(pixels)


def test_clip_resize_crops_the_centre_of_an_image_whose_shorter_side_fits():
    out = np.asarray(clip_resize(_bands(10, 4), 4))
    assert out.shape == (4, 4, 3)
    assert out[0, :, 0].tolist() == [3, 4, 5, 6]  # left = round((10 − 4) / 2) = 3
    out = np.asarray(clip_resize(_bands(4, 9), 4))
    assert out[:, 0, 1].tolist() == [2, 3, 4, 5]  # top = round(2.5) = 2 (to even)
    out = np.asarray(clip_resize(_bands(4, 4), 4))
    assert np.array_equal(out, np.asarray(_bands(4, 4)))


def test_clip_resize_scales_the_shorter_side_and_keeps_the_aspect(monkeypatch):
    assert clip_resize(_bands(20, 10), 5).size == (5, 5)
    seen = []
    real = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        seen.append((size, args, kwargs))
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    clip_resize(_bands(20, 10), 5)
    clip_resize(_bands(10, 25), 4)
    clip_resize(_bands(7, 7), 7)
    assert [s for s, _, _ in seen] == [(10, 5), (4, 10)]  # ⌊5·20/10⌋, ⌊4·25/10⌋; none at the size
    assert all(Image.Resampling.BICUBIC in a + tuple(k.values()) for _, a, k in seen)


# --------------------------------------------------------------------------- FileImages
def test_file_images_name_the_file_the_listing_and_the_sample(tmp_path):
    plain = FileImages(str(tmp_path), ("a.png", "sub/b.png"), "csv x.csv")
    assert plain.where(1) == f"csv x.csv, sample 1: image file {os.path.join(tmp_path, 'sub/b.png')}"
    listed = FileImages(str(tmp_path), ("a.png", "b.png"), "csv x.csv", listed_at=np.array([2, 7]))
    assert listed.where(1) == f"csv x.csv line 7, sample 1: image file {os.path.join(tmp_path, 'b.png')}"
    coco = FileImages("rel", ("a.png",), "coco j", listed_at=np.array([4]), listing="images[{}]")
    assert coco.where(0) == f"coco j images[4], sample 0: image file {os.path.join('rel', 'a.png')}"
    assert coco.origin(0) == (os.path.abspath(os.path.join("rel", "a.png")), "")


# --------------------------------------------------------------------------- ImageCaptionData
def test_image_caption_data_refuses_what_is_not_uint8_n_3_s_s():
    for images, described in ((torch.zeros(2, 3, 4, 4), "torch.float32 (2, 3, 4, 4)"),
                              (torch.zeros(3, 4, 4, dtype=torch.uint8), "torch.uint8 (3, 4, 4)"),
                              (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), "torch.uint8 (2, 1, 4, 4)")):
        with pytest.raises(ValueError, match=rf"^images must be uint8 \(n, 3, S, S\), got {described}$".replace(
                "(2", r"\(2").replace("(3, 4", r"\(3, 4").replace("4)$", r"4\)$")):
            ImageCaptionData(images=images, captions=("a",) * len(images))


def test_image_caption_data_needs_a_caption_and_a_label_per_image():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    ImageCaptionData(images=images, captions=("a", "b"), labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^2 images need 2 captions and labels; got 2 captions, "
                                         r"labels of shape \(3,\)$"):
        ImageCaptionData(images=images, captions=("a", "b"), labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"^2 images need 2 captions and labels; got 1 captions, "
                                         r"labels of shape None$"):
        ImageCaptionData(images=images, captions=("a",))
    data = ImageCaptionData(images=images, captions=("a", "b"))
    assert len(data) == 2 and data.subset([1]).labels is None and data.subset([1]).captions == ("b",)
    # an empty choice is an empty batch (a list of no index is no float tensor)
    empty = ImageCaptionData(images=images, captions=("a", "b"), labels=torch.tensor([0, 1])).subset([])
    assert len(empty) == 0 and empty.captions == () and empty.labels.tolist() == []


# --------------------------------------------------------------------------- ImageCaptionIndex
def test_the_index_strips_captions_and_its_views_share_labels_names_and_templates(tmp_path):
    index = _index(tmp_path, ["a.png", "b.png", "c.png"], captions=[" x ", "y\n", "z"], labels=[2, 0, 1],
                   classnames=["p", "q", "r"], templates=["a {}"])
    assert index.captions == ("x", "y", "z") and len(index) == 3
    assert repr(index) == "ImageCaptionIndex(src, 3 samples)"
    assert index.classnames == ("p", "q", "r") and index.templates == ("a {}",)
    view = index.subset([2, 0])
    assert view.captions == ("z", "x") and view.labels.tolist() == [1, 2] and view.labels.dtype == torch.int64
    assert repr(view) == "ImageCaptionIndex(src, 2 samples)" and view.classnames == index.classnames
    assert index.captions == ("x", "y", "z")  # the parent's view is unchanged
    bare = _index(tmp_path, ["a.png"])
    assert bare.labels is None and bare.classnames is None and bare.templates is None


def test_materialize_decodes_the_views_images_at_the_size(tmp_path):
    _png(tmp_path / "a.png", (200, 0, 0), (8, 4))
    _png(tmp_path / "b.png", (0, 0, 200))
    data = _index(tmp_path, ["a.png", "b.png"], labels=[0, 1]).subset([1, 0]).materialize(2)
    assert data.images.shape == (2, 3, 2, 2) and data.images.dtype == torch.uint8
    assert data.images[0, :, 0, 0].tolist() == [0, 0, 200] and data.images[1, :, 0, 0].tolist() == [200, 0, 0]
    assert data.captions == ("c1", "c0") and data.labels.tolist() == [1, 0]


@pytest.mark.parametrize("size", [0, -1, True, 2.0, "2"])
def test_materialize_needs_a_positive_int_size(tmp_path, size):
    with pytest.raises(ValueError, match=rf"^image_size={size!r} must be a positive int$"):
        _index(tmp_path, ["a.png"]).materialize(size)


def test_materialize_names_an_unreadable_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError) as e:
        _index(tmp_path, ["bad.png"]).materialize(2)
    where = f"src, sample 0: image file {os.path.join(tmp_path, 'bad.png')}"
    assert str(e.value).startswith(f"{where} is not a readable image (")
    assert str(e.value).endswith("); put a JPEG/PNG/WebP image there or remove the sample")


# --------------------------------------------------------------------------- check_images
def _unreadable(folder, n: int) -> list[str]:
    """``n`` files bad0.png … that are no image, written in ``folder``; their names."""
    files = [f"bad{i}.png" for i in range(n)]
    for f in files:
        (folder / f).write_bytes(b"junk")
    return files


def test_check_images_names_the_first_five_of_all_unreadable_images(tmp_path):
    files = _unreadable(tmp_path, 7) + ["good.png"]
    _png(tmp_path / "good.png")
    with pytest.raises(DataError) as e:
        _index(tmp_path, files).check()
    message = str(e.value)
    assert message.startswith("7 of 8 images are not readable: src, sample 0: image file ")
    assert message.count("is not") == 0 and message.count("src, sample") == 5
    assert "bad4.png" in message and "bad5.png" not in message
    assert message.endswith("; …; put a JPEG/PNG/WebP image there or remove the sample")


def test_check_images_with_five_problems_lists_them_all_without_an_ellipsis(tmp_path):
    with pytest.raises(DataError) as e:
        check_images(_index(tmp_path, _unreadable(tmp_path, 5)))
    assert str(e.value).startswith("5 of 5 images are not readable: ")
    assert "…" not in str(e.value) and "bad4.png" in str(e.value)


def test_check_images_counts_an_image_shared_by_samples_and_views_once(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    _png(tmp_path / "good.png")
    index = _index(tmp_path, ["bad.png", "good.png", "bad.png"])
    with pytest.raises(DataError, match=r"^1 of 2 images are not readable: "):
        check_images(index, index.subset([2, 1]))


def test_a_store_without_origin_is_decoded_on_every_check(tmp_path, own_cache):
    class Store:
        opened = 0

        def open(self, row):
            Store.opened += 1
            return Image.new("RGB", (2, 2))

        def where(self, row):
            return f"row {row}"

    index = ImageCaptionIndex(source="mem", captions=["a", "b"], images=Store())
    check_images(index, index)
    assert Store.opened == 2  # each (store, row) once per check
    check_images(index)
    assert Store.opened == 4
    assert not own_cache.exists()


def test_the_cache_file_records_size_mtime_and_members_of_each_decoded_file(tmp_path, own_cache):
    path = _png(tmp_path / "a.png")
    _index(tmp_path, ["a.png"]).check()
    doc = json.loads(own_cache.read_text())
    st = os.stat(path)
    assert doc == {"version": base.CHECKED_VERSION, "files": {str(path.resolve()): [st.st_size, st.st_mtime_ns, [""]]}}
    assert base.CHECKED_VERSION == 1 and base.CHECKED_FILE == "checked-images.json"
    assert not list(own_cache.parent.glob("*.tmp"))


def test_read_checked_ignores_another_version_and_damage(own_cache):
    own_cache.parent.mkdir(parents=True)
    own_cache.write_text(json.dumps({"version": 1, "files": {"/x": [3, 4, ["k", "j"]]}}))
    assert base._read_checked() == {"/x": (3, 4, {"k", "j"})}
    own_cache.write_text(json.dumps({"version": 2, "files": {"/x": [3, 4, ["k"]]}}))
    assert base._read_checked() == {}
    for damaged in ("[1, 2]", "{", json.dumps({"version": 1}), json.dumps({"version": 1, "files": {"/x": [3]}}),
                    json.dumps({"version": 1, "files": {"/x": [3, 4, 5]}})):
        own_cache.write_text(damaged)
        assert base._read_checked() == {}


def test_write_checked_merges_members_of_an_unchanged_file_and_replaces_a_changed_one(own_cache):
    base._write_checked({"/a": (1, 2, {"k1"}), "/b": (5, 6, {"m"})})
    base._write_checked({"/a": (1, 2, {"k2"}), "/b": (5, 7, {"n"})})
    assert base._read_checked() == {"/a": (1, 2, {"k1", "k2"}), "/b": (5, 7, {"n"})}
    doc = json.loads(own_cache.read_text())
    assert doc["files"]["/a"] == [1, 2, ["k1", "k2"]]  # sorted members


def test_write_checked_leaves_no_fragment_when_interrupted(own_cache, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(base.json, "dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        base._write_checked({"/a": (1, 2, {"k"})})
    assert list(own_cache.parent.iterdir()) == []


def test_a_cached_image_is_not_decoded_again_unless_its_member_is_new(tmp_path, monkeypatch):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    decoded = []
    real = base._decode
    monkeypatch.setattr(base, "_decode", lambda store, row: decoded.append(row) or real(store, row))
    _index(tmp_path, ["a.png"]).check()
    _index(tmp_path, ["a.png", "b.png"]).check()
    assert decoded == [0, 1]


def test_the_cache_folder_is_made_with_its_parents(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "a" / "b" / "cache"))
    _png(tmp_path / "x.png")
    _index(tmp_path, ["x.png"]).check()
    assert (tmp_path / "a" / "b" / "cache" / base.CHECKED_FILE).is_file()


def test_stores_without_origin_are_told_apart_by_store_not_by_row():
    opened = []

    class Store:
        def __init__(self, name):
            self.name = name

        def open(self, row):
            opened.append((self.name, row))
            return Image.new("RGB", (2, 2))

        def where(self, row):
            return f"{self.name} row {row}"

    a = ImageCaptionIndex(source="a", captions=["x"], images=Store("a"))
    b = ImageCaptionIndex(source="b", captions=["y"], images=Store("b"))
    check_images(a, b)
    assert opened == [("a", 0), ("b", 0)]


def test_materialize_at_size_1(tmp_path):
    _png(tmp_path / "a.png", (9, 8, 7))
    assert _index(tmp_path, ["a.png"]).materialize(1).images.tolist() == [[[[9]], [[8]], [[7]]]]


def test_unreadable_images_held_in_memory_are_counted_among_all():
    class Broken:
        def open(self, row):
            raise OSError(f"broken {row}")

        def where(self, row):
            return f"mem row {row}"

    index = ImageCaptionIndex(source="m", captions=["x", "y"], images=Broken())
    with pytest.raises(DataError) as e:
        check_images(index)
    assert str(e.value) == ("2 of 2 images are not readable: mem row 0 (broken 0); mem row 1 (broken 1); "
                            "put a JPEG/PNG/WebP image there or remove the sample")


def test_the_cache_file_defaults_to_dot_cache_fedsim_in_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDSIM_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _png(tmp_path / "a.png")
    _index(tmp_path, ["a.png"]).check()
    doc = json.loads((tmp_path / "home" / ".cache" / "fedsim" / "checked-images.json").read_text())
    assert list(doc["files"]) == [str(path.resolve())]


def test_check_images_goes_on_past_an_image_already_seen(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError) as e:
        _index(tmp_path, ["a.png", "a.png", "bad.png"]).check()
    where = f"src, sample 2: image file {os.path.join(tmp_path, 'bad.png')}"
    assert str(e.value).startswith(f"1 of 2 images are not readable: {where} (")


def test_an_image_that_appears_after_its_file_was_stated_passes_but_is_not_remembered(tmp_path, own_cache):
    # e.g. a copy still being written when the check began: the size and mtime it will keep
    # are unknown, so the next check decodes it again
    decoded = []

    @dataclasses.dataclass(frozen=True)
    class Arriving(FileImages):
        def open(self, row):
            if not os.path.exists(self._path(row)):
                _png(tmp_path / self.files[row])
            decoded.append(row)
            return super().open(row)

    index = ImageCaptionIndex(source="src", captions=["a"], images=Arriving(str(tmp_path), ("late.png",), "src"))
    index.check()
    assert decoded == [0] and not own_cache.exists()


def _memory_index(source, n):
    class Store:
        def open(self, row):
            return Image.new("RGB", (2, 2))

        def where(self, row):
            return f"{source} row {row}"

    return ImageCaptionIndex(source=source, captions=["x"] * n, images=Store())


def test_progress_names_the_sources_and_starts_only_above_progress_over(monkeypatch, capsys):
    monkeypatch.setattr(base, "PROGRESS_OVER", 3)
    monkeypatch.setattr(base, "PROGRESS_EVERY", 2)
    check_images(_memory_index("b", 1), _memory_index("a", 2))  # exactly PROGRESS_OVER: quiet
    assert capsys.readouterr().err == ""
    check_images(_memory_index("b", 2), _memory_index("a", 2))
    assert capsys.readouterr().err.splitlines() == [
        "checking images: decoding 4 of a, b", "checking images: 2/4 decoded", "checking images: 4/4 decoded"]


def test_check_images_with_six_problems_shows_five_and_an_ellipsis(tmp_path):
    with pytest.raises(DataError) as e:
        check_images(_index(tmp_path, _unreadable(tmp_path, 6)))
    message = str(e.value)
    assert message.startswith("6 of 6 images are not readable: ") and message.count("src, sample") == 5
    assert "bad4.png" in message and "bad5.png" not in message
    assert message.endswith("; …; put a JPEG/PNG/WebP image there or remove the sample")


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_labels_of_any_int_array_become_int64_class_ids(tmp_path, dtype):
    # CIFAR's files hold labels as bytes; a loss or an index into the class names needs int64
    index = _index(tmp_path, ["a.png", "b.png"], labels=np.array([9, 3], dtype=dtype))
    assert index.labels.dtype == torch.int64 and index.labels.tolist() == [9, 3]
    assert index.subset([1]).labels.dtype == torch.int64
