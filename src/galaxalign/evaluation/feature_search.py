"""Search by features: feature queries (decision-tree answer sets) scored by nDCG@k with graded relevance.

A *feature query* is a set of decision-tree answers a user composes ("featured, not edge-on, bar,
spiral, tight, 2 arms"). It is asked two ways: as a **symbol** (the pictogram the CLI's ``--symbol``
and the web page's composer draw, ``search.query.render_query_symbol``, through the symbol encoder)
and as **text** (``answers.caption`` in the volunteers' wording, wrapped in the taxonomy's first
prompt template, through the text encoder). The pool galaxies are ranked by the expected fraction of the query's answers they have under the model's posterior over the
decision-tree paths it was aligned with (``search.features``, the search's own ranking; the cosine
to the one composed query vector is reported beside it as ``composed``); a model without aligned
label encoders (the image-only baseline) ranks them by its head's probability of the class whose
answers best match the query (:func:`nearest_class`, the "nearest class prototype" baseline).

The score is nDCG@k with graded relevance = the fraction of the query's answers a galaxy's true
path has (``answers.relevance``, the way AION-Search grades text search), the ideal DCG from the
pool's true relevances. Intervals are bootstrap intervals over queries; two models are compared with
a paired bootstrap over the same queries (``bootstrap.paired_bootstrap_diff``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from galaxalign.answers import answer_ids, answer_matrix, expand, hard_answers
from galaxalign.evaluation.bootstrap import N_RESAMPLES, bootstrap_mean_ci, paired_bootstrap_diff

K = 10
N_QUERIES = 50
# OUR CHOICE: 3-7 answers per query (the example has 7), each query the closure under
# ``requires`` of a random subset of ONE pool galaxy's true path, drawn uniformly over the pool's
# distinct paths with a fixed seed. So every query is a valid, contradiction-free path fragment that
# at least one pool galaxy has fully (ideal DCG > 0), many others partly, and the set covers rare
# paths as often as common ones. Answers the captions leave unsaid (empty ``phrase``, e.g. "nothing
# odd") are never asked: a text query could not express them. Queries the symbol book cannot draw are
# skipped.
QUERY_SIZES = (3, 7)
QUERY_SEED = 0
MODALITIES = ("symbol", "text")


# ------------------------------------------------------------------------------------------ nDCG
def dcg(gains: Sequence[float], k: int = K) -> float:
    """Discounted cumulative gain of a ranked list of gains: sum_i gain_i / log2(i + 1), i = 1..k."""
    # OUR CHOICE: linear gains (the relevance itself), not 2^rel - 1: the relevance is already a graded
    # fraction of answers, and linear gains keep "half the features" worth half a hit.
    g = np.asarray(gains, dtype=np.float64)[:k]
    return float((g / np.log2(np.arange(2, g.size + 2))).sum())


def ndcg_at_k(scores: np.ndarray, relevance: np.ndarray, k: int = K) -> float:
    """nDCG@k of one query: the pool ranked by ``scores`` (descending; ties by pool order), gains
    ``relevance``; the ideal DCG sorts the pool's relevances. NaN when no pool item is relevant."""
    scores = np.asarray(scores, dtype=np.float64)
    relevance = np.asarray(relevance, dtype=np.float64)
    if scores.shape != relevance.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and relevance {relevance.shape} must be two (N,) arrays")
    ideal = dcg(np.sort(relevance)[::-1], k)
    if ideal <= 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")[:k]
    return dcg(relevance[order], k) / ideal


def chance_ndcg(relevance: np.ndarray, k: int = K) -> float:
    """Expected nDCG@k of a uniformly random ranking of the pool (NaN when nothing is relevant)."""
    relevance = np.asarray(relevance, dtype=np.float64)
    ideal = dcg(np.sort(relevance)[::-1], k)
    if ideal <= 0:
        return math.nan
    return dcg(np.full(min(k, relevance.size), relevance.mean()), k) / ideal


# ------------------------------------------------------------------------------------- relevance
def galaxy_paths(catalog, taxonomy) -> list[tuple[str, ...]]:
    """Each catalog galaxy's true path through the tree (``answers.hard_answers`` of its answer row)."""
    rows = answer_matrix(catalog, taxonomy)
    return [hard_answers(r, taxonomy.tree) for r in rows]


def relevance_matrix(queries: Sequence[Sequence[str]], paths: Sequence[Sequence[str]], tree) -> np.ndarray:
    """(Q, N) ``answers.relevance(query, path)`` for every query and pool galaxy, vectorised."""
    from galaxalign.answers import path_matrix, relevance_rows

    return relevance_rows(queries, path_matrix(paths, tree), tree)


# --------------------------------------------------------------------------------------- queries
def _sayable(tree) -> set[str]:
    return {a.id for a in tree.answers.values() if a.phrase is None or a.phrase != ""}


def drawable(query: Sequence[str], taxonomy) -> bool:
    """Can the taxonomy's symbol book compose this answer set (no contradiction, every answer drawn)?"""
    from galaxalign.symbols import SymbolError, book_of, compose_symbol

    try:
        compose_symbol(query, book_of(taxonomy), taxonomy.tree)
    except SymbolError:
        return False
    return True


def sample_feature_queries(paths: Sequence[Sequence[str]], taxonomy, n: int = N_QUERIES, seed: int = QUERY_SEED,
                           sizes: tuple[int, int] = QUERY_SIZES) -> list[tuple[str, ...]]:
    """``n`` distinct feature queries drawn from the pool's ``paths`` (see ``QUERY_SIZES``), seeded.

    Each is a tuple of answer ids in tree order, closed under ``requires``, of ``sizes[0]``..``sizes[1]``
    answers, drawable as a symbol. Fewer than ``n`` come back when the pool's paths do not hold ``n``
    distinct ones; none at all raises ``ValueError``."""
    lo, hi = int(sizes[0]), int(sizes[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"query sizes must satisfy 1 <= min <= max, got {sizes}")
    tree = taxonomy.tree
    sayable = _sayable(tree)
    order = {a: i for i, a in enumerate(answer_ids(tree))}
    pool = sorted({tuple(a for a in expand(p, tree) if a in sayable) for p in paths})
    pool = [p for p in pool if len(p) >= lo]
    if not pool:
        raise ValueError(f"no pool galaxy has a path of {lo} or more answers to draw feature queries from")
    rng = np.random.default_rng(seed)
    out: list[tuple[str, ...]] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(100 * n):
        if len(out) >= n:
            break
        path = pool[int(rng.integers(len(pool)))]
        size = int(rng.integers(lo, min(hi, len(path)) + 1))
        chosen: set[str] = set()
        for a in rng.permutation(np.array(path, dtype=object)):
            grown = chosen | {b for b in expand([a], tree) if b in sayable}
            if len(grown) <= size:
                chosen = grown
            if len(chosen) == size:
                break
        q = tuple(sorted(chosen, key=order.__getitem__))
        if len(q) < lo or q in seen:
            continue
        seen.add(q)
        if drawable(q, taxonomy):
            out.append(q)
    if not out:
        raise ValueError("no drawable feature query could be drawn from the pool's paths")
    return out


def query_text(query: Sequence[str], taxonomy) -> str:
    """The text query: the caption of the answers, in the taxonomy's first prompt template."""
    from galaxalign.answers import caption
    from galaxalign.captions import query_prompt

    return query_prompt(caption(query, taxonomy.tree), taxonomy)


def nearest_class(query: Sequence[str], taxonomy) -> int:
    """The class whose answers best match a feature query: the most query answers on the class's
    path (``answers.relevance``), ties broken by Jaccard similarity of the two answer sets, then by id."""
    from galaxalign.answers import relevance

    # OUR CHOICE: the image-only baseline has no label encoder, so a feature query is mapped to one
    # class by its answers (an oracle mapping, in its favour) and galaxies ranked by the head's
    # probability of that class: "a member of the nearest class", all class-level search can do.
    tree = taxonomy.tree
    q = set(expand(query, tree))
    best, best_key = 0, (-1.0, -1.0)
    for c in taxonomy.classes:
        if not c.answers:
            continue
        have = set(expand(c.answers, tree))
        key = (relevance(query, c.answers, tree), len(q & have) / max(1, len(q | have)))
        if key > best_key:
            best, best_key = c.id, key
    return int(best)


# -------------------------------------------------------------------------------------- scoring
def cached_catalog_output(model, catalog, cache: dict | None, output: str = "embedding", batch_size: int = 64,
                          progress: bool = False) -> np.ndarray:
    """``inference.encode_images`` of a catalog's images, memoised in ``cache`` under the key the
    evaluation protocol uses, so a grid run embeds its test galaxies once for every metric."""
    from galaxalign.evaluation.embeddings import cached_embeddings, head_scores_catalog

    if output == "embedding":
        return cached_embeddings(model, catalog, cache, batch_size=batch_size, progress=progress)
    key = ("head", tuple(catalog["id"].astype(str)))
    if cache is None or key not in cache:
        value = head_scores_catalog(model, catalog, batch_size, progress)
        if cache is None:
            return value
        cache[key] = value
    return cache[key]


SCORINGS = ("path_posterior", "composed")


def scoring_of(model, method: str | None, ranking: str = "path_posterior") -> str:
    """``class_prototype`` for the image-only baseline (its head); for aligned models ``ranking``:
    ``path_posterior`` (the search's ranking, ``search.features``: expected relevance under the
    model's posterior over its decision-tree paths) or ``composed`` (cosine to the one composed query
    vector)."""
    if method == "image_only" or (method is None and getattr(model, "classifier", None) is not None):
        if getattr(model, "classifier", None) is None:
            raise ValueError("the image-only baseline ranks by its head, but this model has none")
        return "class_prototype"
    if ranking not in SCORINGS:
        raise ValueError(f"ranking must be one of {SCORINGS}, got {ranking!r}")
    return ranking


def query_embeddings(model, taxonomy, queries: Sequence[Sequence[str]], modality: str) -> np.ndarray:
    """(Q, D) L2-normalised query embeddings: composed symbols (symbol encoder) or captions (text encoder)."""
    from galaxalign.inference import encode_images, encode_texts

    if modality == "symbol":
        from galaxalign.search.query import render_query_symbol

        images = np.stack([render_query_symbol(q, size=int(model.image_size), taxonomy=taxonomy) for q in queries])
        return encode_images(model, images, "symbol")
    if modality == "text":
        return encode_texts(model, [query_text(q, taxonomy) for q in queries]).numpy()
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")


def query_scores(model, taxonomy, queries, pool, *, method: str | None = None, cache: dict | None = None,
                 batch_size: int = 64, progress: bool = False, ranking: str = "path_posterior") -> dict[str, np.ndarray]:
    """``{"symbol": (Q, N), "text": (Q, N)}`` scores of every pool galaxy for every query (see
    :func:`scoring_of` for ``ranking``)."""
    how = scoring_of(model, method, ranking)
    if how == "class_prototype":
        probs = cached_catalog_output(model, pool, cache, "head", batch_size, progress)
        s = np.stack([probs[:, nearest_class(q, taxonomy)] for q in queries])
        return {m: s for m in MODALITIES}  # the class is chosen from the answers, whatever the modality
    emb = cached_catalog_output(model, pool, cache, "embedding", batch_size, progress)
    if how == "path_posterior":
        from galaxalign.search.features import path_bank

        bank = path_bank(model, taxonomy)  # built once per loaded model (kept on it)
        return {m: bank.scores(emb, queries, m) for m in MODALITIES}
    return {m: query_embeddings(model, taxonomy, queries, m) @ emb.T for m in MODALITIES}


def query_key(query: Sequence[str]) -> str:
    return ",".join(query)


def score_queries(scores: dict[str, np.ndarray], relevance: np.ndarray, queries, k: int = K,
                  n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """nDCG@k per query and modality, their means with bootstrap intervals over queries (JSON-safe)."""
    out: dict = {"k": int(k), "n_queries": len(queries), "n_pool": int(relevance.shape[1]),
                 "per_query": {"query": [query_key(q) for q in queries]}}
    # A random ranking's expected nDCG (mean pool relevance in every slot): the floor to read them against.
    chance = [chance_ndcg(r, k) for r in relevance]
    ok = np.array([c for c in chance if np.isfinite(c)])
    out["chance"] = float(ok.mean()) if ok.size else None
    for m, s in scores.items():
        v = np.array([ndcg_at_k(s[i], relevance[i], k) for i in range(len(queries))])
        ok = v[np.isfinite(v)]
        out[m] = {"ndcg": float(ok.mean()) if ok.size else None,
                  "ci": list(bootstrap_mean_ci(ok, n_resamples=n_resamples, seed=seed)) if ok.size else None}
        out["per_query"][m] = v.tolist()
    return out


def feature_search_model(model, taxonomy, pool, queries: Sequence[Sequence[str]] | None = None, *,
                         method: str | None = None, k: int = K, n_queries: int = N_QUERIES, seed: int = QUERY_SEED,
                         n_resamples: int = N_RESAMPLES, cache: dict | None = None, batch_size: int = 64,
                         progress: bool = False) -> dict:
    """The feature-search benchmark of one loaded model on a pool catalog with per-galaxy answers.

    ``queries``: answer-id tuples (default: :func:`sample_feature_queries` of the pool's paths with
    ``n_queries`` and ``seed``). Returns ``k``, ``n_queries``, ``n_pool``, ``scoring``, ``symbol`` and
    ``text`` (``ndcg``, ``ci``), ``per_query`` (``query``, ``symbol``, ``text``: nDCG per query, NaN
    when no pool galaxy has any of its answers) and ``queries``."""
    from galaxalign.answers import has_galaxy_answers

    pool = pool.reset_index(drop=True)
    if not has_galaxy_answers(pool, taxonomy):
        raise ValueError("the pool catalog carries no per-galaxy answers (vote-fraction columns or an "
                         "'answers' column): feature search has no ground truth")
    paths = galaxy_paths(pool, taxonomy)
    queries = [tuple(q) for q in (queries if queries is not None else
                                  sample_feature_queries(paths, taxonomy, n_queries, seed))]
    rel = relevance_matrix(queries, paths, taxonomy.tree)
    scores = query_scores(model, taxonomy, queries, pool, method=method, cache=cache, batch_size=batch_size,
                          progress=progress)
    out = score_queries(scores, rel, queries, k, n_resamples, seed)
    out["scoring"] = scoring_of(model, method)
    out["per_galaxy_paths"] = len(model.answer_paths) if getattr(model, "answer_paths", None) else 0
    if out["scoring"] == "path_posterior":  # the composed query vector's plain cosine ranking, for reference
        composed = score_queries(query_scores(model, taxonomy, queries, pool, method=method, cache=cache,
                                              batch_size=batch_size, ranking="composed"), rel, queries, k, n_resamples, seed)
        out["composed"] = {m: composed[m] for m in MODALITIES}
    out["queries"] = [list(q) for q in queries]
    return out


def feature_search(checkpoint_or_model, catalog, queries: Sequence[Sequence[str]] | None = None, *, k: int = K,
                   taxonomy=None, method: str | None = None, n_queries: int = N_QUERIES, seed: int = QUERY_SEED,
                   n_resamples: int = N_RESAMPLES, progress: bool = False) -> dict:
    """Feature-search nDCG@k (symbol and text queries) of a model on a catalog with per-galaxy answers.

    ``checkpoint_or_model``: a checkpoint / export path, or a loaded model (then ``taxonomy`` is
    required). ``catalog``: a DataFrame or any source ``datasets.load_catalog`` reads (e.g. the test
    split of a rendered survey). ``method``: the training method (read from the checkpoint when
    given as a path; ``image_only`` ranks by the head). See :func:`feature_search_model`."""
    from galaxalign.datasets import load_catalog
    from galaxalign.taxonomy import load_taxonomy

    if isinstance(checkpoint_or_model, (str, Path)):
        from galaxalign.model_files import training_config_of
        from galaxalign.inference import load_model

        model, model_taxonomy = load_model(checkpoint_or_model)
        method = method or (training_config_of(checkpoint_or_model) or {}).get("method")
        taxonomy = load_taxonomy(taxonomy) if taxonomy is not None else model_taxonomy
    else:
        model = checkpoint_or_model
        if taxonomy is None:
            raise ValueError("pass taxonomy= with a loaded model")
        taxonomy = load_taxonomy(taxonomy)
    pool = load_catalog(catalog, taxonomy)
    return feature_search_model(model, taxonomy, pool, queries, method=method, k=k, n_queries=n_queries, seed=seed,
                                n_resamples=n_resamples, progress=progress)


# ------------------------------------------------------------------------------------ comparison
def compare_feature_search(runs: Sequence[dict], reference: str, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """For each group of runs (label fraction, seed): the reference run's feature-search advantage over
    every other run with ``feature_search``, per modality, with paired 95 % intervals over the same queries.

    Returns ``{group: {"reference": name, "vs": {name: {modality: {"difference", "ci", "n"}}},
    "verdict": {modality: {"reference", "best_other", "advantage", "ci", "beats_all", "clearly"}}}}``."""
    from galaxalign.evaluation.comparison import groups

    runs = [r for r in runs if r.get("feature_search")]
    out: dict = {}
    for key, members in groups(runs).items():
        comp = _compare_group(members, reference, n_resamples, seed)
        if comp is not None:
            out[key] = comp
    out.update(pooled_over_seeds(runs, reference, n_resamples, seed))
    return out


def pooled_over_seeds(runs: Sequence[dict], reference: str, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """With several training seeds: per label fraction, each run's per-query nDCG averaged over its
    seeds, compared as :func:`compare_feature_search` compares one seed (paired over the same
    queries). OUR CHOICE: the seed-averaged nDCG of a query is the quantity judged, so the interval
    is over queries and the training-seed noise of both runs is averaged out rather than ignored.
    Key ``"<fraction>, mean over seeds a, b, c"`` (its comparison also carries ``seeds``); only runs
    trained with every seed take part."""
    seeds = sorted({int(r.get("seed", 0)) for r in runs})
    if len(seeds) < 2:
        return {}
    out: dict = {}
    for f in sorted({float(r["label_fraction"]) for r in runs}):
        by_run: dict[str, list[dict]] = {}
        for r in runs:
            if float(r["label_fraction"]) == f:
                by_run.setdefault(r.get("run", r.get("method")), []).append(r)
        pooled = []
        for name, rs in by_run.items():
            if sorted(int(r.get("seed", 0)) for r in rs) != seeds:
                continue
            queries = rs[0]["feature_search"]["per_query"]["query"]
            if any(r["feature_search"]["per_query"]["query"] != queries for r in rs):
                raise ValueError(f"the seeds of run {name!r} were not asked the same feature queries")
            fs0 = rs[0]["feature_search"]
            per_query: dict = {"query": list(queries)}
            summary: dict = {}
            for m in MODALITIES:
                with np.errstate(all="ignore"):
                    v = np.nanmean(np.stack([_nan(r["feature_search"]["per_query"][m]) for r in rs]), axis=0)
                per_query[m] = [None if not np.isfinite(x) else float(x) for x in v]
                ok = v[np.isfinite(v)]
                summary[m] = {"ndcg": float(ok.mean()) if ok.size else None}
            pooled.append({"name": f"{name} (seeds {', '.join(map(str, seeds))})", "run": name, "label_fraction": f,
                           "feature_search": {**summary, "k": fs0.get("k"), "per_query": per_query}})
        comp = _compare_group(pooled, reference, n_resamples, seed)
        if comp is not None:
            out[f"{f:g}, mean over seeds {', '.join(map(str, seeds))}"] = {**comp, "seeds": seeds}
    return out


def _compare_group(members: Sequence[dict], reference: str, n_resamples: int, seed: int) -> dict | None:
    """The reference run's advantage over every other member, per modality (see compare_feature_search)."""
    ref = next((r for r in members if r.get("run", r.get("method")) == reference), None)
    others = [r for r in members if r is not ref]
    if ref is None or not others:
        return None
    fr = ref["feature_search"]
    vs: dict = {}
    verdict: dict = {}
    for m in MODALITIES:
        for r in others:
            fo = r["feature_search"]
            if fo["per_query"]["query"] != fr["per_query"]["query"]:
                raise ValueError(f"runs {ref['name']!r} and {r['name']!r} were not asked the same feature "
                                 "queries: no paired comparison")
            vs.setdefault(r["name"], {})[m] = paired_bootstrap_diff(
                _nan(fr["per_query"][m]), _nan(fo["per_query"][m]), n_resamples=n_resamples, seed=seed)
        best = max(others, key=lambda r: _value(r, m))
        verdict[m] = {"reference": fr[m]["ndcg"], "best_other": best["name"], "best_other_value": best["feature_search"][m]["ndcg"],
                      "advantage": vs[best["name"]][m]["difference"], "ci": vs[best["name"]][m]["ci"],
                      "beats_all": all(vs[r["name"]][m]["difference"] > 0 for r in others),
                      "clearly": all(vs[r["name"]][m]["ci"][0] > 0 for r in others)}
    return {"reference": ref["name"], "vs": vs, "verdict": verdict,
            "ndcg": {r["name"]: {m: r["feature_search"][m]["ndcg"] for m in MODALITIES} for r in members}}


def _nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _value(run: dict, modality: str) -> float:
    v = run["feature_search"][modality]["ndcg"]
    return -math.inf if v is None else float(v)
