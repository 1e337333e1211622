"""Datasets and partitioners. ``load_split`` is the one factory from a config to data."""

from fedsim.data.partition import dirichlet, iid
from fedsim.data.shapes import (
    COLORS,
    SHAPES,
    ZERO_SHOT_TEMPLATES,
    ShapesData,
    caption_for,
    generate,
)

__all__ = [
    "COLORS",
    "SHAPES",
    "ZERO_SHOT_TEMPLATES",
    "ShapesData",
    "caption_for",
    "dirichlet",
    "generate",
    "iid",
]
