"""When an attacker attacks: a picklable predicate on the server round (rounds count from 1).

Bagdasaryan et al. (AISTATS 2020) attack in a single shot late in training or repeatedly;
Neurotoxin (Zhang et al., ICML 2022) attacks in a window and then measures how long the
backdoor lasts after it stops."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("every", "from", "every_k", "single_shot", "window")


@dataclass(frozen=True)
class Schedule:
    """Active in round r iff start ≤ r, (r − start) is a multiple of ``every``, and r ≤ stop
    (when stop is set)."""

    start: int = 1
    every: int = 1
    stop: int | None = None

    def __call__(self, server_round: int) -> bool:
        if server_round < self.start or (self.stop is not None and server_round > self.stop):
            return False
        return (server_round - self.start) % self.every == 0


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"schedule {name}={value!r} must be an int >= 1")
    return value


def make_schedule(kind: str = "every", start: int = 1, every: int = 1, stop: int | None = None) -> Schedule:
    """The one factory from a config's schedule to a predicate ``active(round) -> bool``:

    - "every": every round (up to ``stop``, if given);
    - "from": every round from ``start`` (up to ``stop``);
    - "every_k": rounds start, start + every, start + 2·every, … (up to ``stop``);
    - "single_shot": round ``start`` only;
    - "window": rounds ``start`` … ``stop`` inclusive.

    A parameter a kind does not use must keep its default (it would be silently ignored)."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule kind={kind!r} is unknown; allowed: {', '.join(SCHEDULES)}")
    start, every = _positive_int(start, "start"), _positive_int(every, "every")
    if stop is not None and _positive_int(stop, "stop") < start:
        raise ValueError(f"schedule stop={stop} must be >= start={start}")
    unused = {
        "every": {"start": start != 1, "every": every != 1},
        "from": {"every": every != 1},
        "every_k": {},
        "single_shot": {"every": every != 1, "stop": stop is not None},
        "window": {"every": every != 1},
    }[kind]
    bad = [name for name, given in unused.items() if given]
    if bad:
        raise ValueError(f"schedule kind={kind!r} does not use {', '.join(bad)}; leave it at its default")
    if kind == "window" and stop is None:
        raise ValueError("schedule kind='window' needs stop")
    if kind == "single_shot":
        stop = start
    return Schedule(start=start, every=every, stop=stop)
