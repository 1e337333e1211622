"""Byzantine attacks (clients/attacks/byzantine.py): sign flip, Gaussian noise, IPM, LIE,
Min-Max, Min-Sum and Fang against hand computations, the inverse CDF and the papers' binary
search for γ; the validation of their inputs and parameters; and the adversary that replaces
the malicious rows, seeded by seed and round."""

import math
import pickle
import re

import numpy as np
import pytest
import torch
from scipy.stats import norm

from clients.attacks import BYZANTINE, make_adversary
from clients.attacks.byzantine import (
    ByzantineAdversary,
    fang,
    gaussian_noise,
    ipm,
    lie,
    lie_z,
    min_max,
    min_sum,
    sign_flip,
)


def _honest(m=7, d=20, seed=0):
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- sign flip, Gaussian noise, IPM --------------------------------------------------------


def test_ipm_sign_flip_and_gaussian():
    honest = _honest()
    torch.testing.assert_close(ipm(honest, 3, epsilon=0.5), (-0.5 * honest.mean(0)).expand(3, -1))
    torch.testing.assert_close(sign_flip(honest[:2], scale=2.0), -2 * honest[:2])
    noise = gaussian_noise(torch.zeros(3, 20000), 2, sigma=3.0, generator=torch.Generator().manual_seed(0))
    assert noise.shape == (2, 20000) and noise.std().item() == pytest.approx(3.0, rel=0.03)


def test_byzantine_defaults():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert torch.equal(sign_flip(x), -x)  # scale 1
    noise = gaussian_noise(x, 3, generator=torch.Generator().manual_seed(4))  # σ = 1
    reference = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(noise, reference.float())


def test_gaussian_noise_is_centred_on_zero_not_on_the_honest_updates():
    honest = torch.full((5, 4000), 3.0) + torch.randn(5, 4000, generator=torch.Generator().manual_seed(0))
    noise = gaussian_noise(honest, 2, sigma=0.5, generator=torch.Generator().manual_seed(1))
    assert abs(noise.mean().item()) < 0.02 and noise.std().item() == pytest.approx(0.5, rel=0.03)
    torch.testing.assert_close(
        noise, (0.5 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).float()
    )


# -- LIE -----------------------------------------------------------------------------------


def test_lie_is_mean_minus_z_sigma_with_the_inverse_cdf():
    honest = np.array([[1.0, 2.0, -1.0], [3.0, 0.0, 0.5], [2.0, 1.0, 0.0], [0.0, 5.0, 1.5]])
    # n = 6 clients, 2 malicious: s = ⌊6/2 + 1⌋ − 2 = 2, z = Φ⁻¹((6 − 2)/6)
    z = norm.ppf(4 / 6)
    mu = honest.sum(0) / 4
    sigma = np.sqrt(((honest - mu) ** 2).sum(0) / 3)
    out = lie(torch.tensor(honest), 2)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.numpy(), np.tile(mu - z * sigma, (2, 1)), rtol=1e-12)
    assert lie_z(6, 2) == pytest.approx(0.4307, abs=1e-4)
    assert not np.allclose(out[0].numpy(), mu - norm.cdf(4 / 6) * sigma)  # not the CDF
    np.testing.assert_allclose(lie(torch.tensor(honest), 1, z=1.5)[0].numpy(), mu - 1.5 * sigma)
    with pytest.raises(ValueError, match="n_malicious"):
        lie(torch.tensor(honest), 5)


@pytest.mark.parametrize(
    "n, n_malicious, s", [(4, 2, 1), (5, 1, 2), (7, 3, 1), (10, 2, 4), (11, 1, 5)]
)
def test_lie_z_is_the_inverse_cdf_of_the_share_beyond_the_s_needed(n, n_malicious, s):
    # s = honest clients the attackers need for a majority, by hand: ⌊n/2 + 1⌋ − n_malicious
    assert lie_z(n, n_malicious) == pytest.approx(norm.ppf((n - s) / n), abs=1e-12)


@pytest.mark.parametrize("n, n_malicious, s", [(4, 3, 0), (2, 0, 2), (1, 0, 1)])
def test_lie_z_rejects_s_outside_0_n(n, n_malicious, s):
    with pytest.raises(ValueError, match=rf"s = floor\(n/2 \+ 1\) - n_malicious = {s} for n={n}"):
        lie_z(n, n_malicious)


def test_lie_z_error_states_the_allowed_range():
    # n = 4, n_malicious = 3: s = floor(4/2 + 1) - 3 = 0, outside (0, n)
    with pytest.raises(
        ValueError, match=r"= 0 for n=4, n_malicious=3; the attack assumes fewer than half the clients attack \(0 < s < n\)$"
    ):
        lie_z(4, 3)


def test_lie_with_an_explicit_z_of_zero_or_below_and_two_honest_rows():
    x = torch.tensor([[1.0, 4.0], [3.0, 0.0]])  # μ = (2, 2), σ = (√2, 2√2)
    torch.testing.assert_close(lie(x, 2, z=0), torch.tensor([[2.0, 2.0]] * 2))
    torch.testing.assert_close(lie(x, 1, z=-1.0), torch.tensor([[2 + math.sqrt(2), 2 + 2 * math.sqrt(2)]]))
    z = norm.ppf(2 / 3)  # n = 3, s = ⌊2.5⌋ − 1 = 1
    torch.testing.assert_close(lie(x, 1), torch.tensor([[2 - z * math.sqrt(2), 2 - z * 2 * math.sqrt(2)]], dtype=torch.float32))


# -- Min-Max and Min-Sum -------------------------------------------------------------------


def _perturbation(honest, kind):
    mu = honest.mean(0)
    return {"unit": -mu / mu.norm(), "sign": -torch.sign(mu), "std": -honest.std(0)}[kind]


@pytest.mark.parametrize("kind", ["std", "unit", "sign"])
def test_min_max_is_the_largest_gamma_within_the_max_honest_distance(kind):
    honest = _honest(seed=2)
    mal = min_max(honest, 2, perturbation=kind)
    assert torch.equal(mal[0], mal[1])
    mu, p = honest.mean(0), _perturbation(honest, kind)
    gamma = ((mal[0] - mu) @ p / (p @ p)).item()
    torch.testing.assert_close(mal[0], mu + gamma * p)  # on the ray μ + γ∇p
    bound = torch.cdist(honest, honest).max()
    assert gamma > 0 and torch.cdist(mal[:1], honest).max() <= bound * (1 + 1e-9)
    assert torch.cdist((mu + 1.05 * gamma * p)[None], honest).max() > bound
    same = honest[:1].expand(4, -1)  # no spread: σ = 0, the mean is all that is left
    torch.testing.assert_close(min_max(same, 1, perturbation="std")[0], honest[0])


@pytest.mark.parametrize("kind", ["std", "unit", "sign"])
def test_min_sum_is_the_largest_gamma_within_the_max_honest_sum(kind):
    honest = _honest(seed=3)
    mal = min_sum(honest, 1, perturbation=kind)
    mu, p = honest.mean(0), _perturbation(honest, kind)
    gamma = ((mal[0] - mu) @ p / (p @ p)).item()
    torch.testing.assert_close(mal[0], mu + gamma * p)
    bound = (torch.cdist(honest, honest) ** 2).sum(1).max()

    def total(v):
        return ((honest - v) ** 2).sum()

    assert gamma > 0 and total(mal[0]) <= bound * (1 + 1e-9)
    assert total(mu + 1.05 * gamma * p) > bound
    # Σ‖μ + γp − x_i‖² = Σ‖μ − x_i‖² + m·γ²‖p‖² (the cross term vanishes around the mean)
    closed = math.sqrt((bound - total(mu)) / (len(honest) * (p @ p)))
    assert gamma == pytest.approx(closed, rel=1e-9)


def _bisect_gamma(ok, hi=1.0):
    """The paper's search for the largest γ with ok(γ) (ok holds on an interval [0, γ*])."""
    while ok(hi):
        hi *= 2
    lo = 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _reference_direction(x, kind):
    mu = x.mean(0)
    return {"unit": -mu / np.linalg.norm(mu), "sign": -np.sign(mu), "std": -x.std(0, ddof=1)}[kind]


def _min_max_gamma(x, p):
    mu = x.mean(0)
    bound = max(np.linalg.norm(a - b) for a in x for b in x)
    return _bisect_gamma(lambda g: np.linalg.norm(mu + g * p - x, axis=1).max() <= bound)


def _min_sum_gamma(x, p):
    mu = x.mean(0)
    bound = max(((a - x) ** 2).sum() for a in x)
    return _bisect_gamma(lambda g: ((mu + g * p - x) ** 2).sum() <= bound)


def _gamma_of(out, x, p):
    return float((out - x.mean(0)) @ p / (p @ p))


@pytest.mark.parametrize("kind", ["std", "unit", "sign"])
@pytest.mark.parametrize("scale, offset, seed", [(0.01, 0.3, 0), (1.0, -2.0, 1), (3.0, 0.0, 2)])
def test_min_max_and_min_sum_gamma_match_the_papers_binary_search(kind, scale, offset, seed):
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal((6, 9)) + offset
    p = _reference_direction(x, kind)
    for attack, reference in [(min_max, _min_max_gamma), (min_sum, _min_sum_gamma)]:
        out = attack(torch.tensor(x), 2, perturbation=kind).numpy()
        assert out.shape == (2, 9) and np.array_equal(out[0], out[1])
        np.testing.assert_allclose(out[0], x.mean(0) + _gamma_of(out[0], x, p) * p, rtol=1e-9, atol=1e-12)
        assert _gamma_of(out[0], x, p) == pytest.approx(reference(x, p), rel=1e-7)


def test_min_max_and_min_sum_over_several_column_blocks():
    # more than 2^18 columns: the Gram terms are accumulated over blocks
    rng = np.random.default_rng(3)
    x = 0.1 * rng.standard_normal((4, (1 << 18) + 7)) + 0.05
    p = _reference_direction(x, "std")
    for attack, reference in [(min_max, _min_max_gamma), (min_sum, _min_sum_gamma)]:
        out = attack(torch.tensor(x), 1).numpy()
        assert _gamma_of(out[0], x, p) == pytest.approx(reference(x, p), rel=1e-6)


def test_min_max_and_min_sum_keep_the_mean_when_the_direction_vanishes():
    symmetric = torch.tensor([[1.0, -2.0], [-1.0, 2.0]])  # μ = 0: no unit direction
    same = torch.tensor([[0.5, -1.0, 2.0]]).expand(3, -1)  # σ = 0
    for attack in (min_max, min_sum):
        assert torch.equal(attack(symmetric, 1, perturbation="unit"), torch.zeros(1, 2))
        assert torch.equal(attack(same, 2), same[:2])
        out = attack(same.float() + torch.tensor([[0.0], [1.0], [2.0]]), 1)
        assert out.dtype == torch.float32


def test_min_max_names_the_allowed_perturbations():
    with pytest.raises(ValueError, match=r"perturbation='cos' is unknown; allowed: std, unit, sign$"):
        min_max(torch.ones(3, 2), 1, perturbation="cos")


# -- Fang ----------------------------------------------------------------------------------


def test_fang_deviates_against_the_sign_of_the_mean():
    honest = _honest(m=9, d=50, seed=4) + 0.3  # a mix of positive, negative and mixed coordinates
    mal = fang(honest, 3, b=2.0, generator=torch.Generator().manual_seed(0))
    s = torch.sign(honest.mean(0))
    lo, hi = honest.min(0).values, honest.max(0).values
    up, down = s < 0, s > 0
    assert up.any() and down.any()
    assert (mal[:, down] <= lo[down]).all() and (mal[:, up] >= hi[up]).all()
    # at most a factor b beyond the extreme honest value (for either sign of that value)
    assert (mal[:, down] >= torch.minimum(2 * lo[down], lo[down] / 2)).all()
    assert (mal[:, up] <= torch.maximum(2 * hi[up], hi[up] / 2)).all()
    assert not torch.equal(mal[0], mal[1])  # independent draws per attacker
    torch.testing.assert_close(mal, fang(honest, 3, generator=torch.Generator().manual_seed(0)))


def test_fang_draws_fill_the_documented_ranges_for_b_3():
    # columns: mean > 0 with min > 0 and min < 0; mean < 0 with max > 0 and max < 0; mean 0
    x = torch.tensor([[1.0, 2.0, -1.0, -2.0, 1.0], [2.0, -1.0, 0.5, -1.0, -1.0], [3.0, 1.0, -2.0, -3.0, 0.0]],
                     dtype=torch.float64)
    b = 3.0
    out = fang(x, 4000, b=b, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64
    ranges = [(1 / b, 1.0), (-1.0 * b, -1.0), (0.5, 0.5 * b), (-1.0, -1.0 / b)]
    for j, (lo, hi) in enumerate(ranges):
        col = out[:, j]
        assert lo <= col.min() and col.max() <= hi
        assert col.min() < lo + 0.01 * (hi - lo) and col.max() > hi - 0.01 * (hi - lo)  # the whole range
    assert torch.equal(out[:, 4], torch.zeros(4000, dtype=torch.float64))
    # w/r and w·r with r ~ U[1, b]: for w_min > 0, 1/col is uniform on [1/w_min, b/w_min]
    assert (1 / out[:, 0]).mean().item() == pytest.approx((1 + b) / 2, rel=0.02)
    assert out[:, 1].mean().item() == pytest.approx(-(1 + b) / 2, rel=0.02)


def test_fang_keeps_the_honest_dtype_and_range():
    honest = torch.tensor([[1.0, -2.0], [3.0, -4.0]], dtype=torch.float16)
    out = fang(honest, 3, b=2.0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float16
    # column 0: s > 0, w_min = 1 > 0 -> in [1/2, 1]; column 1: s < 0, w_max = -2 < 0 -> [-2, -1]
    assert ((out[:, 0] >= 0.5) & (out[:, 0] <= 1.0)).all()
    assert ((out[:, 1] >= -2.0) & (out[:, 1] <= -1.0)).all()


# -- every attack's inputs and parameters --------------------------------------------------


@pytest.mark.parametrize(
    "name, call",
    [
        ("lie", lambda x, k: lie(x, k)),
        ("ipm", lambda x, k: ipm(x, k)),
        ("min_max", lambda x, k: min_max(x, k)),
        ("min_sum", lambda x, k: min_sum(x, k)),
        ("fang", lambda x, k: fang(x, k, generator=torch.Generator())),
        ("gaussian_noise", lambda x, k: gaussian_noise(x, k, generator=torch.Generator())),
    ],
)
def test_omniscient_attacks_check_their_inputs_by_name(name, call):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for k in [0, True, 1.0]:
        with pytest.raises(ValueError, match=rf"^{name} n_malicious={k!r} must be an int >= 1$"):
            call(x, k)
    with pytest.raises(ValueError, match=rf"^{name} expects honest updates \(m, d\), got shape \(3,\)$"):
        call(x[0], 1)
    assert call(x, 1).shape == (1, 3)


def test_fewest_honest_rows_each_attack_accepts():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert gaussian_noise(x[:0], 2, generator=torch.Generator()).shape == (2, 2)
    torch.testing.assert_close(ipm(x[:1], 1), torch.tensor([[-0.1, 0.2]]))  # ε = 0.1 by default
    assert fang(x[:1], 1, generator=torch.Generator()).shape == (1, 2)
    for attack in (lie, min_max, min_sum):
        assert attack(x, 1).shape == (1, 2)
        with pytest.raises(ValueError, match=rf"^{attack.__name__} needs at least 2 honest updates, got 1$"):
            attack(x[:1], 1)
    with pytest.raises(ValueError, match=r"^ipm needs at least 1 honest updates, got 0$"):
        ipm(x[:0], 1)


@pytest.mark.parametrize("value", [True, "1", math.inf, math.nan])
def test_byzantine_parameters_must_be_finite_numbers(value):
    x = torch.ones(3, 2)
    calls = {
        "scale": lambda: sign_flip(x, scale=value),
        "sigma": lambda: gaussian_noise(x, 1, sigma=value, generator=torch.Generator()),
        "z": lambda: lie(x, 1, z=value),
        "epsilon": lambda: ipm(x, 1, epsilon=value),
        "b": lambda: fang(x, 1, b=value, generator=torch.Generator()),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{name}={re.escape(repr(value))} must be a finite number$"):
            call()


def test_positive_byzantine_parameters_reject_zero():
    x = torch.ones(3, 2)
    for name, call in {
        "scale": lambda v: sign_flip(x, scale=v),
        "sigma": lambda v: gaussian_noise(x, 1, sigma=v, generator=torch.Generator()),
        "epsilon": lambda v: ipm(x, 1, epsilon=v),
    }.items():
        for v in (0, -1.0):
            with pytest.raises(ValueError, match=rf"^{name}={v!r} must be > 0$"):
                call(v)
    for b in (1, 0.5):
        with pytest.raises(ValueError, match=rf"^fang b={float(b)!r} must be > 1$"):
            fang(x, 1, b=b, generator=torch.Generator())


# -- the adversary -------------------------------------------------------------------------


def test_make_adversary_replaces_only_the_malicious_rows():
    updates = _honest(m=8, d=12, seed=5).float()
    mal = torch.tensor([False, True, False, False, True, False, False, False])
    before = updates.clone()
    out = make_adversary("lie", seed=0)(3, list(range(8)), updates, mal)
    assert torch.equal(updates, before)
    assert torch.equal(out[~mal], updates[~mal])
    torch.testing.assert_close(out[mal], lie(updates[~mal], 2))
    flipped = make_adversary("sign_flip", seed=0)(1, list(range(8)), updates, mal)
    torch.testing.assert_close(flipped[mal], -updates[mal])
    noisy = make_adversary("gaussian_noise", seed=1, sigma=2.0)
    assert torch.equal(noisy(2, [], updates, mal), noisy(2, [], updates, mal))
    assert not torch.equal(noisy(2, [], updates, mal), noisy(3, [], updates, mal))
    assert torch.equal(pickle.loads(pickle.dumps(noisy))(2, [], updates, mal), noisy(2, [], updates, mal))
    for name in BYZANTINE:
        crafted = make_adversary(name, seed=0)(1, list(range(8)), updates, mal)
        assert torch.equal(crafted[~mal], updates[~mal]) and not torch.equal(crafted[mal], updates[mal])
    assert make_adversary("ipm", seed=0)(1, [], updates, torch.zeros(8, dtype=torch.bool)) is updates


def test_make_adversary_rejects_bad_names_and_params():
    with pytest.raises(ValueError, match="'krum_attack'.*allowed: sign_flip"):
        make_adversary("krum_attack", seed=0)
    with pytest.raises(ValueError, match="eps.*allowed: epsilon"):
        make_adversary("ipm", seed=0, eps=1.0)
    with pytest.raises(ValueError, match="perturbation='cosine'"):
        make_adversary("min_max", seed=0, perturbation="cosine")
    with pytest.raises(ValueError, match="sigma"):
        make_adversary("gaussian_noise", seed=0, sigma=-1.0)
    with pytest.raises(ValueError, match="generator"):
        make_adversary("fang", seed=0, generator=None)
    # too few honest rows for LIE's σ: the round and the attack are named
    adversary = make_adversary("lie", seed=0)
    with pytest.raises(ValueError, match="round 4.*'lie'.*honest"):
        adversary(4, [0, 1], torch.randn(2, 3), torch.tensor([True, False]))


def test_make_adversary_unknown_name_lists_every_allowed_attack():
    with pytest.raises(ValueError, match=r"'nope'.*allowed: sign_flip, gaussian_noise, lie, ipm"):
        make_adversary("nope", seed=0)


def test_make_adversary_unknown_parameters_are_all_named_and_allowed_listed():
    with pytest.raises(ValueError, match=r"'lie' has no parameter alpha, beta; allowed: z$"):
        make_adversary("lie", seed=0, alpha=1, beta=2)


def test_make_adversary_seed_reaches_the_randomised_attack():
    honest = torch.zeros(4, 5)
    mal = torch.tensor([False, False, False, True])
    a0 = make_adversary("gaussian_noise", seed=0)
    a7 = make_adversary("gaussian_noise", seed=7)
    assert a7.seed == 7
    # same round, different seeds: different noise; same seed: the same noise
    assert not torch.equal(a0.craft(1, honest, mal), a7.craft(1, honest, mal))
    assert torch.equal(a7.craft(1, honest, mal), make_adversary("gaussian_noise", seed=7).craft(1, honest, mal))


def test_make_adversary_does_not_consume_the_global_torch_rng():
    # Validation on a probe round must not shift the run's global random stream.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_adversary("lie", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_adversary_seeds_draws_by_seed_and_round():
    updates = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    mal = torch.tensor([True, False, True, False, False])
    draws = {(s, r): ByzantineAdversary("gaussian_noise", seed=s)(r, [], updates, mal)[mal]
             for s in (0, 1) for r in (1, 2)}
    assert len({tuple(v.flatten().tolist()) for v in draws.values()}) == 4
    assert torch.equal(draws[0, 1], ByzantineAdversary("gaussian_noise")(1, [], updates, mal)[mal])
    assert torch.equal(draws[0, 1], make_adversary("gaussian_noise", seed=0)(1, [], updates, mal)[mal])


def test_adversary_passes_parameters_to_own_update_attacks_and_takes_a_0_1_mask():
    updates = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    flags = torch.tensor([0, 1, 0, 1])
    out = make_adversary("sign_flip", seed=0, scale=3.0)(1, [], updates, flags)
    torch.testing.assert_close(out[[1, 3]], -3 * updates[[1, 3]])
    assert torch.equal(out[[0, 2]], updates[[0, 2]])
