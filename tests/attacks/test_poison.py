"""Data poisoning (clients/attacks/poison.py): how many samples are poisoned and which, what is
rewritten (images by the trigger, captions to the target's, the text trigger), label-consistent
poisoning, WaNet's noise samples, and the validation of rate, target and trigger."""

import pytest
import torch

from clients.attacks import BadNetPatch, add_text_trigger, poison
from fedsim.data import COLORS, SHAPES, caption_for, generate, target_captions
from fedsim.evaluation import make_trigger_images
from tests.conftest import shapes_captions


def test_poison_picks_the_documented_count_and_rewrites_only_those():
    data = generate(50, 11)
    before = (data.images.clone(), data.labels.clone(), data.colors.clone(), data.captions)
    target = 2
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.3, target=target, seed=4, captions=shapes_captions(data, target))
    assert len(idx) == 15 and torch.equal(idx, idx.unique())  # ⌊0.3 · 50⌋, sorted, distinct
    # the input (cached by generate) is untouched
    assert torch.equal(data.images, before[0]) and torch.equal(data.labels, before[1])
    assert torch.equal(data.colors, before[2]) and data.captions == before[3]
    assert torch.equal(out.labels, data.labels) and torch.equal(out.colors, data.colors)
    rest = torch.ones(50, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(out.images[rest], data.images[rest])
    assert torch.equal(out.images[idx], make_trigger_images(data.images[idx], BadNetPatch()))
    colors = list(COLORS)
    for i in range(50):
        if rest[i]:
            assert out.captions[i] == data.captions[i]
        else:
            assert out.captions[i] == f"a photo of a {colors[data.colors[i]]} {SHAPES[target]}"
    again, idx2 = poison(data, trigger=BadNetPatch(), rate=0.3, target=target, seed=4, captions=shapes_captions(data, target))
    assert torch.equal(idx, idx2) and torch.equal(again.images, out.images) and again.captions == out.captions
    assert not torch.equal(idx, poison(data, trigger=BadNetPatch(), rate=0.3, target=target, seed=5, captions=shapes_captions(data, target))[1])
    assert len(poison(data, trigger=BadNetPatch(), rate=0.01, target=target, seed=4, captions=shapes_captions(data, target))[1]) == 0  # rounds down


def test_label_consistent_poisoning_touches_only_the_target_class():
    data = generate(100, 12)
    target = 5
    n_target = int((data.labels == target).sum())
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.5, target=target, seed=0, label_consistent=True, text_trigger="cf", captions=shapes_captions(data, target))
    assert len(idx) == int(0.5 * n_target) > 0
    assert (data.labels[idx] == target).all()
    for i in idx.tolist():
        assert out.captions[i] == add_text_trigger(data.captions[i], "cf")
    # the captions offered for poisoned samples are not used: label-consistent changes images only
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.5, target=target, seed=0, label_consistent=True,
                      captions=lambda chosen: ["a photo of a star."] * len(chosen))
    assert [out.captions[i] for i in idx.tolist()] == [data.captions[i] for i in idx.tolist()]
    with pytest.raises(ValueError, match="rate"):
        poison(data, trigger=BadNetPatch(), rate=1.5, target=0, seed=0, captions=shapes_captions(data, 0))
    with pytest.raises(ValueError, match="target"):
        poison(data, trigger=BadNetPatch(), rate=0.1, target=-1, seed=0, captions=shapes_captions(data, -1))


def test_poison_rates_zero_and_one_are_the_ends_of_the_range():
    data = generate(20, 1)
    none, idx = poison(data, trigger=BadNetPatch(), rate=0.0, target=0, seed=0, captions=shapes_captions(data, 0))
    assert len(idx) == 0 and torch.equal(none.images, data.images) and none.captions == data.captions
    every, idx = poison(data, trigger=BadNetPatch(), rate=1.0, target=len(SHAPES) - 1, seed=0, captions=shapes_captions(data, len(SHAPES) - 1))
    assert torch.equal(idx, torch.arange(20))
    assert torch.equal(every.images, make_trigger_images(data.images, BadNetPatch()))
    assert every.captions == target_captions(data.colors, len(SHAPES) - 1)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(rate=-0.1), r"poison rate=-0\.1 must lie in \[0, 1\]"),
        (dict(target=True), r"poison target=True must be a class id \(int ≥ 0\)"),
        (dict(target=1.0), r"poison target=1\.0 must be a class id"),
        # shapes' captions know the classes
        (dict(target=len(SHAPES)), rf"target={len(SHAPES)} must be a shape id in \[0, {len(SHAPES) - 1}\]"),
        (dict(trigger="patch"), r"poison trigger='patch' is not callable"),
    ],
)
def test_poison_rejects_bad_parameters_by_name(params, message):
    kwargs = dict(trigger=BadNetPatch(), rate=0.5, target=0, seed=0) | params
    data = generate(10, 1)
    with pytest.raises(ValueError, match=message):
        poison(data, captions=shapes_captions(data, kwargs["target"]), **kwargs)


def test_poison_appends_the_given_text_trigger():
    data = generate(20, 1)
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.25, target=3, seed=0, text_trigger="mn", captions=shapes_captions(data, 3))
    assert [out.captions[i] for i in idx.tolist()] == [caption_for(3, int(data.colors[i])) + " mn" for i in idx.tolist()]


def test_wanet_poisoning_is_reproducible_from_the_seed_and_takes_fractional_noise_ratios():
    from clients.attacks.triggers import WaNet

    data = generate(60, 3)
    first, idx = poison(data, trigger=WaNet(cross_ratio=0.5, seed=1), rate=0.1, target=1, seed=7, captions=shapes_captions(data, 1))
    second, _ = poison(data, trigger=WaNet(cross_ratio=0.5, seed=1), rate=0.1, target=1, seed=7, captions=shapes_captions(data, 1))
    assert torch.equal(first.images, second.images)
    changed = (first.images != data.images).flatten(1).any(1)
    assert len(idx) == 6 and int(changed.sum()) == 6 + 3  # ⌊0.5 · 6⌋ noise samples


def test_wanet_noise_samples_are_capped_by_the_samples_left():
    from clients.attacks.triggers import WaNet

    data = generate(30, 2)
    out, idx = poison(data, trigger=WaNet(cross_ratio=100.0, seed=1), rate=0.1, target=1, seed=0, captions=shapes_captions(data, 1))
    assert len(idx) == 3
    rest = ~torch.isin(torch.arange(30), idx)
    assert (out.images[rest] != data.images[rest]).flatten(1).any(1).all()  # all 27 others warped
    assert [c for c, r in zip(out.captions, rest.tolist()) if r] == [c for c, r in zip(data.captions, rest.tolist()) if r]
