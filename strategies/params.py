"""Checks of the rules' paper parameters. A bad value raises ValueError — the only exception
type the server and the config validator expect for bad parameters — naming the rule, the
parameter, its value and what is allowed."""

from __future__ import annotations

import math
import numbers


def require_int(rule: str, name: str, value, *, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int if it is an integer in [low, high] (no upper bound when None)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
        or (high is not None and value > high)
    ):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{rule}: {name}={value!r} must be {allowed}")
    return int(value)


def require_bool(rule: str, name: str, value) -> bool:
    """``value`` if it is a bool (not merely truthy: a config's "false" string must not pass)."""
    if not isinstance(value, bool):
        raise ValueError(f"{rule}: {name}={value!r} must be true or false")
    return value


def require_real(
    rule: str, name: str, value, *, low: float = 0.0, strict: bool = True, high: float | None = None
) -> float:
    """``value`` as a float if it is a finite real > low (≥ low when not ``strict``) and, when
    ``high`` is given, < high."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if strict else value >= low)
        and (high is None or value < high)
    )
    if not ok:
        allowed = f"{'>' if strict else '>='} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{rule}: {name}={value!r} must be a finite number {allowed}")
    return float(value)
