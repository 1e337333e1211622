"""Zero-shot clean accuracy, attack success rate and retrieval recall of a CLIP model; kNN
and linear-probe accuracy and attack success rate of a SimCLR encoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


BATCH = 500  # images encoded at once


@torch.no_grad()
def encode_images(model, images: torch.Tensor, preprocess, batch_size: int | None = None,
                  after_batch: Callable[[], None] | None = None) -> torch.Tensor:
    """L2-normalised image embeddings, ``batch_size`` (default ``BATCH``) images at a time
    (``after_batch`` is called after each batch: progress)."""
    batch_size = batch_size or BATCH
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        out.append(model.encode_image(preprocess(images[i : i + batch_size]), normalize=True))
        if after_batch is not None:
            after_batch()
    return torch.cat(out)


@torch.no_grad()
def zero_shot_classifier(
    model, tokenizer, classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(embed_dim, classes) weights: per class, the normalised mean of the normalised text
    embeddings of every template filled with the class name (prompt ensembling, Radford et
    al., ICML 2021, Sec. 3.1.4)."""
    model.eval()
    prompts = [t.format(c) for c in classnames for t in templates]
    emb = model.encode_text(tokenizer(prompts), normalize=True)
    emb = emb.view(len(classnames), len(templates), -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1).t()


def predict(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    return (image_features @ classifier).argmax(1)


def clean_accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).float().mean())


def attack_success_rate(
    triggered_predictions: torch.Tensor, labels: torch.Tensor, target: int
) -> float:
    """Carlini & Terzis (ICLR 2022): share of triggered test images whose true class is not
    the target that are classified as the target."""
    keep = labels != target
    return float((triggered_predictions[keep] == target).float().mean())


@torch.no_grad()
def text_attack_success_rate(
    triggered_text_features: torch.Tensor,
    image_features: torch.Tensor,
    image_labels: torch.Tensor,
    target: int,
) -> float:
    """Text-side ASR (the CleanCLIP evaluation's text trigger, Bansal et al., ICCV 2023): the
    share of triggered captions (m, D) — captions of non-target classes with the text trigger
    added — whose top-1 retrieved image among ``image_features`` (n, D) is of class ``target``
    (``image_labels``)."""
    top1 = (triggered_text_features @ image_features.t()).argmax(1)
    return float((image_labels[top1] == target).float().mean())


@torch.no_grad()
def retrieval_recall(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    caption_of: torch.Tensor,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Recall@k between images (n, D) and *distinct* captions (m, D); ``caption_of[i]`` is the
    row of image i's caption. Image→text: share of images whose caption is among the k most
    similar captions. Text→image: share of captions with at least one of their images among the
    k most similar images. (Several images share a caption here, so distinct captions are the
    only fair candidate set.)"""
    sim = image_features @ text_features.t()
    out = {}
    for k in ks:
        top_t = sim.topk(min(k, sim.shape[1]), dim=1).indices
        out[f"i2t_r{k}"] = float((top_t == caption_of.unsqueeze(1)).any(1).float().mean())
        top_i = sim.t().topk(min(k, sim.shape[0]), dim=1).indices
        hit = caption_of[top_i] == torch.arange(sim.shape[1]).unsqueeze(1)
        out[f"t2i_r{k}"] = float(hit.any(1).float().mean())
    return out


def make_trigger_images(images: torch.Tensor, trigger: Callable) -> torch.Tensor:
    """uint8 images → triggered uint8 images, through the same float [0, 1] path as poisoning."""
    return (trigger(images.float() / 255.0) * 255.0).round().clamp(0, 255).to(torch.uint8)


class Evaluator:
    """Centralised evaluation of a global model on the clean test split: zero-shot clean
    accuracy (prompt ensemble), attack success rate of ``trigger`` towards class ``target``,
    image↔caption retrieval recall on the test pairs and, with ``caption_trigger`` (caption →
    triggered caption, e.g. ``clients.attacks.add_text_trigger`` with the attack's token), the
    text-side ASR: the distinct captions of non-target test images, triggered, retrieving
    among the clean test images (``text_attack_success_rate``)."""

    def __init__(self, model, preprocess, tokenizer, test, *, classnames, templates, trigger,
                 target: int, extra_triggers: dict | None = None,
                 caption_trigger: Callable[[str], str] | None = None, log: Callable[[str], None] | None = None):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.log = log  # progress of an evaluation longer than a few seconds (fedsim.progress)
        self.test, self.classnames, self.templates, self.target = test, classnames, templates, target
        self.triggered = make_trigger_images(test.images, trigger)
        # e.g. DBA's pieces: ASR of each, next to the full trigger's
        self.extra = {k: make_trigger_images(test.images, t) for k, t in (extra_triggers or {}).items()}
        distinct = sorted(set(test.captions))
        self._captions = distinct
        where = {c: i for i, c in enumerate(distinct)}
        self._caption_rows = torch.tensor([where[c] for c in test.captions])
        self._triggered_captions = sorted(
            {caption_trigger(c) for c, y in zip(test.captions, test.labels.tolist()) if y != target}
        ) if caption_trigger is not None else []

    @torch.no_grad()
    def __call__(self) -> dict:
        from fedsim.progress import step_progress

        batches = -(-len(self.test.images) // BATCH) * (2 + len(self.extra))
        with step_progress(batches, "evaluation", self.log or (lambda msg: None), terminal=False) as tick:
            return self._evaluate(tick)

    def _evaluate(self, tick: Callable[[], None]) -> dict:
        classifier = zero_shot_classifier(self.model, self.tokenizer, self.classnames, self.templates)
        clean = encode_images(self.model, self.test.images, self.preprocess, after_batch=tick)
        triggered = encode_images(self.model, self.triggered, self.preprocess, after_batch=tick)
        text = self.model.encode_text(self.tokenizer(self._captions), normalize=True)
        extra = {
            name: attack_success_rate(
                predict(encode_images(self.model, images, self.preprocess, after_batch=tick), classifier),
                self.test.labels, self.target,
            )
            for name, images in self.extra.items()
        }
        text_asr = {}
        if self._triggered_captions:
            triggered_text = self.model.encode_text(self.tokenizer(self._triggered_captions), normalize=True)
            text_asr["text_attack_success_rate"] = text_attack_success_rate(
                triggered_text, clean, self.test.labels, self.target
            )
        return {
            **({"asr_by_trigger": extra} if extra else {}),
            **text_asr,
            "clean_accuracy": clean_accuracy(predict(clean, classifier), self.test.labels),
            "attack_success_rate": attack_success_rate(
                predict(triggered, classifier), self.test.labels, self.target
            ),
            "retrieval": retrieval_recall(clean, text, self._caption_rows),
        }


def knn_predict(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1) -> torch.Tensor:
    """Weighted kNN classification (Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via
    Non-Parametric Instance Discrimination", CVPR 2018; the kNN monitor of the SimCLR/MoCo and
    SSL-Backdoor code) of L2-normalised ``features`` (n, D) against a labelled memory bank
    (m, D): each query's k = min(``k``, m) most cosine-similar bank rows vote for their label
    with weight exp(s / τ), s their similarity, τ = ``temperature``; the prediction is the
    class with the largest summed weight (the lowest class id on a tie). k = 200, τ = 0.1 as
    in that protocol."""
    top, idx = (features @ bank.t()).topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(features), num_classes, dtype=top.dtype)
    votes.scatter_add_(1, bank_labels[idx], (top / temperature).exp())
    return votes.argmax(1)


def linear_probe(features: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The linear evaluation protocol (Chen et al., ICML 2020, Sec. 4; Kolesnikov et al. 2019)
    on frozen features: a multinomial logistic regression (scikit-learn's L-BFGS, C = 1, on
    features standardised with the training set's mean and deviation) fitted to ``features``
    (n, D) and ``labels``; deterministic. Returns features → predicted labels."""
    # on use: scikit-learn would cost every process that imports fedsim (client actors too) ~1 s
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(features.double().numpy(), labels.numpy())
    return lambda f: torch.from_numpy(probe.predict(f.double().numpy())).long()


class SimCLREvaluator:
    """Centralised evaluation of a SimCLR encoder (``fedsim.models.SimCLRModel``; features h
    before the projection head, L2-normalised) on the clean test split: weighted kNN
    (``knn_predict``, ``k``, ``temperature``) against the memory bank ``bank`` (labelled
    images), and a linear probe (``linear_probe``) fitted on the bank's features. Each gives an
    accuracy and the attack success rate of ``trigger`` towards class ``target``
    (``attack_success_rate``); ``clean_accuracy`` and ``attack_success_rate`` are kNN's, as
    in the SimCLR backdoor papers (SSL-Backdoor, CTRL). ``extra_triggers`` (DBA's pieces):
    the kNN ASR of each."""

    def __init__(self, model, preprocess, bank, test, *, num_classes: int, trigger, target: int,
                 k: int = 200, temperature: float = 0.1, extra_triggers: dict | None = None):
        self.model, self.preprocess, self.bank, self.test = model, preprocess, bank, test
        self.num_classes, self.target, self.k, self.temperature = num_classes, target, k, temperature
        self.triggered = make_trigger_images(test.images, trigger)
        self.extra = {k: make_trigger_images(test.images, t) for k, t in (extra_triggers or {}).items()}

    @torch.no_grad()
    def __call__(self) -> dict:
        def encode(images):
            return encode_images(self.model, images, self.preprocess)

        bank = encode(self.bank.images)

        def knn(features):
            return knn_predict(features, bank, self.bank.labels, self.num_classes, self.k, self.temperature)

        clean, triggered = encode(self.test.images), encode(self.triggered)
        probe = linear_probe(bank, self.bank.labels)
        labels, target = self.test.labels, self.target
        accuracy = clean_accuracy(knn(clean), labels)
        extra = {name: attack_success_rate(knn(encode(images)), labels, target) for name, images in self.extra.items()}
        return {
            **({"asr_by_trigger": extra} if extra else {}),
            "clean_accuracy": accuracy,
            "attack_success_rate": attack_success_rate(knn(triggered), labels, target),
            "knn_accuracy": accuracy,
            "probe_accuracy": clean_accuracy(probe(clean), labels),
            "probe_attack_success_rate": attack_success_rate(probe(triggered), labels, target),
        }
