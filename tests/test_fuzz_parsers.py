"""Generated property tests (hypothesis) for the parsers users feed files and strings to: the catalog
CSV reader, catalog filters (``where=``), feature lists (Galaxy Zoo answer ids), training-config
overrides and the image decoder (uploads, catalog files: PNG/JPEG/TIFF/..., FITS, gzip).

The property everywhere: any input gives either a result that is right or the parser's own error
(a ValueError subclass whose message says what is wrong) -- never another exception. Where the
right result is known (well-formed input), it is checked. Example counts are bounded so the file
runs in seconds.
"""
from __future__ import annotations

import csv
import gzip
import io
import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

# OUR CHOICE: 60-120 generated cases per property (seconds each); derandomized so a run is repeatable.
FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# text with the characters that break parsers: delimiters, quotes, newlines, NUL, BOM, zero-width,
# surrogates, right-to-left marks, non-ASCII digits
nasty_text = st.text(st.one_of(st.sampled_from(list(',;:=\t\r\n"\'\x00\ufeff\u200b\u202e٣-.eE ')),
                               st.characters(codec="utf-8"), st.characters()), max_size=30)


# -- catalog CSV -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def taxonomy():
    from galaxalign.taxonomy import load_taxonomy

    return load_taxonomy("galaxy10_decals")


@FUZZ
@given(data=st.binary(max_size=400) | nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(data=b"~nosuchuser/a.png,1,0.1\n")  # found by this test: a RuntimeError from Path.expanduser
def test_any_bytes_as_a_catalog_csv_give_a_catalog_or_an_error_naming_the_file(tmp_path_factory, taxonomy, data):
    from galaxalign.datasets import load_catalog

    path = tmp_path_factory.mktemp("csv") / "cat.csv"
    path.write_bytes(b"filepath,label,redshift\n" + data)
    try:
        catalog = load_catalog(path, taxonomy, check_images=False)
    except ValueError as exc:
        assert str(path) in str(exc), exc
        return
    assert {"id", "label", "file_loc"} <= set(catalog.columns) and len(catalog) >= 1
    assert catalog["label"].between(-1, taxonomy.num_classes - 1).all()


csv_cell = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
                   max_size=12).map(str.strip).filter(bool)


@FUZZ
@given(rows=st.lists(st.tuples(csv_cell.filter(lambda c: not c.startswith("~")), st.integers(-1, 9), csv_cell),
                     min_size=1, max_size=8,
                     unique_by=lambda r: r[0]))
def test_a_well_formed_csv_reads_back_exactly(tmp_path_factory, taxonomy, rows):
    """Any cell text (quotes, commas, non-ASCII) written by a CSV writer comes back as written."""
    from galaxalign.datasets import load_catalog

    folder = tmp_path_factory.mktemp("csv")
    path = folder / "cat.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "label", "note"])
        writer.writerows([(name, label if label >= 0 else "", note) for name, label, note in rows])
    catalog = load_catalog(path, taxonomy, check_images=False)
    assert list(catalog["id"]) == [name for name, _, _ in rows]
    assert list(catalog["label"]) == [label for _, label, _ in rows]
    notes = pd.Series([n for _, _, n in rows])
    try:  # metadata columns that are all numbers are read as numbers
        notes = pd.to_numeric(notes)
    except (ValueError, TypeError):
        pass
    assert [str(v) for v in catalog["note"]] == [str(v) for v in notes]


@FUZZ
@given(rows=st.lists(st.lists(csv_cell, min_size=1, max_size=5), min_size=1, max_size=6))
def test_rows_of_the_wrong_width_are_refused_naming_the_line(tmp_path_factory, taxonomy, rows):
    from galaxalign.datasets import load_catalog
    from galaxalign.datasets.catalog import CatalogError

    assume(any(len(r) != 3 for r in rows))
    path = tmp_path_factory.mktemp("csv") / "cat.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filepath", "label", "note"])
        writer.writerows(rows)
    with pytest.raises(CatalogError) as exc:
        load_catalog(path, taxonomy, check_images=False)
    message = str(exc.value)
    assert str(path) in message and ("cells but the header has 3 columns" in message or "line" in message), message


# -- filters (where=) --------------------------------------------------------------------------------
TABLE = pd.DataFrame({"id": [f"g{i}" for i in range(40)], "label": np.arange(40) % 10,
                      "redshift": np.linspace(0.0, 0.39, 40), "ra": np.linspace(0, 359, 40),
                      "dec": np.linspace(-80, 80, 40), "name": [f"n{i}" for i in range(40)]})
CLASSES = [f"class {i}" for i in range(10)]


def check_filter(spec):
    from galaxalign.search.filters import FilterError, parse_filter

    try:
        f = parse_filter(spec)
        return None if f is None else f.mask(TABLE, CLASSES)
    except FilterError as exc:
        assert str(exc), "an error must say what is wrong"
        return exc


@FUZZ
@given(text=st.one_of(nasty_text, st.lists(st.tuples(st.sampled_from(["redshift", "ra", "class", "cone", "name", "x", ""]),
                                                        nasty_text), max_size=4)
                      .map(lambda parts: ";".join(f"{k}={v}" for k, v in parts))))
def test_any_filter_text_gives_a_row_mask_or_a_filter_error(text):
    result = check_filter(text)
    if isinstance(result, np.ndarray):
        assert result.dtype == bool and result.shape == (len(TABLE),)


@FUZZ
@given(spec=st.dictionaries(st.sampled_from(["ranges", "classes", "cone", "other"]),
                            st.one_of(st.none(), st.integers(), st.floats(), nasty_text,
                                      st.lists(st.one_of(st.integers(), st.floats(), nasty_text), max_size=4),
                                      st.dictionaries(nasty_text, st.one_of(st.integers(), st.lists(st.floats(), max_size=3)),
                                                      max_size=2)),
                            max_size=3))
# found by this test: a TypeError, AttributeError or bare ValueError instead of a FilterError
@example(spec={"ranges": {"redshift": 5}})
@example(spec={"ranges": 3})
@example(spec={"cone": ":"})
def test_any_filter_mapping_gives_a_row_mask_or_a_filter_error(spec):
    result = check_filter(spec)
    if isinstance(result, np.ndarray):
        assert result.shape == (len(TABLE),)


@FUZZ
@given(lo=st.one_of(st.none(), st.floats(-1, 1, allow_nan=False)), hi=st.one_of(st.none(), st.floats(-1, 1, allow_nan=False)),
       classes=st.one_of(st.none(), st.lists(st.integers(0, 9), min_size=1, max_size=3)))
def test_a_range_and_class_filter_keeps_exactly_the_matching_rows(lo, hi, classes):
    text = f"redshift={'' if lo is None else repr(lo)}:{'' if hi is None else repr(hi)}"
    if classes:
        text += ";class=" + ",".join(CLASSES[c] if c % 2 else str(c) for c in classes)
    result = check_filter(text)
    lo_, hi_ = (-np.inf if lo is None else lo), (np.inf if hi is None else hi)
    if lo_ > hi_:
        assert isinstance(result, Exception) and "is above max" in str(result)
        return
    z = TABLE["redshift"].to_numpy()
    expected = (z >= lo_) & (z <= hi_) & (np.isin(TABLE["label"], classes) if classes else True)
    np.testing.assert_array_equal(result, expected)


# -- feature lists (Galaxy Zoo answer ids) ------------------------------------------------------------
@pytest.fixture(scope="module")
def tree():
    from galaxalign.taxonomy import decision_tree

    return decision_tree()


@FUZZ
@given(text=nasty_text)
def test_any_feature_list_text_parses_or_is_a_query_error(tree, text):
    from galaxalign.search.query import QueryError, parse_answers

    try:
        parsed = parse_answers(text)
    except QueryError as exc:
        assert str(exc)
        return
    assert parsed and all(a in tree.answers for a in parsed)


@FUZZ
@given(data=st.data())
def test_a_consistent_feature_list_round_trips_in_order_without_duplicates(tree, data):
    from galaxalign.search.query import parse_answers

    questions = data.draw(st.lists(st.sampled_from(tree.questions), min_size=1, max_size=5, unique_by=lambda q: q.key))
    answers = [data.draw(st.sampled_from(q.answers)).id for q in questions]
    repeated = answers + data.draw(st.lists(st.sampled_from(answers), max_size=3))
    text = ",".join(f"{data.draw(st.sampled_from(['', ' ', '  ']))}{a}" for a in repeated) + data.draw(st.sampled_from(["", ",", " ,"]))
    assert parse_answers(text) == tuple(answers)


# -- training-config overrides -------------------------------------------------------------------------
KEYS = ["method", "stages", "data.num", "data.val_fraction", "data.skip_bad", "stage1.lr", "stage1.epochs",
        "batch_size", "device", "amp", "model.backbone", "model.tta", "seed", "out", "nope", "data", "stage1.lrr"]


@settings(FUZZ, max_examples=200)
@given(items=st.lists(st.tuples(st.sampled_from(KEYS) | nasty_text,
                                nasty_text | st.sampled_from(["1", "-1", "0", "1e400", "nan", ".inf", "[1, 2]", "{a: 1}",
                                                              "yes", "null", "'x'", "[", "{kind: tiny}", "!!python/none"])),
                      min_size=1, max_size=3))
# found by this test: OverflowError, TypeError or a bare ValueError from pinning the recipe's epochs
@example(items=[("stage1.epochs", ".inf")])
@example(items=[("stage2.epochs", "[1, 2]")])
@example(items=[("stage1.epochs", ";")])
def test_any_override_gives_a_valid_config_or_a_config_error(items):
    from galaxalign.training import load_config
    from galaxalign.training.config import ConfigError

    overrides = [f"{k}={v}" for k, v in items]
    try:
        cfg = load_config(None, overrides)
    except ConfigError as exc:
        assert str(exc), "an error must say what is wrong"
        return
    assert isinstance(cfg, dict) and cfg["batch_size"] > 0 and isinstance(cfg["stage1"]["lr"], (int, float))


@FUZZ
@given(num=st.integers(1, 10**6), lr=st.floats(1e-8, 1.0), seed=st.integers(-(2**31), 2**31))
def test_numeric_overrides_read_back_as_numbers(num, lr, seed):
    from galaxalign.training import load_config

    cfg = load_config(None, [f"data.num={num}", f"stage1.lr={lr!r}", f"seed={seed}"])
    assert (cfg["data"]["num"], cfg["stage1"]["lr"], cfg["seed"]) == (num, lr, seed)


# -- the image decoder (uploads and catalog files) -----------------------------------------------------
MODES = {"PNG": ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"], "JPEG": ["L", "RGB", "CMYK"], "GIF": ["P", "L"],
         "TIFF": ["1", "L", "RGB", "RGBA", "F", "I;16", "CMYK"], "WEBP": ["RGB", "RGBA"], "BMP": ["1", "L", "P", "RGB"]}


@st.composite
def pictures(draw) -> bytes:
    from PIL import Image

    fmt = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if mode == "F":
        arr = rng.normal(0, 1e3, (h, w)).astype(np.float32)
        arr[rng.random((h, w)) < draw(st.sampled_from([0.0, 0.1, 1.0]))] = np.nan
        img = Image.fromarray(arr, "F")
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16)).convert(mode)
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode this Pillow cannot write in this format
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def fits_files(draw) -> bytes:
    from astropy.io import fits

    shape = tuple(draw(st.lists(st.integers(1, 30), min_size=1, max_size=4)))
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.int32, np.float32, np.float64]))
    data = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).normal(0, 100, shape).astype(dtype)
    if np.issubdtype(dtype, np.floating) and draw(st.booleans()):
        data.flat[:: draw(st.integers(1, 5))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    buf = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buf)
    return buf.getvalue()


@st.composite
def damaged(draw, files) -> bytes:
    """A file cut short, with bytes overwritten, or gzipped."""
    data = bytearray(draw(files))
    how = draw(st.sampled_from(["whole", "cut", "flip", "gzip"]))
    if how == "cut":
        return bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if how == "gzip":
        return gzip.compress(bytes(data))
    return bytes(data)


uploads = st.one_of(damaged(pictures()), damaged(fits_files()), st.binary(max_size=2000),
                    st.binary(max_size=500).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
                    st.binary(max_size=500).map(lambda b: b"SIMPLE  =" + b),
                    st.binary(max_size=500).map(lambda b: gzip.compress(b"SIMPLE  =" + b)))


@settings(FUZZ, max_examples=120)
@given(data=uploads, name=st.sampled_from(["x.png", "x.fits", "x.fits.gz", "x", "up load.jpg"]))
def test_any_upload_decodes_to_an_rgb_image_or_an_image_read_error(data, name):
    from galaxalign.datasets.images import ImageReadError, decode_image

    try:
        image = decode_image(data, name, max_pixels=200_000, max_gunzip_bytes=2_000_000)
    except ImageReadError as exc:
        assert str(exc).startswith(name), exc
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= 200_000
