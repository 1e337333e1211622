"""Update attacks (clients/attacks/update_attacks.py): model replacement and its γ, the norm
bound and the L2 projection, Neurotoxin's mask and its exact count, against closed forms and
hand computations, and the validation of their parameters."""

import math
import re

import pytest
import torch

from clients.attacks import apply_mask, model_replacement, neurotoxin_mask, norm_bound, project_l2, replacement_gamma

# -- model replacement, norm bound, projection ---------------------------------------------


def test_model_replacement_and_norm_bound():
    u = torch.randn(100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model_replacement(u, gamma=10.0), 10 * u)
    with pytest.raises(ValueError, match="gamma"):
        model_replacement(u, gamma=0)
    bounded = norm_bound(u, eps=1.0)
    assert bounded.norm().item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(bounded / bounded.norm(), u / u.norm())
    assert torch.equal(norm_bound(u, eps=u.norm().item() * 2), u)
    center = torch.ones(100)
    projected = project_l2(center + u, center, 0.5)
    assert (projected - center).norm().item() == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="eps"):
        norm_bound(u, eps=-1)


@pytest.mark.parametrize("value", [True, "2", math.inf, math.nan, 0, -1.5])
def test_update_attack_parameters_must_be_finite_positive_numbers(value):
    u = torch.ones(3)
    calls = {
        "gamma": lambda: model_replacement(u, gamma=value),
        "eps": lambda: norm_bound(u, eps=value),
        "num_examples": lambda: replacement_gamma(value, 10.0),
        "round_examples": lambda: replacement_gamma(5, value),
        "server_lr": lambda: replacement_gamma(5, 10.0, value),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{name}={re.escape(repr(value))} must be a finite number > 0$"):
            call()


def test_integer_parameters_are_accepted():
    u = torch.tensor([1.0, -2.0, 2.0])  # ‖u‖ = 3
    torch.testing.assert_close(model_replacement(u, gamma=2), 2 * u)
    torch.testing.assert_close(norm_bound(u, eps=1), u / 3)
    assert replacement_gamma(4, 10) == 2.5


def test_replacement_gamma_closed_form_and_validation():
    from clients.attacks import replacement_gamma

    assert replacement_gamma(40, 400.0) == pytest.approx(10.0)
    assert replacement_gamma(40, 400.0, 0.25) == pytest.approx(40.0)
    for bad in [dict(num_examples=0, round_examples=10), dict(num_examples=5, round_examples=-1),
                dict(num_examples=5, round_examples=10, server_lr=0)]:
        with pytest.raises(ValueError):
            replacement_gamma(**bad)


def test_project_l2_moves_towards_the_point_along_the_line_from_the_center():
    center = torch.tensor([1.0, 2.0, 3.0])
    point = center + torch.tensor([3.0, 0.0, -4.0])  # 5 away
    # the closest point of the ball of radius 2: 2/5 of the way from the center
    torch.testing.assert_close(project_l2(point, center, 2.0), torch.tensor([2.2, 2.0, 1.4]))
    torch.testing.assert_close(project_l2(point, center, 6.0), point)


# -- Neurotoxin ----------------------------------------------------------------------------


def test_neurotoxin_mask_excludes_exactly_the_top_k_percent():
    benign = torch.randn(200, generator=torch.Generator().manual_seed(1))
    mask = neurotoxin_mask(benign, k_percent=5)
    top = set(benign.abs().argsort(descending=True)[:10].tolist())
    assert set((~mask).nonzero().flatten().tolist()) == top
    assert neurotoxin_mask(benign, k_percent=0).all()
    assert (~neurotoxin_mask(benign, k_percent=1)).sum() == 2
    update = torch.randn(200)
    masked = apply_mask(update, mask)
    assert (masked[~mask] == 0).all() and torch.equal(masked[mask], update[mask])
    with pytest.raises(ValueError, match="k_percent"):
        neurotoxin_mask(benign, k_percent=101)


@pytest.mark.parametrize("k", [True, "5", -0.1, 100.5])
def test_neurotoxin_rejects_k_percent_outside_0_100(k):
    with pytest.raises(ValueError, match=rf"k_percent={re.escape(repr(k))} must lie in \[0, 100\]"):
        neurotoxin_mask(torch.ones(10), k_percent=k)


def test_neurotoxin_mask_keeps_the_shape_of_a_matrix_update():
    benign = torch.tensor([[0.1, -5.0, 0.2], [3.0, 0.0, -0.3]])
    # d = 6, k = 34 %: ⌈2.04⌉ = 3 coordinates excluded, those of |·| 5, 3 and 0.3
    expected = torch.tensor([[True, False, True], [False, True, False]])
    assert torch.equal(neurotoxin_mask(benign, k_percent=34), expected)
    assert torch.equal(neurotoxin_mask(benign, k_percent=100), torch.zeros(2, 3, dtype=torch.bool))


def test_neurotoxin_mask_counts_round_up_exactly():
    from clients.attacks import neurotoxin_mask

    benign = torch.arange(1, 201, dtype=torch.float32)  # |largest| are the last coordinates
    for k, excluded in [(2.5, 5), (0.6, 2), (1, 2), (50, 100), (100, 200), (0.1, 1)]:
        mask = neurotoxin_mask(benign, k_percent=k)
        assert int((~mask).sum()) == excluded, k
        assert not mask[200 - excluded :].any() and mask[: 200 - excluded].all()


def test_neurotoxin_count_is_exact_where_float_rounding_errs_by_6e_11():
    # 64.01 % of 500 000 is 320 050 exactly; in floats k·d/100 = 320050.00000000006
    benign = torch.arange(500_000, dtype=torch.float32)
    mask = neurotoxin_mask(benign, k_percent=64.01)
    assert int((~mask).sum()) == 320_050 and not mask[-320_050:].any()


def test_apply_mask_rejects_a_mask_of_the_wrong_shape_or_dtype():
    update = torch.tensor([1.0, 2.0, 3.0])
    for mask in [torch.tensor([True, False]), torch.tensor([1.0, 0.0, 1.0])]:
        with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(3,\)"):
            apply_mask(update, mask)
    assert torch.equal(apply_mask(update, torch.tensor([True, False, True])), torch.tensor([1.0, 0.0, 3.0]))
