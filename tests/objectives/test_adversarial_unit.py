"""Adversarial training's PGD and batch loss (``fedsim.objectives.adversarial``) on a stub CLIP
whose loss gradient has a sign known by hand, so that every pixel's path is exact."""

import pytest
import torch

from fedsim.objectives import adversarial, pgd_images
from fedsim.training import clip_loss, frozen_batchnorm


class _ChannelCLIP(torch.nn.Module):
    """Image i's embedding is (mean of channel 0, mean of channel 1) of its pixels, the text
    embeddings are e_0 and e_1, the scale 1: logits = those means. For pair 0 the InfoNCE
    rises as channel 0 falls and channel 1 rises; for pair 1 the other way round (softmax
    gradients p − y are strictly signed); channel 2 has no gradient. The forward records the
    mode it ran in and adds a parameter so that its gradient can be watched."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.modes = []

    def encode_image(self, images, normalize=False):
        return self.weight * images[:, :2].mean(dim=(2, 3))

    def forward(self, images, tokens):
        self.modes.append(self.training)
        text = torch.eye(2)[tokens]
        return self.encode_image(images), text, torch.tensor(1.0), "extra output"


def _identity(x):
    return x


def _unit(x):
    return x.float() / 255 if x.dtype == torch.uint8 else x


TOKENS = torch.tensor([0, 1])


def _gray(value, size=4):
    return torch.full((2, 3, size, size), value, dtype=torch.uint8)


def _pgd(images, *, eps, alpha, steps, seed=0, model=None):
    return pgd_images(model or _ChannelCLIP(), images, TOKENS, preprocess=_identity, eps=eps, alpha=alpha,
                      steps=steps, generator=torch.Generator().manual_seed(seed))


def test_the_random_start_is_uniform_over_the_whole_eps_ball():
    x = _gray(128, size=32)
    adv = _pgd(x, eps=0.1, alpha=0.01, steps=0)
    delta = adv - x.float() / 255
    assert adv.dtype == torch.float32 and adv.shape == x.shape
    assert delta.abs().max() <= 0.1 + 1e-6
    # 6144 uniform draws on [-ε, ε]: both ends are reached and the mean is near 0
    assert delta.min() < -0.095 and delta.max() > 0.095
    assert abs(delta.mean().item()) < 0.005
    assert 0.045 < delta.abs().mean().item() < 0.055  # E|U(-ε, ε)| = ε/2
    # the start is drawn from the generator: the same seed, the same start; another, another
    assert torch.equal(adv, _pgd(x, eps=0.1, alpha=0.01, steps=0))
    assert not torch.equal(adv, _pgd(x, eps=0.1, alpha=0.01, steps=0, seed=1))


def test_the_random_start_is_x_plus_eps_times_2u_minus_1_for_the_generators_uniform_draw_u():
    # pinning the draw keeps a seed's start the same across versions (x − ε(2u − 1) has the
    # same distribution but other pixels)
    x = _gray(128)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    start = _pgd(x, eps=0.1, alpha=0.01, steps=0)
    assert torch.allclose(start, x.float() / 255 + 0.1 * (2 * u - 1), atol=1e-6)


def test_the_random_start_is_clamped_to_the_pixel_range():
    dark, bright = _gray(0), _gray(255)
    assert _pgd(dark, eps=0.2, alpha=0.01, steps=0).min() == 0.0
    assert _pgd(dark, eps=0.2, alpha=0.01, steps=0).max() > 0.1
    assert _pgd(bright, eps=0.2, alpha=0.01, steps=0).max() == 1.0
    assert _pgd(bright, eps=0.2, alpha=0.01, steps=0).min() < 0.9


def test_a_large_step_lands_each_pixel_on_the_ball_edge_its_gradient_points_to():
    x = _gray(128)
    eps = 0.1
    adv = _pgd(x, eps=eps, alpha=0.5, steps=1)
    start = _pgd(x, eps=eps, alpha=0.5, steps=0)
    lo, hi = 128 / 255 - eps, 128 / 255 + eps
    # pair 0: channel 0 falls to x − ε, channel 1 rises to x + ε; pair 1 the other way round
    assert torch.allclose(adv[0, 0], torch.full((4, 4), lo)) and torch.allclose(adv[0, 1], torch.full((4, 4), hi))
    assert torch.allclose(adv[1, 0], torch.full((4, 4), hi)) and torch.allclose(adv[1, 1], torch.full((4, 4), lo))
    # channel 2 has no gradient (sign 0): it stays where the random start put it
    assert torch.equal(adv[:, 2], start[:, 2])


def test_a_step_past_the_pixel_range_is_clamped_to_it():
    eps = 0.3
    dark, bright = _gray(10), _gray(245)
    adv = _pgd(dark, eps=eps, alpha=1.0, steps=1)
    assert torch.equal(adv[0, 0], torch.zeros(4, 4))  # 10/255 − 0.3 < 0
    assert torch.allclose(adv[0, 1], torch.full((4, 4), 10 / 255 + eps))
    adv = _pgd(bright, eps=eps, alpha=1.0, steps=1)
    assert torch.equal(adv[0, 1], torch.ones(4, 4))  # 245/255 + 0.3 > 1
    assert torch.allclose(adv[0, 0], torch.full((4, 4), 245 / 255 - eps))


def test_each_of_the_steps_moves_alpha_in_the_gradients_sign_until_the_ball_stops_it():
    x, eps, alpha = _gray(128), 0.2, 0.03
    start = _pgd(x, eps=eps, alpha=alpha, steps=0)
    centre = 128 / 255
    for steps in (1, 2, 3):
        adv = _pgd(x, eps=eps, alpha=alpha, steps=steps)
        down = torch.clamp(start[0, 0] - steps * alpha, min=centre - eps)
        up = torch.clamp(start[0, 1] + steps * alpha, max=centre + eps)
        assert torch.allclose(adv[0, 0], down, atol=1e-6)
        assert torch.allclose(adv[0, 1], up, atol=1e-6)
        assert torch.allclose(adv[1, 0], torch.clamp(start[1, 0] + steps * alpha, max=centre + eps), atol=1e-6)
        assert torch.allclose(adv[1, 1], torch.clamp(start[1, 1] - steps * alpha, min=centre - eps), atol=1e-6)


def test_float_images_in_the_unit_range_are_taken_as_they_are():
    x = _gray(51)
    as_float = x.float() / 255
    for steps in (0, 2):
        assert torch.equal(_pgd(as_float, eps=0.05, alpha=0.02, steps=steps),
                           _pgd(x, eps=0.05, alpha=0.02, steps=steps))


def test_eps_0_returns_the_images_as_they_are():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(_pgd(x, eps=0.0, alpha=0.1, steps=2), x.float() / 255)


@pytest.mark.parametrize("training", [True, False])
def test_the_attack_runs_in_eval_mode_restores_the_mode_and_leaves_no_gradient(training):
    model = _ChannelCLIP()
    model.train(training)
    adv = _pgd(_gray(100), eps=0.1, alpha=0.05, steps=3, model=model)
    assert model.modes == [False, False, False]
    assert model.training is training
    assert model.weight.grad is None
    assert not adv.requires_grad and adv.grad_fn is None


class _BatchNormCLIP(_ChannelCLIP):
    """The stub with a BatchNorm over the two image features."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(2)

    def encode_image(self, images, normalize=False):
        return self.bn(super().encode_image(images))


def test_the_batch_loss_is_clip_loss_on_the_pgd_images_of_the_batch_with_batchnorm_frozen():
    images = torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    captions = ("b", "a", "b", "a")
    tokens_of = {"a": 0, "b": 1}
    model = _BatchNormCLIP()
    loss = adversarial(model, images, captions, tokenizer=lambda texts: torch.tensor([tokens_of[t] for t in texts]),
                       preprocess=_unit, generator=torch.Generator().manual_seed(9), epoch_offset=0,
                       eps=0.1, alpha=0.04, steps=2)
    idx = torch.tensor([2, 1])
    got = loss(model, idx, 0)

    # the same by hand: the clean batch's statistics step first, then PGD from the same seed
    twin = _BatchNormCLIP()
    twin.train()
    with torch.no_grad():
        twin.encode_image(images[idx].float() / 255)
    assert torch.allclose(model.bn.running_mean, twin.bn.running_mean)
    assert torch.allclose(model.bn.running_var, twin.bn.running_var)
    assert not torch.allclose(twin.bn.running_mean, torch.zeros(2))  # the step did move them
    adv = pgd_images(twin, images[idx], torch.tensor([1, 0]), preprocess=_unit, eps=0.1, alpha=0.04,
                     steps=2, generator=torch.Generator().manual_seed(9))
    assert (adv - images[idx].float() / 255).abs().max() > 0.05  # steps of 0.04 from the start
    with frozen_batchnorm(twin):
        expected = clip_loss(*twin(adv, torch.tensor([1, 0]))[:3])
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # the loss pass fed no PGD image into the statistics, and the model stays in training mode
    assert torch.allclose(model.bn.running_mean, twin.bn.running_mean)
    assert model.training and model.bn.training
    got.backward()
    assert model.weight.grad is not None and model.weight.grad != 0
