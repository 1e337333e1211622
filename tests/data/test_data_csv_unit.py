"""CSV sources (``fedsim.data.captions_csv``) written by each test: the column conventions and
separators, the line that names each row, labels, and every message in full."""

import pytest

from fedsim.data import DataError, open_dataset


def _csv(tmp_path, text, name="d.csv", mode="w"):
    path = tmp_path / name
    if mode == "w":
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def _message(path, **params) -> str:
    with pytest.raises(DataError) as e:
        open_dataset("csv", path, **params)
    return str(e.value)


def test_a_tab_in_the_header_makes_tabs_the_separator_and_open_clips_columns_are_found(tmp_path):
    path = _csv(tmp_path, "filepath\ttitle\na.png\tone, two\nb.png\tthree\n")
    index = open_dataset("csv", path)
    assert index.captions == ("one, two", "three") and index._images.files == ("a.png", "b.png")
    assert index.labels is None


def test_the_first_convention_present_wins_and_one_named_column_takes_the_other_from_it(tmp_path):
    path = _csv(tmp_path, "title,image,caption,filepath,alt\na.png,b.png,cap,d.png,other\n")
    index = open_dataset("csv", path)
    assert index._images.files == ("b.png",) and index.captions == ("cap",)
    assert open_dataset("csv", path, caption_column="alt").captions == ("other",)
    assert open_dataset("csv", path, image_column="filepath")._images.files == ("d.png",)


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = _csv(tmp_path, "\ufeffimage,caption\na.png,x\n")
    assert open_dataset("csv", path).captions == ("x",)


def test_rows_are_named_by_the_line_they_start_on(tmp_path):
    path = _csv(tmp_path, 'image,caption\na.png,"two\nlines"\n\nb.png,x\n')
    index = open_dataset("csv", path)
    assert index.captions == ("two\nlines", "x")
    assert index._images.listed_at.tolist() == [2, 5]
    assert index._images.where(1).startswith(f"csv {path} line 5, sample 1: image file ")
    assert index.source == f"csv {path}"
    path = _csv(tmp_path, 'image,caption\na.png,"two\nlines"\nb.png\n', name="e.csv")
    assert _message(path) == (f"csv: {path} line 4 has 1 cells, the header 2 (separator ','); "
                              "quote cells that contain the separator")


def test_labels_are_int_class_ids_of_the_named_column(tmp_path):
    path = _csv(tmp_path, "image,caption,y\na.png,x, 3 \nb.png,z,0\n")
    assert open_dataset("csv", path, label_column="y").labels.tolist() == [3, 0]
    for bad in ("-1", "1.0", "", "\u0663", "x"):
        path = _csv(tmp_path, f"image,caption,y\na.png,x,{bad}\n", name="bad.csv")
        assert _message(path, label_column="y") == (f"csv: {path} line 2 has y={bad!r}; "
                                                    "put a class id (int ≥ 0) there")


def test_missing_empty_and_header_only_files_are_named(tmp_path):
    assert _message(tmp_path / "none.csv") == (f"csv: {tmp_path / 'none.csv'} is missing; "
                                               "put a CSV of image paths and captions there")
    path = _csv(tmp_path, "")
    assert _message(path) == f"csv: {path} is empty; put a header line and one row per image–caption pair there"
    path = _csv(tmp_path, "image,caption\n\n")
    assert _message(path) == (f"csv: {path} has a header but no rows; "
                              "put one row per image–caption pair there")


def test_unknown_columns_are_named_with_the_columns_found(tmp_path):
    path = _csv(tmp_path, "img,text\na.png,x\n")
    assert _message(path) == (f"csv: {path} has columns ['img', 'text'], none of the pairs image/caption or "
                              "filepath/title; name its columns with image_column= and caption_column=")
    assert _message(path, image_column="img", caption_column="cap") == (
        f"csv: {path} has no column caption_column='cap'; columns found: ['img', 'text']")
    assert _message(path, image_column="im", caption_column="text") == (
        f"csv: {path} has no column image_column='im'; columns found: ['img', 'text']")
    assert _message(path, image_column="img", caption_column="text", label_column="y") == (
        f"csv: {path} has no column label_column='y'; columns found: ['img', 'text']")


def test_an_empty_image_cell_and_a_path_outside_the_folder_are_named(tmp_path):
    path = _csv(tmp_path, "image,caption\n,x\n")
    assert _message(path) == f"csv: {path} line 2 has an empty 'image'; put an image path there"
    path = _csv(tmp_path, "image,caption\nok.png,y\n../a.png,x\n")
    assert _message(path) == (
        f"csv: {path} line 3 has image='../a.png', outside the CSV's folder {tmp_path}; allowed: a path "
        "relative to that folder that stays inside it (move the image there), or set "
        "allow_outside_root = true in the source's params")
    assert open_dataset("csv", path, allow_outside_root=True)._images.files == ("ok.png", "../a.png")


@pytest.mark.parametrize("name", ["image_column", "caption_column", "label_column"])
@pytest.mark.parametrize("value", ["", 3])
def test_column_names_must_be_non_empty_strings(tmp_path, name, value):
    with pytest.raises(ValueError) as e:
        open_dataset("csv", tmp_path / "x.csv", **{name: value})
    assert str(e.value) == f"csv: {name}={value!r} must be a column name"


@pytest.mark.parametrize("value", ["", ";;", 9])
def test_the_separator_must_be_one_character(tmp_path, value):
    with pytest.raises(ValueError) as e:
        open_dataset("csv", tmp_path / "x.csv", separator=value)
    assert str(e.value) == f"csv: separator={value!r} must be one character, e.g. ',' or '\\t'"


def test_a_given_separator_is_used_even_with_a_tab_in_the_header(tmp_path):
    path = _csv(tmp_path, "image;caption\tx\na.png;one\n")
    index = open_dataset("csv", path, separator=";", image_column="image", caption_column="caption\tx")
    assert index.captions == ("one",)


def test_allow_outside_root_must_be_a_bool(tmp_path):
    with pytest.raises(ValueError) as e:
        open_dataset("csv", tmp_path / "x.csv", allow_outside_root="yes")
    assert str(e.value) == "csv: allow_outside_root='yes' must be true or false"


def test_a_file_that_is_not_utf8_names_its_first_bad_line_byte_and_column(tmp_path):
    path = _csv(tmp_path, b"\xef\xbb\xbfimage,caption\na.png,ok\nb.png,caf\xe9\n", mode="b")
    assert _message(path) == (f"csv: {path} line 3 is not UTF-8 (byte 0xe9 at column 10: "
                              "invalid continuation byte); save the file as UTF-8")
    path = _csv(tmp_path, b"\xef\xbb\xbfimage,capti\xff\n", name="h.csv", mode="b")
    assert _message(path) == (f"csv: {path} line 1 is not UTF-8 (byte 0xff at column 12: "
                              "invalid start byte); save the file as UTF-8")


def test_a_bad_byte_on_the_first_line_without_a_byte_order_mark_is_counted_from_its_start(tmp_path):
    path = _csv(tmp_path, b"image,capti\xff\n", mode="b")
    assert _message(path) == (f"csv: {path} line 1 is not UTF-8 (byte 0xff at column 12: "
                              "invalid start byte); save the file as UTF-8")


def test_a_decode_error_no_line_shows_again_is_reported_as_it_came(tmp_path):
    from fedsim.data.captions_csv import _not_utf8

    path = _csv(tmp_path, "image,caption\na.png,fine\n")
    exc = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    error = _not_utf8(str(path), exc)
    assert isinstance(error, DataError)
    assert str(error) == (f"csv: {path} is not UTF-8 ('utf-8' codec can't decode byte 0xff in position 0: "
                          "invalid start byte); save the file as UTF-8")


def test_half_of_a_convention_is_not_taken_for_it(tmp_path):
    path = _csv(tmp_path, "image,text\na.png,x\n")
    assert _message(path) == (f"csv: {path} has columns ['image', 'text'], none of the pairs image/caption or "
                              "filepath/title; name its columns with image_column= and caption_column=")
    path = _csv(tmp_path, "image,filepath,title\na.png,b.png,x\n", name="e.csv")
    assert open_dataset("csv", path)._images.files == ("b.png",)


def test_a_line_break_inside_a_quoted_caption_is_kept_as_written(tmp_path):
    path = _csv(tmp_path, b'image,caption\r\na.png,"one\r\ntwo"\r\nb.png,"three\rfour"\r\n', mode="b")
    index = open_dataset("csv", path)
    assert index.captions == ("one\r\ntwo", "three\rfour") and index._images.listed_at.tolist() == [2, 4]


def test_a_file_fixed_between_the_failed_read_and_the_search_for_its_bad_line_keeps_the_reason(
        tmp_path, monkeypatch):
    from fedsim.data import captions_csv

    path = _csv(tmp_path, b"image,caption\na.png,caf\xe9\n", mode="b")
    read_rows = captions_csv._read_rows

    def saved_as_utf8_meanwhile(*args):
        try:
            return read_rows(*args)
        except UnicodeDecodeError:
            path.write_text("image,caption\na.png,café\n", encoding="utf-8")
            raise

    monkeypatch.setattr(captions_csv, "_read_rows", saved_as_utf8_meanwhile)
    assert _message(path) == (f"csv: {path} is not UTF-8 ('utf-8' codec can't decode byte 0xe9 in position 23: "
                              "invalid continuation byte); save the file as UTF-8")
