"""Robust learning rate (Ozdayi et al., AAAI 2021, strategies/rlr.py) by hand: the sign vote
against θ, the flipped coordinates, η, and the dtype of the aggregate and the weights."""

import torch

from strategies import rlr


def test_rlr_hand_case_on_signs():
    x = torch.tensor([
        [1.0, 1.0, 2.0, 0.0],
        [2.0, -1.0, 1.0, 0.0],
        [1.0, 1.0, 3.0, 1.0],
        [4.0, -3.0, -2.0, 1.0],
    ])
    # Σ sign per coordinate: 4, 0, 2, 2 → with θ = 2: +, −, +, +; with θ = 3: +, −, −, −
    mean = x.mean(0)
    torch.testing.assert_close(rlr(x, theta=2).aggregate, mean * torch.tensor([1.0, -1, 1, 1]))
    result = rlr(x, theta=3, eta=0.5)
    torch.testing.assert_close(result.aggregate, 0.5 * mean * torch.tensor([1.0, -1, -1, -1]))
    assert result.info["flipped"] == 3
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(rlr(x, weights=w, theta=2).aggregate,
                               (w @ x) / 10 * torch.tensor([1.0, -1, 1, 1]))


def test_rlr_uniform_weights_are_reported_in_float64():
    updates = torch.tensor([[1.0, 2.0], [3.0, -1.0], [2.0, 5.0]], dtype=torch.float64)
    res = rlr(updates, theta=0)
    assert res.weights is not None
    assert res.weights.dtype == torch.float64
    assert torch.allclose(res.weights, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.allclose(res.aggregate, torch.tensor([2.0, 2.0], dtype=torch.float64), rtol=1e-14, atol=0)


def test_rlr_keeps_low_precision_dtype():
    updates = torch.tensor([[1.0, 2.0], [3.0, -1.0], [2.0, 5.0]], dtype=torch.bfloat16)
    res = rlr(updates, theta=3, eta=0.5)
    assert res.aggregate.dtype == torch.bfloat16
    assert res.aggregate.float().tolist() == [1.0, -1.0]


def test_rlr_learning_rate_is_exact_in_float64():
    # sign votes: column 0 -> +1+1+1 = 3 >= theta = 3 (keep), column 1 -> +1-1+1 = 1 (flip);
    # mean = [2, 2]; aggregate = [0.1 * 2, -0.1 * 2]
    updates = torch.tensor([[1.0, 2.0], [3.0, -1.0], [2.0, 5.0]], dtype=torch.float64)
    res = rlr(updates, theta=3, eta=0.1)
    assert res.aggregate.dtype == torch.float64
    assert torch.allclose(res.aggregate, torch.tensor([0.2, -0.2], dtype=torch.float64), rtol=1e-13, atol=0)
    assert res.info["flipped"] == 1
