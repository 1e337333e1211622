"""Image–caption pairs listed in a CSV file, image paths relative to the CSV's folder.

Two conventions are recognised from the header when the columns are not named:
CleanCLIP's and BadCLIP's ``image,caption`` (comma-separated; Bansal et al., ICCV 2023;
Liang et al., CVPR 2024) and open_clip's ``filepath``/``title`` (tab-separated, its
``--csv-img-key``/``--csv-caption-key``/``--csv-separator`` defaults). The separator, when not
given, is a tab if the header line holds one and a comma otherwise. ``label_column`` optionally
names a column of int class ids. Cells are parsed by the ``csv`` module (quoted cells may hold
the separator or line breaks); the file is UTF-8 (a byte-order mark is allowed).

An image path must stay inside the CSV's folder (no ``../``, no absolute path) unless
``allow_outside_root = true``, so that a CSV from elsewhere cannot make a run read files
outside its folder.
"""

from __future__ import annotations

import codecs
import csv
import os
from dataclasses import dataclass

import numpy as np

from fedsim.data.base import DataError, FileImages, ImageCaptionIndex, check_flag, inside_root, parse_params

# (image column, caption column), tried in this order when the columns are not named.
CONVENTIONS = (("image", "caption"), ("filepath", "title"))


@dataclass(frozen=True)
class CsvParams:
    image_column: str | None = None
    caption_column: str | None = None
    separator: str | None = None
    label_column: str | None = None
    allow_outside_root: bool = False


def _columns(path: str, header: list[str], p: CsvParams) -> tuple[str, str]:
    image, caption = p.image_column, p.caption_column
    if image is None or caption is None:
        found = next(((i, c) for i, c in CONVENTIONS if i in header and c in header), None)
        if found is None:
            raise DataError(
                f"csv: {path} has columns {header}, none of the pairs "
                f"{' or '.join('/'.join(c) for c in CONVENTIONS)}; name its columns with "
                "image_column= and caption_column="
            )
        image, caption = image or found[0], caption or found[1]
    named = (("image_column", image), ("caption_column", caption), ("label_column", p.label_column))
    for param, column in named:
        if column is not None and column not in header:
            raise DataError(f"csv: {path} has no column {param}={column!r}; columns found: {header}")
    return image, caption


def _not_utf8(path: str, exc: UnicodeDecodeError) -> DataError:
    """The error for a CSV that is not UTF-8, naming its first undecodable line: the text
    reader decodes blocks of lines at once, so its error has no line; read the bytes again
    line by line (a newline byte is never part of a multi-byte UTF-8 character)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(
                    f"csv: {path} line {number} is not UTF-8 (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1}: {e.reason}); save the file as UTF-8"
                )
    return DataError(f"csv: {path} is not UTF-8 ({exc}); save the file as UTF-8")


def open_csv(path, **params) -> ImageCaptionIndex:
    """One sample per data row of the CSV file ``path``, in file order."""
    p = parse_params("csv", CsvParams, params)
    for name in ("image_column", "caption_column", "label_column"):
        value = getattr(p, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"csv: {name}={value!r} must be a column name")
    if p.separator is not None and (not isinstance(p.separator, str) or len(p.separator) != 1):
        raise ValueError(f"csv: separator={p.separator!r} must be one character, e.g. ',' or '\\t'")
    allow_outside = check_flag("csv", "allow_outside_root", p.allow_outside_root)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"csv: {path} is missing; put a CSV of image paths and captions there")
    root = os.path.dirname(os.path.abspath(path))
    try:
        files, captions, labels, lines = _read_rows(path, p, root, allow_outside)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    if not files:
        raise DataError(f"csv: {path} has a header but no rows; put one row per image–caption pair there")
    source = f"csv {path}"
    return ImageCaptionIndex(
        source=source,
        captions=captions,
        images=FileImages(root, tuple(files), source, listed_at=np.asarray(lines, dtype=np.int64)),
        labels=labels if p.label_column is not None else None,
    )


def _read_rows(path: str, p: CsvParams, root: str, allow_outside: bool):
    """(image paths, captions, labels, first line of each row) of the CSV's data rows."""
    # utf-8-sig: spreadsheet exports often start with a byte-order mark that would otherwise
    # become part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        separator = p.separator or ("\t" if "\t" in first else ",")
        f.seek(0)
        reader = csv.reader(f, delimiter=separator)
        header = next(reader, None)
        if header is None:
            raise DataError(
                f"csv: {path} is empty; put a header line and one row per image–caption pair there"
            )
        image_col, caption_col = _columns(path, header, p)
        at = {c: header.index(c) for c in (image_col, caption_col, p.label_column) if c is not None}
        files, captions, labels, lines = [], [], [], []
        start = reader.line_num + 1
        for row in reader:
            # a quoted cell may span lines: a row is named by the line it starts on
            line, start = start, reader.line_num + 1
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"csv: {path} line {line} has {len(row)} cells, the header {len(header)} "
                    f"(separator {separator!r}); quote cells that contain the separator"
                )
            image = row[at[image_col]]
            if not image:
                raise DataError(
                    f"csv: {path} line {line} has an empty {image_col!r}; put an image path there"
                )
            if not allow_outside and not inside_root(image):
                raise DataError(
                    f"csv: {path} line {line} has {image_col}={image!r}, outside the CSV's folder {root}; "
                    "allowed: a path relative to that folder that stays inside it (move the image there), "
                    "or set allow_outside_root = true in the source's params"
                )
            files.append(image)
            lines.append(line)
            captions.append(row[at[caption_col]])
            if p.label_column is not None:
                cell = row[at[p.label_column]].strip()
                if not (cell.isascii() and cell.isdigit()):
                    raise DataError(
                        f"csv: {path} line {line} has {p.label_column}={cell!r}; "
                        "put a class id (int ≥ 0) there"
                    )
                labels.append(int(cell))
    return files, captions, labels, lines
