"""The run's data as a config names it (``fedsim.app.data_plan``): the training choice is the
same in every process of a run, the server's clean split has at least two samples (or says
which setting to change), and the evaluation set and class names are the source's own — the
evaluation index already open is the one used."""

import pytest
from PIL import Image

from fedsim.app import data_plan
from fedsim.config import load_config
from fedsim.data import SHAPES, open_dataset
from fedsim.models import model_image_size
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


# --------------------------------------------------------------------------- the evaluation source
def test_the_evaluation_index_is_opened_once_whatever_the_order_of_its_params(tmp_path):
    # the cache key is the params in key order: the same set named in another order is the same
    # open index, not a second copy read again
    first = _source_cfg(tmp_path, 22, 'eval.params={ templates = ["a {}."], seed = 3 }')
    second = first.model_copy(update={"eval": first.eval.model_copy(
        update={"params": {"seed": 3, "templates": ["a {}."]}})})
    assert list(second.eval.params) == ["seed", "templates"] != list(first.eval.params)
    assert data_plan.eval_index(first) is data_plan.eval_index(second)


def test_the_image_side_is_explained_by_where_the_images_come_from(tmp_path):
    # the reason an attack's error gives for the clients' image side
    assert data_plan.image_origin(load_config(None, [])) == "shapes are generated at that size"
    cfg = _source_cfg(tmp_path, 22)
    assert data_plan.image_origin(cfg) == f"model.name={cfg.model.name!r} takes that size"


def test_the_clients_images_have_the_generated_side_or_the_models(tmp_path):
    # shapes are rendered at 32 px whatever the model; a source's images at the model's side
    # (RN50 takes 224 px; the tiny models take 32, which would hide the difference)
    assert model_image_size("RN50") == 224
    assert data_plan.image_size(load_config(None, ["model.name='RN50'"])) == 32
    assert data_plan.image_size(_source_cfg(tmp_path, 22, "model.name='RN50'")) == 224


def test_every_client_is_given_at_least_two_samples_or_the_split_is_refused(tmp_path):
    # the floor the config check and every client draw with: MIN_CLIENT_SAMPLES = 2, not the
    # partitioners' own default of 1 — 3 samples over 2 clients would leave one a single sample
    cfg = load_config(None, ["clients.num=2", "clients.per_round=2", "attack.malicious=[]"])
    assert [len(part) for part in data_plan.client_parts(cfg, 4, None)] == [2, 2]
    with pytest.raises(ValueError):
        data_plan.client_parts(cfg, 3, None)
