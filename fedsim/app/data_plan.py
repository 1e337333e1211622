"""The run's data as a config names it: the views of the training and evaluation sources
(``source_splits``, ``eval_index``, cached per process), their class names and templates, the
clients' partition (``client_parts``), the images' side — and the checks that need the data
opened or the model file read, which look across families (the attack's target among the
evaluation classes, SimCLR's labelled data, a partition drawn from the real labels):
``check_data`` and ``check_model``, run before anything starts (``fedsim.app.config_checks``).
``fedsim.config`` types and reads the sections; it opens no data and reads no model file.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np

from clients.attacks import LEARNED_TRIGGERS, templated_captions
from fedsim.config import MIN_CLIENT_SAMPLES, Config, ConfigError, DataConfig, invalid
from fedsim.data import (
    GENERATED,
    PARTITIONS,
    SHAPES,
    TEST_SPLITS,
    ZERO_SHOT_TEMPLATES,
    DataError,
    check_images,
    check_source,
    load_split,
    open_dataset,
    sample,
)
from fedsim.data.shapes import IMAGE_SIZE as SHAPES_IMAGE_SIZE
from fedsim.data.shapes import target_captions
from fedsim.models import (
    CheckpointError,
    check_checkpoint,
    check_name,
    checkpoint_file,
    model_image_size,
)
from fedsim.objectives import OBJECTIVES


def eval_source(cfg: Config) -> tuple[str, str, dict] | None:
    """(name, path, params) of the evaluation set: ``[eval]``, else the training source's own
    labelled test split (None: shapes' generated one). Raises ConfigError for a source that has
    no test split (every one but CIFAR) and no ``[eval]``."""
    d, e = cfg.data, cfg.eval
    if e.name is not None:
        return e.name, e.path, e.params
    if generated(cfg):
        return None
    if d.name in TEST_SPLITS:
        return d.name, d.path, {**d.params, **TEST_SPLITS[d.name]}
    raise ConfigError(invalid([
        f"eval: data.name={d.name!r} has no labelled test split; add an [eval] section with a "
        "labelled set for the zero-shot evaluation, e.g. name = \"imagefolder\", path = \"eval/\""
    ]))


def source_splits(cfg: Config):
    """The (train, root) views of the training source (``data.name`` ≠ "shapes"): disjoint
    seeded random choices of at most ``data.train_size`` and ``data.root_size`` samples.
    Cached per process (views are immutable; a client re-opens the index once, not per round)."""
    return _source_splits(cfg.data.model_dump_json(), cfg.seed)


@lru_cache(maxsize=4)
def _source_splits(data_json: str, seed: int):
    d = DataConfig.model_validate_json(data_json)
    index = open_dataset(d.name, d.path, **d.params)
    train, root = sample(len(index), (d.train_size, d.root_size), seed)
    return index.subset(train), index.subset(root)


def eval_index(cfg: Config):
    """The evaluation view (at most ``data.test_size`` samples, a seeded random choice) of
    ``eval_source``; None for shapes' generated test split. Cached per process."""
    source = eval_source(cfg)
    if source is None:
        return None
    name, path, params = source
    return _eval_index(name, path, json.dumps(params, sort_keys=True), cfg.data.test_size, cfg.seed)


@lru_cache(maxsize=4)
def _eval_index(name: str, path: str, params_json: str, size: int, seed: int):
    index = open_dataset(name, path, **json.loads(params_json))
    (rows,) = sample(len(index), (size,), seed + 1)
    return index.subset(rows)


def generated(cfg: Config) -> bool:
    """The training data is generated (shapes), not read from a source."""
    return cfg.data.name in GENERATED


def train_view(cfg: Config):
    """The whole training split: shapes' generated one (rendered on demand: ``.subset`` renders
    only its samples), or the source's training choice (an index; ``.materialize(size)``
    decodes it, ``.subset`` first decodes less)."""
    if generated(cfg):
        return load_split(cfg.data.name, "train", cfg.data.train_size, cfg.seed, lazy=True)
    return source_splits(cfg)[0]


def train_count(cfg: Config) -> int:
    """How many samples the clients hold in all (without generating them)."""
    return cfg.data.train_size if generated(cfg) else len(source_splits(cfg)[0])


def root_view(cfg: Config, image_size: int, user: str):
    """The clean server split (FLTrust's root data, CleanCLIP's clean pairs, EmInspector's
    inspection images; ``user`` names which in the error): shapes' "root" split, or a source's
    ``data.root_size`` samples outside the training choice, decoded at ``image_size``."""
    if generated(cfg):
        return load_split(cfg.data.name, "root", max(2, cfg.data.root_size), cfg.seed)
    root = source_splits(cfg)[1]
    if len(root) < 2:
        raise ValueError(
            f"{user}: {root.source} has {len(root)} samples left outside the training choice "
            f"(need 2+); lower data.train_size or raise data.root_size"
        )
    return root.materialize(image_size)


def test_view(cfg: Config, image_size: int, index=None):
    """The evaluation images (``eval_index``, or shapes' generated test split), decoded at
    ``image_size``; ``index``: the evaluation index when already open."""
    index = eval_index(cfg) if index is None else index
    if index is None:
        return load_split(cfg.data.name, "test", cfg.data.test_size, cfg.seed)
    return index.materialize(image_size)


def surrogate_pool(cfg: Config):
    """Public images an attacker may use where it holds none of the target class (BadEncoder's
    references): shapes' generated "pretrain" stream (200 samples); None for a source (its
    users hold only their own data)."""
    return load_split(cfg.data.name, "pretrain", 200, cfg.seed) if generated(cfg) else None


def poison_captions(cfg: Config, data, templates, seed: int):
    """The target captions of poisoned samples (by index) in the data's own caption style:
    shapes' "a photo of a {color} {target}" with each image's own color
    (``shapes.target_captions``); elsewhere the evaluation set's templates filled with the
    target class name, one drawn per sample from ``seed``."""
    if generated(cfg):
        target = SHAPES.index(cfg.attack.data.target)
        return lambda chosen: target_captions(data.colors[chosen], target)
    return lambda chosen: templated_captions(templates, cfg.attack.data.target, len(chosen), seed)


def image_origin(cfg: Config) -> str:
    """Why the clients' images have the side they have (for error messages)."""
    return ("shapes are generated at that size" if generated(cfg)
            else f"model.name={cfg.model.name!r} takes that size")


def train_classnames(cfg: Config) -> tuple[str, ...] | None:
    """The class names the training labels index (None: the source has no classes)."""
    return SHAPES if generated(cfg) else source_splits(cfg)[0].classnames


def eval_classes(cfg: Config, index=None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(class names, zero-shot templates) of the evaluation set (``index``, when already open)."""
    index = eval_index(cfg) if index is None else index
    return (SHAPES, ZERO_SHOT_TEMPLATES) if index is None else (index.classnames, index.templates)


def _opened(field: str, open_it):
    try:
        return open_it()
    except (DataError, ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(invalid([f"{field}: {e}"])) from None


def client_parts(cfg: Config, num_samples: int, labels) -> list[np.ndarray]:
    """The clients' sample indices of a training split of ``num_samples`` samples with int
    ``labels`` (read only by a label-based partition): ``data.partition``'s partitioner with
    its ``data`` parameters, ``seed`` and ``MIN_CLIENT_SAMPLES`` — the one split that the
    config check and every client draw."""
    p = PARTITIONS[cfg.data.partition]
    first = np.asarray(labels) if p.by_label else num_samples
    params = [getattr(cfg.data, name) for name in p.params]
    return p.split(first, cfg.clients.num, *params, seed=cfg.seed, min_size=MIN_CLIENT_SAMPLES)


def image_size(cfg: Config) -> int:
    """The side of the images the clients hold and the triggers see: shapes are generated at
    32 px; a source's images are decoded at the model's image size. The model's own
    preprocessing resizes either to its input size."""
    return SHAPES_IMAGE_SIZE if generated(cfg) else model_image_size(cfg.model.name)


def check_names(cfg: Config) -> None:
    """The names a config gives its data and model exist in their families: the training
    source (generated or a ``DATASETS`` source with a path), the ``[eval]`` and ``[model.warm]``
    sources, the partition and the model. Every problem at once; the other checks run only
    when these pass (``fedsim.app.config_checks``)."""
    d, e, w = cfg.data, cfg.eval, cfg.model.warm
    sources = [("data", d.name, d.path, d.params, True)]
    sources += [("eval", e.name, e.path, e.params, False)] if e.name is not None else []
    sources += [("model.warm", w.name, w.path, w.params, False)] if w.name is not None else []
    problems = []
    for field, name, path, params, may_generate in sources:
        try:
            check_source(name, path, params, generated=may_generate)
        except ValueError as err:
            problems.append(f"{field}.{err}")  # "data.name='x' is unknown; allowed: ..."
    if d.partition not in PARTITIONS:
        problems.append(f"data.partition={d.partition!r} is unknown; allowed: {', '.join(PARTITIONS)}")
    try:
        check_name(cfg.model.name)
    except ValueError as err:
        problems.append(str(err))
    if problems:
        raise ConfigError(invalid(problems))


# It reads each name alone: ``validate_config`` runs it on the fields that are valid even when
# others are not, so that one pass reports an unknown name with a wrong value elsewhere.
check_names.per_field = True


def check_data(cfg: Config) -> None:
    """Open the training and evaluation sources (their own parsers check path and params),
    then check what the run needs of them: two samples per client, labels for a label-based
    partition and for label-consistent poisoning, class names for the evaluation, the attack
    target among them. Whether a partition gives every client ``MIN_CLIENT_SAMPLES`` samples
    (and, for "pathological", exactly k classes) can depend on its draws, so draw it here from
    the same labels, seed and minimum as the clients (``client_parts``). Last, as the slowest
    check, every image the run will read (training, root and evaluation views) is decoded
    (``check_images``, cached across runs), so that a truncated file fails here and not in a
    client that would then fail every round."""
    d, a = cfg.data, cfg.attack
    w = cfg.model.warm
    if cfg.model.init == "warm" and w.name is not None:
        warm = _opened("model.warm", lambda: open_dataset(w.name, w.path, **w.params))
        if len(warm) < 2:
            raise ConfigError(invalid([f"model.warm: {warm.source} has {len(warm)} samples; the warm start needs ≥ 2"]))
    by_label = PARTITIONS[d.partition].by_label
    if generated(cfg):
        num_samples = d.train_size
        labels = load_split(d.name, "train", d.train_size, cfg.seed, lazy=True).labels if by_label else None
        size = f"data.train_size={d.train_size}"
    else:
        if cfg.model.init == "warm" and cfg.model.warm.name is None:
            raise ConfigError(invalid([
                f"model.init='warm' pretrains on generated shapes unless [model.warm] names a source, "
                f"not data.name={d.name!r}; set model.warm.name and path to your public split (a source "
                "of fedsim list datasets), or model.init = \"scratch\""
            ]))
        train, root = _opened("data", lambda: source_splits(cfg))
        if cfg.clients.num > len(train) // MIN_CLIENT_SAMPLES:
            raise ConfigError(invalid([
                f"clients.num={cfg.clients.num} leaves fewer than {MIN_CLIENT_SAMPLES} samples per client "
                f"({train.source} gives {len(train)} samples)"
            ]))
        num_samples, labels, size = len(train), train.labels, f"{len(train)} samples of {train.source}"
        if labels is None and by_label:
            unlabelled = ", ".join(f'"{k}"' for k, p in PARTITIONS.items() if not p.by_label)
            raise ConfigError(invalid([
                f"data.partition={d.partition!r} splits by label; {train.source} has none; "
                f"use partition = {unlabelled}"
            ]))
        # what needs images of the target class among the training data
        needs = [f for f, on in (
            ("attack.data.label_consistent=true", a.data.mode == "poison" and a.data.label_consistent),
            ("attack.data.mode='badencoder'", a.data.mode == "badencoder"),
            (f"attack.data.trigger.name={a.data.trigger.name!r}",
             a.data.trigger.name in LEARNED_TRIGGERS and LEARNED_TRIGGERS[a.data.trigger.name].needs_target_images),
            (f"objective={cfg.objective!r} (it poisons target-class images)",
             OBJECTIVES[cfg.objective].poisons_target_class),
        ) if on and a.enabled and a.data.enabled]
        if needs and (train.classnames is None or a.data.target not in train.classnames):
            raise ConfigError(invalid([
                f"{needs[0]} needs images of the target class; {train.source} has no class "
                f"{a.data.target!r} (caption-only sources have no classes); use plain poisoning"
            ]))
    index = _opened("eval", lambda: eval_index(cfg))
    if index is not None and (index.labels is None or index.classnames is None):
        raise ConfigError(invalid([
            f"eval: {index.source} has no class names; the zero-shot evaluation needs a labelled set "
            "(imagefolder, cifar10, cifar100)"
        ]))
    classnames = SHAPES if index is None else index.classnames
    if OBJECTIVES[cfg.objective].same_classes_for_eval and not generated(cfg) and train.classnames != classnames:
        raise ConfigError(invalid([
            f"objective={cfg.objective!r} evaluates by kNN against the labelled training data, so the evaluation "
            f"set must have the same classes; {train.source} has "
            f"{None if train.classnames is None else len(train.classnames)} classes, the evaluation set "
            f"{len(classnames)}; allowed: a labelled source and its own test split (or the same class names)"
        ]))
    if a.data.target not in classnames:
        shown = ", ".join(classnames[:10]) + (", …" if len(classnames) > 10 else "")
        raise ConfigError(invalid([
            f"attack.data.target={a.data.target!r} is not a class of the evaluation set; allowed: {shown}"
        ]))
    try:
        client_parts(cfg, num_samples, labels)
    except ValueError as e:
        params = "".join(f" data.{k}={getattr(d, k)}" for k in PARTITIONS[d.partition].params)
        raise ConfigError(invalid([
            f"data.partition={d.partition!r}{params} cannot split {size} over clients.num={cfg.clients.num} "
            f"clients with {MIN_CLIENT_SAMPLES}+ samples each (seed={cfg.seed}): {e}"
        ])) from None
    if not generated(cfg):
        _opened("data", lambda: check_images(train, root))
    if index is not None:
        _opened("eval", lambda: check_images(index))


def check_model(cfg: Config) -> None:
    """``model.pretrained`` fits ``model.name``: the same keys and shapes (read without
    loading the tensors, and with ``weights_only=True``, so a file that pickles anything but
    tensors and plain containers is refused here)."""
    path = cfg.model.pretrained
    if path is None:
        return
    if not os.path.isfile(path):
        try:
            checkpoint_file(path)
        except CheckpointError as e:
            raise ConfigError(invalid([
                f"model.pretrained={path!r}: {e}; allowed: a checkpoint file "
                "(torch.save(model.state_dict(), path) or .safetensors) or such a folder"
            ])) from None
    try:
        check_checkpoint(cfg.model.name, path)
    except CheckpointError as e:
        raise ConfigError(invalid([f"model.pretrained: {e}"])) from None
