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
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from clients.attacks import make_adversary, make_schedule, make_trigger, poison
from clients.honest import HonestClient, LocalSetup
from clients.malicious import MaliciousClient
from fedsim.config import Config, ConfigError, load_config
from fedsim.data import SHAPES, ZERO_SHOT_TEMPLATES, dirichlet, iid, load_split
from fedsim.evaluation import Evaluator
from fedsim.models import create_model_and_transforms, tokenize
from fedsim.pretrain import warm_start
from fedsim.records import flatten, float_state, from_array_record, load_float_state, to_array_record
from fedsim.report import RunDirectory, summarize
from fedsim.training import train_epochs
from strategies import RULES
from strategies.robust_strategy import RobustStrategy

CONFIG_KEY = "fedsim-config"


# -- shared by both sides -------------------------------------------------------------------
def trigger_of(cfg: Config):
    t = cfg.attack.data.trigger
    return make_trigger(t.name, **t.params)


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


def build_client(cfg: Config, config_json: str, partition_id: int) -> HonestClient:
    model, preprocess, tokenizer = _model(cfg.model.name)
    data = _partition(config_json, partition_id)
    if partition_id not in cfg.malicious:
        return HonestClient(model, preprocess, tokenizer, data, partition_id)
    a = cfg.attack
    poisoned, _ = poison(
        data,
        trigger=trigger_of(cfg),
        rate=a.data.poison_rate,
        target=SHAPES.index(a.data.target),
        seed=client_seed(cfg, 0, partition_id),
        label_consistent=a.data.label_consistent,
        text_trigger=a.data.text_trigger or None,
    )
    return MaliciousClient(
        model, preprocess, tokenizer, data, partition_id,
        active=lambda r: r >= a.start_round,
        poisoned=poisoned,
        epochs=a.data.local_epochs,
        lr=a.data.lr,
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
    client = build_client(cfg, config_json, pid)
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
def root_update_fn(cfg: Config, model, preprocess, tokenizer) -> Callable[[dict], torch.Tensor]:
    """FLTrust's server update g0: one local epoch of the honest recipe on the clean root split."""
    root = load_split(cfg.data.name, "root", max(2, cfg.data.root_size), cfg.seed)
    tokens = tokenize(tokenizer, root.captions)

    def fn(global_arrays: dict[str, np.ndarray]) -> torch.Tensor:
        state = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in global_arrays.items())
        load_float_state(model, state)
        train_epochs(
            model, root.images, tokens, preprocess=preprocess,
            epochs=cfg.clients.local_epochs, lr=cfg.clients.lr,
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
    evaluator = Evaluator(
        model, preprocess, tokenizer,
        load_split(cfg.data.name, "test", cfg.data.test_size, cfg.seed),
        classnames=SHAPES, templates=ZERO_SHOT_TEMPLATES,
        trigger=trigger_of(cfg), target=SHAPES.index(cfg.attack.data.target),
    )
    initial = float_state(model)
    rule = RULES[cfg.strategy.name]
    strategy = RobustStrategy(
        rule,
        cfg.strategy.params,
        per_round=cfg.clients.per_round,
        seed=cfg.seed,
        server_lr=cfg.strategy.server_lr,
        malicious=cfg.malicious,
        root_update_fn=root_update_fn(cfg, *create_model_and_transforms(cfg.model.name)),
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
        }
        run_dir.append_round(record)
        extra = f"  TPR {record['tpr']:.2f} FPR {record['fpr']:.2f}" if record.get("tpr") is not None and cfg.strategy.name != "fedavg" else ""
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


def make_server_app(cfg: Config, run_dir: RunDirectory, *, log=print, result: dict | None = None) -> ServerApp:
    """A ServerApp bound to an already validated config (used by ``fedsim run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        initial = run_server(grid, cfg, run_dir, log=log)
        if result is not None:
            result["initial"] = initial

    return app


server_app = ServerApp()


@server_app.main()
def _flwr_run_main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: run config keys ``config`` (TOML path) and ``out``."""
    rc = context.run_config
    cfg = load_config(rc.get("config") or None, [], config_checks())
    run_dir = RunDirectory(Path(str(rc.get("out", "runs/flwr"))))
    run_dir.write_config(cfg.to_toml())
    t0 = time.perf_counter()
    initial = run_server(grid, cfg, run_dir)
    finish(run_dir, cfg, initial=initial, wall_s=time.perf_counter() - t0)


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
    t = cfg.attack.data.trigger
    try:
        make_trigger(t.name, **t.params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid config:\n  attack.data.trigger: {e}") from None


def finish(run_dir: RunDirectory, cfg: Config, *, initial: dict | None, wall_s: float,
           status: str = "completed", error: str | None = None) -> dict:
    """Write summary.json, summary.md and the plot from the rounds already on disk."""
    extra = {"name": cfg.name, "seed": cfg.seed, "strategy": cfg.strategy.name,
             "malicious": cfg.malicious, "status": status}
    if error:
        extra["error"] = error
    summary = summarize(run_dir.read_rounds(), initial=initial, wall_s=wall_s, extra=extra)
    run_dir.write_summary(summary)
    run_dir.plot(initial=initial, chance=1 / len(SHAPES))
    return summary
