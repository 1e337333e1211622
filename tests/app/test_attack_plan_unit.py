"""The pieces of a malicious client (``fedsim.app.attack_plan``) from small configs: the
trigger and its DBA pieces, the schedule, the server-side adversary, the update attack, the
Neurotoxin mask, BadEncoder's reference images, the poisoned captions, the enforced training
mode, the plan itself, and ``check_attack``'s messages naming the field at fault."""

import importlib
from functools import partial

import pytest
import torch

from fedsim.app.attack_plan import (
    adversary_of,
    attack_plan,
    check_attack,
    dba_pieces,
    enforced_training,
    step_mask_of,
    schedule_of,
    target_id,
    trigger_of,
    update_attack_of,
)
from fedsim.app import data_plan
from fedsim.config import ConfigError, load_config
from fedsim.data import load_split, target_captions
from fedsim.objectives import TRAINING

# fedsim.app's name ``attack_plan`` is the function; its module is reached by import
ap = importlib.import_module("fedsim.app.attack_plan")

MAGENTA = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)


def _cfg(*sets):
    return load_config(None, list(sets))


def _with_data_name(cfg, name: str):
    """``cfg`` as if its training data came from the source ``name`` (no file is opened)."""
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"name": name})})


def _with_target(cfg, target: str):
    """``cfg`` with an attack target that the config check (against the evaluation set) would refuse."""
    data = cfg.attack.data.model_copy(update={"target": target})
    return cfg.model_copy(update={"attack": cfg.attack.model_copy(update={"data": data})})


def _painted(trigger, side: int = 32) -> torch.Tensor:
    """The (H, W) mask of pixels ``trigger`` paints magenta on a black image."""
    out = trigger(torch.zeros(1, 3, side, side))[0]
    return (out == MAGENTA).all(0)


def _box(side: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(side, side, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# --------------------------------------------------------------------------- triggers
def test_a_badnet_trigger_is_built_from_its_params():
    cfg = _cfg("attack.data.trigger.params={size=3, location=[2, 5]}")
    assert torch.equal(_painted(trigger_of(cfg)), _box(32, 2, 5, 5, 8))


def test_a_badclip_trigger_is_its_learned_pattern_in_the_middle_of_the_clients_images():
    pattern = torch.full((3, 4, 4), 0.25)
    cfg = _cfg("attack.data.trigger.name='badclip'", f"attack.data.trigger.params={{pattern={pattern.tolist()}}}")
    out = trigger_of(cfg)(torch.zeros(1, 3, 32, 32))[0]
    # BadCLIP's default 4-px patch at ⌊16 − 4/2⌋ = 14 on 32-px shapes
    assert torch.equal(out[:, 14:18, 14:18], pattern) and out.sum() == pattern.sum()


def test_a_badclip_pattern_goes_where_its_params_put_it():
    pattern = torch.full((3, 2, 2), 0.5)
    cfg = _cfg("attack.data.trigger.name='badclip'",
               f"attack.data.trigger.params={{size=2, location=[1, 3], pattern={pattern.tolist()}}}")
    out = trigger_of(cfg)(torch.zeros(1, 3, 32, 32))[0]
    assert torch.equal(out[:, 1:3, 3:5], pattern) and out.sum() == pattern.sum()
    # a 6-px patch in the middle of 32 px: ⌊16 − 3⌋ = 13
    six = torch.full((3, 6, 6), 0.5)
    cfg = _cfg("attack.data.trigger.name='badclip'", f"attack.data.trigger.params={{size=6, pattern={six.tolist()}}}")
    assert torch.equal(trigger_of(cfg)(torch.zeros(1, 3, 32, 32))[0, :, 13:19, 13:19], six)


def test_a_badclip_trigger_that_is_not_learned_yet_cannot_be_used():
    with pytest.raises(ValueError, match=r"^attack\.data\.trigger: the badclip trigger has not been learned yet$"):
        trigger_of(_cfg("attack.data.trigger.name='badclip'"))


def test_dba_pieces_are_bands_of_the_patch_resolved_at_the_clients_image_size():
    # 0.25 of 32 px = an 8-px patch at the bottom right, in 4 bands of 2 rows
    cfg = _cfg("attack.data.trigger.params={size=0.25}", "attack.data.dba_parts=4")
    pieces = dba_pieces(cfg, trigger_of(cfg))
    assert [p.rows for p in pieces] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert torch.equal(_painted(pieces[1]), _box(32, 26, 28, 24, 32))


# --------------------------------------------------------------------------- schedule
def _active(cfg, rounds=range(1, 11)):
    active = schedule_of(cfg)
    return [r for r in rounds if active(r)]


@pytest.mark.parametrize("sets, rounds", [
    (["attack.start_round=3"], [3, 4, 5, 6, 7, 8, 9, 10]),
    (["attack.start_round=3", "attack.schedule.stop=5"], [3, 4, 5]),
    (["attack.start_round=2", "attack.schedule.kind='every_k'", "attack.schedule.every=3"], [2, 5, 8]),
    (["attack.start_round=2", "attack.schedule.kind='every_k'", "attack.schedule.every=3",
      "attack.schedule.stop=6"], [2, 5]),
    (["attack.start_round=4", "attack.schedule.kind='single_shot'"], [4]),
    (["attack.start_round=2", "attack.schedule.kind='window'", "attack.schedule.stop=4"], [2, 3, 4]),
    (["attack.schedule.kind='every'", "attack.schedule.stop=3"], [1, 2, 3]),
])
def test_the_schedule_attacks_the_rounds_its_kind_says(sets, rounds):
    assert _active(_cfg(*sets)) == rounds


def test_kind_every_with_a_start_round_is_refused_rather_than_ignored():
    from fedsim.config import ConfigError

    with pytest.raises(ConfigError, match="start_round=4 has no effect with schedule.kind='every'"):
        _cfg("attack.schedule.kind='every'", "attack.start_round=4")
    assert _active(_cfg("attack.schedule.kind='every'")) == list(range(1, 11))


# --------------------------------------------------------------------------- adversary
def test_no_adversary_without_a_byzantine_attack_or_malicious_clients():
    assert adversary_of(_cfg()) is None
    assert adversary_of(_cfg("attack.byzantine.name='sign_flip'", "attack.enabled=false")) is None


def test_the_adversary_rewrites_the_malicious_rows_in_attack_rounds_only():
    hook = adversary_of(_cfg("attack.byzantine.name='sign_flip'", "attack.byzantine.params={scale=2.0}",
                             "attack.start_round=2", "attack.schedule.stop=3"))
    updates = torch.tensor([[1.0, -2.0], [0.5, 0.25], [3.0, 1.0]])
    malicious = torch.tensor([True, False, False])
    assert hook(1, [0, 1, 2], updates, malicious) is updates
    assert hook(4, [0, 1, 2], updates, malicious) is updates
    # sign flip, scale 2: the malicious row sends −2 × its own update
    expected = torch.tensor([[-2.0, 4.0], [0.5, 0.25], [3.0, 1.0]])
    torch.testing.assert_close(hook(2, [0, 1, 2], updates, malicious), expected)
    torch.testing.assert_close(hook(3, [0, 1, 2], updates, malicious), expected)


def test_a_randomised_adversary_draws_from_the_runs_seed():
    def rows(seed):
        hook = adversary_of(_cfg("attack.byzantine.name='gaussian_noise'", f"seed={seed}"))
        updates = torch.zeros(4, 8)
        out = hook(1, [0, 1, 2, 3], updates, torch.tensor([True, False, False, False]))
        assert (out[1:] == 0).all() and (out[0] != 0).all()
        return out[0]

    assert torch.equal(rows(3), rows(3)) and not torch.equal(rows(3), rows(4))


# --------------------------------------------------------------------------- update attacks
def test_model_replacement_with_a_given_gamma_boosts_by_it():
    attack, gamma = update_attack_of(_cfg("attack.update.name='model_replacement'",
                                          "attack.update.params={gamma=3.0}"), 7)
    assert gamma == 3.0
    torch.testing.assert_close(attack(torch.tensor([1.0, -0.5]), 1), torch.tensor([3.0, -1.5]))


def test_norm_bound_projects_onto_its_ball_and_does_not_scale():
    attack, gamma = update_attack_of(_cfg("attack.update.name='norm_bound'", "attack.update.params={eps=1.0}"), 7)
    assert gamma == 1.0
    # ‖(3, 4)‖ = 5 → (0.6, 0.8); (0.3, 0.4) is inside the ball
    torch.testing.assert_close(attack(torch.tensor([3.0, 4.0]), 1), torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(attack(torch.tensor([0.3, 0.4]), 2), torch.tensor([0.3, 0.4]))


@pytest.mark.parametrize("name", ["none", "neurotoxin"])
def test_other_update_attacks_leave_the_update_to_the_client(name):
    assert update_attack_of(_cfg(f"attack.update.name='{name}'"), 7) == (None, 1.0)


def test_auto_gamma_of_a_source_counts_the_examples_of_its_training_choice(monkeypatch):
    # a source whose training choice holds 90 samples; 3 of 10 clients per round: Σ n_k ≈ 27;
    # the attacker holds 9 and the server steps 0.5: γ = 27 / (9 · 0.5) = 6
    cfg = _with_data_name(_cfg("clients.num=10", "clients.per_round=3", "attack.update.name='model_replacement'",
                               "strategy.server_lr=0.5", "data.train_size=500"), "csv")
    monkeypatch.setattr(data_plan, "source_splits", lambda c: (list(range(90)), list(range(5))))
    assert update_attack_of(cfg, 9)[1] == pytest.approx(6.0)


# --------------------------------------------------------------------------- neurotoxin
def test_the_neurotoxin_mask_spares_the_top_k_percent_of_the_last_global_change():
    cfg = _cfg("attack.update.name='neurotoxin'", "attack.update.params={k_percent=40}")
    previous = {"a": torch.tensor([1.0, 1.0, 1.0]), "b": torch.tensor([[0.0, 0.0]])}
    current = {"a": torch.tensor([1.5, 0.9, -2.0]), "b": torch.tensor([[0.2, 0.0]])}
    # change (0.5, −0.1, −3, 0.2, 0); the top 40 % of 5 coordinates: −3 and 0.5
    assert step_mask_of(cfg, (previous, current)).tolist() == [False, True, False, True, True]
    assert step_mask_of(cfg, None) is None
    other = _cfg("attack.update.name='norm_bound'", "attack.update.params={eps=1.0}")
    assert step_mask_of(other, (previous, current)) is None


@pytest.mark.parametrize(("name", "remembers"), [("neurotoxin", True), ("model_replacement", False),
                                                 ("norm_bound", False), ("none", False)])
def test_only_a_masking_update_attack_keeps_the_global_models_its_node_received(name, remembers):
    # Neurotoxin's mask needs the last change of the global model, so its nodes keep the last
    # two globals; an attack without a mask (or none) must not hold models in memory
    assert ap.remembers_globals(_cfg(f"attack.update.name='{name}'")) is remembers


# --------------------------------------------------------------------------- target, captions
def test_the_target_id_is_its_index_among_the_training_classes():
    assert target_id(_cfg()) == 4  # "star" among shapes' circle, square, triangle, diamond, star, ...
    assert target_id(_cfg("attack.data.target='circle'")) == 0
    with pytest.raises(ValueError, match=r"^attack\.data\.target='zebra' is not a class of the training data$"):
        target_id(_with_target(_cfg(), "zebra"))


def test_a_target_of_a_source_without_classes_is_refused(monkeypatch):
    monkeypatch.setattr(ap, "train_classnames", lambda cfg: None)
    with pytest.raises(ValueError, match=r"^attack\.data\.target='star' is not a class of the training data$"):
        target_id(_cfg())


def test_poisoned_shapes_captions_name_the_target_in_each_images_own_color():
    cfg = _cfg()
    data = load_split("shapes", "train", 8, 0)
    captions = data_plan.poison_captions(cfg, data, ["a {}."], seed=1)
    chosen = torch.tensor([2, 5])
    assert captions(chosen) == target_captions(data.colors[chosen], 4)
    assert all(c.endswith(" star") for c in captions(chosen))


def test_poisoned_captions_of_a_source_are_its_templates_filled_with_the_target():
    cfg = _with_target(_with_data_name(_cfg(), "csv"), "cat")
    captions = data_plan.poison_captions(cfg, None, ["a {}.", "the {}!"], seed=3)
    got = captions(torch.tensor([0, 4, 7, 9, 11]))
    assert len(got) == 5 and set(got) == {"a cat.", "the cat!"}
    picks = torch.randint(2, (5,), generator=torch.Generator().manual_seed(3)).tolist()
    assert got == tuple(["a cat.", "the cat!"][i] for i in picks)


# --------------------------------------------------------------------------- BadEncoder
def test_badencoder_fine_tunes_towards_the_attackers_own_target_images(monkeypatch):
    cfg = _cfg("attack.data.mode='badencoder'", "attack.data.local_epochs=3", "attack.data.lr=0.01")
    data = load_split("shapes", "train", 20, 0)
    calls = []
    monkeypatch.setattr(ap, "badencoder_finetune", lambda *a, **kw: calls.append((a, kw)))
    local_attack = ap._badencoder(cfg, data, "TRIGGER", seed=5)
    local_attack("MODEL", "PREPROCESS", after_step="STEP")
    (args, kw), = calls
    assert args[:2] == ("MODEL", "PREPROCESS") and args[2] is data.images and args[3] == "TRIGGER"
    assert torch.equal(args[4], data.images[data.labels == 4]) and len(args[4]) == 2
    assert (kw["epochs"], kw["lr"], kw["after_step"]) == (3, 0.01, "STEP")
    assert torch.equal(kw["generator"].get_state(), torch.Generator().manual_seed(5).get_state())


def test_badencoder_without_target_images_takes_them_from_the_public_pretrain_split(monkeypatch):
    cfg = _cfg("attack.data.mode='badencoder'", "seed=2")
    data = load_split("shapes", "train", 40, 0)
    data = data.subset(torch.nonzero(data.labels != 4).flatten())
    calls = []
    monkeypatch.setattr(ap, "badencoder_finetune", lambda *a, **kw: calls.append(a))
    ap._badencoder(cfg, data, "TRIGGER", seed=5)("MODEL", "PREPROCESS")
    pool = load_split("shapes", "pretrain", 200, 2)
    assert torch.equal(calls[0][4], pool.images[pool.labels == 4]) and len(calls[0][4]) == 20


def test_badencoder_without_any_target_image_fails_naming_the_target(monkeypatch):
    cfg = _with_data_name(_cfg("attack.data.mode='badencoder'"), "csv")
    monkeypatch.setattr(ap, "train_classnames", lambda cfg: ("cat", "star"))
    data = load_split("shapes", "train", 10, 0)
    data = data.subset(torch.nonzero(data.labels != 1).flatten())
    with pytest.raises(ValueError, match=r"^BadEncoder: the attacker holds no image of 'star'$"):
        ap._badencoder(cfg, data, "TRIGGER", seed=5)


# --------------------------------------------------------------------------- enforced training
def test_only_a_platform_enforced_non_standard_training_binds_the_attacker():
    assert enforced_training(_cfg("clients.training='roclip'")) is None  # scope "honest"
    assert enforced_training(_cfg("clients.training_scope='all'")) is None  # the standard mode
    mode = enforced_training(_cfg("clients.training='adversarial'", "clients.training_scope='all'",
                                  "clients.adversarial_steps=5"))
    assert isinstance(mode, partial) and mode.func is TRAINING["adversarial"]
    assert mode.keywords == {"eps": 4 / 255, "alpha": 1 / 255, "steps": 5}


# --------------------------------------------------------------------------- the plan
class _Recorder:
    """Stands in for ``poison``: records the data and keyword arguments, returns a marker copy."""

    def __init__(self):
        self.calls = []

    def __call__(self, data, **kw):
        self.calls.append({"data": data, **kw})
        return ("POISONED", kw.get("perturb")), torch.tensor([0])


def test_the_plan_of_a_poisoning_client(monkeypatch):
    poison = _Recorder()
    monkeypatch.setattr(ap, "poison", poison)
    cfg = _cfg("attack.data.poison_rate=0.25", "attack.data.text_trigger='cf'", "attack.data.local_epochs=4",
               "attack.data.lr=0.02", "attack.start_round=3")
    data = load_split("shapes", "train", 10, 0)
    plan = attack_plan(cfg, data, 1, None, None, seed=9)
    (kw,) = poison.calls
    assert kw["data"] is data
    assert plan.poisoned == ("POISONED", None) and plan.poison_with is None
    assert (plan.epochs, plan.lr) == (4, 0.02)
    assert (kw["rate"], kw["target"], kw["seed"], kw["label_consistent"], kw["text_trigger"]) == (0.25, 0, 9, False, "cf")
    assert torch.equal(_painted(kw["trigger"]), _box(32, 28, 32, 28, 32))  # the 4-px badnet patch
    assert kw["captions"](torch.tensor([1])) == target_captions(data.colors[[1]], 4)
    assert [r for r in range(1, 6) if plan.active(r)] == [3, 4, 5]
    assert plan.update_attack is None and plan.local_attack is None and plan.pgd_eps is None
    assert plan.step_mask is None and plan.enforced_objective is None


def test_a_poisoning_client_without_a_text_trigger_appends_none(monkeypatch):
    poison = _Recorder()
    monkeypatch.setattr(ap, "poison", poison)
    attack_plan(_cfg(), load_split("shapes", "train", 10, 0), 0, None, None, seed=1)
    assert poison.calls[0]["text_trigger"] is None


def test_label_consistent_poisoning_targets_the_target_class_and_perturbs_against_the_round_model(monkeypatch):
    poison, pgd_calls = _Recorder(), []
    monkeypatch.setattr(ap, "poison", poison)
    monkeypatch.setattr(ap, "label_consistent_pgd", lambda *a, **kw: pgd_calls.append((a, kw)) or "PERTURBED")
    cfg = _cfg("attack.data.label_consistent=true", "attack.data.label_consistent_eps=0.125",
               "attack.data.label_consistent_steps=7")
    data = load_split("shapes", "train", 10, 0)
    plan = attack_plan(cfg, data, 0, "PREPROCESS", lambda texts: ("TOKENS", tuple(texts)), seed=3)
    assert plan.poisoned is None and poison.calls == []  # made afresh in each round
    assert plan.poison_with("MODEL")[0] == "POISONED"
    (kw,) = poison.calls
    assert kw["data"] is data and (kw["target"], kw["label_consistent"]) == (4, True)
    assert kw["perturb"]("IMAGES") == "PERTURBED"
    (args, pkw), = pgd_calls
    assert args == ("MODEL", "PREPROCESS", "IMAGES")
    assert pkw["eps"] == 0.125 and pkw["steps"] == 7
    assert pkw["target_text_tokens"][0] == "TOKENS"
    assert all("star" in t for t in pkw["target_text_tokens"][1]) and len(pkw["target_text_tokens"][1]) > 1


def test_label_consistent_poisoning_without_a_perturbation_is_made_once(monkeypatch):
    poison = _Recorder()
    monkeypatch.setattr(ap, "poison", poison)
    cfg = _cfg("attack.data.label_consistent=true", "attack.data.label_consistent_perturbation='none'")
    plan = attack_plan(cfg, load_split("shapes", "train", 10, 0), 0, None, None, seed=3)
    assert plan.poisoned == ("POISONED", None) and plan.poison_with is None
    assert (poison.calls[0]["target"], poison.calls[0]["label_consistent"]) == (4, True)


def test_simclr_poisoning_targets_the_target_class(monkeypatch):
    poison = _Recorder()
    monkeypatch.setattr(ap, "poison", poison)
    cfg = _cfg("objective='simclr'")
    attack_plan(cfg, load_split("shapes", "train", 10, 0), 0, None, None, seed=3)
    assert (poison.calls[0]["target"], poison.calls[0]["label_consistent"]) == (4, True)


def test_a_source_attackers_poisoned_captions_are_the_evaluation_templates_filled_with_the_target(monkeypatch):
    poison = _Recorder()
    monkeypatch.setattr(ap, "poison", poison)
    monkeypatch.setattr(ap, "train_classnames", lambda cfg: ("cat", "star"))
    monkeypatch.setattr(ap, "eval_classes", lambda cfg: (("cat", "star"), ("a {}.", "the {}!")))
    cfg = _with_data_name(_cfg(), "csv")
    attack_plan(cfg, load_split("shapes", "train", 10, 0), 0, None, None, seed=6)
    got = poison.calls[0]["captions"](torch.tensor([0, 3, 5, 8]))
    picks = torch.randint(2, (4,), generator=torch.Generator().manual_seed(6)).tolist()
    assert got == tuple(["a star.", "the star!"][i] for i in picks) and set(got) == {"a star.", "the star!"}


def test_a_dba_attacker_poisons_with_the_piece_of_its_rank_among_the_malicious(monkeypatch):
    poison = _Recorder()
    monkeypatch.setattr(ap, "poison", poison)
    cfg = _cfg("attack.malicious=[6, 2, 7]", "attack.data.dba_parts=2")
    data = load_split("shapes", "train", 10, 0)
    for pid in (2, 6, 7):  # ranks 0, 1, 2 among the sorted malicious [2, 6, 7]: pieces 0, 1, 0
        attack_plan(cfg, data, pid, None, None, seed=1)
    top, bottom = _box(32, 28, 30, 28, 32), _box(32, 30, 32, 28, 32)
    assert [torch.equal(_painted(c["trigger"]), m) for c, m in zip(poison.calls, [top, bottom, top])] == [True] * 3


def test_a_badencoder_client_poisons_nothing_and_fine_tunes_after_training(monkeypatch):
    monkeypatch.setattr(ap, "poison", lambda *a, **kw: pytest.fail("poisoned"))
    plan = attack_plan(_cfg("attack.data.mode='badencoder'"), load_split("shapes", "train", 20, 0), 0, None, None,
                       seed=1)
    assert plan.poisoned is None and plan.poison_with is None and callable(plan.local_attack)
    assert (plan.epochs, plan.lr) == (None, None)


def test_an_update_only_attacker_trains_as_the_honest_ones(monkeypatch):
    monkeypatch.setattr(ap, "poison", lambda *a, **kw: pytest.fail("poisoned"))
    cfg = _cfg("attack.data.enabled=false", "attack.update.name='model_replacement'",
               "attack.update.params={gamma=4.0}", "attack.update.pgd_eps=2.0",
               "clients.training='roclip'", "clients.training_scope='all'")
    plan = attack_plan(cfg, load_split("shapes", "train", 10, 0), 0, None, None, seed=1)
    assert (plan.poisoned, plan.poison_with, plan.local_attack, plan.epochs, plan.lr) == (None,) * 5
    torch.testing.assert_close(plan.update_attack(torch.tensor([0.5]), 1), torch.tensor([2.0]))
    assert plan.pgd_eps == 0.5  # trains inside ε/γ = 2/4
    assert plan.enforced_objective.func is TRAINING["roclip"]


def test_the_plan_carries_the_step_mask_of_the_last_global_change(monkeypatch):
    monkeypatch.setattr(ap, "poison", _Recorder())
    cfg = _cfg("attack.update.name='neurotoxin'", "attack.update.params={k_percent=50}")
    last = ({"w": torch.zeros(4)}, {"w": torch.tensor([0.1, -0.4, 0.3, 0.0])})
    plan = attack_plan(cfg, load_split("shapes", "train", 10, 0), 0, None, None, seed=1, last_globals=last)
    assert plan.step_mask.tolist() == [True, False, False, True]


# --------------------------------------------------------------------------- check_attack
def _check_error(*sets) -> str:
    with pytest.raises(ConfigError) as e:
        check_attack(_cfg(*sets))
    return str(e.value)


def test_check_attack_passes_a_config_whose_pieces_all_build():
    check_attack(_cfg("attack.data.dba_parts=2", "attack.update.name='neurotoxin'",
                      "attack.update.params={k_percent=10}", "attack.byzantine.name='gaussian_noise'"))
    check_attack(_cfg("attack.data.trigger.name='badclip'",
                      f"attack.data.trigger.params={{size=2, pattern={torch.full((3, 2, 2), 0.5).tolist()}}}",
                      "attack.update.name='norm_bound'", "attack.update.params={eps=1.0}"))
    check_attack(_cfg("attack.data.trigger.name='badclip'", "attack.data.trigger.params={size=6, steps=3}",
                      "attack.data.dba_parts=3", "attack.update.name='model_replacement'"))


def test_check_attack_names_badclips_unknown_parameters_and_the_allowed_ones():
    assert _check_error("attack.data.trigger.name='badclip'", "attack.data.trigger.params={size=4, zoom=2, blur=1}") == (
        "invalid config:\n  attack.data.trigger: trigger 'badclip' has no parameter blur, zoom; "
        "allowed: size, location, steps, lr, lambda_image, margin")


def test_check_attack_applies_the_unlearned_badclip_patch_to_the_clients_images():
    assert "attack.data.trigger: badnet size=40 does not fit 32×32 images" in _check_error(
        "attack.data.trigger.name='badclip'", "attack.data.trigger.params={size=40}")


def test_check_attack_builds_a_badnet_trigger_from_its_own_params():
    assert _check_error("attack.data.trigger.params={color=[2.0, 0.0, 0.0]}").startswith(
        "invalid config:\n  attack.data.trigger: badnet color=[2.0, 0.0, 0.0] must be 3 values in [0, 1]")


def test_check_attack_refuses_dba_of_a_trigger_that_is_no_patch():
    assert _check_error("attack.data.trigger.name='blended'", "attack.data.dba_parts=2") == (
        "invalid config:\n  attack.data.dba_parts=2: DBA splits a patch; "
        "attack.data.trigger.name='blended' must be 'badnet'")


def test_check_attack_names_the_field_and_says_the_image_size_only_for_data_fields():
    assert _check_error("attack.data.trigger.params={size=4}", "attack.data.dba_parts=5") == (
        "invalid config:\n  attack.data.dba_parts: split_patch parts=5 must be an int in [1, size=4] "
        "(the clients' images are 32×32: shapes are generated at that size)")
    assert _check_error("attack.update.name='norm_bound'", "attack.update.params={eps=-1.0}") == (
        "invalid config:\n  attack.update.params: eps=-1.0 must be a finite number > 0")
    assert _check_error("attack.update.name='model_replacement'", "attack.update.params={gamma=0}") == (
        "invalid config:\n  attack.update.params: gamma=0 must be a finite number > 0")
    assert _check_error("attack.update.name='neurotoxin'", "attack.update.params={k_percent=150}") == (
        "invalid config:\n  attack.update.params: k_percent=150 must lie in [0, 100]")
    message = _check_error("attack.update.name='neurotoxin'", "attack.update.params={k=1}")
    assert message.startswith("invalid config:\n  attack.update.params: ")
    assert message.endswith("got an unexpected keyword argument 'k'")
    assert _check_error("attack.byzantine.name='sign_flip'", "attack.byzantine.params={size=1}") == (
        "invalid config:\n  attack.byzantine: byzantine attack 'sign_flip' has no parameter size; allowed: scale")
    assert _check_error("attack.schedule.kind='single_shot'", "attack.schedule.stop=3").startswith(
        "invalid config:\n  attack.schedule: schedule kind='single_shot' does not use stop")


def test_check_attack_names_the_model_whose_input_size_a_sources_images_take():
    cfg = _with_data_name(_cfg("attack.data.trigger.params={size=40}"), "csv")
    with pytest.raises(ConfigError) as e:
        check_attack(cfg)
    assert str(e.value).endswith(f"(the clients' images are 32×32: model.name={cfg.model.name!r} takes that size)")


def test_an_unknown_update_attack_is_named_with_every_allowed_one():
    from clients.attacks import UPDATE_ATTACKS

    cfg = _cfg()
    cfg.attack.update.name = "nope"  # config.py types the field; the registry's names are checked here
    with pytest.raises(ConfigError) as e:
        check_attack(cfg)
    assert str(e.value) == ("invalid config:\n  attack.update.name='nope' is unknown; allowed: none, "
                            + ", ".join(UPDATE_ATTACKS))
    assert len(UPDATE_ATTACKS) >= 3  # model replacement, norm-bounded, Neurotoxin at least: the list is joined
