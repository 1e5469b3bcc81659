"""Schematic symbols: composition rules, measurable shape differences, augmentation, sheet and CLI."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import yaml
from PIL import Image

from galaxalign.symbols import (
    SymbolError,
    book_from_dict,
    class_symbol_bank,
    compose_symbol,
    render_class_symbol,
    render_symbol,
    symbol_book,
    symbol_sheet,
)
from galaxalign.taxonomy import decision_tree, list_taxonomies, load_taxonomy

SIZE = 96


def light(answers, size=SIZE, **kw) -> np.ndarray:
    """Symbol brightness in 0..1 above the dark background."""
    img = render_symbol(answers, size=size, **kw).astype(np.float64).mean(axis=2)
    return (img - img.min()) / 255.0


def coords(size=SIZE):
    u = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(u, -u)   # canvas units, y up


def moment_axis_ratio(img: np.ndarray) -> float:
    """Minor/major axis ratio from the light-weighted second moments."""
    y, x = np.indices(img.shape, dtype=np.float64)
    w = img / img.sum()
    cx, cy = (w * x).sum(), (w * y).sum()
    cov = np.array([[(w * (x - cx) ** 2).sum(), (w * (x - cx) * (y - cy)).sum()],
                    [(w * (x - cx) * (y - cy)).sum(), (w * (y - cy) ** 2).sum()]])
    lo, hi = np.linalg.eigvalsh(cov)
    return float(np.sqrt(lo / hi))


def arm_crossings(img: np.ndarray, r0=0.2, r1=0.6, n_rays=24) -> float:
    """Mean number of spiral-arm crossings (runs clearly above the disk's level) along radial rays."""
    size = img.shape[0]
    counts = []
    for a in np.linspace(0, 2 * np.pi, n_rays, endpoint=False):
        r = np.linspace(r0, r1, 200)
        col = ((r * np.cos(a) + 1) / 2 * size - 0.5).round().astype(int)
        row = ((1 - r * np.sin(a)) / 2 * size - 0.5).round().astype(int)
        prof = img[row, col]
        above = prof > np.percentile(prof, 10) + 0.2
        counts.append(int(above[0]) + int((above[1:] & ~above[:-1]).sum()))
    return float(np.mean(counts))


# --- knowledge ------------------------------------------------------------------------------

def test_every_decision_tree_answer_has_a_drawing():
    missing = sorted(set(decision_tree().answers) - set(symbol_book().answers))
    assert missing == []


@pytest.mark.parametrize("name", list_taxonomies())
def test_every_symbol_of_shipped_taxonomies_renders(name):
    tax = load_taxonomy(name)
    for spec in tax.classes:
        for k in range(len(spec.symbols)):
            img = render_class_symbol(spec, size=48, variant=k)
            assert img.shape == (48, 48, 3) and img.dtype == np.uint8
            assert img.max() > 200, f"{spec.name} alt {k} is blank"


def test_every_single_answer_renders_something_bright_on_dark():
    for answer in decision_tree().answers:
        img = render_symbol([answer], size=48)
        assert img[0, 0].max() < 40, answer                     # dark corner
        assert img.max() > 80, answer                           # a light shape (a bare disk is faint)
        assert (img.max(axis=2) > 60).mean() > 0.02, answer


# --- composition ----------------------------------------------------------------------------

def test_composition_does_not_depend_on_order():
    answers = ["disk-edge-on_no", "bar_yes", "has-spiral-arms_yes", "spiral-winding_tight", "spiral-arm-count_3"]
    ref = render_symbol(answers, size=64)
    for perm in itertools.islice(itertools.permutations(answers), 0, 120, 17):
        assert np.array_equal(render_symbol(list(perm), size=64), ref)


def test_more_specific_answers_set_primitive_parameters():
    # The values are data (symbols.yaml, which users edit): what is tested is that the deeper answer's
    # value wins over the primitive's default and over its parents', whatever the numbers are.
    book = symbol_book()
    plan = compose_symbol(["disk-edge-on_no", "has-spiral-arms_yes", "spiral-winding_tight", "spiral-arm-count_3", "bulge-size_dominant"])
    assert plan.base == "disk"
    assert plan.params["spiral"]["arms"] == book.answers["spiral-arm-count_3"]["spiral"]["arms"] != book.primitives["spiral"]["arms"]
    assert plan.params["spiral"]["pitch_deg"] == book.answers["spiral-winding_tight"]["spiral"]["pitch_deg"]
    loose = compose_symbol(["spiral-winding_loose"]).params["spiral"]["pitch_deg"]
    assert plan.params["spiral"]["pitch_deg"] < loose   # tight arms are wound tighter than loose ones
    assert plan.params["bulge"]["radius"] == book.answers["bulge-size_dominant"]["bulge"]["radius"]
    assert plan.params["bulge"]["radius"] > compose_symbol(["disk-edge-on_no"]).params["bulge"]["radius"]
    assert compose_symbol(["smooth-or-featured_featured-or-disk", "disk-edge-on_yes"]).base == "edge_on"
    cigar = compose_symbol(["how-rounded_cigar"]).params["ellipse"]["axis_ratio"]
    assert cigar == book.answers["how-rounded_cigar"]["ellipse"]["axis_ratio"] < compose_symbol(["how-rounded_round"]).params["ellipse"]["axis_ratio"]


def test_an_answer_implies_its_parents():
    # spiral-winding_tight requires has-spiral-arms_yes, which requires a face-on disk.
    assert np.array_equal(
        render_symbol(["spiral-winding_tight"], size=64),
        render_symbol(["smooth-or-featured_featured-or-disk", "disk-edge-on_no", "has-spiral-arms_yes", "spiral-winding_tight"], size=64),
    )


def test_contradicting_answers_raise_naming_them():
    with pytest.raises(ValueError, match="how-rounded_cigar.*has-spiral-arms_yes|has-spiral-arms_yes.*how-rounded_cigar"):
        render_symbol(["how-rounded_cigar", "has-spiral-arms_yes"])
    with pytest.raises(ValueError, match="spiral-winding_loose.*spiral-winding_tight|spiral-winding_tight.*spiral-winding_loose"):
        render_symbol(["spiral-winding_tight", "spiral-winding_loose"])


def test_unknown_answer_raises_a_clear_error():
    with pytest.raises(SymbolError, match="unknown answer 'how-rounded_sqaure'"):
        render_symbol(["how-rounded_sqaure"])
    with pytest.raises(SymbolError, match="non-empty"):
        render_symbol([])


def test_neither_contributes_nothing():
    assert np.array_equal(light(["bar_yes", "merging_neither", "something-odd_no"]), light(["bar_yes"]))


# --- measurable shapes ------------------------------------------------------------------------

def test_cigar_is_much_flatter_than_round():
    round_q = moment_axis_ratio(light(["how-rounded_round"]))
    between_q = moment_axis_ratio(light(["how-rounded_in-between"]))
    cigar_q = moment_axis_ratio(light(["how-rounded_cigar"]))
    assert round_q > 0.95
    assert cigar_q < 0.35 and cigar_q < 0.5 * round_q
    assert cigar_q < between_q < round_q


def test_tight_arms_cross_a_radius_more_often_than_loose_arms():
    tight = arm_crossings(light(["spiral-winding_tight", "bulge-size_no"], size=160))
    medium = arm_crossings(light(["spiral-winding_medium", "bulge-size_no"], size=160))
    loose = arm_crossings(light(["spiral-winding_loose", "bulge-size_no"], size=160))
    assert tight > medium > loose
    assert tight >= 2.0 and loose <= 1.0
    diff = np.abs(light(["spiral-winding_tight"]) - light(["spiral-winding_loose"])).mean()
    assert diff > 0.05


def test_arm_count_changes_crossings():
    one = arm_crossings(light(["spiral-arm-count_1", "bulge-size_no"], size=160))
    four = arm_crossings(light(["spiral-arm-count_4", "bulge-size_no"], size=160))
    assert four > 2 * one


def test_bar_adds_light_along_its_axis():
    x, y = coords()
    along = (np.abs(y) < 0.04) & (np.abs(x) > 0.15) & (np.abs(x) < 0.28)
    across = (np.abs(x) < 0.04) & (np.abs(y) > 0.15) & (np.abs(y) < 0.28)
    barred, plain = light(["disk-edge-on_no", "bar_yes"]), light(["disk-edge-on_no", "bar_no"])
    assert barred[along].mean() - plain[along].mean() > 0.4
    assert abs(barred[across].mean() - plain[across].mean()) < 0.05


def test_bigger_bulge_means_more_central_light():
    x, y = coords()
    centre = np.hypot(x, y) < 0.3
    flux = [light(["disk-edge-on_no", f"bulge-size_{k}"])[centre].sum() for k in ("no", "just-noticeable", "obvious", "dominant")]
    assert all(b > a * 1.1 for a, b in zip(flux, flux[1:])), flux


def test_edge_on_bulge_shapes():
    x, y = coords()
    above_centre = (np.abs(x) < 0.08) & (y > 0.1) & (y < 0.16)
    none = light(["bulge-shape_no-bulge"])[above_centre].mean()
    rounded = light(["bulge-shape_round"])[above_centre].mean()
    assert none < 0.05 and rounded > 0.15
    assert np.abs(light(["bulge-shape_boxy"]) - light(["bulge-shape_round"])).sum() > 20


def test_ring_puts_light_on_a_circle():
    x, y = coords()
    radius = compose_symbol(["odd-feature_ring"]).params["ring"]["radius"]   # as symbols.yaml sets it
    on_ring = np.abs(np.hypot(x, y) - radius) < 0.03
    assert light(["odd-feature_ring"])[on_ring].mean() - light(["something-odd_no"])[on_ring].mean() > 0.4


# --- augmentation -----------------------------------------------------------------------------

def test_same_seed_same_pixels_different_seed_different_variant():
    answers = ["bar_yes", "spiral-winding_medium"]
    a = render_symbol(answers, size=64, seed=3, augment=True)
    assert np.array_equal(a, render_symbol(answers, size=64, seed=3, augment=True))
    b = render_symbol(answers, size=64, seed=4, augment=True)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 2
    clean = render_symbol(answers, size=64)
    assert np.array_equal(clean, render_symbol(answers, size=64, seed=99))   # seed unused when clean
    assert not np.array_equal(clean, a)


def test_augmentation_keeps_the_class_meaning():
    for seed in range(6):
        cigar = moment_axis_ratio(light(["how-rounded_cigar"], seed=seed, augment=True))
        round_ = moment_axis_ratio(light(["how-rounded_round"], seed=seed, augment=True))
        assert cigar < 0.4 < 0.85 < round_


def test_class_symbol_bank_layout_and_reproducibility():
    tax = load_taxonomy("galaxy10_decals")
    images, ids = class_symbol_bank(tax, size=32, n_variants=3, seed=7)
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.uint8
    assert ids.dtype == np.int64 and ids.tolist() == [c for c in range(10) for _ in range(3)]
    # variant 0 of each class is the clean canonical symbol
    for c in range(10):
        assert np.array_equal(images[3 * c], render_class_symbol(tax.by_id(c), size=32))
    again, _ = class_symbol_bank(tax, size=32, n_variants=3, seed=7)
    assert np.array_equal(images, again)
    other, _ = class_symbol_bank(tax, size=32, n_variants=3, seed=8)
    assert np.array_equal(images[::3], other[::3]) and not np.array_equal(images, other)


# --- user files -------------------------------------------------------------------------------

def test_user_taxonomy_file_with_new_classes(tmp_path):
    path = tmp_path / "rings.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rings",
        "classes": [
            {"name": "ringed", "text_labels": ["galaxy with a ring"], "answers": ["something-odd_yes", "odd-feature_ring"]},
            {"name": "no ring", "text_labels": ["galaxy without a ring"], "answers": ["something-odd_no"]},
        ],
    }))
    images, ids = class_symbol_bank(str(path), size=64, n_variants=2, seed=0)
    assert images.shape == (4, 64, 64, 3) and ids.tolist() == [0, 0, 1, 1]
    x, y = np.meshgrid(np.linspace(-1, 1, 64), -np.linspace(-1, 1, 64))
    on_ring = np.abs(np.hypot(x, y) - 0.58) < 0.04
    assert images[0].mean(axis=2)[on_ring].mean() > images[2].mean(axis=2)[on_ring].mean() + 60
    out = symbol_sheet(str(path), tmp_path / "sheet.png", size=48)
    assert Image.open(out).size[0] > 100


def test_user_symbols_yaml_adds_a_pictogram_for_a_new_answer():
    data = yaml.safe_load(open(_shipped_symbols_path()).read())
    data["answers"]["my-survey_polar-ring"] = {"ellipse": {"axis_ratio": 0.5}, "ring": {"axis_ratio": 0.3, "angle_deg": 90}}
    book = book_from_dict(data, "my_symbols.yaml")
    img = render_symbol(["my-survey_polar-ring"], size=64, book=book)
    assert img.shape == (64, 64, 3) and img.max() > 200
    data["answers"]["bad"] = {"ring": {"radius": 0.5, "thicknes": 0.1}}
    with pytest.raises(SymbolError, match="my_symbols.yaml: answers: bad: primitive 'ring' has no parameter"):
        book_from_dict(data, "my_symbols.yaml")


def _shipped_symbols_path():
    from importlib import resources

    return str(resources.files("galaxalign.knowledge").joinpath("symbols.yaml"))


# --- sheet and CLI ----------------------------------------------------------------------------

def test_cli_writes_sheet_and_single_symbol(tmp_path):
    from galaxalign.cli import main

    sheet = tmp_path / "sheet.png"
    assert main(["symbols", "--taxonomy", "gz2", "--out", str(sheet), "--size", "48"]) == 0
    assert Image.open(sheet).format == "PNG"
    one = tmp_path / "one.png"
    assert main(["symbols", "--answers", "disk-edge-on_no,bar_yes,spiral-winding_tight", "--out", str(one), "--size", "80"]) == 0
    img = np.asarray(Image.open(one))
    assert img.shape == (80, 80, 3)
    assert np.array_equal(img, render_symbol(["disk-edge-on_no", "bar_yes", "spiral-winding_tight"], size=80))
    assert main(["symbols", "--answers", "how-rounded_cigar,bar_yes", "--out", str(tmp_path / "x.png")]) == 1
    assert not (tmp_path / "x.png").exists()
