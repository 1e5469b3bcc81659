"""The embedded synthetic survey: classes differ where they should, files look like Galaxy10 DECaLS."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from galaxalign.survey import PARAM_NAMES, default_survey, generate_survey, render_galaxy
from galaxalign.survey.classes import SurveyConfigError, load_survey_config
from galaxalign.survey.generate import class_labels, galaxy10_weights, resolve_class_weights

ROUND, IN_BETWEEN, CIGAR, BARRED, TIGHT, LOOSE, EDGE_NO_BULGE, EDGE_BULGE = 2, 3, 4, 5, 6, 7, 8, 9


def _clean_config():
    # Bright, DECaLS-framed galaxies, clear of the asinh core compression that v1.1's harder stretch brings
    config = load_survey_config(observing={"brightness": ["uniform", 300.0, 500.0], "n_neighbours": 0.0, "n_stars": 0.0,
                                           "field_arcsec": 67.07, "psf_fwhm_arcsec": ["lognormal", 1.3, 0.2, 0.8, 2.2]})
    # Smooth disks (no patchy texture, no lopsidedness), so arm geometry is measured, not the texture.
    for cls in config["classes"].values():
        cls.pop("flocculence", None)
        cls.pop("lopsidedness", None)
    return config


def _render(class_id, n, size=64, seed=0):
    config = _clean_config()
    return [render_galaxy(class_id, size, np.random.default_rng([seed, class_id, i]), config=config, field=False)
            for i in range(n)]


def _light(img):
    """Sky-subtracted luminance with pixels below 3 sigma of the border sky set to zero."""
    lum = img.astype(float).mean(axis=2)
    border = np.concatenate([lum[:4].ravel(), lum[-4:].ravel(), lum[:, :4].ravel(), lum[:, -4:].ravel()])
    sky, sigma = np.median(border), border.std() + 1e-6
    return np.where(lum > sky + 3 * sigma, lum - sky, 0.0)


def _moments_axis_ratio(img):
    w = _light(img)
    y, x = np.indices(w.shape)
    tot = w.sum()
    cx, cy = (w * x).sum() / tot, (w * y).sum() / tot
    cov = np.cov(np.stack([x.ravel() - cx, y.ravel() - cy]), aweights=w.ravel())
    lo, hi = np.linalg.eigvalsh(cov)
    return math.sqrt(max(lo, 0) / hi)


def _central_fraction(img, radius=0.06):
    """Fraction of the galaxy's light within ``radius`` (of the cutout width) of its centroid."""
    w = _light(img)
    y, x = np.indices(w.shape)
    cx, cy = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    return w[np.hypot(x - cx, y - cy) < radius * img.shape[0]].sum() / w.sum()


def _image_pitch_deg(img, p):
    """Pitch from the image alone given geometry: 2D Fourier spectrum in (ln r, theta) (Davis et al. 2012)."""
    lum = img.astype(float).mean(axis=2)
    size = lum.shape[0]
    cx, cy = size / 2 + p["centre_x_px"] - 0.5, size / 2 + p["centre_y_px"] - 0.5
    pa, q, h = math.radians(p["position_angle_deg"]), p["axis_ratio"], p["disk_scale_px"]
    u = np.linspace(math.log(0.6 * h), math.log(min(3.0 * h, size / 2 - 2)), 48)
    th = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    U, T = np.meshgrid(u, th, indexing="ij")
    r = np.exp(U)
    xd, yd = r * np.cos(T), r * np.sin(T) * q
    xs = cx + xd * math.cos(pa) - yd * math.sin(pa)
    ys = cy + xd * math.sin(pa) + yd * math.cos(pa)
    vals = lum[np.clip(np.round(ys).astype(int), 0, size - 1), np.clip(np.round(xs).astype(int), 0, size - 1)]
    vals = vals - vals.mean(axis=1, keepdims=True)  # remove the axisymmetric disk
    m = int(p["n_arms"])
    best, best_p = -1.0, 1.0
    for freq in np.linspace(-40, 40, 321):
        if abs(freq) < 0.5:
            continue
        amp = abs((vals * np.exp(-1j * (m * T + freq * U))).sum())
        if amp > best:
            best, best_p = amp, freq
    return math.degrees(math.atan(m / abs(best_p)))


def test_render_galaxy_returns_uint8_rgb_and_every_parameter():
    for class_id in range(10):
        img, params = render_galaxy(class_id, 48, np.random.default_rng(class_id))
        assert img.dtype == np.uint8 and img.shape == (48, 48, 3)
        assert set(PARAM_NAMES) <= set(params) and params["class_id"] == class_id
        assert 0.005 <= params["redshift"] <= 0.25 and params["psf_fwhm_px"] > 0
        assert img.std() > 1.0  # not blank


def test_same_rng_seed_gives_identical_image():
    a, pa = render_galaxy(TIGHT, 48, np.random.default_rng(7))
    b, pb = render_galaxy(TIGHT, 48, np.random.default_rng(7))
    assert np.array_equal(a, b) and json.dumps(pa) == json.dumps(pb)


def test_parameters_not_applicable_are_nan():
    _, smooth = render_galaxy(ROUND, 48, np.random.default_rng(1))
    _, spiral = render_galaxy(LOOSE, 48, np.random.default_rng(1))
    assert math.isnan(smooth["pitch_deg"]) and math.isnan(smooth["bar_strength"])
    assert 14 <= spiral["pitch_deg"] <= 45 and spiral["n_arms"] >= 1


def test_measured_ellipticity_orders_cigar_in_between_round():
    q = {c: np.mean([_moments_axis_ratio(img) for img, _ in _render(c, 14)]) for c in (ROUND, IN_BETWEEN, CIGAR)}
    assert q[CIGAR] < q[IN_BETWEEN] < q[ROUND], q
    assert q[CIGAR] < 0.5 and q[ROUND] > 0.75


def test_round_and_in_between_overlap_in_axis_ratio():
    config = load_survey_config()
    rng = np.random.default_rng(0)
    from galaxalign.survey.classes import sample

    round_q = [sample(config["classes"]["round_smooth"]["axis_ratio"], rng) for _ in range(2000)]
    mid_q = [sample(config["classes"]["in_between_smooth"]["axis_ratio"], rng) for _ in range(2000)]
    # Not trivially separable: each class reaches into the other's typical range.
    assert np.quantile(round_q, 0.05) < np.quantile(mid_q, 0.95)


def test_neighbouring_classes_overlap_in_their_generating_distributions():
    from galaxalign.survey.classes import sample

    classes, rng = load_survey_config()["classes"], np.random.default_rng(1)

    def draws(key, field, n=2000):
        return np.array([sample(classes[key][field], rng) for _ in range(n)])

    tight, loose = draws("tight_spiral", "pitch_deg"), draws("loose_spiral", "pitch_deg")
    assert np.quantile(tight, 0.95) > np.quantile(loose, 0.05) and tight.mean() < loose.mean() - 10
    # Close merging pairs come as near as a disturbed galaxy's satellite.
    assert np.quantile(draws("merging", "companion_sep"), 0.1) < np.quantile(draws("disturbed", "companion_sep"), 0.5)
    assert classes["disturbed"]["companion_prob"] > 0


def test_round_smooth_more_concentrated_than_loose_spiral():
    c_round = np.mean([_central_fraction(img) for img, _ in _render(ROUND, 12)])
    c_loose = np.mean([_central_fraction(img) for img, _ in _render(LOOSE, 12)])
    assert c_round > c_loose + 0.06, (c_round, c_loose)


def test_tight_spirals_have_smaller_pitch_in_parameters_and_in_images():
    tight = _render(TIGHT, 12, size=96)
    loose = _render(LOOSE, 12, size=96)
    assert np.mean([p["pitch_deg"] for _, p in tight]) < np.mean([p["pitch_deg"] for _, p in loose]) - 8
    measured_tight = np.median([_image_pitch_deg(img, p) for img, p in tight])
    measured_loose = np.median([_image_pitch_deg(img, p) for img, p in loose])
    assert measured_tight < 18 < 20 < measured_loose, (measured_tight, measured_loose)


def test_edge_on_disks_are_thin():
    for c in (EDGE_NO_BULGE, EDGE_BULGE):
        rendered = _render(c, 10)
        assert np.mean([p["axis_ratio"] for _, p in rendered]) < 0.35
        assert np.mean([_moments_axis_ratio(img) for img, _ in rendered]) < 0.45


def test_edge_on_with_bulge_has_bigger_bulge_fraction():
    no = [p["bulge_fraction"] for _, p in _render(EDGE_NO_BULGE, 10)]
    yes = [p["bulge_fraction"] for _, p in _render(EDGE_BULGE, 10)]
    assert max(no) <= 0.1 < np.mean(yes)


def test_real_disks_are_patchy_and_lopsided_by_default():
    from galaxalign.survey import profiles as P

    grid = P.Grid(32, 2)
    flat, patchy = P.patchy(grid, np.random.default_rng(0), 3.0, 0.0), P.patchy(grid, np.random.default_rng(0), 3.0, 0.5)
    assert np.allclose(flat, 1.0) and abs(patchy.mean() - 1) < 1e-9 and 0.3 < patchy.std() < 0.8
    config = load_survey_config()
    _, p = render_galaxy(LOOSE, 48, np.random.default_rng(2), config=config, field=False)
    assert 0.05 <= p["flocculence"] <= 0.4 and 0 <= p["asymmetry"] <= 0.35
    _, e = render_galaxy(EDGE_BULGE, 48, np.random.default_rng(2), config=config, field=False)
    assert 0.05 <= e["flocculence"] <= 0.4


def test_bulges_are_redder_than_spiral_arms():
    # Red (z) over blue (g) in the centre of a round smooth galaxy vs the outskirts of a loose spiral.
    smooth = np.mean([img[28:36, 28:36, 0].mean() / max(img[28:36, 28:36, 2].mean(), 1) for img, _ in _render(ROUND, 6)])
    spiral = []
    for img, p in _render(LOOSE, 6):
        w = _light(img) > 0
        ring = w.copy()
        ring[24:40, 24:40] = False
        if ring.sum() > 10:
            spiral.append(img[ring, 0].mean() / max(img[ring, 2].mean(), 1))
    assert smooth > np.mean(spiral) + 0.1, (smooth, spiral)


def test_class_labels_follow_weights_exactly():
    w = resolve_class_weights({"round_smooth": 3, "cigar_smooth": 1})
    labels = class_labels(400, w, seed=1)
    assert np.bincount(labels, minlength=10).tolist() == [0, 0, 300, 0, 100, 0, 0, 0, 0, 0]
    g10 = np.bincount(class_labels(17736, galaxy10_weights(), seed=0), minlength=10)
    assert g10.tolist() == [1081, 1853, 2645, 2027, 334, 2043, 1829, 2628, 1423, 1873]


def test_bad_class_weights_and_observing_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="expected 10 numbers"):
        resolve_class_weights([1, 2, 3])
    with pytest.raises(ValueError, match="unknown class 'spirals'"):
        resolve_class_weights({"spirals": 1})
    with pytest.raises(SurveyConfigError, match="psf_fwhm"):
        load_survey_config(observing={"psf_fwhm": [1.0]})
    with pytest.raises(ValueError, match="class_id 12"):
        render_galaxy(12, 32, 0)


def test_h5_has_the_galaxy10_layout(tmp_path):
    out = generate_survey(tmp_path / "s.h5", 20, size=32, seed=3, workers=1, progress=False,
                          class_weights="uniform")
    with h5py.File(out, "r") as h5:
        assert h5["images"].dtype == np.uint8 and h5["images"].shape == (20, 32, 32, 3)
        assert h5["ans"].dtype == np.uint8 and h5["ans"].shape == (20,)
        assert sorted(np.unique(h5["ans"][:]).tolist()) == list(range(10))
        for name in ("ra", "dec", "redshift", "pxscale"):
            assert h5[name].dtype.kind == "f" and h5[name].shape == (20,)
        assert np.all((h5["dec"][:] >= -20) & (h5["dec"][:] <= 35))
        assert set(PARAM_NAMES) == set(h5["params"].keys())
        assert np.allclose(h5["params/redshift"][:], h5["redshift"][:], rtol=1e-6)
        pitch, ans = h5["params/pitch_deg"][:], h5["ans"][:]
        assert np.isnan(pitch[ans == ROUND]).all() and np.isfinite(pitch[ans == TIGHT]).all()
        assert h5.attrs["seed"] == 3 and h5.attrs["size"] == 32
        assert json.loads(h5.attrs["class_names"])[ROUND] == "Round Smooth Galaxies"
        assert h5.attrs["generator_version"]
    assert not list(tmp_path.glob(".s.h5*"))  # atomic: no temporary left behind


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    a = generate_survey(tmp_path / "a.h5", 12, size=32, seed=5, workers=1, progress=False)
    b = generate_survey(tmp_path / "b.h5", 12, size=32, seed=5, workers=2, progress=False)
    c = generate_survey(tmp_path / "c.h5", 12, size=32, seed=6, workers=1, progress=False)
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
        for name in ("images", "ans", "ra", "dec", "params/pitch_deg", "params/sky_noise"):
            assert np.array_equal(fa[name][:], fb[name][:], equal_nan=name != "images" and name != "ans"), name
        assert not np.array_equal(fa["images"][:], fc["images"][:])


def test_default_survey_renders_once_and_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXALIGN_CACHE", str(tmp_path))
    path = default_survey(num=6, size=32, seed=0, progress=False)
    assert path.exists() and path.parent == tmp_path / "surveys"
    import galaxalign.survey.generate as gen

    monkeypatch.setattr(gen, "generate_survey", lambda *a, **k: pytest.fail("re-rendered a cached survey"))
    assert default_survey(num=6, size=32, seed=0, progress=False) == path


def test_cli_generate_writes_a_file(tmp_path):
    from galaxalign.cli import main

    out = tmp_path / "cli.h5"
    rc = main(["generate", "--num", "5", "--size", "32", "--seed", "1", "--out", str(out), "--workers", "1",
               "--class-weights", "merging=1,disturbed=1", "--quiet"])
    assert rc == 0
    with h5py.File(out) as h5:
        assert h5["images"].shape == (5, 32, 32, 3) and set(h5["ans"][:].tolist()) <= {0, 1}


def test_cli_generate_rejects_bad_weights(tmp_path, capsys):
    from galaxalign.cli import main

    rc = main(["generate", "--num", "5", "--out", str(tmp_path / "x.h5"), "--class-weights", "1,2"])
    assert rc == 1 and "expected 10 numbers" in capsys.readouterr().err


ARTEFACTS_ON = {"artefact_bright_star": 1.0, "artefact_satellite_trail": 1.0, "artefact_masked_region": 1.0, "jpeg_prob": 1.0}
ARTEFACTS_OFF = {"artefact_bright_star": 0.0, "artefact_satellite_trail": 0.0, "artefact_masked_region": 0.0, "jpeg_prob": 0.0}


def test_artefacts_are_drawn_recorded_and_seeded():
    on = load_survey_config(observing={**ARTEFACTS_ON, "jpeg_prob": 0.0})
    off = load_survey_config(observing=ARTEFACTS_OFF)
    for i in range(4):
        img, p = render_galaxy(TIGHT, 64, np.random.default_rng(i), config=on)
        assert p["bright_star_peak"] >= 1000 and p["satellite_trail_peak"] >= 4 and math.isnan(p["jpeg_quality"])
        assert 0 < p["masked_fraction"] <= 0.3
        # No data is black: whole rows or columns of zeros.
        dark = img.max(axis=2) == 0
        assert dark.all(axis=0).any() or dark.all(axis=1).any()
        assert img.max() >= 200  # the saturated star (unless masked) nears full scale
        again, _ = render_galaxy(TIGHT, 64, np.random.default_rng(i), config=on)
        assert np.array_equal(img, again)
        _, q = render_galaxy(TIGHT, 64, np.random.default_rng(i), config=off)
        assert all(math.isnan(q[k]) for k in ("bright_star_peak", "satellite_trail_peak", "masked_fraction", "jpeg_quality"))
        # JPEG round trip: same scene, blocky small differences, quality recorded.
        jpeg_cfg = load_survey_config(observing={**ARTEFACTS_OFF, "jpeg_prob": 1.0})
        compressed, r = render_galaxy(TIGHT, 64, np.random.default_rng(i), config=jpeg_cfg)
        clean, _ = render_galaxy(TIGHT, 64, np.random.default_rng(i), config=off)
        diff = np.abs(compressed.astype(int) - clean.astype(int))
        assert 55 <= r["jpeg_quality"] <= 95 and 0 < diff.mean() < 8  # mostly chroma noise lost to 4:2:0 subsampling
    # field=False (clean measurement images) leaves every artefact out, whatever the probabilities.
    _, p = render_galaxy(TIGHT, 64, np.random.default_rng(0), config=load_survey_config(observing=ARTEFACTS_ON), field=False)
    assert math.isnan(p["jpeg_quality"]) and math.isnan(p["bright_star_peak"])


def test_artefacts_appear_at_the_rates_the_classes_file_sets():
    # The shipped rates are data (users widen them); the renderer must honour whatever they are.
    rates = {"artefact_bright_star": 0.3, "artefact_satellite_trail": 0.15, "artefact_masked_region": 0.1, "jpeg_prob": 0.5}
    config = load_survey_config(observing=rates)
    n = 300
    rng = np.random.default_rng(0)
    params = [render_galaxy(int(c), 32, rng, config=config)[1] for c in rng.integers(0, 10, n)]
    for key, param in (("artefact_bright_star", "bright_star_peak"), ("artefact_satellite_trail", "satellite_trail_peak"),
                       ("artefact_masked_region", "masked_fraction"), ("jpeg_prob", "jpeg_quality")):
        rate, p = np.mean([np.isfinite(q[param]) for q in params]), rates[key]
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n), (key, rate)


def test_a_wider_field_of_view_shows_the_galaxy_smaller():
    def extent(field_arcsec):
        cfg = load_survey_config(observing={**ARTEFACTS_OFF, "field_arcsec": field_arcsec, "brightness": 400.0})
        rendered = [render_galaxy(ROUND, 64, np.random.default_rng(i), config=cfg, field=False) for i in range(6)]
        assert all(abs(p["pxscale"] - field_arcsec / 64) < 1e-9 for _, p in rendered)
        return np.mean([(_light(img) > 0).sum() for img, _ in rendered]), np.mean([p["psf_fwhm_px"] for _, p in rendered])
    (near, psf_near), (wide, psf_wide) = extent(40.0), extent(110.0)
    assert near > 2.5 * wide and psf_near > 2 * psf_wide, (near, wide)


def test_train_augmentation_ranges_are_configurable_and_checked():
    import torch

    from galaxalign.transforms import train_transform

    yy, xx = np.mgrid[:64, :64] - 31.5
    blob = np.repeat((200 * np.exp(-(xx**2 + yy**2) / (2 * 6.0**2)))[:, :, None], 3, axis=2).astype(np.uint8)
    plain = train_transform(64, [0, 0, 0], [1, 1, 1], strength=0.0)
    torch.manual_seed(0)
    base = plain(blob)
    zoomed = train_transform(64, [0, 0, 0], [1, 1, 1], strength=1.0, zoom=(1.5, 1.5), channel_gain=0.0)
    torch.manual_seed(0)
    # Magnified x1.5: more of the frame is bright (threshold well above the photometric jitter).
    assert (zoomed(blob).mean(0) > 0.3).sum() > 1.8 * (base.mean(0) > 0.3).sum()
    gained = train_transform(64, [0, 0, 0], [1, 1, 1], strength=1.0, zoom=(1.0, 1.0), channel_gain=0.3)
    ratios = []
    for seed in range(20):
        torch.manual_seed(seed)
        y = gained(blob)
        ratios.append(float(y[0, 28:36, 28:36].mean() / y[2, 28:36, 28:36].mean()))
    assert max(ratios) / min(ratios) > 1.2  # channels are scaled independently: the colour changes
    with pytest.raises(ValueError, match="zoom"):
        train_transform(64, [0, 0, 0], [1, 1, 1], zoom=(1.5, 1.2))
    with pytest.raises(ValueError, match="channel_gain"):
        train_transform(64, [0, 0, 0], [1, 1, 1], channel_gain=1.5)


def _two_class_taxonomy(tmp_path, counts=(1, 3)):
    """A user's label scheme over two of the survey's classes, in an order unlike Galaxy10's."""
    classes = [
        {"id": 0, "name": "Edge-on disks", "key": "edge_on_no_bulge", "answers": ["disk-edge-on_yes"], "text_labels": ["edge-on disk"]},
        {"id": 1, "name": "Round ellipticals", "key": "round_smooth", "answers": ["how-rounded_round"], "text_labels": ["round galaxy"]},
    ]
    for c, n in zip(classes, counts):
        if n is not None:
            c["count"] = n
    path = tmp_path / "two.yaml"
    path.write_text(json.dumps({"name": "two", "classes": classes}))
    return path


def test_survey_class_ids_come_from_the_taxonomy_the_classes_file_names(tmp_path):
    config = load_survey_config()
    assert config["taxonomy"] == "galaxy10_decals"
    config["taxonomy"] = str(_two_class_taxonomy(tmp_path))
    mine, _ = render_galaxy(0, 48, np.random.default_rng(5), config=config, field=False)
    shipped, _ = render_galaxy(EDGE_NO_BULGE, 48, np.random.default_rng(5), field=False)
    assert np.array_equal(mine, shipped)   # id 0 of the user's taxonomy is the edge-on class
    with pytest.raises(ValueError, match="not a class id of taxonomy"):
        render_galaxy(2, 48, 0, config=config)
    # Default class proportions are the taxonomy's counts, read from its file.
    assert resolve_class_weights(None, config) == pytest.approx([0.25, 0.75])
    assert resolve_class_weights({"round_smooth": 1}, config) == pytest.approx([0.0, 1.0])


def test_default_class_proportions_are_the_galaxy10_counts_in_the_taxonomy_file():
    from galaxalign.taxonomy import load_taxonomy

    counts = np.asarray(load_taxonomy("galaxy10_decals").class_counts, float)
    assert counts.sum() == 17736   # Galaxy10 DECaLS size
    assert galaxy10_weights() == pytest.approx(counts / counts.sum())


def test_a_taxonomy_without_counts_needs_explicit_class_weights(tmp_path):
    config = load_survey_config()
    config["taxonomy"] = str(_two_class_taxonomy(tmp_path, counts=(1, None)))
    with pytest.raises(ValueError, match=r"classes \['round_smooth'\] have no 'count'"):
        resolve_class_weights(None, config)
    assert resolve_class_weights("uniform", config) == pytest.approx([0.5, 0.5])
