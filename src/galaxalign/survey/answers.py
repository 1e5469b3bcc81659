"""Each rendered galaxy's true decision-tree answers, from its class and generating parameters.

The rules are data (``survey_classes.yaml``, section ``answers``; format in the file's comment): the
class's own answers stand, open questions are answered from one parameter each, answers imply their
path, defaults close the questions the path still reaches. :func:`galaxy_answers` returns the answer
ids; :func:`answer_rows` the ``(N, A)`` rows written as ``<answer>_fraction`` datasets.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from galaxalign.answers import answer_ids, answer_vector, expand
from galaxalign.survey.classes import survey_taxonomy


def galaxy_answers(class_id: int, params: Mapping[str, float], config: dict) -> tuple[str, ...]:
    """The answer ids of one rendered galaxy (its path through the tree), in tree order."""
    taxonomy = survey_taxonomy(config)
    tree = taxonomy.tree
    rules = config.get("answers") or {}
    chosen = set(expand(taxonomy.by_id(int(class_id)).answers, tree))
    question_of = {a.id: q.key for q in tree.questions for a in q.answers}
    answered = {question_of[a] for a in chosen}

    def reached(q) -> bool:
        return not q.requires or any(r in chosen for r in q.requires)

    for q in tree.questions:          # parameter rules, in tree order
        rule = rules.get(q.key)
        if rule is None or q.key in answered or "param" not in rule or not reached(q):
            continue
        value = float(params.get(rule["param"], math.nan))
        answer = None
        if math.isnan(value):
            answer = rule.get("missing")
        else:
            for lo, hi, a in rule.get("bins", []):
                if lo <= value < hi:
                    answer = a
                    break
        if answer is not None:
            chosen.update(expand([f"{q.key}_{answer}"], tree))
            answered = {question_of[a] for a in chosen}
    for q in tree.questions:          # defaults for questions still open on the path
        rule = rules.get(q.key) or {}
        if "default" in rule and q.key not in answered and reached(q):
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
