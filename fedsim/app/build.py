"""The one place that turns a validated config into the objects of a run, top to bottom:
dataset → model → attack plan → rule → strategy → evaluator, plus the round's learning rate and
the clients' seeds (both sides derive them from the config alone).

A client rebuilds its partition from the seed (shapes are generated deterministically; a
source's index is re-opened and only the client's own images are decoded, at the model's image
size), so it needs nothing but the resolved config and its ``partition-id``; the server builds its model
(warm-started), resolves what only it can (the BadCLIP patch), and the strategy and evaluator.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np
import torch
from flwr.app import ArrayRecord

from clients.attacks import LEARNED_TRIGGERS, PATTERN, TRIGGERS, add_text_trigger
from clients.honest import HonestClient
from clients.malicious import MaliciousClient
from fedsim.app.attack_plan import (
    adversary_of,
    attack_plan,
    check_attack,
    dba_pieces,
    remembers_globals,
    target_id,
    trigger_of,
)
from fedsim.app.data_plan import (
    check_data,
    check_model,
    check_names,
    client_parts,
    eval_classes,
    eval_index,
    root_view,
    test_view,
    train_view,
)
from fedsim.config import Config, ConfigError, invalid
from fedsim.evaluation import Evaluator, SimCLREvaluator, encode_images
from fedsim.models import create_model_and_transforms, tokenize
from fedsim.objectives import (
    OBJECTIVES,
    TRAINING,
    TRAINING_FIELDS,
    TRAINING_INPUTS,
    cleanclip_finetune,
    training_kwargs,
)
from fedsim.pretrain import warm_start
from fedsim.progress import step_progress
from fedsim.records import (
    flatten,
    float_state,
    from_array_record,
    load_float_state,
    unflatten,
)
from fedsim.training import train_epochs
from strategies import RULES
from strategies.inputs import INPUTS, inputs_of
from strategies.robust_strategy import PostAggregate, RobustStrategy


# -- policies both sides derive from the config ------------------------------------------------
def round_lr(cfg: Config, server_round: int) -> float:
    """The clients' learning rate in ``server_round`` (sent by the server each round):
    constant, or cosine-decayed over the run to 10 % of ``clients.lr``."""
    if cfg.clients.lr_schedule == "constant":
        return cfg.clients.lr
    progress = (server_round - 1) / max(1, cfg.rounds - 1)
    return cfg.clients.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))


def client_seed(cfg: Config, server_round: int, partition_id: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, server_round, partition_id]).generate_state(1)[0])


# spawn key of the fault draws: independent of every other seed derived from (seed, round, pid)
_FAULTS = 0xFA17


def fault_of(cfg: Config, server_round: int, partition_id: int) -> str | None:
    """The failure ``cfg.faults`` injects into client ``partition_id`` in ``server_round``:
    "crash", "straggle", "drop" or None, from one uniform draw u per (seed, round, partition):
    crash if u < crash_rate, else straggle if u < crash_rate + straggler_rate, else drop if
    u < crash_rate + straggler_rate + drop_rate."""
    f = cfg.faults
    u = np.random.default_rng([cfg.seed, server_round, partition_id, _FAULTS]).random()
    for kind, rate in (("crash", f.crash_rate), ("straggle", f.straggler_rate), ("drop", f.drop_rate)):
        if u < rate:
            return kind
        u -= rate
    return None


# -- dataset and model -------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _parts(config_json: str) -> tuple:
    """(training view, every client's sample indices) of a config, drawn once per process:
    drawing the split of 200,000 samples over 10,000 clients took ≈ 20 ms, once per sampled
    client (bench/scale.py)."""
    cfg = Config.model_validate_json(config_json)
    train = train_view(cfg)
    return train, client_parts(cfg, len(train), train.labels)


@lru_cache(maxsize=64)
def _partition(config_json: str, partition_id: int, image_size: int):
    """Client ``partition_id``'s samples: of shapes' train split (only these rendered), or of
    the source's training choice with only these images decoded, at ``image_size``."""
    train, parts = _parts(config_json)
    return train.subset(parts[partition_id]).materialize(image_size)


def make_model(cfg: Config, *, seed: int = 0, pretrained=None):
    """(model, preprocess, tokenizer) of ``model.name`` for ``objective``: the CLIP, or in
    SimCLR mode its image tower with a projection head (``fedsim.models.SimCLRModel``)."""
    return create_model_and_transforms(cfg.model.name, seed=seed, pretrained=pretrained,
                                       **OBJECTIVES[cfg.objective].model_kwargs(cfg.simclr))


@lru_cache(maxsize=2)
def _model(config_json: str):
    # One model per worker process, reloaded from the global arrays every round; Ray reuses a
    # worker for many partitions, so nothing partition-specific may live here.
    return make_model(Config.model_validate_json(config_json))


# -- the client --------------------------------------------------------------------------------
def training_of(cfg: Config, *, honest: bool = True) -> Callable | None:
    """A client's training mode with its parameters bound: in SimCLR mode every client's is
    NT-Xent (``fedsim.objectives.simclr``, the malicious ones on their poisoned images);
    otherwise the honest clients' is ``clients.training`` and the malicious clients train
    CLIP's InfoNCE on their pairs as they are (None)."""
    imposed = OBJECTIVES[cfg.objective].client_training(cfg.simclr)
    if imposed is not None:
        return imposed
    if not honest:
        return None
    return partial(TRAINING[cfg.clients.training], **training_kwargs(cfg.clients))


def check_objective(cfg: Config) -> None:
    """What ``objective`` rules out, as its ``OBJECTIVES`` entry declares: another objective's
    section (``[simclr]`` with ``objective = "clip"``), and for an image-only objective
    (SimCLR) everything that needs captions or the text tower."""
    o = OBJECTIVES[cfg.objective]
    for other in OBJECTIVES.values():
        given = getattr(cfg, other.section) if other.section and other is not o else None
        if given is not None and given != type(given)():
            raise ConfigError(invalid([
                f"{other.section}={given.model_dump()} applies to objective = {other.name!r} only, but "
                f"objective = {cfg.objective!r}; set objective = \"{other.name}\" or remove [{other.section}]"
            ]))
    if not o.image_only:
        return
    d = cfg.attack.data
    t = d.trigger.name
    image_triggers = ", ".join(TRIGGERS)
    refused = [
        (cfg.clients.training != "standard", f"clients.training={cfg.clients.training!r} is a CLIP "
         "training mode (it needs captions); allowed: 'standard' (every client trains the objective)"),
        (cfg.defense.cleanclip.enabled, "defense.cleanclip.enabled = true fine-tunes on image–caption "
         "pairs; allowed: false"),
        (bool(d.text_trigger), f"attack.data.text_trigger={d.text_trigger!r} is a caption trigger; "
         "allowed: \"\" (an image-only objective trains on no captions)"),
        (t in LEARNED_TRIGGERS and LEARNED_TRIGGERS[t].needs_text, f"attack.data.trigger.name={t!r} is "
         f"optimised against the text tower; allowed: an image trigger ({image_triggers})"),
        (d.label_consistent, "attack.data.label_consistent = true: poisoning here already triggers "
         "target-class images only (SSL-Backdoor); remove it"),
    ]
    for bad, problem in refused:
        if bad:
            raise ConfigError(invalid([f"objective={cfg.objective!r}: {problem}"]))


def check_training(cfg: Config) -> None:
    """``clients.training`` is a ``TRAINING`` mode and ``clients.training_params`` are its
    keywords (those beyond what every mode is called with, ``TRAINING_INPUTS``)."""
    c = cfg.clients
    if c.training not in TRAINING:
        raise ConfigError(invalid([f"clients.training={c.training!r} is unknown; allowed: {', '.join(TRAINING)}"]))
    allowed = [p for p in inspect.signature(TRAINING[c.training]).parameters if p not in TRAINING_INPUTS]
    fielded = TRAINING_FIELDS.get(c.training, {})
    for k in c.training_params:
        if k not in allowed or k in fielded:
            why = (f"set it as clients.{fielded[k]}" if k in fielded else
                   f"allowed: {', '.join(p for p in allowed if p not in fielded) or 'none'}")
            raise ConfigError(invalid([f"clients.training_params.{k}: {c.training} takes no such parameter; {why}"]))


def build_client(cfg: Config, config_json: str, partition_id: int,
                 last_globals: tuple[dict, dict] | None = None) -> HonestClient:
    """Client ``partition_id``: honest, or honest plus its attack plan. ``last_globals`` are the
    (previous, current) global models its node has seen (Neurotoxin's mask), if any."""
    model, preprocess, tokenizer = _model(cfg.model_dump_json(include={"objective", "model", "simclr"}))
    data = _partition(config_json, partition_id, preprocess.image_size)
    if partition_id not in cfg.malicious:
        return HonestClient(model, preprocess, tokenizer, data, partition_id, objective=training_of(cfg))
    plan = attack_plan(cfg, data, partition_id, preprocess, tokenizer,
                       seed=client_seed(cfg, 0, partition_id), last_globals=last_globals)
    return MaliciousClient(model, preprocess, tokenizer, data, partition_id,
                           objective=training_of(cfg, honest=False), **vars(plan))


# -- the server --------------------------------------------------------------------------------
def resolve_learned_trigger(cfg: Config, model, preprocess, tokenizer, log=print) -> Config:
    """Learn the pixels of a learned trigger (``LEARNED_TRIGGERS``, e.g. BadCLIP's patch) once,
    as the colluding malicious clients would: on their own local data, against the model they
    all receive in round 1 (the initial global model). It runs in the server process only as
    a simulation convenience, so that every attacker and the evaluation use the same pixels;
    the returned config holds them (config.toml). Other configs are returned as they are."""
    t = cfg.attack.data.trigger
    learned = LEARNED_TRIGGERS.get(t.name)
    if learned is None or PATTERN in t.params:
        return cfg
    target = target_id(cfg)
    config_json = cfg.model_dump_json()
    parts = [_partition(config_json, pid, preprocess.image_size) for pid in cfg.malicious]
    images = torch.cat([d.images for d in parts])
    labels = torch.cat([d.labels for d in parts])
    if not (labels == target).any():
        raise ValueError(f"{t.name}: the malicious clients hold no image of {cfg.attack.data.target!r}")
    prompts = [template.format(cfg.attack.data.target) for template in eval_classes(cfg)[1]]
    params = learned.params(t.params)
    with step_progress(learned.steps(params), f"{t.name} trigger", log) as tick:
        pattern = learned.learn(
            model, preprocess, images[labels != target], target_images=images[labels == target],
            target_tokens=tokenizer(prompts), params=params,
            generator=torch.Generator().manual_seed(cfg.seed), after_step=tick,
        )
    params = {**t.params, PATTERN: pattern}
    return cfg.model_copy(update={"attack": cfg.attack.model_copy(update={
        "data": cfg.attack.data.model_copy(update={"trigger": t.model_copy(update={"params": params})})
    })})


def _state(arrays: dict[str, np.ndarray]) -> OrderedDict[str, torch.Tensor]:
    """The strategy's global arrays as a state dict, copied (a model loaded from it never aliases them)."""
    return OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in arrays.items())


def root_split(cfg: Config, preprocess, user: str):
    """The clean server split at the model's image size (``data_plan.root_view``)."""
    return root_view(cfg, preprocess.image_size, user)


def root_update_fn(cfg: Config, model, preprocess, tokenizer) -> Callable[[dict, int], torch.Tensor]:
    """FLTrust's server update g0: the plain recipe on the clean root split (CLIP's InfoNCE, or
    NT-Xent in SimCLR mode), at the round's learning rate (as the clients train), so g0 and
    the client updates are on one scale."""
    root = root_split(cfg, preprocess, "FLTrust's root data")
    tokens = tokenize(tokenizer, root.captions)
    objective = training_of(cfg, honest=False)

    def fn(global_arrays: dict[str, np.ndarray], server_round: int) -> torch.Tensor:
        state = _state(global_arrays)
        load_float_state(model, state)
        generator = torch.Generator().manual_seed(cfg.seed)
        train_epochs(
            model, root.images, tokens, preprocess=preprocess,
            epochs=cfg.clients.local_epochs, lr=round_lr(cfg, server_round),
            batch_size=cfg.clients.batch_size, weight_decay=cfg.clients.weight_decay,
            generator=generator,
            batch_loss=None if objective is None else objective(
                model, root.images, root.captions, tokenizer=tokenizer, preprocess=preprocess,
                generator=generator, epoch_offset=0),
        )
        return flatten(float_state(model)) - flatten(state)

    return fn


def probe_embed_fn(cfg: Config, model, preprocess) -> Callable[[dict], Callable[[torch.Tensor], torch.Tensor]]:
    """EmInspector's ``embed``: for the global model of the round, Δ ↦ the L2-normalised image
    embeddings that w_global + Δ gives the inspection images, the clean server split's
    (``data.root_size`` images; the paper uses a handful, e.g. ten CIFAR-100 images)."""
    probes = root_split(cfg, preprocess, "EmInspector's inspection images").images

    def fn(global_arrays: dict[str, np.ndarray]) -> Callable[[torch.Tensor], torch.Tensor]:
        like = _state(global_arrays)
        center = flatten(like)

        def embed(update: torch.Tensor) -> torch.Tensor:
            load_float_state(model, unflatten(center + update.to(center.dtype), like))
            return encode_images(model, probes, preprocess)

        return embed

    return fn


def cleanclip_step(cfg: Config, model, preprocess, tokenizer, evaluate: Callable[[], dict],
                   log=print) -> PostAggregate:
    """CleanCLIP (Bansal et al., ICCV 2023) after aggregation, in the rounds ``defense.cleanclip``
    names (every k-th, and/or the last): evaluate the aggregate (``evaluate()`` of ``model``),
    fine-tune it on the clean server split (``cleanclip_finetune``, seeded by (seed, round),
    BatchNorm as ``defense.cleanclip.batchnorm`` says), send on the result. The round's
    record gets the aggregate's CA and ASR as ``clean_accuracy_before_cleanclip`` /
    ``attack_success_rate_before_cleanclip`` and the mean loss as ``cleanclip_loss``; its
    ``clean_accuracy`` / ``attack_success_rate`` are the fine-tuned model's, the one sent.
    A source with fewer than ``defense.cleanclip.min_pairs`` samples left for the clean
    split is refused here (the config check sees only ``data.root_size``)."""
    c = cfg.defense.cleanclip
    clean = root_split(cfg, preprocess, "CleanCLIP's clean data")
    if len(clean.images) < c.min_pairs:
        raise ConfigError(
            f"CleanCLIP's clean data: the source leaves {len(clean.images)} pairs outside the training "
            f"choice (data.root_size={cfg.data.root_size}); allowed: ≥ defense.cleanclip.min_pairs="
            f"{c.min_pairs}; lower data.train_size, or lower defense.cleanclip.min_pairs on purpose"
        )

    def step(arrays: dict[str, np.ndarray], server_round: int) -> tuple[dict[str, np.ndarray], dict]:
        if not ((c.every and server_round % c.every == 0) or (c.at_end and server_round == cfg.rounds)):
            return arrays, {}
        load_float_state(model, _state(arrays))
        before = evaluate()
        n = len(clean.images)
        steps = c.epochs * (n // c.batch_size + (n % c.batch_size >= 2))
        with step_progress(steps, f"CleanCLIP step after round {server_round}", log) as tick:
            loss = cleanclip_finetune(
                model, clean.images, clean.captions, tokenizer=tokenizer, preprocess=preprocess,
                epochs=c.epochs, lr=c.lr, batch_size=c.batch_size, weight_decay=c.weight_decay,
                lambda1=c.lambda1, lambda2=c.lambda2, batchnorm=c.batchnorm,
                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + server_round),
                after_step=tick,
            )
        state = float_state(model)
        return {k: state[k].numpy().astype(a.dtype) for k, a in arrays.items()}, {
            "clean_accuracy_before_cleanclip": before["clean_accuracy"],
            "attack_success_rate_before_cleanclip": before["attack_success_rate"],
            "cleanclip_loss": loss,
        }

    return step


def build_strategy(cfg: Config, post_aggregate: PostAggregate | None = None, *,
                   assign_partitions: bool = False) -> RobustStrategy:
    """The rule of ``strategy.name`` in the Flower strategy, with the inputs it declares, and
    the server-side step ``post_aggregate``; ``assign_partitions``: the server gives the nodes
    their partitions (Flower's simulation) instead of asking them."""
    rule = RULES[cfg.strategy.name]
    wants = inputs_of(rule)
    return RobustStrategy(
        rule,
        cfg.strategy.params,
        num_partitions=cfg.clients.num,
        per_round=cfg.clients.per_round,
        seed=cfg.seed,
        server_lr=cfg.strategy.server_lr,
        malicious=cfg.malicious,
        adversary=adversary_of(cfg),
        # Only FLTrust and EmInspector need a server model and the root split: build them only then.
        root_update_fn=root_update_fn(cfg, *make_model(cfg)) if "root_update" in wants else None,
        embed_fn=probe_embed_fn(cfg, *make_model(cfg)[:2]) if "embed" in wants else None,
        round_config_fn=lambda r: {"lr": round_lr(cfg, r)},
        post_aggregate=post_aggregate,
        # Neurotoxin's attacker node remembers the global models it received (its mask)
        remember=cfg.malicious if remembers_globals(cfg) else (),
        assign_partitions=assign_partitions,
    )


def build_evaluator(cfg: Config, model, preprocess, tokenizer, log=None) -> Evaluator | SimCLREvaluator:
    """Zero-shot CA and ASR (for every DBA piece and the text trigger too) and retrieval of
    ``model`` on the evaluation set (``fedsim.app.data_plan.eval_index``), with its class names and
    templates. Retrieval pairs each image with its own caption: shapes' generated captions, or
    the evaluation source's (a template filled with the class name, for a labelled folder).
    In SimCLR mode: kNN and linear-probe CA and ASR on the same evaluation set, the memory
    bank and the probe's training data being the whole labelled training split (the union of
    the clients' clean data, with its true labels: an evaluation device, as the kNN monitor of
    SimCLR's code, not data the server holds)."""
    trigger = trigger_of(cfg)
    index = eval_index(cfg)
    test = test_view(cfg, preprocess.image_size, index)
    classnames, templates = eval_classes(cfg, index)
    extra_triggers = {
        f"piece{i}": piece for i, piece in enumerate(dba_pieces(cfg, trigger))
    } if cfg.attack.data.dba_parts else None
    return OBJECTIVES[cfg.objective].evaluator(
        cfg.simclr, model, preprocess, tokenizer, test,
        classnames=classnames, templates=templates,
        trigger=trigger, target=classnames.index(cfg.attack.data.target),
        extra_triggers=extra_triggers,
        caption_trigger=partial(add_text_trigger, token=cfg.attack.data.text_trigger)
        if cfg.attack.data.text_trigger else None,
        bank=lambda: train_view(cfg).materialize(preprocess.image_size),
        log=log,
    )


@dataclass
class Server:
    """What the ServerApp runs: ``cfg`` as resolved (the BadCLIP patch learned), the initial
    global model, the strategy, and ``evaluate(arrays) -> metrics`` of a global model."""

    cfg: Config
    initial: dict[str, torch.Tensor]
    strategy: RobustStrategy
    evaluate: Callable[[ArrayRecord], dict]


def build_server(cfg: Config, *, log=print, assign_partitions: bool = False) -> Server:
    model, preprocess, tokenizer = make_model(cfg, seed=cfg.seed, pretrained=cfg.model.pretrained)
    if cfg.model.init == "warm":
        # the warm-start CLIP (for SimCLR its image tower, the head as initialised)
        load_float_state(model, OBJECTIVES[cfg.objective].warm_state(float_state(model), warm_start(cfg, log=log)))
    cfg = resolve_learned_trigger(cfg, model, preprocess, tokenizer, log=log)  # leaves the model untouched
    evaluator = build_evaluator(cfg, model, preprocess, tokenizer, log=log)
    initial = float_state(model)

    def evaluate(arrays: ArrayRecord) -> dict:
        load_float_state(model, from_array_record(arrays))
        return evaluator()

    step = (cleanclip_step(cfg, model, preprocess, tokenizer, evaluator, log=log)
            if cfg.defense.cleanclip.enabled else None)
    return Server(cfg, initial, build_strategy(cfg, step, assign_partitions=assign_partitions), evaluate)


# -- config checks that need the registries ----------------------------------------------------
def config_checks() -> list[Callable[[Config], None]]:
    """The checks a config must pass before anything starts (``load_config``), beyond its
    fields: the names of its data and model (``check_names``), then — only when those exist,
    each check reporting its first problem — the objective's limits, the data and the model
    file it names (opened), the training mode, the rule and the attack (their registries'
    names and parameters)."""
    later = [check_objective, check_data, check_model, check_training, check_strategy, check_attack]
    return [check_names, *(_given_names(check) for check in later)]


def _given_names(check: Callable[[Config], None]) -> Callable[[Config], None]:
    """``check``, run only when ``check_names`` passes (it reports its own problems; a check of
    an unknown source or model would only repeat them, less clearly)."""
    def checked(cfg: Config) -> None:
        try:
            check_names(cfg)
        except ConfigError:
            return
        check(cfg)

    checked.__name__ = checked.__qualname__ = check.__name__
    checked.__doc__ = check.__doc__
    return checked


def check_strategy(cfg: Config) -> None:
    """Unknown rule names or parameters fail here, by dry-running the rule on random updates
    of the round's size (this also catches preconditions such as Krum's n > 2f + 2)."""
    s = cfg.strategy
    if s.name not in RULES:
        raise ConfigError(f"invalid config:\n  strategy.name={s.name!r} is unknown; allowed: {', '.join(RULES)}")
    rule = RULES[s.name]
    # the paper's parameters: the rule's keywords, less what the strategy passes in
    allowed = [p for p in inspect.signature(rule).parameters if p not in {"updates", "weights", *INPUTS}]
    for k in s.params:
        if k not in allowed:
            raise ConfigError(
                f"invalid config:\n  strategy.params.{k}: {s.name} has no parameter {k!r}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
    g = torch.Generator().manual_seed(0)
    n = cfg.clients.per_round
    updates = torch.randn(n, 16, generator=g)
    extra = {
        "history": updates.clone(), "previous": None,
        "root_update": torch.randn(16, generator=g), "generator": g,
        "embed": lambda u: u.view(4, 4),  # 4 probes, 4-d embeddings: a linear "model"
    }
    try:
        rule(updates, weights=torch.ones(n), **s.params, **{k: extra[k] for k in inputs_of(rule)})
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"invalid config:\n  strategy.params={s.params}: {e} "
            f"(with clients.per_round={n})"
        ) from None
