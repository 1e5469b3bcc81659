"""The Milvus backend (search.milvus_index) against Milvus Lite: every query kind, filters, pagination,
add / remove and the error cases give what the exact faiss index over the same embeddings gives.

Both sides are exact (Milvus FLAT, faiss IndexFlatIP), so results must agree galaxy for galaxy.
Collections live in Milvus Lite files under the test's temporary folder; one per module fixture.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pymilvus", reason="pymilvus is not installed")
pytest.importorskip("milvus_lite", reason="this platform has no Milvus Lite wheel (milvus-lite); the Milvus backend "
                    "is tested against Milvus Lite only")

from galaxalign import answers as A  # noqa: E402
from galaxalign.search import milvus_build as MB  # noqa: E402
from galaxalign.search import milvus_index as M  # noqa: E402
from galaxalign.search import milvus_schema as MS  # noqa: E402
from galaxalign.search import query as q  # noqa: E402
from galaxalign.search.filters import FilterError, parse_filter  # noqa: E402
from galaxalign.search.build import build_index  # noqa: E402
from galaxalign.search.index import IndexMismatchError, SearchIndex, UnknownGalaxyError  # noqa: E402

FEATURES = ["smooth-or-featured_featured-or-disk", "disk-edge-on_no", "has-spiral-arms_yes", "spiral-winding_tight"]


# -- a rendered survey (answers, ra/dec), a tiny model, its embeddings in faiss and in Milvus --------
@pytest.fixture(scope="module")
def mfx(tmp_path_factory):
    from conftest import write_model
    from galaxalign.datasets import load_catalog
    from galaxalign.inference import load_model
    from galaxalign.search.embed import embed_survey
    from galaxalign.search.build import build_index_from_embeddings
    from galaxalign.survey.generate import generate_survey

    root = tmp_path_factory.mktemp("milvus")
    survey = generate_survey(root / "s.h5", 40, size=32, seed=3, workers=0, progress=False)
    model_dir = write_model(root / "model")
    model, tax = load_model(model_dir)
    catalog = load_catalog(survey, tax)
    embed_survey(model, catalog, root / "emb", checkpoint=str(model_dir), data_source=str(survey), taxonomy=tax,
                 batch_size=20, progress=False)
    faiss_dir = build_index_from_embeddings(root / "emb", root / "index", kind="exact", progress=False)
    uri = str(root / "survey.db")
    spec = MB.build_milvus_from_embeddings(root / "emb", uri, "galaxies", progress=False)
    truth = {str(i): A.hard_answers(r, tax.tree) for i, r in zip(catalog["id"], A.answer_matrix(catalog, tax))}
    return {"root": root, "uri": uri, "spec": spec, "faiss": SearchIndex.load(faiss_dir), "faiss_dir": faiss_dir,
            "milvus": SearchIndex.load(spec), "model": model, "model_dir": model_dir, "tax": tax, "truth": truth,
            "emb": root / "emb", "catalog": catalog}


def same_hits(a, b):
    assert [h.id for h in a] == [h.id for h in b]
    assert [h.rank for h in a] == [h.rank for h in b]
    assert [h.label_name for h in a] == [h.label_name for h in b]
    assert [h.source for h in a] == [h.source for h in b]
    assert [h.answers for h in a] == [h.answers for h in b]
    assert [h.matched for h in a] == [h.matched for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)


def test_the_address_names_a_lite_file_or_a_server_and_a_collection():
    assert MS.parse_milvus_spec("milvus://./survey.db#galaxies") == ("./survey.db", "galaxies")
    assert MS.parse_milvus_spec("milvus://./survey.db") == ("./survey.db", MS.DEFAULT_COLLECTION)
    assert MS.parse_milvus_spec("milvus://db.example.org:19530#g") == ("http://db.example.org:19530", "g")
    assert MS.parse_milvus_spec("milvus://https://host:443#g") == ("https://host:443", "g")
    with pytest.raises(ValueError, match="no URI"):
        MS.parse_milvus_spec("milvus://#g")


def test_the_collection_holds_the_catalog_and_its_provenance(mfx):
    mi, fi = mfx["milvus"], mfx["faiss"]
    assert isinstance(mi, M.MilvusIndex) and len(mi) == len(fi) == 40 and mi.dim == fi.dim
    assert mi.kind == "milvus FLAT" and mi.checkpoint == fi.checkpoint and mi.class_names == fi.class_names
    for gid in ("s-00000", fi.table["id"].iloc[7]):
        if gid not in set(fi.table["id"]):
            continue
        rec, ref = mi.record(gid), fi.record(gid)
        assert rec.keys() == ref.keys()
        for key, v in ref.items():
            assert rec[key] == pytest.approx(v, nan_ok=True) if isinstance(v, float) else rec[key] == v
    np.testing.assert_allclose(mi.vector(fi.table["id"].iloc[3]), fi.vector(fi.table["id"].iloc[3]), atol=1e-6)
    pd.testing.assert_frame_equal(mi.table.reset_index(drop=True), fi.table.reset_index(drop=True), check_dtype=False)
    assert "ra" in mi.layout.typed and "bar_yes_fraction" in mi.layout.typed  # numeric, a valid name: a field
    assert "disk-edge-on_no_fraction" in mi.layout.numeric and "disk-edge-on_no_fraction" not in mi.layout.typed


# -- every query kind ------------------------------------------------------------------------------
def test_query_by_id_with_pages(mfx):
    gid = mfx["faiss"].table["id"].iloc[5]
    for offset in (0, 3, 10):
        same_hits(q.query_id(mfx["milvus"], gid, 6, offset=offset), q.query_id(mfx["faiss"], gid, 6, offset=offset))
    page1, page2 = q.query_id(mfx["milvus"], gid, 5), q.query_id(mfx["milvus"], gid, 5, offset=5)
    assert [h.rank for h in page2] == [6, 7, 8, 9, 10] and not {h.id for h in page1} & {h.id for h in page2}
    assert gid not in {h.id for h in page1}


def test_hits_carry_each_galaxys_true_answers(mfx):
    hits = q.query_id(mfx["milvus"], mfx["faiss"].table["id"].iloc[0], 39)
    assert len(hits) == 39 and all(h.answers == mfx["truth"][h.id] for h in hits)


def test_query_by_image_and_sketch(mfx):
    from galaxalign.datasets import read_image

    image = read_image(mfx["catalog"].iloc[11])
    same_hits(q.query_image(mfx["milvus"], mfx["model"], image, 8), q.query_image(mfx["faiss"], mfx["model"], image, 8))
    assert q.query_image(mfx["milvus"], mfx["model"], image, 1)[0].id == mfx["catalog"]["id"].iloc[11]
    sketch = q.render_query_symbol(FEATURES[:2])
    same_hits(q.query_sketch(mfx["milvus"], mfx["model"], sketch, 8, offset=2),
              q.query_sketch(mfx["faiss"], mfx["model"], sketch, 8, offset=2))


def test_query_by_text_and_symbols(mfx):
    same_hits(q.query_text(mfx["milvus"], mfx["model"], "a barred spiral galaxy", 10),
              q.query_text(mfx["faiss"], mfx["model"], "a barred spiral galaxy", 10))
    a = q.query_symbol(mfx["milvus"], mfx["model"], FEATURES, 10)
    same_hits(a, q.query_symbol(mfx["faiss"], mfx["model"], FEATURES, 10))
    assert all(h.matched is not None for h in a)


@pytest.mark.parametrize("via", ["symbol", "text", "both"])
def test_feature_queries_rank_and_count_answers_as_on_faiss(mfx, via):
    a = q.query_features(mfx["milvus"], mfx["model"], FEATURES, via, k=12, offset=3)
    same_hits(a, q.query_features(mfx["faiss"], mfx["model"], FEATURES, via, k=12, offset=3))
    for h in a:
        have = set(A.expand(mfx["truth"][h.id], mfx["tax"].tree))
        assert h.matched == sum(f in have for f in FEATURES)


def test_filters_on_the_rendered_catalog(mfx):
    t = mfx["faiss"].table
    ra, dec = float(t["ra"].iloc[0]), float(t["dec"].iloc[0])
    for where in (f"cone={ra},{dec},5", "class=0,3", f"disk-edge-on_no_fraction=0.5:;cone={ra},{dec},30",
                  {"ranges": {"dec": [dec - 1, None]}, "classes": [mfx["faiss"].class_names[2]]}):
        a = q.query_features(mfx["milvus"], mfx["model"], FEATURES, "text", k=10, where=where)
        same_hits(a, q.query_features(mfx["faiss"], mfx["model"], FEATURES, "text", k=10, where=where))


# -- filters: Milvus expressions (+ the exact cone cut) select what the faiss mask selects ---------
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """600 random galaxies: a sky with RA on both sides of 0/360 and up to the poles, magnitudes with
    gaps (NaN), a numeric column whose name Milvus fields cannot take (kept in the JSON field)."""
    root = tmp_path_factory.mktemp("milvus-filters")
    rng = np.random.default_rng(5)
    n, dim = 600, 16
    x = rng.standard_normal((n, dim)).astype(np.float32)
    ra = np.concatenate([rng.uniform(0, 360, n - 200), rng.uniform(355, 360, 100), rng.uniform(0, 5, 100)])
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    dec[:40] = rng.uniform(85, 90, 40)
    mag = rng.uniform(14, 20, n)
    mag[::9] = np.nan
    table = pd.DataFrame({"id": [f"g/{i}" if i % 50 else f'g"{i}\\' for i in range(n)], "label": rng.integers(0, 10, n),
                          "source": [f"cat.h5#{i}" for i in range(n)], "ra": ra, "dec": dec, "mag_r": mag,
                          "sersic-n": rng.uniform(0.5, 6, n), "survey": "synthetic"})
    info = {"taxonomy": "galaxy10_decals"}
    faiss_dir = build_index(x, table, root / "index", kind="exact", info=info, progress=False)
    spec = MB.build_milvus_index(x, table, str(root / "f.db"), "filters", info=info, progress=False)
    return {"x": x, "table": table, "faiss": SearchIndex.load(faiss_dir), "milvus": SearchIndex.load(spec),
            "queries": rng.standard_normal((4, dim)).astype(np.float32), "root": root}


FILTERS = [
    "mag_r=16:17",
    "mag_r=:15.5;class=1,2",
    "mag_r=19:",
    {"ranges": {"mag_r": [None, None]}},                       # an open range: every galaxy with a magnitude
    "sersic-n=2:3",                                           # a column in the JSON field
    "class=Disturbed Galaxies,Merging Galaxies",
    "cone=10,-20,15",
    "cone=359,5,4",                                           # across RA 0/360
    "cone=2,-3,6;mag_r=15:19",
    "cone=45,88,4",                                           # a pole inside the cone
    "cone=120,60,40",
    "mag_r=30:40",                                            # matches nothing
    {"ranges": {"mag_r": [float("-inf"), 16.0]}},
]


@pytest.mark.parametrize("where", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_select_what_the_faiss_mask_selects(synth, where):
    mi, fi = synth["milvus"], synth["faiss"]
    mask = parse_filter(where).mask(synth["table"], fi.class_names)
    for v in synth["queries"]:
        a, b = mi.search(v, 12, where=where), fi.search(v, 12, where=where)
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        assert all(mask[fi.row_of(h.id)] for h in a)
        assert len(a) == min(12, int(mask.sum()))


def test_a_cone_is_a_box_in_the_expression_then_an_exact_cut(synth):
    mi = synth["milvus"]
    expr = mi.filter_expression(parse_filter("cone=359,5,4"))
    assert "ra >= 354.98" in expr and "or ra <= 3.01" in expr and "dec >= 1.0" in expr  # wraps at 0/360
    assert "ra" not in mi.filter_expression(parse_filter("cone=45,88,4")).replace("dec", "")  # a pole: any RA
    box = parse_filter("cone=10,-20,15")
    in_box = {h.id for h in mi.search(synth["queries"][0], 600, where={"ranges": {}})}
    assert len(in_box) == 600
    cut = [h.id for h in mi.search(synth["queries"][0], 600, where=box)]
    t = synth["table"].set_index("id")
    sep = np.degrees(np.arccos(np.clip(
        np.sin(np.radians(t.loc[cut, "dec"])) * math.sin(math.radians(-20))
        + np.cos(np.radians(t.loc[cut, "dec"])) * math.cos(math.radians(-20)) * np.cos(np.radians(t.loc[cut, "ra"] - 10)),
        -1, 1)))
    assert len(cut) > 5 and (sep <= 15 + 1e-9).all()


def test_bad_filters_are_clear_errors(synth):
    mi = synth["milvus"]
    with pytest.raises(FilterError, match="unknown column 'mag_g'.*mag_r"):
        mi.search(synth["queries"][0], 5, where="mag_g=1:2")
    with pytest.raises(FilterError, match="not numeric"):
        mi.search(synth["queries"][0], 5, where="survey=1:2")
    with pytest.raises(FilterError, match="min 3.0 is above max 1.0"):
        mi.search(synth["queries"][0], 5, where="mag_r=3:1")
    with pytest.raises(FilterError, match="class 'Spirals'"):
        mi.search(synth["queries"][0], 5, where="class=Spirals")
    with pytest.raises(FilterError, match="dec must be in"):
        mi.search(synth["queries"][0], 5, where="cone=1,95,2")


def test_ids_with_quotes_and_backslashes_round_trip(synth):
    mi = synth["milvus"]
    assert mi.record('g"50\\')["source"] == "cat.h5#50"
    assert q.query_id(mi, 'g"50\\', 1, include_self=True)[0].id == 'g"50\\'


# -- growth ----------------------------------------------------------------------------------------
def test_add_and_remove_without_a_rebuild(synth):
    mi = SearchIndex.load(synth["milvus"].spec)
    rng = np.random.default_rng(9)
    new = rng.standard_normal((3, 16)).astype(np.float32)
    table = pd.DataFrame({"id": ["new-0", "new-1", "new-2"], "label": [1, 2, 3], "source": ["n"] * 3,
                          "ra": [1.0, 2.0, 3.0], "dec": [0.0, 0.5, 1.0], "mag_r": [16.5, np.nan, 17.0],
                          "sersic-n": [1.0, 2.0, 3.0], "survey": "next"})
    g0 = mi.generation
    keys = mi.add(new, table)
    assert list(keys) == [600, 601, 602] and len(mi) == 603 and mi.generation > g0
    assert mi.search(new[1], 1)[0].id == "new-1"
    assert mi.search(new[0], 1, where="mag_r=16:17;cone=1,0,1")[0].id == "new-0"
    assert "new-1" not in {h.id for h in mi.search(new[1], 20, where="mag_r=10:30")}  # NaN matches no range
    with pytest.raises(ValueError, match="'new-0' is already in the index"):
        mi.add(new[:1], table.iloc[:1])
    with pytest.raises(UnknownGalaxyError, match="'nope'.*nothing removed"):
        mi.remove(["new-2", "nope"])
    assert mi.remove(["new-1", "new-2"]) == 2 and len(mi) == 601
    assert "new-1" not in {h.id for h in mi.search(new[1], 20)}
    with pytest.raises(UnknownGalaxyError):
        mi.record("new-1")
    reopened = SearchIndex.load(synth["milvus"].spec)  # another process sees the same collection
    assert len(reopened) == 601 and reopened.search(new[0], 1)[0].id == "new-0"
    assert list(reopened.add(new[2:], table.iloc[2:].assign(id="new-3"))) == [603]  # keys are never reused
    assert mi.remove(["new-0", "new-3"]) == 2


def test_add_refuses_another_models_dimension(synth):
    with pytest.raises(ValueError, match="dimension 8 does not match the index dimension 16"):
        synth["milvus"].add(np.ones((1, 8), np.float32), synth["table"].iloc[:1].assign(id="x"))


def test_append_refuses_embeddings_of_another_model(mfx, tmp_path):
    mi = mfx["milvus"]
    with pytest.raises(IndexMismatchError, match=r"dimension 7, but Milvus collection 'galaxies' at .*survey\.db "
                                                  r"holds dimension \d+"):
        mi.check_compatible(7, mfx["tax"].to_dict(), what="emb2")
    other = {**mfx["tax"].to_dict(), "name": "my_survey", "classes": [{"name": "a"}, {"name": "b"}]}
    with pytest.raises(IndexMismatchError, match="taxonomy 'my_survey'.*built with taxonomy"):
        mi.check_compatible(mi.dim, other, what="emb2")
    mi.check_compatible(mi.dim, mfx["tax"].to_dict())  # the same model: fine


# -- errors ----------------------------------------------------------------------------------------
def test_an_unreachable_server_is_named():
    with pytest.raises(MS.MilvusConnectionError, match=r"Milvus at http://127\.0\.0\.1:1 cannot be reached"):
        SearchIndex.load("milvus://127.0.0.1:1#galaxies")


def test_a_refused_token_names_the_uri_and_the_variable():
    from pymilvus.exceptions import MilvusException

    err = MS.connection_error("https://db:19530", MilvusException(code=1800, message="auth check failure, please check username and password"))
    assert isinstance(err, MS.MilvusConnectionError)
    assert "https://db:19530 refused the credentials" in str(err) and MS.TOKEN_ENV in str(err)
    assert "cannot be reached" in str(MS.connection_error("http://x:1", MilvusException(code=2, message="Fail connecting")))


def test_a_missing_collection_is_named_with_what_is_there(mfx):
    with pytest.raises(MS.MilvusCollectionError, match=r"collection 'nope' at .*survey\.db: no such collection "
                                                      r"\(there: \['galaxies'\]\)"):
        SearchIndex.load(f"milvus://{mfx['uri']}#nope")
    with pytest.raises(MS.MilvusConnectionError, match="does not exist"):
        SearchIndex.load(f"milvus://{mfx['root']}/no/such/folder/x.db#galaxies")


def test_a_collection_galaxalign_did_not_finish_or_write_is_refused(mfx):
    from pymilvus import DataType

    client = MS.connect(mfx["uri"])
    s = client.create_schema(auto_id=False)
    s.add_field("key", DataType.INT64, is_primary=True)
    s.add_field("embedding", DataType.FLOAT_VECTOR, dim=4)
    ip = client.prepare_index_params()
    ip.add_index("embedding", index_type="FLAT", metric_type="IP")
    client.create_collection("foreign", schema=s, index_params=ip)
    with pytest.raises(MS.MilvusCollectionError, match="'foreign'.*not a GalaxAlign index"):
        SearchIndex.load(f"milvus://{mfx['uri']}#foreign")
    client.alter_collection_properties("foreign", properties={MS.INFO_PROPERTY: json.dumps({"format": "galaxalign-index"})})
    with pytest.raises(MS.MilvusCollectionError, match="'foreign'.*unfinished build"):
        SearchIndex.load(f"milvus://{mfx['uri']}#foreign")
    client.alter_collection_properties("foreign", properties={MS.COMPLETE_PROPERTY: "1"})
    with pytest.raises(IndexMismatchError, match="says dim=None but the 'embedding' field has dimension 4"):
        SearchIndex.load(f"milvus://{mfx['uri']}#foreign")
    with pytest.raises(MS.MilvusCollectionError, match="no GalaxAlign build wrote"):
        MB.build_milvus_index(np.eye(4, dtype=np.float32), pd.DataFrame({"id": list("abcd"), "label": 0, "source": ""}),
                             mfx["uri"], "foreign", progress=False)
    client.drop_collection("foreign")
    client.create_collection("plain", schema=s, index_params=ip)  # someone else's, under an alias
    client.create_alias("plain", "aliased")
    with pytest.raises(MS.MilvusCollectionError, match="alias 'aliased' points at 'plain', which no GalaxAlign build"):
        MB.build_milvus_index(np.eye(4, dtype=np.float32), pd.DataFrame({"id": list("abcd"), "label": 0, "source": ""}),
                             mfx["uri"], "aliased", progress=False)
    assert client.has_collection("plain")  # never dropped
    client.drop_alias("aliased")
    client.drop_collection("plain")


def test_a_failed_rebuild_leaves_the_old_collection_and_nothing_half_written(synth, monkeypatch):
    uri = str(synth["root"] / "f.db")
    before = SearchIndex.load(f"milvus://{uri}#filters")
    calls = {"n": 0}
    real = MB._rows

    def failing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*a, **kw)

    monkeypatch.setattr(MB, "INSERT_BATCH", 100)
    monkeypatch.setattr(MB, "_rows", failing)
    with pytest.raises(OSError, match="disk full"):
        MB.build_milvus_index(synth["x"][:300], synth["table"].iloc[:300], uri, "filters", progress=False)
    client = MS.connect(uri)
    assert [c for c in client.list_collections() if c.startswith("filters__") and c not in MB._aliased(client, "filters")] == []
    after = SearchIndex.load(f"milvus://{uri}#filters")
    assert len(after) == len(before) == 600
    # interrupted at the very switch: the old collection still serves, the new one is gone
    monkeypatch.setattr(MB, "_rows", real)
    monkeypatch.setattr(MB, "_switch_alias", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        MB.build_milvus_index(synth["x"][:50], synth["table"].iloc[:50], uri, "filters", progress=False)
    assert len(SearchIndex.load(f"milvus://{uri}#filters")) == 600
    assert [c for c in client.list_collections() if c.startswith("filters__")] == list(MB._aliased(client, "filters"))


def test_a_killed_builds_staging_collection_is_never_opened_and_can_be_dropped(synth, monkeypatch):
    uri = str(synth["root"] / "f.db")
    # a process killed mid-build (no Python cleanup runs): its staging collection stays, unmarked
    monkeypatch.setattr(MB, "_wait_indexed", lambda *a, **k: (_ for _ in ()).throw(SystemExit()))
    monkeypatch.setattr(MB, "_aliased",
                        lambda client, alias: {c for c in client.list_collections() if c.startswith(alias + "__")})
    with pytest.raises(SystemExit):
        MB.build_milvus_index(synth["x"][:50], synth["table"].iloc[:50], uri, "filters", progress=False)
    monkeypatch.undo()
    client = MS.connect(uri)
    staging = [c for c in client.list_collections() if c.startswith("filters__") and c not in MB._aliased(client, "filters")]
    assert len(staging) == 1
    with pytest.raises(MS.MilvusCollectionError, match="unfinished build"):
        SearchIndex.load(f"milvus://{uri}#{staging[0]}")
    assert MB.drop_unfinished(uri, "filters") == staging
    assert len(SearchIndex.load(f"milvus://{uri}#filters")) == 600


def test_a_rebuild_replaces_the_collection_atomically(tmp_path):
    uri = str(tmp_path / "r.db")
    x = np.random.default_rng(1).standard_normal((30, 8)).astype(np.float32)
    t = pd.DataFrame({"id": [f"a{i}" for i in range(30)], "label": 0, "source": ""})
    MB.build_milvus_index(x, t, uri, "g", progress=False)
    MB.build_milvus_index(x[:20], t.iloc[:20].assign(id=[f"b{i}" for i in range(20)]), uri, "g", progress=False)
    index = SearchIndex.load(f"milvus://{uri}#g")
    assert len(index) == 20 and index.search(x[3], 1)[0].id == "b3"
    assert len(MS.connect(uri).list_collections()) == 1  # the replaced collection is gone


# -- index parameters --------------------------------------------------------------------------------
def test_auto_picks_the_index_type_from_the_size_and_the_engine():
    assert MS.choose_milvus_index(50_000, local=True) == "FLAT"
    assert MS.choose_milvus_index(1_000_000, local=True) == "IVF_FLAT"
    assert MS.choose_milvus_index(1_000_000, local=False) == "HNSW"
    assert MS.choose_milvus_index(10 ** 9, local=False) == "DISKANN"
    assert MS.resolve_milvus_params("IVF_FLAT", 1_000_000, 256, None, True)["nlist"] == 4000
    assert MS.resolve_milvus_params("IVF_PQ", 10 ** 8, 256, None, False)["m"] == 128
    with pytest.raises(ValueError, match="'DISKANN' is not available on Milvus Lite"):
        MS.resolve_milvus_params("DISKANN", 10, 8, None, True)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['ef_search'\]"):
        MS.resolve_milvus_params("HNSW", 10, 8, {"ef_search": 3}, False)


def test_an_ivf_collection_is_calibrated_to_its_target_recall(tmp_path):
    x = np.random.default_rng(2).standard_normal((2000, 16)).astype(np.float32)
    t = pd.DataFrame({"id": [f"v{i}" for i in range(2000)], "label": 0, "source": ""})
    spec = MB.build_milvus_index(x, t, str(tmp_path / "ivf.db"), "ivf", kind="IVF_FLAT", params={"target_recall": 0.9},
                                progress=False)
    index = SearchIndex.load(spec)
    cal = index.info["calibration"]
    assert index.kind == "milvus IVF_FLAT" and index.params["nlist"] == 51 and cal["reached"]
    assert cal["tried"][-1][0] == index.params["nprobe"] and cal["tried"][-1][1] >= 0.9
    assert index.search(x[17], 1)[0].id == "v17"


# -- the CLI, the service --------------------------------------------------------------------------
def test_cli_builds_searches_and_moves_between_faiss_and_milvus(mfx, tmp_path, capsys):
    from galaxalign.cli import main

    uri = str(tmp_path / "cli.db")
    assert main(["index", "--backend", "milvus", "--embeddings", str(mfx["emb"]), "--uri", uri, "--collection", "c",
                 "--no-progress"]) == 0
    assert f"milvus FLAT index of 40 galaxies (dim {mfx['faiss'].dim}) -> milvus://{uri}#c" in capsys.readouterr().out
    gid = mfx["faiss"].table["id"].iloc[2]
    outs = []
    for index in (f"milvus://{uri}#c", str(mfx["faiss_dir"])):
        assert main(["search", "--index", index, "--id", gid, "-k", "5", "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert [r["id"] for r in outs[0]["results"]] == [r["id"] for r in outs[1]["results"]]
    assert outs[0]["results"][0]["answers"] == outs[1]["results"][0]["answers"]
    # faiss folder -> Milvus -> faiss folder: the same galaxies, vectors and catalog
    assert main(["index", "--backend", "milvus", "--from-index", str(mfx["faiss_dir"]), "--uri", uri,
                 "--collection", "moved", "--no-progress"]) == 0
    assert main(["index", "--from-index", f"milvus://{uri}#moved", "--out", str(tmp_path / "back"), "--no-progress"]) == 0
    capsys.readouterr()
    back = SearchIndex.load(tmp_path / "back")
    pd.testing.assert_frame_equal(back.table, mfx["faiss"].table, check_dtype=False)
    np.testing.assert_allclose(back.vectors(np.arange(40)), mfx["faiss"].vectors(np.arange(40)), atol=1e-6)
    assert back.checkpoint == mfx["faiss"].checkpoint
    # growth from the CLI: the same model's embeddings are refused as duplicates, by id
    assert main(["index", "--backend", "milvus", "--append", "--embeddings", str(mfx["emb"]), "--uri", uri,
                 "--collection", "c"]) == 1
    assert "is already in the index" in capsys.readouterr().err
    assert main(["search", "--index", f"milvus://{uri}#none", "--id", gid]) == 1
    assert "collection 'none'" in capsys.readouterr().err
    assert main(["index", "--backend", "milvus", "--embeddings", str(mfx["emb"])]) == 1
    assert "--uri is required" in capsys.readouterr().err
    assert main(["index", "--append", "--embeddings", str(mfx["emb"]), "--out", str(tmp_path / "x")]) == 1
    assert "--append is for --backend milvus" in capsys.readouterr().err


def test_the_service_runs_on_a_milvus_index(mfx):
    from fastapi.testclient import TestClient

    from galaxalign.serve import create_app

    gid = mfx["faiss"].table["id"].iloc[4]
    bodies = []
    for index in (mfx["spec"], mfx["faiss_dir"]):
        with TestClient(create_app(index, model=mfx["model"])) as c:
            assert c.app.state.searcher.inline_search == (index != mfx["spec"])  # Milvus: off the event loop
            info = c.get("/api/info").json()
            assert info["count"] == 40
            got = [c.get(f"/api/search/id/{gid}", params={"k": 5, "offset": 2}).json(),
                   c.get("/api/search/features", params={"answers": ",".join(FEATURES), "k": 6,
                                                         "where": "class=1,2,3,4,5,6"}).json(),
                   c.post("/api/search/text", json={"text": "a spiral", "k": 4}).json(),
                   c.post("/api/search/symbol", json={"answers": FEATURES[:2], "k": 4}).json(),
                   c.get("/api/catalog", params={"limit": 5}).json()]
            assert c.get(f"/api/thumb/{gid}.png").headers["content-type"] == "image/png"
            assert c.get(f"/api/galaxy/{gid}").json()["id"] == gid
            assert c.get("/api/search/id/nope").status_code == 404
            assert c.get(f"/api/search/id/{gid}", params={"where": "nope=1:2"}).status_code == 400
            bodies.append(got)
    strip = lambda b: [{k: v for k, v in r.items() if k not in ("row", "score")} for r in b.get("results", b.get("items", []))]  # noqa: E731
    for m, f in zip(*bodies):
        assert strip(m) == strip(f)
