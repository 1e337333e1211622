"""Bring-your-own-data config: sources, paths and the checks that run before anything starts,
on tiny CSV caption sets and image folders the tests write."""

import pytest
from PIL import Image

from fedsim.app.data_plan import eval_index, source_splits
from fedsim.config import ConfigError
from fedsim.runner import load

COLORS = [(200, 10, 20), (15, 190, 40), (30, 60, 220), (250, 250, 250), (240, 200, 0)]


def write_csv_set(folder, n: int) -> None:
    """``n`` solid images and captions.csv (CleanCLIP's image/caption columns) under ``folder``."""
    (folder / "img").mkdir(parents=True)
    rows = ["image,caption"]
    for i in range(n):
        Image.new("RGB", (12, 10), COLORS[i % len(COLORS)]).save(folder / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,a picture number {i} of colour {i % len(COLORS)}")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")


def write_imagefolder(folder, classes=("cat", "dog", "star"), per_class: int = 4) -> None:
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (9, 9), COLORS[(k + i) % len(COLORS)]).save(folder / name / f"{i}.png")


def write_config(folder, body: str):
    path = folder / "exp.toml"
    path.write_text("[model]\ninit = \"scratch\"\n[clients]\nnum = 2\nper_round = 2\n"
                    "[attack]\nmalicious = [0]\n" + body)
    return path


CSV_WITH_EVAL = """
[data]
name = "csv"
path = "data/captions.csv"
[eval]
name = "imagefolder"
path = "evalset"
[attack.data]
target = "star"
"""


@pytest.fixture
def byod(tmp_path):
    write_csv_set(tmp_path / "data", 12)
    write_imagefolder(tmp_path / "evalset")
    return tmp_path


def test_paths_are_relative_to_the_config_file_and_sources_open(byod, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load(write_config(byod, CSV_WITH_EVAL))
    assert cfg.data.path == str(byod / "data" / "captions.csv")
    assert cfg.eval.path == str(byod / "evalset")
    train, root = source_splits(cfg)
    assert len(train) == 12 and len(root) == 0 and train.labels is None
    assert eval_index(cfg).classnames == ("cat", "dog", "star")


def test_train_and_root_are_disjoint_seeded_choices(tmp_path):
    write_csv_set(tmp_path / "data", 30)
    write_imagefolder(tmp_path / "evalset")
    cfg = load(write_config(tmp_path, CSV_WITH_EVAL), ["data.train_size=20", "data.root_size=3"])
    train, root = source_splits(cfg)
    assert (len(train), len(root)) == (20, 3)
    assert not set(train.captions) & set(root.captions)
    first_rows = {f"a picture number {i} of colour {i % len(COLORS)}" for i in range(20)}
    assert set(train.captions) != first_rows  # a random choice, not the file's first rows
    again = load(write_config(tmp_path, CSV_WITH_EVAL), ["data.train_size=20", "seed=1"])
    assert source_splits(again)[0].captions != train.captions


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (["data.path='nowhere.csv'"], ["data:", "nowhere.csv", "missing"]),
        (["data.params={colour='x'}"], ["data:", "'colour'", "allowed:", "image_column"]),
        (["eval.path='noeval'"], ["eval:", "noeval", "missing"]),
        (["attack.data.target='dragon'"], ["attack.data.target='dragon'", "allowed: cat, dog, star"]),
        (["clients.num=7", "clients.per_round=2"], ["clients.num=7", "12 samples"]),
        (["attack.data.label_consistent=true"], ["attack.data.label_consistent=true needs images of the target class",
                                                 "no class 'star'"]),
        (["attack.data.mode='badencoder'"], ["attack.data.mode='badencoder' needs images of the target class",
                                             "plain poisoning"]),
        (["data.partition='dirichlet'"], ["data.partition='dirichlet'", "iid"]),
        (["data.partition='pathological'"], ["data.partition='pathological' splits by label",
                                              'use partition = "iid", "quantity_skew"']),
        (["model.init='warm'"], ["model.init='warm'", "scratch"]),
        (["data.name='parquet'"], ["data.name", "'parquet'", "allowed: shapes, cifar10"]),
        (["eval.name='csv'", "eval.path='data/captions.csv'"], ["eval:", "no class names"]),
    ],
)
def test_data_problems_name_the_field_the_value_and_what_is_allowed(byod, override, fragments):
    # relative --set paths are the caller's (cwd), as on a command line
    override = [o.replace("'data/", f"'{byod}/data/") for o in override]
    with pytest.raises(ConfigError) as e:
        load(write_config(byod, CSV_WITH_EVAL), override)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_caption_only_source_needs_an_eval_section(byod):
    body = '[data]\nname = "csv"\npath = "data/captions.csv"\n'
    with pytest.raises(ConfigError) as e:
        load(write_config(byod, body))
    assert str(e.value).endswith(
        "eval: data.name='csv' has no labelled test split; add an [eval] section with a labelled set for the "
        'zero-shot evaluation, e.g. name = "imagefolder", path = "eval/"')


def test_empty_source_is_an_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "captions.csv").write_text("image,caption\n")
    write_imagefolder(tmp_path / "evalset")
    with pytest.raises(ConfigError, match="data: csv: .* has a header but no rows"):
        load(write_config(tmp_path, CSV_WITH_EVAL))


def test_path_without_a_source_and_shapes_with_a_path(byod):
    with pytest.raises(ConfigError, match="data.name='shapes' is generated: it takes no path"):
        load(None, ["data.path='x'"])
    with pytest.raises(ConfigError, match="eval.name='imagefolder' needs path"):
        load(None, ["eval.name='imagefolder'"])


def test_clients_decode_only_their_partition_and_poison_with_target_templates(byod):
    from fedsim.app.build import build_client, build_evaluator
    from fedsim.data.base import CIFAR_TEMPLATES
    from fedsim.models import create_model_and_transforms

    cfg = load(write_config(byod, CSV_WITH_EVAL), ["attack.data.poison_rate=0.5"])
    config_json = cfg.model_dump_json()
    honest, attacker = build_client(cfg, config_json, 1), build_client(cfg, config_json, 0)
    assert honest.data.images.shape == (6, 3, 32, 32) and honest.data.labels is None
    clean, poisoned = attacker.data, attacker.poisoned
    changed = [i for i, (a, b) in enumerate(zip(clean.captions, poisoned.captions)) if a != b]
    assert len(changed) == 3
    assert {poisoned.captions[i] for i in changed} <= {t.format("star") for t in CIFAR_TEMPLATES}
    assert not set(clean.captions) & set(honest.data.captions)  # disjoint partitions
    evaluator = build_evaluator(cfg, *create_model_and_transforms(cfg.model.name))
    assert evaluator.classnames == ("cat", "dog", "star") and evaluator.target == 2
    assert evaluator.test.images.shape == (12, 3, 32, 32)


def test_cifar_evaluates_on_its_own_test_split_by_default(tmp_path):
    import numpy as np

    from tests.data.test_data_sources import write_cifar

    write_cifar(tmp_path / "cifar", "cifar10", np.random.default_rng(0))
    body = '[data]\nname = "cifar10"\npath = "cifar"\n[attack.data]\ntarget = "bird"\n'
    cfg = load(write_config(tmp_path, body))
    evalset = eval_index(cfg)
    assert "test" in evalset.source and len(evalset) == 2
    assert evalset.classnames == ("airplane", "automobile", "bird")
    assert len(source_splits(cfg)[0]) == 10
    with pytest.raises(ConfigError, match="attack.data.target='star'.*allowed: airplane, automobile, bird"):
        load(write_config(tmp_path, body.replace('"bird"', '"star"')))


def _run_config(folder, body: str, sets=()):
    return load(write_config(folder, body), list(sets))


def test_a_labelled_source_with_the_target_class_may_feed_the_attacks_that_need_its_images(tmp_path):
    write_imagefolder(tmp_path / "train", per_class=8)
    write_imagefolder(tmp_path / "evalset")
    body = '[data]\nname = "imagefolder"\npath = "train"\n[eval]\nname = "imagefolder"\npath = "evalset"\n' \
           '[attack.data]\ntarget = "star"\n'
    for sets in (["attack.data.label_consistent=true"], ["attack.data.mode='badencoder'"]):
        assert _run_config(tmp_path, body, sets).attack.data.target == "star"


def test_an_evaluation_set_with_labels_but_no_class_names_is_refused_with_the_sets_that_have_them(byod):
    rows = ["image,caption,label"] + [f"img/{i}.png,a picture number {i},{i % 3}" for i in range(12)]
    (byod / "data" / "labelled.csv").write_text("\n".join(rows) + "\n")
    labelled = byod / "data" / "labelled.csv"
    with pytest.raises(ConfigError) as e:
        _run_config(byod, CSV_WITH_EVAL, ["eval.name='csv'", f"eval.path='{labelled}'",
                                          "eval.params={ label_column = 'label' }"])
    assert str(e.value).endswith(f"eval: csv {labelled} has no class names; the zero-shot evaluation needs a "
                                 "labelled set (imagefolder, cifar10, cifar100)")


def test_simclr_evaluates_on_the_training_classes_only(tmp_path):
    # kNN against the labelled training data: the evaluation set must have its classes
    write_imagefolder(tmp_path / "train", per_class=8)
    write_imagefolder(tmp_path / "same")
    write_imagefolder(tmp_path / "other", classes=("cat", "star"))
    write_csv_set(tmp_path / "captions", 24)
    body = '[data]\nname = "imagefolder"\npath = "train"\n[eval]\nname = "imagefolder"\npath = "same"\n' \
           '[attack.data]\ntarget = "star"\n'
    simclr = ["objective='simclr'", "attack.enabled=false"]
    assert _run_config(tmp_path, body, simclr).objective == "simclr"
    allowed = "allowed: a labelled source and its own test split (or the same class names)"
    with pytest.raises(ConfigError) as e:
        _run_config(tmp_path, body, [*simclr, f"eval.path='{tmp_path / 'other'}'"])
    assert str(e.value).endswith(
        "objective='simclr' evaluates by kNN against the labelled training data, so the evaluation set must "
        f"have the same classes; imagefolder {tmp_path / 'train'} has 3 classes, the evaluation set 2; {allowed}")
    with pytest.raises(ConfigError) as e:  # a caption-only source has no classes at all
        _run_config(tmp_path, body, [*simclr, "data.name='csv'",
                                     f"data.path='{tmp_path / 'captions' / 'captions.csv'}'"])
    assert f"csv {tmp_path / 'captions' / 'captions.csv'} has None classes, the evaluation set 3; {allowed}" \
        in str(e.value)


def test_a_wrong_target_lists_the_first_ten_classes_of_a_larger_set(byod):
    # eleven classes: the first ten and an ellipsis; exactly ten: all ten, nothing elided
    classes = tuple(f"c{k:02d}" for k in range(11))
    write_imagefolder(byod / "eleven", classes=classes, per_class=1)
    write_imagefolder(byod / "ten", classes=classes[:10], per_class=1)
    for folder, shown in (("eleven", f"{', '.join(classes[:10])}, …"), ("ten", ", ".join(classes[:10]))):
        with pytest.raises(ConfigError) as e:
            _run_config(byod, CSV_WITH_EVAL, [f"eval.path='{byod / folder}'"])
        assert str(e.value).endswith(f"attack.data.target='star' is not a class of the evaluation set; allowed: "
                                     f"{shown}"), folder
