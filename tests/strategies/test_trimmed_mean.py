"""Coordinate-wise trimmed mean (Yin et al., ICML 2018, strategies/trimmed_mean.py) by hand and
against scipy's."""

import numpy as np
import scipy.stats
import torch

from strategies import trimmed_mean
from tests.strategies.seeded import randn


def test_trimmed_mean_hand_case_and_scipy():
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -100.0]])
    # β = 0.2 of n = 5 → 1 cut at each end: (2+3+4)/3 and (10+20+30)/3
    result = trimmed_mean(x, beta=0.2)
    torch.testing.assert_close(result.aggregate, torch.tensor([3.0, 20.0]))
    assert result.info["trimmed_each_side"] == 1
    x = randn(13, 25, seed=1)
    for beta in (0.0, 0.1, 0.25, 0.3, 0.49):  # 0.3 · 13 = 3.9: k = 3, not rounded to 4
        expected = scipy.stats.trim_mean(x.numpy().astype(np.float64), beta, axis=0)
        torch.testing.assert_close(trimmed_mean(x, beta=beta).aggregate, torch.from_numpy(expected).float())
