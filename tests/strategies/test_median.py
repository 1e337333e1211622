"""Coordinate-wise median (Yin et al., ICML 2018, strategies/median.py): the mean of the two
middle values for even n, an exact element in half precision for odd n."""

import numpy as np
import pytest
import torch

from strategies import median
from tests.strategies.seeded import randn


def test_median_even_n_is_mean_of_two_middle_values():
    x = torch.tensor([[1.0, -4.0], [2.0, 10.0], [3.0, 0.0], [10.0, 1.0]])
    torch.testing.assert_close(median(x).aggregate, torch.tensor([2.5, 0.5]))
    for n in (7, 8):
        x = randn(n, 30, seed=n)
        torch.testing.assert_close(median(x).aggregate, torch.from_numpy(np.median(x.numpy(), axis=0)))
        assert median(x).accepted.tolist() == list(range(n))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_median_of_half_precision_updates_is_an_exact_element(dtype):
    # odd n: the median is one of the values, so it is exact in any dtype
    x = randn(7, 30, seed=80).to(dtype)
    expected = np.median(x.float().numpy(), axis=0)
    result = median(x)
    assert result.aggregate.dtype == dtype
    np.testing.assert_array_equal(result.aggregate.float().numpy(), expected)
