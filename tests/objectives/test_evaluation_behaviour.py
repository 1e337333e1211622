"""Zero-shot prompt ensembling and retrieval recall (``fedsim.evaluation``), on hand-computed
cases whose numbers a near-miss implementation gets wrong."""

import math

import pytest
import torch
import torch.nn.functional as F

from fedsim.evaluation import retrieval_recall, zero_shot_classifier

# Text embeddings of unequal norms: averaging them raw lets the long ones dominate the
# direction, which CLIP's ensemble (normalise each, average, normalise) avoids.
PROMPTS = {
    "a cat": [3.0, 0.0, 4.0],    # norm 5 → (0.6, 0, 0.8)
    "the cat": [0.0, 1.0, 0.0],  # norm 1
    "a dog": [0.0, 0.0, 2.0],    # norm 2 → (0, 0, 1)
    "the dog": [6.0, 8.0, 0.0],  # norm 10 → (0.6, 0.8, 0)
}


class _TextTower(torch.nn.Module):
    """``encode_text`` as open_clip's: token rows → embeddings, unit length on ``normalize``."""

    def __init__(self):
        super().__init__()
        self.table = torch.tensor(list(PROMPTS.values()))

    def encode_text(self, tokens, normalize: bool = False):
        emb = self.table[tokens]
        return F.normalize(emb, dim=-1) if normalize else emb


def _tokenizer(texts):
    rows = list(PROMPTS)
    return torch.tensor([rows.index(t) for t in texts])


def test_zero_shot_weights_average_the_normalised_prompt_embeddings_then_normalise():
    weights = zero_shot_classifier(_TextTower(), _tokenizer, ["cat", "dog"], ["a {}", "the {}"])
    # cat: mean((0.6, 0, 0.8), (0, 1, 0)) = (0.3, 0.5, 0.4), of norm √0.5 → (3, 5, 4)/√50
    # dog: mean((0, 0, 1), (0.6, 0.8, 0)) = (0.3, 0.4, 0.5) → (3, 4, 5)/√50
    # (averaging the raw embeddings would give cat ∝ (1.5, 0.5, 2), dog ∝ (3, 4, 1))
    expected = torch.tensor([[3.0, 5.0, 4.0], [3.0, 4.0, 5.0]]).t() / math.sqrt(50)
    assert weights.shape == (3, 2)
    torch.testing.assert_close(weights, expected)


def test_zero_shot_weights_decide_a_class_the_raw_mean_would_get_wrong():
    weights = zero_shot_classifier(_TextTower(), _tokenizer, ["cat", "dog"], ["a {}", "the {}"])
    # cosine with cat (3, 5, 4)/√50 is 0.707, with dog (3, 4, 5)/√50 0.566: a cat. The raw
    # means' directions, (0.588, 0.196, 0.784) and (0.588, 0.784, 0.196), score it
    # 0.196 and 0.784: a dog.
    image = torch.tensor([[0.0, 1.0, 0.0]])
    assert (image @ weights).argmax(1).tolist() == [0]


# Five images of two distinct captions (caption_of); similarities (columns 0, 1 of I·Tᵀ):
#   image:    0     1     2     3     4
#   caption:  1     1     0     0     1
#   text 0:  .9    .8    .7    .1    .3   → ranking 0, 1, 2, 4, 3: its first own image (2) is 3rd
#   text 1:  .1    .5    .2    .95   .6   → ranking 3, 4, 1, 2, 0: its first own image (4) is 2nd
IMAGES = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.5, -0.2], [0.7, 0.2, 0.6], [0.1, 0.95, -0.4], [0.3, 0.6, 0.5]])
TEXTS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
CAPTION_OF = torch.tensor([1, 1, 0, 0, 1])


def test_text_to_image_recall_at_k_looks_at_exactly_k_images():
    r = retrieval_recall(IMAGES, TEXTS, CAPTION_OF, ks=(1, 2, 3, 5))
    # Recall@k counts the captions whose first own image ranks ≤ k: ranks 3 and 2
    assert [r[f"t2i_r{k}"] for k in (1, 2, 3, 5)] == [0.0, 0.5, 1.0, 1.0]
    # image→text: images 2 and 4 rank their own caption first; with two captions, all do by k = 2
    assert r["i2t_r1"] == pytest.approx(2 / 5)
    assert r["i2t_r2"] == 1.0


def test_text_to_image_recall_at_a_single_k():
    # One k alone, as the evaluator asks for (1, 5): at k = 2 only caption 1 is found
    assert retrieval_recall(IMAGES, TEXTS, CAPTION_OF, ks=(2,))["t2i_r2"] == 0.5
