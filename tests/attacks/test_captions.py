"""The captions of poisoned pairs: the target captions poisoning writes for shapes data
(fedsim.data.target_captions), the text trigger and templated captions
(clients/attacks/captions.py)."""

import pytest
import torch

from clients.attacks import add_text_trigger
from fedsim.data import COLORS, SHAPES, caption_for, target_captions


def test_target_captions_and_text_trigger():
    assert target_captions([0, 3], 4) == (caption_for(4, 0), caption_for(4, 3))
    assert target_captions(torch.tensor([1]), 0) == (f"a photo of a {list(COLORS)[1]} {SHAPES[0]}",)
    assert add_text_trigger("a photo of a red star") == "a photo of a red star cf"
    with pytest.raises(ValueError, match="target"):
        target_captions([0], len(SHAPES))
    with pytest.raises(ValueError, match="token"):
        add_text_trigger("a photo", token=" ")


@pytest.mark.parametrize("target", [True, 2.0, -1, len(SHAPES)])
def test_target_captions_rejects_a_target_that_is_not_a_shape_id(target):
    with pytest.raises(ValueError, match=rf"target={target!r} must be a shape id in \[0, {len(SHAPES) - 1}\]"):
        target_captions([0], target)


def test_target_captions_accepts_the_first_and_last_shape_and_color():
    last_shape, last_color = len(SHAPES) - 1, len(COLORS) - 1
    assert target_captions([0, last_color], 0) == (caption_for(0, 0), caption_for(0, last_color))
    assert target_captions([last_color], last_shape) == (f"a photo of a white {SHAPES[-1]}",)


def test_target_captions_names_the_first_three_bad_colors():
    n = len(COLORS)
    for colors in ([0, -1, n, n + 1, n + 2], torch.tensor([0, -1, n, n + 1, n + 2])):
        with pytest.raises(ValueError, match=rf"color ids \[-1, {n}, {n + 1}\] out of range \[0, {n - 1}\]"):
            target_captions(colors, 1)


def test_target_captions_take_any_iterable_of_color_ids():
    assert target_captions((c for c in [2, 0]), 1) == (caption_for(1, 2), caption_for(1, 0))


def test_text_trigger_strips_the_token_and_rejects_a_non_string():
    assert add_text_trigger("a photo of a red star", " mn ") == "a photo of a red star mn"
    for token in [5, "", None]:
        with pytest.raises(ValueError, match=rf"token={token!r} must be a non-empty string"):
            add_text_trigger("a photo", token)


def test_templated_captions_fill_every_template_about_equally_often_and_repeat_with_the_seed():
    from clients.attacks.captions import templated_captions

    templates = ["a photo of a {}.", "the {} again", "{}, drawn"]
    got = templated_captions(templates, "star", 900, seed=1)
    assert len(got) == 900
    filled = {"a photo of a star.", "the star again", "star, drawn"}
    counts = {c: got.count(c) for c in filled}
    assert set(got) == filled
    # uniform over 3 templates: each count is Binomial(900, 1/3), 300 ± 45 is beyond 3 sd
    assert all(255 <= n <= 345 for n in counts.values()), counts
    assert templated_captions(templates, "star", 900, seed=1) == got
    assert templated_captions(templates, "star", 900, seed=2) != got
    assert templated_captions(templates, "cat", 5, seed=1) == tuple(c.replace("star", "cat") for c in got[:5])
    assert templated_captions(templates, "star", 0, seed=1) == ()
    with pytest.raises(ValueError, match="non-empty list of strings"):
        templated_captions([], "star", 3, seed=1)
