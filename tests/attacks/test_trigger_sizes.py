"""Triggers at any image size: a BadNet patch sized in pixels or as a fraction of the shorter
side, every trigger on 224-px input, pixel patterns that do not fit refused, and patch sizes
checked against the clients' image size before a run starts."""

import pytest
import torch

from clients.attacks import TRIGGERS, BadNetPatch, make_trigger, split_patch
from clients.attacks.triggers import Blended
from fedsim.config import ConfigError


def _changed(trigger, side: int, n: int = 3) -> torch.Tensor:
    """(n, side, side) mask of the pixels ``trigger`` changes on mid-grey images."""
    x = torch.full((n, 3, side, side), 0.5)
    return (trigger(x) != x).any(dim=1)


@pytest.mark.parametrize(("fraction", "side", "pixels"), [
    (0.125, 32, 4), (0.125, 224, 28),
    (0.1, 32, 3), (0.1, 224, 22),           # 3.2 → 3, 22.4 → 22
    (0.078125, 32, 3), (0.078125, 224, 18),  # 2.5 → 3: half rounds up; 17.5 → 18
    (0.001, 32, 1),                          # never below one pixel
])
def test_a_fractional_patch_covers_the_rounded_share_of_the_shorter_side(fraction, side, pixels):
    expected = torch.zeros(3, side, side, dtype=torch.bool)
    expected[:, side - pixels:, side - pixels:] = True
    assert torch.equal(_changed(BadNetPatch(size=fraction), side), expected)
    assert BadNetPatch(size=fraction).resolve(side, side).size == pixels
    # at a given corner, on a non-square image: the fraction is of the shorter side
    at = _changed(BadNetPatch(size=fraction, location=(1, 2)), side)
    assert at.sum() == 3 * pixels * pixels and at[:, 1:1 + pixels, 2:2 + pixels].all()
    wide = torch.full((1, 3, side, 2 * side), 0.5)
    assert int((BadNetPatch(size=fraction)(wide) != wide).any(dim=1).sum()) == pixels * pixels


def test_a_fractional_patch_at_random_locations_and_its_dba_pieces():
    changed = _changed(BadNetPatch(size=0.25, location="random", seed=3), 224, n=20)
    assert (changed.flatten(1).sum(1) == 56 * 56).all()
    corners = {tuple(m.nonzero()[0].tolist()) for m in changed}
    assert len(corners) > 1  # a position per image
    noise = BadNetPatch(size=0.25, pattern="noise", seed=2)
    assert noise.patch is None and noise.resolve(32, 32).patch.shape == (3, 8, 8)
    assert torch.equal(noise.resolve(32, 32).patch, BadNetPatch(size=8, pattern="noise", seed=2).patch)
    with pytest.raises(ValueError, match=r"split_patch needs a patch size in pixels, not size=0.25"):
        split_patch(BadNetPatch(size=0.25))
    pieces = split_patch(BadNetPatch(size=0.25).resolve(224, 224), 4)
    assert [p.rows for p in pieces] == [(0, 14), (14, 28), (28, 42), (42, 56)]
    whole = sum(_changed(p, 224).int() for p in pieces)
    assert torch.equal(whole.bool(), _changed(BadNetPatch(size=56), 224)) and whole.max() == 1


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_every_trigger_runs_on_224_px_images(name):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = make_trigger(name)(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert (out != x).any()
    assert torch.equal(out, make_trigger(name)(x))  # the same trigger at any call


@pytest.mark.parametrize("size", [0, -1, 1.0, 0.0, -0.5, 1.5, "4", True, None])
def test_bad_patch_sizes_are_rejected(size):
    with pytest.raises(ValueError, match=r"badnet size=.* must be a positive int \(pixels\) or a float in \(0, 1\)"):
        BadNetPatch(size=size)


def test_a_patch_larger_than_the_images_names_the_allowed_range():
    with pytest.raises(ValueError, match=r"badnet size=40 does not fit 32×32 images; allowed: an int in \[1, 32\]"):
        BadNetPatch(size=40)(torch.zeros(1, 3, 32, 32))


def test_patterns_given_as_pixels_are_not_resized_and_say_so():
    learned = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    patch = BadNetPatch(size=0.125, pattern=learned)  # e.g. BadCLIP's, learned on 32-px images
    out = patch(torch.zeros(1, 3, 32, 32))
    assert torch.equal(out[0, :, 28:, 28:], learned)
    with pytest.raises(ValueError, match=r"size=0.125 is 28 px on 224×224 images, but the pattern is given as 4×4 pixels"):
        patch(torch.zeros(1, 3, 224, 224))
    assert BadNetPatch(size=4, pattern=learned)(torch.zeros(1, 3, 224, 224))[0, :, 220:, 220:].equal(learned)
    with pytest.raises(ValueError, match=r"blended pattern is \(32, 32\), images are 224×224; a pattern given as pixels is not resized"):
        Blended(pattern=torch.rand(3, 32, 32))(torch.zeros(1, 3, 224, 224))


def test_badclip_learns_a_fractional_patch_at_the_images_size():
    from clients.attacks import badclip_optimize_patch
    from fedsim.data import generate
    from fedsim.models import create_model_and_transforms

    model, preprocess, tokenizer = create_model_and_transforms("fedsim-tiny-resnet")
    data = generate(16, 0)
    learned = badclip_optimize_patch(
        model, preprocess, data.images[:8], target_text_tokens=tokenizer(["a photo of a star"]),
        target_images=data.images[8:], size=0.25, steps=1, lr=0.05, generator=torch.Generator().manual_seed(0),
    )
    assert learned.size == 0.25 and learned.patch.shape == (3, 8, 8)
    # in the middle, where the authors' code puts it (until issue #22: the bottom-right corner)
    assert learned(torch.zeros(1, 3, 32, 32))[0, :, 12:20, 12:20].equal(learned.patch)


def _load(overrides):
    from fedsim.runner import load

    return load(None, overrides)


@pytest.mark.parametrize(("overrides", "fragments"), [
    (["attack.data.trigger.params={size=40}"],
     ["attack.data.trigger: badnet size=40 does not fit 32×32 images; allowed: an int in [1, 32]",
      "the clients' images are 32×32: shapes are generated at that size"]),
    (["attack.data.trigger.name='badclip'", "attack.data.trigger.params={size=33}"],
     ["attack.data.trigger: badnet size=33 does not fit 32×32"]),
    (["attack.data.trigger.params={size=1.0}"], ["attack.data.trigger: badnet size=1.0 must be a positive int"]),
    (["attack.data.trigger.params={size=0.5}", "attack.data.dba_parts=20"],
     ["attack.data.dba_parts: split_patch parts=20 must be an int in [1, size=16]"]),
    (["attack.data.trigger.name='blended'", "attack.data.trigger.params={pattern=[[[0.5]], [[0.5]], [[0.5]]]}"],
     ["attack.data.trigger: blended pattern is (1, 1), images are 32×32"]),
])
def test_trigger_sizes_are_checked_against_the_clients_images_before_the_start(overrides, fragments):
    with pytest.raises(ConfigError) as e:
        _load(overrides)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_fractional_sizes_pass_the_check_and_a_sources_image_size_is_the_models(tmp_path):
    from tests.data.test_data_config import CSV_WITH_EVAL, write_config, write_csv_set, write_imagefolder

    assert _load(["attack.data.trigger.params={size=0.125}", "attack.data.dba_parts=2"]).attack.data.dba_parts == 2
    write_csv_set(tmp_path / "data", 12)
    write_imagefolder(tmp_path / "evalset")
    config = write_config(tmp_path, CSV_WITH_EVAL)
    from fedsim.runner import load

    assert load(config, ["model.name='ViT-B-32'", "attack.data.trigger.params={size=200}"]).model.name == "ViT-B-32"
    with pytest.raises(ConfigError, match=r"badnet size=300 does not fit 224×224 images.*model.name='ViT-B-32' takes that size"):
        load(config, ["model.name='ViT-B-32'", "attack.data.trigger.params={size=300}"])
