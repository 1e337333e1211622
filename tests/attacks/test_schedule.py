"""Attack schedules (clients/attacks/schedule.py): the rounds each kind is active in, its
defaults and boundaries, and the validation that names every value out of range and every
parameter its kind does not use."""

import pickle

import pytest

from clients.attacks import Schedule, make_schedule


@pytest.mark.parametrize(
    "params, active",
    [
        (dict(kind="every"), list(range(1, 13))),
        (dict(kind="every", stop=3), [1, 2, 3]),
        (dict(kind="from", start=5), list(range(5, 13))),
        (dict(kind="every_k", start=2, every=3), [2, 5, 8, 11]),
        (dict(kind="every_k", start=2, every=3, stop=8), [2, 5, 8]),
        (dict(kind="single_shot", start=7), [7]),
        (dict(kind="window", start=3, stop=6), [3, 4, 5, 6]),
    ],
)
def test_schedules(params, active):
    schedule = make_schedule(**params)
    assert [r for r in range(1, 13) if schedule(r)] == active
    assert pickle.loads(pickle.dumps(schedule)) == schedule


def test_schedule_rejects_bad_params():
    with pytest.raises(ValueError, match="'sometimes'.*every, from"):
        make_schedule("sometimes")
    with pytest.raises(ValueError, match="start=0"):
        make_schedule("from", start=0)
    with pytest.raises(ValueError, match="every"):
        make_schedule("single_shot", start=3, every=2)
    with pytest.raises(ValueError, match="stop"):
        make_schedule("window", start=3)
    with pytest.raises(ValueError, match="stop=2"):
        make_schedule("window", start=3, stop=2)


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
