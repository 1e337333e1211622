"""The robust objectives' augmentations (``fedsim.objectives.augment``): SimCLR's view recipe
as documented, per-image seeding, and EDA's swap / deletion edits counted over many seeds."""

from collections import Counter

import pytest
import torch
from torchvision.transforms import v2

from fedsim.objectives import augment_images, autoaugment_images, eda, image_views
from fedsim.objectives.augment import per_image

# ten distinct words: a result names its words' positions exactly
WORDS = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9".split()
CAPTION = " ".join(WORDS)


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _edits(caption, alpha=None, seeds=range(400)):
    kw = {} if alpha is None else {"alpha": alpha}
    return [eda(caption, _g(s), **kw) for s in seeds]


def _is_permutation(edited, words=WORDS):
    return sorted(edited.split()) == sorted(words)


# --------------------------------------------------------------------------- image views
def test_image_views_are_simclrs_recipe():
    crop, flip, jitter, gray = image_views(24).transforms
    assert isinstance(crop, v2.RandomResizedCrop) and list(crop.size) == [24, 24]
    assert tuple(crop.scale) == (0.08, 1.0) and crop.antialias is True
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(jitter, v2.RandomApply) and jitter.p == 0.8
    (color,) = jitter.transforms
    assert isinstance(color, v2.ColorJitter)
    assert color.brightness == color.contrast == color.saturation == (0.5, 1.5)
    assert color.hue == (-0.1, 0.1)
    assert isinstance(gray, v2.RandomGrayscale) and gray.p == 0.2


def test_augment_images_gives_each_image_its_own_view_of_the_asked_size():
    one = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=_g(0))
    views = augment_images(one.expand(6, 3, 16, 16).clone(), 8, _g(1))
    assert views.shape == (6, 3, 8, 8) and views.dtype == torch.uint8
    # six copies of one image: six different random views
    assert len({tuple(v.flatten().tolist()) for v in views}) == 6


# --------------------------------------------------------------------------- per-image seeding
def _draw(image):
    """A transform whose output is its input plus one draw of torch's global RNG."""
    return image + torch.rand(())


def test_per_image_gives_every_image_its_own_seeded_draw_and_leaves_the_global_rng_alone():
    images = torch.zeros(5, 1, 1, 1)
    state = torch.get_rng_state()
    out = per_image(_draw, images, _g(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert out.shape == (5, 1, 1, 1)
    assert len(set(out.flatten().tolist())) == 5
    assert torch.equal(out, per_image(_draw, images, _g(3)))
    assert not torch.equal(out, per_image(_draw, images, _g(4)))
    # image i's view depends on the generator and i only, not on the images after it
    assert torch.equal(per_image(_draw, images[:2], _g(3)), out[:2])


def test_per_image_seeds_reach_beyond_32_bits():
    # seeds drawn from [0, 2^62): over 64 images, some seed needs more than 32 bits
    seen = []

    def record(image):
        seen.append(torch.initial_seed())
        return image

    per_image(record, torch.zeros(64, 1), _g(0))
    assert len(set(seen)) == 64 and max(seen) >= 2**32 and max(seen) < 2**62
    # image i's seed is the i-th of the generator's draws from [0, 2^62)
    assert seen == torch.randint(0, 2**62, (64,), generator=_g(0)).tolist()


def test_autoaugment_views_are_drawn_from_the_generator():
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=_g(0))
    state = torch.get_rng_state()
    views = [autoaugment_images(images, _g(s)) for s in range(6)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(views[0], autoaugment_images(images, _g(0)))
    assert views[0].shape == images.shape and views[0].dtype == torch.uint8
    assert len({tuple(v.flatten().tolist()) for v in views}) > 1


# --------------------------------------------------------------------------- EDA
def test_eda_keeps_a_caption_of_fewer_than_two_words():
    assert {eda("square", _g(s)) for s in range(20)} == {"square"}
    assert eda("", _g(0)) == "" and eda("   ", _g(0)) == "   "


def test_eda_edits_a_two_word_caption():
    assert {"star red", "red", "star", "red star"} >= set(_edits("red star"))
    assert "star red" in _edits("red star")  # a swap of the only two words


def test_eda_swaps_or_deletes_with_probability_one_half():
    # alpha = 1: a swap keeps all ten words; a deletion drops every word, then keeps one
    edits = _edits(CAPTION, alpha=1.0)
    swaps = sum(_is_permutation(e) for e in edits)
    singles = [e for e in edits if len(e.split()) == 1]
    assert swaps + len(singles) == len(edits)
    assert 160 < swaps < 240  # Binomial(400, ½): mean 200, sd 10
    # the one word kept is any of them, at random
    assert set(singles) == set(WORDS)


def test_eda_swaps_max_1_floor_alpha_L_times():
    def moved(edited):
        return sum(a != b for a, b in zip(edited.split(), WORDS))

    # α·L = 1: one swap moves two words or none (i = j)
    one = [e for e in _edits(CAPTION, alpha=0.1) if _is_permutation(e)]
    assert {moved(e) for e in one} == {0, 2}
    # α·L = 0.5: still one swap
    assert {moved(e) for e in _edits(CAPTION, alpha=0.05) if _is_permutation(e)} == {0, 2}
    # α·L = 3.5 → 3 swaps: up to six words move, and some draws move five or six
    three = {moved(e) for e in _edits(CAPTION, alpha=0.35) if _is_permutation(e)}
    assert max(three) == 6 and 5 in three and three <= {0, 2, 3, 4, 5, 6}


def test_eda_deletes_each_word_with_probability_alpha_and_keeps_the_order():
    for alpha, expected in ((0.1, 0.9), (0.5, 0.5)):
        deleted = [e for e in _edits(CAPTION, alpha=alpha) if not _is_permutation(e)]
        assert deleted
        for e in deleted:
            it = iter(WORDS)
            assert all(w in it for w in e.split())  # a sub-sequence, order kept
        kept = [len(e.split()) / len(WORDS) for e in deleted]
        if alpha == 0.1:
            # a deletion that drops nothing looks like a swap; the mean over the rest is
            # a little below 0.9
            assert 0.82 < sum(kept) / len(kept) < 0.92
        else:
            assert abs(sum(kept) / len(kept) - expected) < 0.05


def test_eda_defaults_to_alpha_one_tenth():
    assert _edits(CAPTION) == _edits(CAPTION, alpha=0.1)


def test_eda_with_alpha_0_keeps_every_word_on_deletion():
    edits = _edits(CAPTION, alpha=0.0, seeds=range(40))
    assert all(_is_permutation(e) for e in edits)
    assert Counter(e == CAPTION for e in edits)[True] >= 15  # every deletion, and i = j swaps


@pytest.mark.parametrize("caption", [CAPTION, "a b", "x  y\tz"])
@pytest.mark.parametrize("alpha", [None, 0.5, 1.0])
def test_eda_is_seeded(caption, alpha):
    # alpha = 1: half the edits are the one word kept after every word was deleted
    assert _edits(caption, alpha, seeds=range(20)) == _edits(caption, alpha, seeds=range(20))
    assert len(set(_edits(caption, alpha, seeds=range(40)))) > 1
