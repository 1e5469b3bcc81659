"""Each rendered galaxy's true decision-tree answers, from its class and generating parameters.

The rules are data (``survey_classes.yaml``, section ``answers``; format in the file's comment): the
class's own answers stand, open questions are answered from one parameter each (a multiple-choice
question from a list of them), answers imply their path (also when the path is still open), defaults close the questions the path still reaches. :func:`galaxy_answers` returns the answer
ids; :func:`answer_rows` the ``(N, A)`` rows written as ``<answer>_fraction`` datasets.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from galaxalign.answers import answer_ids, answer_vector, expand
from galaxalign.survey.classes import survey_taxonomy


def _rule_answer(rule: dict, params: Mapping[str, float]) -> str | None:
    """The answer one parameter rule gives (None: no bin holds the value and nothing is 'missing')."""
    value = float(params.get(rule["param"], math.nan))
    if math.isnan(value):
        return rule.get("missing")
    for lo, hi, a in rule.get("bins", []):
        if lo <= value < hi:
            return a
    return None


def galaxy_answers(class_id: int, params: Mapping[str, float], config: dict) -> tuple[str, ...]:
    """The answer ids of one rendered galaxy (its path through the tree), in tree order."""
    taxonomy = survey_taxonomy(config)
    tree = taxonomy.tree
    rules = config.get("answers") or {}
    chosen = set(expand(taxonomy.by_id(int(class_id)).answers, tree))
    question_of = {a.id: q.key for q in tree.questions for a in q.answers}
    answered = {question_of[a] for a in chosen}

    by_key = {q.key: q for q in tree.questions}

    def reached(q) -> bool:
        return not q.requires or any(r in chosen for r in q.requires)

    def open_path(q) -> bool:
        """Reached, or every question its requirements answer is still open and itself reachable: an
        answer here then implies its path (a ring answers "something odd: yes")."""
        if reached(q):
            return True
        return any(question_of[r] not in answered and open_path(by_key[question_of[r]]) for r in q.requires)

    for q in tree.questions:          # parameter rules, in tree order
        rule = rules.get(q.key)
        if rule is None or q.key in answered:
            continue
        subrules = rule if isinstance(rule, list) else [rule]
        found = [a for r in subrules if "param" in r and (a := _rule_answer(r, params)) is not None]
        if not found or not open_path(q):
            continue
        chosen.update(expand([f"{q.key}_{a}" for a in found], tree))
        answered = {question_of[a] for a in chosen}
    for q in tree.questions:          # defaults for questions still open on the path
        rule = rules.get(q.key) or {}
        if isinstance(rule, dict) and "default" in rule and q.key not in answered and reached(q):
            chosen.update(expand([f"{q.key}_{rule['default']}"], tree))
            answered = {question_of[a] for a in chosen}
    return expand(chosen, tree)


def answer_rows(labels: np.ndarray, params: Mapping[str, np.ndarray], config: dict) -> np.ndarray:
    """(N, A) float32 answer rows of rendered galaxies (columns ``galaxalign.answers.answer_ids``)."""
    tree = survey_taxonomy(config).tree
    out = np.full((len(labels), len(answer_ids(tree))), np.nan, dtype=np.float32)
    for i, label in enumerate(labels):
        out[i] = answer_vector(galaxy_answers(int(label), {k: v[i] for k, v in params.items()}, config), tree)
    return out
