"""The leaves: loss, data, partitions, evaluation metrics, detection bookkeeping, records."""

import math

import numpy as np
import pytest
import torch

from fedsim.data import COLORS, SHAPES, dirichlet, generate, iid, load_split
from fedsim.evaluation import attack_success_rate, retrieval_recall
from fedsim.records import flatten, unflatten
from fedsim.training import clip_loss, warmup_cosine
from strategies.detection import detection_counts


def test_infonce_on_a_hand_computed_2x2_case():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    # logits = s·I·Tᵀ = [[2, 1.2], [0, 1.6]]
    i2t = (math.log(1 + math.exp(1.2 - 2)) + math.log(1 + math.exp(0 - 1.6))) / 2
    t2i = (math.log(1 + math.exp(0 - 2)) + math.log(1 + math.exp(1.2 - 1.6))) / 2
    loss = clip_loss(img, txt, torch.tensor(s))
    assert loss.item() == pytest.approx((i2t + t2i) / 2, abs=1e-6)


def test_infonce_is_symmetric_in_towers_and_falls_with_alignment():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    s = torch.tensor(10.0)
    assert clip_loss(a, b, s).item() == pytest.approx(clip_loss(b, a, s).item(), abs=1e-6)
    assert clip_loss(a, a, s) < clip_loss(a, b, s)


def test_generated_data_is_deterministic_balanced_and_captioned():
    a, b = generate(200, 5), generate.__wrapped__(200, 5)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, generate.__wrapped__(200, 6).images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 32, 32)
    assert np.bincount(a.labels.numpy(), minlength=len(SHAPES)).tolist() == [20] * len(SHAPES)
    colors = list(COLORS)
    for i in range(20):
        assert a.captions[i] == f"a photo of a {colors[a.colors[i]]} {SHAPES[a.labels[i]]}"
    # captions vary within a class (identical captions collapse a contrastive loss)
    stars = {c for c, l in zip(a.captions, a.labels.tolist()) if l == SHAPES.index("star")}
    assert len(stars) > 3


def test_rendering_in_chunks_gives_the_same_images_with_memory_that_does_not_grow_with_n():
    import tracemalloc

    from fedsim.data.shapes import _render

    def draw(n, chunk):
        rng = np.random.default_rng(7)
        labels, colors = rng.permutation(np.arange(n) % len(SHAPES)), rng.integers(0, len(COLORS), n)
        tracemalloc.start()
        images = _render(labels, colors, rng, chunk=chunk)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return images, peak

    whole, _ = draw(300, 300)
    for chunk in (1, 7, 64, 299):
        assert np.array_equal(draw(300, chunk)[0], whole), chunk
    # 768 more samples cost their uint8 images and per-sample draws (≈ 3.2 kB each), not the
    # ≈ 200 kB each of supersampled float64 geometry that rendering them at once takes.
    (_, small), (_, large) = draw(256, 64), draw(1024, 64)
    assert large - small < 768 * 8_000
    assert draw(1024, 1024)[1] - small > 768 * 100_000


@pytest.mark.parametrize("n, seed", [(1, 0), (37, 3), (1100, 11)])
def test_a_split_rendered_on_demand_gives_the_same_bytes_as_the_whole_split(n, seed):
    from fedsim.data.shapes import NOISE_STEP, generate_lazily

    whole, lazy = generate(n, seed), generate_lazily.__wrapped__(n, seed)
    assert len(lazy) == n and lazy.captions == whole.captions
    assert torch.equal(lazy.labels, whole.labels) and torch.equal(lazy.colors, whole.colors)
    rng = np.random.default_rng(seed)
    picks = [
        np.arange(n),                                    # every sample, across RENDER_CHUNK
        rng.permutation(n)[: max(1, n // 7)],            # a client's scattered part, unsorted
        np.array([n - 1, 0, n - 1]),                     # repeats, the ends
        np.array([-1]),                                  # negative, as torch indexes
        np.arange(min(n, NOISE_STEP + 1))[::-1].copy(),  # across a saved-state boundary
    ]
    for idx in picks:
        a, b = whole.subset(idx), lazy.subset(torch.as_tensor(idx))
        assert torch.equal(a.images, b.images), idx[:5]
        assert a.captions == b.captions and torch.equal(a.labels, b.labels) and torch.equal(a.colors, b.colors)
    assert torch.equal(lazy.images, whole.images) and lazy.materialize(224) is whole
    with pytest.raises(IndexError, match=f"index {n} is out of bounds for a split of {n} samples"):
        lazy.subset([0, n])


def test_a_split_rendered_on_demand_paints_only_the_samples_asked_for(monkeypatch):
    import fedsim.data.shapes as shapes

    lazy = shapes.generate_lazily.__wrapped__(5000, 1)
    painted = []
    real = shapes._paint
    monkeypatch.setattr(shapes, "_paint", lambda labels, g, noise: painted.append(len(labels)) or real(labels, g, noise))
    part = lazy.subset([4999, 17, 2500])
    assert sum(painted) == 3 and part.images.shape == (3, 3, 32, 32)
    assert load_split("shapes", "train", 5000, 0, lazy=True).labels.shape == (5000,) and sum(painted) == 3


def test_splits_are_distinct_streams():
    train, test = load_split("shapes", "train", 100, 0), load_split("shapes", "test", 100, 0)
    assert not torch.equal(train.images, test.images)
    with pytest.raises(ValueError, match="data.name"):
        load_split("cifar", "train", 10, 0)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_partition_is_deterministic_and_covers_every_sample_once(alpha):
    labels = generate(1000, 1).labels.numpy()
    parts = dirichlet(labels, 10, alpha, seed=3, min_size=2)
    again = dirichlet(labels, 10, alpha, seed=3, min_size=2)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1000))
    assert min(len(p) for p in parts) >= 2
    other = dirichlet(labels, 10, alpha, seed=4, min_size=2)
    assert any(not np.array_equal(p, q) for p, q in zip(parts, other))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    labels = generate(2000, 1).labels.numpy()

    def classes_per_client(alpha):
        parts = dirichlet(labels, 10, alpha, seed=0, min_size=2)
        # classes holding 90 % of a client's samples
        out = []
        for p in parts:
            counts = np.sort(np.bincount(labels[p], minlength=10))[::-1]
            out.append(int(np.searchsorted(np.cumsum(counts) / counts.sum(), 0.9) + 1))
        return np.mean(out)

    assert classes_per_client(0.05) < classes_per_client(1.0) < classes_per_client(1000.0)


def test_iid_partition_sizes_and_coverage():
    parts = iid(103, 10, seed=0)
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    with pytest.raises(ValueError, match="num_clients"):
        iid(5, 6, seed=0)


def test_attack_success_rate_excludes_the_target_class():
    labels = torch.tensor([0, 1, 2, 2, 3])
    preds = torch.tensor([2, 2, 2, 0, 1])  # target 2: two of the three non-target images hit
    assert attack_success_rate(preds, labels, target=2) == pytest.approx(2 / 3)


def test_retrieval_recall_hand_case():
    # 3 images, 2 distinct captions; image 2 is closer to the wrong caption
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    caption_of = torch.tensor([0, 1, 1])
    r = retrieval_recall(images, texts, caption_of, ks=(1, 2))
    assert r["i2t_r1"] == pytest.approx(2 / 3) and r["i2t_r2"] == 1.0
    assert r["t2i_r1"] == 1.0  # caption 0 → image 0, caption 1 → image 1


def test_detection_counts():
    # rows 0, 1 malicious; the rule accepted rows 1, 2, 3 of 5
    d = detection_counts([1, 2, 3], [True, True, False, False, False], 5)
    assert (d["tp"], d["fn"], d["fp"], d["tn"]) == (1, 1, 1, 2)
    assert d["tpr"] == 0.5 and d["fpr"] == pytest.approx(1 / 3) and d["precision"] == 0.5
    assert detection_counts([0, 1], [False, False], 2)["tpr"] is None


def test_flatten_round_trip():
    state = {"a": torch.randn(2, 3), "b": torch.randn(4)}
    back = unflatten(flatten(state), state)
    assert all(torch.equal(state[k], back[k]) for k in state)
    with pytest.raises(ValueError, match="entries"):
        unflatten(torch.zeros(5), state)


def test_warmup_cosine_shape():
    f = warmup_cosine(0.1)
    assert f(0, 100) == pytest.approx(0.1) and f(9, 100) == pytest.approx(1.0)
    assert f(99, 100) < 0.01
