"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
2009) from the python version that torchvision's ``CIFAR10``/``CIFAR100`` download: under a
root, ``cifar-10-batches-py/`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
``batches.meta``) or ``cifar-100-python/`` (``train``, ``test``, ``meta``). Nothing is
downloaded; ``path`` is that root or the batches folder itself.

Each image gets one caption: a template of CLIP's CIFAR prompts (``CIFAR_TEMPLATES``) drawn
from ``seed``, filled with its class name (CIFAR-100's fine labels; ``_`` in a class name
becomes a space). The 32×32 pixels are held in memory (150 MB for a training split), so
``materialize(32)`` returns the dataset's bytes unchanged.

The files are pickles and a data folder is untrusted: they are read with ``BatchUnpickler``,
which builds only what the format holds (dicts, lists, bytes, str, numbers and numpy arrays)
and refuses every other global a pickle names, so a payload in a batch never runs.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fedsim.data.base import (
    CIFAR_TEMPLATES,
    DataError,
    ImageCaptionIndex,
    check_seed,
    check_templates,
    parse_params,
    template_captions,
)

# name → (folder, batch files per split, meta file, class-name key, label key)
LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "batches.meta",
        b"label_names",
        b"labels",
    ),
    "cifar100": (
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        "meta",
        b"fine_label_names",
        b"fine_labels",
    ),
}


_ARCHIVE_HINT = "put the file of that name from the extracted CIFAR python archive there"
# What unpickling a file that is not a pickled dict of builtins and numpy arrays may raise.
_NOT_A_BATCH = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, LookupError, AttributeError, ImportError
)


@dataclass(frozen=True)
class CifarParams:
    split: str = "train"
    seed: int = 0
    templates: tuple[str, ...] = CIFAR_TEMPLATES


@dataclass(frozen=True)
class ArrayImages:
    """Images as rows of a uint8 (n, 3, H, W) array."""

    pixels: np.ndarray
    source: str

    def open(self, row: int) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self.pixels[row].transpose(1, 2, 0)))

    def where(self, row: int) -> str:
        return f"{self.source}, sample {row}"

    def origin(self, row: int) -> None:
        # the pixels were read (and their shape checked) when the batch loaded: there is no
        # file per image for ``check_images`` to decode
        return None


# The globals a CIFAR batch may name: numpy's array and dtype rebuilders (under numpy 1's and
# numpy 2's module names; ``_frombuffer`` is pickle protocol 5's), and ``_codecs.encode``, with
# which Python 3's protocol 2 writes bytes. None of them runs anything but a constructor.
SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    # Python 3's protocol 2 writes an empty bytes value as bytes(): admitted without an int
    # argument only (bytes(n) would allocate n bytes)
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
}


def _bytes(*args) -> bytes:
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError("it calls bytes(n), which a CIFAR batch never holds (refused)")
    return bytes(*args)


class BatchUnpickler(pickle.Unpickler):
    """An unpickler for the CIFAR python format only: ``find_class`` admits ``SAFE_GLOBALS``
    and refuses any other global (``os.system``, ``builtins.eval``, ...) before it is looked
    up, so nothing a pickle names beyond array construction is ever called. The standard
    unpickler (torchvision's) runs whatever a ``__reduce__`` payload names."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR batch never holds (refused, not run; "
                "allowed: dicts, lists, bytes, str, numbers and numpy arrays)"
            )
        if name == "bytes":
            return _bytes
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            # numpy 2 renamed numpy.core to numpy._core and warns on the old name
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _unpickle(path: str, keys: tuple[bytes, ...]) -> dict:
    # The CIFAR python version exists only as pickled dicts, so reading it needs pickle (as
    # torchvision does), restricted to what the format holds (BatchUnpickler).
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing; {_ARCHIVE_HINT}")
    try:
        with open(path, "rb") as f:
            batch = BatchUnpickler(f, encoding="bytes").load()
    except _NOT_A_BATCH as exc:
        raise DataError(f"{path} is not a CIFAR python batch ({exc}); {_ARCHIVE_HINT}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a CIFAR batch dict; {_ARCHIVE_HINT}")
    missing = [k.decode() for k in keys if k not in batch]
    if missing:
        found = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
        raise DataError(f"{path} lacks {', '.join(missing)} (found: {found}); {_ARCHIVE_HINT}")
    return batch


def open_cifar(name: str, path, **params) -> ImageCaptionIndex:
    """The ``split`` ("train" | "test") of CIFAR ``name`` ("cifar10" | "cifar100") under
    ``path``, in file order (CIFAR-10's training batches 1 to 5 in turn)."""
    p = parse_params(name, CifarParams, params)
    folder, batches, meta_file, names_key, labels_key = LAYOUTS[name]
    if p.split not in batches:
        raise ValueError(f"{name}: split={p.split!r} is unknown; allowed: {', '.join(batches)}")
    templates = check_templates(name, p.templates)
    seed = check_seed(name, p.seed)
    root = os.fspath(path)
    base = os.path.join(root, folder)
    if not os.path.isdir(base):
        if not os.path.isfile(os.path.join(root, meta_file)):
            raise DataError(
                f"{name}: {root} holds neither {folder}/ nor {meta_file}; put torchvision's "
                f"extracted CIFAR python archive (the folder {folder}) there"
            )
        base = root
    classnames = tuple(
        n.decode().replace("_", " ") for n in _unpickle(os.path.join(base, meta_file), (names_key,))[names_key]
    )
    pixels, labels = [], []
    for file in batches[p.split]:
        batch_path = os.path.join(base, file)
        batch = _unpickle(batch_path, (b"data", labels_key))
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(
                f"{batch_path}: data is {data.dtype} {data.shape}, not uint8 (n, 3072); {_ARCHIVE_HINT}"
            )
        pixels.append(data.reshape(-1, 3, 32, 32))
        raw = np.asarray(batch[labels_key])
        if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
            raise DataError(f"{batch_path}: labels hold non-integer values (e.g. "
                            f"{float(raw[raw != np.round(raw)][0])!r}); {_ARCHIVE_HINT}")
        labels.append(raw.astype(np.int64))
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)
    if len(pixels) == 0 or len(labels) != len(pixels) or labels.min() < 0 or labels.max() >= len(classnames):
        raise DataError(
            f"{name}: {base} {p.split} batches hold {len(pixels)} images and {len(labels)} labels "
            f"(need as many, ≥ 1, each in [0, {len(classnames) - 1}]); {_ARCHIVE_HINT}"
        )
    source = f"{name} {p.split} ({base})"
    return ImageCaptionIndex(
        source=source,
        captions=template_captions(labels, classnames, templates, seed),
        images=ArrayImages(pixels, source),
        labels=labels,
        classnames=classnames,
        templates=templates,
    )


def open_cifar10(path, **params) -> ImageCaptionIndex:
    return open_cifar("cifar10", path, **params)


def open_cifar100(path, **params) -> ImageCaptionIndex:
    return open_cifar("cifar100", path, **params)
