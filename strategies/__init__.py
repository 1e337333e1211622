"""Robust aggregation rules (pure functions on an (n, d) tensor of updates) and the thin Flower
strategy around them. ``RULES`` maps a config's ``strategy.name`` to its rule."""

from strategies.bulyan import bulyan
from strategies.clipping import centered_clipping, norm_clipping
from strategies.detection import detection_counts
from strategies.dnc import dnc
from strategies.eminspector import eminspector
from strategies.fedavg import fedavg
from strategies.flame import flame
from strategies.fltrust import fltrust
from strategies.foolsgold import foolsgold
from strategies.geometric_median import geometric_median
from strategies.krum import krum, multi_krum
from strategies.median import median
from strategies.result import AggregationResult
from strategies.rlr import rlr
from strategies.trimmed_mean import trimmed_mean

RULES = {
    "fedavg": fedavg,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "bulyan": bulyan,
    "geometric_median": geometric_median,
    "norm_clipping": norm_clipping,
    "centered_clipping": centered_clipping,
    "flame": flame,
    "foolsgold": foolsgold,
    "fltrust": fltrust,
    "rlr": rlr,
    "dnc": dnc,
    "eminspector": eminspector,
}

__all__ = [
    "RULES",
    "AggregationResult",
    "bulyan",
    "centered_clipping",
    "detection_counts",
    "dnc",
    "eminspector",
    "fedavg",
    "flame",
    "fltrust",
    "foolsgold",
    "geometric_median",
    "krum",
    "median",
    "multi_krum",
    "norm_clipping",
    "rlr",
    "trimmed_mean",
]
