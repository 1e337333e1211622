"""EmInspector: the vote on probe-embedding similarities, checked by hand and on a linear
"model" whose backdoored versions map every probe input to one direction."""

import math

import pytest
import torch
import torch.nn.functional as F

from strategies import RULES, eminspector
from strategies.inputs import inputs_of
from strategies.robust_strategy import RobustStrategy


def test_a_hand_computed_vote():
    # one probe input, 3-d embeddings = the update itself: the two colluders (rows 0 and 3)
    # embed it alike, the three honest clients orthogonally to one another
    c = [1 / math.sqrt(3)] * 3
    updates = torch.tensor([c, [1.0, 0, 0], [0, 1.0, 0], c, [0, 0, 1.0]])
    # S_honest = 1 + 2/√3 ≈ 2.155, S_colluder = 2 + √3 ≈ 3.732, mean ≈ 2.786:
    # colluders vote +1, honest −1; score > 0 is flagged
    result = eminspector(updates, embed=lambda u: u.view(1, 3))
    assert result.info["malicious_score"] == [1, -1, -1, 1, -1]
    assert result.accepted.tolist() == [1, 2, 4]
    torch.testing.assert_close(result.aggregate, torch.full((3,), 1 / 3))


def test_eminspector_votes_per_probe_on_row_normalised_embeddings():
    """4 clients, 2 probe inputs, 2-D embeddings of unequal norms (the update is the
    embedding). S_i(t) = Σ_j cos(e_i(t), e_j(t)) from explicit cosines; vote +1 where
    S_i(t) ≥ the probe's mean over clients; flagged when the votes sum above 0."""
    from strategies.eminspector import eminspector

    E = [[(2, 1), (0, -2)], [(-1, -3), (-3, -3)], [(-2, 2), (1, 3)], [(0, 1), (3, 2)]]

    def cos(a, b):
        return (a[0] * b[0] + a[1] * b[1]) / (math.hypot(*a) * math.hypot(*b))

    scores = [0] * 4
    for t in range(2):
        S = [sum(cos(E[i][t], E[j][t]) for j in range(4)) for i in range(4)]
        mean = sum(S) / 4
        for i in range(4):
            scores[i] += 1 if S[i] >= mean else -1
    assert scores == [2, -2, 0, 2]  # client 2 scores exactly 0: accepted
    updates = torch.tensor(E, dtype=torch.float32).reshape(4, 4)
    result = eminspector(updates, embed=lambda u: u.view(2, 2))
    assert result.accepted.tolist() == [1, 2]
    assert result.info["malicious_score"] == scores
    torch.testing.assert_close(result.aggregate, updates[[1, 2]].mean(0))


def _linear(seed=0, k=16, dim=128, m=5):
    """A linear "model" W (dim × k) on m random probe inputs, its global weights, and the
    update of a backdoored model W_b = 5 v wᵀ, which maps every probe onto ±v."""
    g = torch.Generator().manual_seed(seed)
    probes = torch.randn(m, k, generator=g)
    w_global = torch.randn(dim, k, generator=g)

    def embed(update):
        return F.normalize(probes @ (w_global + update.view(dim, k)).t(), dim=-1)

    w_b = torch.outer(torch.randn(dim, generator=g), torch.randn(k, generator=g)) * 5
    backdoored = [(w_b - w_global + 0.01 * torch.randn(dim, k, generator=g)).flatten() for _ in range(2)]
    return g, embed, backdoored


def test_colluding_backdoored_models_are_flagged_and_diverse_honest_ones_kept():
    # the paper's premise: honest local training moves each model far, each its own way
    g, embed, (b0, b1) = _linear()
    honest = [5 * torch.randn(128 * 16, generator=g) for _ in range(4)]
    updates = torch.stack([honest[0], b0, honest[1], honest[2], b1, honest[3]])
    result = eminspector(updates, embed=embed)
    assert result.accepted.tolist() == [0, 2, 3, 5]
    assert result.info["malicious_score"][1] == result.info["malicious_score"][4] == 5  # every probe
    torch.testing.assert_close(result.aggregate, updates[[0, 2, 3, 5]].mean(0))


def test_honest_models_near_the_global_one_are_flagged_instead():
    # outside the premise the vote inverts (as documented): near-identical honest models
    # embed alike and outvote the colluders
    g, embed, (b0, b1) = _linear()
    honest = [0.01 * torch.randn(128 * 16, generator=g) for _ in range(4)]
    result = eminspector(torch.stack([*honest, b0, b1]), embed=embed)
    assert result.accepted.tolist() == [4, 5]


def test_every_client_flagged_keeps_the_global_model():
    same = torch.ones(3, 4)
    with pytest.raises(ValueError, match="every client"):
        eminspector(same, embed=lambda u: u.view(2, 2))


def test_registered_and_takes_embed():
    assert RULES["eminspector"] is eminspector and inputs_of(eminspector) == {"embed"}
    with pytest.raises(ValueError, match="embed_fn"):
        RobustStrategy(eminspector, num_partitions=2, per_round=2)


def test_the_config_check_dry_runs_it():
    from fedsim.app.build import check_strategy
    from fedsim.config import load_config

    check_strategy(load_config(None, ["strategy.name='eminspector'"]))
