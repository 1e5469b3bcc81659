"""Per-class generating distributions of the synthetic survey, read from ``survey_classes.yaml``.

The distributions are data so that a user can copy the file, widen the observing ranges for domain
randomisation, or add a class, without touching the renderer. The file's ``taxonomy`` names the
label scheme: class ids follow its order and its class keys index ``classes`` (``survey_class_keys``).
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

KINDS = ("smooth", "spiral", "edge_on", "merger", "disturbed")
DEFAULT_TAXONOMY = "galaxy10_decals"  # for survey-classes files written before they named one
# The one default size of the embedded survey (training config, ``default_survey``).
DEFAULT_SURVEY_NUM = 2000
DEFAULT_SURVEY_SIZE = 96
DISTRIBUTIONS = ("uniform", "normal", "lognormal", "cos_uniform", "choice", "poisson")


class SurveyConfigError(ValueError):
    """The survey-classes file is malformed; the message names the file and field."""


def _check_spec(spec: Any, where: str) -> None:
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return
    if not isinstance(spec, list) or not spec or spec[0] not in DISTRIBUTIONS:
        raise SurveyConfigError(f"{where}: expected a number or [{'|'.join(DISTRIBUTIONS)}, ...], got {spec!r}")
    kind, args = spec[0], spec[1:]
    need = {"uniform": 2, "normal": 4, "lognormal": 4, "cos_uniform": 2, "choice": 2, "poisson": 1}[kind]
    if len(args) != need:
        raise SurveyConfigError(f"{where}: {kind} takes {need} arguments, got {len(args)} in {spec!r}")
    if kind == "choice":
        values, probs = args
        if len(values) != len(probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise SurveyConfigError(f"{where}: choice needs as many probabilities as values, summing to 1: {spec!r}")
    elif kind in ("uniform", "cos_uniform") and args[0] > args[1]:
        raise SurveyConfigError(f"{where}: lower bound above upper bound in {spec!r}")
    elif kind in ("normal", "lognormal") and args[2] > args[3]:
        raise SurveyConfigError(f"{where}: lower bound above upper bound in {spec!r}")


def sample(spec: Any, rng: np.random.Generator) -> float:
    """Draw one value from a distribution spec (see the header of survey_classes.yaml)."""
    if not isinstance(spec, list):
        return float(spec)
    kind, args = spec[0], spec[1:]
    if kind == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if kind == "cos_uniform":
        # Randomly oriented disk: cos(i) is flat between the two inclinations.
        c0, c1 = math.cos(math.radians(args[1])), math.cos(math.radians(args[0]))
        return math.degrees(math.acos(rng.uniform(c0, c1)))
    if kind == "choice":
        values, probs = args
        return float(values[int(rng.choice(len(values), p=probs))])
    if kind == "poisson":
        return float(rng.poisson(args[0]))
    centre, width, lo, hi = args
    for _ in range(100):  # truncation by resampling keeps the shape; clipping would pile mass at the bounds
        x = rng.normal(centre, width) if kind == "normal" else centre * math.exp(rng.normal(0.0, width))
        if lo <= x <= hi:
            return float(x)
    return float(min(max(x, lo), hi))


def validate(config: dict, source: str) -> dict:
    if not isinstance(config, dict) or "observing" not in config or "classes" not in config:
        raise SurveyConfigError(f"{source}: expected a mapping with 'observing' and 'classes'")
    taxonomy = config.setdefault("taxonomy", DEFAULT_TAXONOMY)
    if not isinstance(taxonomy, str) or not taxonomy.strip():
        raise SurveyConfigError(f"{source}: 'taxonomy' must name a taxonomy (shipped name or YAML path), got {taxonomy!r}")
    for key, spec in config["observing"].items():
        _check_spec(spec, f"{source}: observing.{key}")
    for key, cls in config["classes"].items():
        if not isinstance(cls, dict) or cls.get("kind") not in KINDS:
            raise SurveyConfigError(f"{source}: class {key!r}: 'kind' must be one of {KINDS}, got {cls.get('kind') if isinstance(cls, dict) else cls!r}")
        if "size" not in cls:
            raise SurveyConfigError(f"{source}: class {key!r}: missing field 'size'")
        for field, spec in cls.items():
            if field != "kind":
                _check_spec(spec, f"{source}: classes.{key}.{field}")
    validate_answer_rules(config, source)
    return config


def validate_answer_rules(config: dict, source: str) -> None:
    """Check the ``answers`` section against the survey taxonomy's decision tree."""
    rules = config.get("answers")
    if rules is None:
        return
    if not isinstance(rules, dict):
        raise SurveyConfigError(f"{source}: 'answers' must map question keys to rules")
    tree = survey_taxonomy(config).tree
    questions = {q.key: q for q in tree.questions}
    for key, rule in rules.items():
        where = f"{source}: answers.{key}"
        if key not in questions:
            raise SurveyConfigError(f"{where}: not a question of the decision tree; known: {sorted(questions)}")
        if isinstance(rule, list):
            if not questions[key].multiple_choice:
                raise SurveyConfigError(f"{where}: a list of rules is for multiple-choice questions only "
                                        f"({key!r} takes one answer); give one rule")
            for i, sub in enumerate(rule):
                if isinstance(sub, dict) and "default" in sub:
                    raise SurveyConfigError(f"{where}[{i}]: rules of a list add answers from parameters; no 'default'")
                _check_rule(sub, questions[key], f"{where}[{i}]")
        else:
            _check_rule(rule, questions[key], where)


def _check_rule(rule, question, where: str) -> None:
    if not isinstance(rule, dict) or not set(rule) <= {"param", "bins", "missing", "default"}:
        raise SurveyConfigError(f"{where}: expected a mapping with param/bins/missing/default, got {rule!r}")
    keys = {a.key for a in question.answers}
    named = [str(b[2]) for b in rule.get("bins", []) if isinstance(b, list) and len(b) == 3]
    named += [str(rule[k]) for k in ("missing", "default") if k in rule]
    for answer in named:
        if answer not in keys:
            raise SurveyConfigError(f"{where}: {answer!r} is not an answer of {question.key!r}; answers: {sorted(keys)}")
    for b in rule.get("bins", []):
        if not (isinstance(b, list) and len(b) == 3 and all(isinstance(x, (int, float)) for x in b[:2]) and b[0] <= b[1]):
            raise SurveyConfigError(f"{where}: a bin is [lo, hi, answer] with lo <= hi, got {b!r}")
    if "bins" in rule and "param" not in rule:
        raise SurveyConfigError(f"{where}: bins need a 'param'")



@lru_cache(maxsize=4)
def _load_cached(path: str | None) -> dict:
    if path is None:
        text = resources.files("galaxalign.knowledge").joinpath("survey_classes.yaml").read_text()
        source = "survey_classes.yaml"
    else:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"survey classes file {p} does not exist")
        text, source = p.read_text(), str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SurveyConfigError(f"{source}: not valid YAML: {exc}") from None
    return validate(data, source)


def load_survey_config(path: str | Path | None = None, observing: dict | None = None) -> dict:
    """The generating distributions (a fresh copy); ``observing`` overrides single observing ranges."""
    config = copy.deepcopy(_load_cached(None if path is None else str(path)))
    if observing:
        unknown = sorted(set(observing) - set(config["observing"]))
        if unknown:
            raise SurveyConfigError(f"unknown observing parameter(s) {unknown}; known: {sorted(config['observing'])}")
        for key, spec in observing.items():
            _check_spec(spec, f"observing override {key}")
        config["observing"].update(observing)
    return config


@lru_cache(maxsize=8)
def _taxonomy_keys(name: str) -> tuple[str, ...]:
    from galaxalign.taxonomy import load_taxonomy

    return tuple(c.key for c in load_taxonomy(name).classes)


def survey_class_keys(config: dict) -> tuple[str, ...]:
    """The survey's class keys in class-id order: those of the taxonomy the classes file names."""
    return _taxonomy_keys(config.get("taxonomy", DEFAULT_TAXONOMY))


def survey_taxonomy(config: dict):
    """The survey's :class:`~galaxalign.taxonomy.Taxonomy` (names, keys, reference counts)."""
    from galaxalign.taxonomy import load_taxonomy

    return load_taxonomy(config.get("taxonomy", DEFAULT_TAXONOMY))
