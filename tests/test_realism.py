"""Realism: morphology statistics on known inputs, the rendered-vs-real comparison, the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import gammaincinv

from galaxalign.realism import compare, morphology
from galaxalign.realism.morphology import ASINH_Q, STATISTICS, galaxy_statistics, linear_flux, morphology_statistics
from galaxalign.taxonomy import load_taxonomy

SHARED = Path(__file__).resolve().parents[2] / "shared"
EXEMPLARS = SHARED / "data" / "gz2-exemplars"


def sersic(n: float, size: int = 96, r_e: float = 8.0, axis_ratio: float = 1.0, noise: float = 0.002,
           peak: float = 0.5, seed: int = 0, angle: float = 0.0) -> np.ndarray:
    """A Sérsic light profile (flux units of linear_flux) with Gaussian sky noise."""
    b = gammaincinv(2 * n, 0.5)
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    r = np.hypot(u, v / axis_ratio)
    img = np.exp(-b * ((r / r_e) ** (1 / n) - 1))
    return peak * img / img.max() + np.random.default_rng(seed).normal(0, noise, img.shape)


def to_uint8(flux_rgb: np.ndarray) -> np.ndarray:
    """The forward asinh stretch that linear_flux inverts."""
    x = np.arcsinh(np.clip(flux_rgb, 0, None) * ASINH_Q) / ASINH_Q
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def to_uint8_lupton(flux_rgb: np.ndarray) -> np.ndarray:
    """A Lupton colour composite: every band stretched by asinh(Q I) / (Q I) of the mean intensity I."""
    intensity = np.clip(flux_rgb.mean(axis=-1, keepdims=True), 1e-9, None)
    x = flux_rgb * np.arcsinh(ASINH_Q * intensity) / (ASINH_Q * intensity)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def colour_galaxy(n: float, seed: int, size: int = 64, r_e: float = 6.0, axis_ratio: float = 1.0) -> np.ndarray:
    """A red-ish galaxy (band fluxes R : G : B = 1 : 0.8 : 0.5) on a sky of 5 grey levels."""
    base = sersic(n, size, r_e, axis_ratio, noise=0.0, peak=0.6, seed=seed)
    rng = np.random.default_rng(seed)
    rgb = np.stack([1.0 * base, 0.8 * base, 0.5 * base], axis=-1) + rng.normal(5 / 255, 2 / 255, (size, size, 3))
    return to_uint8_lupton(np.clip(rgb, 0, None))


# --- statistics on known inputs ---------------------------------------------------------------


def test_linear_flux_inverts_the_asinh_stretch():
    flux = np.linspace(0, 2, 50)[:, None, None] * np.ones((1, 2, 3))
    back = linear_flux(to_uint8(flux))
    # One grey level of quantisation at the bright end is a few per cent of the flux.
    assert np.allclose(back, flux, rtol=0.05, atol=1 / 255)
    with pytest.raises(ValueError, match="uint8"):
        linear_flux(flux)


def test_round_profile_has_zero_ellipticity_and_zero_asymmetry():
    s = morphology_statistics(sersic(1.0, axis_ratio=1.0))
    assert not s["failed"], s["error"]
    assert s["ellipticity"] < 0.05
    assert abs(s["asymmetry"]) < 0.03
    assert s["r_half"] == pytest.approx(8 / 96, rel=0.1)


def test_three_to_one_ellipse_has_ellipticity_two_thirds():
    s = morphology_statistics(sersic(1.0, axis_ratio=1 / 3, angle=0.6))
    assert s["ellipticity"] == pytest.approx(2 / 3, abs=0.05)


def test_de_vaucouleurs_profile_is_more_concentrated_than_exponential():
    disc = morphology_statistics(sersic(1.0))
    bulge = morphology_statistics(sersic(4.0))
    assert bulge["concentration"] > disc["concentration"] + 0.8
    assert bulge["gini"] > disc["gini"]
    assert bulge["m20"] < disc["m20"]
    assert disc["sersic_n"] == pytest.approx(1.0, abs=0.2)
    assert bulge["sersic_n"] > 3.0


def test_sky_noise_is_recovered_from_added_gaussian_noise():
    for sigma in (0.002, 0.01):
        s = morphology_statistics(sersic(1.0, noise=sigma, peak=2.0, seed=3))
        assert s["sky_noise"] == pytest.approx(sigma, rel=0.1)
        assert abs(s["sky_level"]) < sigma / 2  # undetected exponential wings lift the sky a little


def test_red_galaxy_has_positive_blue_minus_red_colour():
    s = galaxy_statistics(colour_galaxy(2.0, seed=1))
    # Flux ratios 0.5 : 0.8 : 1.0 (B : G : R) -> B-G = 2.5 log10(1.6), B-R = 2.5 log10(2).
    assert s["colour_b_g"] == pytest.approx(2.5 * math.log10(1.6), abs=0.1)
    assert s["colour_b_r"] == pytest.approx(2.5 * math.log10(2.0), abs=0.1)
    assert abs(s["colour_gradient"]) < 0.1  # same colour everywhere
    assert s["sky_noise"] * 255 == pytest.approx(2.0, rel=0.25)


def test_empty_image_is_counted_as_a_failure_not_raised():
    s = galaxy_statistics(np.zeros((48, 48, 3), np.uint8))
    assert s["failed"] and s["error"]
    assert all(math.isnan(s[k]) for k in morphology.STATMORPH_STATISTICS)


def test_galaxy_statistics_rejects_a_non_image():
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        galaxy_statistics(np.zeros((32, 32), np.uint8))


# --- distances and the comparison ---------------------------------------------------------------


def test_distance_is_zero_for_identical_samples_and_grows_with_a_shift():
    x = np.random.default_rng(0).normal(0, 1, 200)
    same = compare.distance(x, x)
    assert same["ks"] == 0 and same["wasserstein_norm"] == pytest.approx(0)
    shifted = compare.distance(x + 2.0, x)
    assert shifted["ks"] > 0.6 and shifted["ks_pvalue"] < 1e-6
    assert shifted["wasserstein_norm"] == pytest.approx(2.0, rel=0.15)  # shift / spread (spread ~ 1)
    assert compare.distance([np.nan], x)["ks"] is None


def write_survey(path: Path, per_class: int = 3, size: int = 64) -> None:
    """A tiny Galaxy10-layout file: class 2 round n=4 bulges, class 8 flat n=1 discs."""
    images, labels = [], []
    for label, n, q in ((2, 4.0, 1.0), (8, 1.0, 0.3)):
        for k in range(per_class):
            images.append(colour_galaxy(n, seed=10 * label + k, size=size, axis_ratio=q))
            labels.append(label)
    with h5py.File(path, "w") as f:
        f["images"] = np.stack(images)
        f["ans"] = np.array(labels, np.uint8)


def write_real_folder(folder: Path) -> None:
    """A gz2-exemplars-like folder: 4 JPEGs (424 px), manifest labels 2, 2, 8 and one unlabelled."""
    folder.mkdir()
    rows = []
    for k, (label, n, q) in enumerate(((2, 4.0, 1.0), (2, 3.0, 0.9), (8, 1.0, 0.25), ("", 2.0, 0.6))):
        name = f"real-{k}.jpg"
        Image.fromarray(colour_galaxy(n, seed=100 + k, size=424, r_e=40, axis_ratio=q)).save(folder / name, quality=90)
        rows.append({"file": name, "question": "q", "answer": "a", "icon": "i", "galaxy10_class": label})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)


def test_manifest_reader_maps_labels_and_names_the_bad_row(tmp_path):
    folder = tmp_path / "real"
    write_real_folder(folder)
    tax = load_taxonomy("galaxy10_decals")
    cat = compare.load_real_catalog(folder, tax)
    assert cat["label"].tolist() == [2, 2, 8, -1]
    assert Path(cat["file_loc"][0]).exists()
    bad = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)
    bad.loc[1, "galaxy10_class"] = "42"
    bad.to_csv(folder / "manifest.csv", index=False)
    with pytest.raises(ValueError, match=r"row 3, field 'galaxy10_class'"):
        compare.load_real_catalog(folder, tax)


def test_real_images_are_read_by_the_hardened_reader(tmp_path, monkeypatch):
    from PIL import ImageFile

    from galaxalign.datasets.images import ImageReadError

    folder = tmp_path / "real"
    write_real_folder(folder)
    tax = load_taxonomy("galaxy10_decals")
    data = (folder / "real-1.jpg").read_bytes()
    (folder / "real-1.jpg").write_bytes(data[: len(data) // 2])   # a download cut short
    # Even where PIL is told to pad truncated files with grey, the truncated JPEG is refused by name.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match="real-1.jpg: JPEG file is truncated"):
        compare.read_images(compare.load_real_catalog(folder, tax))


def test_survey_sampling_takes_a_catalog_or_a_file_alike(tmp_path):
    from galaxalign.datasets import load_catalog

    write_survey(tmp_path / "s.h5", per_class=5, size=32)
    images, labels = compare.sample_survey(tmp_path / "s.h5", max_per_class=2, seed=3)
    assert images.shape == (4, 32, 32, 3) and sorted(labels.tolist()) == [2, 2, 8, 8]
    from_catalog = compare.sample_survey(load_catalog(tmp_path / "s.h5"), max_per_class=2, seed=3)
    np.testing.assert_array_equal(from_catalog[0], images)
    np.testing.assert_array_equal(from_catalog[1], labels)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A random tiny image-only model (with a head), exported; a 2-class rendered survey; real folder."""
    import torch

    from galaxalign.inference import save_pretrained
    from galaxalign.model import GalaxAlignModel

    tmp = tmp_path_factory.mktemp("sim2real")
    torch.manual_seed(0)
    model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny"}, "num_classes": 10})
    export = save_pretrained(model, load_taxonomy("galaxy10_decals"), tmp / "model", extra={"method": "image_only"})
    write_survey(tmp / "survey.h5", per_class=4, size=48)
    write_real_folder(tmp / "real")
    return export, tmp / "survey.h5", tmp / "real"


@pytest.fixture(scope="module")
def realism_run(tmp_path_factory, tiny_export):
    """One small `galaxalign realism` run (with sim-to-real of a tiny model) shared by the tests
    below (statmorph is the slow part)."""
    from galaxalign.cli import main

    tmp = tmp_path_factory.mktemp("realism")
    survey, real, out = tmp / "survey.h5", tmp / "real", tmp / "out"
    write_survey(survey, per_class=2)
    write_real_folder(real)
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["realism", "--survey", str(survey), "--real", str(real), "--out", str(out), "--max-per-class", "2",
                   "--checkpoint", str(tiny_export[0]), "--no-progress"])
    return rc, printed.getvalue(), out, real


def test_cli_writes_summary_plots_grid_and_tables(realism_run):
    rc, printed, out, _ = realism_run
    assert rc == 0
    assert "concentration" in printed and "statmorph failures" in printed
    assert "sim-to-real (head): accuracy" in printed
    assert json.loads((out / "sim_to_real.json").read_text())["n"] == 3
    for name in ("summary.json", "distributions.png", "grid.png", "rendered_statistics.csv", "real_statistics.csv"):
        assert (out / name).stat().st_size > 500, name
    assert Image.open(out / "grid.png").height > 10 * 64  # one row per class
    real = pd.read_csv(out / "real_statistics.csv")
    assert real["id"].tolist() == ["real-0", "real-1", "real-2", "real-3"]


def test_summary_has_a_distance_per_statistic_overall_and_per_class(realism_run):
    summary = json.loads((realism_run[2] / "summary.json").read_text())
    assert set(summary["overall"]) == set(STATISTICS)
    assert set(summary["per_class"]) == {"Round Smooth Galaxies", "Edge-on Galaxies without Bulge"}
    for per_stat in [summary["overall"], *summary["per_class"].values()]:
        assert set(per_stat) == set(STATISTICS)
        for stat in ("concentration", "ellipticity", "r_half", "colour_b_r"):
            d = per_stat[stat]
            assert 0 <= d["ks"] <= 1 and 0 <= d["ks_pvalue"] <= 1 and d["wasserstein_norm"] >= 0
    inputs = summary["inputs"]
    assert (inputs["n_rendered"], inputs["n_real"], inputs["n_real_labelled"], inputs["measured_at_px"]) == (4, 4, 3, 64)
    assert summary["failures"]["rendered"]["n"] == 4 and summary["failures"]["real"]["n"] == 4
    # Real galaxies are 424 px JPEGs resized to the survey's 64 px, r_e scaled to match: sizes agree.
    r_half = summary["overall"]["r_half"]
    assert r_half["median_real"] == pytest.approx(r_half["median_rendered"], rel=0.35)
    assert summary["per_class"]["Edge-on Galaxies without Bulge"]["ellipticity"]["median_real"] > 0.6


def test_cli_reports_a_missing_survey_as_an_error(realism_run, tmp_path, capsys):
    from galaxalign.cli import main

    rc = main(["realism", "--survey", str(tmp_path / "missing.h5"), "--real", str(realism_run[3]), "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "missing.h5 does not exist" in capsys.readouterr().err


@pytest.mark.skipif(not EXEMPLARS.exists(), reason="../shared/data/gz2-exemplars absent")
def test_real_exemplars_are_measured_with_few_failures():
    tax = load_taxonomy("galaxy10_decals")
    cat = compare.load_real_catalog(EXEMPLARS, tax)
    assert len(cat) == 86 and (cat["label"] >= 0).sum() == 22
    labelled = cat[cat["label"] >= 0].head(4)
    table = compare.measure_galaxies(compare.read_images(labelled), labelled["label"], size=128, progress=False)
    assert table["failed"].sum() <= 2
    ok = table[~table["failed"]]
    # Real SDSS galaxies: concentrations 2-5, Gini 0.35-0.8, visible sky noise of a few grey levels.
    assert ok["concentration"].between(1.5, 5.5).all()
    assert ok["gini"].between(0.3, 0.85).all()
    assert (table["sky_noise"] * 255).between(0.3, 20).all()


# --- sim-to-real ---------------------------------------------------------------------------------


def test_sim_to_real_reports_every_classifier_and_a_consistent_headline(tiny_export):
    from galaxalign.evaluation.sim2real import sim_to_real

    export, survey, real = tiny_export
    r = sim_to_real(export, real, survey=survey, fit_per_class=3)
    assert r["n"] == 3 and r["chance"] == pytest.approx(0.1)
    assert set(r["methods"]) == {"head", "zero_shot_text", "zero_shot_symbol", "zero_shot_both", "linear_probe", "nearest_centroid", "knn"}
    assert r["headline"] == "head"  # image-only baseline: its own classifier head
    assert [p["true"] for p in r["predictions"]] == ["Round Smooth Galaxies", "Round Smooth Galaxies", "Edge-on Galaxies without Bulge"]
    correct = [p["true"] == p["predicted"] for p in r["predictions"]]
    assert r["accuracy"] == pytest.approx(np.mean(correct)) == pytest.approx(r["methods"]["head"]["accuracy"])
    assert {c: v["n"] for c, v in r["per_class"].items()} == {"Round Smooth Galaxies": 2, "Edge-on Galaxies without Bulge": 1}
    # Probe and k-NN were fitted on a survey of classes 2 and 8 only: they can only answer those.
    assert {p for p in r["methods"]["linear_probe"]["per_class"]} <= {"Round Smooth Galaxies", "Edge-on Galaxies without Bulge"}
    json.dumps(r)  # JSON-safe for the demo's report


def test_sim_to_real_needs_labelled_real_galaxies(tiny_export, tmp_path):
    from galaxalign.evaluation.sim2real import centre_crop, sim_to_real

    export, survey, _ = tiny_export
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    Image.fromarray(colour_galaxy(2.0, seed=0)).save(folder / "a.png")
    with pytest.raises(ValueError, match="none has a label"):
        sim_to_real(export, folder, survey=survey)
    assert centre_crop(np.zeros((424, 424, 3), np.uint8), 0.5).shape == (212, 212, 3)


def test_sim_to_real_skips_fitted_classifiers_without_a_known_training_survey(tiny_export):
    from galaxalign.evaluation.sim2real import sim_to_real

    export, _, real = tiny_export  # exported with no training config
    r = sim_to_real(export, real, zero_shot=("text",))
    assert set(r["methods"]) == {"head", "zero_shot_text"}
    assert set(r["skipped"]) == {"linear_probe", "nearest_centroid", "knn"}
    assert "pass survey=" in r["skipped"]["knn"]
