"""Seeded random client updates and generators: the non-collinear data the rule tests draw."""

import torch


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)
