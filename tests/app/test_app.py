"""The app layer: configs chained with ``extends``, attack pieces composed from the config,
PGD's projection, the backdoor lifespan, ``fedsim table``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedsim.app import build_client, lifespan, trigger_of
from fedsim.config import ConfigError, load_config
from fedsim.records import flatten, float_state
from clients.honest import LocalSetup
from clients.malicious import MaliciousClient

ROOT = Path(__file__).resolve().parents[2]


def test_extends_merges_tables_but_replaces_params(tmp_path):
    (tmp_path / "base.toml").write_text(
        'rounds = 7\n[clients]\nnum = 6\nper_round = 6\n[attack.data.trigger]\nname = "badnet"\nparams = { size = 3 }\n'
    )
    (tmp_path / "child.toml").write_text(
        'extends = "base.toml"\n[clients]\nlr = 1e-3\n[attack.data.trigger]\nname = "sig"\nparams = { delta = 0.1 }\n'
    )
    cfg = load_config(tmp_path / "child.toml")
    assert (cfg.rounds, cfg.clients.num, cfg.clients.lr) == (7, 6, 1e-3)
    assert cfg.attack.data.trigger.params == {"delta": 0.1}
    (tmp_path / "loop.toml").write_text('extends = "loop.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.toml")


def _cfg(*sets):
    return load_config(None, ["data.train_size=200", "clients.num=4", "clients.per_round=4",
                              "attack.malicious=[0, 2]", *sets])


def test_malicious_clients_get_their_dba_piece_and_poisoned_captions():
    cfg = _cfg("attack.data.dba_parts=2", "attack.data.poison_rate=1.0")
    j = cfg.model_dump_json()
    honest = build_client(cfg, j, 1)
    a, b = build_client(cfg, j, 0), build_client(cfg, j, 2)
    assert not isinstance(honest, MaliciousClient)
    assert all(c.endswith(" star") for c in a.poisoned.captions)
    full = trigger_of(cfg)
    blank = torch.zeros(1, 3, 32, 32)
    changed = lambda t: (t(blank) != blank).any(0).any(0)  # noqa: E731
    pa = (a.poisoned.images != a.data.images).any(1).any(0)
    pb = (b.poisoned.images != b.data.images).any(1).any(0)
    # each attacker touches only its own half of the full patch, and together they cover it
    assert pa.sum() > 0 and pb.sum() > 0 and not (pa & pb).any()
    assert ((pa | pb) <= changed(full)).all()


def test_pgd_keeps_the_malicious_update_inside_the_ball():
    cfg = _cfg("attack.update.pgd_eps=0.05", "attack.data.local_epochs=1", "attack.data.lr=1e-2")
    client = build_client(cfg, cfg.model_dump_json(), 0)
    global_state = float_state(client.model)
    state, _ = client.fit(global_state, LocalSetup(1, 1e-3, 32, 0.1, seed=0), server_round=1)
    norm = (flatten(state) - flatten(global_state)).norm().item()
    assert norm <= 0.05 * (1 + 1e-4)
    unconstrained = build_client(_cfg("attack.data.local_epochs=1", "attack.data.lr=1e-2"),
                                 cfg.model_dump_json(), 0)
    unconstrained.pgd_eps = None
    state, _ = unconstrained.fit(global_state, LocalSetup(1, 1e-3, 32, 0.1, seed=0), server_round=1)
    assert (flatten(state) - flatten(global_state)).norm().item() > 0.05


def test_lifespan_counts_rounds_above_threshold_after_the_last_attack():
    cfg = load_config(None, ["rounds=8", "attack.schedule.kind='window'", "attack.schedule.stop=3"])
    asr = [0.2, 0.6, 0.9, 0.8, 0.7, 0.4, 0.6, 0.3]
    rounds = [{"round": i + 1, "attack_success_rate": a} for i, a in enumerate(asr)]
    assert lifespan(cfg, rounds) == {"last_attack_round": 3, "backdoor_lifespan": 2, "backdoor_survived": False}
    rounds = [{"round": i + 1, "attack_success_rate": 0.9} for i in range(8)]
    assert lifespan(cfg, rounds)["backdoor_lifespan"] == 5 and lifespan(cfg, rounds)["backdoor_survived"]
    assert lifespan(load_config(None), rounds) == {}  # attacks every round: no lifespan


def test_fedsim_table(tmp_path):
    for name, ca in (("a", 0.5), ("b", 0.25)):
        d = tmp_path / name
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"name": name, "strategy": "krum", "clean_accuracy": ca,
                                                    "attack_success_rate": 0.1, "mean_tpr": 1.0}))
    out = subprocess.run([sys.executable, "-m", "fedsim.cli", "table", str(tmp_path / "a"), str(tmp_path / "b")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| run | defense | CA | ASR") and "| a | krum | 0.500 | 0.100 | 1.000 |" in lines[2]
    bad = subprocess.run([sys.executable, "-m", "fedsim.cli", "table", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "summary.json" in bad.stderr


def test_badclip_patch_is_learned_on_the_attackers_data_and_kept_in_the_config():
    from fedsim.app import resolve_learned_trigger
    from fedsim.models import create_model_and_transforms

    cfg = _cfg("attack.data.trigger.name='badclip'", "attack.data.trigger.params={steps=3, size=3}")
    with pytest.raises(ValueError, match="has not been learned yet"):
        trigger_of(cfg)
    model, preprocess, tokenizer = create_model_and_transforms(cfg.model.name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    resolved = resolve_learned_trigger(cfg, model, preprocess, tokenizer)
    pattern = torch.tensor(resolved.attack.data.trigger.params["pattern"])
    assert pattern.shape == (3, 3, 3) and 0 <= pattern.min() and pattern.max() <= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.zeros(1, 3, 32, 32)
    # in the middle, as the authors' code places it: rows and columns int(16 − 3/2) = 14 to 16
    # (until issue #22 the default was the bottom-right corner, which this line checked)
    torch.testing.assert_close(trigger_of(resolved)(x)[0, :, 14:17, 14:17], pattern, atol=1e-6, rtol=0)
    # the resolved config (with the learned pixels) round-trips through config.toml
    from fedsim.config import Config
    import tomllib

    assert Config.model_validate(tomllib.loads(resolved.to_toml())) == resolved


def test_neurotoxin_confines_every_step_to_the_mask():
    cfg = _cfg("attack.data.local_epochs=1")
    client = build_client(cfg, cfg.model_dump_json(), 0)
    global_state = float_state(client.model)
    d = flatten(global_state).numel()
    client.step_mask = torch.arange(d) % 3 == 0
    state, _ = client.fit(global_state, LocalSetup(1, 1e-3, 32, 0.1, seed=0), server_round=1)
    update = flatten(state) - flatten(global_state)
    assert (update[~client.step_mask] == 0).all() and (update[client.step_mask] != 0).any()


def test_a_neurotoxin_node_masks_with_the_last_change_of_the_global_model_it_saw():
    from flwr.app import Context, RecordDict

    from clients.attacks import neurotoxin_mask
    from fedsim.app.client_app import _remember_global
    from fedsim.records import to_array_record

    cfg = _cfg("attack.update.name='neurotoxin'", "attack.update.params={k_percent=10.0}")
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    first = float_state(build_client(cfg, cfg.model_dump_json(), 0).model)
    second = {k: v + 0.01 * torch.randn_like(v) for k, v in first.items()}
    assert _remember_global(context, to_array_record(first)) is None  # one global model seen: no mask
    last_globals = _remember_global(context, to_array_record(second))
    client = build_client(cfg, cfg.model_dump_json(), 0, last_globals)
    assert torch.equal(client.step_mask, neurotoxin_mask(flatten(second) - flatten(first), k_percent=10.0))
    assert build_client(cfg, cfg.model_dump_json(), 1, last_globals).__class__ is not MaliciousClient


def test_the_client_app_trains_the_partition_the_server_assigned_else_its_own(flower_task):
    """Flower's simulation: the server names the partition in the train message and the node's
    own ``partition-id`` is not what it trains; a deployment's message names none and the node
    trains its own. Partitions 1 and 3 hold different data, so the updates differ too."""
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

    from fedsim.app.client_app import CONFIG_KEY, client_train
    from fedsim.records import to_array_record
    from strategies.robust_strategy import PARTITION_ID

    cfg = _cfg("model.init='scratch'", "attack.enabled=false")
    arrays = to_array_record(float_state(build_client(cfg, cfg.model_dump_json(), 1).model))

    def train(node_partition, assigned=None):
        config = {CONFIG_KEY: cfg.model_dump_json(), "server-round": 1, "lr": 1e-3}
        if assigned is not None:
            config[PARTITION_ID] = assigned
        msg = Message(RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), dst_node_id=0,
                      message_type=MessageType.TRAIN)
        context = Context(run_id=1, node_id=0, node_config={"partition-id": node_partition}, state=RecordDict(),
                          run_config={})
        reply = client_train(msg, context)
        return reply.content.metric_records["metrics"]["partition-id"], flatten(
            {k: torch.from_numpy(a.numpy()) for k, a in reply.content.array_records["arrays"].items()})

    pid, assigned = train(node_partition=3, assigned=1)
    assert pid == 1
    own_pid, own = train(node_partition=1)
    assert own_pid == 1 and torch.equal(assigned, own)
    other_pid, other = train(node_partition=3)
    assert other_pid == 3 and not torch.equal(other, own)


def test_flwr_run_checks_the_number_of_supernodes_before_anything_starts():
    from fedsim.app.server_app import check_node_count
    from fedsim.config import ConfigError

    check_node_count(10, 10)
    with pytest.raises(ConfigError) as e:
        check_node_count(2, 10)  # Flower's simulation default
    text = str(e.value)
    assert "the federation has 2 SuperNode(s) but clients.num = 10" in text
    assert '--federation-config "num-supernodes=10"' in text and "partition-id=0..9" in text
