"""CleanCLIP's schedule, BatchNorm re-estimation and fine-tuning loop
(``fedsim.objectives.cleanclip``) on a stub CLIP with one BatchNorm, counted by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from fedsim.objectives import cleanclip_finetune, cleanclip_loss, recompute_batchnorm
from fedsim.objectives.cleanclip import WARMUP_MAX_SHARE, WARMUP_STEPS, warmup_then_cosine
from fedsim.training import clip_loss


def test_warmup_then_cosine_by_hand():
    assert (WARMUP_STEPS, WARMUP_MAX_SHARE) == (50, 0.2)
    # 320 steps: w = 50
    assert warmup_then_cosine(0, 320) == pytest.approx(1 / 50)
    assert warmup_then_cosine(49, 320) == pytest.approx(1.0)
    assert warmup_then_cosine(50, 320) == pytest.approx(1.0)
    assert warmup_then_cosine(50 + 135, 320) == pytest.approx(0.5)
    assert warmup_then_cosine(320, 320) == pytest.approx(0.0, abs=1e-12)
    # 1000 steps: still 50, not a fifth
    assert warmup_then_cosine(99, 1000) == pytest.approx(0.5 * (1 + math.cos(math.pi * 49 / 950)))
    # 10 steps: w = ⌊0.2 · 10⌋ = 2
    assert [warmup_then_cosine(s, 10) for s in (0, 1, 2)] == pytest.approx([0.5, 1.0, 1.0])
    assert warmup_then_cosine(6, 10) == pytest.approx(0.5)
    # 3 steps: ⌊0.6⌋ = 0 → w = 1; total = w divides by max(1, 0)
    assert warmup_then_cosine(0, 3) == pytest.approx(1.0)
    assert warmup_then_cosine(2, 3) == pytest.approx(0.5)
    assert warmup_then_cosine(1, 1) == pytest.approx(1.0)
    # total − w = 1: the decay ends at 0 at step = total
    assert warmup_then_cosine(2, 2) == pytest.approx(0.0, abs=1e-12)


def test_cleanclip_loss_defaults_to_the_papers_lambdas_and_follows_the_features_device():
    g = torch.Generator().manual_seed(0)
    i, t, iv, tv = (F.normalize(torch.randn(3, 4, generator=g), dim=-1) for _ in range(4))
    s = torch.tensor(2.0)
    assert cleanclip_loss(i, t, iv, tv, s).item() == pytest.approx(cleanclip_loss(i, t, iv, tv, s, 1.0, 1.0).item())
    assert cleanclip_loss(i, t, iv, tv, s, 1.0, 1.0).item() != pytest.approx(
        cleanclip_loss(i, t, iv, tv, s, 2.0, 1.0).item())
    assert cleanclip_loss(i, t, iv, tv, s, 1.0, 1.0).item() != pytest.approx(
        cleanclip_loss(i, t, iv, tv, s, 1.0, 2.0).item())
    x = torch.randn(3, 4, device="meta")  # a stand-in for a GPU: labels on the CPU would not match
    assert cleanclip_loss(x, x, x, x, torch.tensor(1.0, device="meta")).device.type == "meta"


class _Stub(torch.nn.Module):
    """image embedding: BatchNorm1d(1) of each image's mean pixel, then (x, 1 − x) normalised;
    text embedding: e_token; scale 2."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(1)
        self.w = torch.nn.Parameter(torch.ones(()))

    def encode_image(self, images, normalize=False):
        return self.bn(images.float().mean(dim=(1, 2, 3))[:, None])

    def forward(self, images, tokens):
        x = self.w * self.encode_image(images)
        image = F.normalize(torch.cat([x, 1 - x], dim=1), dim=-1)
        return image, torch.eye(2)[tokens % 2], torch.tensor(2.0), "extra output"


def _images(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)


def test_recompute_batchnorm_averages_the_statistics_of_every_batch_of_two_or_more():
    model = _Stub()
    model.eval()
    model.bn.running_mean.fill_(50.0)
    recompute_batchnorm(model, _images([1, 3, 5, 7, 100]), lambda x: x, batch_size=2)
    # batches [1, 3], [5, 7] (the single [100] is skipped): means 2, 6; unbiased variances 2, 2
    assert model.bn.running_mean.item() == pytest.approx(4.0)
    assert model.bn.running_var.item() == pytest.approx(2.0)
    assert model.bn.num_batches_tracked.item() == 2
    assert model.bn.momentum == 0.1 and not model.bn.training and not model.training
    assert model.w.item() == 1.0


def test_recompute_batchnorm_restores_the_momentum_when_a_batch_fails():
    model = _Stub()

    def broken(x):
        raise RuntimeError("preprocess failed")

    with pytest.raises(RuntimeError):
        recompute_batchnorm(model, _images([1, 3]), broken, batch_size=2)
    assert model.bn.momentum == 0.1


CAPTIONS = ("a", "b", "a", "b")


def _tokenizer(texts):
    return torch.tensor([0 if t == "a" else 1 for t in texts])


def _finetune(model, *, lambda1=1.0, lambda2=0.0, lr=0.0, batchnorm="eval", images=None, epochs=1,
              tokenizer=_tokenizer):
    images = images if images is not None else torch.tensor([10, 200, 40, 90], dtype=torch.uint8).view(
        -1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    kw = {} if batchnorm is None else {"batchnorm": batchnorm}
    return cleanclip_finetune(model, images, CAPTIONS, tokenizer=tokenizer, preprocess=lambda x: x.float() / 255,
                              epochs=epochs, lr=lr, batch_size=4, weight_decay=0.0, lambda1=lambda1,
                              lambda2=lambda2, generator=torch.Generator().manual_seed(0), **kw)


def test_batchnorm_defaults_to_eval_mode():
    model = _Stub()
    _finetune(model, lambda2=1.0, batchnorm=None)
    assert model.bn.num_batches_tracked.item() == 0 and model.bn.running_mean.item() == 0.0


def test_lambda2_0_edits_no_caption():
    calls = []

    def tokenizer(texts):
        calls.append(list(texts))
        return _tokenizer(texts)

    _finetune(_Stub(), lambda2=0.0, tokenizer=tokenizer)
    assert calls == [["a", "b"]]  # the captions' distinct texts, tokenised once
    _finetune(_Stub(), lambda2=1.0, tokenizer=tokenizer)
    assert len(calls) == 3  # then the captions and their edits


def test_lambda2_0_is_lambda1_times_clip_loss_on_the_pairs():
    model = _Stub()
    model.eval()
    images = torch.tensor([10, 200, 40, 90], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    with torch.no_grad():
        expected = clip_loss(*model(images.float() / 255, _tokenizer(CAPTIONS))[:3]).item()
    assert _finetune(_Stub(), lambda1=1.0) == pytest.approx(expected, rel=1e-5)
    assert _finetune(_Stub(), lambda1=2.5) == pytest.approx(2.5 * expected, rel=1e-5)


def test_with_lambda2_the_loss_adds_the_unimodal_terms():
    plain = _finetune(_Stub(), lambda1=1.0, lambda2=0.0)
    both = _finetune(_Stub(), lambda1=1.0, lambda2=1.0)
    only_ss = _finetune(_Stub(), lambda1=0.0, lambda2=1.0)
    assert only_ss > 0 and both == pytest.approx(plain + only_ss, rel=1e-5)


@pytest.mark.parametrize("lambda2", [0.0, 1.0])
def test_eval_mode_leaves_the_statistics_train_mode_moves_them_recompute_gives_the_clean_ones(lambda2):
    frozen = _Stub()
    _finetune(frozen, lambda2=lambda2, batchnorm="eval")
    assert frozen.bn.running_mean.item() == 0.0 and frozen.bn.num_batches_tracked.item() == 0
    trained = _Stub()
    _finetune(trained, lambda2=lambda2, batchnorm="train")
    assert trained.bn.num_batches_tracked.item() == 1 and trained.bn.running_mean.item() != 0.0
    recomputed = _Stub()
    _finetune(recomputed, lambda2=lambda2, batchnorm="recompute")
    images = torch.tensor([10, 200, 40, 90], dtype=torch.float32) / 255
    assert recomputed.bn.running_mean.item() == pytest.approx(images.mean().item(), rel=1e-5)
    assert recomputed.bn.running_var.item() == pytest.approx(images.var().item(), rel=1e-4)
    assert recomputed.bn.momentum == 0.1


def test_the_fine_tuning_steps_with_the_warm_up_learning_rate():
    model = _Stub()
    _finetune(model, lr=0.1, epochs=1)
    # one step in all: w = 1, factor 1 → AdamW moves w by lr against its gradient's sign
    assert abs(model.w.item() - 1.0) == pytest.approx(0.1, abs=1e-4)


def test_the_caption_edits_are_drawn_from_the_generator_not_torchs_global_rng():
    captions = tuple(f"a photo of shape number {i} in the middle of the picture" for i in range(4))
    images = torch.tensor([10, 200, 40, 90], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()

    def edits(global_seed):
        calls = []

        def tokenizer(texts):
            calls.append(list(texts))
            return torch.tensor([len(t) % 2 for t in texts])

        torch.manual_seed(global_seed)
        cleanclip_finetune(_Stub(), images, captions, tokenizer=tokenizer, preprocess=lambda x: x.float() / 255,
                           epochs=1, lr=0.0, batch_size=4, weight_decay=0.0, lambda1=1.0, lambda2=1.0,
                           generator=torch.Generator().manual_seed(0))
        return calls[1]

    first = edits(1)
    assert first == edits(2) and set(first) != set(captions)


def test_lambda2_scales_the_unimodal_terms():
    plain = _finetune(_Stub(), lambda1=1.0, lambda2=0.0)
    only_ss = _finetune(_Stub(), lambda1=0.0, lambda2=1.0)
    assert _finetune(_Stub(), lambda1=1.0, lambda2=0.5) == pytest.approx(plain + 0.5 * only_ss, rel=1e-5)


def test_every_step_takes_its_learning_rate_from_the_references_schedule(monkeypatch):
    import importlib

    module = importlib.import_module("fedsim.objectives.cleanclip")
    calls = []
    monkeypatch.setattr(module, "warmup_then_cosine", lambda step, total: calls.append((step, total)) or 1.0)
    images = torch.tensor([10, 200, 40, 90], dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    cleanclip_finetune(_Stub(), images, CAPTIONS, tokenizer=_tokenizer, preprocess=lambda x: x.float() / 255,
                       epochs=2, lr=0.1, batch_size=2, weight_decay=0.0, lambda1=1.0, lambda2=0.0,
                       generator=torch.Generator().manual_seed(0))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4)]
