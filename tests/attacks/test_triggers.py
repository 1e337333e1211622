"""Image triggers (clients/attacks/triggers.py): BadNet patches (solid, noise, random locations,
the DBA pieces), Blended, SIG and WaNet against their closed forms and hand computations, the
defaults the papers fix, the factory, and the validation that names each parameter and what
it allows."""

import math
import re

import numpy as np
import pytest
import torch

from clients.attacks import TRIGGERS, BadNetPatch, make_trigger, poison, split_patch
from clients.attacks.triggers import SIG, Blended, WaNet
from fedsim.data import generate
from fedsim.evaluation import make_trigger_images
from tests.conftest import shapes_captions


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Values below 250: no pixel of the data can already equal the magenta patch.
    return torch.randint(0, 250, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


_MAGENTA = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)


# -- BadNet --------------------------------------------------------------------------------


def test_badnet_solid_patch_sets_exactly_its_square_to_the_color():
    x = _images()
    for location, (y, left) in [("bottom_right", (28, 28)), ((3, 10), (3, 10))]:
        out = make_trigger_images(x, BadNetPatch(size=4, location=location))
        changed = (out != x).any(1)  # (n, H, W)
        expected = torch.zeros(32, 32, dtype=torch.bool)
        expected[y : y + 4, left : left + 4] = True
        assert torch.equal(changed, expected.expand_as(changed))
        square = out[:, :, y : y + 4, left : left + 4]
        assert torch.equal(square, torch.tensor([255, 0, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand_as(square))


def test_noise_and_random_location_patches_are_deterministic_given_seed():
    x = _images(8)
    noise = make_trigger_images(x, BadNetPatch(pattern="noise", seed=1))
    assert torch.equal(noise, make_trigger_images(x, BadNetPatch(pattern="noise", seed=1)))
    assert not torch.equal(noise, make_trigger_images(x, BadNetPatch(pattern="noise", seed=2)))

    trigger = BadNetPatch(size=5, location="random", pattern="noise", seed=3)
    out = make_trigger_images(x, trigger)
    assert torch.equal(out, make_trigger_images(x, BadNetPatch(size=5, location="random", pattern="noise", seed=3)))
    patch = (trigger.patch * 255).round().to(torch.uint8)
    positions = trigger.positions(len(x), 32, 32)
    assert len(set(positions)) > 1  # the location really varies from image to image
    for i, (y, left) in enumerate(positions):
        assert torch.equal(out[i, :, y : y + 5, left : left + 5], patch)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[y : y + 5, left : left + 5] = False
        assert torch.equal(out[i][:, outside], x[i][:, outside])


def test_default_badnet_is_a_4x4_magenta_square_in_the_bottom_right_corner():
    blank = torch.full((3, 32, 32), 0.5)  # a single image, without a batch dimension
    out = BadNetPatch()(blank)
    expected = blank.clone()
    expected[:, 28:, 28:] = _MAGENTA
    assert torch.equal(out, expected)


def test_badnet_corners_on_a_non_square_image():
    x = torch.zeros(1, 3, 5, 8)
    for trigger, (y, left) in [(BadNetPatch(size=2), (3, 6)), (BadNetPatch(size=2, location=(3, 6)), (3, 6)),
                               (BadNetPatch(size=1, location=[0, 0]), (0, 0))]:
        expected = x.clone()
        expected[..., y : y + trigger.size, left : left + trigger.size] = _MAGENTA
        assert torch.equal(trigger(x), expected)
    assert torch.equal(BadNetPatch(size=5, color=(0, 0, 0))(torch.ones(1, 3, 5, 5)), torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"badnet size=6 does not fit 5×8 images"):
        BadNetPatch(size=6)(x)
    with pytest.raises(ValueError, match=r"badnet size=4 does not fit 8×3 images"):
        BadNetPatch(size=4)(torch.zeros(1, 3, 8, 3))
    with pytest.raises(ValueError, match=r"badnet location=\(4, 0\) puts the patch outside 5×8"):
        BadNetPatch(size=2, location=(4, 0))(x)
    with pytest.raises(ValueError, match=r"badnet location=\(0, 7\) puts the patch outside 5×8"):
        BadNetPatch(size=2, location=(0, 7))(x)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(size=0), r"badnet size=0 must be a positive int"),
        (dict(size=True), r"badnet size=True must be a positive int"),
        (dict(size=2.0), r"badnet size=2\.0 must be a positive int"),
        (dict(seed=-1), r"badnet seed=-1 must be an int >= 0"),
        (dict(seed=True), r"badnet seed=True must be an int >= 0"),
        (dict(location=(1, 2, 3)), r"badnet location=\(1, 2, 3\) must be \(y, x\) with ints >= 0"),
        (dict(location=(-1, 0)), r"badnet location=\(-1, 0\) must be \(y, x\)"),
        (dict(location=(1.0, 0)), r"badnet location=\(1\.0, 0\) must be \(y, x\)"),
        (dict(location="top"), r"badnet location='top' is unknown; allowed: bottom_right, random or \(y, x\)"),
        (dict(color=(1.1, 0, 0)), r"badnet color=\(1\.1, 0, 0\) must be 3 values in \[0, 1\]"),
        (dict(color=(-0.1, 0, 0)), r"badnet color="),
        (dict(color=(0, 0)), r"badnet color="),
        (dict(color=5), r"badnet color=5 must be 3 values"),
        (dict(pattern="stripes"), r"badnet pattern='stripes' is unknown; allowed: solid, noise or a tensor"),
        (dict(pattern=torch.zeros(3, 3, 3)), r"badnet pattern must have shape \(3, 4, 4\), got \(3, 3, 3\)"),
        (dict(pattern=torch.full((3, 4, 4), 1.01)), r"badnet pattern pixels must lie in \[0, 1\]"),
        (dict(pattern=torch.full((3, 4, 4), -0.01)), r"badnet pattern pixels must lie in \[0, 1\]"),
        (dict(rows=(2, 2)), r"badnet rows=\(2, 2\) must satisfy 0 <= r0 < r1 <= size=4"),
        (dict(rows=(-1, 2)), r"badnet rows=\(-1, 2\)"),
        (dict(rows=(0, 5)), r"badnet rows=\(0, 5\)"),
    ],
)
def test_badnet_rejects_bad_parameters_by_name(params, message):
    with pytest.raises(ValueError, match=message):
        BadNetPatch(**params)


def test_badnet_accepts_boundary_patterns_and_rows():
    pattern = torch.zeros(3, 4, 4)
    pattern[0] = 1.0
    assert torch.equal(BadNetPatch(pattern=pattern).patch, pattern)
    assert BadNetPatch(rows=(0, 4)).rows == (0, 4)
    assert BadNetPatch(rows=(3, 4)).rows == (3, 4)


def test_noise_patterns_are_the_documented_uniform_draws_of_the_seed():
    rng = np.random.default_rng([3, 0])
    expected = torch.from_numpy(rng.random((3, 5, 5)).astype(np.float32))
    assert torch.equal(BadNetPatch(size=5, pattern="noise", seed=3).patch, expected)
    rng = np.random.default_rng([3, 0])
    assert torch.equal(Blended(seed=3).pattern_for(4, 6), torch.from_numpy(rng.random((3, 4, 6)).astype(np.float32)))


def test_a_pixel_patch_fits_up_to_the_shorter_side_of_either_dimension():
    assert BadNetPatch(size=8).resolve(8, 8).size == 8
    for h, w in ((8, 7), (7, 8)):
        with pytest.raises(ValueError, match=rf"^badnet size=8 does not fit {h}×{w} images; allowed: an int in \[1, 7\]"):
            BadNetPatch(size=8).resolve(h, w)


def test_solid_and_noise_patch_pixels():
    solid = BadNetPatch(size=3, pattern="solid", color=(1.0, 0.25, 0.5)).patch
    assert solid.dtype == torch.float32 and solid.shape == (3, 3, 3)
    assert solid[:, 0, 0].tolist() == [1.0, 0.25, 0.5] and (solid == solid[:, :1, :1]).all()
    noise = BadNetPatch(size=3, pattern="noise", seed=4).patch
    assert noise.dtype == torch.float32 and noise.shape == (3, 3, 3)
    assert ((noise >= 0) & (noise < 1)).all() and len(set(noise.flatten().tolist())) == 27
    assert torch.equal(BadNetPatch(size=3, pattern="noise", seed=4).patch, noise)
    assert not torch.equal(BadNetPatch(size=3, pattern="noise", seed=5).patch, noise)


def test_random_patch_positions_cover_every_valid_corner_uniformly():
    trigger = BadNetPatch(size=5, location="random", seed=4)
    positions = np.array(trigger.positions(20000, 12, 9))
    ys, xs = positions[:, 0], positions[:, 1]
    assert ys.min() == 0 and ys.max() == 12 - 5 and xs.min() == 0 and xs.max() == 9 - 5
    counts = np.bincount(ys, minlength=8)
    assert len(counts) == 8 and counts.min() > 0.8 * 20000 / 8  # uniform over 0 … H − size
    assert np.bincount(xs).min() > 0.8 * 20000 / 5
    rng = np.random.default_rng([4, 1])
    assert ys.tolist() == rng.integers(0, 8, 20000).tolist()


# -- DBA: a patch split into pieces --------------------------------------------------------


@pytest.mark.parametrize("parts", [4, 3])
def test_dba_pieces_partition_the_full_patch(parts):
    full = BadNetPatch(size=4, location=(2, 5), pattern="noise", seed=7)
    blank = torch.full((1, 3, 16, 16), -1.0)  # no patch pixel is -1: written pixels show
    written = (full(blank) != -1).any(1)[0]
    pieces = [(piece(blank) != -1).any(1)[0] for piece in split_patch(full, parts)]
    assert len(pieces) == parts and all(m.any() for m in pieces)
    assert torch.equal(torch.stack(pieces).sum(0), written.long())  # disjoint and covering
    union = blank.clone()
    for piece in split_patch(full, parts):
        union = torch.where(piece(blank) != -1, piece(blank), union)
    assert torch.equal(union, full(blank))


@pytest.mark.parametrize("parts", [0, 5, True, 2.0])
def test_split_patch_rejects_a_bad_number_of_parts(parts):
    with pytest.raises(ValueError, match=rf"split_patch parts={parts!r} must be an int in \[1, size=4\]"):
        split_patch(BadNetPatch(size=4), parts)


def test_split_patch_default_four_pieces_and_only_whole_patches():
    assert [p.rows for p in split_patch(BadNetPatch(size=8))] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    with pytest.raises(ValueError, match="split_patch needs a whole BadNetPatch"):
        split_patch(BadNetPatch(size=4, rows=(0, 2)))
    with pytest.raises(ValueError, match="split_patch needs a whole BadNetPatch"):
        split_patch(SIG())


def test_split_patch_bounds_are_integer_floors():
    # size 6 into 4 parts: floor(i * 6 / 4) = 0, 1, 3, 4, 6
    pieces = split_patch(BadNetPatch(size=6), 4)
    rows = [p.rows for p in pieces]
    assert rows == [(0, 1), (1, 3), (3, 4), (4, 6)]
    assert all(isinstance(v, int) for r in rows for v in r)


def test_split_patch_rejects_non_patch_trigger_with_message():
    with pytest.raises(ValueError, match=r"^split_patch needs a whole BadNetPatch \(a patch trigger with rows=None\)$"):
        split_patch(Blended())


def test_split_patch_bounds_and_piece_rows():
    from clients.attacks import split_patch

    assert [p.rows for p in split_patch(BadNetPatch(size=4), 3)] == [(0, 1), (1, 2), (2, 4)]
    assert [p.rows for p in split_patch(BadNetPatch(size=7), 2)] == [(0, 3), (3, 7)]
    assert [p.rows for p in split_patch(BadNetPatch(size=4), 1)] == [(0, 4)]
    assert len(split_patch(BadNetPatch(size=4), 4)) == 4


# -- Blended and SIG -----------------------------------------------------------------------


def test_blended_is_the_convex_combination_with_its_pattern():
    g = torch.Generator().manual_seed(0)
    x, p = torch.rand(2, 3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    torch.testing.assert_close(Blended(alpha=0.2, pattern=p)(x), 0.8 * x + 0.2 * p)
    noise = Blended(alpha=0.3, seed=5)
    q = noise.pattern_for(32, 32)
    assert 0 <= q.min() and q.max() <= 1 and q.std() > 0.2
    torch.testing.assert_close(noise(x), 0.7 * x + 0.3 * q)
    torch.testing.assert_close(noise(x), Blended(alpha=0.3, seed=5)(x))


def test_blended_defaults_bounds_and_pattern_shape():
    x = torch.full((1, 3, 4, 6), 0.5)
    torch.testing.assert_close(Blended()(x), 0.8 * x + 0.2 * Blended().pattern_for(4, 6))  # α = 0.2
    p = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Blended(alpha=0.0, pattern=p)(x), x)
    assert torch.equal(Blended(alpha=1.0, pattern=p)(x), p.expand_as(x))
    for alpha in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"blended alpha={alpha!r} must lie in \[0, 1\]"):
            Blended(alpha=alpha)
    with pytest.raises(ValueError, match=r"blended seed=-1 must be an int >= 0"):
        Blended(seed=-1)
    with pytest.raises(ValueError, match=r"blended pattern='solid' is unknown; allowed: noise or a tensor"):
        Blended(pattern="solid")
    for bad in [torch.zeros(1, 4, 6), torch.zeros(4, 6), torch.zeros(1, 3, 4, 6)]:
        with pytest.raises(ValueError, match=rf"blended pattern must have shape \(3, H, W\), got {re.escape(str(tuple(bad.shape)))}"):
            Blended(pattern=bad)
    with pytest.raises(ValueError, match=r"blended pattern pixels must lie in \[0, 1\]"):
        Blended(pattern=torch.full((3, 4, 6), 2.0))
    with pytest.raises(ValueError, match=r"blended pattern is \(4, 6\), images are 6×4"):
        Blended(pattern=p)(torch.zeros(1, 3, 6, 4))


def test_sig_matches_its_closed_form_on_a_constant_image():
    x = torch.full((1, 3, 8, 16), 0.5)
    out = SIG(delta=20 / 255, frequency=6)(x)
    for j in range(16):
        expected = 0.5 + 20 / 255 * math.sin(2 * math.pi * j * 6 / 16)
        torch.testing.assert_close(out[0, :, :, j], torch.full((3, 8), expected), atol=1e-6, rtol=0)
    assert SIG(delta=0.5)(torch.ones(1, 3, 4, 4)).max() <= 1  # clipped to [0, 1]


def test_sig_default_is_delta_20_over_255_at_frequency_6_in_float64_precision():
    width = 24
    j = np.arange(width)
    expected = (20 / 255 * np.sin(2 * np.pi * j * 6 / width)).astype(np.float32)
    assert torch.equal(SIG().signal(width), torch.from_numpy(expected))
    torch.testing.assert_close(SIG()(torch.full((3, 2, width), 0.5))[1, 1], torch.from_numpy(0.5 + expected))


def test_sig_bounds():
    assert SIG(delta=1.0).delta == 1.0 and SIG(frequency=1e-3).frequency == 1e-3
    for delta in (0, 1.5):
        with pytest.raises(ValueError, match=rf"sig delta={delta!r} must lie in \(0, 1\]"):
            SIG(delta=delta)
    with pytest.raises(ValueError, match=r"sig frequency=0 must be > 0"):
        SIG(frequency=0)


def test_sig_clips_to_one_by_hand():
    # delta = 0.5, f = 1, W = 4: signal = 0.5 * sin(2 pi j / 4) = (0, 0.5, 0, -0.5)
    x = torch.full((3, 2, 4), 0.8)
    out = SIG(delta=0.5, frequency=1)(x)
    assert torch.allclose(out[0, 0], torch.tensor([0.8, 1.0, 0.8, 0.3]))
    assert out.max().item() == 1.0


def test_sig_and_blended_keep_the_image_dtype():
    x = torch.full((2, 3, 4, 4), 0.5, dtype=torch.float16)
    assert SIG()(x).dtype == torch.float16
    assert Blended()(x).dtype == torch.float16


def test_blended_and_sig_at_single_pixels():
    from clients.attacks.triggers import SIG, Blended

    x = torch.full((1, 3, 2, 4), 0.25)
    p = torch.zeros(3, 2, 4)
    p[0, 1, 2] = 1.0
    out = Blended(alpha=0.2, pattern=p)(x)
    assert out[0, 0, 1, 2].item() == pytest.approx(0.8 * 0.25 + 0.2)
    assert out[0, 1, 0, 0].item() == pytest.approx(0.8 * 0.25)
    sig = SIG(delta=0.1, frequency=1)(x)  # W = 4: sin(2π·j/4) = 0, 1, 0, −1
    torch.testing.assert_close(sig[0, 0, 0], torch.tensor([0.25, 0.35, 0.25, 0.15]), atol=1e-6, rtol=0)
    assert SIG(delta=0.9, frequency=1)(x).min().item() == 0.0  # 0.25 − 0.9 clipped at 0


# -- WaNet ---------------------------------------------------------------------------------


def test_wanet_with_zero_strength_is_the_identity_and_is_deterministic():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(WaNet(s=0.0)(x), x, atol=1e-5, rtol=0)
    warped = WaNet(k=4, s=0.5, seed=1)(x)
    assert torch.equal(warped, WaNet(k=4, s=0.5, seed=1)(x))
    assert not torch.allclose(warped, WaNet(k=4, s=0.5, seed=2)(x))
    assert (warped - x).abs().mean() > 1e-3 and warped.min() >= 0 and warped.max() <= 1


def test_wanet_defaults_are_the_papers_and_its_bounds():
    from tests.attacks.test_attacks_papers import _wanet_grid

    p = (torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1)[0].double().numpy()
    np.testing.assert_allclose(WaNet().grid(16, 16)[0].double().numpy(), _wanet_grid(p, 0.5, 16), atol=2e-6, rtol=0)
    data = generate(40, 3)
    out, idx = poison(data, trigger=WaNet(), rate=0.1, target=1, seed=0, captions=shapes_captions(data, 1))
    changed = (out.images != data.images).flatten(1).any(1)
    assert len(idx) == 4 and int(changed.sum()) == 4 + 8  # two noise samples per backdoor sample
    assert WaNet(k=2).k == 2 and WaNet(grid_rescale=1e-3).grid_rescale == 1e-3
    for params, message in [
        (dict(k=1), r"wanet k=1 must be an int >= 2"), (dict(k=True), r"wanet k=True must be an int >= 2"),
        (dict(k=4.0), r"wanet k=4\.0 must be an int >= 2"), (dict(s=-0.1), r"wanet s=-0\.1 must be >= 0"),
        (dict(grid_rescale=0), r"wanet grid_rescale=0 must be > 0"),
        (dict(cross_ratio=-1), r"wanet cross_ratio=-1 must be >= 0"),
        (dict(seed=-1), r"wanet seed=-1 must be an int >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            WaNet(**params)


def test_wanet_cross_on_a_single_image():
    x = torch.rand(3, 8, 6, generator=torch.Generator().manual_seed(0))
    out = WaNet().cross(x, torch.Generator().manual_seed(1))
    assert out.shape == (3, 8, 6)


# -- every trigger, and the factory --------------------------------------------------------


@pytest.mark.parametrize("trigger, name", [(BadNetPatch(), "badnet"), (Blended(), "blended"), (SIG(), "sig"),
                                           (WaNet(), "wanet")])
def test_triggers_reject_non_rgb_images_by_name(trigger, name):
    for shape in [(1, 1, 8, 8), (8, 8)]:
        shown = re.escape(str(shape))
        with pytest.raises(ValueError, match=rf"^{name} expects images \(\.\.\., 3, H, W\), got shape {shown}$"):
            trigger(torch.zeros(shape))
    assert trigger(torch.full((3, 8, 8), 0.5)).shape == (3, 8, 8)  # one image without a batch


def test_trigger_factory_and_bad_params():
    assert set(TRIGGERS) == {"badnet", "blended", "sig", "wanet", "ctrl"}
    assert isinstance(make_trigger("badnet", size=3, location=[1, 2]), BadNetPatch)
    assert make_trigger("badnet", location=[1, 2]).location == (1, 2)  # TOML gives lists
    for name in TRIGGERS:
        out = make_trigger(name)(torch.rand(2, 3, 32, 32))
        assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="'patchy'.*badnet, blended, sig, wanet, ctrl"):
        make_trigger("patchy")
    with pytest.raises(ValueError, match="opacity.*alpha"):
        make_trigger("blended", opacity=0.2)
    with pytest.raises(ValueError, match="alpha"):
        make_trigger("blended", alpha=2)
    with pytest.raises(ValueError, match="location"):
        make_trigger("badnet", location="top_middle")
    with pytest.raises(ValueError, match="pattern"):
        make_trigger("badnet", pattern="stripes")
    with pytest.raises(ValueError, match="parts"):
        split_patch(BadNetPatch(size=4), parts=5)
    with pytest.raises(ValueError, match="color='red'"):
        make_trigger("badnet", color="red")
    with pytest.raises(ValueError, match="seed=-1"):
        make_trigger("wanet", seed=-1)


def test_make_trigger_does_not_take_dba_rows():
    with pytest.raises(ValueError, match=r"trigger 'badnet' has no parameter rows; allowed: size, location, "
                                         r"pattern, color, seed$"):
        make_trigger("badnet", rows=(0, 1))
