"""The search HTTP API: every endpoint on a real (tiny) model and index, and every bad input -> 4xx JSON."""
from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from galaxalign.datasets import read_image
from galaxalign.taxonomy import decision_tree

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UPLOAD_LIMIT = 200_000


@pytest.fixture(scope="module")
def client(fx):
    from galaxalign.serve import create_app

    app = create_app(fx["index"], max_upload_bytes=UPLOAD_LIMIT)
    with TestClient(app) as c:
        yield c


def image_of(fx, row: int) -> np.ndarray:
    return read_image(fx["catalog"].iloc[row])


# -- what works ------------------------------------------------------------------------------------
def test_info_describes_the_index(client, fx):
    info = client.get("/api/info").json()
    assert info["count"] == 60 and info["dim"] == 32 and info["kind"] == "exact"
    assert info["checkpoint"] == fx["model"].name and len(info["classes"]) == 10  # a name, not a server path
    assert info["limits"]["max_upload_bytes"] == UPLOAD_LIMIT


def test_symbols_lists_the_decision_tree_with_icon_urls(client):
    data = client.get("/api/symbols").json()
    tree = decision_tree()
    assert [q["key"] for q in data["questions"]] == [q.key for q in tree.questions]
    first = data["questions"][0]["answers"][0]
    assert first["id"] == "smooth-or-featured_smooth" and first["icon_url"] == "/api/symbol.png?answers=smooth-or-featured_smooth"
    icon = client.get(first["icon_url"])
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png" and icon.content.startswith(PNG_MAGIC)


def test_symbol_png_composes_answers(client):
    one = client.get("/api/symbol.png", params={"answers": "smooth-or-featured_featured-or-disk", "size": 64})
    two = client.get("/api/symbol.png", params={"answers": "smooth-or-featured_featured-or-disk,disk-edge-on_no,bar_yes", "size": 64})
    assert one.status_code == two.status_code == 200
    assert Image.open(io.BytesIO(two.content)).size == (64, 64)
    assert one.content != two.content  # the bar changes the pictogram


def test_thumbnail_comes_from_the_catalog_by_id(client, fx):
    r = client.get("/api/thumb/survey-7.png")
    assert r.status_code == 200 and r.content.startswith(PNG_MAGIC)
    thumb = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert thumb.shape == image_of(fx, 7).shape  # 48 px survey images stay at their size
    np.testing.assert_array_equal(thumb, image_of(fx, 7))


def test_catalog_pages_and_samples(client):
    page = client.get("/api/catalog", params={"offset": 10, "limit": 5}).json()
    assert page["total"] == 60 and [i["id"] for i in page["items"]] == [f"survey-{i}" for i in range(10, 15)]
    sample = client.get("/api/catalog", params={"random": True, "limit": 8, "seed": 1}).json()
    assert len({i["id"] for i in sample["items"]}) == 8
    barred = client.get("/api/catalog", params={"label": 5, "limit": 50}).json()
    assert barred["total"] == 6 and {i["label_name"] for i in barred["items"]} == {"Barred Spiral Galaxies"}


def test_image_search_finds_the_uploaded_galaxy_first(client, fx, png_bytes):
    r = client.post("/api/search/image", params={"k": 5}, files={"file": ("g12.png", png_bytes(image_of(fx, 12)), "image/png")})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 5 and results[0]["id"] == "survey-12"
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert results[0]["thumb_url"] == "/api/thumb/survey-12.png" and results[0]["label_name"] == "Round Smooth Galaxies"


def test_id_search_returns_neighbours_without_the_galaxy_itself(client):
    results = client.get("/api/search/id/survey-3", params={"k": 4}).json()["results"]
    assert len(results) == 4 and "survey-3" not in [h["id"] for h in results]
    assert [h["rank"] for h in results] == [1, 2, 3, 4]
    assert all(a["score"] >= b["score"] for a, b in zip(results, results[1:]))


def test_text_symbol_and_sketch_searches_return_ranked_results(client, png_bytes):
    text = client.post("/api/search/text", json={"text": "a barred spiral galaxy", "k": 3})
    symbol = client.post("/api/search/symbol", json={"answers": ["smooth-or-featured_smooth", "how-rounded_round"], "k": 3})
    sketch_image = np.zeros((64, 64, 3), np.uint8)
    sketch_image[28:36, 8:56] = 255  # a bar
    sketch = client.post("/api/search/sketch", params={"k": 3}, files={"file": ("bar.png", png_bytes(sketch_image), "image/png")})
    for r in (text, symbol, sketch):
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 3
    assert symbol.json()["query"] == {"answers": ["smooth-or-featured_smooth", "how-rounded_round"]}


def test_page_and_openapi_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "GalaxAlign search" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search/image", "/api/search/text", "/api/search/symbol", "/api/search/sketch"} <= set(paths)


# -- bad input: a 4xx with a JSON message, and the server keeps serving ----------------------------
def check_error(r, status: int, words: str):
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_upload_over_the_size_limit_is_413(client):
    big = b"\x00" * (UPLOAD_LIMIT + 100_000)
    check_error(client.post("/api/search/image", files={"file": ("big.png", big, "image/png")}), 413, "upload limit")


def test_upload_just_over_the_limit_without_header_check_is_413(client):
    # Small enough to pass the Content-Length screen (which allows the multipart envelope), still too big.
    data = b"\x00" * (UPLOAD_LIMIT + 10)
    check_error(client.post("/api/search/sketch", files={"file": ("big.png", data, "image/png")}), 413, "upload limit")


def test_a_file_that_is_not_an_image_is_400(client):
    r = client.post("/api/search/image", files={"file": ("notes.txt", b"hello, not a galaxy", "text/plain")})
    check_error(r, 400, "notes.txt: not an image file")


def test_an_empty_file_is_400(client):
    check_error(client.post("/api/search/image", files={"file": ("e.png", b"", "image/png")}), 400, "empty file")


def test_a_truncated_image_is_400(client, fx, png_bytes):
    data = png_bytes(image_of(fx, 1))
    check_error(client.post("/api/search/image", files={"file": ("cut.png", data[: len(data) // 2], "image/png")}), 400, "cut.png")


def test_a_decompression_bomb_is_refused_before_decoding(client):
    bomb = io.BytesIO()
    Image.new("1", (6000, 5000)).save(bomb, format="PNG")  # 3.7 kB on disk, 30 megapixels decoded
    r = client.post("/api/search/image", files={"file": ("bomb.png", bomb.getvalue(), "image/png")})
    check_error(r, 400, "6000x5000 = 30000000 pixels, above the limit")


def test_unknown_ids_are_404(client):
    check_error(client.get("/api/search/id/no-such-galaxy"), 404, "unknown galaxy id 'no-such-galaxy'")
    check_error(client.get("/api/thumb/no-such-galaxy.png"), 404, "unknown galaxy id")
    check_error(client.get("/api/galaxy/no-such-galaxy"), 404, "unknown galaxy id")


def test_thumbnails_never_open_client_paths(client):
    for attempt in ("..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "survey.h5%230"):
        r = client.get(f"/api/thumb/{attempt}.png")
        assert r.status_code == 404 and "root:" not in r.text


def test_empty_queries_are_400(client):
    check_error(client.post("/api/search/text", json={"text": "   "}), 400, "empty description")
    check_error(client.post("/api/search/symbol", json={"answers": []}), 400, "no Galaxy Zoo answers")
    check_error(client.get("/api/symbol.png", params={"answers": ""}), 400, "no Galaxy Zoo answers")


def test_unknown_symbol_answers_are_400(client):
    r = client.post("/api/search/symbol", json={"answers": ["smooth-or-featured_smooth", "bar_maybe"]})
    check_error(r, 400, "unknown Galaxy Zoo answer(s) ['bar_maybe']")
    check_error(client.get("/api/symbol.png", params={"answers": "nope"}), 400, "unknown Galaxy Zoo answer")


def test_two_answers_to_one_question_are_400(client):
    r = client.post("/api/search/symbol", json={"answers": ["bar_yes", "bar_no"]})
    check_error(r, 400, "both answer question 'bar'")


def test_malformed_requests_are_422(client):
    assert client.get("/api/search/id/survey-1", params={"k": 0}).status_code == 422
    assert client.get("/api/search/id/survey-1", params={"k": 1000}).status_code == 422
    assert client.post("/api/search/text", json={"k": 3}).status_code == 422
    assert client.post("/api/search/image").status_code == 422
    assert "detail" in client.post("/api/search/text", content=b"{not json", headers={"content-type": "application/json"}).json()


def test_server_keeps_serving_after_bad_input(client):
    client.post("/api/search/image", files={"file": ("x.txt", b"junk", "text/plain")})
    client.get("/api/search/id/nope")
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/search/id/survey-2").status_code == 200


def test_a_chunked_upload_without_length_is_cut_off_at_the_limit(client):
    def endless():
        for _ in range(100):
            yield b"\x00" * 10_000  # 1 MB in total, never announced

    r = client.post("/api/search/image", content=endless(),
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    check_error(r, 413, "over the upload limit")
