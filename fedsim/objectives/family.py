"""What the top-level ``objective`` decides, owned in one place: ``OBJECTIVES`` maps each value
of ``objective`` to an ``Objective``, and the app asks it instead of branching on the name.

- ``clip`` — CLIP's symmetric InfoNCE on image–caption pairs (Radford et al., ICML 2021): the
  whole CLIP model, the honest clients' ``clients.training`` mode, zero-shot evaluation.
- ``simclr`` — SimCLR's NT-Xent on two augmented views (Chen et al., ICML 2020): the image tower
  with a projection head (``[simclr] projection_dim``), NT-Xent for every client, kNN and
  linear-probe evaluation against the labelled training split; poisoning puts the trigger on
  target-class images (SSL-Backdoor, Saha et al., CVPR 2022), so it needs class labels.

An objective takes only its own config section (``[simclr]``) and plain values, never the
whole ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from fedsim.objectives.simclr import simclr


@dataclass(frozen=True)
class Objective:
    """One value of ``objective``. ``section``: the config section it owns (set only with this
    objective); ``image_only``: the model is the image tower with a projection head (no text:
    nothing that needs captions or the text tower runs with it); ``poisons_target_class``:
    poisoning triggers images of the target class (it needs class labels);
    ``same_classes_for_eval``: the evaluation set must have the training data's class names
    (kNN against the training split)."""

    name: str
    section: str | None = None
    image_only: bool = False
    poisons_target_class: bool = False
    same_classes_for_eval: bool = False

    def model_kwargs(self, section) -> dict[str, Any]:
        """Keywords of ``fedsim.models.create_model_and_transforms`` for this objective."""
        return {"projection_dim": section.projection_dim} if self.image_only else {"projection_dim": None}

    def client_training(self, section) -> Callable | None:
        """Every client's training mode where the objective imposes one (SimCLR's NT-Xent at
        ``[simclr] temperature``), else None: the clients' own modes decide."""
        return partial(simclr, temperature=section.temperature, batchnorm=section.batchnorm) if self.image_only else None

    def warm_state(self, fresh: dict, warm: dict) -> dict:
        """The initial state from the warm-start CLIP's: all of it, or for an image-only model
        the image tower's weights (``visual.*``) with the rest (the head) as initialised."""
        if not self.image_only:
            return warm
        return {**fresh, **{k: v for k, v in warm.items() if k.startswith("visual.")}}

    def evaluator(self, section, model, preprocess, tokenizer, test, *, classnames, templates, trigger,
                  target: int, extra_triggers, caption_trigger, bank: Callable[[], Any], log=None):
        """The evaluator of a global model: zero-shot (``fedsim.evaluation.Evaluator``), or for
        an image-only model kNN and linear probe against ``bank()`` (the labelled training
        split, built only here) at ``[simclr] knn_k`` and ``knn_temperature``. ``log``: where an
        evaluation longer than a few seconds reports its progress."""
        from fedsim.evaluation import Evaluator, SimCLREvaluator

        if self.image_only:
            return SimCLREvaluator(
                model, preprocess, bank(), test, num_classes=len(classnames), trigger=trigger,
                target=target, k=section.knn_k, temperature=section.knn_temperature,
                extra_triggers=extra_triggers,
            )
        return Evaluator(
            model, preprocess, tokenizer, test, classnames=classnames, templates=templates,
            trigger=trigger, target=target, extra_triggers=extra_triggers, caption_trigger=caption_trigger,
            log=log,
        )


OBJECTIVES: dict[str, Objective] = {
    "clip": Objective("clip"),
    "simclr": Objective("simclr", section="simclr", image_only=True, poisons_target_class=True, same_classes_for_eval=True),
}
