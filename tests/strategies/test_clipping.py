"""Norm clipping with weak-DP noise (Sun et al., 2019) and centered clipping (Karimireddy et al.,
ICML 2021), strategies/clipping.py: hand cases, the noise's scale, generator and dtype, which
norms count as clipped, and what each records."""

import pytest
import torch

from strategies import centered_clipping, norm_clipping
from tests.strategies.seeded import gen, randn

# -- norm clipping -------------------------------------------------------------------------


def test_norm_clipping_bounds_norms_and_weights_like_fedavg():
    x = randn(9, 20, seed=10) * torch.linspace(0.1, 5, 9)[:, None]
    tau = 1.5
    w = torch.arange(1.0, 10.0)
    clipped = torch.stack([u * min(1.0, tau / float(u.norm())) for u in x])
    assert (clipped.norm(dim=1) <= tau + 1e-5).all()
    expected = (w[:, None] * clipped).sum(0) / w.sum()
    result = norm_clipping(x, weights=w, tau=tau)
    torch.testing.assert_close(result.aggregate, expected)
    assert float(result.aggregate.norm()) <= tau + 1e-5
    assert result.info["clipped"] == int((x.norm(dim=1) > tau).sum())


def test_norm_clipping_noise_has_std_sigma_and_follows_the_generator():
    x = randn(5, 50_000, seed=11)
    clean = norm_clipping(x, tau=1.0).aggregate
    a = norm_clipping(x, tau=1.0, sigma=0.1, generator=gen(3)).aggregate
    b = norm_clipping(x, tau=1.0, sigma=0.1, generator=gen(3)).aggregate
    torch.testing.assert_close(a, b)
    noise = a - clean
    assert abs(float(noise.std()) - 0.1) < 0.002 and abs(float(noise.mean())) < 0.002


def test_norm_clipping_counts_only_norms_above_tau():
    x = torch.tensor([[3.0, 4.0], [6.0, 8.0], [0.3, 0.4], [0.0, 0.0]])  # norms 5, 10, 0.5, 0
    result = norm_clipping(x, tau=5.0)
    assert result.info["clipped"] == 1 and result.info["max_norm"] == 10.0
    torch.testing.assert_close(result.aggregate, torch.tensor([3 + 3 + 0.3, 4 + 4 + 0.4]) / 4)


def test_norm_clipping_uniform_weights_exact_in_float64():
    # norms 5, 1, 10 with tau = 5: factors 1, 1, 1/2 -> rows [3,4], [0,1], [3,4]; mean [2, 3]
    updates = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]], dtype=torch.float64)
    res = norm_clipping(updates, tau=5.0)
    assert res.weights is not None
    assert res.weights.dtype == torch.float64
    assert torch.allclose(res.weights, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.allclose(res.aggregate, torch.tensor([2.0, 3.0], dtype=torch.float64), rtol=1e-14, atol=0)
    assert res.info["clipped"] == 1


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_noise_is_drawn_in_the_aggregates_dtype_from_the_generator(sigma):
    # float64 updates: the noise is torch.randn(d, dtype=float64) from the generator, scaled by σ
    x = randn(4, 64, seed=88, dtype=torch.float64)
    clean = norm_clipping(x, tau=1.0).aggregate
    noisy = norm_clipping(x, tau=1.0, sigma=sigma, generator=gen(5)).aggregate
    expected = clean + sigma * torch.randn(64, generator=gen(5), dtype=torch.float64)
    torch.testing.assert_close(noisy, expected, rtol=1e-14, atol=1e-14)


# -- centered clipping ---------------------------------------------------------------------


def test_centered_clipping_hand_case_with_previous():
    x = torch.tensor([[1.0, 0.0], [4.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    v0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    # Δ − v0 = (0,0), (3,0) → clipped to (1,0), (0,2) → clipped to (0,1); v = v0 + mean
    result = centered_clipping(x, tau=1.0, previous=v0)
    torch.testing.assert_close(result.aggregate, torch.tensor([4 / 3, 1 / 3], dtype=torch.float64))
    # L = 2 by a naive loop
    v = v0.clone()
    for _ in range(2):
        v = v + sum((u - v) * min(1.0, 1.0 / float((u - v).norm())) if float((u - v).norm()) > 0 else u - v
                    for u in x) / 3
    torch.testing.assert_close(centered_clipping(x, tau=1.0, L=2, previous=v0).aggregate, v)
    # no previous aggregate: v0 = 0
    torch.testing.assert_close(
        centered_clipping(x, tau=1.0).aggregate,
        centered_clipping(x, tau=1.0, previous=torch.zeros(2, dtype=torch.float64)).aggregate,
    )


def test_centered_clipping_norm_equal_to_tau_is_not_clipped():
    # v0 = 0, L = 1: norms 5 and 0; 5 is not > tau = 5, so nothing is clipped;
    # v = ([3, 4] + [0, 0]) / 2
    updates = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    res = centered_clipping(updates, tau=5.0, L=1)
    assert torch.allclose(res.aggregate, torch.tensor([1.5, 2.0], dtype=torch.float64))
    assert res.info["clipped_last_iter"] == 0


def test_centered_clipping_keeps_the_updates_dtype():
    updates = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float32)
    prev64 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    res = centered_clipping(updates, tau=10.0, L=1, previous=prev64)
    assert res.aggregate.dtype == torch.float32
    # v = 1 + ((3,4) - 1 + (1,0) - 1) / 2 = (2, 2)
    assert torch.allclose(res.aggregate, torch.tensor([2.0, 2.0]))
    half = updates.to(torch.bfloat16)
    assert centered_clipping(half, tau=10.0, L=1).aggregate.dtype == torch.bfloat16


# -- both ----------------------------------------------------------------------------------


def test_clipping_rules_record_their_parameters():
    x = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]])
    assert norm_clipping(x, tau=1.0, sigma=0.5, generator=gen(0)).info == {
        "tau": 1.0, "sigma": 0.5, "clipped": 1, "max_norm": 5.0
    }
    # from v = 0, L = 2: Δ − v has norms 5, 1, 0 → one clipped; v1 = ((0.6, 0.8) + (0.6, 0.8)) / 3
    # then Δ − v1 = (2.6, 3.47), (0.2, 0.27), (−0.4, −0.53): one norm above 1 in the last iteration
    result = centered_clipping(x, tau=1.0, L=2)
    assert result.info == {"tau": 1.0, "L": 2, "clipped_last_iter": 1}
