"""What every aggregation rule in RULES shares (each rule's own tests are in its module's file:
test_krum.py, test_bulyan.py, …): the result's contract, permutation invariance, a far outlier
never accepted by the filtering rules, bad parameters, preconditions and non-finite input
refused with a message naming them, the input contract itself (strategies/result.py) by hand,
and the parameters the rules record in rounds.jsonl. Data is non-collinear random (fixed
generators) unless a hand case needs otherwise."""

import numpy as np
import pytest
import torch

from strategies import (
    RULES,
    bulyan,
    centered_clipping,
    dnc,
    flame,
    fltrust,
    foolsgold,
    geometric_median,
    krum,
    multi_krum,
    norm_clipping,
    rlr,
    trimmed_mean,
)
from tests.strategies.seeded import gen, randn

# -- properties shared by all rules --------------------------------------------------------


N, D = 11, 24


def _params(name: str, x: torch.Tensor, seed: int = 0) -> dict:
    """Paper parameters and stateful inputs for every rule in RULES (a missing rule fails)."""
    return {
        "fedavg": {},
        "median": {},
        "trimmed_mean": {"beta": 0.2},
        "krum": {"f": 2},
        "multi_krum": {"f": 2, "m": 5},
        "bulyan": {"f": 2},
        "geometric_median": {},
        "norm_clipping": {"tau": 2.0, "sigma": 0.0, "generator": gen(seed)},
        "centered_clipping": {"tau": 2.0, "L": 3, "previous": x.mean(0) * 0.5},
        "flame": {"lam": 0.0, "generator": gen(seed)},
        "foolsgold": {"history": x * 2 + 0.5},
        "fltrust": {"root_update": x.mean(0)},
        "rlr": {"theta": 4},
        "dnc": {"f": 2, "b": 10, "generator": gen(seed)},
        # a linear "model" with 4 probe inputs and 8-d embeddings
        "eminspector": {"embed": lambda u: (randn(32, D, seed=seed + 1, dtype=u.dtype) @ u).view(4, 8)},
    }[name]


def _permuted(params: dict, perm: torch.Tensor) -> dict:
    return {k: v[perm] if k == "history" else v for k, v in params.items()}


@pytest.mark.parametrize("name", sorted(RULES))
def test_contract_shape_dtype_accepted(name):
    x = randn(N, D, seed=19)
    x[:, 0] += 1.0  # shared direction so every rule has something to agree on
    result = RULES[name](x, weights=torch.arange(1.0, N + 1), **_params(name, x))
    assert result.aggregate.shape == (D,) and result.aggregate.dtype == x.dtype
    assert torch.isfinite(result.aggregate).all()
    acc = result.accepted
    assert acc.dtype == torch.int64 and acc.ndim == 1 and len(acc) >= 1
    assert acc.tolist() == sorted(set(acc.tolist())) and 0 <= acc.min() and acc.max() < N
    if result.weights is not None:
        assert result.weights.shape == (N,)
    for v in result.info.values():
        assert isinstance(v, (int, float, bool, str, list, type(None)))


@pytest.mark.parametrize("name", sorted(RULES))
def test_permutation_invariance(name):
    x = randn(N, D, seed=20)
    x[:, 0] += 1.0
    perm = torch.randperm(N, generator=gen(21))
    a = RULES[name](x, **_params(name, x))
    b = RULES[name](x[perm], **_permuted(_params(name, x), perm))
    torch.testing.assert_close(b.aggregate, a.aggregate, atol=1e-5, rtol=1e-5)
    assert sorted(perm[b.accepted].tolist()) == a.accepted.tolist()


@pytest.mark.parametrize("name", ["krum", "multi_krum", "bulyan", "flame", "dnc"])
def test_far_outlier_is_never_accepted(name):
    for seed in range(5):
        x = randn(N, D, seed=30 + seed)
        x[:, 0] += 2.0
        bad = seed % N
        x[bad] = 1e3 * randn(D, seed=40 + seed)
        assert bad not in RULES[name](x, **_params(name, x, seed)).accepted.tolist()


@pytest.mark.parametrize(
    "rule,n,kwargs,message",
    [
        (krum, 7, {"f": 3}, "krum: f=3 needs n > 2f + 2 = 8 clients, got n=7"),
        (krum, 7, {"f": -1}, "krum: f=-1 must be an integer >= 0"),
        (krum, 7, {"f": 1.5}, "krum: f=1.5 must be an integer"),
        (krum, 7, {"f": True}, "krum: f=True must be an integer"),
        (multi_krum, 8, {"f": 3}, "multi_krum: f=3 needs n > 2f + 2 = 8 clients, got n=8"),
        (multi_krum, 8, {"f": 1, "m": 0}, "multi_krum: m=0 must be an integer in [1, 8]"),
        (multi_krum, 8, {"f": 1, "m": 9}, "multi_krum: m=9 must be an integer in [1, 8]"),
        (bulyan, 10, {"f": 2}, "bulyan: f=2 needs n >= 4f + 3 = 11 clients, got n=10"),
        (trimmed_mean, 8, {"beta": 0.5}, "trimmed_mean: beta=0.5 must be a finite number >= 0.0 and < 0.5"),
        (trimmed_mean, 8, {"beta": -0.1}, "trimmed_mean: beta=-0.1"),
        (geometric_median, 5, {"nu": 0.0}, "geometric_median: nu=0.0 must be a finite number > 0"),
        (geometric_median, 5, {"max_iter": 0}, "geometric_median: max_iter=0 must be an integer >= 1"),
        (geometric_median, 5, {"tol": -1.0}, "geometric_median: tol=-1.0"),
        (norm_clipping, 5, {"tau": 0.0}, "norm_clipping: tau=0.0 must be a finite number > 0"),
        (norm_clipping, 5, {"tau": 1.0, "sigma": -0.1}, "norm_clipping: sigma=-0.1 must be a finite"),
        (norm_clipping, 5, {"tau": float("inf")}, "norm_clipping: tau=inf"),
        (centered_clipping, 5, {"tau": -1.0}, "centered_clipping: tau=-1.0"),
        (centered_clipping, 5, {"tau": 1.0, "L": 0}, "centered_clipping: L=0 must be an integer >= 1"),
        (centered_clipping, 5, {"tau": 1.0, "previous": torch.zeros(3)}, "centered_clipping: previous has"),
        (flame, 5, {"lam": -1.0}, "flame: lam=-1.0 must be a finite number >= 0"),
        (flame, 1, {}, "flame: needs n >= 2 clients"),
        (foolsgold, 5, {"history": torch.zeros(5, 16), "kappa": 0.0}, "foolsgold: kappa=0.0"),
        (foolsgold, 5, {"history": torch.zeros(4, 16)}, "foolsgold: history has shape"),
        (fltrust, 5, {"root_update": torch.zeros(15)}, "fltrust: root_update has shape"),
        (rlr, 5, {"theta": 6}, "rlr: theta=6 must be an integer in [0, 5]"),
        (rlr, 5, {"theta": 2, "eta": 0.0}, "rlr: eta=0.0"),
        (dnc, 5, {"f": 5}, "dnc: c*f = 1.0*5 removes 5 of n=5 clients"),
        (dnc, 5, {"f": 1, "c": 0.0}, "dnc: c=0.0"),
        (dnc, 5, {"f": 1, "niters": 0}, "dnc: niters=0"),
        (dnc, 5, {"f": 1, "b": 0}, "dnc: b=0"),
    ],
)
def test_bad_parameters_and_preconditions_raise_value_error(rule, n, kwargs, message):
    with pytest.raises(ValueError) as error:
        rule(randn(n, 16, seed=50), **kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize("name", sorted(RULES))
def test_bad_input_raises_value_error(name):
    x = randn(N, D, seed=60)
    with pytest.raises(ValueError, match="weights"):
        RULES[name](x, weights=-torch.ones(N), **_params(name, x))


# -- non-finite input ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", sorted(RULES))
def test_non_finite_updates_and_weights_raise_value_error_naming_the_rows(name, bad):
    x = randn(N, D, seed=61)
    params = _params(name, x)
    y = x.clone()
    y[[3, 7], 5] = bad
    with pytest.raises(ValueError, match=r"updates contains (NaN|Inf) in row\(s\) \[3, 7\]"):
        RULES[name](y, **params)
    w = torch.ones(N)
    w[2] = bad
    with pytest.raises(ValueError, match=r"weights contains (NaN|Inf) in entries \[2\]"):
        RULES[name](x, weights=w, **params)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize(
    "name,key,message",
    [
        ("foolsgold", "history", r"foolsgold: history contains \w+ in row\(s\) \[4\]"),
        ("fltrust", "root_update", r"fltrust: root_update contains \w+ in entries \[4\]"),
        ("centered_clipping", "previous", r"centered_clipping: previous contains \w+ in entries \[4\]"),
    ],
)
def test_non_finite_state_inputs_raise_value_error(name, key, message, bad):
    x = randn(N, D, seed=62)
    params = _params(name, x)
    params[key] = params[key].clone()
    params[key][4] = bad
    with pytest.raises(ValueError, match=message):
        RULES[name](x, **params)


# -- the input contract (strategies/result.py) ---------------------------------------------


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


# -- info: what the rules record in rounds.jsonl, by hand ----------------------------------


def test_krum_family_and_bulyan_record_their_parameters():
    x = randn(11, 6, seed=84)
    k = krum(x, f=2)
    assert k.info["f"] == 2 and k.info["selected"] == int(k.accepted[0])
    assert k.info["selected"] == int(np.argmin(k.info["scores"]))
    mk = multi_krum(x, f=2, m=4)
    assert (mk.info["f"], mk.info["m"]) == (2, 4) and len(mk.accepted) == 4
    assert multi_krum(x, f=3).info["m"] == 8  # default n − f
    b = bulyan(x, f=2)
    assert (b.info["f"], b.info["theta"], b.info["beta"]) == (2, 7, 3)


def test_trimmed_mean_rlr_and_dnc_record_their_parameters():
    x = randn(10, 8, seed=85)
    assert trimmed_mean(x, beta=0.25).info == {"beta": 0.25, "trimmed_each_side": 2}
    r = rlr(x, theta=3, eta=0.5)
    votes = torch.sign(x).sum(0).abs()
    assert r.info == {"theta": 3, "eta": 0.5, "flipped": int((votes < 3).sum()), "d": 8}
    assert dnc(x, f=2, c=1.5, niters=2, b=5, generator=gen(1)).info == {
        "removed_per_iter": 3, "b": 5, "niters": 2
    }


def test_flame_fltrust_and_foolsgold_record_their_parameters():
    x = randn(6, 10, seed=86, dtype=torch.float64)
    x[:, 0] += 3.0
    fl = flame(x, lam=0.01, generator=gen(0))
    assert len(fl.info["labels"]) == 6 and fl.info["all_noise"] is False
    s_t = float(np.median(np.linalg.norm(x.numpy(), axis=1)))
    assert fl.info["S_t"] == pytest.approx(s_t, rel=1e-12) and fl.info["sigma"] == pytest.approx(0.01 * s_t)
    root = torch.tensor([3.0, 4.0] + [0.0] * 8, dtype=torch.float64)
    assert fltrust(x, root_update=root).info["root_norm"] == 5.0
    fg = foolsgold(x, history=x, kappa=2.0, normalize=False)
    assert fg.info["kappa"] == 2.0 and fg.info["normalize"] is False
