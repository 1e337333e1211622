"""The malicious client: an honest client plus attack pieces chosen by the config.

Data poisoning replaces its local data with a poisoned copy (fixed, or made from the round's
global model) while the schedule is active and
lets the attacker use its own local epochs and learning rate, optionally projected onto an
L2 ball around the global model after every step (PGD); a local attack (BadEncoder)
further changes the locally trained model, under the same per-step projection; an update attack maps the update it would send
(new − global) to the one it does send. Its local training is CLIP's InfoNCE on its pairs
(``objective``), unless a platform-enforced trainer imposes the clients' robust mode
(``enforced_objective``, ``clients.training_scope = "all"``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from clients.attacks.update_attacks import project_l2
from clients.honest import HonestClient, LocalSetup
from fedsim.data import ImageCaptions
from fedsim.records import flatten, float_state, load_float_state, unflatten


class MaliciousClient(HonestClient):
    def __init__(
        self,
        model,
        preprocess,
        tokenizer,
        data: ImageCaptions,
        partition_id: int,
        *,
        active: Callable[[int], bool],
        poisoned: ImageCaptions | None = None,
        poison_with: Callable[[torch.nn.Module], ImageCaptions] | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        update_attack: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        local_attack: Callable[[torch.nn.Module, Callable, Callable | None], None] | None = None,
        pgd_eps: float | None = None,
        step_mask: torch.Tensor | None = None,
        objective: Callable | None = None,
        enforced_objective: Callable | None = None,
    ):
        # A platform-enforced trainer (``clients.training_scope = "all"``) runs its training
        # mode on whatever data the client holds, the poisoned copy included.
        super().__init__(model, preprocess, tokenizer, data, partition_id,
                         objective=enforced_objective if enforced_objective is not None else objective)
        self.active, self.poisoned, self.poison_with = active, poisoned, poison_with
        self.epochs, self.lr, self.update_attack = epochs, lr, update_attack
        self.local_attack, self.pgd_eps, self.step_mask = local_attack, pgd_eps, step_mask
        self._center: torch.Tensor | None = None

    def local_data(self, server_round: int) -> ImageCaptions:
        """The poisoned data while the schedule is active: fixed (``poisoned``) or made from the
        global model of the round, which ``fit`` has loaded by now (``poison_with``, e.g.
        label-consistent poisoning with adversarial perturbations)."""
        if not self.active(server_round):
            return self.data
        if self.poison_with is not None:
            return self.poison_with(self.model)
        return self.poisoned if self.poisoned is not None else self.data

    def _project(self, model) -> None:
        """After every local step: Neurotoxin (Zhang et al., ICML 2022) resets the coordinates
        outside ``step_mask`` to the global model's, so the update lives only where the mask
        allows; PGD (Sun et al. 2019; Wang et al., NeurIPS 2020) then projects the model onto
        the L2 ball of radius ``pgd_eps`` around the global model."""
        state = float_state(model)
        flat = flatten(state)
        projected = flat
        if self.step_mask is not None:
            projected = torch.where(self.step_mask, projected, self._center)
        if self.pgd_eps is not None:
            projected = project_l2(projected, self._center, self.pgd_eps)
        if not torch.equal(projected, flat):
            load_float_state(model, unflatten(projected, state))

    def train(self, data: ImageCaptions, setup: LocalSetup, server_round: int, after_step=None) -> float:
        if (self.pgd_eps is not None or self.step_mask is not None) and self.active(server_round):
            after_step = self._project
        loss = super().train(data, setup, server_round, after_step)
        if self.local_attack is not None and self.active(server_round):
            # The same projection after every step of the local attack (BadEncoder): the sent
            # update must satisfy the constraints whichever local optimiser produced it.
            self.local_attack(self.model, self.preprocess, after_step)
        return loss

    def fit(self, global_state, setup: LocalSetup, server_round: int):
        if not self.active(server_round):
            return super().fit(global_state, setup, server_round)
        setup = replace(setup, epochs=self.epochs or setup.epochs, lr=self.lr or setup.lr)
        self._center = flatten(global_state)
        state, metrics = super().fit(global_state, setup, server_round)
        if self.update_attack is not None:
            g = flatten(global_state)
            state = unflatten(g + self.update_attack(flatten(state) - g, server_round), state)
        return state, metrics
