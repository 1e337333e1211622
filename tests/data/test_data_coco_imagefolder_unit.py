"""COCO caption files and labelled image folders (``fedsim.data.coco``,
``fedsim.data.imagefolder``) written by each test: sample order, the image each sample names,
and every message in full."""

import json
import os

import pytest
from PIL import Image

from fedsim.data import DataError, open_dataset
from fedsim.data.base import CIFAR_TEMPLATES
from fedsim.data.imagefolder import IMAGE_EXTENSIONS


def _coco(tmp_path, doc, image_dir="imgs"):
    (tmp_path / image_dir).mkdir(exist_ok=True)
    path = tmp_path / "ann" / "c.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return path


DOC = {
    "images": [{"id": 7, "file_name": "a.png"}, {"id": 3, "file_name": "sub/b.png"},
               {"id": 9, "file_name": "none.png"}],
    "annotations": [{"image_id": 3, "caption": "b one"}, {"image_id": 7, "caption": "a one"},
                    {"image_id": 3, "caption": "b two"}],
}


def _message(path, **params) -> str:
    with pytest.raises(DataError) as e:
        open_dataset("coco", path, **params)
    return str(e.value)


def test_coco_samples_follow_images_then_annotations_and_skip_uncaptioned_images(tmp_path):
    path = _coco(tmp_path, DOC)
    index = open_dataset("coco", path, image_dir="../imgs")
    assert index.captions == ("a one", "b one", "b two")
    store = index._images
    assert store.files == ("a.png", "sub/b.png", "sub/b.png")
    assert store.listed_at.tolist() == [0, 1, 1]
    image_dir = os.path.join(tmp_path / "ann", "../imgs")
    assert store.where(2) == f"coco {path} images[1], sample 2: image file {os.path.join(image_dir, 'sub/b.png')}"
    first = open_dataset("coco", path, image_dir="../imgs", captions_per_image="first")
    assert first.captions == ("a one", "b one") and first._images.files == ("a.png", "sub/b.png")


def test_an_absolute_image_dir_is_used_as_it_is(tmp_path):
    path = _coco(tmp_path, DOC)
    index = open_dataset("coco", path, image_dir=str(tmp_path / "imgs"))
    assert index._images.root == str(tmp_path / "imgs")


@pytest.mark.parametrize("value", [None, "", 3])
def test_coco_image_dir_must_be_named(tmp_path, value):
    with pytest.raises(ValueError) as e:
        open_dataset("coco", tmp_path / "c.json", image_dir=value)
    assert str(e.value) == (f"coco: image_dir={value!r} must name the folder of the JSON's images, "
                            "e.g. '../train2017'")


def test_coco_captions_per_image_and_allow_outside_root_are_checked(tmp_path):
    with pytest.raises(ValueError) as e:
        open_dataset("coco", tmp_path / "c.json", image_dir="i", captions_per_image="two")
    assert str(e.value) == "coco: captions_per_image='two' is unknown; allowed: all, first"
    with pytest.raises(ValueError) as e:
        open_dataset("coco", tmp_path / "c.json", image_dir="i", allow_outside_root=1)
    assert str(e.value) == "coco: allow_outside_root=1 must be true or false"


def test_coco_missing_file_folder_and_bad_documents_are_named(tmp_path):
    assert _message(tmp_path / "c.json", image_dir="i") == (
        f"coco: {tmp_path / 'c.json'} is missing; put a COCO captions JSON (e.g. captions_train2017.json) there")
    path = _coco(tmp_path, DOC)
    image_dir = os.path.join(tmp_path / "ann", "nope")
    assert _message(path, image_dir="nope") == f"coco: image_dir {image_dir} is missing; put the images of {path} there"
    path.write_text("{", encoding="utf-8")
    message = _message(path, image_dir="../imgs")
    assert message.startswith(f"coco: {path} is not JSON (") and message.endswith("); put a COCO captions JSON there")
    path.write_bytes(b'{"images": "\xff"}')
    assert _message(path, image_dir="../imgs").startswith(f"coco: {path} is not JSON (")
    path.write_text(json.dumps({"images": [], "annotations": {}}), encoding="utf-8")
    assert _message(path, image_dir="../imgs") == (
        f"coco: {path} needs lists 'images' and 'annotations' (found: ['annotations', 'images'])")
    path.write_text(json.dumps([1]), encoding="utf-8")
    assert _message(path, image_dir="../imgs") == f"coco: {path} needs lists 'images' and 'annotations' (found: list)"


def test_coco_bad_entries_are_named_by_their_position(tmp_path):
    def doc(images, annotations):
        return _coco(tmp_path, {"images": images, "annotations": annotations})

    path = doc([{"id": 1, "file_name": "a.png"}, {"id": 2}], [])
    assert _message(path, image_dir="../imgs") == f"coco: {path} images[1] needs id, file_name (found: ['id'])"
    path = doc([{"id": 1, "file_name": "a.png"}], [{"image_id": 1, "caption": "x"}, ["y"]])
    assert _message(path, image_dir="../imgs") == (
        f"coco: {path} annotations[1] needs image_id, caption (found: list)")
    path = doc([{"id": 1, "file_name": ""}], [])
    assert _message(path, image_dir="../imgs") == (
        f"coco: {path} images[0] has file_name=''; put the image's path relative to image_dir "
        "(a non-empty string) there")
    path = doc([{"id": 1, "file_name": "a.png"}], [{"image_id": 1, "caption": 5}])
    assert _message(path, image_dir="../imgs") == f"coco: {path} annotations[0] has caption=5; put a string there"
    path = doc([{"id": 1, "file_name": "a.png"}], [{"image_id": 2, "caption": "x"}])
    assert _message(path, image_dir="../imgs") == (
        f"coco: {path} annotations[0] has image_id=2, which no entry of 'images' has")
    path = doc([{"id": 1, "file_name": "a.png"}], [])
    assert _message(path, image_dir="../imgs") == (
        f"coco: {path} has no captioned image; put a COCO captions JSON with annotations there")
    path = doc([{"id": 1, "file_name": "ok.png"}, {"id": 2, "file_name": "../a.png"}], [])
    image_dir = os.path.join(tmp_path / "ann", "../imgs")
    assert _message(path, image_dir="../imgs") == (
        f"coco: {path} images[1] has file_name='../a.png', outside image_dir {image_dir}; allowed: a path "
        "relative to image_dir that stays inside it (move the image there), or set allow_outside_root = true "
        "in the source's params")
    path = doc([{"id": 2, "file_name": "../a.png"}], [{"image_id": 2, "caption": "x"}])
    assert open_dataset("coco", path, image_dir="../imgs", allow_outside_root=True)._images.files == ("../a.png",)


# --------------------------------------------------------------------------- image folder
def _image(path, color=(1, 2, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path, format="PNG")


def test_imagefolder_classes_are_sorted_folders_and_samples_sorted_paths(tmp_path):
    root = tmp_path / "set"
    _image(root / "zebra" / "b.png")
    _image(root / "zebra" / "deep" / "a.PNG")
    _image(root / "ant_lion" / "c.JPEG")
    (root / "ant_lion" / "notes.txt").write_text("x")
    _image(root / "ant_lion" / ".hidden.png")
    _image(root / ".cache" / "x.png")
    _image(root / "zebra" / ".ipynb_checkpoints" / "y.png")
    (root / "file.png").write_bytes(b"not a class")
    index = open_dataset("imagefolder", root, templates=["a {}"])
    assert index.classnames == ("ant lion", "zebra")
    assert index.labels.tolist() == [0, 1, 1]
    assert index._images.files == ("ant_lion/c.JPEG", "zebra/b.png", "zebra/deep/a.PNG")
    assert index.captions == ("a ant lion", "a zebra", "a zebra")
    assert index.templates == ("a {}",) and index.source == f"imagefolder {root}"
    assert index._images.root == os.path.abspath(root)


def test_imagefolder_defaults_to_clips_templates_drawn_from_the_seed(tmp_path):
    root = tmp_path / "set"
    for i in range(30):
        _image(root / "cat" / f"{i:02}.png")
    index = open_dataset("imagefolder", root)
    assert index.templates == CIFAR_TEMPLATES
    assert set(index.captions) <= {t.format("cat") for t in CIFAR_TEMPLATES} and len(set(index.captions)) > 5
    assert index.captions == open_dataset("imagefolder", root, seed=0).captions
    assert index.captions != open_dataset("imagefolder", root, seed=1).captions


def test_imagefolder_takes_every_torchvision_extension(tmp_path):
    assert IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
    for ext in IMAGE_EXTENSIONS:
        (tmp_path / "set" / "c").mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / "c" / f"x{ext.upper()}").write_bytes(b"")
    assert len(open_dataset("imagefolder", tmp_path / "set")) == len(IMAGE_EXTENSIONS)


def test_imagefolder_messages(tmp_path):
    def message(path, **params):
        with pytest.raises(DataError) as e:
            open_dataset("imagefolder", path, **params)
        return str(e.value)

    assert message(tmp_path / "none") == (
        f"imagefolder: {tmp_path / 'none'} is missing; put one folder of images per class there")
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    assert message(tmp_path / "empty") == (
        f"imagefolder: {tmp_path / 'empty'} has no class folders; put one folder of images per class there")
    _image(tmp_path / "set" / "a" / "x.png")
    (tmp_path / "set" / "b").mkdir()
    (tmp_path / "set" / "b" / "x.txt").write_text("")
    assert message(tmp_path / "set") == (
        f"imagefolder: class folder {tmp_path / 'set' / 'b'} holds no image ({', '.join(IMAGE_EXTENSIONS)}); "
        "put its images there or remove it")
    with pytest.raises(ValueError) as e:
        open_dataset("imagefolder", tmp_path / "set", seed="1")
    assert str(e.value) == "imagefolder: seed='1' must be an int"
    with pytest.raises(ValueError, match="^imagefolder: templates="):
        open_dataset("imagefolder", tmp_path / "set", templates=[])
