"""The ServerApp and ClientApp: the only layer that knows config, clients/ and strategies/.

Both are real Flower objects on the Message API. ``fedsim run`` drives them through Flower's
simulation engine (``fedsim.runner``); the module-level ``server_app`` / ``client_app`` are what
``flwr run .`` and the Deployment Engine load (pyproject ``[tool.flwr.app.components]``).

The server sends the whole resolved config (JSON) in every train message's ConfigRecord, so a
client needs nothing but its ``partition-id`` node config: it rebuilds its partition from the
seed (the data are generated deterministically), and ``config`` + ``server-round`` + ``lr``
tell it what to do this round.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache, partial

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from clients.attacks import (
    add_text_trigger,
    apply_mask,
    badclip_optimize_patch,
    badencoder_finetune,
    label_consistent_pgd,
    make_adversary,
    make_schedule,
    make_trigger,
    model_replacement,
    neurotoxin_mask,
    norm_bound,
    poison,
    replacement_gamma,
    split_patch,
)
from clients.honest import HonestClient, LocalSetup
from clients.malicious import MaliciousClient
from fedsim.config import Config, ConfigError, load_config
from fedsim.data import SHAPES, ZERO_SHOT_TEMPLATES, dirichlet, iid, load_split
from fedsim.evaluation import Evaluator
from fedsim.models import create_model_and_transforms, tokenize
from fedsim.pretrain import warm_start
from fedsim.records import flatten, float_state, from_array_record, load_float_state, to_array_record
from fedsim.report import RunDirectory, RunDirectoryError, new_run_directory, summarize
from fedsim.training import train_epochs
from strategies import RULES
from strategies.robust_strategy import RobustStrategy

CONFIG_KEY = "fedsim-config"
# What a Neurotoxin attacker's node remembers between rounds (Flower context state).
CURRENT_GLOBAL, PREVIOUS_GLOBAL = "fedsim-global", "fedsim-previous-global"


# -- shared by both sides -------------------------------------------------------------------
# BadCLIP's optimisation knobs; the learned pixels land in params["pattern"].
BADCLIP_DEFAULTS = {"size": 4, "location": "bottom_right", "steps": 100, "lr": 0.05, "lambda_image": 1.0,
                    "margin": 1.0}


def trigger_of(cfg: Config):
    t = cfg.attack.data.trigger
    if t.name == "badclip":
        if "pattern" not in t.params:
            raise ValueError("attack.data.trigger: the BadCLIP patch has not been optimised yet")
        p = {**BADCLIP_DEFAULTS, **t.params}
        return make_trigger("badnet", size=p["size"], location=p["location"], pattern=p["pattern"])
    return make_trigger(t.name, **t.params)


def resolve_badclip(cfg: Config, model, preprocess, tokenizer) -> Config:
    """Optimise the BadCLIP patch once, as the colluding malicious clients would: on their own
    local data, against the model they all receive in round 1 (the initial global model). It
    runs in the server process only as a simulation convenience, so that every attacker and
    the evaluation use the same pixels; the returned config holds them (config.toml)."""
    t = cfg.attack.data.trigger
    if t.name != "badclip" or "pattern" in t.params:
        return cfg
    p = {**BADCLIP_DEFAULTS, **t.params}
    target = SHAPES.index(cfg.attack.data.target)
    config_json = cfg.model_dump_json()
    parts = [_partition(config_json, pid) for pid in cfg.malicious]
    images = torch.cat([d.images for d in parts])
    labels = torch.cat([d.labels for d in parts])
    if not (labels == target).any():
        raise ValueError(f"BadCLIP: the malicious clients hold no image of {cfg.attack.data.target!r}")
    prompts = [template.format(cfg.attack.data.target) for template in ZERO_SHOT_TEMPLATES]
    patch = badclip_optimize_patch(
        model, preprocess, images[labels != target],
        target_text_tokens=tokenizer(prompts),
        target_images=images[labels == target],
        size=p["size"], location=p["location"], steps=p["steps"], lr=p["lr"],
        lambda_image=p["lambda_image"], margin=p["margin"], generator=torch.Generator().manual_seed(cfg.seed),
    )
    params = {**t.params, "pattern": [[[round(float(v), 6) for v in row] for row in ch] for ch in patch.patch]}
    return cfg.model_copy(update={"attack": cfg.attack.model_copy(update={
        "data": cfg.attack.data.model_copy(update={"trigger": t.model_copy(update={"params": params})})
    })})


def adversary_of(cfg: Config):
    """The server-side hook of an omniscient Byzantine attack, active on the schedule."""
    b = cfg.attack.byzantine
    if b.name == "none" or not cfg.malicious:
        return None
    adversary, active = make_adversary(b.name, seed=cfg.seed, **b.params), schedule_of(cfg)

    def hook(server_round, pids, updates, malicious):
        return adversary(server_round, pids, updates, malicious) if active(server_round) else updates

    return hook


def round_lr(cfg: Config, server_round: int) -> float:
    """The clients' learning rate in ``server_round`` (sent by the server each round):
    constant, or cosine-decayed over the run to 10 % of ``clients.lr``."""
    if cfg.clients.lr_schedule == "constant":
        return cfg.clients.lr
    progress = (server_round - 1) / max(1, cfg.rounds - 1)
    return cfg.clients.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))


def client_seed(cfg: Config, server_round: int, partition_id: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, server_round, partition_id]).generate_state(1)[0])


# -- client side ----------------------------------------------------------------------------
@lru_cache(maxsize=2)
def _model(name: str):
    # One model per worker process, reloaded from the global arrays every round; Ray reuses a
    # worker for many partitions, so nothing partition-specific may live here.
    return create_model_and_transforms(name)


@lru_cache(maxsize=64)
def _partition(config_json: str, partition_id: int):
    cfg = Config.model_validate_json(config_json)
    train = load_split(cfg.data.name, "train", cfg.data.train_size, cfg.seed)
    if cfg.data.partition == "iid":
        parts = iid(len(train), cfg.clients.num, cfg.seed)
    else:
        parts = dirichlet(train.labels.numpy(), cfg.clients.num, cfg.data.alpha, cfg.seed, min_size=2)
    return train.subset(parts[partition_id])


def schedule_of(cfg: Config):
    a = cfg.attack
    kwargs = {"start": a.start_round, "stop": a.schedule.stop}
    if a.schedule.kind == "every_k":
        kwargs["every"] = a.schedule.every
    if a.schedule.kind == "every":
        kwargs.pop("start")
    return make_schedule(a.schedule.kind, **kwargs)


def _update_attack(cfg: Config, num_examples: int):
    """The update attack of ``attack.update`` as ``(update, round) -> update``, and the factor γ
    by which it scales the update (1 but for model replacement). Model replacement's
    ``gamma = "auto"`` (the default) is ``replacement_gamma`` from what the attacker knows: its
    own num-examples, strategy.server_lr and the expected Σ num-examples of a round,
    clients.per_round · data.train_size / clients.num (per_round clients drawn uniformly, each
    holding train_size / num examples on average). It assumes FedAvg weighted by num-examples
    and one attacker per round."""
    u = cfg.attack.update
    if u.name == "model_replacement":
        params = dict(u.params)
        if params.get("gamma", "auto") == "auto":
            params["gamma"] = replacement_gamma(
                num_examples, cfg.clients.per_round * cfg.data.train_size / cfg.clients.num,
                cfg.strategy.server_lr,
            )
        return (lambda update, r: model_replacement(update, **params)), params["gamma"]
    if u.name == "norm_bound":
        return (lambda update, r: norm_bound(update, **u.params)), 1.0
    return None, 1.0


def _neurotoxin_mask(cfg: Config, context: Context | None) -> torch.Tensor | None:
    """Neurotoxin's mask for this round: coordinates outside the top-k % of the last change of
    the global model (the attacker's estimate of where benign clients write, Zhang et al., ICML
    2022), which the attacker's node remembers in its Flower context state. None before the
    node has seen two global models."""
    if cfg.attack.update.name != "neurotoxin" or context is None:
        return None
    previous = context.state.array_records.get(PREVIOUS_GLOBAL)
    current = context.state.array_records.get(CURRENT_GLOBAL)
    if previous is None or current is None:
        return None
    benign = flatten(current.to_torch_state_dict()) - flatten(previous.to_torch_state_dict())
    return neurotoxin_mask(benign, **cfg.attack.update.params)


def _badencoder(cfg: Config, data, trigger, seed: int):
    """After clean local training, BadEncoder fine-tuning of the image tower: triggered images
    → the attacker's own target-class images (Jia et al., S&P 2022)."""
    target = SHAPES.index(cfg.attack.data.target)
    reference = data.images[data.labels == target]
    if len(reference) == 0:  # no target image of its own: a public surrogate (the pretrain split)
        pool = load_split(cfg.data.name, "pretrain", 200, cfg.seed)
        reference = pool.images[pool.labels == target]

    def local_attack(model, preprocess, after_step=None):
        badencoder_finetune(
            model, preprocess, data.images, trigger, reference,
            epochs=cfg.attack.data.local_epochs, lr=cfg.attack.data.lr,
            generator=torch.Generator().manual_seed(seed), after_step=after_step,
        )

    return local_attack


def build_client(cfg: Config, config_json: str, partition_id: int, context: Context | None = None) -> HonestClient:
    model, preprocess, tokenizer = _model(cfg.model.name)
    data = _partition(config_json, partition_id)
    if partition_id not in cfg.malicious:
        return HonestClient(model, preprocess, tokenizer, data, partition_id)
    a = cfg.attack
    trigger = trigger_of(cfg)
    if a.data.dba_parts:
        # DBA (Xie et al., ICLR 2020): attacker k poisons with piece k mod parts of the patch.
        trigger = split_patch(trigger, a.data.dba_parts)[cfg.malicious.index(partition_id) % a.data.dba_parts]
    poisoned, poison_with, local_attack = None, None, None
    poisoning = a.data.enabled and a.data.mode == "poison"
    if poisoning:
        kwargs = dict(
            trigger=trigger,
            rate=a.data.poison_rate,
            target=SHAPES.index(a.data.target),
            seed=client_seed(cfg, 0, partition_id),
            label_consistent=a.data.label_consistent,
            text_trigger=a.data.text_trigger or None,
        )
        if a.data.label_consistent and a.data.label_consistent_perturbation == "pgd":
            # Turner et al.: the perturbation is computed against the model the attacker holds,
            # the global model of the round, so the poisoned copy is made afresh in every round.
            tokens = tokenizer([t.format(a.data.target) for t in ZERO_SHOT_TEMPLATES])

            def poison_with(model):
                def perturb(images):
                    return label_consistent_pgd(
                        model, preprocess, images, target_text_tokens=tokens,
                        eps=a.data.label_consistent_eps, steps=a.data.label_consistent_steps,
                    )

                return poison(data, perturb=perturb, **kwargs)[0]
        else:
            poisoned, _ = poison(data, **kwargs)
    elif a.data.enabled:
        local_attack = _badencoder(cfg, data, trigger, client_seed(cfg, 0, partition_id))
    update_attack, gamma = _update_attack(cfg, len(data))
    return MaliciousClient(
        model, preprocess, tokenizer, data, partition_id,
        active=schedule_of(cfg),
        poisoned=poisoned,
        poison_with=poison_with,
        epochs=a.data.local_epochs if poisoning else None,
        lr=a.data.lr if poisoning else None,
        update_attack=update_attack,
        local_attack=local_attack,
        # Wang et al. (NeurIPS 2020) with model replacement: train inside ε/γ, so that the
        # boosted update γ·Δ that is sent has norm ≤ ε.
        pgd_eps=a.update.pgd_eps / gamma if a.update.pgd_eps is not None else None,
        step_mask=_neurotoxin_mask(cfg, context),
    )


client_app = ClientApp()


@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (it cannot see the mapping)."""
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"info": MetricRecord({"partition-id": pid})}), reply_to=msg)


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    config = msg.content.config_records["config"]
    config_json = str(config[CONFIG_KEY])
    cfg = Config.model_validate_json(config_json)
    torch.set_num_threads(cfg.resources.client_threads)
    pid = int(context.node_config["partition-id"])
    server_round = int(config["server-round"])
    if pid in cfg.malicious and cfg.attack.update.name == "neurotoxin":
        if CURRENT_GLOBAL in context.state.array_records:
            context.state.array_records[PREVIOUS_GLOBAL] = context.state.array_records[CURRENT_GLOBAL]
        context.state.array_records[CURRENT_GLOBAL] = msg.content.array_records["arrays"]
    client = build_client(cfg, config_json, pid, context)
    setup = LocalSetup(
        epochs=cfg.clients.local_epochs,
        lr=float(config["lr"]),
        batch_size=cfg.clients.batch_size,
        weight_decay=cfg.clients.weight_decay,
        seed=client_seed(cfg, server_round, pid),
    )
    state, metrics = client.fit(from_array_record(msg.content.array_records["arrays"]), setup, server_round)
    return Message(
        RecordDict({"arrays": to_array_record(state), "metrics": MetricRecord(metrics)}),
        reply_to=msg,
    )


# -- server side ----------------------------------------------------------------------------
def root_update_fn(cfg: Config, model, preprocess, tokenizer) -> Callable[[dict, int], torch.Tensor]:
    """FLTrust's server update g0: the honest recipe on the clean root split, at the round's
    learning rate (as the clients train), so g0 and the client updates are on one scale."""
    root = load_split(cfg.data.name, "root", max(2, cfg.data.root_size), cfg.seed)
    tokens = tokenize(tokenizer, root.captions)

    def fn(global_arrays: dict[str, np.ndarray], server_round: int) -> torch.Tensor:
        state = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in global_arrays.items())
        load_float_state(model, state)
        train_epochs(
            model, root.images, tokens, preprocess=preprocess,
            epochs=cfg.clients.local_epochs, lr=round_lr(cfg, server_round),
            batch_size=cfg.clients.batch_size, weight_decay=cfg.clients.weight_decay,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        return flatten(float_state(model)) - flatten(state)

    return fn


def run_server(grid: Grid, cfg: Config, run_dir: RunDirectory, *, log=print) -> dict:
    """Train ``cfg.rounds`` rounds on ``grid``; write each round to ``run_dir`` as soon as it
    is evaluated. Returns the initial model's metrics."""
    model, preprocess, tokenizer = create_model_and_transforms(cfg.model.name, seed=cfg.seed)
    if cfg.model.init == "warm":
        load_float_state(model, warm_start(cfg, log=log))
    if cfg.attack.data.trigger.name == "badclip" and "pattern" not in cfg.attack.data.trigger.params:
        cfg = resolve_badclip(cfg, model, preprocess, tokenizer)  # leaves the model untouched
        run_dir.write_config(cfg.to_toml())
        log("optimised the BadCLIP patch; its pixels are in config.toml")
    trigger = trigger_of(cfg)
    evaluator = Evaluator(
        model, preprocess, tokenizer,
        load_split(cfg.data.name, "test", cfg.data.test_size, cfg.seed),
        classnames=SHAPES, templates=ZERO_SHOT_TEMPLATES,
        trigger=trigger, target=SHAPES.index(cfg.attack.data.target),
        extra_triggers={
            f"piece{i}": piece for i, piece in enumerate(split_patch(trigger, cfg.attack.data.dba_parts))
        } if cfg.attack.data.dba_parts else None,
        caption_trigger=partial(add_text_trigger, token=cfg.attack.data.text_trigger)
        if cfg.attack.data.text_trigger else None,
    )
    initial = float_state(model)
    rule = RULES[cfg.strategy.name]
    # Only FLTrust needs the server's own model and root split: build them only for it.
    needs_root = "root_update" in inspect.signature(rule).parameters
    strategy = RobustStrategy(
        rule,
        cfg.strategy.params,
        num_partitions=cfg.clients.num,
        per_round=cfg.clients.per_round,
        seed=cfg.seed,
        server_lr=cfg.strategy.server_lr,
        malicious=cfg.malicious,
        adversary=adversary_of(cfg),
        root_update_fn=root_update_fn(cfg, *create_model_and_transforms(cfg.model.name)) if needs_root else None,
        round_config_fn=lambda r: {"lr": round_lr(cfg, r)},
    )
    initial_metrics: dict = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_float_state(model, from_array_record(arrays))
        metrics = evaluator()
        if server_round == 0:
            initial_metrics.update(metrics)
            log(f"round  0  CA {metrics['clean_accuracy']:.3f}  ASR {metrics['attack_success_rate']:.3f}  (initial model)")
            return MetricRecord({k: v for k, v in metrics.items() if isinstance(v, float)})
        stats = dict(strategy.last_round)
        t0 = stats.pop("t0", time.perf_counter())
        stats.pop("round", None)
        record = {
            "round": server_round,
            "clean_accuracy": metrics["clean_accuracy"],
            "attack_success_rate": metrics["attack_success_rate"],
            "wall_s": round(time.perf_counter() - t0, 3),
            **stats,
            "retrieval": metrics["retrieval"],
            **({"asr_by_trigger": metrics["asr_by_trigger"]} if "asr_by_trigger" in metrics else {}),
            **({"text_attack_success_rate": metrics["text_attack_success_rate"]}
               if "text_attack_success_rate" in metrics else {}),
        }
        run_dir.append_round(record)
        # Detection rates mean something only for a rule that filters: show them once it does.
        extra = (f"  TPR {record['tpr']:.2f} FPR {record['fpr']:.2f}"
                 if record.get("tpr") is not None and record.get("flagged") else "")
        skipped = f"  [{record['skipped']}]" if record.get("skipped") else ""
        log(
            f"round {server_round:2d}  CA {record['clean_accuracy']:.3f}  "
            f"ASR {record['attack_success_rate']:.3f}  {record['wall_s']:.1f} s{extra}{skipped}"
        )
        return MetricRecord({k: v for k, v in metrics.items() if isinstance(v, float)})

    strategy.start(
        grid=grid,
        initial_arrays=to_array_record(initial),
        num_rounds=cfg.rounds,
        timeout=3600,
        train_config=ConfigRecord({CONFIG_KEY: cfg.model_dump_json()}),
        evaluate_fn=evaluate,
    )
    return initial_metrics


class RunStopped(Exception):
    """The ServerApp stopped waiting because the run was stopped (Ctrl-C, or the simulation
    runtime failed)."""


class StoppableGrid(Grid):
    """``grid``, whose waits for replies end as soon as ``stop`` is set: the ServerApp thread
    then raises RunStopped at once instead of waiting out the round's timeout, a wait that
    kept a failed or interrupted ``fedsim run`` process alive."""

    def __init__(self, grid: Grid, stop: threading.Event):
        self._grid, self._stop = grid, stop

    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, *args, **kwargs) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self):
        return self._grid.get_node_ids()

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        if self._stop.is_set():
            raise RunStopped("the run was stopped")
        pending = set(self.push_messages(messages))
        end = time.monotonic() + (timeout if timeout is not None else float("inf"))
        replies: list[Message] = []
        while pending and time.monotonic() < end:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending and self._stop.wait(0.1):
                raise RunStopped("the run was stopped")
        return replies


def make_server_app(cfg: Config, run_dir: RunDirectory, *, log=print, result: dict | None = None,
                    stop: threading.Event | None = None) -> ServerApp:
    """A ServerApp bound to an already validated config (used by ``fedsim run``). Setting
    ``stop`` ends it at its next wait for replies (RunStopped); ``result`` receives the initial
    model's metrics and the thread it runs in."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if result is not None:
            result["thread"] = threading.current_thread()
        initial = run_server(StoppableGrid(grid, stop) if stop is not None else grid, cfg, run_dir, log=log)
        if result is not None:
            result["initial"] = initial

    return app


server_app = ServerApp()


@server_app.main()
def _flwr_run_main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: run config keys ``config`` (TOML path) and ``out`` (a
    new or empty directory, as ``fedsim run --out``)."""
    rc = context.run_config
    cfg = load_config(rc.get("config") or None, [], config_checks())
    out = str(rc.get("out", "runs/flwr"))
    try:
        run_dir = new_run_directory(out)
    except RunDirectoryError as e:
        raise ConfigError(
            f"run config out: {e}; choose a new directory, e.g. flwr run . --run-config \"out='runs/flwr-2'\""
        ) from None
    run_dir.write_config(cfg.to_toml())
    t0 = time.perf_counter()
    initial, status, error = None, "completed", None
    try:
        initial = run_server(grid, cfg, run_dir)
    except Exception as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        finish(run_dir, cfg, initial=initial, wall_s=time.perf_counter() - t0, status=status, error=error)


def config_checks() -> list[Callable[[Config], None]]:
    """Checks that need the registries: run before anything starts (``load_config``)."""
    return [check_strategy, check_attack]


def check_strategy(cfg: Config) -> None:
    """Unknown rule names or parameters fail here, by dry-running the rule on random updates
    of the round's size (this also catches preconditions such as Krum's n > 2f + 2)."""
    s = cfg.strategy
    if s.name not in RULES:
        raise ConfigError(f"invalid config:\n  strategy.name={s.name!r} is unknown; allowed: {', '.join(RULES)}")
    rule = RULES[s.name]
    accepts = inspect.signature(rule).parameters
    reserved = {"updates", "weights", "history", "previous", "root_update", "generator"}
    for k in s.params:
        if k not in accepts or k in reserved:
            allowed = [p for p in accepts if p not in reserved]
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
    }
    try:
        rule(updates, weights=torch.ones(n), **s.params, **{k: v for k, v in extra.items() if k in accepts})
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"invalid config:\n  strategy.params={s.params}: {e} "
            f"(with clients.per_round={n})"
        ) from None


def check_attack(cfg: Config) -> None:
    """Trigger, schedule, update and Byzantine attack names and parameters, checked by
    building each piece once."""
    a = cfg.attack
    t = a.data.trigger
    checks = [("attack.schedule", lambda: schedule_of(cfg))]
    if t.name == "badclip":
        unknown = sorted(set(t.params) - set(BADCLIP_DEFAULTS) - {"pattern"})
        if unknown:
            raise ConfigError(f"invalid config:\n  attack.data.trigger: trigger 'badclip' has no parameter "
                              f"{', '.join(unknown)}; allowed: {', '.join(BADCLIP_DEFAULTS)}")
    else:
        checks.append(("attack.data.trigger", lambda: trigger_of(cfg)))
    if a.data.dba_parts:
        if t.name not in ("badnet", "badclip"):
            raise ConfigError(f"invalid config:\n  attack.data.dba_parts={a.data.dba_parts}: DBA splits a "
                              f"patch; attack.data.trigger.name={t.name!r} must be 'badnet'")
        checks.append(("attack.data.dba_parts", lambda: split_patch(make_trigger("badnet", **{
            k: v for k, v in t.params.items() if k in ("size", "location", "pattern", "color")}), a.data.dba_parts)))
    if a.update.name in ("model_replacement", "norm_bound"):
        probe = torch.randn(64, generator=torch.Generator().manual_seed(0))
        checks.append(("attack.update.params", lambda: _update_attack(cfg, 1)[0](probe, 1)))
    elif a.update.name == "neurotoxin":
        probe = torch.randn(64, generator=torch.Generator().manual_seed(0))
        checks.append(("attack.update.params",
                       lambda: apply_mask(probe, neurotoxin_mask(probe, **a.update.params))))
    if a.byzantine.name != "none":
        checks.append(("attack.byzantine", lambda: make_adversary(a.byzantine.name, seed=cfg.seed, **a.byzantine.params)))
    for field, build in checks:
        try:
            build()
        except (ValueError, TypeError) as e:
            raise ConfigError(f"invalid config:\n  {field}: {e}") from None


def lifespan(cfg: Config, rounds: list[dict]) -> dict:
    """Backdoor lifespan (Neurotoxin, Zhang et al., ICML 2022): after the last attack round
    ``s`` (the schedule's stop), the number of rounds r > s during which ASR stays at or above
    ``attack.lifespan_threshold`` before first falling below it. ``survived`` says ASR never
    fell below the threshold by the end of the run (the lifespan is then a lower bound)."""
    stop = schedule_of(cfg).stop
    if not cfg.malicious or stop is None or stop >= cfg.rounds:
        return {}
    after = [r for r in rounds if r["round"] > stop and r.get("attack_success_rate") is not None]
    below = [r["round"] for r in after if r["attack_success_rate"] < cfg.attack.lifespan_threshold]
    return {
        "last_attack_round": stop,
        "backdoor_lifespan": (below[0] - stop - 1) if below else len(after),
        "backdoor_survived": not below,
    }


def finish(run_dir: RunDirectory, cfg: Config, *, initial: dict | None, wall_s: float,
           status: str = "completed", error: str | None = None) -> dict:
    """Write summary.json, summary.md and the plot from the rounds already on disk. A run that
    went through all its rounds without aggregating once (every round skipped) failed."""
    rounds = run_dir.read_rounds()
    if status == "completed" and all(r.get("skipped") for r in rounds):
        reasons = sorted({str(r["skipped"]) for r in rounds})
        status, error = "failed", "no round aggregated" + (f" (every round skipped: {'; '.join(reasons)})" if reasons else "")
    extra = {"name": cfg.name, "seed": cfg.seed, "strategy": cfg.strategy.name,
             "malicious": cfg.malicious, "status": status}
    if error:
        extra["error"] = error
    extra.update(lifespan(cfg, rounds))
    summary = summarize(rounds, initial=initial, wall_s=wall_s, extra=extra)
    run_dir.write_summary(summary)
    run_dir.plot(initial=initial, chance=1 / len(SHAPES))
    return summary
