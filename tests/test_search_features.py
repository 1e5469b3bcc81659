"""Search by features: hits carry each galaxy's decision-tree answers (read once per index from the
catalog's vote-fraction / ``answers`` columns), and a feature query (answer ids) runs through the
symbol encoder, the text encoder (the answers in volunteer wording) or both, from Python, the CLI
and the HTTP API."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from galaxalign import answers as A
from galaxalign.search import query as q
from galaxalign.search import galaxy_answers as GA
from galaxalign.search.index import SearchIndex

FEATURES = ["smooth-or-featured_featured-or-disk", "disk-edge-on_no", "has-spiral-arms_yes", "spiral-winding_tight"]


@pytest.fixture(scope="module")
def sfx(tmp_path_factory):
    """A rendered survey (true answers as ``<answer>_fraction`` columns), a tiny model, an exact index."""
    from conftest import write_model
    from galaxalign.datasets import load_catalog
    from galaxalign.inference import load_model
    from galaxalign.search.embed import embed_survey
    from galaxalign.search.build import build_index_from_embeddings
    from galaxalign.survey.generate import generate_survey

    root = tmp_path_factory.mktemp("features")
    survey = generate_survey(root / "s.h5", 40, size=32, seed=3, workers=0, progress=False)
    model_dir = write_model(root / "model")
    model, tax = load_model(model_dir)
    catalog = load_catalog(survey, tax)
    embed_survey(model, catalog, root / "emb", checkpoint=str(model_dir), data_source=str(survey), taxonomy=tax,
                 batch_size=20, progress=False)
    index = build_index_from_embeddings(root / "emb", root / "index", kind="exact", progress=False)
    truth = {str(i): A.hard_answers(r, tax.tree) for i, r in zip(catalog["id"], A.answer_matrix(catalog, tax))}
    return {"index": index, "model": model, "model_dir": model_dir, "tax": tax, "truth": truth}


def expected_matched(query, path) -> int:
    return round(A.relevance(query, path) * len(dict.fromkeys(query)))


# -- the answers of every galaxy -------------------------------------------------------------------
def test_every_hit_carries_its_galaxys_true_answers(sfx):
    index = SearchIndex.load(sfx["index"])
    hits = q.query_text(index, sfx["model"], "a spiral galaxy", k=40)
    assert len(hits) == 40
    for h in hits:
        assert h.answers == sfx["truth"][h.id] and h.matched is None
        assert h.to_dict()["answers"] == list(h.answers) and "matched" not in h.to_dict()
    assert len({h.answers for h in hits}) > 3  # galaxies differ below their class
    assert all(h.answers == sfx["truth"][h.id] for h in q.query_id(index, hits[0].id, k=5))


def test_feature_query_hits_count_the_matched_answers(sfx):
    index = SearchIndex.load(sfx["index"])
    for via in q.FEATURE_VIAS:
        hits = q.query_features(index, sfx["model"], FEATURES, via=via, k=40)
        assert [h.matched for h in hits] == [expected_matched(FEATURES, sfx["truth"][h.id]) for h in hits]
        assert {h.matched for h in hits} != {len(FEATURES)}  # not every galaxy has them all: a real count
    symbol = q.query_symbol(index, sfx["model"], FEATURES, k=5)
    assert [h.matched for h in symbol] == [expected_matched(FEATURES, sfx["truth"][h.id]) for h in symbol]


def test_both_is_the_normalised_sum_of_the_symbol_and_text_query_embeddings(sfx):
    model, tax = sfx["model"], sfx["tax"]
    caption = q.feature_caption(FEATURES, tax)
    assert caption == "galaxy with features or a disk, not edge-on, spiral arms, tightly wound arms"
    s = q.embed_image(model, q.render_query_symbol(FEATURES, taxonomy=tax), "symbol")
    t = q.embed_text(model, caption)
    np.testing.assert_allclose(q.feature_vector(model, FEATURES, "symbol", tax), s, atol=1e-6)
    np.testing.assert_allclose(q.feature_vector(model, FEATURES, "text", tax), t, atol=1e-6)
    both = q.feature_vector(model, FEATURES, "both", tax)
    expected = s / np.linalg.norm(s) + t / np.linalg.norm(t)
    np.testing.assert_allclose(both, expected / np.linalg.norm(expected), atol=1e-6)
    assert abs(float(s @ t) / np.linalg.norm(s) / np.linalg.norm(t)) < 0.999  # the two differ: the sum is a third query


def test_the_text_query_is_the_caption_in_the_first_prompt_template_as_trained_and_measured(sfx):
    import dataclasses

    from galaxalign.evaluation.feature_search import query_text

    model, tax = sfx["model"], sfx["tax"]
    assert q.feature_text(FEATURES, tax) == q.feature_caption(FEATURES, tax) == query_text(FEATURES, tax)
    wrapped = dataclasses.replace(tax, prompt_templates=("survey cutout showing {label}", "{label}"))
    text = q.feature_text(FEATURES, wrapped)
    assert text == "survey cutout showing " + q.feature_caption(FEATURES, wrapped) == query_text(FEATURES, wrapped)
    np.testing.assert_allclose(q.feature_vector(model, FEATURES, "text", wrapped), q.embed_text(model, text), atol=1e-6)


def test_bad_feature_queries_are_clear_errors(sfx):
    index = SearchIndex.load(sfx["index"])
    with pytest.raises(q.QueryError, match="via must be one of symbol, text, both"):
        q.query_features(index, sfx["model"], FEATURES, via="image")
    with pytest.raises(q.QueryError, match="unknown Galaxy Zoo answer"):
        q.query_features(index, sfx["model"], ["bar_perhaps"])
    with pytest.raises(q.QueryError, match="both answer question 'bar'"):
        q.query_features(index, sfx["model"], ["bar_yes", "bar_no"])


def test_answers_are_read_once_per_index_and_again_after_it_grows(sfx, monkeypatch):
    index = SearchIndex.load(sfx["index"])
    calls = []
    real = GA.compute_index_answers
    monkeypatch.setattr(GA, "compute_index_answers", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for _ in range(3):
        q.query_text(index, sfx["model"], "a smooth galaxy", k=3)
    assert len(calls) == 1
    g = index.record(index.table["id"].iloc[0])
    new = pd.DataFrame([{**g, "id": "new-1", "bar_yes_fraction": 1.0, "bar_no_fraction": 0.0}])
    index.add(index.vector(g["id"])[None] * -1, new)
    hit = q.query_id(index, g["id"], k=len(index) - 1)[-1]
    assert len(calls) == 2 and hit.id == "new-1" and hit.answers == A.hard_answers(
        A.answer_matrix(new, sfx["tax"])[0], sfx["tax"].tree)


def _flat_index(table: pd.DataFrame, info: dict | None = None) -> SearchIndex:
    import faiss

    x = np.random.default_rng(0).normal(size=(len(table), 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(8)
    flat.add(x)
    return SearchIndex(flat, table, {"format": "galaxalign-index", "kind": "exact", "count": len(table), "dim": 8,
                                     **(info or {})})


def test_an_answers_column_is_read_and_a_catalog_without_answers_adds_nothing():
    table = pd.DataFrame({"id": ["a", "b", "c"], "label": [-1, -1, -1], "source": ["x", "y", "z"],
                          "answers": ["smooth-or-featured_smooth;how-rounded_cigar", "bar_yes", ""]})
    index = _flat_index(table)
    by_id = {h.id: h for h in q.query_vector(index, np.ones(8, np.float32), k=3, features=["bar_yes", "bar_no"])}
    assert by_id["a"].answers == ("smooth-or-featured_smooth", "how-rounded_cigar") and by_id["a"].matched == 0
    assert by_id["b"].answers == ("smooth-or-featured_featured-or-disk", "disk-edge-on_no", "bar_yes")
    assert by_id["b"].matched == 1
    assert by_id["c"].answers == () and by_id["c"].matched == 0
    plain = _flat_index(table.drop(columns=["answers"]))
    hits = q.query_vector(plain, np.ones(8, np.float32), k=3, features=["bar_yes"])
    assert all(h.answers is None and h.matched is None for h in hits)
    assert "answers" not in hits[0].to_dict() and "matched" not in hits[0].to_dict()


def test_a_bad_answers_cell_names_the_row():
    table = pd.DataFrame({"id": ["a", "b"], "label": [-1, -1], "source": ["x", "y"], "answers": ["bar_yes", "bar_maybe"]})
    with pytest.raises(A.AnswerError, match=r"index table: row 1 \(id 'b'\).*'bar_maybe'"):
        q.query_vector(_flat_index(table), np.ones(8, np.float32), k=2)


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_feature_query_json_and_table(sfx, capsys):
    from galaxalign.cli import main

    assert main(["search", "--index", str(sfx["index"]), "--features", ",".join(FEATURES), "--via", "text",
                 "-k", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == {"features": FEATURES, "via": "text", "caption": q.feature_caption(FEATURES, sfx["tax"])}
    assert len(out["results"]) == 6
    for r in out["results"]:
        assert r["answers"] == list(sfx["truth"][r["id"]])
        assert r["matched"] == expected_matched(FEATURES, sfx["truth"][r["id"]])
    assert main(["search", "--index", str(sfx["index"]), "--features", ",".join(FEATURES), "-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "via: both" in table and "caption: galaxy with features or a disk, not edge-on" in table
    assert "matched" in table.splitlines()[3] and table.count("answers: ") == 3
    assert any(f"{expected_matched(FEATURES, path)}/{len(FEATURES)}" in table for path in sfx["truth"].values())
    with pytest.raises(SystemExit) as exc:
        main(["search", "--index", str(sfx["index"]), "--features", "bar_yes", "--via", "image"])
    assert exc.value.code == 2


def test_cli_symbol_query_shows_matched_features(sfx, capsys):
    from galaxalign.cli import main

    assert main(["search", "--index", str(sfx["index"]), "--symbol", "bar_yes,bar_yes", "-k", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["matched"] for r in out["results"]] == [int("bar_yes" in A.expand(sfx["truth"][r["id"]])) for r in out["results"]]


# -- the HTTP API ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(sfx):
    from fastapi.testclient import TestClient

    from galaxalign.serve import create_app

    with TestClient(create_app(sfx["index"], model=sfx["model"])) as c:
        yield c


@pytest.mark.parametrize("via", ["symbol", "text", "both"])
def test_api_feature_search(client, sfx, via):
    r = client.get("/api/search/features", params={"answers": ",".join(FEATURES), "via": via, "k": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"answers": FEATURES, "via": via, "caption": q.feature_caption(FEATURES, sfx["tax"])}
    assert len(body["results"]) == 8
    for hit in body["results"]:
        assert hit["answers"] == list(sfx["truth"][hit["id"]])
        assert hit["matched"] == expected_matched(FEATURES, sfx["truth"][hit["id"]])
    # the same ranking as the Python API's feature query
    index = SearchIndex.load(sfx["index"])
    assert [h["id"] for h in body["results"]] == [h.id for h in q.query_features(index, sfx["model"], FEATURES, via, 8)]


def test_api_feature_search_defaults_to_both_and_pages(client):
    first = client.get("/api/search/features", params={"answers": "bar_yes", "k": 4}).json()
    second = client.get("/api/search/features", params={"answers": "bar_yes", "k": 4, "offset": 4}).json()
    assert first["query"]["via"] == "both"
    assert [h["rank"] for h in second["results"]] == [5, 6, 7, 8]
    assert not {h["id"] for h in first["results"]} & {h["id"] for h in second["results"]}


def test_api_symbol_and_text_hits_carry_answers(client, sfx):
    symbol = client.post("/api/search/symbol", json={"answers": ["bar_yes"], "k": 5}).json()
    assert all(h["matched"] == int("bar_yes" in A.expand(sfx["truth"][h["id"]])) for h in symbol["results"])
    text = client.post("/api/search/text", json={"text": "a barred galaxy", "k": 5}).json()
    assert all(h["answers"] == list(sfx["truth"][h["id"]]) and "matched" not in h for h in text["results"])


def test_api_symbols_say_each_answer_in_caption_wording(client):
    answers = {a["id"]: a for qn in client.get("/api/symbols").json()["questions"] for a in qn["answers"]}
    assert answers["disk-edge-on_no"]["phrase"] == "not edge-on"
    assert answers["something-odd_no"]["phrase"] == ""


def test_api_bad_feature_queries_are_4xx(client):
    assert client.get("/api/search/features", params={"answers": "bar_yes", "via": "image"}).status_code == 422
    r = client.get("/api/search/features", params={"answers": "bar_perhaps"})
    assert r.status_code == 400 and "unknown Galaxy Zoo answer" in r.json()["detail"]
    assert client.get("/api/search/features", params={"answers": " , "}).status_code == 400
    assert client.get("/api/search/features").status_code == 422


# -- ranking by the expected fraction of the query's answers (search.features) ------------------------
def test_path_bank_scores_are_the_expected_relevance_under_the_posterior(sfx):
    from galaxalign.search.features import bank_paths, build_path_bank

    tax, model = sfx["tax"], sfx["model"]
    assert bank_paths(model, tax) == tuple(tuple(c.answers) for c in tax.classes if c.answers)  # no paths: classes
    bank = build_path_bank(model, tax)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, bank.embeddings["text"].shape[1])).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = [tuple(FEATURES), ("smooth-or-featured_smooth",)]
    for via in ("symbol", "text", "both"):
        p = bank.posterior(emb, via)
        assert p.shape == (7, len(bank.paths)) and np.allclose(p.sum(axis=1), 1.0) and (p >= 0).all()
        want = np.array([[sum(p[n, r] * A.relevance(qq, path) for r, path in enumerate(bank.paths)) for n in range(7)]
                         for qq in queries])
        assert np.allclose(bank.scores(emb, queries, via), want)
    # a galaxy that sits on one path's caption, at a sharp temperature, gets that path's relevance
    from dataclasses import replace

    sharp = replace(bank, scale=1e4)
    r = 3
    got = sharp.scores(bank.embeddings["text"][r:r + 1], queries, "text")[:, 0]
    assert np.allclose(got, [A.relevance(qq, bank.paths[r]) for qq in queries])
    with pytest.raises(A.AnswerError, match="unknown decision-tree answer"):
        bank.relevance([("bar_maybe",)])


def test_a_model_carries_its_per_galaxy_paths_through_export(tmp_path, sfx):
    from galaxalign.inference import load_model, save_pretrained
    from galaxalign.search.features import bank_paths

    model, tax = sfx["model"], sfx["tax"]
    paths = [list(A.hard_answers(A.answer_vector(FEATURES, tax.tree), tax.tree)), ["smooth-or-featured_smooth"]]
    model.set_answer_paths(paths)
    try:
        loaded, _ = load_model(save_pretrained(model, tax, tmp_path / "m"))
    finally:
        model.set_answer_paths(None)
    assert loaded.answer_paths == tuple(tuple(p) for p in paths) and bank_paths(loaded, tax) == loaded.answer_paths
    assert model.answer_paths is None and "answer_paths" not in model.config
    model.set_answer_paths(paths, [5, 0])
    try:
        loaded, _ = load_model(save_pretrained(model, tax, tmp_path / "m2"))
        with pytest.raises(ValueError, match="answer_path_counts"):
            model.set_answer_paths(paths, [1])
    finally:
        model.set_answer_paths(None)
    assert loaded.answer_path_counts == (5, 0) and "answer_path_counts" not in model.config


def test_the_path_posterior_multiplies_in_how_often_each_path_was_seen(sfx):
    """Bayes' rule over DISTINCT paths: with the cosines equal, the posterior is the training counts'
    share (+ smoothing); the prior moves a galaxy's expected relevance towards the common path."""
    from dataclasses import replace

    from galaxalign.search.features import PRIOR_SMOOTHING, build_path_bank

    model, tax = sfx["model"], sfx["tax"]
    paths = [A.hard_answers(A.answer_vector(FEATURES, tax.tree), tax.tree), ("smooth-or-featured_smooth",)]
    flat = build_path_bank(model, tax, paths)
    assert flat.log_prior is None
    counts = [30, 2]
    bank = build_path_bank(model, tax, paths, counts=counts)
    same = replace(bank, embeddings={m: np.repeat(e[:1], 2, axis=0) for m, e in bank.embeddings.items()})
    emb = same.embeddings["text"][:1]
    want = (np.array(counts) + PRIOR_SMOOTHING) / (sum(counts) + 2 * PRIOR_SMOOTHING)
    assert np.allclose(same.posterior(emb, "text"), want[None, :], atol=1e-5)
    assert np.allclose(replace(same, log_prior=None).posterior(emb, "text"), 0.5, atol=1e-5)
    g = np.stack([flat.embeddings["text"][0], flat.embeddings["text"][1]])
    g = (g / np.linalg.norm(g, axis=1, keepdims=True))
    assert (bank.posterior(g, "text")[:, 0] > flat.posterior(g, "text")[:, 0]).all()
    with pytest.raises(ValueError, match="2 paths"):
        build_path_bank(model, tax, paths, counts=[1])
    # the model's own counts are used when the bank ranges over its own paths
    model.set_answer_paths([list(p) for p in paths], counts)
    try:
        assert np.allclose(build_path_bank(model, tax).log_prior, bank.log_prior)
    finally:
        model.set_answer_paths(None)


def test_feature_queries_rank_by_expected_fraction_and_page_consistently(sfx):
    from galaxalign.search.features import path_bank

    index = SearchIndex.load(sfx["index"])
    tax = q.index_taxonomy(index)
    bank = path_bank(sfx["model"], tax)
    for via in q.FEATURE_VIAS:
        hits = q.query_features(index, sfx["model"], FEATURES, via=via, k=len(index))
        assert [h.rank for h in hits] == list(range(1, len(index) + 1)) and len({h.id for h in hits}) == len(index)
        want = bank.scores(index.vectors([h.row for h in hits]), [tuple(FEATURES)], via)[0]
        assert np.allclose([h.score for h in hits], want) and np.all(np.diff(want) <= 1e-12)  # best first
        first, second = (q.query_features(index, sfx["model"], FEATURES, via=via, k=5, offset=o) for o in (0, 5))
        assert [h.id for h in first + second] == [h.id for h in hits[:10]]
        assert [h.rank for h in second] == [6, 7, 8, 9, 10]


def test_feature_ranking_is_not_the_nearest_neighbours_of_the_query_vector(sfx):
    """The expected-fraction ranking re-orders the composed query vector's neighbours (fails if
    query_features returned the plain cosine ranking)."""
    index = SearchIndex.load(sfx["index"])
    model, tax = sfx["model"], q.index_taxonomy(index)
    vector = q.feature_vector(model, FEATURES, "text", tax)
    plain = q.query_vector(index, vector, k=len(index))
    ranked = q.query_features(index, model, FEATURES, via="text", k=len(index))
    assert [h.id for h in plain] != [h.id for h in ranked]
    assert sorted(h.id for h in plain) == sorted(h.id for h in ranked)
