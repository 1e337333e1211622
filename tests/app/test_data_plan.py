"""The run's data as a config names it (``fedsim.app.data_plan``): the training choice is the
same in every process of a run, the server's clean split has at least two samples (or says
which setting to change), and the evaluation set and class names are the source's own — the
evaluation index already open is the one used."""

import pytest
from PIL import Image

from fedsim.app import data_plan
from fedsim.config import load_config
from fedsim.data import SHAPES, open_dataset
from tests.data.test_data_splits import IMAGE_SIZE as SIDE
from tests.data.test_data_splits import _write_csv_source


def _write_imagefolder(folder, colours: dict[str, tuple[int, int, int]]) -> None:
    """One image per class, filled with the class's colour."""
    for name, rgb in colours.items():
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (SIDE, SIDE), rgb).save(folder / name / "a.png")


EVAL_COLOURS = {"cat": (200, 0, 0), "star": (0, 200, 0)}


def _source_cfg(tmp_path, n: int, *sets: str, data: str = "csv", path: str = "data/captions.csv"):
    """A run on a source of ``n`` CSV pairs (or ``data``/``path``), evaluated on a two-class
    image folder (cat, star)."""
    _write_csv_source(tmp_path / "data", n)
    _write_imagefolder(tmp_path / "evalset", EVAL_COLOURS)
    (tmp_path / "exp.toml").write_text(
        '[model]\ninit = "scratch"\n[clients]\nnum = 2\nper_round = 2\n[attack]\nmalicious = []\n'
        f'[data]\nname = "{data}"\npath = "{path}"\ntrain_size = 20\n'
        '[eval]\nname = "imagefolder"\npath = "evalset"\n[attack.data]\ntarget = "star"\n'
    )
    return load_config(tmp_path / "exp.toml", list(sets))


# --------------------------------------------------------------------------- the training choice
def test_every_process_of_a_run_draws_the_same_training_and_root_samples(tmp_path):
    # The server and each client open the source in their own process: the choice must follow
    # from the config's seed alone, not from a draw cached in one process.
    cfg = _source_cfg(tmp_path, 40, "data.root_size=5")
    train, root = data_plan.source_splits(cfg)
    data_plan._source_splits.cache_clear()
    again_train, again_root = data_plan.source_splits(cfg)
    assert again_train is not train  # drawn anew, not the cached views
    assert again_train.captions == train.captions and again_root.captions == root.captions


# --------------------------------------------------------------------------- the server's clean split
@pytest.mark.parametrize(("root_size", "expected"), [(0, 2), (1, 2), (2, 2), (7, 7)])
def test_the_shapes_root_split_holds_root_size_samples_and_never_fewer_than_two(root_size, expected):
    cfg = load_config(None, [f"data.root_size={root_size}", "data.train_size=40"])
    assert len(data_plan.root_view(cfg, 32, "FLTrust's root data")) == expected


def test_a_source_with_exactly_two_samples_outside_the_training_choice_gives_them_as_the_root_split(tmp_path):
    cfg = _source_cfg(tmp_path, 22)
    root = data_plan.root_view(cfg, SIDE, "FLTrust's root data")
    assert len(root) == 2
    trained = set(data_plan.source_splits(cfg)[0].captions)
    assert len(trained) == 20 and not trained & set(root.captions)


def test_a_source_with_one_sample_outside_the_training_choice_names_the_user_and_what_to_change(tmp_path):
    cfg = _source_cfg(tmp_path, 21)
    source = data_plan.source_splits(cfg)[1].source
    with pytest.raises(ValueError) as err:
        data_plan.root_view(cfg, SIDE, "CleanCLIP's clean pairs")
    assert str(err.value) == (
        f"CleanCLIP's clean pairs: {source} has 1 samples left outside the training choice "
        "(need 2+); lower data.train_size or raise data.root_size"
    )


# --------------------------------------------------------------------------- evaluation and class names
def test_the_evaluation_images_of_a_source_run_are_its_eval_sets(tmp_path):
    cfg = _source_cfg(tmp_path, 22)
    test = data_plan.test_view(cfg, SIDE)
    # the image folder's two images, in class order (cat, star), at the asked side
    assert test.images.shape == (2, 3, SIDE, SIDE)
    assert [tuple(image[:, 0, 0].tolist()) for image in test.images] == list(EVAL_COLOURS.values())
    assert test.labels.tolist() == [0, 1]
    classnames, templates = data_plan.eval_classes(cfg)
    assert classnames == ("cat", "star") and templates == data_plan.eval_index(cfg).templates


def test_an_evaluation_index_already_open_is_the_one_evaluated(tmp_path):
    # build_evaluator opens the evaluation index once and hands it on: its images and classes
    # are the ones evaluated, whatever the config would open again
    cfg = _source_cfg(tmp_path, 22)
    _write_imagefolder(tmp_path / "other", {"dog": (1, 2, 3), "fox": (4, 5, 6), "owl": (7, 8, 9)})
    other = open_dataset("imagefolder", tmp_path / "other", templates=["a {} here."])
    test = data_plan.test_view(cfg, SIDE, other)
    assert [tuple(image[:, 0, 0].tolist()) for image in test.images] == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert data_plan.eval_classes(cfg, other) == (("dog", "fox", "owl"), ("a {} here.",))


def test_the_training_class_names_are_the_sources_own(tmp_path):
    assert data_plan.train_classnames(load_config(None, [])) == SHAPES
    _write_imagefolder(tmp_path / "train", {"ant": (1, 1, 1), "bee": (2, 2, 2)})
    cfg = _source_cfg(tmp_path, 22, data="imagefolder", path="train")
    assert data_plan.train_classnames(cfg) == ("ant", "bee")
    # a caption-only source has no classes
    assert data_plan.train_classnames(_source_cfg(tmp_path / "captions", 22)) is None
