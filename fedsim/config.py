"""Experiment configuration: a TOML file validated into typed objects before anything starts.

Every error names the field, the value given and what is allowed (``ConfigError``). This
module types the sections and reads TOML; it imports no family. Whatever a family knows —
which data sources, partitions, models, objectives, rules, triggers and attacks exist and what
each needs, the data opened, a model file read — is checked by the app layer through
``extra_checks`` (``fedsim.app.config_checks``), names first.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is the message shown to the user."""


# Every seed a run derives (e.g. ``seed * 1_000_003 + round`` for randomised rules and
# attacks) must fit torch's manual_seed range, [0, 2**64): seeds below 2**32 keep them below 2**53.
SEED_LIMIT = 2**32
# The fewest samples a client may hold (a contrastive batch needs two pairs).
MIN_CLIENT_SAMPLES = 2


class _Section(BaseModel):
    # strict: a string, a bool or a float is never silently taken for an int or a bool
    # (``rounds = "3"``, ``enabled = 1`` are errors); an int is accepted where a float is due.
    # allow_inf_nan=False: every float field is finite. TOML reads ``inf`` and ``nan``, but the
    # config reaches the clients as JSON, where both become ``null`` (every client then failed
    # to re-validate it, after the run had started).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class DataConfig(_Section):
    """The training data: generated "shapes", or a source of ``fedsim.data.DATASETS`` read
    from ``path`` (relative to the config file) with the source's own ``params``."""

    name: str = "shapes"
    path: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    train_size: int = Field(
        4000, ge=20, description="samples shared by all clients (a source: at most this many, "
        "a seeded random choice when it holds more)"
    )
    test_size: int = Field(1000, ge=20, description="evaluation samples (at most, for a source)")
    root_size: int = Field(
        100, ge=0, description="clean server-side split (FLTrust root data; a source: drawn from "
        "its samples outside the training choice)"
    )
    partition: str = Field("iid", description="a fedsim.data.PARTITIONS name")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (partition='dirichlet')")
    classes_per_client: int = Field(
        2, ge=1, description="classes each client holds (partition='pathological')"
    )
    beta: float = Field(
        0.5, gt=0, description="Dirichlet concentration of the client sizes (partition='quantity_skew')"
    )


class EvalConfig(_Section):
    """The labelled set of the zero-shot evaluation (clean accuracy, ASR, retrieval): a source
    of ``fedsim.data.DATASETS`` with class names. Unset (``name`` absent), it is the training
    source's own labelled test split: shapes' test split, CIFAR's ``split = "test"``; other
    sources have none and need this section."""

    name: str | None = None
    path: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self):
        if self.name is None and (self.path is not None or self.params):
            raise ValueError("path and params need name = the evaluation set's format")
        return self


class WarmConfig(_Section):
    """Where the warm start (``model.init = "warm"``, ``fedsim pretrain``) trains: by default
    fedsim's generated shapes (their own "pretrain" stream, never the clients' samples); with
    ``name`` a registered source of ``fedsim.data.DATASETS`` — the researcher's public split,
    e.g. a CSV of image–caption pairs kept apart from the federated ``[data]`` —, the warm
    start is a CLIP pretrained centrally on it (the realistic setting: pretrained on public
    data, fine-tuned federatedly on private data)."""

    name: str | None = Field(None, description="a fedsim.data.DATASETS source (None: generated shapes)")
    path: str | None = Field(None, description="the source's file or folder (relative to the config file)")
    params: dict[str, Any] = Field(default_factory=dict, description="the source's parameters, as data.params")

    @model_validator(mode="after")
    def _check(self):
        if self.name is None and (self.path is not None or self.params):
            raise ValueError("path and params need name = a source of fedsim.data.DATASETS")
        return self


class ModelConfig(_Section):
    """The CLIP: a tiny one of ``fedsim/model_configs`` or any open_clip architecture, started
    from random weights ("scratch"), from the checkpoint ``fedsim.pretrain`` trains ("warm"),
    or from ``pretrained``, a local checkpoint file (relative to the config file). Setting
    ``pretrained`` makes ``init`` "pretrained" unless ``init`` is given."""

    name: str = "fedsim-tiny-resnet"
    init: Literal["scratch", "warm", "pretrained"] = Field(
        "warm", description="'warm': start from the checkpoint fedsim.pretrain makes; "
        "'pretrained': from the file model.pretrained"
    )
    pretrained: str | None = Field(
        None, description="a state dict saved with torch.save (loaded with weights_only=True), a "
        ".safetensors file, or a folder holding open_clip's open_clip_model.safetensors / "
        "open_clip_pytorch_model.bin (also a local Hugging Face cache folder of one model)"
    )
    pretrain_size: int = Field(4000, ge=100, description="warm start: samples it trains on (at most, for a source)")
    pretrain_epochs: int = Field(6, ge=1, description="warm start: epochs of symmetric InfoNCE")
    pretrain_lr: float = Field(2e-3, gt=0, description="warm start: AdamW's peak learning rate (warm-up + cosine)")
    warm: WarmConfig = Field(default_factory=WarmConfig)

    @model_validator(mode="before")
    @classmethod
    def _init_from_file(cls, raw):
        if isinstance(raw, dict) and raw.get("pretrained") is not None and "init" not in raw:
            return {**raw, "init": "pretrained"}
        return raw

    @model_validator(mode="after")
    def _check(self):
        if self.init == "pretrained" and self.pretrained is None:
            raise ValueError("init='pretrained' needs pretrained = a checkpoint file")
        if self.pretrained is None:
            return self
        if self.init != "pretrained":
            raise ValueError(
                f"pretrained={self.pretrained!r} and init={self.init!r} contradict each other: the "
                "model starts from the file; remove init or set it to 'pretrained'"
            )
        if not os.path.exists(self.pretrained):
            raise ValueError(f"pretrained={self.pretrained!r}: no such file")
        return self  # what the file or folder holds: fedsim.app.data_plan.check_model


class ClientsConfig(_Section):
    num: int = Field(10, ge=1, le=10000, description="simulated clients (SuperNodes)")
    per_round: int = Field(10, ge=1, description="clients sampled per round")
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(3e-4, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="server-driven per-round factor on lr"
    )
    weight_decay: float = Field(0.1, ge=0)
    training: str = Field(
        "standard", description="the clients' local training, a fedsim.objectives.TRAINING name: "
        "'standard', 'roclip' (Yang et al., NeurIPS 2023) or 'adversarial' (L∞ PGD, Gao et al. "
        "2022); who runs it: training_scope"
    )
    training_params: dict[str, Any] = Field(
        default_factory=dict, description="keyword parameters of a training mode that has no "
        "clients.<mode>_* fields (one registered in fedsim.objectives.TRAINING from outside)"
    )
    training_scope: Literal["honest", "all"] = Field(
        "honest", description="who trains with `training`: 'honest' — the honest clients only, "
        "malicious ones train CLIP's InfoNCE on their (poisoned) pairs (a defense the attacker "
        "opts out of); 'all' — a platform-enforced trainer: the malicious clients' local "
        "training too, on their poisoned data (the RoCLIP paper's threat model: the learner "
        "that sees the poison runs the defense)"
    )
    roclip_every: int = Field(2, ge=1, description="RoCLIP: match images to pool captions every k-th local epoch")
    roclip_pool: int = Field(256, ge=2, description="RoCLIP: caption embeddings in the pool")
    adversarial_eps: float = Field(4 / 255, gt=0, le=1, description="PGD's L∞ radius on [0, 1] pixels")
    adversarial_alpha: float = Field(1 / 255, gt=0, le=1, description="PGD's step size")
    adversarial_steps: int = Field(3, ge=1, description="PGD steps per batch")

    @model_validator(mode="after")
    def _mode_params(self):
        # a parameter of another mode set away from its default is a mistake (the resolved
        # config.toml holds every default, so being set is not)
        for field, info in type(self).model_fields.items():
            mode = field.split("_")[0]
            if mode in ("roclip", "adversarial") and self.training != mode and getattr(self, field) != info.default:
                raise ValueError(
                    f"{field}={getattr(self, field)!r} applies to training = {mode!r} only, but "
                    f"training = {self.training!r}; set training = {mode!r} or remove {field}"
                )
        return self


class CleanCLIPConfig(_Section):
    """CleanCLIP (Bansal et al., ICCV 2023) as a server-side step after aggregation: fine-tune
    the new global model on the clean server split (``data.root_size`` samples, at least
    ``min_pairs``) every ``every`` rounds and/or after the last round. Its released setting:
    λ1 = λ2 = 1, 10 epochs, lr 1e-5 (50 warm-up steps, then cosine) on a pretrained CLIP
    and 100K clean pairs."""

    enabled: bool = False
    every: int = Field(0, ge=0, description="after every k-th round (0: not periodically)")
    at_end: bool = Field(True, description="after the last round")
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(32, ge=2)
    weight_decay: float = Field(0.1, ge=0)
    lambda1: float = Field(1.0, ge=0, description="weight of the multimodal CLIP loss")
    lambda2: float = Field(1.0, ge=0, description="weight of the unimodal self-supervised losses "
                           "(0: plain CLIP fine-tuning, no augmented views)")
    batchnorm: Literal["eval", "train", "recompute"] = Field(
        "eval", description="the image tower's BatchNorm layers during the step: eval mode, running "
        "statistics frozen; 'train': the reference's train mode (the views rewrite the statistics "
        "the evaluation uses); 'recompute': train mode, then statistics re-estimated on the clean pairs"
    )
    min_pairs: int = Field(
        1000, ge=2, description="fewest clean pairs (data.root_size) the step may run on; issue #22's "
        "audit measured 200 raising ASR and 1,000 lowering it (not reproduced on a central plant, "
        "see docs/defenses.md). Lower it only on purpose (tests, labs)"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.enabled and self.every == 0 and not self.at_end:
            raise ValueError("enabled = true with every = 0 and at_end = false never runs; "
                             "set every ≥ 1 or at_end = true")
        if self.lambda1 == 0 and self.lambda2 == 0:
            raise ValueError("lambda1 = lambda2 = 0 leaves no loss; allowed: at least one > 0")
        return self


class SimCLRConfig(_Section):
    """SimCLR mode (``objective = "simclr"``, Chen et al., ICML 2020): NT-Xent on two augmented
    views of each image, through the model's image tower and a 2-layer projection head; the
    evaluation is a weighted kNN on the frozen tower's features (Wu et al., CVPR 2018) and a
    linear probe, both against the labelled training split."""

    temperature: float = Field(0.5, gt=0, description="NT-Xent's τ (0.5: the paper's CIFAR-10 setting)")
    projection_dim: int = Field(128, ge=1, description="output size of the projection head (128 in the paper)")
    knn_k: int = Field(200, ge=1, description="neighbours of the weighted kNN evaluation")
    knn_temperature: float = Field(0.1, gt=0, description="τ of the kNN vote weights exp(s/τ)")
    batchnorm: Literal["clean", "augmented"] = Field(
        "clean", description="BatchNorm's running statistics in local training: 'clean' (the step "
        "of the batch's clean images; the views use their batch statistics but update nothing) or "
        "'augmented' (the reference's: the views' statistics, which the evaluation then uses)")


class DefenseConfig(_Section):
    """Defenses that are not an aggregation rule (those are ``[strategy]``): server-side steps
    after aggregation."""

    cleanclip: CleanCLIPConfig = Field(default_factory=CleanCLIPConfig)


class TriggerConfig(_Section):
    """An image trigger of ``clients.attacks.TRIGGERS`` (badnet, blended, sig, wanet, ctrl), or
    "badclip": a patch optimised once before the run against the warm-start model (BadCLIP,
    Liang et al., CVPR 2024); the learned pixels are written into the resolved config."""

    name: str = "badnet"
    params: dict[str, Any] = Field(default_factory=dict)


class ScheduleConfig(_Section):
    """When the malicious clients attack (rounds from ``attack.start_round``)."""

    kind: Literal["every", "from", "every_k", "single_shot", "window"] = "from"
    every: int = Field(1, ge=1, description="period for kind='every_k'")
    stop: int | None = Field(None, ge=1, description="last attacking round (kind='window')")


class UpdateAttackConfig(_Section):
    """What a malicious client does to the update it sends (after poisoned local training)."""

    name: str = Field("none", description="'none' or a clients.attacks.UPDATE_ATTACKS name "
                      "(model_replacement, norm_bound, neurotoxin; checked against the registry)")
    params: dict[str, Any] = Field(default_factory=dict)
    pgd_eps: float | None = Field(
        None, gt=0,
        description="PGD: project onto ‖w − w_global‖ ≤ eps after every local step (BadEncoder's "
        "too); with model_replacement onto eps/γ, so that the sent γ·Δ has norm ≤ eps",
    )


class ByzantineConfig(_Section):
    """Omniscient untargeted attack: a server-side adversary hook rewrites the malicious rows
    from the honest updates of the round (``clients.attacks.BYZANTINE``)."""

    name: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)


class DataAttackConfig(_Section):
    """Image–caption poisoning inside the malicious clients (Carlini & Terzis, ICLR 2022); in
    SimCLR mode SSL-Backdoor (Saha et al., CVPR 2022): the trigger on ``poison_rate`` of the
    attacker's images of class ``target``, nothing else changed."""

    enabled: bool = Field(True, description="poison the local data (off: update attacks only)")
    mode: Literal["poison", "badencoder"] = Field(
        "poison",
        description="'poison': InfoNCE on poisoned pairs; 'badencoder': BadEncoder fine-tuning "
        "of the image tower after clean local training (Jia et al., S&P 2022)",
    )
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    dba_parts: int = Field(
        0, ge=0, description="DBA: split the patch into this many pieces, one per attacker (0 = off)"
    )
    poison_rate: float = Field(0.5, gt=0, le=1)
    target: str = "star"
    label_consistent: bool = False
    label_consistent_perturbation: Literal["pgd", "none"] = Field(
        "pgd",
        description="label-consistent: 'pgd' perturbs the target images adversarially first "
        "(Turner et al. 2019); 'none' is the trigger-only variant",
    )
    label_consistent_eps: float = Field(16 / 255, gt=0, le=1, description="L∞ radius of that PGD")
    label_consistent_steps: int = Field(10, ge=1, description="PGD steps (step size 2.5·eps/steps)")
    text_trigger: str = ""
    local_epochs: int = Field(2, ge=1, description="the attacker's own local epochs")
    lr: float = Field(1e-3, gt=0, description="the attacker's own learning rate")


class AttackConfig(_Section):
    enabled: bool = True
    malicious: list[int] = Field(default_factory=lambda: [0, 1])
    start_round: int = Field(1, ge=1)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    data: DataAttackConfig = Field(default_factory=DataAttackConfig)
    update: UpdateAttackConfig = Field(default_factory=UpdateAttackConfig)
    byzantine: ByzantineConfig = Field(default_factory=ByzantineConfig)
    lifespan_threshold: float = Field(
        0.5, ge=0, le=1,
        description="backdoor lifespan: rounds after the last attack round until ASR < this",
    )

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.malicious)) != len(self.malicious):
            raise ValueError(f"malicious={self.malicious} has duplicates")
        if self.schedule.kind == "every" and self.start_round != 1:
            # "every" attacks every round: a start round would be silently ignored
            raise ValueError(f"start_round={self.start_round} has no effect with schedule.kind='every' (every "
                             "round); allowed: start_round = 1, or schedule.kind = 'from' to attack from that round")
        return self


class StrategyConfig(_Section):
    name: str = "fedavg"
    params: dict[str, Any] = Field(default_factory=dict)
    server_lr: float = Field(1.0, gt=0, description="global ← global + server_lr · aggregate")


class ResourcesConfig(_Section):
    client_cpus: float = Field(1.0, gt=0, description="Ray CPUs per client")
    client_threads: int = Field(1, ge=1, description="torch threads per client")
    total_cpus: int | None = Field(None, ge=1, description="CPUs Ray may use (default: all)")
    ray_address: str | None = Field(
        None, min_length=1,
        description="a running Ray cluster to run the clients on, e.g. '127.0.0.1:6379' (what "
                    "`ray start --head` prints); unset: each run starts and ends its own Ray",
    )
    engine: Literal["auto", "inprocess", "ray"] = Field(
        "auto",
        description="who delivers the messages: 'inprocess' runs the ClientApp in the run's own "
                    "process, one client after another, with no start-up (fedsim.app.local_grid); "
                    "'ray' is Flower's simulation on Ray (clients in parallel, a Ray cluster); "
                    "'auto': 'ray' when ray_address is set or faults.straggler_rate > 0 "
                    "(a straggler needs a server that stops waiting) or when Ray could train 2+ "
                    "clients at once and the run's client work exceeds INPROCESS_MAX_WORK "
                    "sample-epochs (Config.engine), else 'inprocess'",
    )

    def engine_for(self, straggler_rate: float, address: str | None = None, *, work: int = 0,
                   parallel: int = 1) -> str:
        """The engine a run uses ('inprocess' or 'ray'); ``address``: a Ray cluster given outside
        the config (a sweep's); ``work``: the run's client sample-epochs, ``parallel``: clients
        Ray could train at once (``Config.engine`` computes both)."""
        needs_ray = (self.ray_address or address) is not None or straggler_rate > 0
        if self.engine == "auto":
            return "ray" if needs_ray or (parallel >= 2 and work > INPROCESS_MAX_WORK) else "inprocess"
        return self.engine


# Where the in-process engine (clients one after another, 1 thread each, no start-up) stops
# beating Ray (clients in parallel, ~10 s of start-up), in client sample-epochs of a run
# (rounds × per_round × samples per client × local epochs). Measured on 2 cores, Intel Xeon,
# 2026-12-06: 6,000 (bench/overhead.py default) in-process 18.7 s vs Ray 22.4 s; 9,000 (the
# tiny e2e run) 23 s vs 42 s; 40,000 (the quickstart) 137 s vs Ray's parallel clients faster.
INPROCESS_MAX_WORK = 15_000


class LoggingConfig(_Section):
    """Experiment tracking besides the run directory's own files."""

    tensorboard: bool = Field(
        False, description="write every round's numeric metrics as TensorBoard scalars to OUT/tensorboard "
        "(needs the tensorboard package: pip install 'fedsim[tracking]'); view with tensorboard --logdir runs"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.tensorboard:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise ValueError("tensorboard=true needs the tensorboard package; install it with "
                                 "pip install 'fedsim[tracking]' (or pip install tensorboard)")
        return self


class FaultsConfig(_Section):
    """Injected failures, each drawn per (seed, round, partition), so a run's faults repeat
    with its seed. A sampled client crashes (raises instead of training: the server gets an
    error reply), straggles (replies only after ``round_timeout_s``, when the server has moved
    on) or its reply is lost on the way back (the server never sees it). The server
    aggregates what arrived and records the rest per round; a round left with too few
    replies for the rule is skipped and recorded."""

    crash_rate: float = Field(0.0, ge=0, le=1, description="probability a sampled client crashes")
    straggler_rate: float = Field(0.0, ge=0, le=1, description="probability a client replies after the timeout")
    drop_rate: float = Field(0.0, ge=0, le=1, description="probability a reply is lost")
    round_timeout_s: float = Field(3600.0, gt=0, description="how long the server waits for a round's replies")

    @model_validator(mode="after")
    def _one_fault_each(self):
        total = self.crash_rate + self.straggler_rate + self.drop_rate
        if total > 1:
            raise ValueError(
                f"faults.crash_rate + straggler_rate + drop_rate = {total:g}; allowed: at most 1 "
                "(each sampled client meets at most one fault per round)"
            )
        return self


class Config(_Section):
    name: str = "experiment"
    seed: int = Field(0, description="0 ≤ seed < 2**32")
    rounds: int = Field(10, ge=1)
    objective: Literal["clip", "simclr"] = Field(
        "clip", description="'clip': image–caption InfoNCE, zero-shot evaluation; 'simclr': "
        "uni-modal NT-Xent on the image tower, kNN / linear-probe evaluation ([simclr])"
    )
    simclr: SimCLRConfig = Field(default_factory=SimCLRConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, seed: int) -> int:
        if not 0 <= seed < SEED_LIMIT:
            raise ValueError(
                f"{seed} is out of range; allowed: 0 ≤ seed < 2**32 = {SEED_LIMIT}, so that every "
                "seed derived from it (seed · 1_000_003 + round) fits torch's manual_seed range"
            )
        return seed

    @model_validator(mode="after")
    def _check(self):
        if self.clients.per_round > self.clients.num:
            raise ValueError(
                f"clients.per_round={self.clients.per_round} exceeds clients.num={self.clients.num}"
            )
        if self.clients.num > self.data.train_size // MIN_CLIENT_SAMPLES:
            raise ValueError(
                f"clients.num={self.clients.num} leaves fewer than {MIN_CLIENT_SAMPLES} samples per client "
                f"(data.train_size={self.data.train_size})"
            )
        if self.resources.engine == "inprocess" and self.resources.ray_address is not None:
            raise ValueError(
                f"resources.engine='inprocess' runs every client in this process, but "
                f"resources.ray_address={self.resources.ray_address!r} names a Ray cluster for them; "
                "allowed: engine = 'ray' or 'auto' with ray_address, or no ray_address"
            )
        if self.resources.engine == "inprocess" and self.faults.straggler_rate > 0:
            raise ValueError(
                f"resources.engine='inprocess' cannot simulate stragglers (faults.straggler_rate="
                f"{self.faults.straggler_rate:g}): a client here blocks the server until it returns; "
                "allowed: engine = 'ray' or 'auto'"
            )
        c = self.defense.cleanclip
        if c.enabled and self.data.root_size < c.min_pairs:
            raise ValueError(
                f"defense.cleanclip.enabled = true fine-tunes on the clean server split, but "
                f"data.root_size={self.data.root_size}; allowed: ≥ defense.cleanclip.min_pairs="
                f"{c.min_pairs}. The audit of issue #22 measured, on the quickstart's planted "
                "backdoor, that CleanCLIP on 200 clean pairs raised ASR in every variant and on "
                "1,000 lowered BadNet's ASR 0.92 → 0.36 (a later single-seed check on a centrally "
                "planted backdoor did not reproduce the drop: docs/defenses.md, CleanCLIP). Raise "
                "data.root_size, or lower defense.cleanclip.min_pairs (≥ 2) to run a smaller clean "
                "set on purpose"
            )
        bad = [m for m in self.attack.malicious if not 0 <= m < self.clients.num]
        if bad:
            raise ValueError(
                f"attack.malicious={self.attack.malicious}: {bad} not in "
                f"[0, clients.num={self.clients.num})"
            )
        return self

    def engine(self, address: str | None = None) -> str:
        """'inprocess' or 'ray': ``resources.engine``, and for "auto" what suits this run
        (``ResourcesConfig.engine_for``); ``address``: a Ray cluster given outside the config."""
        c, r = self.clients, self.resources
        here = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cpus = r.total_cpus or here
        parallel = min(c.per_round, int(cpus // max(r.client_cpus, 1e-9)))
        work = self.rounds * c.per_round * (self.data.train_size // c.num) * c.local_epochs
        return r.engine_for(self.faults.straggler_rate, address, work=work, parallel=parallel)

    @property
    def malicious(self) -> list[int]:
        """Partition ids that attack (empty when the attack is switched off)."""
        return sorted(self.attack.malicious) if self.attack.enabled else []

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(exclude_none=True))


_INVALID = "invalid config:\n  "


_UNKNOWN_NAME = re.compile(r"'(?P<name>[^']*)' is unknown; allowed: (?P<allowed>[^\n(]*?)\s*$")


def did_you_mean(word: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'krum'?)`` for the closest of ``allowed`` (difflib, ratio ≥ 0.6), or ''."""
    close = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _suggest(problem: str) -> str:
    """A problem line "... 'krumm' is unknown; allowed: a, b, krum" with the closest allowed
    name appended."""
    m = _UNKNOWN_NAME.search(problem)
    if not m or "did you mean" in problem:
        return problem
    return problem + did_you_mean(m["name"], [a.strip() for a in m["allowed"].split(",") if a.strip()])


def invalid(problems: Iterable[str]) -> str:
    """The message for a list of problems: a heading, then one problem per line (an unknown
    name with the closest allowed one suggested)."""
    return _INVALID + "\n  ".join(_suggest(p) for p in problems)


def problems_of(error: ConfigError) -> list[str]:
    """The problem lines of a ConfigError message (without its "invalid config:" heading)."""
    return str(error).removeprefix(_INVALID).split("\n  ")


def _fields_at(loc: tuple) -> list[str]:
    """The field names of the config section at ``loc`` (``("attack", "data")``), or []."""
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        model = getattr(field, "annotation", None) if field is not None else None
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            return []
    return list(model.model_fields)


def _without(raw: dict, locs: list[tuple]) -> dict:
    """``raw`` with the keys at ``locs`` removed (a copy)."""
    raw = copy.deepcopy(raw)
    for loc in locs:
        node = raw
        for part in loc[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(loc[-1], None)
    return raw


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(str(e["loc"][-1]), _fields_at(e["loc"][:-1]))
            lines.append(f"{field}: unknown key (value {e['input']!r}); check the spelling{hint}")
        elif e["type"] == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
            lines.append(f"{field}: {msg}" if field != "config" else msg)
        else:
            lines.append(f"{field}={e['input']!r}: {e['msg']}")
    return invalid(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` → (["a", "b", "c"], VALUE parsed as a TOML value, else a plain string)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set rounds=5")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def set_key(raw: dict, path: list[str], value: Any, where: str) -> None:
    """Set the key at ``path`` (``["a", "b", "c"]`` for ``a.b.c``) of a raw config table to
    ``value``, creating the tables on the way; ``where`` names the setting in the error."""
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {part!r} is not a table")
    node[path[-1]] = value


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        set_key(raw, path, value, f"--set {item!r}")
    return raw


def _merge(base: dict, over: dict) -> dict:
    """Tables merge key by key, except ``params``: those belong to the chosen ``name`` (a
    trigger's, a rule's) and are replaced whole — and a table that names another ``name``
    without ``params`` does not inherit the base's (they were the other name's)."""
    out = dict(base)
    if "name" in over and over["name"] != base.get("name") and "params" not in over:
        out.pop("params", None)
    for k, v in over.items():
        merge = isinstance(v, dict) and isinstance(out.get(k), dict) and k != "params"
        out[k] = _merge(out[k], v) if merge else v
    return out


def _read(p: Path, seen: tuple[Path, ...]) -> dict:
    """A TOML file; ``extends = "other.toml"`` (relative to it) starts from that file, with
    this file's tables merged over it key by key. ``data.path``, ``eval.path`` and
    ``model.pretrained`` are relative to the file that sets them."""
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a folder, not a TOML file; name a .toml file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if p.resolve() in seen:
        raise ConfigError(f"{p}: 'extends' forms a cycle")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    for table, key in (("data", "path"), ("eval", "path"), ("model", "pretrained"), ("model.warm", "path")):
        node: Any = raw
        for part in table.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        where = node.get(key) if isinstance(node, dict) else None
        if isinstance(where, str):
            node[key] = os.path.normpath(p.parent.resolve() / where)
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{p}: extends={base!r} must be a path to another TOML file")
    target = p.parent / base
    if not target.is_file():
        what = "is a folder, not a TOML file" if target.is_dir() else "does not exist"
        raise ConfigError(
            f"{p}: extends={base!r} ({target}) {what}; allowed: a path to another TOML file, "
            "relative to this one"
        )
    return _merge(_read(p.parent / base, seen + (p.resolve(),)), raw)


def read_config(path: str | Path | None, overrides: Iterable[str] = ()) -> dict:
    """The raw table of a TOML config (or ``{}`` for the defaults when ``path`` is None;
    ``extends`` chains files) with the ``--set`` overrides applied, not yet validated."""
    raw = _read(Path(path), ()) if path is not None else {}
    return apply_overrides(raw, overrides)


def _floats(node, prefix: str = ""):
    """(dotted key, value) of every float in a raw config table, lists and nested tables included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        where = f"{prefix}.{key}" if isinstance(node, dict) and prefix else f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, float):
            yield where, value
        else:
            yield from _floats(value, where)


def validate_config(raw: dict, extra_checks: Iterable[Callable[[Config], None]] = (), *,
                    _first: bool = True) -> Config:
    """Validate a raw config table (types strictly, ranges, the partition's feasibility, then
    ``extra_checks``). A ``[sweep]`` table (the grid of ``fedsim sweep``) is not part of one
    run's config and is left out. Raises ConfigError with every problem found: pydantic's
    field errors all at once; when the fields are valid, every check runs and each one's
    problem is listed (a check stops at its own first problem). When some fields are not, the
    checks that look at one field at a time (``per_field = True``: the families' names) still
    run on the others, so that one pass of ``fedsim validate`` shows those problems too."""
    raw = {k: v for k, v in raw.items() if k != "sweep"}
    infinite = [f"{key}={value!r}: not a finite number; allowed: a finite number"
                for key, value in _floats(raw) if not np.isfinite(value)]
    if infinite:
        # the typed fields refuse them too; this also covers the free-form ``params`` tables
        # of every family, which reach the clients as JSON (where inf and nan become null)
        raise ConfigError(invalid(infinite))
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        if not _first:
            raise ConfigError(_format(e)) from None
        errors = e.errors()
        unknown = [tuple(x["loc"]) for x in errors if x["type"] == "extra_forbidden"]
        if len(unknown) == len(errors):
            # only misspelt keys: every check of what is left is reported with them
            checks, without = list(extra_checks), unknown
        else:
            checks = [c for c in extra_checks if getattr(c, "per_field", False)]
            without = [tuple(x["loc"]) for x in errors if x["loc"]]
        found = problems_of(ConfigError(_format(e)))
        try:
            validate_config(_without(raw, without), checks, _first=False)
        except ConfigError as rest:
            found += [p for p in problems_of(rest) if p not in found]
        raise ConfigError(invalid(found)) from None
    problems: list[str] = []
    for check in extra_checks:
        try:
            check(cfg)
        except ConfigError as e:
            problems += problems_of(e)
        except (ValueError, TypeError) as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(invalid(problems))
    return cfg


def load_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    extra_checks: Iterable[Callable[[Config], None]] = (),
) -> Config:
    """``read_config`` then ``validate_config``: a config file as one run's typed Config."""
    return validate_config(read_config(path, overrides), extra_checks)
