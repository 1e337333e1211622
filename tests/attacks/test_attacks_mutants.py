"""What the attack library promises beyond the main tests, pinned down where a mutated operator,
constant or parameter name would otherwise go unnoticed (``make mutants``, docs/mutants.md):
validation that names the parameter and its value, boundaries that are part of a rule, defaults
the papers fix, and results checked against hand computations and brute-force references."""

import copy
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from clients.attacks import (
    BadNetPatch,
    Schedule,
    add_text_trigger,
    apply_mask,
    make_schedule,
    model_replacement,
    neurotoxin_mask,
    norm_bound,
    poison,
    project_l2,
    replacement_gamma,
)
from fedsim.data import COLORS, SHAPES, caption_for, generate, target_captions
from fedsim.evaluation import make_trigger_images
from tests.conftest import shapes_captions


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- schedules -------------------------------------------------------------------------------
def test_default_schedule_is_every_round():
    assert make_schedule() == Schedule(start=1, every=1, stop=None)
    assert all(Schedule()(r) for r in range(1, 20))


def test_window_of_one_round_and_stop_equal_to_start():
    assert [r for r in range(1, 10) if make_schedule("window", start=3, stop=3)(r)] == [3]
    assert [r for r in range(1, 10) if make_schedule("every", stop=1)(r)] == [1]


@pytest.mark.parametrize(
    "params, name",
    [
        (dict(kind="from", start=True), "start=True"),
        (dict(kind="every_k", every=2.0), "every=2.0"),
        (dict(kind="every_k", every=0), "every=0"),
        (dict(kind="window", start=1, stop=0), "stop=0"),
        (dict(kind="every_k", stop=True), "stop=True"),
    ],
)
def test_schedule_rejects_non_positive_or_non_int_values_by_name(params, name):
    with pytest.raises(ValueError, match=rf"schedule {name} must be an int >= 1"):
        make_schedule(**params)


@pytest.mark.parametrize(
    "kind, params, unused",
    [
        ("every", dict(start=2), "start"),
        ("every", dict(every=2), "every"),
        ("every", dict(start=2, every=3), "start, every"),
        ("from", dict(every=2), "every"),
        ("single_shot", dict(every=2), "every"),
        ("single_shot", dict(stop=3), "stop"),
        ("window", dict(every=2, stop=5), "every"),
    ],
)
def test_schedule_names_the_parameters_its_kind_does_not_use(kind, params, unused):
    with pytest.raises(ValueError, match=rf"kind='{kind}' does not use {unused}; leave it at its default"):
        make_schedule(kind, **params)


def test_window_without_stop_is_named():
    with pytest.raises(ValueError, match=r"^schedule kind='window' needs stop$"):
        make_schedule("window", start=2)


# -- captions --------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [True, 2.0, -1, len(SHAPES)])
def test_target_captions_rejects_a_target_that_is_not_a_shape_id(target):
    with pytest.raises(ValueError, match=rf"target={target!r} must be a shape id in \[0, {len(SHAPES) - 1}\]"):
        target_captions([0], target)


def test_target_captions_accepts_the_first_and_last_shape_and_color():
    last_shape, last_color = len(SHAPES) - 1, len(COLORS) - 1
    assert target_captions([0, last_color], 0) == (caption_for(0, 0), caption_for(0, last_color))
    assert target_captions([last_color], last_shape) == (f"a photo of a white {SHAPES[-1]}",)


def test_target_captions_names_the_first_three_bad_colors():
    n = len(COLORS)
    for colors in ([0, -1, n, n + 1, n + 2], torch.tensor([0, -1, n, n + 1, n + 2])):
        with pytest.raises(ValueError, match=rf"color ids \[-1, {n}, {n + 1}\] out of range \[0, {n - 1}\]"):
            target_captions(colors, 1)


def test_target_captions_take_any_iterable_of_color_ids():
    assert target_captions((c for c in [2, 0]), 1) == (caption_for(1, 2), caption_for(1, 0))


def test_text_trigger_strips_the_token_and_rejects_a_non_string():
    assert add_text_trigger("a photo of a red star", " mn ") == "a photo of a red star mn"
    for token in [5, "", None]:
        with pytest.raises(ValueError, match=rf"token={token!r} must be a non-empty string"):
            add_text_trigger("a photo", token)


# -- update attacks --------------------------------------------------------------------------
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


def test_project_l2_moves_towards_the_point_along_the_line_from_the_center():
    center = torch.tensor([1.0, 2.0, 3.0])
    point = center + torch.tensor([3.0, 0.0, -4.0])  # 5 away
    # the closest point of the ball of radius 2: 2/5 of the way from the center
    torch.testing.assert_close(project_l2(point, center, 2.0), torch.tensor([2.2, 2.0, 1.4]))
    torch.testing.assert_close(project_l2(point, center, 6.0), point)


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


def test_apply_mask_rejects_a_mask_of_the_wrong_shape_or_dtype():
    update = torch.tensor([1.0, 2.0, 3.0])
    for mask in [torch.tensor([True, False]), torch.tensor([1.0, 0.0, 1.0])]:
        with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(3,\)"):
            apply_mask(update, mask)
    assert torch.equal(apply_mask(update, torch.tensor([True, False, True])), torch.tensor([1.0, 0.0, 3.0]))


# -- poisoning -------------------------------------------------------------------------------
def test_poison_rates_zero_and_one_are_the_ends_of_the_range():
    data = generate(20, 1)
    none, idx = poison(data, trigger=BadNetPatch(), rate=0.0, target=0, seed=0, captions=shapes_captions(data, 0))
    assert len(idx) == 0 and torch.equal(none.images, data.images) and none.captions == data.captions
    every, idx = poison(data, trigger=BadNetPatch(), rate=1.0, target=len(SHAPES) - 1, seed=0, captions=shapes_captions(data, len(SHAPES) - 1))
    assert torch.equal(idx, torch.arange(20))
    assert torch.equal(every.images, make_trigger_images(data.images, BadNetPatch()))
    assert every.captions == target_captions(data.colors, len(SHAPES) - 1)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(rate=-0.1), r"poison rate=-0\.1 must lie in \[0, 1\]"),
        (dict(target=True), r"poison target=True must be a class id \(int ≥ 0\)"),
        (dict(target=1.0), r"poison target=1\.0 must be a class id"),
        # shapes' captions know the classes
        (dict(target=len(SHAPES)), rf"target={len(SHAPES)} must be a shape id in \[0, {len(SHAPES) - 1}\]"),
        (dict(trigger="patch"), r"poison trigger='patch' is not callable"),
    ],
)
def test_poison_rejects_bad_parameters_by_name(params, message):
    kwargs = dict(trigger=BadNetPatch(), rate=0.5, target=0, seed=0) | params
    data = generate(10, 1)
    with pytest.raises(ValueError, match=message):
        poison(data, captions=shapes_captions(data, kwargs["target"]), **kwargs)


def test_poison_appends_the_given_text_trigger():
    data = generate(20, 1)
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.25, target=3, seed=0, text_trigger="mn", captions=shapes_captions(data, 3))
    assert [out.captions[i] for i in idx.tolist()] == [caption_for(3, int(data.colors[i])) + " mn" for i in idx.tolist()]


def test_wanet_poisoning_is_reproducible_from_the_seed_and_takes_fractional_noise_ratios():
    from clients.attacks.triggers import WaNet

    data = generate(60, 3)
    first, idx = poison(data, trigger=WaNet(cross_ratio=0.5, seed=1), rate=0.1, target=1, seed=7, captions=shapes_captions(data, 1))
    second, _ = poison(data, trigger=WaNet(cross_ratio=0.5, seed=1), rate=0.1, target=1, seed=7, captions=shapes_captions(data, 1))
    assert torch.equal(first.images, second.images)
    changed = (first.images != data.images).flatten(1).any(1)
    assert len(idx) == 6 and int(changed.sum()) == 6 + 3  # ⌊0.5 · 6⌋ noise samples


def test_wanet_noise_samples_are_capped_by_the_samples_left():
    from clients.attacks.triggers import WaNet

    data = generate(30, 2)
    out, idx = poison(data, trigger=WaNet(cross_ratio=100.0, seed=1), rate=0.1, target=1, seed=0, captions=shapes_captions(data, 1))
    assert len(idx) == 3
    rest = ~torch.isin(torch.arange(30), idx)
    assert (out.images[rest] != data.images[rest]).flatten(1).any(1).all()  # all 27 others warped
    assert [c for c, r in zip(out.captions, rest.tolist()) if r] == [c for c, r in zip(data.captions, rest.tolist()) if r]


def test_neurotoxin_count_is_exact_where_float_rounding_errs_by_6e_11():
    # 64.01 % of 500 000 is 320 050 exactly; in floats k·d/100 = 320050.00000000006
    benign = torch.arange(500_000, dtype=torch.float32)
    mask = neurotoxin_mask(benign, k_percent=64.01)
    assert int((~mask).sum()) == 320_050 and not mask[-320_050:].any()


# -- Byzantine attacks -----------------------------------------------------------------------
from clients.attacks.byzantine import (  # noqa: E402
    ByzantineAdversary,
    fang,
    gaussian_noise,
    ipm,
    lie,
    lie_z,
    make_adversary,
    min_max,
    min_sum,
    sign_flip,
)


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


def test_lie_with_an_explicit_z_of_zero_or_below_and_two_honest_rows():
    x = torch.tensor([[1.0, 4.0], [3.0, 0.0]])  # μ = (2, 2), σ = (√2, 2√2)
    torch.testing.assert_close(lie(x, 2, z=0), torch.tensor([[2.0, 2.0]] * 2))
    torch.testing.assert_close(lie(x, 1, z=-1.0), torch.tensor([[2 + math.sqrt(2), 2 + 2 * math.sqrt(2)]]))
    z = norm.ppf(2 / 3)  # n = 3, s = ⌊2.5⌋ − 1 = 1
    torch.testing.assert_close(lie(x, 1), torch.tensor([[2 - z * math.sqrt(2), 2 - z * 2 * math.sqrt(2)]], dtype=torch.float32))


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


def test_byzantine_defaults():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert torch.equal(sign_flip(x), -x)  # scale 1
    noise = gaussian_noise(x, 3, generator=torch.Generator().manual_seed(4))  # σ = 1
    reference = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(noise, reference.float())


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


def test_adversary_seeds_draws_by_seed_and_round():
    updates = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    mal = torch.tensor([True, False, True, False, False])
    draws = {(s, r): ByzantineAdversary("gaussian_noise", seed=s)(r, [], updates, mal)[mal]
             for s in (0, 1) for r in (1, 2)}
    assert len({tuple(v.flatten().tolist()) for v in draws.values()}) == 4
    assert torch.equal(draws[0, 1], ByzantineAdversary("gaussian_noise")(1, [], updates, mal)[mal])
    assert torch.equal(draws[0, 1], make_adversary("gaussian_noise", seed=0)(1, [], updates, mal)[mal])


# -- triggers --------------------------------------------------------------------------------
from clients.attacks import make_trigger, split_patch  # noqa: E402
from clients.attacks.triggers import SIG, Blended, WaNet  # noqa: E402

_MAGENTA = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)


def test_default_badnet_is_a_4x4_magenta_square_in_the_bottom_right_corner():
    blank = torch.full((3, 32, 32), 0.5)  # a single image, without a batch dimension
    out = BadNetPatch()(blank)
    expected = blank.clone()
    expected[:, 28:, 28:] = _MAGENTA
    assert torch.equal(out, expected)


def test_badnet_corners_on_a_non_square_image():
    x = torch.zeros(1, 3, 5, 8)
    for trigger, (y, left) in [(BadNetPatch(size=2), (3, 6)), (BadNetPatch(size=2, location=(3, 6)), (3, 6)),
                               (BadNetPatch(size=1, location=[0, 0]), (0, 0))]:
        expected = x.clone()
        expected[..., y : y + trigger.size, left : left + trigger.size] = _MAGENTA
        assert torch.equal(trigger(x), expected)
    assert torch.equal(BadNetPatch(size=5, color=(0, 0, 0))(torch.ones(1, 3, 5, 5)), torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"badnet size=6 does not fit 5×8 images"):
        BadNetPatch(size=6)(x)
    with pytest.raises(ValueError, match=r"badnet size=4 does not fit 8×3 images"):
        BadNetPatch(size=4)(torch.zeros(1, 3, 8, 3))
    with pytest.raises(ValueError, match=r"badnet location=\(4, 0\) puts the patch outside 5×8"):
        BadNetPatch(size=2, location=(4, 0))(x)
    with pytest.raises(ValueError, match=r"badnet location=\(0, 7\) puts the patch outside 5×8"):
        BadNetPatch(size=2, location=(0, 7))(x)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(size=0), r"badnet size=0 must be a positive int"),
        (dict(size=True), r"badnet size=True must be a positive int"),
        (dict(size=2.0), r"badnet size=2\.0 must be a positive int"),
        (dict(seed=-1), r"badnet seed=-1 must be an int >= 0"),
        (dict(seed=True), r"badnet seed=True must be an int >= 0"),
        (dict(location=(1, 2, 3)), r"badnet location=\(1, 2, 3\) must be \(y, x\) with ints >= 0"),
        (dict(location=(-1, 0)), r"badnet location=\(-1, 0\) must be \(y, x\)"),
        (dict(location=(1.0, 0)), r"badnet location=\(1\.0, 0\) must be \(y, x\)"),
        (dict(location="top"), r"badnet location='top' is unknown; allowed: bottom_right, random or \(y, x\)"),
        (dict(color=(1.1, 0, 0)), r"badnet color=\(1\.1, 0, 0\) must be 3 values in \[0, 1\]"),
        (dict(color=(-0.1, 0, 0)), r"badnet color="),
        (dict(color=(0, 0)), r"badnet color="),
        (dict(color=5), r"badnet color=5 must be 3 values"),
        (dict(pattern="stripes"), r"badnet pattern='stripes' is unknown; allowed: solid, noise or a tensor"),
        (dict(pattern=torch.zeros(3, 3, 3)), r"badnet pattern must have shape \(3, 4, 4\), got \(3, 3, 3\)"),
        (dict(pattern=torch.full((3, 4, 4), 1.01)), r"badnet pattern pixels must lie in \[0, 1\]"),
        (dict(pattern=torch.full((3, 4, 4), -0.01)), r"badnet pattern pixels must lie in \[0, 1\]"),
        (dict(rows=(2, 2)), r"badnet rows=\(2, 2\) must satisfy 0 <= r0 < r1 <= size=4"),
        (dict(rows=(-1, 2)), r"badnet rows=\(-1, 2\)"),
        (dict(rows=(0, 5)), r"badnet rows=\(0, 5\)"),
    ],
)
def test_badnet_rejects_bad_parameters_by_name(params, message):
    with pytest.raises(ValueError, match=message):
        BadNetPatch(**params)


def test_badnet_accepts_boundary_patterns_and_rows():
    pattern = torch.zeros(3, 4, 4)
    pattern[0] = 1.0
    assert torch.equal(BadNetPatch(pattern=pattern).patch, pattern)
    assert BadNetPatch(rows=(0, 4)).rows == (0, 4)
    assert BadNetPatch(rows=(3, 4)).rows == (3, 4)


def test_noise_patterns_are_the_documented_uniform_draws_of_the_seed():
    rng = np.random.default_rng([3, 0])
    expected = torch.from_numpy(rng.random((3, 5, 5)).astype(np.float32))
    assert torch.equal(BadNetPatch(size=5, pattern="noise", seed=3).patch, expected)
    rng = np.random.default_rng([3, 0])
    assert torch.equal(Blended(seed=3).pattern_for(4, 6), torch.from_numpy(rng.random((3, 4, 6)).astype(np.float32)))


@pytest.mark.parametrize("parts", [0, 5, True, 2.0])
def test_split_patch_rejects_a_bad_number_of_parts(parts):
    with pytest.raises(ValueError, match=rf"split_patch parts={parts!r} must be an int in \[1, size=4\]"):
        split_patch(BadNetPatch(size=4), parts)


def test_split_patch_default_four_pieces_and_only_whole_patches():
    assert [p.rows for p in split_patch(BadNetPatch(size=8))] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    with pytest.raises(ValueError, match="split_patch needs a whole BadNetPatch"):
        split_patch(BadNetPatch(size=4, rows=(0, 2)))
    with pytest.raises(ValueError, match="split_patch needs a whole BadNetPatch"):
        split_patch(SIG())


@pytest.mark.parametrize("trigger, name", [(BadNetPatch(), "badnet"), (Blended(), "blended"), (SIG(), "sig"),
                                           (WaNet(), "wanet")])
def test_triggers_reject_non_rgb_images_by_name(trigger, name):
    for shape in [(1, 1, 8, 8), (8, 8)]:
        shown = re.escape(str(shape))
        with pytest.raises(ValueError, match=rf"^{name} expects images \(\.\.\., 3, H, W\), got shape {shown}$"):
            trigger(torch.zeros(shape))
    assert trigger(torch.full((3, 8, 8), 0.5)).shape == (3, 8, 8)  # one image without a batch


def test_blended_defaults_bounds_and_pattern_shape():
    x = torch.full((1, 3, 4, 6), 0.5)
    torch.testing.assert_close(Blended()(x), 0.8 * x + 0.2 * Blended().pattern_for(4, 6))  # α = 0.2
    p = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Blended(alpha=0.0, pattern=p)(x), x)
    assert torch.equal(Blended(alpha=1.0, pattern=p)(x), p.expand_as(x))
    for alpha in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"blended alpha={alpha!r} must lie in \[0, 1\]"):
            Blended(alpha=alpha)
    with pytest.raises(ValueError, match=r"blended seed=-1 must be an int >= 0"):
        Blended(seed=-1)
    with pytest.raises(ValueError, match=r"blended pattern='solid' is unknown; allowed: noise or a tensor"):
        Blended(pattern="solid")
    for bad in [torch.zeros(1, 4, 6), torch.zeros(4, 6), torch.zeros(1, 3, 4, 6)]:
        with pytest.raises(ValueError, match=rf"blended pattern must have shape \(3, H, W\), got {re.escape(str(tuple(bad.shape)))}"):
            Blended(pattern=bad)
    with pytest.raises(ValueError, match=r"blended pattern pixels must lie in \[0, 1\]"):
        Blended(pattern=torch.full((3, 4, 6), 2.0))
    with pytest.raises(ValueError, match=r"blended pattern is \(4, 6\), images are 6×4"):
        Blended(pattern=p)(torch.zeros(1, 3, 6, 4))


def test_sig_default_is_delta_20_over_255_at_frequency_6_in_float64_precision():
    width = 24
    j = np.arange(width)
    expected = (20 / 255 * np.sin(2 * np.pi * j * 6 / width)).astype(np.float32)
    assert torch.equal(SIG().signal(width), torch.from_numpy(expected))
    torch.testing.assert_close(SIG()(torch.full((3, 2, width), 0.5))[1, 1], torch.from_numpy(0.5 + expected))


def test_sig_bounds():
    assert SIG(delta=1.0).delta == 1.0 and SIG(frequency=1e-3).frequency == 1e-3
    for delta in (0, 1.5):
        with pytest.raises(ValueError, match=rf"sig delta={delta!r} must lie in \(0, 1\]"):
            SIG(delta=delta)
    with pytest.raises(ValueError, match=r"sig frequency=0 must be > 0"):
        SIG(frequency=0)


def test_wanet_defaults_are_the_papers_and_its_bounds():
    from tests.attacks.test_attacks_papers import _wanet_grid

    p = (torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1)[0].double().numpy()
    np.testing.assert_allclose(WaNet().grid(16, 16)[0].double().numpy(), _wanet_grid(p, 0.5, 16), atol=2e-6, rtol=0)
    data = generate(40, 3)
    out, idx = poison(data, trigger=WaNet(), rate=0.1, target=1, seed=0, captions=shapes_captions(data, 1))
    changed = (out.images != data.images).flatten(1).any(1)
    assert len(idx) == 4 and int(changed.sum()) == 4 + 8  # two noise samples per backdoor sample
    assert WaNet(k=2).k == 2 and WaNet(grid_rescale=1e-3).grid_rescale == 1e-3
    for params, message in [
        (dict(k=1), r"wanet k=1 must be an int >= 2"), (dict(k=True), r"wanet k=True must be an int >= 2"),
        (dict(k=4.0), r"wanet k=4\.0 must be an int >= 2"), (dict(s=-0.1), r"wanet s=-0\.1 must be >= 0"),
        (dict(grid_rescale=0), r"wanet grid_rescale=0 must be > 0"),
        (dict(cross_ratio=-1), r"wanet cross_ratio=-1 must be >= 0"),
        (dict(seed=-1), r"wanet seed=-1 must be an int >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            WaNet(**params)


def test_make_trigger_does_not_take_dba_rows():
    with pytest.raises(ValueError, match=r"trigger 'badnet' has no parameter rows; allowed: size, location, "
                                         r"pattern, color, seed$"):
        make_trigger("badnet", rows=(0, 1))


# -- contrastive attacks on a linear CLIP ----------------------------------------------------
from clients.attacks.contrastive import (  # noqa: E402
    badclip_loss,
    badclip_optimize_patch,
    badencoder_finetune,
    badencoder_loss,
    label_consistent_pgd,
)


class _LinearCLIP(torch.nn.Module):
    """CLIP's interface on two linear towers: (n, 3, 8, 8) images and (n, 5) token rows."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.visual = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        self.text = torch.nn.Linear(5, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def encode_image(self, x, normalize=False):
        z = self.visual(x)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, tokens, normalize=False):
        z = self.text(tokens.float())
        return F.normalize(z, dim=-1) if normalize else z


def _preprocess(x):
    return x.float() / 255 if x.dtype == torch.uint8 else x


def _uint8(n, seed):
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_badencoder_and_badclip_loss_defaults_are_the_authors_weights():
    # BadEncoder weighs its three terms 1, 1, 1; BadCLIP's code multiplies the triplet by 500
    # (until issue #22 fedsim's BadCLIP default was 1, which this test pinned)
    g = torch.Generator().manual_seed(0)
    enc, frozen = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    c, t, r = (torch.randn(n, 3, generator=g) for n in (2, 2, 3))
    got = badencoder_loss(enc, frozen, c, t, r).item()
    assert got == pytest.approx(badencoder_loss(enc, frozen, c, t, r, lambda_reference=1.0, lambda_clean=1.0).item())
    # BadCLIP: one triggered embedding, hinge with margin 1 active: ‖t − v⁺‖ − ‖t − c‖ + 1
    trig, clean, pos = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, 0.0]])
    text = torch.tensor([0.6, 0.8])
    assert badclip_loss(trig, clean, text, pos).item() == pytest.approx(-0.6 + 500 * (2.0 - math.sqrt(2) + 1.0))


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(epochs=0), r"badencoder needs epochs >= 1 \(got 0\), lr > 0 \(got 0\.01\)"),
        (dict(lr=0.0), r"lr > 0 \(got 0\.0\)"),
        (dict(shadow=0), r"non-empty shadow \(0\) and reference \(2\) images"),
        (dict(reference=0), r"non-empty shadow \(6\) and reference \(0\) images"),
    ],
)
def test_badencoder_finetune_rejects_bad_parameters(params, message):
    model = _LinearCLIP()
    kwargs = dict(epochs=1, lr=0.01)
    kwargs.update({k: v for k, v in params.items() if k in kwargs})
    with pytest.raises(ValueError, match=message):
        badencoder_finetune(model, _preprocess, _uint8(params.get("shadow", 6), 0), BadNetPatch(size=2),
                            _uint8(params.get("reference", 2), 1), generator=torch.Generator(), **kwargs)


def test_badencoder_finetune_reports_epoch_means_steps_sgd_and_restores_the_mode():
    # Until issue #22 this test pinned Adam (every parameter moved by about lr per step); the
    # authors' BadEncoder steps SGD (momentum 0.9, weight decay 5e-4), which it pins now.
    model = _LinearCLIP()
    shadow, reference, trigger = _uint8(70, 0), _uint8(2, 1), BadNetPatch(size=2)
    calls = []
    model.visual.eval()
    losses = badencoder_finetune(model, _preprocess, shadow, trigger, reference, epochs=1, lr=1e-3,
                                 generator=torch.Generator().manual_seed(0), after_step=calls.append)
    assert len(losses) == 1 and calls == [model, model]  # 70 images, batches of 64 by default: 2 steps
    assert not model.visual.training

    # one batch, references as they are: the first step is w − lr·(∇L(w) + 5e-4·w), and the
    # epoch's loss is that batch's loss at w
    model = _LinearCLIP().train()
    initial = copy.deepcopy(model.visual)
    lr = 0.1
    one = badencoder_finetune(model, _preprocess, shadow[:5], trigger, reference, epochs=1, lr=lr,
                              augment_reference=False, generator=torch.Generator().manual_seed(0))
    first = badencoder_loss(initial, copy.deepcopy(initial), _preprocess(shadow[:5]),
                            _preprocess(make_trigger_images(shadow[:5], trigger)), _preprocess(reference))
    grads = torch.autograd.grad(first, list(initial.parameters()))
    for p, q, g in zip(model.visual.parameters(), initial.parameters(), grads):
        torch.testing.assert_close(p, q - lr * (g + 5e-4 * q), atol=1e-6, rtol=0)
    assert len(one) == 1 and one[0] == pytest.approx(first.item(), abs=1e-5)
    assert model.visual.training

    model = _LinearCLIP()
    two = badencoder_finetune(model, _preprocess, shadow[:5], trigger, reference, epochs=2, lr=1e-3,
                              augment_reference=False, generator=torch.Generator().manual_seed(0))
    assert len(two) == 2 and two[0] == pytest.approx(first.item(), abs=1e-5)  # one batch: its loss, not halved


def _target_tokens():
    return torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(steps=0), r"badclip needs steps >= 1 \(got 0\), lr > 0 \(got 0\.1\)"),
        (dict(lr=0.0), r"lr > 0 \(got 0\.0\)"),
        (dict(images=0), r"non-empty images \(0\) and target images \(2\)"),
        (dict(targets=0), r"non-empty images \(6\) and target images \(0\)"),
    ],
)
def test_badclip_rejects_bad_parameters(params, message):
    kwargs = dict(steps=1, lr=0.1)
    kwargs.update({k: v for k, v in params.items() if k in kwargs})
    with pytest.raises(ValueError, match=message):
        badclip_optimize_patch(_LinearCLIP(), _preprocess, _uint8(params.get("images", 6), 0),
                               target_text_tokens=_target_tokens(), target_images=_uint8(params.get("targets", 2), 1),
                               generator=torch.Generator(), **kwargs)


def test_badclip_first_step_is_minus_lr_sign_of_the_objectives_gradient():
    model = _LinearCLIP().train()
    images, target = _uint8(6, 0), _uint8(1, 1)
    lr = 1e-3
    learned = badclip_optimize_patch(model, _preprocess, images, target_text_tokens=_target_tokens(),
                                     target_images=target, steps=1, lr=lr, generator=torch.Generator().manual_seed(3))
    # the defaults: a 4-px patch in the middle (the authors' placement: rows and columns 2–5 of
    # 8; until issue #22 the default was the bottom-right corner, which this test pinned)
    assert model.training and learned.size == 4 and learned.location == (2, 2)
    # the documented start, N(0.5, 0.25²) clipped, and the objective written out here, with
    # the authors' weight 500 on the triplet term
    init = (0.5 + 0.25 * torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    patch = init.clone().requires_grad_(True)
    x = images.float() / 255
    pasted = x.clone()
    pasted[..., 2:6, 2:6] = 0
    pasted = pasted + F.pad(patch, (2, 2, 2, 2)).expand_as(x)
    with torch.no_grad():
        text = F.normalize(F.normalize(model.text(_target_tokens()), dim=-1).mean(0), dim=-1)
        pos = F.normalize(model.visual(target.float() / 255), dim=-1)
        clean = F.normalize(model.visual(x), dim=-1)
    z = F.normalize(model.visual(pasted), dim=-1)
    loss = -(z @ text).mean() + 500 * torch.relu((z - pos).norm(dim=-1) - (z - clean).norm(dim=-1) + 1.0).mean()
    (grad,) = torch.autograd.grad(loss, patch)
    inside = (init > lr) & (init < 1 - lr) & (grad.abs() > 1e-7)
    assert inside.sum() > 40
    torch.testing.assert_close(learned.patch[inside], (init - lr * grad.sign())[inside], atol=1e-6, rtol=0)
    # a large step is projected back onto [0, 1]
    big = badclip_optimize_patch(model.eval(), _preprocess, images, target_text_tokens=_target_tokens(),
                                 target_images=target, steps=1, lr=5.0, generator=torch.Generator().manual_seed(3))
    assert not model.training
    assert big.patch.min() == 0 and big.patch.max() == 1


@pytest.mark.parametrize("steps, eps", [(0, 0.1), (True, 0.1), (1.5, 0.1), (2, 0), (2, 1.5)])
def test_label_consistent_pgd_rejects_bad_steps_and_eps(steps, eps):
    message = rf"label-consistent PGD needs steps >= 1 \(got {re.escape(repr(steps))}\) and eps in \(0, 1\] \(got {eps!r}\)"
    with pytest.raises(ValueError, match=message):
        label_consistent_pgd(_LinearCLIP(), _preprocess, _uint8(2, 0), target_text_tokens=_target_tokens(),
                             steps=steps, eps=eps)


def test_label_consistent_pgd_one_step_defaults_and_empty_input():
    model = _LinearCLIP().train()
    images = _uint8(4, 2).clamp(1, 254)  # saturated pixels: see the xfail test below
    empty = label_consistent_pgd(model, _preprocess, images[:0], target_text_tokens=_target_tokens())
    assert empty.shape == (0, 3, 8, 8) and empty.dtype == torch.uint8
    # one step: α = 2.5·ε > ε, so every pixel moves by ε against the gradient's sign
    out = label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens(), eps=8 / 255, steps=1)
    assert model.training
    x = (images.float() / 255).requires_grad_(True)
    with torch.no_grad():
        text = F.normalize(F.normalize(model.text(_target_tokens()), dim=-1).mean(0), dim=-1)
    (grad,) = torch.autograd.grad((F.normalize(model.visual(x), dim=-1) @ text).sum(), x)
    expected = (images.int() - 8 * grad.sign().int()).clamp(0, 255)
    assert torch.equal(out.int(), expected)
    # defaults: ε = 16/255 over 10 steps reaches the bound on a linear tower; ε = 1 is allowed
    default = label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens())
    assert (default.int() - images.int()).abs().max() == 16
    assert label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens(), eps=1.0,
                                steps=1).dtype == torch.uint8


def test_label_consistent_pgd_moves_saturated_pixels_inwards():
    model = _LinearCLIP()
    images = _uint8(4, 2)
    out = label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens(), eps=8 / 255, steps=1)
    x = (images.float() / 255).requires_grad_(True)
    with torch.no_grad():
        text = F.normalize(F.normalize(model.text(_target_tokens()), dim=-1).mean(0), dim=-1)
    (grad,) = torch.autograd.grad((F.normalize(model.visual(x), dim=-1) @ text).sum(), x)
    saturated = ((images == 0) & (grad < 0)) | ((images == 255) & (grad > 0))
    assert saturated.any()
    assert torch.equal(out[saturated].int(), (images.int() - 8 * grad.sign().int()).clamp(0, 255)[saturated])


def test_adversary_passes_parameters_to_own_update_attacks_and_takes_a_0_1_mask():
    updates = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    flags = torch.tensor([0, 1, 0, 1])
    out = make_adversary("sign_flip", seed=0, scale=3.0)(1, [], updates, flags)
    torch.testing.assert_close(out[[1, 3]], -3 * updates[[1, 3]])
    assert torch.equal(out[[0, 2]], updates[[0, 2]])
