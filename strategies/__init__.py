"""Robust aggregation rules (pure functions on an (n, d) tensor of updates) and the thin Flower
strategy around them. ``RULES`` maps a config's ``strategy.name`` to its rule."""

from strategies.detection import detection_counts
from strategies.fedavg import fedavg
from strategies.result import AggregationResult

RULES = {
    "fedavg": fedavg,
}

__all__ = ["RULES", "AggregationResult", "detection_counts", "fedavg"]
