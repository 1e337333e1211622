"""Real image–caption sources on tiny files the tests write in each format."""

import io
import json
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from fedsim.data import DATASETS, DataError, ImageCaptionData, ShapesData, open_dataset
from fedsim.data.base import CIFAR_TEMPLATES, clip_resize

RED, GREEN, BLUE, WHITE = (200, 10, 20), (15, 190, 40), (30, 60, 220), (250, 250, 250)


def solid(color, size=(8, 8)) -> Image.Image:
    return Image.new("RGB", size, color)


def save(image: Image.Image, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def as_chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy())


def filled(color, size) -> torch.Tensor:
    return torch.tensor(color, dtype=torch.uint8).view(3, 1, 1).expand(3, size, size)


@pytest.fixture
def spy_open(monkeypatch):
    """Every PIL ``Image.open`` call's first argument, in order."""
    calls, real = [], Image.open

    def spy(fp, *args, **kwargs):
        calls.append(fp)
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return calls


# ---------------------------------------------------------------- CIFAR (torchvision pickles)


class Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), as the real CIFAR
    archives, pickled under Python 2, hold their keys, class names and array buffers; they
    load as bytes with ``encoding="bytes"`` and as str with torchvision's ``"latin1"``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump(obj, path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def write_cifar(root, name: str, rng) -> dict:
    """torchvision's layout with 2 images per batch; returns {split: (data, labels)}."""
    if name == "cifar10":
        folder, meta = root / "cifar-10-batches-py", "batches.meta"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        names_key, labels_key = b"label_names", b"labels"
        classes = [b"airplane", b"automobile", b"bird"]
    else:
        folder, meta = root / "cifar-100-python", "meta"
        files = {"train": ["train"], "test": ["test"]}
        names_key, labels_key = b"fine_label_names", b"fine_labels"
        classes = [b"apple", b"aquarium_fish", b"bear", b"maple_tree"]
    folder.mkdir(parents=True)
    dump({names_key: classes, b"num_cases_per_batch": 2}, folder / meta)
    written = {}
    for split, batches in files.items():
        data, labels = [], []
        for file in batches:
            d = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
            y = rng.integers(0, len(classes), 2).tolist()
            batch = {b"batch_label": file.encode(), b"data": d, labels_key: y, b"filenames": [b"a", b"b"]}
            if name == "cifar100":
                batch[b"coarse_labels"] = [0, 0]
            dump(batch, folder / file)
            data.append(d)
            labels += y
        written[split] = (np.concatenate(data), labels)
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_counts_labels_captions_and_raw_pixels(tmp_path, name):
    written = write_cifar(tmp_path, name, np.random.default_rng(0))
    for split, (data, labels) in written.items():
        index = open_dataset(name, tmp_path, split=split, seed=3)
        assert len(index) == len(labels)
        assert index.labels.tolist() == labels
        assert index.templates == CIFAR_TEMPLATES
        for caption, y in zip(index.captions, labels):
            assert caption in {t.format(index.classnames[y]) for t in CIFAR_TEMPLATES}
        batch = index.materialize(32)
        assert torch.equal(batch.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        assert batch.labels.dtype == torch.int64 and batch.captions == index.captions
        index.check()
    if name == "cifar10":
        assert index.classnames == ("airplane", "automobile", "bird")
    else:
        assert index.classnames == ("apple", "aquarium fish", "bear", "maple tree")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_agrees_with_torchvision(tmp_path, name, monkeypatch):
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tv_cifar

    write_cifar(tmp_path, name, np.random.default_rng(1))
    # Our files are not the real archive, so its md5 checks must pass by fiat.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    for train in (True, False):
        theirs = cls(str(tmp_path), train=train, download=False)
        ours = open_dataset(name, tmp_path, split="train" if train else "test")
        assert ours.labels.tolist() == list(theirs.targets)
        assert [c.replace(" ", "_") for c in ours.classnames] == theirs.classes
        assert torch.equal(ours.materialize(32).images, torch.from_numpy(theirs.data).permute(0, 3, 1, 2))


def test_cifar_captions_follow_the_seed(tmp_path):
    write_cifar(tmp_path, "cifar10", np.random.default_rng(2))
    a = open_dataset("cifar10", tmp_path, seed=1)
    assert a.captions == open_dataset("cifar10", tmp_path, seed=1).captions
    assert a.captions != open_dataset("cifar10", tmp_path, seed=2).captions
    custom = open_dataset("cifar10", tmp_path, templates=["itap of a {}."])
    assert custom.captions[0] == f"itap of a {custom.classnames[custom.labels[0]]}."


def test_cifar_accepts_the_batches_folder_itself(tmp_path):
    write_cifar(tmp_path, "cifar10", np.random.default_rng(3))
    inner = open_dataset("cifar10", tmp_path / "cifar-10-batches-py", split="test")
    assert inner.labels.tolist() == open_dataset("cifar10", tmp_path, split="test").labels.tolist()


def test_cifar_bad_input(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        open_dataset("cifar10", tmp_path)
    write_cifar(tmp_path, "cifar10", np.random.default_rng(4))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing"):
        open_dataset("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch is not a CIFAR python batch"):
        open_dataset("cifar10", tmp_path, split="test")
    with pytest.raises(ValueError, match="split='val' is unknown; allowed: train, test"):
        open_dataset("cifar10", tmp_path, split="val")
    with pytest.raises(ValueError, match="templates="):
        open_dataset("cifar10", tmp_path, templates=["no slot"])


def test_cifar100_batch_without_fine_labels(tmp_path):
    write_cifar(tmp_path, "cifar100", np.random.default_rng(5))
    dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, tmp_path / "cifar-100-python" / "test")
    with pytest.raises(DataError, match=r"lacks fine_labels \(found: \['data', 'labels'\]\)"):
        open_dataset("cifar100", tmp_path, split="test")


# ---------------------------------------------------------------- CSV


def write_images(folder, colors) -> list[str]:
    names = []
    for i, color in enumerate(colors):
        save(solid(color, (6 + i, 5)), folder / "img" / f"{i}.png")
        names.append(f"img/{i}.png")
    return names


def write_csv(path, names) -> None:
    path.write_text("image,caption,y\n" + "".join(f"{n},c{i},{i}\n" for i, n in enumerate(names)))


def test_csv_cleanclip_convention(tmp_path):
    names = write_images(tmp_path, [RED, GREEN, BLUE])
    (tmp_path / "train.csv").write_text(
        "image,caption,label\n"
        f'{names[0]},a red square,0\n{names[1]},"green, with a comma",1\n{names[2]},  blue  ,2\n'
    )
    index = open_dataset("csv", tmp_path / "train.csv")
    assert len(index) == 3 and index.labels is None and index.classnames is None
    assert index.captions == ("a red square", "green, with a comma", "blue")
    batch = index.materialize(4)
    for k, color in enumerate([RED, GREEN, BLUE]):
        assert torch.equal(batch.images[k], filled(color, 4))
    labelled = open_dataset("csv", tmp_path / "train.csv", label_column="label")
    assert labelled.labels.tolist() == [0, 1, 2]


def test_csv_open_clip_convention_and_named_columns(tmp_path):
    names = write_images(tmp_path / "data", [WHITE, BLUE])
    (tmp_path / "data" / "val.csv").write_text(
        f"title\tfilepath\nwhite\t{names[0]}\n\"tab\there\"\t{names[1]}\n"
    )
    index = open_dataset("csv", tmp_path / "data" / "val.csv")
    assert index.captions == ("white", "tab\there")
    assert torch.equal(index.materialize(5).images[1], filled(BLUE, 5))
    (tmp_path / "data" / "semi.csv").write_text(f"txt;path\nwhite;{names[0]}\n")
    named = open_dataset(
        "csv", tmp_path / "data" / "semi.csv", image_column="path", caption_column="txt", separator=";"
    )
    assert named.captions == ("white",) and torch.equal(named.materialize(3).images[0], filled(WHITE, 3))


def test_csv_bad_input(tmp_path):
    with pytest.raises(DataError, match="missing.csv is missing"):
        open_dataset("csv", tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("img,text\na.png,x\n")
    with pytest.raises(DataError, match=r"columns \['img', 'text'\].*image_column= and caption_column="):
        open_dataset("csv", bad)
    with pytest.raises(DataError, match=r"no column caption_column='caption'; columns found: \['img', 'text'"):
        open_dataset("csv", bad, image_column="img", caption_column="caption")
    with pytest.raises(DataError, match=r"no column label_column='y'"):
        open_dataset("csv", bad, image_column="img", caption_column="text", label_column="y")
    bad.write_text("image,caption\n")
    with pytest.raises(DataError, match="no rows"):
        open_dataset("csv", bad)
    bad.write_text("")
    with pytest.raises(DataError, match="is empty"):
        open_dataset("csv", bad)
    bad.write_text("image,caption\na.png,x,extra\n")
    with pytest.raises(DataError, match="line 2 has 3 cells"):
        open_dataset("csv", bad)
    bad.write_text("image,caption,label\na.png,x,cat\n")
    with pytest.raises(DataError, match="line 2 has label='cat'"):
        open_dataset("csv", bad, label_column="label")
    with pytest.raises(ValueError, match="separator='::' must be one character"):
        open_dataset("csv", bad, separator="::")


def test_unreadable_and_missing_images_name_the_sample(tmp_path):
    names = write_images(tmp_path, [RED])
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "c.csv").write_text(f"image,caption\n{names[0]},ok\nimg/broken.png,bad\nimg/gone.png,gone\n")
    index = open_dataset("csv", tmp_path / "c.csv")  # opening does not touch images
    with pytest.raises(DataError, match=r"sample 1: image file .*broken.png is not a readable image"):
        index.materialize(4)
    with pytest.raises(DataError, match=r"sample 2: image file .*gone.png is not a readable image"):
        index.subset([2]).materialize(4)
    with pytest.raises(DataError, match=r"2 of 3 images are not readable: .*broken.png.*gone.png"):
        index.check()
    index.subset([0]).check()


def test_truncated_image_fails_at_materialize(tmp_path):
    buffer = io.BytesIO()
    solid(RED, (64, 64)).save(buffer, format="PNG")
    (tmp_path / "t.png").write_bytes(buffer.getvalue()[:-30])
    (tmp_path / "c.csv").write_text("image,caption\nt.png,cut\n")
    with pytest.raises(DataError, match="t.png is not a readable image"):
        open_dataset("csv", tmp_path / "c.csv").materialize(8)


# ---------------------------------------------------------------- COCO


def write_coco(tmp_path) -> None:
    save(solid(RED), tmp_path / "train2017" / "000000000009.jpg")
    save(solid(BLUE), tmp_path / "train2017" / "000000000025.png")
    save(solid(GREEN), tmp_path / "train2017" / "000000000030.png")
    doc = {
        "info": {},
        "images": [
            {"id": 25, "file_name": "000000000025.png", "height": 8, "width": 8},
            {"id": 9, "file_name": "000000000009.jpg", "height": 8, "width": 8},
            {"id": 30, "file_name": "000000000030.png", "height": 8, "width": 8},
        ],
        "annotations": [
            {"id": 1, "image_id": 9, "caption": "A red thing.\n"},
            {"id": 2, "image_id": 25, "caption": "A blue thing."},
            {"id": 3, "image_id": 9, "caption": "Red again."},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2017.json").write_text(json.dumps(doc))


def test_coco_all_and_first_captions(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "captions_train2017.json"
    index = open_dataset("coco", path, image_dir="../train2017")
    assert index.captions == ("A blue thing.", "A red thing.", "Red again.")  # image 30 has none
    assert index.labels is None
    images = index.materialize(8).images
    assert torch.equal(images[0], filled(BLUE, 8)) and torch.equal(images[1], images[2])
    first = open_dataset("coco", path, image_dir=str(tmp_path / "train2017"), captions_per_image="first")
    assert first.captions == ("A blue thing.", "A red thing.")


def test_coco_bad_input(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "captions_train2017.json"
    with pytest.raises(ValueError, match="image_dir=None must name"):
        open_dataset("coco", path)
    with pytest.raises(ValueError, match="captions_per_image='one' is unknown; allowed: all, first"):
        open_dataset("coco", path, image_dir="../train2017", captions_per_image="one")
    with pytest.raises(DataError, match="val2017 is missing"):
        open_dataset("coco", path, image_dir="../val2017")
    with pytest.raises(DataError, match="captions_val2017.json is missing"):
        open_dataset("coco", path.with_name("captions_val2017.json"), image_dir="../train2017")
    doc = json.loads(path.read_text())
    doc["annotations"].append({"id": 4, "image_id": 77, "caption": "orphan"})
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotations\[3\] has image_id=77"):
        open_dataset("coco", path, image_dir="../train2017")
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(DataError, match=r"images\[0\] needs id, file_name \(found: \['id'\]\)"):
        open_dataset("coco", path, image_dir="../train2017")
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="needs lists 'images' and 'annotations'"):
        open_dataset("coco", path, image_dir="../train2017")
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="no captioned image"):
        open_dataset("coco", path, image_dir="../train2017")


# ---------------------------------------------------------------- WebDataset


def png_bytes(color, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    solid(color, size).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path, members) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_shards(folder) -> None:
    folder.mkdir()
    write_shard(
        folder / "shard-000000.tar",
        [
            ("__meta__", b"skipped"),
            ("s000.png", png_bytes(RED)),
            ("s000.txt", b"a red one"),
            ("s000.json", b"{}"),
            ("dir/s001.txt", "caf\u00e9 au lait\n".encode()),
            ("dir/s001.PNG", png_bytes(GREEN)),
        ],
    )
    write_shard(
        folder / "shard-000001.tar", [("s002.txt", b"a blue one"), ("s002.png", png_bytes(BLUE, (12, 8)))]
    )


def test_webdataset_brace_and_glob_patterns(tmp_path):
    write_shards(tmp_path / "wds")
    braces = open_dataset("webdataset", f"{tmp_path}/wds/shard-{{000000..000001}}.tar")
    glob = open_dataset("webdataset", str(tmp_path / "wds" / "shard-*.tar"))
    assert braces.captions == glob.captions == ("a red one", "café au lait", "a blue one")
    images = braces.materialize(8).images
    braces.check()
    assert torch.equal(images, glob.materialize(8).images)
    for k, color in enumerate([RED, GREEN, BLUE]):
        assert torch.equal(images[k], filled(color, 8))
    single = open_dataset("webdataset", tmp_path / "wds" / "shard-000001.tar")
    assert single.captions == ("a blue one",)


def test_webdataset_agrees_with_the_webdataset_package(tmp_path):
    import webdataset

    write_shards(tmp_path / "wds")
    pattern = f"{tmp_path}/wds/shard-{{000000..000001}}.tar"
    theirs = list(webdataset.WebDataset(pattern, shardshuffle=False))
    ours = open_dataset("webdataset", pattern)
    assert list(ours.captions) == [s["txt"].decode().strip() for s in theirs]
    for k, sample in enumerate(theirs):
        expected = as_chw(clip_resize(Image.open(io.BytesIO(sample["png"])), 8))
        assert torch.equal(ours.subset([k]).materialize(8).images[0], expected)


def test_webdataset_reads_only_the_subset(tmp_path, spy_open):
    write_shards(tmp_path / "wds")
    index = open_dataset("webdataset", str(tmp_path / "wds" / "*.tar"))
    assert spy_open == []
    batch = index.subset([2]).materialize(4)
    assert len(spy_open) == 1 and torch.equal(batch.images[0], filled(BLUE, 4))


def test_webdataset_bad_input(tmp_path):
    with pytest.raises(DataError, match="no file matches"):
        open_dataset("webdataset", str(tmp_path / "*.tar"))
    with pytest.raises(DataError, match="shard-000009.tar is missing"):
        open_dataset("webdataset", str(tmp_path / "shard-000009.tar"))
    write_shard(tmp_path / "a.tar", [("k1.png", png_bytes(RED)), ("k1.json", b"{}")])
    with pytest.raises(DataError, match=r"key 'k1' has members \['json', 'png'\]; each sample needs an image"):
        open_dataset("webdataset", tmp_path / "a.tar")
    (tmp_path / "b.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match="b.tar is not an uncompressed tar"):
        open_dataset("webdataset", tmp_path / "b.tar")
    write_shard(tmp_path / "c.tar", [("k1.png", b"garbage"), ("k1.txt", b"caption")])
    index = open_dataset("webdataset", tmp_path / "c.tar")
    with pytest.raises(DataError, match=r"sample 0: key 'k1' in shard .*c.tar is not a readable image"):
        index.materialize(4)
    with pytest.raises(DataError, match=r"1 of 1 images are not readable: .*key 'k1'"):
        index.check()
    write_shard(tmp_path / "d.tar", [])
    with pytest.raises(DataError, match="hold no samples"):
        open_dataset("webdataset", tmp_path / "d.tar")


# ---------------------------------------------------------------- image folder


def test_imagefolder_classes_labels_and_captions(tmp_path):
    save(solid(RED), tmp_path / "set" / "fire_truck" / "b.png")
    save(solid(RED), tmp_path / "set" / "fire_truck" / "a.JPG")
    save(solid(GREEN), tmp_path / "set" / "apple" / "nested" / "x.png")
    save(solid(BLUE), tmp_path / "set" / ".ipynb_checkpoints" / "y.png")
    (tmp_path / "set" / "apple" / "notes.txt").write_text("not an image")
    index = open_dataset("imagefolder", tmp_path / "set", templates=["a photo of a {}."])
    assert index.classnames == ("apple", "fire truck")
    assert index.labels.tolist() == [0, 1, 1]
    assert index.captions == ("a photo of a apple.", "a photo of a fire truck.", "a photo of a fire truck.")
    assert torch.equal(index.materialize(8).images[0], filled(GREEN, 8))
    default = open_dataset("imagefolder", tmp_path / "set")
    assert default.templates == CIFAR_TEMPLATES


def test_imagefolder_bad_input(tmp_path):
    with pytest.raises(DataError, match="nowhere is missing"):
        open_dataset("imagefolder", tmp_path / "nowhere")
    (tmp_path / "set").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        open_dataset("imagefolder", tmp_path / "set")
    save(solid(RED), tmp_path / "set" / "cat" / "a.png")
    (tmp_path / "set" / "dog").mkdir()
    with pytest.raises(DataError, match=r"class folder .*dog holds no image"):
        open_dataset("imagefolder", tmp_path / "set")


# ---------------------------------------------------------------- shared behaviour


def test_registry_and_unknown_names():
    assert set(DATASETS) == {"cifar10", "cifar100", "csv", "coco", "webdataset", "imagefolder"}
    with pytest.raises(ValueError, match="dataset 'mnist' is unknown; allowed: cifar10, cifar100, csv"):
        open_dataset("mnist", "x")


@pytest.mark.parametrize(
    "name, allowed",
    [
        ("cifar10", "split, seed, templates"),
        ("cifar100", "split, seed, templates"),
        ("csv", "image_column, caption_column, separator, label_column, allow_outside_root"),
        ("coco", "image_dir, captions_per_image, allow_outside_root"),
        ("webdataset", "image_extensions, caption_extension"),
        ("imagefolder", "templates, seed"),
    ],
)
def test_unknown_parameter_is_named_with_the_allowed_ones(tmp_path, name, allowed):
    with pytest.raises(ValueError, match=f"{name}: unknown parameter 'colour'; allowed: {allowed}$"):
        open_dataset(name, tmp_path, colour="red")


@pytest.mark.parametrize("size", [(37, 20), (20, 37), (64, 48), (10, 10), (5, 9)])
@pytest.mark.parametrize("target", [16, 20, 24])
def test_clip_resize_matches_torchvision(size, target):
    from torchvision import transforms as T

    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    clip = T.Compose([T.Resize(target, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(target)])
    assert torch.equal(as_chw(clip_resize(image, target)), as_chw(clip(image)))


def test_non_square_image_keeps_its_centre(tmp_path):
    image = Image.new("RGB", (60, 20))
    for k, color in enumerate([RED, GREEN, BLUE]):
        image.paste(color, (20 * k, 0, 20 * k + 20, 20))
    save(image, tmp_path / "img" / "bands.png")
    save(Image.new("L", (30, 10), 77), tmp_path / "img" / "gray.png")
    (tmp_path / "c.csv").write_text("image,caption\nimg/bands.png,bands\nimg/gray.png,gray\n")
    batch = open_dataset("csv", tmp_path / "c.csv").materialize(20)
    assert batch.images.shape == (2, 3, 20, 20)
    assert torch.equal(batch.images[0], filled(GREEN, 20))  # shorter side already 20: crop only
    assert torch.equal(batch.images[1], filled((77, 77, 77), 20))  # grayscale → RGB, upscaled


def test_subset_opens_only_its_own_files(tmp_path, spy_open):
    names = write_images(tmp_path, [RED, GREEN, BLUE, WHITE])
    write_csv(tmp_path / "c.csv", names)
    index = open_dataset("csv", tmp_path / "c.csv", label_column="y")
    assert spy_open == []
    view = index.subset([3, 1, 2]).subset(torch.tensor([2, 0]))
    assert view.captions == ("c2", "c3") and view.labels.tolist() == [2, 3]
    assert spy_open == []
    batch = view.materialize(4)
    assert [str(p) for p in spy_open] == [str(tmp_path / names[2]), str(tmp_path / names[3])]
    assert torch.equal(batch.images[0], filled(BLUE, 4)) and torch.equal(batch.images[1], filled(WHITE, 4))
    assert index.subset([]).materialize(4).images.shape == (0, 3, 4, 4)


def test_same_files_same_params_same_bytes(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "captions_train2017.json"
    a, b = (open_dataset("coco", path, image_dir="../train2017") for _ in range(2))
    assert a.captions == b.captions
    assert torch.equal(a.materialize(7).images, b.materialize(7).images)


def test_in_memory_type_has_the_shapes_api(tmp_path):
    names = write_images(tmp_path, [RED, GREEN, BLUE])
    write_csv(tmp_path / "c.csv", names)
    batch = open_dataset("csv", tmp_path / "c.csv", label_column="y").materialize(4)
    assert isinstance(batch, ImageCaptionData) and len(batch) == 3
    part = batch.subset(torch.tensor([2, 0]))
    assert part.captions == ("c2", "c0") and part.labels.tolist() == [2, 0]
    assert torch.equal(part.images[0], batch.images[2])
    shared = {"images", "labels", "captions", "subset", "__len__"}
    assert shared <= set(dir(ShapesData)) | {f for f in ShapesData.__dataclass_fields__}
    assert shared <= set(dir(batch))
    with pytest.raises(ValueError, match="3 images need 3 captions"):
        ImageCaptionData(images=batch.images, captions=("x",), labels=None)
    with pytest.raises(ValueError, match="image_size=0 must be a positive int"):
        open_dataset("csv", tmp_path / "c.csv").materialize(0)


class _Payload:
    """A pickle that calls ``os.system`` while it is loaded (a ``__reduce__`` payload)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("victim", ["batches.meta", "data_batch_2", "test_batch"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickle_payload_in_a_cifar_file_never_runs(tmp_path, victim, protocol):
    write_cifar(tmp_path, "cifar10", np.random.default_rng(6))
    marker = tmp_path / "ran"
    with open(tmp_path / "cifar-10-batches-py" / victim, "wb") as f:
        pickle.dump({b"label_names": [b"a"], b"data": _Payload(marker), b"labels": [0]}, f, protocol=protocol)
    with pytest.raises(DataError, match=rf"{victim} is not a CIFAR python batch .*posix.system|{victim} .*system"):
        open_dataset("cifar10", tmp_path, split="test" if victim == "test_batch" else "train")
    assert not marker.exists()


def test_a_payload_in_a_cifar_file_is_refused_through_the_cli(tmp_path):
    import subprocess
    import sys

    write_cifar(tmp_path, "cifar10", np.random.default_rng(7))
    marker = tmp_path / "ran"
    dump({b"label_names": _Payload(marker)}, tmp_path / "cifar-10-batches-py" / "batches.meta")
    (tmp_path / "c.toml").write_text(
        f'[data]\nname = "cifar10"\npath = "{tmp_path}"\ntrain_size = 20\ntest_size = 20\nroot_size = 0\n'
        '[model]\ninit = "scratch"\n[clients]\nnum = 2\nper_round = 2\n[attack]\nenabled = false\n'
    )
    proc = subprocess.run([sys.executable, "-m", "fedsim.cli", "validate", str(tmp_path / "c.toml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "batches.meta" in proc.stderr and "refused" in proc.stderr, proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batches_pickled_with_any_protocol_still_load(tmp_path, protocol):
    written = write_cifar(tmp_path, "cifar10", np.random.default_rng(8))
    folder = tmp_path / "cifar-10-batches-py"
    data, labels = written["test"]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": labels}, f, protocol=protocol)
    index = open_dataset("cifar10", tmp_path, split="test")
    assert index.labels.tolist() == labels
    assert torch.equal(index.materialize(32).images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
