"""FLTrust (Cao et al., NDSS 2021, strategies/fltrust.py) by hand: ReLU-cosine trust, rows
rescaled to the root update's norm, a zero update's zero trust, small norms, and every client
at zero trust refused with a message."""

import math

import numpy as np
import pytest
import torch

from strategies import fltrust


def test_fltrust_hand_case():
    g0 = torch.tensor([2.0, 0.0])
    x = torch.tensor([[3.0, 0.0], [0.0, 5.0], [1.0, 1.0], [-1.0, 0.0]])
    # trust: 1, 0, 1/√2, 0 — rescaled to ‖g0‖ = 2: (2, 0) and (√2, √2)
    r = 1 / math.sqrt(2)
    expected = (1.0 * torch.tensor([2.0, 0.0]) + r * torch.tensor([math.sqrt(2), math.sqrt(2)])) / (1 + r)
    result = fltrust(x, root_update=g0)
    torch.testing.assert_close(result.aggregate, expected)
    assert result.accepted.tolist() == [0, 2]
    np.testing.assert_allclose(result.info["trust"], [1.0, 0.0, r, 0.0], atol=1e-7)


def test_fltrust_all_zero_trust_raises():
    x = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [-2.0, -3.0]])
    with pytest.raises(ValueError, match="fltrust: every client has zero trust"):
        fltrust(x, root_update=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="fltrust: every client has zero trust"):
        fltrust(x, root_update=torch.zeros(2))


def test_fltrust_gives_a_zero_update_zero_trust():
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    result = fltrust(x, root_update=torch.tensor([1.0, 0.0]))
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(result.info["trust"], [r, 0.0, 1.0], atol=1e-7)
    assert result.accepted.tolist() == [0, 2]
    # rescaled to ‖g0‖ = 1: (r, r) and (1, 0)
    torch.testing.assert_close(result.aggregate, (r * torch.tensor([r, r]) + torch.tensor([1.0, 0.0])) / (1 + r))


def test_fltrust_is_the_same_rule_at_small_norms():
    # the hand case of test_rules scaled by 0.1 (every norm, ‖g0‖ included, below 1): trust is
    # unchanged and the aggregate scales with g0
    g0 = torch.tensor([0.2, 0.0])
    x = 0.1 * torch.tensor([[3.0, 0.0], [0.0, 5.0], [1.0, 1.0], [-1.0, 0.0]])
    r = 1 / math.sqrt(2)
    expected = (torch.tensor([0.2, 0.0]) + r * torch.tensor([0.1 * math.sqrt(2)] * 2)) / (1 + r)
    result = fltrust(x, root_update=g0)
    torch.testing.assert_close(result.aggregate, expected)
    np.testing.assert_allclose(result.info["trust"], [1.0, 0.0, r, 0.0], atol=1e-7)


def test_fltrust_weights_are_the_normalised_trust_in_the_updates_dtype():
    # cos with g0 = (1, 1): 1/sqrt2, 1/sqrt2, -1/sqrt2 -> TS = (.707, .707, 0) -> p = (.5, .5, 0);
    # each kept row rescaled to |g0| = sqrt2: aggregate = .5 sqrt2 (1, 0) + .5 sqrt2 (0, 1)
    updates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    res = fltrust(updates, root_update=torch.tensor([1.0, 1.0]))
    assert res.weights is not None
    assert res.weights.dtype == torch.float32
    assert torch.allclose(res.weights, torch.tensor([0.5, 0.5, 0.0]))
    h = math.sqrt(2) / 2
    assert torch.allclose(res.aggregate, torch.tensor([h, h]))
    assert res.accepted.tolist() == [0, 1]


def test_fltrust_all_zero_trust_error_says_why_and_what_happens():
    with pytest.raises(
        ValueError,
        match=r"^fltrust: every client has zero trust \(no update has a positive cosine with the root update\); "
        r"the global model is kept this round$",
    ):
        fltrust(torch.tensor([[-1.0, 0.0], [0.0, -2.0]]), root_update=torch.tensor([1.0, 1.0]))
