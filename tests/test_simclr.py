"""SimCLR mode (Chen et al., ICML 2020) and the attacks on it: NT-Xent, the weighted kNN and
linear-probe evaluation, CTRL's frequency trigger (Li et al., ICCV 2023), SSL-Backdoor
poisoning and the config of the mode — each against values computed independently."""

import math

import numpy as np
import pytest
import scipy.fft
import torch

from clients.attacks import TRIGGERS, make_trigger


# --------------------------------------------------------------------------- CTRL
def _yuv(rgb: np.ndarray) -> np.ndarray:
    """RGB (3, H, W) → BT.601 analogue YUV with the published coefficients."""
    r, g, b = rgb
    return np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                     -0.14713 * r - 0.28886 * g + 0.436 * b,
                     0.615 * r - 0.51499 * g - 0.10001 * b])


def _block_dct(channel: np.ndarray, n: int) -> np.ndarray:
    h, w = channel.shape
    out = np.empty_like(channel)
    for i in range(0, h, n):
        for j in range(0, w, n):
            out[i:i + n, j:j + n] = scipy.fft.dctn(channel[i:i + n, j:j + n], norm="ortho")
    return out


def test_ctrl_is_registered_and_validates_its_parameters():
    assert TRIGGERS["ctrl"] is type(make_trigger("ctrl"))
    with pytest.raises(ValueError, match="positions"):
        make_trigger("ctrl", positions=[[15, 32]])
    with pytest.raises(ValueError, match="channels"):
        make_trigger("ctrl", channels=[3])
    with pytest.raises(ValueError, match="does not tile 40×40"):
        make_trigger("ctrl")(torch.rand(1, 3, 40, 40))


@pytest.mark.parametrize("window, side", [(32, 32), (8, 32), (32, 64)])
def test_ctrl_adds_magnitude_to_the_chosen_chroma_coefficients_only(window, side):
    """Mid-grey images with mild texture: nothing is clamped, so in every block's DCT (scipy's)
    of the YUV image exactly the chosen (channel, position) coefficients move, by the
    magnitude (up to the 4th decimal of the published YUV coefficients, ≈ 1e-4 relative)."""
    g = torch.Generator().manual_seed(0)
    x = 0.45 + 0.1 * torch.rand(2, 3, side, side, generator=g, dtype=torch.float64)
    positions = ((window // 2 - 1, window // 2 - 1), (window - 1, window - 1))
    m = 3 / 255
    trig = make_trigger("ctrl", magnitude=m, window=window, positions=[list(p) for p in positions])
    out = trig(x)
    assert out.dtype == x.dtype and out.min() > 0 and out.max() < 1  # nothing clamped
    for img, new in zip(x.numpy(), out.numpy()):
        before = np.stack([_block_dct(c, window) for c in _yuv(img)])
        after = np.stack([_block_dct(c, window) for c in _yuv(new)])
        expected = np.zeros_like(before)
        for ch in (1, 2):
            for r, c in positions:
                expected[ch, r::window, c::window] = m
        np.testing.assert_allclose(after - before, expected, atol=2e-3 * m)
        np.testing.assert_allclose(_yuv(new)[0], _yuv(img)[0], atol=1e-3 * m)  # luma untouched


def test_ctrl_stays_in_the_unit_range_and_moves_pixels_by_a_bounded_amount():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 32, 32, generator=g)
    x[0], x[1] = 0.0, 1.0  # saturated images: the clamp must hold
    out = make_trigger("ctrl")(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    # a basis function of the orthonormal 32-point DCT is at most 2/32 in a pixel; two
    # positions in U and V, and YUV → RGB weighs U + V by at most 2.04 (B = Y + 2.03 U)
    assert (out - x)[2:].abs().max() <= 2 * (2 / 32) * (100 / 255) * 2.04
    assert not torch.equal(out, x)
