"""Local training's bookkeeping: RoCLIP's caption pool is first-in-first-out
(``fedsim.objectives.roclip``), and an epoch trains its last, smaller batch
(``fedsim.training.train_epochs``)."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from fedsim.objectives import roclip
from fedsim.training import train_epochs

# One-word captions: RoCLIP's EDA edit keeps a one-word caption as it is, so caption i's text
# embedding is the one-hot e_i in every batch and a pool row names the caption it came from.
CAPTIONS = tuple(f"w{i}" for i in range(12))


def _tokenizer(texts):
    return torch.tensor([CAPTIONS.index(t) for t in texts])


class _OneHotCLIP(torch.nn.Module):
    """A CLIP whose text embedding of caption i is e_i; image embeddings are fixed random rows."""

    def __init__(self):
        super().__init__()
        self.images = torch.nn.Parameter(torch.randn(len(CAPTIONS), len(CAPTIONS),
                                                     generator=torch.Generator().manual_seed(0)))

    def encode_text(self, tokens, normalize: bool = False):
        return F.one_hot(tokens, len(CAPTIONS)).float()

    def forward(self, images, tokens):
        return F.normalize(self.images[: len(tokens)], dim=-1), self.encode_text(tokens), torch.tensor(10.0)


class _Identity:
    image_size = 8

    def __call__(self, images):
        return images


def test_roclip_pool_drops_its_oldest_captions_first(monkeypatch):
    seen = []

    def spy(image_features, pool):
        seen.append(set(pool.argmax(1).tolist()))  # the captions the pool holds
        assert len(pool) == 4
        return torch.zeros(len(image_features), dtype=torch.long)

    # the package's name ``roclip`` is the function; its module is reached by import
    monkeypatch.setattr(importlib.import_module("fedsim.objectives.roclip"), "nearest_captions", spy)
    images = torch.randint(0, 256, (len(CAPTIONS), 3, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    loss = roclip(_OneHotCLIP(), images, CAPTIONS, tokenizer=_tokenizer, preprocess=_Identity(),
                  generator=torch.Generator().manual_seed(2), epoch_offset=0, every=1, pool_size=4)
    batches = [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    for idx in batches:  # every epoch matches (every = 1); each batch then enters the pool
        loss(_OneHotCLIP(), torch.tensor(idx), 0)
    assert len(seen[0]) == 4  # pool_size of the client's captions, drawn at random
    assert seen[1] == {0, 1, 2, 3}  # the first batch pushed out all four it started with
    assert {4, 5} <= seen[2] and len(seen[2] & {0, 1, 2, 3}) == 2  # two of the first batch left
    assert seen[3] == {4, 5, 6, 7}  # and then the rest of it: the oldest leave first


class _Recorder:
    """A BatchLoss that records the rows of each batch; its loss is the batch size times a
    weight, so the mean loss ``train_epochs`` returns counts the batches it trained."""

    def __init__(self):
        self.batches = []

    def __call__(self, model, idx, epoch):
        self.batches.append((epoch, sorted(idx.tolist())))
        return len(idx) * model.weight.sum() / model.weight.sum().detach()


@pytest.mark.parametrize("n, batch_size, sizes", [
    (11, 4, [4, 4, 3]),  # the last, smaller batch is trained
    (9, 4, [4, 4]),      # but not one of a single pair: a contrastive loss needs two
    (8, 3, [3, 3, 2]),
])
def test_an_epoch_trains_its_last_smaller_batch(n, batch_size, sizes):
    model, record = torch.nn.Linear(2, 1), _Recorder()
    mean = train_epochs(model, torch.zeros(n, 3, 4, 4, dtype=torch.uint8), None, preprocess=None, epochs=2,
                        lr=1e-3, batch_size=batch_size, weight_decay=0.0,
                        generator=torch.Generator().manual_seed(0), batch_loss=record)
    for epoch in (0, 1):
        rows = [idx for e, idx in record.batches if e == epoch]
        assert sorted(map(len, rows), reverse=True) == sizes
        seen = sorted(r for idx in rows for r in idx)
        assert seen == sorted(set(seen)) and len(seen) == sum(sizes)  # each row at most once
    assert mean == pytest.approx(sum(sizes) / len(sizes))


@pytest.mark.parametrize("n, batch_size", [(11, 4), (9, 4), (8, 3), (8, 4)])
def test_the_lr_schedule_spans_exactly_the_steps_taken(n, batch_size):
    """``lr_schedule(step, total)``: ``total`` is the number of optimiser steps, so a warm-up +
    cosine schedule ends at its last step. A last batch of one pair is skipped (no step), and
    the total used to count it (n = 9, batch 4: total 6 for 4 steps)."""
    calls = []
    train_epochs(torch.nn.Linear(2, 1), torch.zeros(n, 3, 4, 4, dtype=torch.uint8), None, preprocess=None,
                 epochs=2, lr=1e-3, batch_size=batch_size, weight_decay=0.0,
                 generator=torch.Generator().manual_seed(0), batch_loss=_Recorder(),
                 lr_schedule=lambda step, total: calls.append((step, total)) or 1.0)
    assert [s for s, _ in calls] == list(range(len(calls)))
    assert {t for _, t in calls} == {len(calls)}
