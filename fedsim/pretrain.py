"""The warm-start checkpoint: a tiny CLIP trained centrally on a clean generated split.

Federated fine-tuning of a pretrained CLIP is the usual real-world setting, and from scratch
plain FedAvg learns the class too slowly to show anything in minutes on 2 cores
(../shared/notes/clip.md). So, when ``model.init = "warm"``, the server starts from a model
this module trains: ``model.pretrain_epochs`` epochs of symmetric InfoNCE with AdamW and a
warm-up + cosine schedule on ``model.pretrain_size`` samples of the ``pretrain`` split (disjoint
stream from the clients' data, never poisoned). The result is a deterministic function of
those settings and the seed, cached on disk so later runs reuse it.

    fedsim pretrain CONFIG      # build (or show) the checkpoint a config uses
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import torch

from fedsim.config import Config
from fedsim.data import load_split
from fedsim.models import create_model_and_transforms, tokenize
from fedsim.records import float_state
from fedsim.report import write_atomic
from fedsim.training import train_epochs, warmup_cosine

PRETRAIN_BATCH_SIZE = 64
PRETRAIN_WEIGHT_DECAY = 0.1
# Bump when the recipe changes so stale checkpoints are not reused.
RECIPE_VERSION = 1


def cache_dir() -> Path:
    return Path(os.environ.get("FEDSIM_CACHE", Path.home() / ".cache" / "fedsim"))


def _fingerprint(path: str) -> list:
    """What identifies a source's files for the cache: the path, and the size and mtime of it
    (a file) or of every file under it (a folder)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    return [str(p), [[str(f.relative_to(p)) if f != p else "", f.stat().st_size, f.stat().st_mtime_ns]
                     for f in files]]


def _key(cfg: Config) -> dict:
    m = cfg.model
    key = {
        "recipe": RECIPE_VERSION,
        "model": m.name,
        "data": "shapes",  # what the default warm start trains on ([model.warm] sources: "warm" below)
        "size": m.pretrain_size,
        "epochs": m.pretrain_epochs,
        "lr": m.pretrain_lr,
        "seed": cfg.seed,
    }
    if m.warm.name is not None:
        # the user's source: a change to its files (size, mtime) trains a new checkpoint
        key["warm"] = {"name": m.warm.name, "params": m.warm.params, "files": _fingerprint(m.warm.path)}
    return key


def warm_data(cfg: Config):
    """What the warm start trains on: ``model.pretrain_size`` samples of the generated
    "pretrain" stream, or of ``[model.warm]``'s source (a seeded random choice of at most that
    many, decoded at the model's image size)."""
    from fedsim.data import open_dataset, sample
    from fedsim.models import model_image_size

    w = cfg.model.warm
    if w.name is None:
        return load_split("shapes", "pretrain", cfg.model.pretrain_size, cfg.seed)
    index = open_dataset(w.name, w.path, **w.params)
    (rows,) = sample(len(index), (min(cfg.model.pretrain_size, len(index)),), cfg.seed + 2)
    return index.subset(rows).materialize(model_image_size(cfg.model.name))


def checkpoint_path(cfg: Config) -> Path:
    key = _key(cfg)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{cfg.model.name}-{digest}.pt"


def pretrain(cfg: Config, *, log=print) -> dict[str, torch.Tensor]:
    """Train the warm-start model for ``cfg`` and return its float state dict."""
    from fedsim.progress import step_progress

    model, preprocess, tokenizer = create_model_and_transforms(cfg.model.name, seed=cfg.seed)
    data = warm_data(cfg)
    tokens = tokenize(tokenizer, data.captions)
    schedule = warmup_cosine(0.1)
    t0 = time.perf_counter()
    n, b = len(data), PRETRAIN_BATCH_SIZE
    steps = cfg.model.pretrain_epochs * (n // b + (n % b >= 2))
    where = "generated shapes" if cfg.model.warm.name is None else f"{cfg.model.warm.name} {cfg.model.warm.path}"
    with step_progress(steps, f"warm start on {n} pairs of {where}", log) as tick:
        loss = train_epochs(
            model,
            data.images,
            tokens,
            preprocess=preprocess,
            epochs=cfg.model.pretrain_epochs,
            lr=cfg.model.pretrain_lr,
            batch_size=PRETRAIN_BATCH_SIZE,
            weight_decay=PRETRAIN_WEIGHT_DECAY,
            generator=torch.Generator().manual_seed(cfg.seed),
            lr_schedule=schedule,
            after_step=lambda _model: tick(),
        )
    log(
        f"pretrained {cfg.model.name} on {len(data)} clean samples of {where} for "
        f"{cfg.model.pretrain_epochs} epochs: loss {loss:.3f}, {time.perf_counter() - t0:.1f} s"
    )
    return float_state(model)


def warm_start(cfg: Config, *, log=print) -> dict[str, torch.Tensor]:
    """The cached checkpoint for ``cfg`` (trained and saved on first use)."""
    path = checkpoint_path(cfg)
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # a truncated file from an interrupted run: rebuild it
            log(f"ignoring unreadable checkpoint {path}: {e}")
    log(f"building the warm-start checkpoint {path} (once per model/seed)")
    state = pretrain(cfg, log=log)
    data = io.BytesIO()
    torch.save(state, data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic, and the temporary file is this process's: a concurrent run never reads half
        # a file, and a full disk or a Ctrl-C leaves no part behind
        write_atomic(path, data.getbuffer(), tmp_suffix=f".{os.getpid()}.tmp")
        write_atomic(path.with_suffix(".json"), json.dumps(_key(cfg), indent=2),
                     tmp_suffix=f".{os.getpid()}.tmp")
    except OSError as e:
        # The model is trained; a cache that cannot be written only means the next run trains
        # it again.
        log(f"not cached: {e}; the next run with these settings trains it again")
    return state
