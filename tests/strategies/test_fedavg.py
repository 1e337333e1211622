"""FedAvg (McMahan et al., AISTATS 2017, strategies/fedavg.py): the mean weighted by
num-examples, by hand."""

import torch

from strategies import fedavg
from tests.strategies.seeded import randn


def test_fedavg_rule_is_the_weighted_mean():
    g = torch.Generator().manual_seed(0)
    updates = torch.randn(4, 6, generator=g)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = sum(weights[i] * updates[i] for i in range(4)) / 10.0
    result = fedavg(updates, weights=weights)
    torch.testing.assert_close(result.aggregate, expected)
    assert result.accepted.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(fedavg(updates).aggregate, updates.mean(0))


def test_fedavg_weights_by_num_examples():
    x = randn(3, 5, seed=65, dtype=torch.float64)
    result = fedavg(x, weights=torch.tensor([1.0, 2.0, 5.0]))
    torch.testing.assert_close(result.aggregate, (x[0] + 2 * x[1] + 5 * x[2]) / 8)
    torch.testing.assert_close(result.weights, torch.tensor([1 / 8, 2 / 8, 5 / 8], dtype=torch.float64))
    torch.testing.assert_close(fedavg(x).aggregate, x.mean(0))
