"""Render one synthetic galaxy cutout: physical model -> g, r, z bands -> PSF, noise -> Lupton RGB.

``render_galaxy(class_id, size, rng)`` draws the class's generating parameters from
``survey_classes.yaml``, paints the galaxy's components (bulge, disk, arms, bar, knots, companion,
tails, dust) in flux per band, adds field stars and background galaxies, convolves with a Moffat PSF,
adds sky, read and photon noise, and maps z, r, g to R, G, B with ``make_lupton_rgb`` as DECaLS
cutouts do. Domain randomisation (v1.1): the field of view, PSF, noise, colour balance and dimming
are drawn per cutout, and imaging artefacts (a saturated star with spikes and a bleed column, a
satellite trail, a masked edge or chip gap, JPEG compression) appear with small probabilities.
Returns the uint8 image and every generating parameter (NaN where not applicable).
"""
from __future__ import annotations

import io
import math
from functools import lru_cache
from typing import Any

import numpy as np
from astropy.visualization import make_lupton_rgb
from PIL import Image
from scipy.signal import fftconvolve

from galaxalign.survey import profiles as P
from galaxalign.survey.classes import load_survey_config, sample

BANDS = ("g", "r", "z")
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
)
COMPONENTS = ("bulge", "disk", "arms")  # colour groups; bars use the bulge colour, knots the arm colour
# Galaxy10 DECaLS cutout field (256 px x 0.262 arcsec): galaxy sizes in the YAML are fractions of a
# cutout of this field; a wider drawn field shows the same galaxy smaller (and its PSF narrower in px).
REFERENCE_FIELD_ARCSEC = 67.07


@lru_cache(maxsize=1)
def galaxy10_class_keys() -> tuple[str, ...]:
    from galaxalign.taxonomy import load_taxonomy

    return tuple(c.key for c in load_taxonomy("galaxy10_decals").classes)


class _Scene:
    """Flux layers on the oversampled grid, one per colour group, plus the parameters drawn."""

    def __init__(self, grid: P.Grid, rng: np.random.Generator):
        self.grid, self.rng = grid, rng
        self.layers = {c: grid.zeros() for c in COMPONENTS}
        self.tails = grid.zeros()
        self.dust: np.ndarray | None = None
        self.params: dict[str, float] = {}

    def set(self, **values: float) -> None:
        for k, v in values.items():
            self.params.setdefault(k, float(v))  # the main galaxy's values win over a companion's


def _pa(rng: np.random.Generator) -> float:
    return rng.uniform(0, math.pi)


def _smooth(scene: _Scene, cls: dict, scale: float, cx: float, cy: float, flux: float, main: bool = True) -> float:
    """Elliptical: Sersic body and an optional faint exponential envelope. Returns the size (px)."""
    rng = scene.rng
    r_eff = sample(cls["size"], rng) * scale
    n = sample(cls.get("sersic_n", ["uniform", 2.5, 4.5]), rng)
    q = sample(cls.get("axis_ratio", ["uniform", 0.5, 1.0]), rng)
    halo = sample(cls.get("halo_fraction", 0.0), rng)
    pa = _pa(rng)
    scene.layers["bulge"] += P.sersic(scene.grid, n, r_eff, q, pa, cx, cy, flux * (1 - halo))
    if halo > 0:
        # OUR CHOICE: the envelope shares the body's orientation, a little rounder, in disk colour.
        scene.layers["disk"] += P.thin_disk(scene.grid, 1.3 * r_eff, math.acos(min(1.0, q + 0.1)), pa, cx, cy, flux * halo)
    if main:
        scene.set(axis_ratio=q, position_angle_deg=math.degrees(pa), sersic_n=n, r_eff_px=r_eff, halo_fraction=halo)
    return r_eff


def _disk(scene: _Scene, cls: dict, scale: float, cx: float, cy: float, flux: float, main: bool = True,
          arms: bool = True, lopsided: float = 0.0) -> float:
    """Bulge + exponential disk with optional arms, bar and knots. Returns the disk scale radius (px)."""
    rng, grid = scene.rng, scene.grid
    h = sample(cls["size"], rng) * scale
    incl = math.radians(sample(cls.get("inclination_deg", ["cos_uniform", 0, 70]), rng))
    bt = sample(cls.get("bulge_fraction", ["uniform", 0.05, 0.4]), rng)
    n = sample(cls.get("sersic_n", ["uniform", 1.0, 4.0]), rng)
    pa = _pa(rng)
    q = P.projected_axis_ratio(incl)
    # OUR CHOICE: bulge half-light radius 0.2-0.6 disk scale radii, a little flattened by inclination.
    r_bulge = h * rng.uniform(0.2, 0.6)
    q_bulge = max(q, rng.uniform(0.7, 1.0))
    bx, by = cx, cy
    if lopsided > 0:
        # Disturbed: the bulge sits off the disk centre.
        off = lopsided * h * rng.uniform(0.2, 0.8)
        ang = rng.uniform(0, 2 * math.pi)
        bx, by = cx + off * math.cos(ang), cy + off * math.sin(ang)
    if bt > 0:
        scene.layers["bulge"] += P.sersic(grid, n, r_bulge, q_bulge, pa, bx, by, flux * bt)
    disk = P.thin_disk(grid, h, incl, pa, cx, cy, flux * (1 - bt))
    floc = sample(cls.get("flocculence", 0.0), rng)
    if floc > 0:
        # OUR CHOICE: patches ~0.15 disk scale radii across, the size of star-forming complexes (~0.5 kpc).
        disk = disk * P.patchy(grid, rng, 0.15 * h, floc)
    r, theta = P.disk_plane(grid, cx, cy, pa, incl)
    if lopsided > 0:
        # m=1 and m=2 distortions growing outwards: a lopsided, asymmetric disk.
        x = r / h
        mod = 1 + lopsided * (x / (1 + x)) * (np.cos(theta - rng.uniform(0, 6.3)) + 0.5 * np.cos(2 * theta - rng.uniform(0, 6.3)))
        disk = disk * np.clip(mod, 0.05, None)
    params: dict[str, float] = dict(inclination_deg=math.degrees(incl), axis_ratio=q, position_angle_deg=math.degrees(pa),
                                    sersic_n=n, r_eff_px=r_bulge, bulge_fraction=bt, disk_scale_px=h, flocculence=floc)
    n_arms, pitch, phase, r_start = 0, math.radians(20.0), rng.uniform(0, 2 * math.pi), 0.6 * h
    has_bar = "bar_strength" in cls and rng.uniform() < cls.get("bar_prob", 1.0)
    if has_bar:
        bar_s = sample(cls["bar_strength"], rng)
        bar_len = sample(cls["bar_length"], rng) * h
        bar_q = sample(cls["bar_axis_ratio"], rng)
        bar_angle = rng.uniform(0, 2 * math.pi)
        # Bar surface brightness relative to the disk's central surface brightness.
        bar = P.ferrers_bar(r, theta, bar_len, bar_q, bar_angle) * bar_s * disk.max()
        scene.layers["bulge"] += 0.6 * bar
        scene.layers["disk"] += 0.4 * bar
        r_start = bar_len
        params.update(bar_strength=bar_s, bar_length_px=bar_len, bar_axis_ratio=bar_q)
    else:
        bar_angle = phase
        params.update(bar_strength=0.0)
    if arms and "pitch_deg" in cls:
        n_arms = int(sample(cls["n_arms"], rng))
        pitch = math.radians(sample(cls["pitch_deg"], rng))
        a = sample(cls["arm_strength"], rng)
        width = sample(cls["arm_width"], rng)
        # Arms leave the bar ends: phase chosen so the arm passes theta = bar angle at r_start.
        phase = n_arms * bar_angle if has_bar else phase
        pattern = P.spiral_pattern(r, theta, n_arms, pitch, phase, width, r_start, rng)
        # Arms redistribute disk light: the arm layer is blue, the inter-arm disk keeps the rest.
        arm_light = disk * np.minimum(a * pattern, 3.0)
        scene.layers["arms"] += arm_light
        scene.layers["disk"] += disk * np.clip(1.0 - 0.5 * a * pattern.mean(), 0.2, 1.0)
        params.update(pitch_deg=math.degrees(pitch), n_arms=n_arms, arm_strength=a, arm_width=width)
    else:
        scene.layers["disk"] += disk
    if "n_knots" in cls:
        count = int(sample(cls["n_knots"], rng))
        frac = sample(cls["knot_fraction"], rng)
        if count > 0 and frac > 0:
            kr, kt, kf = P.arm_knots(rng, count, h, n_arms, pitch, phase, r_start, on_arm=n_arms > 0)
            kx, ky = P.to_sky(kr, kt, cx, cy, pa, incl)
            P.deposit(grid, kx, ky, flux * (1 - bt) * frac * kf / kf.sum(), out=scene.layers["arms"])
        params.update(n_knots=count, knot_fraction=frac)
    if main:
        scene.set(**params)
    return h


def _edge_on(scene: _Scene, cls: dict, scale: float, cx: float, cy: float, flux: float) -> float:
    rng, grid = scene.rng, scene.grid
    h = sample(cls["size"], rng) * scale
    incl = math.radians(sample(cls["inclination_deg"], rng))
    hr = sample(cls["scale_height_ratio"], rng)
    bt = sample(cls["bulge_fraction"], rng)
    n = sample(cls["sersic_n"], rng)
    qb = sample(cls["bulge_axis_ratio"], rng)
    pa = _pa(rng)
    r_bulge = h * rng.uniform(0.25, 0.6)
    disk = P.thick_disk(grid, h, incl, hr, pa, cx, cy, flux * (1 - bt))
    floc = sample(cls.get("flocculence", 0.0), rng)
    if floc > 0:
        disk = disk * P.patchy(grid, rng, 0.15 * h, floc)  # patchy dust and HII regions along the disk
    scene.layers["disk"] += disk
    if bt > 0:
        scene.layers["bulge"] += P.sersic(grid, n, r_bulge, qb, pa, cx, cy, flux * bt)
    has_dust = rng.uniform() < cls.get("dust_prob", 0.0)
    tau = sample(cls["dust_tau"], rng) if has_dust else 0.0
    if has_dust:
        # The lane sits just off the mid-plane on the near side; narrower than the disk's thickness.
        width = max(0.35, 0.4 * hr * h)
        offset = (math.pi / 2 - incl) * h * rng.choice([-1, 1]) * 0.8
        scene.dust = tau * P.dust_lane(grid, cx, cy, pa, h, width, offset)
    q = math.sqrt(math.cos(incl) ** 2 + (1.5 * hr) ** 2 * math.sin(incl) ** 2)  # ~ projected thickness ratio
    scene.set(inclination_deg=math.degrees(incl), axis_ratio=min(q, 1.0), position_angle_deg=math.degrees(pa),
              sersic_n=n, r_eff_px=r_bulge, bulge_fraction=bt, disk_scale_px=h, scale_height_ratio=hr,
              dust_lane=float(has_dust), dust_tau=tau, flocculence=floc)
    return h


def _tails(scene: _Scene, cls: dict, scale: float, cx: float, cy: float, size_px: float, flux: float, toward: float) -> None:
    """Tidal tails as curved particle streams; ``toward`` is the direction of the perturber (rad)."""
    rng = scene.rng
    count = int(sample(cls.get("n_tails", 0), rng))
    strength = sample(cls["tail_strength"], rng) if count else 0.0
    for k in range(count):
        # One tail points away from the perturber, a second (bridge-like) towards it.
        angle = toward + math.pi * (1 - k % 2) + rng.normal(0, 0.5)
        length = sample(cls["tail_length"], rng) * scale
        curl = rng.choice([-1, 1]) * rng.uniform(0.4, 1.8)
        # OUR CHOICE: tails start outside the body (1.2 sizes) so they read as debris, not a ring.
        x, y, w = P.tidal_tail(rng, cx, cy, 1.2 * size_px, length, angle, curl, rng.uniform(1.5, 4.0) * scale / 128 + 0.1 * length)
        P.deposit(scene.grid, x, y, flux * strength / count * w / w.sum(), out=scene.tails)
    scene.set(n_tails=count, tail_strength=strength)


def _companion(scene: _Scene, cls: dict, scale: float, flux: float) -> float:
    rng = scene.rng
    ratio = sample(cls["companion_flux_ratio"], rng)
    sep = sample(cls["companion_sep"], rng) * scale
    ang = rng.uniform(0, 2 * math.pi)
    ox, oy = sep * math.cos(ang), sep * math.sin(ang)
    sub = dict(cls)
    # OUR CHOICE: companions are smaller (size ~ flux^0.5) and either smooth or disky at random.
    sub["size"] = sample(cls["size"], rng) * math.sqrt(ratio)
    if rng.uniform() < 0.5:
        sub["axis_ratio"] = ["uniform", 0.4, 1.0]
        _smooth(scene, sub, 1.0, ox, oy, flux * ratio, main=False)
    else:
        sub.pop("pitch_deg", None)
        _disk(scene, sub, 1.0, ox, oy, flux * ratio, main=False, arms=False)
    scene.set(companion_flux_ratio=ratio, companion_sep_px=sep)
    return ang  # direction of the companion: tails point away from and towards it


def _paint(kind: str, scene: _Scene, cls: dict, scale: float, cx: float, cy: float) -> None:
    rng = scene.rng
    if kind == "smooth":
        _smooth(scene, cls, scale, cx, cy, 1.0)
    elif kind == "spiral":
        # Real disks are mildly lopsided (m=1) too, not only disturbed ones.
        lop = sample(cls.get("lopsidedness", 0.0), rng)
        _disk(scene, cls, scale, cx, cy, 1.0, lopsided=lop)
        scene.set(asymmetry=lop)
    elif kind == "edge_on":
        _edge_on(scene, cls, scale, cx, cy, 1.0)
    elif kind == "disturbed":
        asym = sample(cls["asymmetry"], rng)
        h = _disk(scene, cls, scale, cx, cy, 1.0, arms=False, lopsided=asym)
        toward = rng.uniform(0, 2 * math.pi)
        if rng.uniform() < cls.get("companion_prob", 0.0):
            toward = _companion(scene, cls, scale, 1.0)
        _tails(scene, cls, scale, cx, cy, h, 1.0, toward)
        scene.set(asymmetry=asym)
    elif kind == "merger":
        asym = sample(cls.get("asymmetry", 0.0), rng)
        # OUR CHOICE: the primary is smooth or disky with equal odds; both are mildly lopsided.
        if rng.uniform() < 0.5:
            sub = dict(cls, axis_ratio=["uniform", 0.45, 1.0], halo_fraction=["uniform", 0.0, 0.3])
            size = _smooth(scene, sub, scale, cx, cy, 1.0)
        else:
            size = _disk(scene, cls, scale, cx, cy, 1.0, arms=False, lopsided=asym)
        toward = _companion(scene, cls, scale, 1.0)
        _tails(scene, cls, scale, cx, cy, size, 0.8, toward)
        scene.set(asymmetry=asym)
    else:  # validated in classes.py; kept for a clear message if the kinds ever grow
        raise ValueError(f"unknown galaxy kind {kind!r}")


def _colours(obs: dict, rng: np.random.Generator, redshift: float) -> dict[str, np.ndarray]:
    """Band flux / r flux for each colour group, reddened with redshift (k-correction-ish)."""
    redden = ((1 + redshift) / 1.05) ** -obs["reddening_per_z"]
    out = {}
    for comp in COMPONENTS:
        g = sample(obs[f"colour_{comp}_g"], rng) * redden
        z = sample(obs[f"colour_{comp}_z"], rng) / redden
        out[comp] = np.array([g, 1.0, z])
    return out


def _field(grid: P.Grid, rng: np.random.Generator, obs: dict, psf_fwhm: float, sky: float, kernel_peak: float) -> tuple[np.ndarray, int, int]:
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


def _bright_star(stars: np.ndarray, rng: np.random.Generator, obs: dict, sky: float, kernel_peak: float) -> dict[str, float]:
    """Artefact: a saturated foreground star (pre-PSF point), added to ``stars`` in place."""
    if rng.uniform() >= obs["artefact_bright_star"]:
        return {}
    size = stars.shape[-1]
    x, y = _away_from_centre(rng, size)
    peak = sample(obs["bright_star_peak"], rng)
    stars[:, int(y), int(x)] += peak * sky / kernel_peak * np.array([0.9, 1.0, 1.1])
    return {"bright_star_peak": peak, "_star_x": x, "_star_y": y}


def _star_spikes_and_bleed(galaxy: np.ndarray, rng: np.random.Generator, art: dict, sky: float, fwhm_px: float) -> dict[str, float]:
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


def _satellite_trail(galaxy: np.ndarray, rng: np.random.Generator, obs: dict, sky: float, fwhm_px: float) -> dict[str, float]:
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


def _mask_region(rgb: np.ndarray, rng: np.random.Generator, obs: dict) -> dict[str, float]:
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


def _jpeg(rgb: np.ndarray, rng: np.random.Generator, obs: dict) -> tuple[np.ndarray, float]:
    """JPEG round trip at a random quality (survey cutout services serve JPEGs); returns (image, quality or NaN)."""
    if rng.uniform() >= obs["jpeg_prob"]:
        return rgb, math.nan
    # OUR CHOICE: PIL's encoder with its default 4:2:0 chroma subsampling, as common cutout services use.
    quality = int(round(sample(obs["jpeg_quality"], rng)))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB")), float(quality)


def render_galaxy(class_id: int, size: int = 128, rng: np.random.Generator | int | None = None, *,
                  config: dict | None = None, observing: dict | None = None, field: bool = True,
                  oversample: int = 2) -> tuple[np.ndarray, dict[str, float]]:
    """Render one galaxy of Galaxy10 DECaLS class ``class_id`` as a uint8 ``(size, size, 3)`` RGB cutout.

    ``config``: generating distributions (default: the shipped survey_classes.yaml); ``observing``:
    overrides of single observing ranges (domain randomisation); ``field=False`` leaves out field
    stars, background galaxies and imaging artefacts (clean images for measurements). Returns ``(image, params)`` where
    ``params`` has every name in ``PARAM_NAMES`` (NaN where not applicable) plus ``class_id``.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    config = config or load_survey_config(observing=observing)
    keys = galaxy10_class_keys()
    if not 0 <= int(class_id) < len(keys):
        raise ValueError(f"class_id {class_id} is not a Galaxy10 DECaLS class id (0..{len(keys) - 1})")
    key = keys[int(class_id)]
    if key not in config["classes"]:
        raise KeyError(f"survey classes config has no entry for class {key!r} (id {class_id})")
    cls, obs = config["classes"][key], config["observing"]

    grid = P.Grid(size, oversample)
    scene = _Scene(grid, rng)
    # Redshift sets apparent size (angular-diameter-ish), surface-brightness dimming and colour.
    z = sample(obs["redshift"], rng)
    field_arcsec = sample(obs["field_arcsec"], rng)
    # OUR CHOICE: clip the size factor; Galaxy10 cutouts are sized to their galaxy, so none is tiny or huge.
    # The drawn field of view then zooms the frame: DECaLS cutouts (fixed 67") and SDSS GZ2 cutouts
    # (sized to the galaxy, wider fields) both fall inside its range.
    scale = size * min(max((0.05 / z) ** obs["size_redshift_power"], 0.5), 1.6) * REFERENCE_FIELD_ARCSEC / field_arcsec
    cx, cy = (sample(obs["centre_jitter"], rng) * size for _ in range(2))
    _paint(cls["kind"], scene, cls, scale, cx, cy)

    colours = _colours(obs, rng, z)
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
        stars, n_stars, n_nb = _field(grid, rng, obs, fwhm_px, sky, kernel.max())
        art.update(_bright_star(stars, rng, obs, sky, kernel.max()))
        galaxy += fftconvolve(stars, kernel[None], mode="same", axes=(1, 2))
        art.update(_star_spikes_and_bleed(galaxy, rng, art, sky, fwhm_px))
        art.update(_satellite_trail(galaxy, rng, obs, sky, fwhm_px))
    # Calibration / band-pass differences between surveys (e.g. SDSS i vs DECaLS z as the red channel).
    balance = np.array([sample(obs["colour_balance_g"], rng), 1.0, sample(obs["colour_balance_z"], rng)])
    galaxy *= balance[:, None, None]

    band_sky = sky * np.array([sample(obs["band_noise_g"], rng), 1.0, sample(obs["band_noise_z"], rng)])
    read = sample(obs["read_noise"], rng)
    photon = sample(obs["photon_scale"], rng)
    # OUR CHOICE: Gaussian noise with a Poisson-like variance (sky + read + photon_scale * signal);
    # cutouts are sky-subtracted, so the background is zero-mean.
    noise = rng.standard_normal((3, size, size))
    for b in range(3):
        var = band_sky[b] ** 2 * (1 + read**2) + photon * band_sky[b] * np.maximum(galaxy[b], 0)
        galaxy[b] += noise[b] * np.sqrt(var)

    # OUR CHOICE: Lupton asinh settings in sky-sigma units, drawn per galaxy like varying cutout services.
    stretch = sample(obs["lupton_stretch"], rng)
    q_lupton = sample(obs["lupton_q"], rng)
    minimum = sample(obs["lupton_minimum"], rng)
    # DECaLS cutout convention: z -> R, r -> G, g -> B.
    rgb = make_lupton_rgb(galaxy[2], galaxy[1], galaxy[0], minimum=minimum * sky, stretch=stretch * sky, Q=q_lupton)
    if field:
        art.update(_mask_region(rgb, rng, obs))
        rgb, quality = _jpeg(rgb, rng, obs)
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
