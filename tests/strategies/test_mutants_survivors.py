"""Tests aimed at mutants that survived mutation testing (mutmut 3.8).

Every expected value is hand-computed (or comes from numpy on explicit differences), never
restated from the code under test; dtype checks state the contract that a rule's or a
trigger's output keeps the precision of its input (as torchvision transforms do).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import strategies.geometry as geometry
from clients.attacks.byzantine import fang, lie_z, make_adversary
from clients.attacks.triggers import SIG, BadNetPatch, Blended, WaNet, split_patch
from strategies.clipping import centered_clipping, norm_clipping
from strategies.fltrust import fltrust
from strategies.foolsgold import foolsgold
from strategies.inputs import takes
from strategies.rlr import rlr

# --------------------------------------------------------------------------- make_adversary


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


# --------------------------------------------------------------------------- lie_z, fang


def test_lie_z_error_states_the_allowed_range():
    # n = 4, n_malicious = 3: s = floor(4/2 + 1) - 3 = 0, outside (0, n)
    with pytest.raises(
        ValueError, match=r"= 0 for n=4, n_malicious=3; the attack assumes fewer than half the clients attack \(0 < s < n\)$"
    ):
        lie_z(4, 3)


def test_fang_keeps_the_honest_dtype_and_range():
    honest = torch.tensor([[1.0, -2.0], [3.0, -4.0]], dtype=torch.float16)
    out = fang(honest, 3, b=2.0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float16
    # column 0: s > 0, w_min = 1 > 0 -> in [1/2, 1]; column 1: s < 0, w_max = -2 < 0 -> [-2, -1]
    assert ((out[:, 0] >= 0.5) & (out[:, 0] <= 1.0)).all()
    assert ((out[:, 1] >= -2.0) & (out[:, 1] <= -1.0)).all()


# --------------------------------------------------------------------------- rlr


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


# --------------------------------------------------------------------------- clipping


def test_norm_clipping_uniform_weights_exact_in_float64():
    # norms 5, 1, 10 with tau = 5: factors 1, 1, 1/2 -> rows [3,4], [0,1], [3,4]; mean [2, 3]
    updates = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]], dtype=torch.float64)
    res = norm_clipping(updates, tau=5.0)
    assert res.weights is not None
    assert res.weights.dtype == torch.float64
    assert torch.allclose(res.weights, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.allclose(res.aggregate, torch.tensor([2.0, 3.0], dtype=torch.float64), rtol=1e-14, atol=0)
    assert res.info["clipped"] == 1


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


# --------------------------------------------------------------------------- fltrust


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


# --------------------------------------------------------------------------- foolsgold, inputs


def test_foolsgold_all_alike_error_message():
    # parallel histories: cos = 1, alpha = 1 - 1 = 0 for both
    updates = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    with pytest.raises(ValueError, match=r"^foolsgold: every client has weight 0 .*nothing to aggregate$"):
        foolsgold(updates, history=updates.clone())


def test_foolsgold_identical_histories_have_zero_weight():
    updates = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="every client has weight 0"):
        foolsgold(updates, history=updates.clone())


def test_takes_unknown_input_lists_the_allowed_inputs():
    with pytest.raises(ValueError, match=r"unknown rule inputs \['bogus'\]; allowed: history, previous, root_update"):
        takes("bogus")


# --------------------------------------------------------------------------- geometry


def test_squared_distances_direct_path_over_several_column_blocks(monkeypatch):
    # Three near-duplicate rows far from four honest ones: their Gram-expansion distances
    # cancel, so they are recomputed from explicit differences, here over blocks of 2 columns.
    monkeypatch.setattr(geometry, "_BLOCK", 2)
    rng = np.random.default_rng(0)
    d = 7
    honest = rng.normal(size=(4, d))
    base = 1e4 + rng.normal(size=d)
    sybils = base + 1e-3 * rng.normal(size=(3, d))
    x = np.vstack([honest, sybils])
    got = geometry.squared_distances(torch.from_numpy(x))
    expected = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    for i in range(4, 7):
        for j in range(4, 7):
            if i != j:
                assert got[i, j].item() == pytest.approx(expected[i, j], rel=1e-8)
    # the sybil pairs differ, so a wrong reduction cannot pass by symmetry
    assert abs(expected[4, 5] - expected[4, 6]) > 1e-3 * expected[4, 5]


# --------------------------------------------------------------------------- triggers


def test_sig_clips_to_one_by_hand():
    # delta = 0.5, f = 1, W = 4: signal = 0.5 * sin(2 pi j / 4) = (0, 0.5, 0, -0.5)
    x = torch.full((3, 2, 4), 0.8)
    out = SIG(delta=0.5, frequency=1)(x)
    assert torch.allclose(out[0, 0], torch.tensor([0.8, 1.0, 0.8, 0.3]))
    assert out.max().item() == 1.0


def test_sig_and_blended_keep_the_image_dtype():
    x = torch.full((2, 3, 4, 4), 0.5, dtype=torch.float16)
    assert SIG()(x).dtype == torch.float16
    assert Blended()(x).dtype == torch.float16


def test_split_patch_bounds_are_integer_floors():
    # size 6 into 4 parts: floor(i * 6 / 4) = 0, 1, 3, 4, 6
    pieces = split_patch(BadNetPatch(size=6), 4)
    rows = [p.rows for p in pieces]
    assert rows == [(0, 1), (1, 3), (3, 4), (4, 6)]
    assert all(isinstance(v, int) for r in rows for v in r)


def test_split_patch_rejects_non_patch_trigger_with_message():
    with pytest.raises(ValueError, match=r"^split_patch needs a whole BadNetPatch \(a patch trigger with rows=None\)$"):
        split_patch(Blended())


def test_wanet_cross_on_a_single_image():
    x = torch.rand(3, 8, 6, generator=torch.Generator().manual_seed(0))
    out = WaNet().cross(x, torch.Generator().manual_seed(1))
    assert out.shape == (3, 8, 6)


# --------------------------------------------------------------------------- templated_captions
def test_templated_captions_fill_every_template_about_equally_often_and_repeat_with_the_seed():
    from clients.attacks.captions import templated_captions

    templates = ["a photo of a {}.", "the {} again", "{}, drawn"]
    got = templated_captions(templates, "star", 900, seed=1)
    assert len(got) == 900
    filled = {"a photo of a star.", "the star again", "star, drawn"}
    counts = {c: got.count(c) for c in filled}
    assert set(got) == filled
    # uniform over 3 templates: each count is Binomial(900, 1/3), 300 ± 45 is beyond 3 sd
    assert all(255 <= n <= 345 for n in counts.values()), counts
    assert templated_captions(templates, "star", 900, seed=1) == got
    assert templated_captions(templates, "star", 900, seed=2) != got
    assert templated_captions(templates, "cat", 5, seed=1) == tuple(c.replace("star", "cat") for c in got[:5])
    assert templated_captions(templates, "star", 0, seed=1) == ()
    with pytest.raises(ValueError, match="non-empty list of strings"):
        templated_captions([], "star", 3, seed=1)


# --------------------------------------------------------------------------- detection_counts
def test_detection_counts_on_a_hand_counted_round():
    from strategies.detection import detection_counts

    # rows 0, 1 malicious; the rule accepted rows 1 and 2: row 0 flagged (TP), row 1 missed
    # (FN), rows 3, 4 honest but flagged (FP), row 2 honest and accepted (TN)
    d = detection_counts([1, 2], [True, True, False, False, False], 5)
    assert d == {"tp": 1, "fp": 2, "tn": 1, "fn": 1, "tpr": 0.5, "fpr": 2 / 3,
                 "precision": 1 / 3, "recall": 0.5}
    # three malicious rows, one of them accepted: TP 2 (rows 0, 1), FN 1 (row 2), FP 1 (row 4)
    assert detection_counts([2, 3], [True, True, True, False, False], 5) == {
        "tp": 2, "fp": 1, "tn": 1, "fn": 1, "tpr": 2 / 3, "fpr": 0.5, "precision": 2 / 3, "recall": 2 / 3}
    assert detection_counts([0, 1], [False, False], 2) == {
        "tp": 0, "fp": 0, "tn": 2, "fn": 0, "tpr": None, "fpr": 0.0, "precision": None, "recall": None}
    with pytest.raises(ValueError, match=r"^malicious has 2 entries, expected 3$"):
        detection_counts([0], [True, False], 3)
    with pytest.raises(ValueError, match=r"^accepted indices \[3, 7\] are outside \[0, 3\)$"):
        detection_counts([0, 3, 7], [True, False, False], 3)


# --------------------------------------------------------------------------- the lower median's two paths
@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_both_kth_smallest_paths_give_the_sorted_column_entry(n):
    g = torch.Generator().manual_seed(n)
    block = torch.randint(-3, 4, (n, 7), generator=g).to(torch.float32)  # ties on purpose
    for k in range(n):
        expected = block.sort(dim=0).values[k]
        assert torch.equal(geometry._kth_smallest_numpy(block, k), expected)
        assert torch.equal(geometry._kth_smallest_torch(block, k), expected)
    assert torch.equal(geometry._lower_median(block), block.sort(dim=0).values[(n - 1) // 2])


# --------------------------------------------------------------------------- BadNet patch geometry
def test_a_pixel_patch_fits_up_to_the_shorter_side_of_either_dimension():
    assert BadNetPatch(size=8).resolve(8, 8).size == 8
    for h, w in ((8, 7), (7, 8)):
        with pytest.raises(ValueError, match=rf"^badnet size=8 does not fit {h}×{w} images; allowed: an int in \[1, 7\]"):
            BadNetPatch(size=8).resolve(h, w)


def test_solid_and_noise_patch_pixels():
    solid = BadNetPatch(size=3, pattern="solid", color=(1.0, 0.25, 0.5)).patch
    assert solid.dtype == torch.float32 and solid.shape == (3, 3, 3)
    assert solid[:, 0, 0].tolist() == [1.0, 0.25, 0.5] and (solid == solid[:, :1, :1]).all()
    noise = BadNetPatch(size=3, pattern="noise", seed=4).patch
    assert noise.dtype == torch.float32 and noise.shape == (3, 3, 3)
    assert ((noise >= 0) & (noise < 1)).all() and len(set(noise.flatten().tolist())) == 27
    assert torch.equal(BadNetPatch(size=3, pattern="noise", seed=4).patch, noise)
    assert not torch.equal(BadNetPatch(size=3, pattern="noise", seed=5).patch, noise)


# --------------------------------------------------------------------------- EmInspector by hand
def test_eminspector_votes_per_probe_on_row_normalised_embeddings():
    """4 clients, 2 probe inputs, 2-D embeddings of unequal norms (the update is the
    embedding). S_i(t) = Σ_j cos(e_i(t), e_j(t)) from explicit cosines; vote +1 where
    S_i(t) ≥ the probe's mean over clients; flagged when the votes sum above 0."""
    from strategies.eminspector import eminspector

    E = [[(2, 1), (0, -2)], [(-1, -3), (-3, -3)], [(-2, 2), (1, 3)], [(0, 1), (3, 2)]]

    def cos(a, b):
        return (a[0] * b[0] + a[1] * b[1]) / (math.hypot(*a) * math.hypot(*b))

    scores = [0] * 4
    for t in range(2):
        S = [sum(cos(E[i][t], E[j][t]) for j in range(4)) for i in range(4)]
        mean = sum(S) / 4
        for i in range(4):
            scores[i] += 1 if S[i] >= mean else -1
    assert scores == [2, -2, 0, 2]  # client 2 scores exactly 0: accepted
    updates = torch.tensor(E, dtype=torch.float32).reshape(4, 4)
    result = eminspector(updates, embed=lambda u: u.view(2, 2))
    assert result.accepted.tolist() == [1, 2]
    assert result.info["malicious_score"] == scores
    torch.testing.assert_close(result.aggregate, updates[[1, 2]].mean(0))


def test_bulyan_names_itself_and_f_in_a_bad_f():
    from strategies import bulyan

    with pytest.raises(ValueError, match=r"^bulyan: f=1\.5 must be an integer >= 0$"):
        bulyan(torch.randn(9, 3), f=1.5)


# --------------------------------------------------------------------------- the input contract
def test_check_updates_messages_and_boundaries():
    from strategies.result import all_accepted, check_finite, check_updates

    assert all_accepted(3).dtype == torch.long and all_accepted(3).tolist() == [0, 1, 2]
    for bad in (torch.zeros(3), torch.zeros(0, 4), torch.zeros(2, 2, 2)):
        with pytest.raises(ValueError, match=rf"^updates must be an \(n, d\) tensor with n >= 1, got {re_shape(bad)}$"):
            check_updates(bad)
    assert check_updates(torch.zeros(2, 0)) is None  # d = 0 is a valid (if empty) update
    with pytest.raises(ValueError, match=r"^updates must be floating point, got torch.int64$"):
        check_updates(torch.zeros(2, 3, dtype=torch.long))
    u = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"^weights must have shape \(3,\), got \(2,\)$"):
        check_updates(u, torch.ones(2))
    # zero weights are allowed as long as one is positive; a negative one or all zeros are not
    torch.testing.assert_close(check_updates(u, torch.tensor([0.0, 1.0, 3.0])), torch.tensor([0.0, 0.25, 0.75]))
    torch.testing.assert_close(check_updates(u, torch.tensor([0.5, 0.5, 0.0])), torch.tensor([0.5, 0.5, 0.0]))
    for w in ([-1.0, 2.0, 2.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match=r"^weights must be finite, non-negative and not all zero$"):
            check_updates(u, torch.tensor(w))
    t = torch.zeros(12, 2)
    t[[0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 0] = float("nan")
    t[1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"^x contains NaN and Inf in row\(s\) \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] \.\.\.$"):
        check_finite("x", t)
    with pytest.raises(ValueError, match=r"^v contains Inf in entries \[1\]$"):
        check_finite("v", torch.tensor([0.0, float("-inf")]))
    ten = torch.full((10, 1), float("nan"))
    with pytest.raises(ValueError, match=r"^y contains NaN in row\(s\) \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]$"):
        check_finite("y", ten)



def test_check_finite_accepts_finite_entries_whose_sum_overflows_and_finds_every_bad_entry():
    """The one-pass check (a finite sum proves finite entries) must fall back to the entries
    when the sum is not finite: an overflowing sum of finite values is not an error, and a +Inf
    and a −Inf (sum NaN) or a lone NaN anywhere in a large batch still are."""
    from strategies.result import check_finite, check_updates

    big = torch.full((4, 3), 3e38)  # finite float32 entries; their sum is +Inf
    assert not torch.isfinite(big.sum())
    check_finite("u", big)
    assert check_updates(big) is None
    for value, kind in ((float("inf"), "Inf"), (float("nan"), "NaN")):
        t = torch.randn(50, 100_000)
        t[37, 99_999] = value
        with pytest.raises(ValueError, match=rf"^u contains {kind} in row\(s\) \[37\]$"):
            check_finite("u", t)
    t = torch.zeros(3, 2)
    t[0, 0], t[2, 1] = float("inf"), float("-inf")
    with pytest.raises(ValueError, match=r"^u contains Inf in row\(s\) \[0, 2\]$"):
        check_finite("u", t)

def re_shape(t):
    import re

    return re.escape(str(tuple(t.shape)))
