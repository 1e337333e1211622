"""FLAME (Nguyen et al., USENIX Security 2022, strategies/flame.py): the cluster it keeps, the
clipping to the median norm and the noise λ · S_t, and HDBSCAN's parameters and input."""

import importlib

import numpy as np
import pytest
import torch

from strategies import flame
from tests.strategies.seeded import gen, randn


def _flame_case():
    g = gen(12)
    base = torch.randn(40, generator=g)
    honest = base + 0.3 * torch.randn(10, 40, generator=g)
    malicious = -base + 0.3 * torch.randn(4, 40, generator=g)
    x = torch.cat([malicious[:2], honest, malicious[2:]])
    return x, list(range(2, 12))


def test_flame_drops_the_opposite_group_and_clips_to_median_norm():
    x, honest = _flame_case()
    x[3] *= 10.0  # a scaled honest update: same direction, clipped not dropped
    result = flame(x, lam=0.0)
    accepted = result.accepted.tolist()
    # HDBSCAN may also call the edge of the honest cluster noise; the kept cluster is a
    # majority (⌊n/2⌋ + 1) and holds no opposite-direction update.
    assert set(accepted) <= set(honest) and len(accepted) >= len(x) // 2 + 1
    assert 3 in accepted and not result.info["all_noise"]
    norms = x.norm(dim=1)
    s_t = float(np.median(norms.numpy().astype(np.float64)))
    assert result.info["S_t"] == pytest.approx(s_t)
    expected = torch.stack([x[i] * min(1.0, s_t / float(norms[i])) for i in accepted]).mean(0)
    torch.testing.assert_close(result.aggregate, expected)


def test_flame_noise_is_lambda_times_median_norm():
    x = randn(6, 40_000, seed=13)
    clean = flame(x, lam=0.0)
    noisy = flame(x, lam=0.01, generator=gen(1))
    assert noisy.accepted.tolist() == clean.accepted.tolist()
    assert noisy.info["sigma"] == pytest.approx(0.01 * clean.info["S_t"])
    std = float((noisy.aggregate - clean.aggregate).std())
    assert std == pytest.approx(noisy.info["sigma"], rel=0.03)


def test_flame_all_noise_keeps_everyone_and_says_so(monkeypatch):
    class AllNoise:
        def __init__(self, **kwargs):
            pass

        def fit_predict(self, distances):
            return np.full(len(distances), -1)

    monkeypatch.setattr(importlib.import_module("sklearn.cluster"), "HDBSCAN", AllNoise)
    result = flame(randn(5, 8, seed=14), lam=0.0)
    assert result.info["all_noise"] and result.accepted.tolist() == [0, 1, 2, 3, 4]


class RecordingHDBSCAN:
    """Stands in for sklearn's HDBSCAN: records its parameters and input, returns set labels."""

    calls: list = []
    labels: np.ndarray | None = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def fit_predict(self, distances):
        RecordingHDBSCAN.calls.append((self.kwargs, distances))
        return RecordingHDBSCAN.labels


@pytest.mark.parametrize("n", [7, 8])
def test_flame_hdbscan_parameters_input_and_largest_cluster(monkeypatch, n):
    monkeypatch.setattr(importlib.import_module("sklearn.cluster"), "HDBSCAN", RecordingHDBSCAN)
    RecordingHDBSCAN.calls = []
    RecordingHDBSCAN.labels = np.array([1, 0, 1, -1, 1, 0, 1, 0][:n])
    x = randn(n, 12, seed=68, dtype=torch.float64)
    result = flame(x, lam=0.0)
    (kwargs, distances), = RecordingHDBSCAN.calls
    assert kwargs["metric"] == "precomputed" and kwargs["min_samples"] == 1
    assert kwargs["allow_single_cluster"] is True and kwargs["min_cluster_size"] == n // 2 + 1
    xn = x.numpy()
    cos = xn @ xn.T / np.outer(np.linalg.norm(xn, axis=1), np.linalg.norm(xn, axis=1))
    np.testing.assert_allclose(distances, 1 - cos, atol=1e-12)
    assert result.accepted.tolist() == [0, 2, 4, 6]  # label 1: four members
    s_t = float(np.median(np.linalg.norm(xn, axis=1)))
    kept = xn[[0, 2, 4, 6]]
    expected = (kept * np.minimum(1, s_t / np.linalg.norm(kept, axis=1))[:, None]).mean(axis=0)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-12)
