"""Update (model) poisoning by one client: maps the update Δ = w_local − w_global it would send
(a flat (d,) tensor) to the one it does send, or constrains its local training.
``UPDATE_ATTACKS`` maps a config's ``attack.update.name`` to its ``UpdateAttack``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


def model_replacement(update: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """Model replacement / boosting (Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How To
    Backdoor Federated Learning", AISTATS 2020): the attacker submits
    L = γ·(X − G) + G, i.e. the update γ·Δ. With γ = n/η (n clients averaged uniformly,
    server learning rate η) the aggregate becomes ≈ X − G, replacing the global model by the
    backdoored X; under FedAvg weighted by num-examples use ``replacement_gamma``."""
    return _check_positive(gamma, "gamma") * update


def replacement_gamma(num_examples: int, round_examples: float, server_lr: float = 1.0) -> float:
    """γ that replaces the global model under FedAvg weighted by num-examples: the attacker's
    weight in the aggregate is n_a / Σ_k n_k, so G + η·(n_a/Σ_k n_k)·γ·(X − G) = X needs
    γ = Σ_k n_k / (n_a · η)  (Bagdasaryan et al., AISTATS 2020, Eq. 3, with the paper's
    uniform weight 1/n replaced by the example-count weight). n_a = ``num_examples`` (the
    attacker's own count), Σ_k n_k = ``round_examples`` (the round's total, the attacker's
    estimate), η = ``server_lr``. As in the paper, the other clients' updates are assumed to
    cancel out (near convergence); they are added on top of X otherwise."""
    n_a = _check_positive(num_examples, "num_examples")
    return _check_positive(round_examples, "round_examples") / (n_a * _check_positive(server_lr, "server_lr"))


def norm_bound(update: torch.Tensor, *, eps: float) -> torch.Tensor:
    """Projection onto the L2 ball of radius ε: Δ · min(1, ε / ‖Δ‖₂). The "constrain" half of
    constrain-and-scale (Bagdasaryan et al., AISTATS 2020) and the projection of PGD attacks
    (Wang et al., "Attack of the Tails: Yes, You Really Can Backdoor Federated Learning",
    NeurIPS 2020): an update inside the ball passes norm-clipping defenses (Sun et al., "Can
    You Really Backdoor Federated Learning?", 2019)."""
    eps = _check_positive(eps, "eps")
    norm = update.norm()
    return update if norm <= eps else update * (eps / norm)


def project_l2(params_flat: torch.Tensor, center_flat: torch.Tensor, eps: float) -> torch.Tensor:
    """PGD step projection: the point of the L2 ball of radius ε around ``center_flat`` (the
    global model) closest to ``params_flat``. Run it after every local optimiser step
    (``fedsim.training.train_epochs(after_step=...)``) to keep the whole trajectory inside."""
    return center_flat + norm_bound(params_flat - center_flat, eps=eps)


def neurotoxin_mask(benign_update: torch.Tensor, *, k_percent: float) -> torch.Tensor:
    """Neurotoxin (Zhang et al., "Neurotoxin: Durable Backdoors in Federated Learning", ICML 2022): a boolean mask that is
    False on the ⌈k % · d⌉ coordinates of largest |benign update| and True elsewhere (the
    paper's code keeps ⌊(1 − k %)·d⌋ coordinates). Benign clients keep rewriting their top
    coordinates; a backdoor confined to the rarely-updated rest is not overwritten after the
    attack stops. The benign update is the attacker's estimate, e.g. its own clean update or
    the last change of the global model."""
    if isinstance(k_percent, bool) or not isinstance(k_percent, (int, float)) or not 0 <= k_percent <= 100:
        raise ValueError(f"k_percent={k_percent!r} must lie in [0, 100]")
    d = benign_update.numel()
    # round() first: k·d/100 that is an integer in exact arithmetic must not ceil one up.
    top = min(d, math.ceil(round(k_percent * d / 100, 9)))
    mask = torch.ones(d, dtype=torch.bool, device=benign_update.device)
    mask[benign_update.reshape(-1).abs().topk(top).indices] = False
    return mask.view(benign_update.shape)


def apply_mask(update: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the update outside ``mask``: Neurotoxin's projection of the malicious update onto
    the allowed coordinates (applied to the gradient at each local step in the paper, or to
    the final update here)."""
    if mask.shape != update.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(update.shape)}")
    return torch.where(mask, update, torch.zeros_like(update))


@dataclass(frozen=True)
class UpdateAttack:
    """An ``attack.update.name`` entry: what a malicious client does to the update it sends
    (``transform(update, params)``; None: it sends what it trained) and to its local training
    (``mask(change, params)``: a coordinate mask applied at every local step, from the last
    change of the global model its node remembers — ``remembers_globals``; None: no mask).
    ``scale(params)``: the factor the sent update is scaled by (a PGD radius is divided by it,
    so the sent update stays inside); ``resolve(params, context)``: the parameters with what
    the attacker works out itself filled in (``context``: its ``num_examples``, the round's
    expected Σ num-examples ``round_examples()``, the ``server_lr``); ``defaults``: the config's
    defaults the catalogue shows; ``reference``: the function whose docstring states the rule."""

    reference: Callable
    transform: Callable[[torch.Tensor, dict], torch.Tensor] | None = None
    mask: Callable[[torch.Tensor, dict], torch.Tensor] | None = None
    scale: Callable[[dict], float] = lambda params: 1.0
    resolve: Callable[[dict, dict], dict] = lambda params, context: params
    defaults: dict = field(default_factory=dict)

    @property
    def remembers_globals(self) -> bool:
        return self.mask is not None


def _replacement_params(params: dict, context: dict) -> dict:
    """γ = "auto" (the default): ``replacement_gamma`` from what the attacker knows."""
    params = dict(params)
    if params.get("gamma", "auto") == "auto":
        params["gamma"] = replacement_gamma(context["num_examples"], context["round_examples"](),
                                            context["server_lr"])
    return params


UPDATE_ATTACKS: dict[str, UpdateAttack] = {
    "model_replacement": UpdateAttack(
        reference=model_replacement, transform=lambda update, p: model_replacement(update, gamma=p["gamma"]),
        scale=lambda p: p["gamma"], resolve=_replacement_params, defaults={"gamma": "auto"},
    ),
    "norm_bound": UpdateAttack(reference=norm_bound, transform=lambda update, p: norm_bound(update, **p)),
    "neurotoxin": UpdateAttack(reference=neurotoxin_mask, mask=lambda change, p: neurotoxin_mask(change, **p)),
}
