"""CIFAR batches as users bring them (``fedsim.data.cifar``): the real archives, pickled by
numpy 1, load under numpy 2 without its deprecation warnings; a batch that is not what the
format holds is refused with a message naming the file, what is wrong and what was found."""

import io
import pickle
import warnings

import numpy as np
import pytest

from fedsim.data import DataError, open_dataset

HINT = "put the file of that name from the extracted CIFAR python archive there"
CLASSES = [b"airplane", b"automobile", b"bird"]


def _pickle(obj, protocol: int = 4) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _numpy1_pickle(obj, protocol: int) -> bytes:
    """``obj`` pickled as numpy 1 pickles arrays: naming ``numpy.core.multiarray`` and
    ``numpy.core.numeric`` (numpy 2 writes ``numpy._core.…``), as the real CIFAR files do."""
    buffer = io.BytesIO()
    pickler = pickle._Pickler(buffer, protocol=protocol)
    pickler.framer.start_framing = lambda: None  # no frames: the renamed modules are shorter
    pickler.dump(obj)
    data = buffer.getvalue()
    if protocol < 4:  # GLOBAL: "c<module>\n<name>\n"
        renamed = data.replace(b"cnumpy._core.", b"cnumpy.core.")
    else:  # STACK_GLOBAL takes the module as a SHORT_BINUNICODE string: opcode, length, bytes
        renamed = data
        for module in (b"numpy._core.multiarray", b"numpy._core.numeric"):
            old = module.replace(b"._core.", b".core.")
            renamed = renamed.replace(b"\x8c" + bytes([len(module)]) + module, b"\x8c" + bytes([len(old)]) + old)
    assert b"numpy.core." in renamed and b"numpy._core." not in renamed
    return renamed


def _write(root, test_batch: bytes, meta: bytes | None = None):
    """cifar10's layout with only the test split (all ``split="test"`` reads)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batches.meta").write_bytes(meta or _pickle({b"label_names": CLASSES}))
    (folder / "test_batch").write_bytes(test_batch)
    return folder


def _batch(data, labels) -> bytes:
    return _pickle({b"batch_label": b"testing batch 1 of 1", b"data": data, b"labels": labels})


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


# ---------------------------------------------------------------- numpy 1 pickles
@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("numpy_version", [None, "2.0.2"])
def test_a_batch_pickled_by_numpy_1_loads_without_numpys_deprecation_warning(tmp_path, monkeypatch,
                                                                              protocol, numpy_version):
    if numpy_version is not None:  # the renaming holds for every numpy 2, 2.0 included
        monkeypatch.setattr(np, "__version__", numpy_version)
    data = _pixels(3)
    folder = _write(tmp_path, _numpy1_pickle({b"data": data, b"labels": [2, 0, 1]}, protocol))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        index = open_dataset("cifar10", tmp_path, split="test")
    assert [str(w.message)[:40] for w in caught if issubclass(w.category, DeprecationWarning)] == []
    assert index.labels.tolist() == [2, 0, 1]
    assert np.array_equal(index.materialize(32).images.numpy(), data.reshape(3, 3, 32, 32))
    # what a message about one of its images would call it (the store's ``where``)
    assert index.source == f"cifar10 test ({folder})"
    assert index._images.where(2) == f"cifar10 test ({folder}), sample 2"


# ---------------------------------------------------------------- refused content
class _Eval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_a_global_other_than_array_construction_is_refused_with_what_is_allowed(tmp_path):
    folder = _write(tmp_path, _pickle({b"data": _Eval(), b"labels": [0]}))
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path, split="test")
    assert str(e.value) == (
        f"{folder / 'test_batch'} is not a CIFAR python batch (it names builtins.eval, which a CIFAR "
        "batch never holds (refused, not run; allowed: dicts, lists, bytes, str, numbers and numpy "
        f"arrays)); {HINT}"
    )


def test_a_batch_that_is_not_a_dict_says_what_it_holds(tmp_path):
    folder = _write(tmp_path, _pickle([_pixels(2), [0, 1]]))
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path, split="test")
    assert str(e.value) == f"{folder / 'test_batch'} holds a list, not a CIFAR batch dict; {HINT}"


def test_a_batch_with_str_and_int_keys_lists_every_missing_key_and_what_it_found(tmp_path):
    # pickled by Python 3 with str keys (and a stray int): neither b"data" nor b"labels"
    folder = _write(tmp_path, _pickle({"data": _pixels(2), "labels": [0, 1], 7: "x"}))
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path, split="test")
    assert str(e.value) == f"{folder / 'test_batch'} lacks data, labels (found: ['7', 'data', 'labels']); {HINT}"


def test_bad_templates_and_seed_name_the_dataset(tmp_path):
    _write(tmp_path, _batch(_pixels(2), [0, 1]))
    with pytest.raises(ValueError, match=r"^cifar10: templates=\['no slot'\] must be"):
        open_dataset("cifar10", tmp_path, split="test", templates=["no slot"])
    with pytest.raises(ValueError, match=r"^cifar10: seed='3' must be an int$"):
        open_dataset("cifar10", tmp_path, split="test", seed="3")


@pytest.mark.parametrize("data, described", [
    (_pixels(2).reshape(2, 3072, 1), "uint8 (2, 3072, 1)"),  # the right count, the wrong shape
    (_pixels(2).astype(np.float64), "float64 (2, 3072)"),  # the right shape, the wrong type
    (_pixels(2)[:, :1024], "uint8 (2, 1024)"),  # one channel
])
def test_pixels_that_are_not_uint8_rows_of_3072_are_refused(tmp_path, data, described):
    folder = _write(tmp_path, _batch(data, [0, 1]))
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path, split="test")
    assert str(e.value) == f"{folder / 'test_batch'}: data is {described}, not uint8 (n, 3072); {HINT}"


# ---------------------------------------------------------------- labels
def test_labels_stored_as_whole_floats_load_as_class_ids(tmp_path):
    _write(tmp_path, _batch(_pixels(3), np.array([2.0, 0.0, 1.0])))
    index = open_dataset("cifar10", tmp_path, split="test", templates=["a photo of a {}."])
    assert index.labels.tolist() == [2, 0, 1]
    assert index.captions == ("a photo of a bird.", "a photo of a airplane.", "a photo of a automobile.")


def test_a_split_of_a_single_image_loads(tmp_path):
    _write(tmp_path, _batch(_pixels(1), [1]))
    assert open_dataset("cifar10", tmp_path, split="test").labels.tolist() == [1]


@pytest.mark.parametrize("n, labels, counts", [
    (2, [0, -1], "2 images and 2 labels"),  # a negative label
    (2, [0, 3], "2 images and 2 labels"),  # one past the last of 3 classes
    (2, [0, 1, 2], "2 images and 3 labels"),  # more labels than images
    (0, [], "0 images and 0 labels"),  # nothing at all
])
def test_labels_that_do_not_fit_the_images_or_the_classes_are_refused(tmp_path, n, labels, counts):
    folder = _write(tmp_path, _batch(_pixels(n), labels))
    with pytest.raises(DataError) as e:
        open_dataset("cifar10", tmp_path, split="test")
    assert str(e.value) == (
        f"cifar10: {folder} test batches hold {counts} (need as many, ≥ 1, each in [0, 2]); {HINT}"
    )


def test_labels_with_a_fraction_are_refused_not_truncated(tmp_path):
    _write(tmp_path, _batch(_pixels(3), np.array([2.0, 1.7, 1.0])))
    with pytest.raises(DataError, match=r"test_batch: labels hold non-integer values \(e.g. 1.7\)"):
        open_dataset("cifar10", tmp_path, split="test")


def test_an_empty_bytes_value_pickled_by_python_3_loads(tmp_path):
    # Python 3's protocol 2 writes b"" as a call of bytes(); bytes(n) stays refused
    _write(tmp_path, pickle.dumps({b"batch_label": b"", b"data": _pixels(2), b"labels": [0, 1]}, protocol=2))
    assert open_dataset("cifar10", tmp_path, split="test").labels.tolist() == [0, 1]


def test_bytes_of_a_size_is_refused(tmp_path):
    class Big:
        def __reduce__(self):
            return bytes, (10**12,)

    _write(tmp_path, pickle.dumps({b"data": Big(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"bytes\(n\)"):
        open_dataset("cifar10", tmp_path, split="test")
