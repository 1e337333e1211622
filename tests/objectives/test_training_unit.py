"""Local contrastive training (``fedsim.training``) on stubs small enough to compute by hand:
CLIP's InfoNCE, the BatchNorm helpers, the epoch's batches, one AdamW step and the warm-up +
cosine schedule."""

import math

import pytest
import torch

from fedsim.training import (
    batch_statistics_only,
    batches,
    batchnorms,
    clip_loss,
    frozen_batchnorm,
    pairs_loss,
    train_epochs,
    update_batchnorm,
    warmup_cosine,
)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- clip_loss
def test_clip_loss_matches_a_hand_computation_on_non_square_logits():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    s = 3.0
    # s·I Tᵀ = [[3, 1.8], [0, 2.4]]
    i2t = (-math.log(math.exp(3) / (math.exp(3) + math.exp(1.8)))
           - math.log(math.exp(2.4) / (math.exp(0) + math.exp(2.4)))) / 2
    t2i = (-math.log(math.exp(3) / (math.exp(3) + math.exp(0)))
           - math.log(math.exp(2.4) / (math.exp(1.8) + math.exp(2.4)))) / 2
    got = clip_loss(image, text, torch.tensor(s, dtype=torch.float64))
    assert got.item() == pytest.approx((i2t + t2i) / 2, rel=1e-12)


def test_clip_loss_builds_its_labels_on_the_features_device():
    # the meta device stands in for a GPU: labels left on the CPU would not match it
    x = torch.randn(3, 4, device="meta")
    assert clip_loss(x, x, torch.tensor(1.0, device="meta")).device.type == "meta"


# --------------------------------------------------------------------------- BatchNorm helpers
class _Tower(torch.nn.Module):
    """An image tower of one BatchNorm over one feature, a dropout (not a BatchNorm) and a
    second BatchNorm, with ``encode_image``."""

    def __init__(self):
        super().__init__()
        self.bn1 = torch.nn.BatchNorm1d(1)
        self.drop = torch.nn.Dropout(0.5)
        self.bn2 = torch.nn.BatchNorm2d(1)
        self.calls = 0

    def encode_image(self, images):
        self.calls += 1
        return self.bn1(images)


def test_batchnorms_lists_every_batchnorm_layer_only():
    tower = _Tower()
    assert batchnorms(tower) == [tower.bn1, tower.bn2]
    assert batchnorms(torch.nn.Linear(2, 2)) == []


def test_frozen_batchnorm_puts_only_the_batchnorms_in_eval_mode_and_restores_each_mode():
    tower = _Tower()
    tower.train()
    tower.bn2.eval()
    with frozen_batchnorm(tower) as inside:
        assert inside is tower
        assert not tower.bn1.training and not tower.bn2.training
        assert tower.drop.training and tower.training
    assert tower.bn1.training and not tower.bn2.training and tower.drop.training


def test_frozen_batchnorm_restores_the_modes_when_the_body_raises():
    tower = _Tower()
    tower.train()
    with pytest.raises(KeyError), frozen_batchnorm(tower):
        raise KeyError("boom")
    assert tower.bn1.training and tower.bn2.training


def test_update_batchnorm_takes_one_momentum_step_of_the_batchs_statistics_and_restores_modes():
    tower = _Tower()
    tower.eval()
    tower.bn2.train()
    weight = tower.bn1.weight.detach().clone()
    update_batchnorm(tower, torch.tensor([[1.0], [3.0]]))
    # momentum 0.1: mean 0.9·0 + 0.1·2, unbiased variance 0.9·1 + 0.1·2
    assert tower.bn1.running_mean.item() == pytest.approx(0.2)
    assert tower.bn1.running_var.item() == pytest.approx(1.1)
    assert tower.bn1.num_batches_tracked.item() == 1
    assert not tower.bn1.training and tower.bn2.training and not tower.training
    assert torch.equal(tower.bn1.weight, weight)
    assert tower.calls == 1


def test_update_batchnorm_restores_the_modes_when_the_pass_fails():
    tower = _Tower()
    tower.eval()
    with pytest.raises(RuntimeError):
        update_batchnorm(tower, torch.ones(2, 5))  # BatchNorm1d(1) refuses 5 features
    assert not tower.bn1.training and not tower.bn2.training


def test_update_batchnorm_leaves_a_model_without_batchnorm_alone():
    class NoTower(torch.nn.Module):  # no encode_image: a pass would raise
        pass

    update_batchnorm(NoTower(), torch.ones(2, 1))


def test_update_batchnorm_takes_no_gradient():
    class Tower(_Tower):
        def encode_image(self, images):
            self.out = super().encode_image(images * self.scale)
            return self.out

    tower = Tower()
    tower.scale = torch.nn.Parameter(torch.ones(()))
    update_batchnorm(tower, torch.tensor([[1.0], [3.0]]))
    assert not tower.out.requires_grad


# --------------------------------------------------------------------------- batches
def test_batches_are_a_seeded_shuffle_cut_in_order():
    got = [b.tolist() for b in batches(10, 4, _g(1))]
    assert [len(b) for b in got] == [4, 4, 2]
    assert sorted(sum(got, [])) == list(range(10))
    assert sum(got, []) == torch.randperm(10, generator=_g(1)).tolist()
    assert got == [b.tolist() for b in batches(10, 4, _g(1))]
    assert got != [b.tolist() for b in batches(10, 4, _g(2))]


def test_batches_drop_a_last_batch_of_one_and_keep_one_of_two():
    assert [len(b) for b in batches(9, 4, _g())] == [4, 4]
    assert [len(b) for b in batches(2, 4, _g())] == [2]
    assert list(batches(1, 4, _g())) == []


# --------------------------------------------------------------------------- train_epochs
class _Scalar(torch.nn.Module):
    def __init__(self, value=2.0):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(value))


def _linear_loss(slope):
    """loss = slope · p: gradient ``slope`` whatever p."""
    return lambda model, idx, epoch: slope * model.p


def _train(model, n=2, batch_size=2, **kw):
    args = dict(preprocess=None, epochs=1, lr=0.1, batch_size=batch_size, weight_decay=0.5, generator=_g())
    args.update(kw)
    return train_epochs(model, torch.zeros(n, 1), None, **args)


def test_one_step_is_adamws_decoupled_weight_decay_then_a_step_of_lr_against_the_gradients_sign():
    model = _Scalar(2.0)
    loss = _train(model, batch_loss=_linear_loss(3.0))
    # AdamW's first step: p·(1 − lr·wd) − lr·g/(|g| + 1e-8) = 2·0.95 − 0.1 (Adam's L2 would give 1.9)
    assert model.p.item() == pytest.approx(1.8, abs=1e-6)
    assert loss == pytest.approx(6.0)  # the loss before the step


def test_the_schedule_scales_the_learning_rate_of_each_step():
    model = _Scalar(2.0)
    calls = []

    def half(step, total):
        calls.append((step, total))
        return 0.5

    _train(model, batch_loss=_linear_loss(3.0), lr_schedule=half)
    # lr 0.05: 2·(1 − 0.05·0.5) − 0.05
    assert model.p.item() == pytest.approx(1.9, abs=1e-6)
    assert calls == [(0, 1)]


def test_after_step_runs_after_every_step_on_the_stepped_model():
    model, seen = _Scalar(2.0), []
    _train(model, n=6, epochs=2, weight_decay=0.0, batch_loss=_linear_loss(1.0),
           after_step=lambda m: seen.append(round(m.p.item(), 4)))
    # six steps of lr 0.1 against a constant gradient of 1 (Adam's ratio stays 1)
    assert seen == pytest.approx([1.9, 1.8, 1.7, 1.6, 1.5, 1.4], abs=1e-4)


def test_a_parameter_without_gradient_in_a_step_is_not_stepped():
    # the gradients are cleared to None: a parameter that a batch's loss does not reach (as
    # RoCLIP's text tower in a matching epoch) keeps its value, with no momentum step
    model = torch.nn.Module()
    model.p, model.q = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(1.0))
    losses = iter([lambda m: m.p + m.q, lambda m: m.p])
    seen = []
    _train(model, n=4, batch_size=2, weight_decay=0.0, batch_loss=lambda m, idx, epoch: next(losses)(m),
           after_step=lambda m: seen.append(m.q.item()))
    assert seen[0] == pytest.approx(0.9) and seen[1] == seen[0]


def test_train_epochs_trains_in_training_mode_and_returns_the_mean_batch_loss():
    model, modes = _Scalar(2.0), []
    model.eval()
    losses = iter([1.0, 2.0, 6.0])

    def batch_loss(model, idx, epoch):
        modes.append(model.training)
        return next(losses) + 0 * model.p

    assert _train(model, n=6, batch_size=2, batch_loss=batch_loss) == pytest.approx(3.0)
    assert modes == [True, True, True]


def test_train_epochs_of_no_epoch_returns_0():
    assert _train(_Scalar(), epochs=0, batch_loss=_linear_loss(1.0)) == 0.0


class _StubCLIP(torch.nn.Module):
    """image embedding = the image's two pixels times a weight, text embedding = e_token."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, images, tokens):
        return self.w * images, torch.eye(2)[tokens], torch.tensor(2.0), "extra output"


def test_without_a_batch_loss_it_is_clip_loss_on_the_preprocessed_pairs():
    images = torch.tensor([[1.0, 0.0], [0.2, 0.7]])
    tokens = torch.tensor([0, 1])
    model = _StubCLIP()
    loss = train_epochs(model, images, tokens, preprocess=lambda x: 2 * x, epochs=1, lr=0.0, batch_size=2,
                        weight_decay=0.0, generator=_g())
    expected = clip_loss(2 * images, torch.eye(2), torch.tensor(2.0))
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert pairs_loss(images, tokens, lambda x: 2 * x)(model, torch.tensor([1, 0]), 0).item() == \
        pytest.approx(expected.item(), rel=1e-6)


# --------------------------------------------------------------------------- warmup_cosine
def test_warmup_cosine_by_hand():
    schedule = warmup_cosine(0.25)  # total 20: w = 5
    assert [schedule(s, 20) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert schedule(5, 20) == pytest.approx(1.0)
    assert schedule(10, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))
    assert schedule(20, 20) == pytest.approx(0.0, abs=1e-7)


def test_warmup_cosine_defaults_to_a_tenth_and_warms_up_at_least_one_step():
    schedule = warmup_cosine()
    assert schedule(0, 20) == pytest.approx(0.5)  # w = 2
    assert schedule(1, 20) == pytest.approx(1.0)
    assert schedule(11, 20) == pytest.approx(0.5)  # progress 9/18
    short = warmup_cosine(0.1)
    assert short(0, 5) == pytest.approx(1.0)  # ⌊0.5⌋ = 0 → w = 1
    assert short(3, 5) == pytest.approx(0.5)  # progress 2/4
    # total = w: progress divides by max(1, 0)
    assert warmup_cosine(1.0)(1, 1) == pytest.approx(1.0)
    # total − w = 1: the end of the decay (step = total) is 0
    assert warmup_cosine(0.5)(2, 2) == pytest.approx(0.0, abs=1e-7)


def test_batch_statistics_only_normalises_by_the_batch_and_updates_nothing():
    """Inside: a training-mode layer gives (x − batch mean) / sqrt(batch var + eps) (biased
    variance, computed here by hand), its running statistics and batch count stay as they
    were; an eval-mode layer keeps normalising by its running statistics. After: tracking is
    back on, also after an error inside."""
    torch.manual_seed(0)
    train_bn, eval_bn = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    eval_bn.running_mean.fill_(0.5)
    eval_bn.running_var.fill_(4.0)
    eval_bn.eval()
    model = torch.nn.Sequential(train_bn, eval_bn)
    x = torch.randn(8, 3) * 3 + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with batch_statistics_only(model):
        y = train_bn(x)
        z = eval_bn(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + train_bn.eps))
    torch.testing.assert_close(z, (x - 0.5) / math.sqrt(4.0 + eval_bn.eps))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert train_bn.track_running_stats and eval_bn.track_running_stats
    with pytest.raises(RuntimeError), batch_statistics_only(model):
        raise RuntimeError("inside")
    assert train_bn.track_running_stats
    train_bn(x)  # tracking again: the running statistics move
    assert not torch.equal(train_bn.running_mean, before["0.running_mean"])
