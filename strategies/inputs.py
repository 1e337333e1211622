"""The extra inputs a rule may ask the strategy for, besides this round's updates and weights.

A rule declares them with ``takes(...)(rule)`` after its definition — not as a decorator:
mutmut (``make mutants``) does not mutate decorated functions. The strategy keeps the state
behind each one and passes exactly those keyword arguments. The rule stays a pure function
of what it is given."""

from __future__ import annotations

from collections.abc import Callable

INPUTS = {
    "history": "per-client sums of every update it sent, this round included, rows as updates (FoolsGold)",
    "previous": "the last aggregate applied, None before the first (centered clipping)",
    "root_update": "the server's own update on its clean root data from the global model (FLTrust)",
    "generator": "a torch.Generator seeded by (seed, round), for rules that draw noise or samples",
    "embed": "embed(Δ) → (m, D): the image embeddings the model w_global + Δ gives the server's "
             "m probe inputs (EmInspector)",
}


def takes(*inputs: str) -> Callable[[Callable], Callable]:
    """Mark a rule as taking the keyword arguments ``inputs`` (names from ``INPUTS``)."""
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise ValueError(f"unknown rule inputs {unknown}; allowed: {', '.join(INPUTS)}")

    def mark(rule: Callable) -> Callable:
        rule.inputs = frozenset(inputs)
        return rule

    return mark


def inputs_of(rule: Callable) -> frozenset[str]:
    """What ``rule`` declared with ``takes``: nothing when it did not."""
    return getattr(rule, "inputs", frozenset())
