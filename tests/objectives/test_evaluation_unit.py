"""The evaluators of ``fedsim.evaluation`` end to end on a lookup-table model whose features
are chosen by hand (so every number below is computed by hand), and the small functions they
are made of: batching, eval mode, ASR's exclusion of the target class, the uint8 trigger path,
and the weighted kNN vote with its protocol defaults (k = 200, τ = 0.1)."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fedsim.evaluation import (
    Evaluator,
    SimCLREvaluator,
    attack_success_rate,
    clean_accuracy,
    encode_images,
    knn_predict,
    linear_probe,
    make_trigger_images,
    predict,
    retrieval_recall,
    text_attack_success_rate,
    zero_shot_classifier,
)


# --------------------------------------------------------------------------- a lookup model
def _images(ids) -> torch.Tensor:
    """uint8 (n, 3, 2, 2) images, image i filled with the pixel value ids[i] (its identity)."""
    return torch.tensor(ids, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()


def _shift(by: int):
    """A trigger on float [0, 1] images: +by/255, i.e. image id i becomes id i + by."""
    return lambda x: x + by / 255.0


class _LookupModel(torch.nn.Module):
    """A CLIP-like model: an image's features are ``image_table[its pixel value]``, a text's
    ``text_table[text]`` (the tokenizer hands the texts through); unit length on ``normalize``,
    as open_clip's. ``preprocess`` must have run (it turns uint8 into float)."""

    def __init__(self, image_table: dict, text_table: dict | None = None):
        super().__init__()
        self.image_table, self.text_table = image_table, text_table or {}
        self.batches = []

    def encode_image(self, x, normalize: bool = False):
        assert x.dtype == torch.float32, "preprocess was not applied"
        self.batches.append(len(x))
        ids = x[:, 0, 0, 0].round().long().tolist()
        emb = torch.tensor([self.image_table[i] for i in ids], dtype=torch.float32)
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(self, texts, normalize: bool = False):
        emb = torch.tensor([self.text_table[t] for t in texts], dtype=torch.float32)
        return F.normalize(emb, dim=-1) if normalize else emb


def _preprocess(images: torch.Tensor) -> torch.Tensor:
    return images.float()


def _tokenizer(texts):
    return list(texts)


# Test split: four images (ids 1..4) of classes cat, dog, star, cat; the target is star (2).
# Clean features (raw → unit):      prediction (classifier = the axes)
#   1: (3, 1, 0) → (.949, .316, 0)   cat  ✓
#   2: (0, 4, 3) → (0, .8, .6)       dog  ✓
#   3: (0, 0, 5) → (0, 0, 1)         star ✓
#   4: (1, 2, 0) → (.447, .894, 0)   dog  ✗ (a cat)            → CA 3/4
# The trigger adds 100 to the id, the DBA piece 200:
#   101: star ✓   102: dog   103: cat (a star: not counted)   104: star ✓   → ASR 2/3
#   201: star ✓   202: cat   203: cat                          204: dog      → piece ASR 1/3
IMAGE_TABLE = {
    1: [3.0, 1.0, 0.0], 2: [0.0, 4.0, 3.0], 3: [0.0, 0.0, 5.0], 4: [1.0, 2.0, 0.0],
    101: [0.0, 0.0, 1.0], 102: [0.0, 3.0, 1.0], 103: [1.0, 0.0, 0.0], 104: [0.0, 0.0, 2.0],
    201: [0.0, 0.0, 1.0], 202: [1.0, 0.0, 0.0], 203: [2.0, 0.0, 1.0], 204: [0.0, 1.0, 0.0],
}
# Prompts of unequal norms along the class axes (the classifier's columns are the axes); the
# captions "a dog" and "a star" are prompts too. Distinct captions, sorted: "a dog" (row 0),
# "a red cat" (row 1), "a star" (row 2); raw norms 5, 1, 0.5 (a raw similarity would favour
# "a dog"). Triggered captions of non-target images: "a dog cf" points at the star image 3,
# "a red cat cf" at the cat image 1.
TEXT_TABLE = {
    "a cat": [2.0, 0.0, 0.0], "the cat": [1.0, 0.0, 0.0],
    "a dog": [0.0, 5.0, 0.0], "the dog": [0.0, 1.0, 0.0],
    "a star": [0.0, 0.0, 0.5], "the star": [0.0, 0.0, 3.0],
    "a red cat": [1.0, 0.0, 0.0],
    "a dog cf": [0.0, 0.0, 3.0], "a red cat cf": [2.0, 0.0, 0.0],
}
TEST = SimpleNamespace(images=_images([1, 2, 3, 4]), captions=("a red cat", "a dog", "a star", "a red cat"),
                       labels=torch.tensor([0, 1, 2, 0]))


def _evaluator(**kw):
    model = _LookupModel(IMAGE_TABLE, TEXT_TABLE)
    return model, Evaluator(model, _preprocess, _tokenizer, TEST, classnames=["cat", "dog", "star"],
                            templates=["a {}", "the {}"], trigger=_shift(100), target=2, **kw)


def test_the_evaluator_measures_every_metric_of_a_hand_computed_split():
    model, evaluate = _evaluator(extra_triggers={"piece": _shift(200)}, caption_trigger=lambda c: c + " cf")
    model.train()
    # Retrieval on unit features, columns "a dog", "a red cat", "a star":
    #   image→text top-1: 1 → red cat ✓, 2 → dog ✓, 3 → star ✓, 4 → dog ✗   → R@1 3/4
    #   text→image top-1: dog → 4 (.894 > .8) ✗, red cat → 1 ✓, star → 3 ✓   → R@1 2/3
    #   (raw image features would rank image 2 (4 > 2) first for "a dog": 3/3)
    # with 3 captions and 4 images, k = 5 looks at all of them: every R@5 is 1.
    # Text-side ASR: "a dog cf" retrieves image 3 (a star) ✓, "a red cat cf" image 1 ✗ → 1/2
    assert evaluate() == {
        "asr_by_trigger": {"piece": pytest.approx(1 / 3)},
        "text_attack_success_rate": 0.5,
        "clean_accuracy": 0.75,
        "attack_success_rate": pytest.approx(2 / 3),
        "retrieval": {"i2t_r1": 0.75, "t2i_r1": pytest.approx(2 / 3), "i2t_r5": 1.0, "t2i_r5": 1.0},
    }
    assert not model.training


def test_the_evaluator_keeps_the_triggered_test_images_and_the_distinct_captions():
    _, evaluate = _evaluator(extra_triggers={"piece": _shift(200)}, caption_trigger=lambda c: c + " cf")
    assert evaluate.triggered[:, 0, 0, 0].tolist() == [101, 102, 103, 104]
    assert evaluate.extra["piece"][:, 0, 0, 0].tolist() == [201, 202, 203, 204]
    assert evaluate._captions == ["a dog", "a red cat", "a star"]
    assert evaluate._caption_rows.tolist() == [1, 0, 2, 1]
    # the star image's caption is not triggered: its retrieving a star would be no attack
    assert evaluate._triggered_captions == ["a dog cf", "a red cat cf"]


def test_without_extra_or_caption_triggers_the_evaluator_reports_neither():
    _, evaluate = _evaluator()
    assert evaluate.extra == {} and evaluate._triggered_captions == []
    assert set(evaluate()) == {"clean_accuracy", "attack_success_rate", "retrieval"}


# --------------------------------------------------------------------------- small pieces
def test_images_are_encoded_in_batches_of_500_preprocessed_unit_length_and_in_order():
    model = _LookupModel({i: [float(i), 1.0] for i in range(1, 7)})
    model.train()
    images = _images([1, 2, 3, 4, 5, 6] * 167)  # 1002 images: 500, 500 and 2
    features = encode_images(model, images, _preprocess)
    assert model.batches == [500, 500, 2] and not model.training
    expected = F.normalize(torch.tensor([[float(i), 1.0] for i in [1, 2, 3, 4, 5, 6] * 167]), dim=-1)
    torch.testing.assert_close(features, expected)
    model.batches.clear()
    torch.testing.assert_close(encode_images(model, images[:5], _preprocess, batch_size=2), expected[:5])
    assert model.batches == [2, 2, 1]


def test_the_zero_shot_classifier_puts_the_model_in_eval_mode():
    model = _LookupModel({}, TEXT_TABLE)
    model.train()
    weights = zero_shot_classifier(model, _tokenizer, ["cat", "dog", "star"], ["a {}", "the {}"])
    torch.testing.assert_close(weights, torch.eye(3))
    assert not model.training


def test_predictions_accuracy_and_asr_of_hand_made_scores():
    features = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.6, 0.5], [0.1, 0.3]])
    classifier = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])  # scores (n, 3)
    # scores: [.9, .1, .5], [.2, .7, .45], [.6, .5, .55], [.1, .3, .2]
    assert predict(features, classifier).tolist() == [0, 1, 0, 1]
    assert clean_accuracy(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 1])) == 0.75
    # target 1: the images of class 1 (two of them, both "hits") are not counted
    preds, labels = torch.tensor([1, 1, 1, 0, 2]), torch.tensor([0, 1, 1, 2, 0])
    assert attack_success_rate(preds, labels, target=1) == pytest.approx(1 / 3)
    # target 0: of the images of classes 1, 1, 2, only the last is read as 0
    assert attack_success_rate(preds, labels, target=0) == pytest.approx(1 / 3)


def test_text_side_asr_is_the_share_of_captions_whose_top_image_is_of_the_target():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 2, 1])
    texts = torch.tensor([[0.1, 0.9], [0.9, 0.1], [0.5, 0.6], [0.5, 0.5]])
    # top-1 images: 1 (class 2), 0 (class 0), 2 (.78 > .6 and .5: class 1), 2 (.7 > .5: class 1)
    assert text_attack_success_rate(texts, images, labels, target=2) == 0.25
    assert text_attack_success_rate(texts, images, labels, target=1) == 0.5


def test_retrieval_recall_reports_recall_at_1_and_5_by_default():
    images = torch.eye(6)[:, :6]
    texts = torch.eye(6)
    # image i is most similar to caption i; its own caption is (i + 1) % 6 for i < 3
    caption_of = torch.tensor([1, 2, 3, 3, 4, 5])
    r = retrieval_recall(images, texts, caption_of)
    assert set(r) == {"i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5"}
    assert r["i2t_r1"] == pytest.approx(3 / 6)  # images 3, 4, 5
    # all other similarities tie at 0: R@5 of image→text depends on the ties, R@6 would be 1
    assert r["t2i_r1"] == pytest.approx(3 / 6)  # captions 3, 4, 5 retrieve images 3, 4, 5


def test_trigger_images_go_through_float_and_back_rounded_and_clamped():
    images = torch.tensor([0, 10, 128, 250, 255], dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 1, 1)
    seen = []

    def trigger(x):
        seen.append(x)
        return x * 1.5 - 0.01  # 10 → 12.45 → 12; 128 → 189.45 → 189; 250 → 372.5 → 255; 0 → -2.55 → 0

    out = make_trigger_images(images, trigger)
    assert seen[0].dtype == torch.float32 and seen[0].max() == 1.0
    assert out.dtype == torch.uint8
    assert out[:, 0, 0, 0].tolist() == [0, 12, 189, 255, 255]
    # rounded, not truncated: 20.6 → 21, 148.6 → 149
    assert make_trigger_images(images, lambda x: x + 20.6 / 255)[:, 0, 0, 0].tolist() == [21, 31, 149, 255, 255]


# --------------------------------------------------------------------------- kNN
def _unit(angles_cos):
    """2-D unit rows at cosine c with (1, 0)."""
    return torch.tensor([[c, math.sqrt(1 - c * c)] for c in angles_cos])


def test_knn_votes_with_exp_similarity_over_temperature():
    query = torch.tensor([[1.0, 0.0]])
    bank = _unit([0.9, 0.7, 0.7])
    labels = torch.tensor([0, 1, 1])
    # τ = 0.1 (the default): e^9 = 8103 for class 0 against 2·e^7 = 2193 for class 1
    assert knn_predict(query, bank, labels, num_classes=2).tolist() == [0]
    # τ = 1: e^0.9 = 2.46 against 2·e^0.7 = 4.03: the majority wins
    assert knn_predict(query, bank, labels, num_classes=2, temperature=1.0).tolist() == [1]
    # k = 1: the nearest alone; k larger than the bank: all of it
    assert knn_predict(query, bank, labels, num_classes=2, k=1, temperature=1.0).tolist() == [0]
    assert knn_predict(query, bank, labels, num_classes=3, k=10, temperature=1.0).tolist() == [1]


def test_knn_looks_at_200_neighbours_by_default():
    # 100 rows of class 0 at similarity .5 and 100 of class 1, one of them a hair further
    # (.4999): class 0 leads by e^5·(1 − e^−0.001) ≈ 0.15. The 201st neighbour (class 1, at
    # similarity 0, weight e^0 = 1) would overturn that.
    query = torch.tensor([[1.0, 0.0]])
    bank = _unit([0.5] * 100 + [0.5] * 99 + [0.4999] + [0.0])
    labels = torch.tensor([0] * 100 + [1] * 100 + [1])
    assert knn_predict(query, bank, labels, num_classes=2).tolist() == [0]
    assert knn_predict(query, bank, labels, num_classes=2, k=201).tolist() == [1]


def test_knn_votes_in_the_features_precision():
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    bank = _unit([0.9, 0.7, 0.7]).double()
    assert knn_predict(query, bank, torch.tensor([0, 1, 1]), num_classes=2).tolist() == [0]


def test_knn_classifies_each_query_of_a_batch_and_breaks_ties_to_the_lowest_class():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    labels = torch.tensor([2, 1, 0])
    # query 3 is at similarity 0 to rows 2 and 3 (classes 1 and 0), -1 to row 1: k = 2 ties
    assert knn_predict(queries, bank, labels, num_classes=3, k=2).tolist() == [2, 1, 0]


def test_the_linear_probe_separates_standardised_features():
    # class by the sign of the second coordinate, which is tiny next to the first: without
    # standardisation an L2-penalised fit (C = 1) could not use it
    features = torch.tensor([[100.0, 0.01], [300.0, 0.02], [200.0, -0.01], [250.0, -0.02],
                             [150.0, 0.015], [220.0, -0.015]])
    labels = torch.tensor([1, 1, 0, 0, 1, 0])
    probe = linear_probe(features, labels)
    # (a fit on the raw features reads (300, .02) and (200, −.01) wrongly)
    assert probe(features).tolist() == [1, 1, 0, 0, 1, 0]
    out = probe(torch.tensor([[180.0, 0.03], [260.0, -0.03]], dtype=torch.float32))
    assert out.dtype == torch.int64 and out.tolist() == [1, 0]


# --------------------------------------------------------------------------- SimCLR
def test_the_simclr_evaluator_reports_knn_and_probe_numbers_of_a_hand_computed_split():
    # Bank: two images per class, cat (0) along x, dog (1) along y, star (2) along −x.
    # Test: ids 1, 2, 3 of classes 0, 1, 2; the first is misread as a dog by kNN (k = 2).
    # The trigger (+100) sends every image towards the star, the DBA piece (+200) only image 2.
    table = {
        11: [1.0, 0.1], 12: [1.0, -0.1], 21: [0.1, 1.0], 22: [-0.1, 1.0], 31: [-1.0, 0.1], 32: [-1.0, -0.1],
        1: [0.3, 1.0], 2: [0.0, 2.0], 3: [-5.0, 0.0],
        101: [-1.0, 0.0], 102: [-2.0, 0.2], 103: [-1.0, -0.2],
        201: [1.0, 0.0], 202: [-1.0, 0.0], 203: [0.1, 1.0],
    }
    model = _LookupModel(table)
    bank = SimpleNamespace(images=_images([11, 12, 21, 22, 31, 32]), labels=torch.tensor([0, 0, 1, 1, 2, 2]))
    test = SimpleNamespace(images=_images([1, 2, 3]), labels=torch.tensor([0, 1, 2]))
    evaluate = SimCLREvaluator(model, _preprocess, bank, test, num_classes=3, trigger=_shift(100), target=2,
                               k=2, extra_triggers={"piece": _shift(200)})
    out = evaluate()
    # kNN CA: image 1 → dog ✗, 2 → dog ✓, 3 → star ✓: 2/3; ASR over the non-stars 1, 2: both → star
    # piece: image 1 → cat, image 2 → star: 1/2
    assert {k: v for k, v in out.items() if not k.startswith("probe")} == {
        "asr_by_trigger": {"piece": 0.5},
        "clean_accuracy": pytest.approx(2 / 3),
        "attack_success_rate": 1.0,
        "knn_accuracy": pytest.approx(2 / 3),
    }
    # the probe draws its boundaries between the bank's three clusters: the same reading
    assert out["probe_accuracy"] == pytest.approx(2 / 3) and out["probe_attack_success_rate"] == 1.0
    assert "asr_by_trigger" not in SimCLREvaluator(model, _preprocess, bank, test, num_classes=3,
                                                   trigger=_shift(100), target=2, k=2)()


def test_the_simclr_evaluator_looks_at_200_neighbours_by_default():
    # the bank of test_knn_looks_at_200_neighbours_by_default, as images 1..201; query image 250
    cos = [0.5] * 100 + [0.5] * 99 + [0.4999] + [0.0]
    table = {i + 1: row for i, row in enumerate(_unit(cos).tolist())}
    table.update({250: [1.0, 0.0], 251: [1.0, 0.0]})
    bank = SimpleNamespace(images=_images(range(1, 202)), labels=torch.tensor([0] * 100 + [1] * 100 + [1]))
    test = SimpleNamespace(images=_images([250]), labels=torch.tensor([0]))
    out = SimCLREvaluator(_LookupModel(table), _preprocess, bank, test, num_classes=2, trigger=_shift(1), target=1)()
    assert (out["clean_accuracy"], out["attack_success_rate"]) == (1.0, 0.0)


def test_the_simclr_evaluator_uses_unit_features_and_its_k_and_temperature():
    # Raw features would let the long bank row (class 1) outvote two near ones (class 0).
    table = {11: [1.0, 0.0], 12: [0.9, 0.1], 21: [0.0, 9.0], 1: [1.0, 0.2], 101: [0.2, 1.0]}
    model = _LookupModel(table)
    bank = SimpleNamespace(images=_images([11, 12, 21]), labels=torch.tensor([0, 0, 1]))
    test = SimpleNamespace(images=_images([1]), labels=torch.tensor([0]))

    def run(**kw):
        return SimCLREvaluator(model, _preprocess, bank, test, num_classes=2, trigger=_shift(100), target=1, **kw)()

    # unit features: query (.98, .196) is at .98 and .995 of the class-0 rows, .196 of class 1
    assert run()["clean_accuracy"] == 1.0 and run()["attack_success_rate"] == 1.0
    # at τ = 100 every vote weighs about 1: two class-0 rows outvote one class-1 row for the
    # triggered query (.196, .98); with k = 1 its nearest row, of class 1, decides alone
    assert run(temperature=100.0)["attack_success_rate"] == 0.0
    assert run(k=1, temperature=100.0)["attack_success_rate"] == 1.0


def test_an_evaluation_reports_its_progress_per_batch_of_images(monkeypatch):
    """Progress of an evaluation (silent below a few seconds, ``fedsim.progress``): one step per
    batch of images encoded, for the clean, the triggered and each extra trigger's images, and
    the same numbers as without it."""
    import contextlib

    import fedsim.evaluation as evaluation
    import fedsim.progress as progress

    seen = {}

    @contextlib.contextmanager
    def recorded(total, what, log, **kw):
        seen.update(total=total, what=what, ticks=0, log=log)
        yield lambda: seen.update(ticks=seen["ticks"] + 1)

    monkeypatch.setattr(progress, "step_progress", recorded)
    monkeypatch.setattr(evaluation, "BATCH", 3)  # 4 test images: 2 batches per pass
    lines = []
    _, evaluate = _evaluator(extra_triggers={"piece": _shift(200)}, log=lines.append)
    got = evaluate()
    # 2 batches × (clean + triggered + 1 extra) = 6 steps, each ticked once
    assert (seen["total"], seen["what"], seen["ticks"], seen["log"]) == (6, "evaluation", 6, lines.append)
    assert got == _evaluator(extra_triggers={"piece": _shift(200)})[1]()
