"""COCO caption files as users bring them (``fedsim.data.coco``): every refusal names the
annotation file, the entry and what was found there, and the index calls itself by the file."""

import json
import locale

import pytest
from PIL import Image

from fedsim.data import DataError, open_dataset


@pytest.fixture
def coco(tmp_path):
    """annotations/captions.json next to images/, with two images, one captioned twice."""
    (tmp_path / "images").mkdir()
    for name, color in (("a.png", (200, 10, 20)), ("b.png", (30, 60, 220))):
        Image.new("RGB", (6, 4), color).save(tmp_path / "images" / name)
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "captions.json"

    def write(doc=None, text=None):
        if doc is None and text is None:
            doc = {"images": [{"id": 7, "file_name": "b.png"}, {"id": 3, "file_name": "a.png"}],
                   "annotations": [{"image_id": 3, "caption": "red"}, {"image_id": 7, "caption": "blue"},
                                   {"image_id": 3, "caption": "red again"}]}
        path.write_text(json.dumps(doc) if text is None else text, encoding="utf-8")
        return path

    return write


def _error(path, **params) -> str:
    with pytest.raises(DataError) as e:
        open_dataset("coco", path, image_dir="../images", **params)
    return str(e.value)


def test_the_index_is_named_by_its_annotation_file(coco):
    path = coco()
    index = open_dataset("coco", path, image_dir="../images")
    assert index.captions == ("blue", "red", "red again")
    assert index.source == f"coco {path}"


@pytest.fixture
def ascii_locale():
    """The C locale's ASCII as the default text encoding (a minimal server's; Windows' is cp1252)."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    yield
    locale.setlocale(locale.LC_CTYPE, before)


def test_captions_are_read_as_utf8_whatever_the_locale(coco, ascii_locale):
    doc = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": "Café – 東京"}]}
    path = coco(text=json.dumps(doc, ensure_ascii=False))
    assert open_dataset("coco", path, image_dir="../images").captions == ("Café – 東京",)


def test_an_empty_image_dir_is_refused_before_anything_is_read(coco):
    with pytest.raises(ValueError) as e:
        open_dataset("coco", coco(), image_dir="")
    assert str(e.value) == "coco: image_dir='' must name the folder of the JSON's images, e.g. '../train2017'"


def test_a_file_that_is_not_json_is_named(coco):
    path = coco(text='{"images": [}')
    assert _error(path).startswith(f"coco: {path} is not JSON (Expecting value: line 1 column 13")
    assert _error(path).endswith("); put a COCO captions JSON there")


@pytest.mark.parametrize("doc, found", [
    ({"info": {}, "images": []}, "['images', 'info']"),  # a dict without 'annotations'
    ({"images": {}, "annotations": []}, "['annotations', 'images']"),  # 'images' not a list
    ([{"id": 1}], "list"),  # not a dict at all
])
def test_a_document_without_the_two_lists_says_what_it_holds(coco, doc, found):
    path = coco(doc)
    assert _error(path) == f"coco: {path} needs lists 'images' and 'annotations' (found: {found})"


def test_an_image_entry_that_is_not_a_dict_is_named_with_its_type(coco):
    path = coco({"images": [{"id": 1, "file_name": "a.png"}, "b.png"], "annotations": []})
    assert _error(path) == f"coco: {path} images[1] needs id, file_name (found: str)"


def test_an_annotation_without_its_fields_names_the_entry(coco):
    path = coco({"images": [{"id": 1, "file_name": "a.png"}],
                 "annotations": [{"image_id": 1, "caption": "ok"}, {"id": 5, "caption": "whose?"}]})
    assert _error(path) == f"coco: {path} annotations[1] needs image_id, caption (found: ['caption', 'id'])"


def test_a_caption_that_is_not_a_string_is_named(coco):
    path = coco({"images": [{"id": 1, "file_name": "a.png"}],
                 "annotations": [{"image_id": 1, "caption": "ok"}, {"image_id": 1, "caption": ["two", "parts"]}]})
    assert _error(path) == f"coco: {path} annotations[1] has caption=['two', 'parts']; put a string there"


def test_a_file_name_outside_image_dir_says_how_to_allow_it(coco, tmp_path):
    path = coco({"images": [{"id": 1, "file_name": "../annotations/captions.json"}], "annotations": []})
    assert _error(path) == (
        f"coco: {path} images[0] has file_name='../annotations/captions.json', outside image_dir "
        f"{tmp_path / 'annotations' / '../images'}; allowed: a path relative to image_dir that stays inside it "
        "(move the image there), or set allow_outside_root = true in the source's params"
    )
