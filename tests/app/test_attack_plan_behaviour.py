"""The attack plan's automatic choices (``fedsim.app.attack_plan``): model replacement's
γ = "auto" boosts by the round's expected Σ num-examples, over the clients *sampled* in a round."""

import pytest
import torch

from fedsim.app import build_client
from fedsim.app.attack_plan import update_attack_of
from fedsim.config import load_config


def _cfg(*sets):
    # 3 of 10 clients per round: a boost by the clients.num = 10 clients would be 10/3 too large
    return load_config(None, ["data.train_size=200", "clients.num=10", "clients.per_round=3",
                              "attack.malicious=[0]", "attack.update.name='model_replacement'",
                              "strategy.server_lr=0.5", *sets])


def test_auto_gamma_boosts_by_the_clients_of_a_round_not_all_clients():
    # Σ n_k of a round ≈ per_round · train_size / num = 3 · 200 / 10 = 60 examples; the
    # attacker holds n_a = 20 and the server steps η = 0.5: γ = 60 / (20 · 0.5) = 6
    attack, gamma = update_attack_of(_cfg(), 20)
    assert gamma == pytest.approx(6.0)
    update = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(attack(update, 1), 6.0 * update)
    # with every client in every round the boost is by all of them: 10 · 20 / (20 · 0.5) = 20
    assert update_attack_of(_cfg("clients.per_round=10"), 20)[1] == pytest.approx(20.0)


def test_the_attacker_trains_inside_eps_over_the_auto_gamma():
    cfg = _cfg("attack.update.pgd_eps=0.3")
    client = build_client(cfg, cfg.model_dump_json(), 0)
    assert len(client.data) == 20  # 200 samples over 10 clients
    assert client.pgd_eps == pytest.approx(0.3 / 6.0)
