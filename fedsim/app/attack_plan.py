"""The attack plan: what a malicious client is made of, from ``cfg.attack``, and the check of
that config section (each piece built once on a probe).

A malicious client is an honest client plus these pieces (``clients.malicious``): a schedule, a
data trigger and the poisoned copy of its data (or the poisoning made afresh from the round's
global model), a local attack run after training (BadEncoder), an update attack on what it
sends, PGD's ball and Neurotoxin's mask, and the training mode a platform-enforced trainer
imposes on it (``clients.training_scope = "all"``). The omniscient Byzantine attacks are the one
server-side piece (``adversary_of``): a simulation device that sees the round's honest updates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from clients.attacks import (
    LEARNED_TRIGGERS,
    PATTERN,
    UPDATE_ATTACKS,
    apply_mask,
    badencoder_finetune,
    label_consistent_pgd,
    make_adversary,
    make_schedule,
    make_trigger,
    poison,
    split_patch,
)
from fedsim.app.data_plan import (
    eval_classes,
    image_origin,
    image_size,
    poison_captions,
    surrogate_pool,
    train_classnames,
    train_count,
)
from fedsim.config import Config, ConfigError
from fedsim.data import ImageCaptions
from fedsim.objectives import OBJECTIVES, TRAINING, training_kwargs
from fedsim.records import flatten

def trigger_of(cfg: Config):
    """The trigger the attackers apply: an image trigger (``TRIGGERS``), or a learned one
    (``LEARNED_TRIGGERS``) once its pixels are in the config (``resolve_learned_trigger``)."""
    t = cfg.attack.data.trigger
    if t.name in LEARNED_TRIGGERS:
        if PATTERN not in t.params:
            raise ValueError(f"attack.data.trigger: the {t.name} trigger has not been learned yet")
        return learned_trigger(cfg)
    return make_trigger(t.name, **t.params)


def learned_trigger(cfg: Config, *, geometry_only: bool = False):
    """The learned trigger of the config at the clients' image size: with its learned pixels,
    or (``geometry_only``) its shape and place alone, as the config checks apply it."""
    t = cfg.attack.data.trigger
    params = {k: v for k, v in t.params.items() if k != PATTERN}
    pattern = None if geometry_only else t.params.get(PATTERN)
    return LEARNED_TRIGGERS[t.name].make(params, image_size(cfg), pattern)


def dba_pieces(cfg: Config, trigger) -> list:
    """DBA's ``attack.data.dba_parts`` pieces of the patch ``trigger``, cut at the clients'
    image size (``fedsim.app.data_plan.image_size``: a fractional patch size is resolved there)."""
    side = image_size(cfg)
    return split_patch(trigger.resolve(side, side), cfg.attack.data.dba_parts)


def schedule_of(cfg: Config):
    a = cfg.attack
    kwargs = {"start": a.start_round, "stop": a.schedule.stop}
    if a.schedule.kind == "every_k":
        kwargs["every"] = a.schedule.every
    if a.schedule.kind == "every":
        kwargs.pop("start")
    return make_schedule(a.schedule.kind, **kwargs)


def adversary_of(cfg: Config):
    """The server-side hook of an omniscient Byzantine attack, active on the schedule."""
    b = cfg.attack.byzantine
    if b.name == "none" or not cfg.malicious:
        return None
    adversary, active = make_adversary(b.name, seed=cfg.seed, **b.params), schedule_of(cfg)

    def hook(server_round, pids, updates, malicious):
        return adversary(server_round, pids, updates, malicious) if active(server_round) else updates

    return hook


def update_attack_of(cfg: Config, num_examples: int):
    """The update attack of ``attack.update`` (``UPDATE_ATTACKS``) as ``(update, round) ->
    update`` (None where it does not rewrite the update), and the factor γ by which it scales
    the update (1 but for model replacement). What the attacker works out itself: its own
    num-examples, strategy.server_lr and the expected Σ num-examples of a round,
    clients.per_round · data.train_size / clients.num (per_round clients drawn uniformly, each
    holding train_size / num examples on average; for a source, train_size is the size of its
    training choice) — model replacement's γ = "auto" assumes FedAvg weighted by num-examples
    and one attacker per round."""
    u = cfg.attack.update
    attack = UPDATE_ATTACKS.get(u.name)
    if attack is None:
        return None, 1.0
    params = attack.resolve(dict(u.params), {
        "num_examples": num_examples, "server_lr": cfg.strategy.server_lr,
        "round_examples": lambda: cfg.clients.per_round * train_count(cfg) / cfg.clients.num,
    })
    transform = None if attack.transform is None else (lambda update, r: attack.transform(update, params))
    return transform, attack.scale(params)


def remembers_globals(cfg: Config) -> bool:
    """The malicious nodes keep the global models they received (the update attack masks from
    their change: ``UpdateAttack.remembers_globals``)."""
    attack = UPDATE_ATTACKS.get(cfg.attack.update.name)
    return attack is not None and attack.remembers_globals


def step_mask_of(cfg: Config, last_globals: tuple[dict, dict] | None) -> torch.Tensor | None:
    """The update attack's mask for this round's local steps (Neurotoxin: coordinates outside
    the top-k % of the last change of the global model, the attacker's estimate of where benign
    clients write, Zhang et al., ICML 2022), from the (previous, current) global models its node
    remembers. None for an attack without a mask, or before the node has seen two global models."""
    attack = UPDATE_ATTACKS.get(cfg.attack.update.name)
    if attack is None or attack.mask is None or last_globals is None:
        return None
    previous, current = last_globals
    return attack.mask(flatten(current) - flatten(previous), cfg.attack.update.params)


def target_id(cfg: Config) -> int:
    """The label id of the attack target in the training data (which must have that class)."""
    classnames = train_classnames(cfg)
    if classnames is None or cfg.attack.data.target not in classnames:
        raise ValueError(f"attack.data.target={cfg.attack.data.target!r} is not a class of the training data")
    return classnames.index(cfg.attack.data.target)


def _badencoder(cfg: Config, data, trigger, seed: int):
    """After clean local training, BadEncoder fine-tuning of the image tower: triggered images
    → the attacker's own target-class images (Jia et al., S&P 2022)."""
    target = target_id(cfg)
    reference = data.images[data.labels == target]
    pool = surrogate_pool(cfg) if len(reference) == 0 else None
    if pool is not None:
        # no target image of its own: a public surrogate (shapes' pretrain stream)
        reference = pool.images[pool.labels == target]
    if len(reference) == 0:
        raise ValueError(f"BadEncoder: the attacker holds no image of {cfg.attack.data.target!r}")

    def local_attack(model, preprocess, after_step=None):
        badencoder_finetune(
            model, preprocess, data.images, trigger, reference,
            epochs=cfg.attack.data.local_epochs, lr=cfg.attack.data.lr,
            generator=torch.Generator().manual_seed(seed), after_step=after_step,
        )

    return local_attack


def enforced_training(cfg: Config) -> Callable | None:
    """The training mode a platform-enforced trainer imposes on a malicious client
    (``clients.training_scope = "all"``: ``clients.training`` with its parameters bound, which
    it then runs on its poisoned data — the RoCLIP paper's threat model); None where the
    attacker trains as it likes (scope "honest") or the mode is the standard one."""
    c = cfg.clients
    if c.training_scope != "all" or c.training == "standard":
        return None
    return partial(TRAINING[c.training], **training_kwargs(c))


@dataclass
class AttackPlan:
    """The pieces ``MaliciousClient`` takes besides the honest client's (its keyword arguments)."""

    active: Callable[[int], bool]
    poisoned: ImageCaptions | None = None
    poison_with: Callable[[torch.nn.Module], ImageCaptions] | None = None
    epochs: int | None = None
    lr: float | None = None
    update_attack: Callable[[torch.Tensor, int], torch.Tensor] | None = None
    local_attack: Callable | None = None
    pgd_eps: float | None = None
    step_mask: torch.Tensor | None = None
    enforced_objective: Callable | None = None


def attack_plan(cfg: Config, data, partition_id: int, preprocess, tokenizer, *, seed: int,
                last_globals: tuple[dict, dict] | None = None) -> AttackPlan:
    """The attack plan of malicious client ``partition_id`` holding ``data``; ``seed`` draws its
    poisoned samples and BadEncoder's batches."""
    a = cfg.attack
    trigger = trigger_of(cfg)
    if a.data.dba_parts:
        # DBA (Xie et al., ICLR 2020): attacker k poisons with piece k mod parts of the patch.
        trigger = dba_pieces(cfg, trigger)[cfg.malicious.index(partition_id) % a.data.dba_parts]
    poisoned, poison_with, local_attack = None, None, None
    poisoning = a.data.enabled and a.data.mode == "poison"
    if poisoning:
        templates = eval_classes(cfg)[1]
        # SSL-Backdoor (Saha et al., CVPR 2022), SimCLR mode's poisoning: no captions, so the
        # trigger goes on ⌊poison_rate · n_target⌋ of the attacker's target-class images —
        # label-consistent poisoning without the perturbation.
        target_only = a.data.label_consistent or OBJECTIVES[cfg.objective].poisons_target_class
        kwargs = dict(
            trigger=trigger,
            rate=a.data.poison_rate,
            # read by target-class poisoning only (a caption-only source has no label ids)
            target=target_id(cfg) if target_only else 0,
            seed=seed,
            label_consistent=target_only,
            text_trigger=a.data.text_trigger or None,
            captions=poison_captions(cfg, data, templates, seed),
        )
        if a.data.label_consistent and a.data.label_consistent_perturbation == "pgd":
            # Turner et al.: the perturbation is computed against the model the attacker holds,
            # the global model of the round, so the poisoned copy is made afresh in every round.
            tokens = tokenizer([t.format(a.data.target) for t in templates])

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
        local_attack = _badencoder(cfg, data, trigger, seed)
    update_attack, gamma = update_attack_of(cfg, len(data))
    return AttackPlan(
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
        step_mask=step_mask_of(cfg, last_globals),
        enforced_objective=enforced_training(cfg),
    )


def check_attack(cfg: Config) -> None:
    """Trigger, schedule, update and Byzantine attack names and parameters, checked by
    building each piece once; the trigger (BadCLIP's patch geometry before it is learned) and
    DBA's pieces are also applied to one image of the clients' size, so a patch larger than
    the images fails here."""
    a = cfg.attack
    t = a.data.trigger
    checks = [("attack.schedule", lambda: schedule_of(cfg))]
    learned = LEARNED_TRIGGERS.get(t.name)
    if learned is not None:
        unknown = sorted(set(t.params) - set(learned.defaults) - {PATTERN})
        if unknown:
            raise ConfigError(f"invalid config:\n  attack.data.trigger: trigger {t.name!r} has no parameter "
                              f"{', '.join(unknown)}; allowed: {', '.join(learned.defaults)}")
    if learned is not None and PATTERN not in t.params:
        def trigger():
            return learned_trigger(cfg, geometry_only=True)
    else:
        def trigger():
            return trigger_of(cfg)
    side = image_size(cfg)
    probe = torch.zeros(1, 3, side, side)
    checks.append(("attack.data.trigger", lambda: trigger()(probe)))
    if a.data.dba_parts:
        if t.name != "badnet" and not (learned is not None and learned.patch):
            raise ConfigError(f"invalid config:\n  attack.data.dba_parts={a.data.dba_parts}: DBA splits a "
                              f"patch; attack.data.trigger.name={t.name!r} must be 'badnet'")
        checks.append(("attack.data.dba_parts", lambda: [piece(probe) for piece in dba_pieces(cfg, trigger())]))
    update = UPDATE_ATTACKS.get(a.update.name)
    if a.update.name != "none" and update is None:
        raise ConfigError(f"invalid config:\n  attack.update.name={a.update.name!r} is unknown; "
                          f"allowed: none, {', '.join(UPDATE_ATTACKS)}")
    probe_update = torch.randn(64, generator=torch.Generator().manual_seed(0))
    if update is not None and update.transform is not None:
        checks.append(("attack.update.params", lambda: update_attack_of(cfg, 1)[0](probe_update, 1)))
    if update is not None and update.mask is not None:
        checks.append(("attack.update.params",
                       lambda: apply_mask(probe_update, update.mask(probe_update, a.update.params))))
    if a.byzantine.name != "none":
        checks.append(("attack.byzantine", lambda: make_adversary(a.byzantine.name, seed=cfg.seed, **a.byzantine.params)))
    origin = image_origin(cfg)
    for field, build in checks:
        try:
            build()
        except (ValueError, TypeError) as e:
            where = f" (the clients' images are {side}×{side}: {origin})" if field.startswith("attack.data") else ""
            raise ConfigError(f"invalid config:\n  {field}: {e}{where}") from None
