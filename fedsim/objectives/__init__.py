"""Contrastive objectives beyond CLIP's InfoNCE on the pairs as they are: the honest clients'
robust local training modes (``TRAINING``, chosen by ``clients.training``), CleanCLIP's
server-side fine-tuning, and SimCLR's NT-Xent (``simclr``: every client's training mode when
the top-level ``objective = "simclr"``).

A training mode is a factory ``mode(model, images, captions, *, tokenizer, preprocess,
generator, epoch_offset, **params) -> batch_loss`` called once per round with the round's
global model loaded; ``batch_loss(model, idx, epoch)`` is what
``fedsim.training.train_epochs`` minimises. ``epoch_offset``: (round − 1) · local epochs, the
local epochs before this round on the run's clock (for cadences counted over the run)."""

from __future__ import annotations

import torch

from fedsim.models import Preprocess, tokenize
from fedsim.objectives.adversarial import adversarial, pgd_images
from fedsim.objectives.augment import (
    augment_images,
    autoaugment_images,
    eda,
    image_views,
)
from fedsim.objectives.cleanclip import (
    cleanclip_finetune,
    cleanclip_loss,
    recompute_batchnorm,
)
from fedsim.objectives.family import OBJECTIVES, Objective
from fedsim.objectives.roclip import nearest_captions, roclip
from fedsim.objectives.simclr import nt_xent, simclr
from fedsim.training import BatchLoss, pairs_loss


def standard(
    model: torch.nn.Module,
    images: torch.Tensor,
    captions: tuple[str, ...],
    *,
    tokenizer,
    preprocess: Preprocess,
    generator: torch.Generator,
    epoch_offset: int,
) -> BatchLoss:
    """CLIP's symmetric InfoNCE on the client's pairs as they are (Radford et al., ICML 2021)."""
    return pairs_loss(images, tokenize(tokenizer, captions), preprocess)


TRAINING = {
    "standard": standard,
    "roclip": roclip,
    "adversarial": adversarial,
}

# The built-in modes' parameters are the config's ``clients.<mode>_*`` fields: mode → {factory
# keyword: ClientsConfig field}. A mode without an entry here takes ``clients.training_params``.
TRAINING_FIELDS: dict[str, dict[str, str]] = {
    "roclip": {"every": "roclip_every", "pool_size": "roclip_pool"},
    "adversarial": {"eps": "adversarial_eps", "alpha": "adversarial_alpha", "steps": "adversarial_steps"},
}



def training_kwargs(clients) -> dict:
    """The keyword parameters of ``clients.training`` from the clients' config section: its
    ``clients.<mode>_*`` fields (``TRAINING_FIELDS``) and ``clients.training_params``."""
    fields = TRAINING_FIELDS.get(clients.training, {})
    return {**{k: getattr(clients, f) for k, f in fields.items()}, **clients.training_params}


# What every mode is called with (``fedsim.app``); the rest of its keywords are its parameters.
TRAINING_INPUTS = ("model", "images", "captions", "tokenizer", "preprocess", "generator", "epoch_offset")

__all__ = [
    "OBJECTIVES",
    "Objective",
    "TRAINING",
    "TRAINING_FIELDS",
    "TRAINING_INPUTS",
    "training_kwargs",
    "adversarial",
    "augment_images",
    "autoaugment_images",
    "cleanclip_finetune",
    "cleanclip_loss",
    "eda",
    "image_views",
    "nearest_captions",
    "nt_xent",
    "pgd_images",
    "recompute_batchnorm",
    "roclip",
    "simclr",
    "standard",
]
