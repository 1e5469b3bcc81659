"""Render one synthetic galaxy cutout: physical model -> g, r, z bands -> PSF, noise -> Lupton RGB.

``render_galaxy(class_id, size, rng)`` draws the class's generating parameters from
``survey_classes.yaml``, paints the galaxy's components (bulge, disk, arms, bar, rings, knots, companion,
tails, dust) in flux per band, adds field stars and background galaxies, convolves with a Moffat PSF,
adds sky, read and photon noise, and maps z, r, g to R, G, B with ``make_lupton_rgb`` as DECaLS
cutouts do. Domain randomisation (v1.1): the field of view, PSF, noise, colour balance and dimming
are drawn per cutout, and imaging artefacts (a saturated star with spikes and a bleed column, a
satellite trail, a masked edge or chip gap, JPEG compression) appear with small probabilities.
Returns the uint8 image and every generating parameter (NaN where not applicable).

The galaxy's components are painted by ``components.py``; the instrument (field sources, artefacts,
noise, stretch) is ``instrument.py``; this module draws the observation and calls them in order.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from galaxalign.survey import profiles as P
from galaxalign.survey.classes import load_survey_config, sample, survey_class_keys
from galaxalign.survey.components import COMPONENTS, Scene, band_colours, paint
from galaxalign.survey.instrument import (
    add_noise,
    bright_star,
    field_sources,
    jpeg_round_trip,
    lupton_rgb,
    mask_region,
    satellite_trail,
    star_spikes_and_bleed,
)

# Every parameter stored per galaxy (HDF5 group params/); NaN where a class has no such component.
PARAM_NAMES = (
    "axis_ratio", "position_angle_deg", "inclination_deg", "sersic_n", "r_eff_px", "bulge_fraction",
    "disk_scale_px", "scale_height_ratio", "pitch_deg", "n_arms", "arm_strength", "arm_width",
    "bar_strength", "bar_length_px", "bar_axis_ratio", "n_knots", "knot_fraction", "halo_fraction",
    "asymmetry", "companion_flux_ratio", "companion_sep_px", "n_tails", "tail_strength", "dust_lane",
    "dust_tau", "redshift", "size_frac", "brightness", "psf_fwhm_px", "psf_beta", "sky_noise",
    "read_noise", "photon_scale", "pxscale", "n_stars", "n_neighbours", "lupton_stretch", "lupton_q",
    "lupton_minimum", "centre_x_px", "centre_y_px", "flocculence",
    # v1.1 domain randomisation: field of view, calibration, dimming, artefacts (NaN: no such artefact).
    "field_arcsec", "colour_balance_g", "colour_balance_z", "dimming_power", "bright_star_peak",
    "satellite_trail_peak", "masked_fraction", "jpeg_quality",
    # v1.2: rings (NaN: the class has no rings; 0: it could have had one and did not).
    "ring_fraction", "ring_radius_px",
)
# Galaxy10 DECaLS cutout field (256 px x 0.262 arcsec): galaxy sizes in the YAML are fractions of a
# cutout of this field; a wider drawn field shows the same galaxy smaller (and its PSF narrower in px).
REFERENCE_FIELD_ARCSEC = 67.07


def render_galaxy(class_id: int, size: int = 128, rng: np.random.Generator | int | None = None, *,
                  config: dict | None = None, observing: dict | None = None, field: bool = True,
                  oversample: int = 2) -> tuple[np.ndarray, dict[str, float]]:
    """Render one galaxy of survey class ``class_id`` as a uint8 ``(size, size, 3)`` RGB cutout.

    Class ids are those of the taxonomy the survey classes file names (shipped: Galaxy10 DECaLS).
    ``config``: generating distributions (default: the shipped survey_classes.yaml); ``observing``:
    overrides of single observing ranges (domain randomisation); ``field=False`` leaves out field
    stars, background galaxies and imaging artefacts (clean images for measurements). Returns ``(image, params)`` where
    ``params`` has every name in ``PARAM_NAMES`` (NaN where not applicable) plus ``class_id``.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    config = config or load_survey_config(observing=observing)
    keys = survey_class_keys(config)
    if not 0 <= int(class_id) < len(keys):
        raise ValueError(f"class_id {class_id} is not a class id of taxonomy {config['taxonomy']!r} (0..{len(keys) - 1})")
    key = keys[int(class_id)]
    if key not in config["classes"]:
        raise KeyError(f"survey classes config has no entry for class {key!r} (id {class_id})")
    cls, obs = config["classes"][key], config["observing"]

    grid = P.Grid(size, oversample)
    scene = Scene(grid, rng)
    # Redshift sets apparent size (angular-diameter-ish), surface-brightness dimming and colour.
    z = sample(obs["redshift"], rng)
    field_arcsec = sample(obs["field_arcsec"], rng)
    # OUR CHOICE: clip the size factor; Galaxy10 cutouts are sized to their galaxy, so none is tiny or huge.
    # The drawn field of view then zooms the frame: DECaLS cutouts (fixed 67") and SDSS GZ2 cutouts
    # (sized to the galaxy, wider fields) both fall inside its range.
    scale = size * min(max((0.05 / z) ** obs["size_redshift_power"], 0.5), 1.6) * REFERENCE_FIELD_ARCSEC / field_arcsec
    cx, cy = (sample(obs["centre_jitter"], rng) * size for _ in range(2))
    paint(cls["kind"], scene, cls, scale, cx, cy)

    colours = band_colours(obs, rng, z)
    fwhm_px = sample(obs["psf_fwhm_arcsec"], rng) / (field_arcsec / size)
    beta = sample(obs["psf_beta"], rng)
    kernel = P.moffat_psf(fwhm_px, beta)
    # Bin each colour group once, then combine bands on the output grid (cheaper than per band).
    binned = {c: grid.bin(scene.layers[c]) for c in COMPONENTS}
    if scene.tails.any():
        binned["disk"] = binned["disk"] + grid.bin(P.smooth_diffuse(grid, scene.tails, rng.uniform(0.8, 2.0) * size / 128))
    galaxy = np.stack([sum(binned[c] * colours[c][b] for c in COMPONENTS) for b in range(3)])
    if scene.dust is not None:
        # Dust dims blue light most: tau_g : tau_r : tau_z = 1.3 : 1 : 0.6 (roughly a Milky Way law).
        tau = grid.bin(scene.dust) / grid.oversample**2
        galaxy *= np.exp(-tau[None] * np.array([1.3, 1.0, 0.6])[:, None, None])
    galaxy = fftconvolve(galaxy, kernel[None], mode="same", axes=(1, 2))

    sky = sample(obs["sky_noise"], rng)
    # OUR CHOICE: brightness fixes the galaxy's peak r-band S/N after the PSF (not its total flux),
    # so S/N, not an arbitrary flux unit, decides whether faint arms survive the noise.
    dimming = sample(obs["dimming_power"], rng)
    brightness = sample(obs["brightness"], rng) * ((1 + z) / 1.05) ** -dimming
    brightness = max(brightness, 3.0)
    galaxy *= brightness * sky / max(galaxy[1].max(), 1e-12)
    n_stars = n_nb = 0
    # OUR CHOICE: artefacts are painted in flux (before the stretch, so stars saturate like real ones);
    # masks and JPEG act on the final 8-bit image, where real cutouts get them.
    art: dict[str, float] = {}
    if field:
        stars, n_stars, n_nb = field_sources(grid, rng, obs, fwhm_px, sky, kernel.max())
        art.update(bright_star(stars, rng, obs, sky, kernel.max()))
        galaxy += fftconvolve(stars, kernel[None], mode="same", axes=(1, 2))
        art.update(star_spikes_and_bleed(galaxy, rng, art, sky, fwhm_px))
        art.update(satellite_trail(galaxy, rng, obs, sky, fwhm_px))
    # Calibration / band-pass differences between surveys (e.g. SDSS i vs DECaLS z as the red channel).
    balance = np.array([sample(obs["colour_balance_g"], rng), 1.0, sample(obs["colour_balance_z"], rng)])
    galaxy *= balance[:, None, None]

    read, photon = add_noise(galaxy, rng, obs, sky)
    rgb, (stretch, q_lupton, minimum) = lupton_rgb(galaxy, rng, obs, sky)
    if field:
        art.update(mask_region(rgb, rng, obs))
        rgb, quality = jpeg_round_trip(rgb, rng, obs)
        art["jpeg_quality"] = quality

    params: dict[str, Any] = {name: math.nan for name in PARAM_NAMES}
    params.update(scene.params)
    params.update(redshift=z, size_frac=scale / size, brightness=brightness, psf_fwhm_px=fwhm_px, psf_beta=beta,
                  sky_noise=sky, read_noise=read, photon_scale=photon, pxscale=field_arcsec / size,
                  n_stars=n_stars, n_neighbours=n_nb, lupton_stretch=stretch, lupton_q=q_lupton,
                  lupton_minimum=minimum, centre_x_px=cx, centre_y_px=cy, field_arcsec=field_arcsec,
                  colour_balance_g=balance[0], colour_balance_z=balance[2], dimming_power=dimming)
    params.update(art)
    params["class_id"] = int(class_id)
    return np.ascontiguousarray(rgb, dtype=np.uint8), params
