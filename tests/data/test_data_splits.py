"""Which samples each split holds: the server's clean split (FLTrust's root data, CleanCLIP's
pairs; ``fedsim.app.build.root_split``) never overlaps what the clients train on, and an image
folder's hidden folders and files are no samples (``fedsim.data.imagefolder``)."""

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from fedsim.app import data_plan
from fedsim.app.build import build_client, root_split
from fedsim.config import load_config
from fedsim.data import open_dataset

IMAGE_SIZE = 8


def _training_data(cfg):
    """What the clients train on: every client's partition, as the app builds it."""
    config_json = cfg.model_dump_json()
    return [build_client(cfg, config_json, pid).data for pid in range(cfg.clients.num)]


def test_the_shapes_root_split_is_disjoint_from_the_clients_training_data():
    # As many root samples as training ones: a root split drawn from the training stream (a
    # generated split is a function of its stream and size) would be the training data itself.
    cfg = load_config(None, ["data.train_size=40", "data.root_size=40", "clients.num=2",
                             "clients.per_round=2", "attack.malicious=[]"])
    root = data_plan.root_view(cfg, 32, "FLTrust's root data")
    parts = _training_data(cfg)
    assert len(root) == 40 and sum(len(p) for p in parts) == 40
    # every shapes image carries its own pixel noise: equal bytes would be the same sample
    trained = {bytes(image.numpy().tobytes()) for p in parts for image in p.images}
    assert len(trained) == 40
    assert not trained & {bytes(image.numpy().tobytes()) for image in root.images}


def _colour(i: int) -> tuple[int, int, int]:
    return 7 * i, 255 - 5 * i, (40 * i) % 256


def _write_csv_source(folder, n: int) -> None:
    """``n`` images, each of its own colour, and captions.csv with a distinct caption per image."""
    (folder / "img").mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(n):
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _colour(i)).save(folder / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,picture number {i}")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")


def test_a_file_sources_root_split_is_disjoint_from_the_clients_training_data(tmp_path):
    _write_csv_source(tmp_path / "data", 30)
    for name in ("cat", "star"):
        (tmp_path / "evalset" / name).mkdir(parents=True)
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (1, 2, 3)).save(tmp_path / "evalset" / name / "a.png")
    (tmp_path / "exp.toml").write_text(
        '[model]\ninit = "scratch"\n[clients]\nnum = 2\nper_round = 2\n[attack]\nmalicious = []\n'
        '[data]\nname = "csv"\npath = "data/captions.csv"\ntrain_size = 20\nroot_size = 6\n'
        '[eval]\nname = "imagefolder"\npath = "evalset"\n[attack.data]\ntarget = "star"\n'
    )
    cfg = load_config(tmp_path / "exp.toml")
    root = root_split(cfg, SimpleNamespace(image_size=IMAGE_SIZE), "CleanCLIP's clean pairs")
    trained = [c for part in _training_data(cfg) for c in part.captions]
    assert len(root) == 6 and len(trained) == 20
    assert len(set(trained)) == 20 and len(set(root.captions)) == 6
    assert not set(root.captions) & set(trained)
    # and the pixels are the root samples' own, not a training image's
    for image, caption in zip(root.images, root.captions):
        assert tuple(image[:, 0, 0].tolist()) == _colour(int(caption.split()[-1]))


def _save(path, rgb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), rgb).save(path)


def test_imagefolder_skips_hidden_folders_and_files_inside_a_class(tmp_path):
    hidden = (255, 0, 255)
    _save(tmp_path / "cat" / "a.png", (10, 20, 30))
    _save(tmp_path / "cat" / "sub" / "b.png", (40, 50, 60))
    _save(tmp_path / "cat" / ".ipynb_checkpoints" / "a-checkpoint.png", hidden)
    _save(tmp_path / "cat" / "sub" / ".cache" / "deep" / "c.png", hidden)
    _save(tmp_path / "cat" / ".d.png", hidden)
    _save(tmp_path / "dog" / "x.png", (70, 80, 90))
    _save(tmp_path / "dog" / ".git" / "y.png", hidden)
    index = open_dataset("imagefolder", tmp_path, templates=["{}"])
    assert index.classnames == ("cat", "dog")
    assert index.labels.tolist() == [0, 0, 1]
    # class order, then sorted paths within the class: cat/a.png, cat/sub/b.png, dog/x.png
    colours = index.materialize(4).images[:, :, 0, 0]
    assert torch.equal(colours, torch.tensor([[10, 20, 30], [40, 50, 60], [70, 80, 90]], dtype=torch.uint8))


def test_a_generated_split_materializes_as_itself_and_train_count_generates_nothing(monkeypatch):
    """Code that decodes an index (``.materialize(size)``) takes shapes as they are (generated
    at 32 px; the model's preprocessing resizes), and counting the clients' samples does not
    render the split."""
    from fedsim.app import data_plan
    from fedsim.config import load_config
    from fedsim.data import load_split

    split = load_split("shapes", "train", 40, 0)
    assert split.materialize(224) is split
    cfg = load_config(None, ["data.train_size=40"])
    monkeypatch.setattr(data_plan, "load_split", lambda *a, **k: pytest.fail("rendered the split"))
    assert data_plan.train_count(cfg) == 40
