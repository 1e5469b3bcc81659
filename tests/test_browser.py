"""The search page in a real browser: Debian's Chromium driven headless by Playwright.

Starts uvicorn on a free 127.0.0.1 port in a thread, loads the page, runs an image query, a symbol
query (composed by clicking Galaxy Zoo answers) and a catalog pick, checks the result grid, and
saves a screenshot; then, on an index embedded by a briefly trained model, composes a feature query
and checks that the top results carry its answers. Skips when /usr/bin/chromium or Playwright is missing.

The first test runs on the faiss index folder and on the same embeddings in a Milvus Lite collection.

Run as a script to make the docs screenshot:  python tests/test_browser.py docs/img/search_page.png
"""
from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(index_dir, checkpoint=None):
    """uvicorn on a free local port in a daemon thread; yields the base URL; stops it after."""
    import uvicorn

    from galaxalign.serve import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(index_dir, checkpoint), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium_page(width=1400, height=1000):
    sync_api = pytest.importorskip("playwright.sync_api") if "pytest" in sys.modules else __import__("playwright.sync_api").sync_api
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


def run_page_session(page, base_url: str, query_png: Path, shot: Path, shot_after: str = "symbol") -> dict:
    """Drive the page like a person would; return what the checks need."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base_url + "/")
    page.wait_for_function("document.querySelector('#info').textContent.includes('galaxies')")
    page.wait_for_function("document.querySelectorAll('#catalog-strip img').length > 0")

    # 1. image query: upload a galaxy image
    page.set_input_files("#image-file", str(query_png))
    page.click("#image-search")
    page.wait_for_function("document.querySelector('#results-title').textContent.startsWith('Nearest to image')")
    page.wait_for_selector("#grid .card")
    image_ids = page.eval_on_selector_all("#grid .card", "cards => cards.map(c => c.dataset.id)")
    image_labels = page.eval_on_selector_all("#grid .card .label", "els => els.map(e => e.textContent)")
    image_scores = page.eval_on_selector_all("#grid .card .score", "els => els.map(e => parseFloat(e.textContent))")
    if shot_after == "image":
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(shot), full_page=False)

    # 2. symbol query: answer the decision tree by clicking pictograms
    page.click("button[data-tab=symbols]")
    page.click("button[data-answer='smooth-or-featured_featured-or-disk']")
    page.wait_for_selector("[data-question=disk-edge-on]:not(.inactive)")
    page.click("button[data-answer='disk-edge-on_no']")
    page.click("button[data-answer='bar_yes']")
    preview = page.get_attribute("#symbol-preview", "src")
    page.wait_for_function("document.querySelector('#symbol-preview').complete && document.querySelector('#symbol-preview').naturalWidth > 0")
    page.click("#symbol-search")
    page.wait_for_function("document.querySelector('#results-title').textContent.startsWith('Matching features')")
    symbol_ids = page.eval_on_selector_all("#grid .card", "cards => cards.map(c => c.dataset.id)")
    thumbs_loaded = page.eval_on_selector_all(
        "#grid .card img", "imgs => Promise.all(imgs.map(i => i.decode().then(() => i.naturalWidth > 0, () => false)))")
    if shot_after == "symbol":
        page.screenshot(path=str(shot), full_page=False)

    # 3. pick a galaxy of the catalog strip
    page.click("button[data-tab=catalog]")
    page.click("#catalog-strip img >> nth=0")
    page.wait_for_function("document.querySelector('#results-title').textContent.startsWith('Neighbours of')")
    # 4. a bad upload shows the server's message, and the page keeps working
    page.click("button[data-tab=image]")
    bad = shot.with_name("bad.png")
    bad.write_bytes(b"not an image")
    page.set_input_files("#image-file", str(bad))
    page.click("#image-search")
    page.wait_for_selector("#status.error")
    status = page.text_content("#status")
    return {"image_ids": image_ids, "image_labels": image_labels, "image_scores": image_scores, "preview": preview,
            "symbol_ids": symbol_ids, "thumbs_loaded": thumbs_loaded, "error_status": status, "page_errors": errors}


def page_index(fx, backend: str, folder: Path):
    """The page's index: the faiss folder of ``fx``, or the same embeddings in a Milvus Lite collection."""
    if backend == "faiss":
        return fx["index"]
    pytest.importorskip("milvus_lite", reason="this platform has no Milvus Lite wheel")
    from galaxalign.search.milvus_build import build_milvus_from_embeddings

    return build_milvus_from_embeddings(fx["embeddings"], str(folder / "page.db"), "page", progress=False)


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_search_page_image_and_symbol_queries(fx, tmp_path, png_bytes, backend):
    pytest.importorskip("playwright.sync_api")
    from galaxalign.datasets import read_image

    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(read_image(fx["catalog"].iloc[33])))
    shot = tmp_path / "search_page.png"
    with serving(page_index(fx, backend, tmp_path)) as url, chromium_page() as page:
        seen = run_page_session(page, url, query, shot)
    assert seen["page_errors"] == []
    assert len(seen["image_ids"]) == 12 and seen["image_ids"][0] == "survey-33"
    assert seen["image_scores"][0] == pytest.approx(1.0, abs=1e-3)
    assert seen["image_labels"][0] == "In-between Round Smooth Galaxies"
    assert seen["preview"].endswith("smooth-or-featured_featured-or-disk%2Cdisk-edge-on_no%2Cbar_yes")
    assert len(seen["symbol_ids"]) == 12 and all(seen["thumbs_loaded"])
    assert "not an image file" in seen["error_status"]
    assert shot.stat().st_size > 10_000


# -- search by features on an index embedded by a trained model --------------------------------------
FEATURE_QUERY = ["smooth-or-featured_featured-or-disk", "disk-edge-on_no", "has-spiral-arms_yes",
                 "spiral-winding_tight", "spiral-arm-count_2"]


def build_trained_feature_index(root: Path, num: int = 240, size: int = 48, steps: int = 300) -> dict:
    """A rendered survey (true answers in its catalog), a model trained on it per galaxy by the repo's
    trainer (``answers.per_galaxy=true``; offline EfficientNet-Lite0 tower on the frozen-trunk feature
    cache at the cutouts' own 48 px, under a minute on two cores) and the exact index of its embeddings.

    Every galaxy is in the training or validation split, so the index embeds them from the feature
    cache the training filled (``use_cache=True``), not by a second pass of the trunk."""
    from galaxalign.datasets import load_catalog
    from galaxalign.inference import encode_images, load_model
    from galaxalign.search.embed import write_embedding_shards
    from galaxalign.search.build import build_index_from_embeddings
    from galaxalign.survey.generate import generate_survey
    from galaxalign.training import load_config, train

    survey = generate_survey(root / "survey.h5", num, size=size, seed=0, workers=0, progress=False)
    cfg = load_config("default", [f"data.source={survey}", "data.val_fraction=0.1", "data.test_fraction=0.0",
                                  "answers.per_galaxy=true", f"model.backbone.image_size={size}",
                                  f"recipe.steps={steps}", "tensorboard=false", "device=cpu",
                                  f"out={root / 'run'}"])
    result = train(cfg, progress=False)
    model, taxonomy = load_model(result.export_dir)
    catalog = load_catalog(survey, taxonomy)

    def embed(part, on_batch):
        out = encode_images(model, part.reset_index(drop=True), use_cache=True)
        on_batch(len(part))
        return out

    write_embedding_shards(catalog, root / "embeddings", embed, checkpoint=str(result.export_dir),
                           data_source=str(survey), taxonomy=taxonomy.to_dict(), progress=False)
    index = build_index_from_embeddings(root / "embeddings", root / "index", kind="exact", progress=False)
    return {"index": index, "model": result.export_dir, "taxonomy": taxonomy}


@pytest.fixture(scope="session")
def trained_feature_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained-features")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GALAXALIGN_CACHE", str(root / "cache"))  # the feature cache of this run only
        return build_trained_feature_index(root)


def compose_feature_query(page, base_url: str, answers: list[str], via: str | None = None) -> dict:
    """Click the answers on the symbol composer, search, and read the result cards."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base_url + "/")
    page.wait_for_function("document.querySelector('#info').textContent.includes('galaxies')")
    page.click("button[data-tab=symbols]")
    for a in answers:
        question = a.rsplit("_", 1)[0]
        page.wait_for_selector(f"[data-question={question}]:not(.inactive)")
        page.click(f"button[data-answer='{a}']")
    live_caption = page.text_content("#symbol-caption")
    if via is not None:
        page.select_option("#symbol-via", via)
    page.click("#symbol-search")
    page.wait_for_function("document.querySelector('#results-title').textContent.startsWith('Matching features')")
    page.wait_for_selector("#grid .card")
    cards = page.eval_on_selector_all("#grid .card", """cards => cards.map(c => ({
        id: c.dataset.id, matched: c.dataset.matched === undefined ? null : parseInt(c.dataset.matched),
        answers: (c.dataset.answers || '').split(',').filter(Boolean),
        highlighted: [...c.querySelectorAll('.feature.match')].map(f => f.dataset.answer),
        count: (c.querySelector('.matched') || {}).textContent}))""")
    return {"cards": cards, "live_caption": live_caption, "caption": page.text_content("#symbol-caption"),
            "title": page.text_content("#results-title"), "via": page.input_value("#symbol-via"), "page_errors": errors}


def test_symbol_composer_finds_galaxies_by_their_features(trained_feature_index):
    pytest.importorskip("playwright.sync_api")
    from galaxalign import answers as A
    from galaxalign.search.index import SearchIndex

    index = SearchIndex.load(trained_feature_index["index"])
    tree = trained_feature_index["taxonomy"].tree
    paths = {str(i): A.hard_answers(row, tree)
             for i, row in zip(index.table["id"], A.answer_matrix(index.table, trained_feature_index["taxonomy"]))}
    # what a random draw of the index scores: the mean fraction of the query's answers a galaxy has
    baseline = float(np.mean([A.relevance(FEATURE_QUERY, p, tree) for p in paths.values()]))
    with serving(trained_feature_index["index"]) as url, chromium_page() as page:
        seen = compose_feature_query(page, url, FEATURE_QUERY)
    assert seen["page_errors"] == [] and seen["via"] == "both"
    caption = A.caption(FEATURE_QUERY, tree)
    assert seen["caption"] == seen["live_caption"] == f"“{caption}”"
    assert caption == "galaxy with features or a disk, not edge-on, spiral arms, tightly wound arms, 2 spiral arms"
    cards = seen["cards"]
    assert len(cards) == 12
    for card in cards:  # each card shows its galaxy's true answers, the query's own highlighted
        assert tuple(card["answers"]) == paths[card["id"]]
        have = set(A.expand(paths[card["id"]], tree))
        assert card["highlighted"] == [a for a in paths[card["id"]] if a in FEATURE_QUERY]
        assert card["matched"] == sum(a in have for a in FEATURE_QUERY)
        assert card["count"] == f"{card['matched']}/{len(FEATURE_QUERY)} features"
    top5 = float(np.mean([c["matched"] / len(FEATURE_QUERY) for c in cards[:5]]))
    print(f"feature query top-5 mean fraction {top5:.3f}, random draw of the index {baseline:.3f}")
    assert top5 >= baseline + 0.25 and top5 >= 1.5 * baseline, (top5, baseline)


def docs_screenshot(page, base_url: str, query_png: Path, out: Path) -> None:
    """The docs picture: results of an image query, with the symbol composer open beside them."""
    page.goto(base_url + "/")
    page.wait_for_function("document.querySelectorAll('#catalog-strip img').length > 0")
    page.set_input_files("#image-file", str(query_png))
    page.click("#image-search")
    page.wait_for_selector("#grid .card")
    page.click("button[data-tab=symbols]")
    for answer in ("smooth-or-featured_featured-or-disk", "disk-edge-on_no", "bar_yes", "has-spiral-arms_yes"):
        page.click(f"button[data-answer='{answer}']")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)
    page.screenshot(path=str(out), full_page=False)


if __name__ == "__main__":
    # Docs screenshot: python tests/test_browser.py OUT.png [--index DIR --checkpoint CKPT --image FILE]
    import argparse
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--index")
    ap.add_argument("--checkpoint")
    ap.add_argument("--image", help="query image (default: a catalog galaxy)")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import build_search_fixture, png_bytes  # the test fixtures' builders, as a script

    from galaxalign.datasets import read_image
    from galaxalign.search.index import SearchIndex

    tmp = Path(tempfile.mkdtemp())
    index_dir = a.index or build_search_fixture(tmp)["index"]
    table = SearchIndex.load(index_dir).table
    query = Path(a.image) if a.image else tmp / "query.png"
    if not a.image:
        query.write_bytes(png_bytes(read_image(table.iloc[len(table) // 3])))
    with serving(index_dir, a.checkpoint) as url, chromium_page(1400, 900) as page:
        docs_screenshot(page, url, query, Path(a.out))
    print(f"wrote {a.out}")
