"""``fedsim list``: every name a config may use, read from the registries themselves, with the
first sentence of its docstring that cites a paper (or of its module's). A new registry entry
shows up here without any change to this file."""

from __future__ import annotations

import inspect
import json
import re
import sys
import textwrap
import typing
from collections.abc import Callable

# A paragraph that cites a paper names its year.
_YEAR = re.compile(r"\b(19|20)\d\d\b")
_ABBREVIATION = re.compile(r"\b(al|e\.g|i\.e|cf|vs)\.$")
_WIDTH = 100
_NAME_WIDTH = 20


def _plain(text: str) -> str:
    """``text`` on one line, reST markup (``x``, :func:`x`) removed."""
    return re.sub(r":\w+:`([^`]*)`", r"\1", " ".join(text.split())).replace("``", "")


def _paragraphs(obj) -> list[str]:
    return [_plain(p) for p in (inspect.getdoc(obj) or "").split("\n\n") if p.strip()]


def _sentences(text: str) -> list[str]:
    """``text`` split after each full stop outside brackets and quotes (so that "et al., 2017",
    "e.g." or a quoted title does not end a sentence)."""
    out, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(ch, 0)
        quoted ^= ch == '"'
        end = i + 1 == len(text) or text[i + 1] == " "
        if ch == "." and end and depth == 0 and not quoted and not _ABBREVIATION.search(text[:i + 1]):
            out.append(text[start:i].strip())
            start = i + 1
    return [*out, text[start:].strip()] if text[start:].strip() else out


def summary(obj) -> str:
    """One line for a registry entry: the first paragraph that cites a paper, looking at its
    docstring's first paragraph, its module docstring's first, then its docstring's others
    (else its docstring's first); up to the sentence that names the paper, and a long
    "Name (paper): details" cut after the paper."""
    own = _paragraphs(obj) or [""]
    module = _paragraphs(sys.modules.get(getattr(obj, "__module__", ""))) or [""]
    text = next((p for p in (own[0], module[0], *own[1:]) if _YEAR.search(p)), own[0] or module[0])
    sentences = _sentences(text)
    cited = next((i for i, sentence in enumerate(sentences) if _YEAR.search(sentence)), 0)
    line = ". ".join(sentences[:cited + 1])
    if len(line) > _WIDTH:
        depth = 0
        for i, ch in enumerate(line):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == ":" and depth == 0 and _YEAR.search(line[:i]):
                return line[:i]
    return line.rstrip(":")


# What the strategy, the client or the adversary hook passes, not a config parameter.
_NOT_PARAMS = {"weights", "generator", "history", "previous", "root_update", "embed"}


def params_of(fn: Callable, keyword_only: bool = True, defaults: dict | None = None) -> str:
    """A registry entry's config parameters (``params = { ... }``) from its signature: each
    name with its default, or "(required)"; keyword-only ones for rules and attacks (the rest
    is what fedsim passes), all for triggers; ``defaults``: what the config layer fills in for
    a parameter the function requires (model replacement's γ = "auto")."""
    kinds = (inspect.Parameter.KEYWORD_ONLY,) if keyword_only else (
        inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    shown = []
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind not in kinds or name in _NOT_PARAMS:
            continue
        default = (defaults or {}).get(name, p.default)
        shown.append(f"{name} (required)" if default is inspect.Parameter.empty else f"{name} = {default!r}")
    return f" [params: {', '.join(shown)}]" if shown else " [no params]"


def _literal(model, field: str) -> tuple[str, ...]:
    """The names a config field's ``Literal`` allows."""
    return typing.get_args(model.model_fields[field].annotation)


def datasets() -> dict[str, dict[str, str]]:
    from fedsim.data import DATASETS, PARTITIONS, shapes

    return {
        "generated (data.name)": {"shapes": summary(shapes)},
        "real image–caption data (fedsim.data.DATASETS)": {k: summary(v) for k, v in DATASETS.items()},
        "data.partition (fedsim.data.PARTITIONS)": {k: summary(v.split) for k, v in PARTITIONS.items()},
    }


def models() -> dict[str, dict[str, str]]:
    from fedsim.models import MODEL_CONFIG_DIR, TINY_MODELS

    def tiny(name: str) -> str:
        v = json.loads((MODEL_CONFIG_DIR / f"{name}.json").read_text())["vision_cfg"]
        tower = (f"ResNet layers {tuple(v['layers'])}" if isinstance(v["layers"], list)
                 else f"ViT {v['layers']} layers, patch {v['patch_size']}")
        return f"tiny CLIP, image tower {tower}, width {v['width']}, {v['image_size']}×{v['image_size']} input"

    return {"model.name": {
        **{m: tiny(m) for m in TINY_MODELS},
        # (no count: it depends on the installed open_clip, and the docs' catalogue is generated)
        "<open_clip name>": "any other architecture of open_clip.list_models(), "
                            "randomly initialised or from model.pretrained (a local checkpoint file): "
                            "no weights are downloaded",
    }}


def rules() -> dict[str, dict[str, str]]:
    from strategies import RULES

    return {"strategy.name": {k: summary(v) + params_of(v) for k, v in RULES.items()}}


def triggers() -> dict[str, dict[str, str]]:
    from clients.attacks import LEARNED_TRIGGERS, TRIGGERS

    return {"attack.data.trigger.name": {
        **{k: summary(v) + params_of(v, keyword_only=False) for k, v in TRIGGERS.items()},
        # learned before the run (LEARNED_TRIGGERS): its parameters are the entry's defaults
        **{k: summary(v.reference) + f" [params: {', '.join(f'{p} = {d!r}' for p, d in v.defaults.items())}]"
           for k, v in LEARNED_TRIGGERS.items()},
    }}


def attacks() -> dict[str, dict[str, str]]:
    from clients.attacks import (
        BYZANTINE,
        SCHEDULES,
        badencoder_finetune,
        UPDATE_ATTACKS,
        make_schedule,
        poison,
    )
    from fedsim.config import DataAttackConfig, UpdateAttackConfig

    # Data-attack modes are named by a config Literal, not a registry: the function each name
    # runs carries its paper; update attacks are UPDATE_ATTACKS entries.
    modes = {"poison": poison, "badencoder": badencoder_finetune}
    kinds = dict(re.findall(r'^- "(\w+)": (.*)$', inspect.getdoc(make_schedule), re.MULTILINE))
    pgd = UpdateAttackConfig.model_fields["pgd_eps"].description
    return {
        "attack.data.mode": {m: summary(modes[m]) for m in _literal(DataAttackConfig, "mode")},
        "attack.update.name": {
            # UPDATE_ATTACKS; a default the attacker works out (γ = "auto") is the entry's
            **{u: summary(v.reference) + params_of(v.reference, defaults=v.defaults or None)
               for u, v in UPDATE_ATTACKS.items()},
            "pgd_eps": pgd,
        },
        "attack.byzantine.name": {k: summary(v) + params_of(v) for k, v in BYZANTINE.items()},
        "attack.schedule.kind": {k: _plain(kinds.get(k, "")).rstrip(";.") for k in SCHEDULES},
    }


def defenses() -> dict[str, dict[str, str]]:
    from fedsim.objectives import TRAINING, cleanclip_finetune

    # Defenses outside the aggregation rule: the honest clients' training modes and the
    # server-side steps after aggregation (``[defense]`` sections).
    return {
        "clients.training": {k: summary(v) for k, v in TRAINING.items()},
        "defense": {"cleanclip": summary(cleanclip_finetune)},
    }


FAMILIES: dict[str, Callable[[], dict[str, dict[str, str]]]] = {
    "datasets": datasets,
    "models": models,
    "rules": rules,
    "defenses": defenses,
    "triggers": triggers,
    "attacks": attacks,
}


def catalog(what: str = "all") -> str:
    """The listing of one family of ``FAMILIES`` (or of all): per config key, one entry per
    name, wrapped to fit a terminal."""
    families = list(FAMILIES) if what == "all" else [what]
    out = []
    for family in families:
        for key, entries in FAMILIES[family]().items():
            out.append(f"{family}: {key}")
            for name, text in entries.items():
                lead = f"  {name:<{_NAME_WIDTH}} "
                out.append(textwrap.fill(text or "-", _WIDTH, initial_indent=lead,
                                         subsequent_indent=" " * len(lead)))
            out.append("")
    return "\n".join(out)
