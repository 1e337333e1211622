"""Attack pieces a malicious client (or the server-side adversary hook) is composed of: image
triggers, caption attacks, data poisoning, update attacks, Byzantine attacks, schedules and
contrastive-specific attacks. One factory per family: ``make_trigger``, ``make_adversary``,
``make_schedule``; learned triggers (BadCLIP) are ``LEARNED_TRIGGERS`` entries."""

from clients.attacks.byzantine import BYZANTINE, ByzantineAdversary, make_adversary
from clients.attacks.captions import TEXT_TRIGGER, add_text_trigger, templated_captions
from clients.attacks.contrastive import (
    badclip_optimize_patch,
    badencoder_finetune,
    label_consistent_pgd,
)
from clients.attacks.learned import LEARNED_TRIGGERS, PATTERN, LearnedTrigger
from clients.attacks.poison import poison
from clients.attacks.schedule import SCHEDULES, Schedule, make_schedule
from clients.attacks.triggers import TRIGGERS, BadNetPatch, make_trigger, split_patch
from clients.attacks.update_attacks import (
    UPDATE_ATTACKS,
    UpdateAttack,
    apply_mask,
    model_replacement,
    neurotoxin_mask,
    norm_bound,
    project_l2,
    replacement_gamma,
)

__all__ = [
    "BYZANTINE",
    "LEARNED_TRIGGERS",
    "PATTERN",
    "SCHEDULES",
    "TEXT_TRIGGER",
    "TRIGGERS",
    "UPDATE_ATTACKS",
    "BadNetPatch",
    "ByzantineAdversary",
    "LearnedTrigger",
    "Schedule",
    "UpdateAttack",
    "add_text_trigger",
    "apply_mask",
    "badclip_optimize_patch",
    "badencoder_finetune",
    "label_consistent_pgd",
    "make_adversary",
    "make_schedule",
    "make_trigger",
    "model_replacement",
    "neurotoxin_mask",
    "norm_bound",
    "poison",
    "project_l2",
    "replacement_gamma",
    "split_patch",
    "templated_captions",
]
