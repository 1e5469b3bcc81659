"""The instrument and the sky: field stars and neighbours, imaging artefacts, noise and the RGB stretch.

Each function takes the rendered bands (or the final 8-bit image) and the observing ranges of
``survey_classes.yaml``, draws its own values from ``rng`` and returns the parameters it drew.
"""
from __future__ import annotations

import io
import math

import numpy as np
from astropy.visualization import make_lupton_rgb
from PIL import Image

from galaxalign.survey import profiles as P
from galaxalign.survey.classes import sample


def field_sources(grid: P.Grid, rng: np.random.Generator, obs: dict, psf_fwhm: float, sky: float, kernel_peak: float) -> tuple[np.ndarray, int, int]:
    """Field stars (points) and faint background galaxies, per band, on the output grid (pre-PSF)."""
    s = grid.size
    bands = np.zeros((3, s, s))
    n_stars = int(rng.poisson(sample(obs["n_stars"], rng)))
    for _ in range(n_stars):
        x, y = rng.uniform(0, s, 2)
        # OUR CHOICE: star colour from a temperature-like t: blue-white (t=0) to red (t=1).
        t = rng.uniform() ** 1.5
        colour = np.array([1.15 - 0.75 * t, 1.0, 0.7 + 1.3 * t])
        bands[:, int(y), int(x)] += sample(obs["star_peak"], rng) * sky / kernel_peak * colour
    n_nb = int(rng.poisson(sample(obs["n_neighbours"], rng)))
    if n_nb:
        native = P.Grid(s, 1)
        for _ in range(n_nb):
            x, y = rng.uniform(-s / 2, s / 2, 2)
            r_eff = rng.uniform(0.6, 3.5) * s / 128
            peak = sample(obs["neighbour_peak"], rng) * sky
            flux = peak * 2 * math.pi * ((r_eff / 1.2) ** 2 + (psf_fwhm / 2.355) ** 2)
            # Small and faint: drawn on the output grid directly (no oversampling) to save time.
            img = P.sersic(native, rng.uniform(0.8, 4.0), r_eff, rng.uniform(0.3, 1.0), rng.uniform(0, math.pi), x, y, flux)
            colour = np.array([rng.uniform(0.4, 1.1), 1.0, rng.uniform(0.8, 1.9)])
            bands += img[None] * colour[:, None, None]
    return bands, n_stars, n_nb


def _away_from_centre(rng: np.random.Generator, size: int, min_frac: float = 0.22) -> tuple[float, float]:
    """A pixel position at least ``min_frac`` of the side from the centre: artefacts spoil, not hide, the galaxy."""
    while True:
        x, y = rng.uniform(0, size, 2)
        if math.hypot(x - size / 2, y - size / 2) >= min_frac * size:
            return float(x), float(y)


def bright_star(stars: np.ndarray, rng: np.random.Generator, obs: dict, sky: float, kernel_peak: float) -> dict[str, float]:
    """Artefact: a saturated foreground star (pre-PSF point), added to ``stars`` in place."""
    if rng.uniform() >= obs["artefact_bright_star"]:
        return {}
    size = stars.shape[-1]
    x, y = _away_from_centre(rng, size)
    peak = sample(obs["bright_star_peak"], rng)
    stars[:, int(y), int(x)] += peak * sky / kernel_peak * np.array([0.9, 1.0, 1.1])
    return {"bright_star_peak": peak, "_star_x": x, "_star_y": y}


def star_spikes_and_bleed(galaxy: np.ndarray, rng: np.random.Generator, art: dict, sky: float, fwhm_px: float) -> dict[str, float]:
    """Diffraction spikes (a cross from the secondary-mirror vanes) and a bleed trail along the CCD columns."""
    if "_star_x" not in art:
        return {}
    x0, y0, peak = art.pop("_star_x"), art.pop("_star_y"), art["bright_star_peak"] * sky
    size = galaxy.shape[-1]
    y, x = np.mgrid[0:size, 0:size].astype(float)
    dx, dy = x - x0, y - y0
    # OUR CHOICE: spikes fall as 1/distance with the PSF's width; ~0.5 % of the star's peak at one FWHM.
    width = max(fwhm_px / 2.355, 0.5)
    angle = rng.choice([0.0, math.pi / 4])  # SDSS-like (+) or rotated (x) vanes
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    spikes = (np.exp(-0.5 * (v / width) ** 2) / (1 + np.abs(u) / fwhm_px)
              + np.exp(-0.5 * (u / width) ** 2) / (1 + np.abs(v) / fwhm_px))
    galaxy += 0.005 * peak * spikes[None]
    # Bleed: charge overflowing the saturated pixels runs along the column, both ways.
    length = rng.uniform(0.05, 0.3) * size
    column = np.exp(-0.5 * (dx / max(0.6, 0.3 * fwhm_px)) ** 2) * (np.abs(dy) < length)
    galaxy += 0.05 * peak * column[None]
    return {}


def satellite_trail(galaxy: np.ndarray, rng: np.random.Generator, obs: dict, sky: float, fwhm_px: float) -> dict[str, float]:
    """Artefact: a straight satellite / aircraft trail across the frame, often in one band only."""
    if rng.uniform() >= obs["artefact_satellite_trail"]:
        return {}
    size = galaxy.shape[-1]
    peak = sample(obs["satellite_trail_peak"], rng)
    angle = rng.uniform(0, math.pi)
    offset = rng.uniform(-0.45, 0.45) * size
    y, x = np.mgrid[0:size, 0:size].astype(float)
    d = (x - size / 2) * math.sin(angle) - (y - size / 2) * math.cos(angle) - offset
    line = np.exp(-0.5 * (d / max(fwhm_px / 2.355, 0.5)) ** 2) * peak * sky
    # SDSS exposes g, r, i minutes apart: a trail usually crosses one band (a coloured streak).
    bands = [int(rng.integers(3))] if rng.uniform() < 0.6 else [0, 1, 2]
    for b in bands:
        galaxy[b] += line
    return {"satellite_trail_peak": peak}


def mask_region(rgb: np.ndarray, rng: np.random.Generator, obs: dict) -> dict[str, float]:
    """Artefact: pixels with no data (outside the footprint, a chip gap, a masked column) set to black."""
    if rng.uniform() >= obs["artefact_masked_region"]:
        return {}
    # OUR CHOICE: 60 % edge bands (5-30 % of the side), 40 % chip-gap stripes (2-6 %), never through the centre.
    size = rgb.shape[0]
    if rng.uniform() < 0.6:
        # Off the survey footprint: a band along one edge.
        depth = int(round(rng.uniform(0.05, 0.3) * size))
        edge = int(rng.integers(4))
        sl = [slice(None), slice(None)]
        sl[edge % 2] = slice(0, depth) if edge < 2 else slice(size - depth, size)
        rgb[tuple(sl)] = 0
        frac = depth / size
    else:
        # Chip gap: a narrow stripe away from the centre.
        width = max(1, int(round(rng.uniform(0.02, 0.06) * size)))
        pos = int(round(_away_from_centre(rng, size, 0.15)[0]))
        lo, hi = max(0, pos - width // 2), min(size, pos - width // 2 + width)
        if rng.uniform() < 0.5:
            rgb[:, lo:hi] = 0
        else:
            rgb[lo:hi] = 0
        frac = (hi - lo) / size
    return {"masked_fraction": frac}


def jpeg_round_trip(rgb: np.ndarray, rng: np.random.Generator, obs: dict) -> tuple[np.ndarray, float]:
    """JPEG round trip at a random quality (survey cutout services serve JPEGs); returns (image, quality or NaN)."""
    if rng.uniform() >= obs["jpeg_prob"]:
        return rgb, math.nan
    # OUR CHOICE: PIL's encoder with its default 4:2:0 chroma subsampling, as common cutout services use.
    quality = int(round(sample(obs["jpeg_quality"], rng)))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB")), float(quality)


def add_noise(galaxy: np.ndarray, rng: np.random.Generator, obs: dict, sky: float) -> tuple[float, float]:
    """Sky, read and photon noise added to the bands in place; returns (read noise, photon scale)."""
    size = galaxy.shape[-1]
    band_sky = sky * np.array([sample(obs["band_noise_g"], rng), 1.0, sample(obs["band_noise_z"], rng)])
    read = sample(obs["read_noise"], rng)
    photon = sample(obs["photon_scale"], rng)
    # OUR CHOICE: Gaussian noise with a Poisson-like variance (sky + read + photon_scale * signal);
    # cutouts are sky-subtracted, so the background is zero-mean.
    noise = rng.standard_normal((3, size, size))
    for b in range(3):
        var = band_sky[b] ** 2 * (1 + read**2) + photon * band_sky[b] * np.maximum(galaxy[b], 0)
        galaxy[b] += noise[b] * np.sqrt(var)
    return read, photon


def lupton_rgb(galaxy: np.ndarray, rng: np.random.Generator, obs: dict, sky: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The bands as an 8-bit RGB image; returns (image, (stretch, Q, minimum)) with the drawn settings."""
    # OUR CHOICE: Lupton asinh settings in sky-sigma units, drawn per galaxy like varying cutout services.
    stretch = sample(obs["lupton_stretch"], rng)
    q_lupton = sample(obs["lupton_q"], rng)
    minimum = sample(obs["lupton_minimum"], rng)
    # DECaLS cutout convention: z -> R, r -> G, g -> B.
    rgb = make_lupton_rgb(galaxy[2], galaxy[1], galaxy[0], minimum=minimum * sky, stretch=stretch * sky, Q=q_lupton)
    return rgb, (stretch, q_lupton, minimum)
