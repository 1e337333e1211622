"""Constraints a malicious client promises hold on the update it sends — and on every local
step that produced it: PGD's L2 ball and Neurotoxin's mask around BadEncoder fine-tuning,
model replacement's γ under FedAvg weighted by num-examples, and its PGD radius ε/γ."""

import pytest
import torch

from clients.attacks import model_replacement
from clients.honest import LocalSetup
from fedsim.app import build_client
from fedsim.config import load_config
from fedsim.records import flatten, float_state
from strategies.fedavg import fedavg


def _cfg(*sets):
    return load_config(None, ["data.train_size=200", "clients.num=4", "clients.per_round=4",
                              "attack.malicious=[0, 2]", "attack.data.local_epochs=1", *sets])


def _fit_spying(client, check):
    """Fit one round; ``check(update)`` on the model's update before every forward pass (so
    after every optimiser step and its projection) and on the update that is sent."""
    global_state = float_state(client.model)
    center = flatten(global_state)
    seen = []

    live = client.model.visual

    def spy(module, args):
        # BadEncoder's frozen copy inherits the hook; its forwards come mid-step (after the
        # live encoder's forward): only the live one counts.
        if module is live:
            seen.append(check(flatten(float_state(client.model)) - center))

    handle = client.model.visual.register_forward_pre_hook(spy)
    try:
        state, _ = client.fit(global_state, LocalSetup(1, 1e-3, 32, 0.1, seed=0), server_round=1)
    finally:
        handle.remove()
    return seen, check(flatten(state) - center)


def test_pgd_holds_after_every_badencoder_step():
    eps = 0.05
    cfg = _cfg("attack.data.mode='badencoder'", "attack.data.local_epochs=2", "attack.data.lr=1e-2", f"attack.update.pgd_eps={eps}")
    client = build_client(cfg, cfg.model_dump_json(), 0)
    seen, sent = _fit_spying(client, lambda u: u.norm().item())
    # float32 rounding of global + δ adds ~1e-4 to the norm of the projected update
    assert len(seen) >= 4 and max(seen) <= eps * 1.01 and sent <= eps * 1.01
    assert sent > eps / 2  # the attack did move: the ball is binding, not trivially satisfied


def test_neurotoxin_mask_holds_after_every_badencoder_step():
    cfg = _cfg("attack.data.mode='badencoder'", "attack.data.local_epochs=2", "attack.data.lr=1e-2")
    client = build_client(cfg, cfg.model_dump_json(), 0)
    d = flatten(float_state(client.model)).numel()
    client.step_mask = torch.arange(d) % 2 == 0
    seen, sent = _fit_spying(client, lambda u: (u[~client.step_mask] != 0).sum().item())
    assert len(seen) >= 4 and max(seen) == 0 and sent == 0


def test_auto_gamma_replaces_the_model_under_example_weighted_fedavg():
    from clients.attacks import replacement_gamma

    g = torch.Generator().manual_seed(0)
    d, eta = 30, 0.5
    global_model, backdoored = torch.randn(d, generator=g), torch.randn(d, generator=g)
    n = torch.tensor([37.0, 120.0, 55.0, 9.0])  # unequal num-examples; the attacker is last
    honest = torch.randn(3, d, generator=g, dtype=torch.float64).float()
    gamma = replacement_gamma(9, float(n.sum()), eta)
    assert gamma == pytest.approx(221 / (9 * 0.5))
    sent = model_replacement(backdoored - global_model, gamma=gamma)

    def new_global(h):
        return global_model + eta * fedavg(torch.cat([h, sent[None]]), weights=n).aggregate

    # Closed form: G + η·(Σ_h n_h Δ_h/Σn + n_a·γ·(X − G)/Σn) = X + η·Σ_h n_h Δ_h / Σn
    torch.testing.assert_close(new_global(honest), backdoored + eta * (n[:3] @ honest) / n.sum())
    # honest updates that cancel out (the paper's assumption): the global model becomes X
    cancelling = honest - ((n[:3] @ honest) / n[:3].sum())
    torch.testing.assert_close(new_global(cancelling), backdoored, atol=1e-5, rtol=0)
    # γ = n/η (clients counted, not examples) misses X by a factor n_a·n/Σn
    plain = global_model + eta * fedavg(
        torch.cat([cancelling, model_replacement(backdoored - global_model, gamma=4 / eta)[None]]), weights=n
    ).aggregate
    assert (plain - backdoored).norm() > 0.5 * (backdoored - global_model).norm()


def test_auto_gamma_from_the_config_and_pgd_radius_eps_over_gamma():
    from clients.attacks import replacement_gamma

    eps = 0.05
    cfg = _cfg("attack.update.name='model_replacement'", "attack.data.lr=1e-2",
               f"attack.update.pgd_eps={eps}", "strategy.server_lr=0.5")
    client = build_client(cfg, cfg.model_dump_json(), 0)
    gamma = replacement_gamma(len(client.data), 4 * 200 / 4, 0.5)
    assert client.pgd_eps == pytest.approx(eps / gamma)
    assert gamma > 1
    global_state = float_state(client.model)
    state, metrics = client.fit(global_state, LocalSetup(1, 1e-3, 32, 0.1, seed=0), server_round=1)
    sent = flatten(state) - flatten(global_state)
    assert metrics["num-examples"] == len(client.data)
    assert eps / 2 < sent.norm().item() <= eps * 1.01
    explicit = _cfg("attack.update.name='model_replacement'", "attack.update.params={gamma=3.0}",
                    f"attack.update.pgd_eps={eps}")
    assert build_client(explicit, explicit.model_dump_json(), 0).pgd_eps == pytest.approx(eps / 3)
