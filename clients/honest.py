"""The honest client: load the global model, train E local epochs of symmetric InfoNCE on
its own image–caption pairs — or of a robust training mode (``fedsim.objectives.TRAINING``) —,
return the new weights and its metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedsim.data import ImageCaptions
from fedsim.models import tokenize
from fedsim.records import float_state, load_float_state
from fedsim.training import train_epochs


@dataclass
class LocalSetup:
    """What one client trains with this round (the server sends lr and epochs)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    seed: int


class HonestClient:
    """``objective``: a training mode of ``fedsim.objectives.TRAINING`` with its parameters
    bound; None trains on the pairs as they are."""

    def __init__(self, model, preprocess, tokenizer, data: ImageCaptions, partition_id: int,
                 objective: Callable | None = None):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.data, self.partition_id, self.objective = data, partition_id, objective

    def local_data(self, server_round: int) -> ImageCaptions:
        return self.data

    def fit(self, global_state, setup: LocalSetup, server_round: int):
        """→ (new float state, metrics dict)."""
        load_float_state(self.model, global_state)
        data = self.local_data(server_round)
        loss = self.train(data, setup, server_round)
        return float_state(self.model), {
            "num-examples": len(data),
            "partition-id": self.partition_id,
            "train-loss": loss,
        }

    def train(self, data: ImageCaptions, setup: LocalSetup, server_round: int, after_step=None) -> float:
        generator = torch.Generator().manual_seed(setup.seed)
        batch_loss = None if self.objective is None else self.objective(
            self.model, data.images, data.captions, tokenizer=self.tokenizer,
            preprocess=self.preprocess, generator=generator,
            epoch_offset=(server_round - 1) * setup.epochs,
        )
        return train_epochs(
            self.model,
            data.images,
            tokenize(self.tokenizer, data.captions),
            preprocess=self.preprocess,
            epochs=setup.epochs,
            lr=setup.lr,
            batch_size=setup.batch_size,
            weight_decay=setup.weight_decay,
            generator=generator,
            after_step=after_step,
            batch_loss=batch_loss,
        )
