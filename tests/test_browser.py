"""The search page in a real browser: Debian's Chromium driven headless by Playwright.

Starts uvicorn on a free 127.0.0.1 port in a thread, loads the page, runs an image query, a symbol
query (composed by clicking Galaxy Zoo answers) and a catalog pick, checks the result grid, and
saves a screenshot. Skips when /usr/bin/chromium or Playwright is missing.

Run as a script to make the docs screenshot:  python tests/test_browser.py docs/img/search_page.png
"""
from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from pathlib import Path

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
    page.wait_for_function("document.querySelector('#results-title').textContent.startsWith('Matching symbols')")
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


def test_search_page_image_and_symbol_queries(fx, tmp_path, png_bytes):
    pytest.importorskip("playwright.sync_api")
    from galaxalign.datasets import read_image

    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(read_image(fx["catalog"].iloc[33])))
    shot = tmp_path / "search_page.png"
    with serving(fx["index"]) as url, chromium_page() as page:
        seen = run_page_session(page, url, query, shot)
    assert seen["page_errors"] == []
    assert len(seen["image_ids"]) == 12 and seen["image_ids"][0] == "survey-33"
    assert seen["image_scores"][0] == pytest.approx(1.0, abs=1e-3)
    assert seen["image_labels"][0] == "In-between Round Smooth Galaxies"
    assert seen["preview"].endswith("smooth-or-featured_featured-or-disk%2Cdisk-edge-on_no%2Cbar_yes")
    assert len(seen["symbol_ids"]) == 12 and all(seen["thumbs_loaded"])
    assert "not an image file" in seen["error_status"]
    assert shot.stat().st_size > 10_000


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
