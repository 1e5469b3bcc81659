"""Feature search on real exemplars: does a query for one answer rank that answer's exemplars first?

An exemplar folder (the layout of ``../shared/data/gz2-exemplars`` and ``gama-exemplars``) holds
real galaxy images and a ``manifest.csv`` with columns ``file``, ``question``, ``answer`` and
``icon``: each image is an exemplar of ONE decision-tree answer, named by the question's and the
answer's wording (and Galaxy Zoo's icon name). :func:`map_answer` finds the tree's answer id from that
wording (``Answer.text`` / ``Answer.icon`` of the decision tree); rows it cannot place are reported,
not guessed.

For every answer with exemplars, a symbol query and a text query for that answer (the same queries
as ``feature_search``, of one answer) score every exemplar; the ROC-AUC says how often an exemplar
of the answer outranks one that does not have it. Reported per answer and as the mean over answers
with a bootstrap interval over answers, for every method (the image-only baseline ranks by its
head's probability of the answer's nearest class).
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from galaxalign.answers import expand
from galaxalign.evaluation.bootstrap import N_RESAMPLES, bootstrap_mean_ci
from galaxalign.evaluation.feature_search import MODALITIES, nearest_class, query_embeddings, scoring_of

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("file", "question", "answer")
# OUR CHOICE: a manifest question names the tree question its wording is closest to (difflib ratio,
# case and centre/center folded) when the ratio is at least 0.5; the measured gz2/gama manifests match
# at 0.53-1.0 and the runner-up at <= 0.6 of a different question.
QUESTION_MATCH = 0.5


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("center", "centre").split())


def _prefix(a: str, b: str, sep: str) -> bool:
    ta, tb = [t for t in a.split(sep) if t], [t for t in b.split(sep) if t]
    n = min(len(ta), len(tb))
    return n > 0 and ta[:n] == tb[:n]


def map_answer(question: str, answer: str, icon: str = "", tree=None) -> str | None:
    """The tree's answer id a manifest row names, or None when it names none.

    The question is the tree question whose text is closest to ``question`` (``QUESTION_MATCH``);
    within it, the answer whose text equals ``answer`` (case-folded), else whose icon equals
    ``icon``, else whose text or icon starts with the given one word by word ("Features" ->
    "Features or disk"). Without a matching question, an answer text that only one tree answer has."""
    from galaxalign.taxonomy import decision_tree

    tree = tree or decision_tree()
    text, icon = _norm(answer), str(icon or "").strip().lower()
    ratio = {q.key: difflib.SequenceMatcher(None, _norm(question), _norm(q.text)).ratio() for q in tree.questions}
    best = max(tree.questions, key=lambda q: ratio[q.key])
    if ratio[best.key] >= QUESTION_MATCH:
        tests = (lambda a: _norm(a.text) == text,
                 lambda a: bool(icon) and a.icon.lower() == icon,
                 lambda a: _prefix(_norm(a.text), text, " ") or (bool(icon) and _prefix(a.icon.lower(), icon, "_")))
        for test in tests:
            found = [a for a in best.answers if test(a)]
            if len(found) == 1:
                return found[0].id
        return None
    found = [a.id for a in tree.answers.values() if _norm(a.text) == text]
    return found[0] if len(found) == 1 else None


def load_exemplars(folder: str | Path, tree=None) -> tuple[pd.DataFrame, list[dict]]:
    """``(catalog, unmapped)``: the exemplars whose answer the tree has (columns ``id``, ``label`` -1,
    ``source``, ``file_loc``, ``answer``: the tree's answer id, ``question``, ``answer_text``) and the
    manifest rows naming no tree answer (``row``, ``question``, ``answer``). Errors name the file and row."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"exemplars {folder}: no {MANIFEST} (columns {', '.join(MANIFEST_COLUMNS)}, icon)")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{manifest}: needs column(s) {missing} (found {list(table.columns)})")
    rows, unmapped = [], []
    for i, r in table.iterrows():
        path = folder / r["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{manifest}, row {i + 2}: image {r['file']!r} not found in {folder}")
        a = map_answer(r["question"], r["answer"], r.get("icon", ""), tree)
        if a is None:
            unmapped.append({"row": int(i) + 2, "question": r["question"], "answer": r["answer"]})
            continue
        rows.append({"id": Path(r["file"]).stem, "label": -1, "source": str(path), "file_loc": str(path),
                     "answer": a, "question": r["question"], "answer_text": r["answer"]})
    cols = ["id", "label", "source", "file_loc", "answer", "question", "answer_text"]
    return pd.DataFrame(rows, columns=cols), unmapped


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half; NaN without both kinds."""
    p = np.asarray(positive, dtype=np.float64).ravel()
    n = np.asarray(negative, dtype=np.float64).ravel()
    if p.size == 0 or n.size == 0:
        return math.nan
    d = p[:, None] - n[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def contradicts(answer: str, other: str, tree) -> bool:
    """Does an exemplar of ``other`` certainly lack ``answer``: do their paths give two different
    answers to one (single-choice) question?"""
    question_of = {a.id: q for q in tree.questions for a in q.answers}
    mine = {question_of[a].key: a for a in expand([answer], tree) if not question_of[a].multiple_choice}
    return any(mine.get(question_of[b].key, b) != b for b in expand([other], tree) if not question_of[b].multiple_choice)


def exemplar_scores(model, taxonomy, images: Sequence[np.ndarray], answers: Sequence[str], *, method: str | None = None,
                    ranking: str = "path_posterior") -> dict[str, np.ndarray]:
    """``{"symbol": (A, N), "text": (A, N)}``: every exemplar's score for a one-answer query per answer,
    ranked as feature search ranks (``feature_search.scoring_of``)."""
    from galaxalign.inference import encode_images

    how = scoring_of(model, method, ranking)
    queries = [(a,) for a in answers]
    if how == "class_prototype":
        probs = encode_images(model, list(images), "image", output="head")
        s = np.stack([probs[:, nearest_class(q, taxonomy)] for q in queries])
        return {m: s for m in MODALITIES}
    emb = encode_images(model, list(images), "image")
    if how == "path_posterior":
        from galaxalign.search.features import path_bank

        bank = path_bank(model, taxonomy)  # built once per loaded model (kept on it)
        return {m: bank.scores(emb, queries, m) for m in MODALITIES}
    return {m: query_embeddings(model, taxonomy, queries, m) @ emb.T for m in MODALITIES}


def exemplar_search(model, taxonomy, exemplars: str | Path | tuple[pd.DataFrame, list], *, method: str | None = None,
                    images: Sequence[np.ndarray] | None = None, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """ROC-AUC of one-answer symbol and text queries on a folder of real exemplars (see the module).

    ``auc``: positives = the answer's exemplars, negatives = exemplars of answers that contradict it
    (they certainly lack it); ``auc_all``: negatives = every other exemplar. Returns ``n``,
    ``answers`` (per answer: ``n_pos``, ``n_neg``, and per modality ``auc`` / ``auc_all``), per modality
    the mean ``auc`` with ``ci`` and ``auc_all`` over answers, ``unmapped`` and ``scoring``.
    ``images``: the exemplars' decoded images, when the caller has read them already."""
    # OUR CHOICE: the headline negatives are exemplars that certainly lack the answer (a different
    # answer to a question on its path); an exemplar of an unrelated question (a "2 arms" exemplar for
    # a "bar" query) may or may not have it and is only counted in ``auc_all``. Real images are embedded
    # as they are (no refit of the feature normaliser as sim-to-real does): every method sees the same.
    tree = taxonomy.tree
    catalog, unmapped = exemplars if isinstance(exemplars, tuple) else load_exemplars(exemplars, tree)
    if catalog.empty:
        raise ValueError(f"exemplars {exemplars}: no row names an answer of the decision tree")
    if images is None:
        images = read_exemplar_images(catalog)
    have = catalog["answer"].tolist()
    answers = sorted(set(have), key=list(tree.answers).index)
    scores = exemplar_scores(model, taxonomy, images, answers, method=method)
    have_arr = np.array(have, dtype=object)
    per_answer: dict = {}
    for ai, a in enumerate(answers):
        pos = have_arr == a
        neg = np.array([contradicts(a, b, tree) for b in have])
        entry = {"n_pos": int(pos.sum()), "n_neg": int(neg.sum())}
        for m in MODALITIES:
            s = scores[m][ai]
            entry[m] = {"auc": roc_auc(s[pos], s[neg]), "auc_all": roc_auc(s[pos], s[~pos])}
        per_answer[a] = entry
    out: dict = {"n": int(len(catalog)), "n_answers": len(answers), "scoring": scoring_of(model, method),
                 "answers": per_answer, "unmapped": unmapped}
    for m in MODALITIES:
        v = np.array([e[m]["auc"] for e in per_answer.values()], dtype=np.float64)
        v_all = np.array([e[m]["auc_all"] for e in per_answer.values()], dtype=np.float64)
        v, v_all = v[np.isfinite(v)], v_all[np.isfinite(v_all)]
        out[m] = {"auc": float(v.mean()) if v.size else None,
                  "ci": list(bootstrap_mean_ci(v, n_resamples=n_resamples, seed=seed)) if v.size else None,
                  "n_answers": int(v.size),
                  "auc_all": float(v_all.mean()) if v_all.size else None}
    return out


def read_exemplar_images(catalog: pd.DataFrame) -> list[np.ndarray]:
    """The exemplars' images as uint8 RGB arrays (the catalog's one image reader)."""
    from galaxalign.datasets import ImageReader

    reader = ImageReader()
    try:
        return [reader(row) for row in catalog.to_dict("records")]
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()
