"""The training methods, as registered objects (open_clip's task objects, timm's registry).

A method says everything that differs between ``galaxalign``, ``image_text``, ``image_only`` and
``zero_shot``: which stages it runs (:meth:`Method.stages`), what it optimises
(:meth:`Method.objective`, the objectives of ``objectives.py``), the validation metric that picks
its best epoch (``selection_metric``), whether the model carries a classifier head, whether it
aligns images with label texts (warm start, per-galaxy rows). Code outside this module asks the
method object; it never compares method names.

Adding a method is one class here with ``@register_method``. This module imports no torch, so the
config validator can list the registered names cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

_REGISTRY: dict[str, "Method"] = {}


@dataclass(frozen=True)
class StagePlan:
    number: int  # 1 or 2: which config section (stage1 / stage2) it reads
    epochs: int
    lr: float
    warmup_fraction: float
    shared_symbol_encoder: bool


def _plan(cfg: dict, n: int, shared: bool) -> StagePlan:
    s = cfg[f"stage{n}"]
    return StagePlan(n, s["epochs"], float(s["lr"]), float(s["warmup_fraction"]), shared)


class Method:
    """A training method. Subclasses set the class attributes and override what differs."""

    name: str = ""
    selection_metric: str = "val_acc_text"  # validation metric of its primary classifier
    classifier_head: bool = False  # the model carries a linear head over the image tower
    aligns_text: bool = False  # contrastive image-text alignment: text warm start, per-galaxy rows
    per_galaxy_auto: bool = False  # ``answers.per_galaxy: auto`` turns per-galaxy alignment on
    trains: bool = True  # False: nothing to optimise (the stock model is evaluated)

    def stages(self, cfg: dict) -> list[StagePlan]:
        # OUR CHOICE: a baseline runs one stage with the stage-1 settings (epochs, lr, warm-up).
        return [_plan(cfg, 1, True)]

    def objective(self, cfg: dict, model, taxonomy, env, rows=None):
        raise NotImplementedError

    def per_galaxy(self, mode, has_answers: Callable[[], bool]) -> bool:
        """Whether the run aligns each galaxy with its own decision-tree path (``answers.per_galaxy``
        ``mode``: true, false or "auto"; ``has_answers``: does the training catalog carry answers)."""
        if not self.aligns_text or mode is False:
            return False
        if mode == "auto":
            return self.per_galaxy_auto and has_answers()
        return True


def register_method(cls: type[Method]) -> type[Method]:
    _REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {list(_REGISTRY)}") from None


def list_methods() -> tuple[str, ...]:
    return tuple(_REGISTRY)


@register_method
class GalaxAlign(Method):
    """Tri-modal contrastive alignment of images, symbols and texts; stage 1 with a shared visual
    encoder, stage 2 with a separate symbol encoder."""

    name = "galaxalign"
    selection_metric = "val_acc_both"
    aligns_text = True
    per_galaxy_auto = True

    def stages(self, cfg: dict) -> list[StagePlan]:
        return [_plan(cfg, n, True if n == 1 else bool(cfg["stage2"]["shared_symbol_encoder"])) for n in cfg["stages"]]

    def objective(self, cfg, model, taxonomy, env, rows=None):
        from galaxalign.training.objectives import ContrastiveObjective

        return ContrastiveObjective(cfg, model, taxonomy, env, rows=rows, symbols=True)


@register_method
class ImageText(Method):
    """The paper's main baseline: image-text contrastive fine-tuning, no symbols."""

    name = "image_text"
    aligns_text = True

    def objective(self, cfg, model, taxonomy, env, rows=None):
        from galaxalign.training.objectives import ContrastiveObjective

        return ContrastiveObjective(cfg, model, taxonomy, env, rows=rows, symbols=False)


@register_method
class ImageOnly(Method):
    """Supervised baseline: cross-entropy of a linear head over the image tower."""

    name = "image_only"
    selection_metric = "val_acc_classifier"
    classifier_head = True

    def objective(self, cfg, model, taxonomy, env, rows=None):
        from galaxalign.training.objectives import ClassifierObjective

        return ClassifierObjective(cfg, model, taxonomy, env)


@register_method
class ZeroShot(Method):
    """The stock towers, untrained: validated (text and symbol prototypes) and exported."""

    name = "zero_shot"
    trains = False

    def stages(self, cfg: dict) -> list[StagePlan]:
        return []

    def objective(self, cfg, model, taxonomy, env, rows=None):
        from galaxalign.training.objectives import ZeroShotObjective

        return ZeroShotObjective(cfg, model, taxonomy, env)


def build_objective(cfg: dict, model, taxonomy, env, rows=None):
    """The method's objective; ``rows`` (``class_bank.BankRows``): per-galaxy rows for the contrastive
    methods (the labels the trainer then feeds are row ids)."""
    return get_method(cfg["method"]).objective(cfg, model, taxonomy, env, rows=rows)
