"""Rings in the rendered survey: drawn where the classes file asks, and said in each galaxy's answers."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from galaxalign.survey import render_galaxy
from galaxalign.survey.answers import galaxy_answers
from galaxalign.survey.classes import SurveyConfigError, load_survey_config, survey_class_keys, validate

TIGHT = 6        # tight_spiral: rings on unbarred disks, radius in disk scale radii
EDGE_BULGE = 9   # edge_on_with_bulge: dust lanes


def _config(ring_prob: float | None):
    """Bright, clean, face-on disks without arms, knots, bars or texture: the ring is the only structure."""
    config = load_survey_config(observing={"brightness": ["uniform", 400.0, 500.0], "n_neighbours": 0.0,
                                           "n_stars": 0.0, "field_arcsec": 67.07, "redshift": 0.04,
                                           "psf_fwhm_arcsec": 1.0})
    cls = config["classes"]["tight_spiral"]
    for key in ("flocculence", "lopsidedness", "pitch_deg", "bar_prob", "bar_strength", "bar_length", "bar_axis_ratio"):
        cls.pop(key, None)
    cls.update(n_knots=0, inclination_deg=0.0, size=0.06, bulge_fraction=0.2,
               ring_radius=2.5, ring_width=0.08, ring_fraction=0.2)
    if ring_prob is None:
        for key in ("ring_prob", "ring_fraction", "ring_radius", "ring_width"):
            cls.pop(key)
    else:
        cls["ring_prob"] = ring_prob
    return config


def _radial_profile(img: np.ndarray, cx: float, cy: float) -> np.ndarray:
    lum = img.astype(float).mean(axis=2)
    y, x = np.mgrid[: lum.shape[0], : lum.shape[1]]
    r = np.hypot(x - (lum.shape[1] - 1) / 2 - cx, y - (lum.shape[0] - 1) / 2 - cy).astype(int)
    return np.bincount(r.ravel(), lum.ravel()) / np.maximum(np.bincount(r.ravel()), 1)


def test_a_ring_galaxy_has_a_bump_in_its_radial_profile_at_the_ring_radius():
    ringed, p = render_galaxy(TIGHT, 128, 3, config=_config(1.0), field=False)
    plain, q = render_galaxy(TIGHT, 128, 3, config=_config(None), field=False)
    assert p["ring_fraction"] == pytest.approx(0.2) and math.isnan(q["ring_fraction"])
    radius = p["ring_radius_px"]
    assert 10 < radius < 40
    prof = _radial_profile(ringed, p["centre_x_px"], p["centre_y_px"])
    base = _radial_profile(plain, q["centre_x_px"], q["centre_y_px"])
    at, inside = int(round(radius)), int(round(0.6 * radius))
    # Without a ring the disk fades outwards; with one, light at the ring radius rises above the light inside it.
    assert base[at] < base[inside]
    assert prof[at] > prof[inside - 2 : inside + 1].min()
    assert prof[at] - base[at] > 15  # grey levels


def test_a_ring_galaxys_answers_say_ring_and_something_odd():
    _, p = render_galaxy(TIGHT, 64, 1, config=_config(1.0), field=False)
    answers = galaxy_answers(TIGHT, p, _config(1.0))
    assert "odd-feature_ring" in answers and "something-odd_yes" in answers
    _, q = render_galaxy(TIGHT, 64, 1, config=_config(0.0), field=False)
    assert q["ring_fraction"] == 0.0
    answers = galaxy_answers(TIGHT, q, _config(0.0))
    assert "odd-feature_ring" not in answers and "something-odd_no" in answers


def test_a_dust_lane_reaches_the_odd_feature_answer():
    # Regression: odd-feature requires something-odd_yes, which only a default answered ("no") after
    # the parameter rules ran, so the dust-lane rule never fired for any rendered galaxy.
    config = load_survey_config()
    params = {"dust_lane": 1.0, "inclination_deg": 85.0, "ring_fraction": math.nan}
    answers = galaxy_answers(EDGE_BULGE, params, config)
    assert "odd-feature_dust-lane" in answers and "something-odd_yes" in answers
    assert "something-odd_no" in galaxy_answers(EDGE_BULGE, {**params, "dust_lane": 0.0}, config)


def test_a_multiple_choice_question_takes_every_answer_its_rules_give():
    config = load_survey_config()
    params = {"dust_lane": 1.0, "ring_fraction": 0.1, "inclination_deg": 85.0}
    answers = galaxy_answers(EDGE_BULGE, params, config)
    assert {"odd-feature_dust-lane", "odd-feature_ring"} <= set(answers)


def test_a_smooth_galaxy_never_gets_disk_answers_through_an_open_path():
    config = load_survey_config()
    keys = survey_class_keys(config)
    answers = galaxy_answers(keys.index("round_smooth"), {"axis_ratio": 0.9, "bar_strength": 0.9, "arm_strength": 1.0}, config)
    assert not any(a.startswith(("bar_", "has-spiral-arms_", "disk-edge-on_")) for a in answers)


def test_a_list_of_rules_on_a_single_choice_question_is_refused():
    config = copy.deepcopy(load_survey_config())
    config["answers"]["bar"] = [{"param": "bar_strength", "bins": [[0.3, 100, "yes"]]}]
    with pytest.raises(SurveyConfigError, match="answers.bar: a list of rules is for multiple-choice"):
        validate(config, "mine.yaml")


def test_the_default_survey_draws_rings_at_the_rates_the_classes_file_sets():
    config = load_survey_config()
    keys = survey_class_keys(config)
    barred = keys.index("barred_spiral")
    drawn = [render_galaxy(barred, 32, np.random.default_rng([7, i]), config=config, field=False)[1]["ring_fraction"]
             for i in range(40)]
    share = np.mean(np.asarray(drawn) > 0)
    assert 0.1 < share < 0.55  # ring_prob 0.3
