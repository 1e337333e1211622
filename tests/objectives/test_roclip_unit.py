"""RoCLIP's local loss (``fedsim.objectives.roclip``) on a stub CLIP whose embeddings are known:
the pool's start, the matching cadence over the run's epochs, the loss of a matching and of a
plain epoch, and the BatchNorm step of the clean batch."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from fedsim.objectives import augment_images, eda, nearest_captions, roclip
from fedsim.training import clip_loss

roclip_module = importlib.import_module("fedsim.objectives.roclip")

# one-word captions: EDA keeps them as they are, so caption i's embedding is always e_i
CAPTIONS = tuple(f"w{i}" for i in range(6))


def _tokenizer(texts):
    return torch.tensor([CAPTIONS.index(t) for t in texts])


class _Stub(torch.nn.Module):
    """Text embedding of caption i: e_i (6-D) times 2 unless normalised; image embedding: the
    mean of each of an image's first 6 pixel rows (so it depends on the view), through a
    BatchNorm1d(6) in ``encode_image``. Records the mode and ``normalize`` of each text encode."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(6)
        self.scale = torch.nn.Parameter(torch.tensor(3.0))
        self.text_calls = []

    def encode_image(self, images, normalize=False):
        return self.bn(images[:, 0, :6, :].mean(dim=-1))

    def encode_text(self, tokens, normalize=False):
        self.text_calls.append((self.training, normalize))
        e = F.one_hot(tokens, 6).float()
        return e if normalize else 2 * e

    def forward(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens, normalize=True), self.scale, "extra output"


class _Unit:
    image_size = 8

    def __call__(self, images):
        return images.float() / 255 if images.dtype == torch.uint8 else images.float()


IMAGES = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))


def _loss(model, *, every=1, epoch_offset=0, pool_size=3, seed=0):
    return roclip(model, IMAGES, CAPTIONS, tokenizer=_tokenizer, preprocess=_Unit(),
                  generator=torch.Generator().manual_seed(seed), epoch_offset=epoch_offset, every=every,
                  pool_size=pool_size)


def test_the_pool_starts_as_pool_size_random_captions_normalised_in_eval_mode(monkeypatch):
    model = _Stub()
    model.train()
    seen = []
    real = roclip_module.nearest_captions

    def spy(image_features, pool):
        seen.append(pool.clone())
        return real(image_features, pool)

    monkeypatch.setattr(roclip_module, "nearest_captions", spy)
    loss = _loss(model, pool_size=3, seed=7)
    assert model.text_calls == [(False, True)]  # eval mode, normalised
    assert model.training and model.bn.training
    loss(model, torch.tensor([0, 1]), 0)
    drawn = torch.randperm(6, generator=torch.Generator().manual_seed(7))[:3].tolist()
    assert torch.equal(seen[0], torch.eye(6)[drawn])


@pytest.mark.parametrize("every, epoch_offset, matching", [
    (2, 0, [False, True, False, True]),   # epochs 1..4 of the run: 2 and 4 match
    (3, 1, [False, True, False, False]),  # epochs 2..5: only 3 matches
    (3, 2, [True, False, False, True]),   # epochs 3..6
    (1, 5, [True, True, True, True]),
])
def test_an_epoch_matches_when_the_runs_epoch_number_is_a_multiple_of_every(every, epoch_offset, matching,
                                                                            monkeypatch):
    calls = []
    real = roclip_module.nearest_captions

    def spy(image_features, pool):
        calls.append(True)
        return real(image_features, pool)

    monkeypatch.setattr(roclip_module, "nearest_captions", spy)
    model = _Stub()
    loss = _loss(model, every=every, epoch_offset=epoch_offset)
    got = []
    for e in range(4):
        before = len(calls)
        loss(model, torch.tensor([0, 1, 2]), e)
        got.append(len(calls) > before)
    assert got == matching


def _expected_views(idx, seed_state):
    """The views and edited captions the loss draws from a generator in ``seed_state``."""
    g = torch.Generator()
    g.set_state(seed_state)
    views = augment_images(IMAGES[idx], 8, g)
    edited = [eda(CAPTIONS[i], g) for i in idx.tolist()]
    return views, edited


def test_a_plain_epoch_is_clip_loss_on_the_augmented_pairs_with_batchnorm_frozen():
    model = _Stub()
    g = torch.Generator().manual_seed(0)
    loss = roclip(model, IMAGES, CAPTIONS, tokenizer=_tokenizer, preprocess=_Unit(), generator=g,
                  epoch_offset=0, every=2, pool_size=3)
    state = g.get_state()
    idx = torch.tensor([4, 1, 3])
    got = loss(model, idx, 0)  # t = 1: plain
    views, edited = _expected_views(idx, state)
    assert edited == [CAPTIONS[i] for i in idx.tolist()]
    # the statistics took one step of the clean images (not the views) ...
    twin = _Stub()
    twin.train()
    with torch.no_grad():
        twin.encode_image(IMAGES[idx].float() / 255)
    assert torch.allclose(model.bn.running_mean, twin.bn.running_mean)
    assert torch.allclose(model.bn.running_var, twin.bn.running_var)
    # ... and the loss pass normalised the views with those running statistics
    twin.eval()
    image = twin.encode_image(views.float() / 255)
    expected = clip_loss(image, torch.eye(6)[idx], torch.tensor(3.0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.bn.training


def test_a_matching_epoch_pairs_each_image_with_its_nearest_pool_caption():
    model = _Stub()
    g = torch.Generator().manual_seed(1)
    loss = roclip(model, IMAGES, CAPTIONS, tokenizer=_tokenizer, preprocess=_Unit(), generator=g,
                  epoch_offset=0, every=1, pool_size=4)
    state = g.get_state()
    drawn = torch.randperm(6, generator=torch.Generator().manual_seed(1))[:4].tolist()
    pool = torch.eye(6)[drawn]
    idx = torch.tensor([0, 2, 5])
    got = loss(model, idx, 0)
    g2 = torch.Generator()
    g2.set_state(state)
    views = augment_images(IMAGES[idx], 8, g2)
    twin = _Stub()
    twin.train()
    with torch.no_grad():
        twin.encode_image(IMAGES[idx].float() / 255)
    twin.eval()
    image = twin.encode_image(views.float() / 255)
    # the nearest of one-hot pool rows: the largest of the image's coordinates at the drawn rows
    nearest = image[:, drawn].argmax(dim=1)
    assert torch.equal(nearest, nearest_captions(image, pool))
    expected = clip_loss(image, pool[nearest], torch.tensor(3.0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # the pool's captions carry no gradient: only the image side and the scale learn
    got.backward()
    assert model.scale.grad is not None


def test_nearest_captions_normalises_each_embedding_along_its_features():
    # by rows: image 0 (1, 0) is nearest pool row 0 (3, 0.1); by columns it would differ
    images = torch.tensor([[1.0, 0.0], [0.1, 1.0], [2.0, 2.1]])
    pool = torch.tensor([[3.0, 0.1], [0.0, 0.2], [10.0, 10.0]])
    assert nearest_captions(images, pool).tolist() == [0, 1, 2]


def test_the_caption_edits_are_drawn_from_the_generator_not_torchs_global_rng():
    captions = tuple(f"a photo of shape number {i} in the picture" for i in range(6))
    seen = []

    def tokenizer(texts):
        seen.append(list(texts))
        return torch.tensor([len(t) % 6 for t in texts])

    def edits(global_seed):
        seen.clear()
        torch.manual_seed(global_seed)
        model = _Stub()
        loss = roclip(model, IMAGES, captions, tokenizer=tokenizer, preprocess=_Unit(),
                      generator=torch.Generator().manual_seed(0), epoch_offset=0, every=2, pool_size=3)
        for _ in range(3):
            loss(model, torch.tensor([0, 1, 2, 3, 4, 5]), 0)
        return seen[1:]  # the pool's captions first, then each batch's edits

    first = edits(1)
    assert first == edits(2)
    assert any(e != list(captions) for e in first)  # EDA did edit some
