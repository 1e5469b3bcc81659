"""Light profiles of galaxy components on an oversampled pixel grid.

Smooth profiles (Sersic bulges, exponential and inclined exponential disks, the PSF) come from
GalSim; structure that GalSim cannot express (logarithmic spiral arms, bars, star-forming knots,
tidal tails, dust lanes, lopsidedness) is computed with numpy on the same grid. Every array is flux
per oversampled pixel; binning (sum) to the output grid approximates the pixel response.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import galsim
import numpy as np
from scipy import ndimage

# OUR CHOICE: Sersic index rounded to 0.05 so GalSim's per-index tables are built once per worker.
SERSIC_N_STEP = 0.05
# OUR CHOICE: intrinsic disk thickness q0 of the Hubble (1926) formula for a projected thin disk.
DISK_Q0 = 0.15


@dataclass(frozen=True)
class Grid:
    """``size`` output pixels per side, sampled ``oversample`` times per pixel; unit = output pixel."""

    size: int
    oversample: int = 2

    @property
    def n(self) -> int:
        return self.size * self.oversample

    @cached_property
    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        # Pixel centres, frame centre at 0, same convention as GalSim's true_center.
        c = (np.arange(self.n) + 0.5) / self.oversample - self.size / 2
        return np.meshgrid(c, c)  # (x along columns, y along rows)

    def zeros(self) -> np.ndarray:
        return np.zeros((self.n, self.n))

    def bin(self, a: np.ndarray) -> np.ndarray:
        s, o = self.size, self.oversample
        return a.reshape(s, o, s, o).sum(axis=(1, 3))

    def _draw(self, profile: galsim.GSObject, method: str) -> np.ndarray:
        image = galsim.ImageD(self.n, self.n, scale=1.0 / self.oversample)
        profile.drawImage(image=image, method=method)
        return image.array


def sersic(grid: Grid, n: float, r_eff: float, q: float, pa: float, cx: float, cy: float, flux: float) -> np.ndarray:
    """Sersic bulge or elliptical; ``r_eff`` half-light radius along the major axis (px), ``pa`` rad."""
    n = min(max(round(n / SERSIC_N_STEP) * SERSIC_N_STEP, 0.3), 6.2)
    # GalSim's half_light_radius is circularised; shear(q) keeps area, so scale by sqrt(q) for the major axis.
    prof = galsim.Sersic(n=n, half_light_radius=max(r_eff * math.sqrt(q), 0.05), flux=flux)
    prof = prof.shear(q=min(max(q, 0.05), 1.0), beta=pa * galsim.radians).shift(cx, cy)
    # Real-space evaluation at sub-pixel centres: exact for cuspy profiles and ~1000x faster than FFT.
    return grid._draw(prof, "no_pixel")


def thin_disk(grid: Grid, h: float, inclination: float, pa: float, cx: float, cy: float, flux: float) -> np.ndarray:
    """Exponential disk of scale radius ``h`` (px) seen at ``inclination`` (rad), projected with q0."""
    q = projected_axis_ratio(inclination)
    prof = galsim.Exponential(scale_radius=h * math.sqrt(q), flux=flux)
    return grid._draw(prof.shear(q=q, beta=pa * galsim.radians).shift(cx, cy), "no_pixel")


def thick_disk(grid: Grid, h: float, inclination: float, h_over_r: float, pa: float, cx: float, cy: float, flux: float) -> np.ndarray:
    """Inclined exponential disk with a sech^2 vertical profile (GalSim integrates the line of sight)."""
    prof = galsim.InclinedExponential(inclination * galsim.radians, scale_radius=h, scale_h_over_r=h_over_r, flux=flux)
    return grid._draw(prof.rotate(pa * galsim.radians).shift(cx, cy), "no_pixel")


def projected_axis_ratio(inclination: float, q0: float = DISK_Q0) -> float:
    c = math.cos(inclination)
    return math.sqrt(c * c * (1 - q0 * q0) + q0 * q0)


def disk_plane(grid: Grid, cx: float, cy: float, pa: float, inclination: float) -> tuple[np.ndarray, np.ndarray]:
    """Radius and azimuth in the plane of a disk (deprojected), for patterns painted onto it."""
    x, y = grid.xy
    dx, dy = x - cx, y - cy
    u = dx * math.cos(pa) + dy * math.sin(pa)
    v = (-dx * math.sin(pa) + dy * math.cos(pa)) / projected_axis_ratio(inclination)
    return np.hypot(u, v), np.arctan2(v, u)


def to_sky(r: np.ndarray, theta: np.ndarray, cx: float, cy: float, pa: float, inclination: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`disk_plane` for points (disk-plane polar -> image x, y)."""
    u, v = r * np.cos(theta), r * np.sin(theta) * projected_axis_ratio(inclination)
    return cx + u * math.cos(pa) - v * math.sin(pa), cy + u * math.sin(pa) + v * math.cos(pa)


def spiral_pattern(r: np.ndarray, theta: np.ndarray, n_arms: int, pitch: float, phase: float, width: float,
                   r_start: float, rng: np.random.Generator) -> np.ndarray:
    """Logarithmic spiral density wave in [0, 1]: arms where m(theta - ln(r/r0)/tan(pitch)) = phase.

    ``pitch`` in rad (small = tightly wound); ``width`` sharpens the arms (cos^width profile);
    arms start at ``r_start`` (the bar end or the bulge) with a smooth onset.
    """
    r0 = max(r_start, 0.5)
    psi = n_arms * (theta - np.log(np.maximum(r, 1e-3) / r0) / math.tan(pitch)) - phase
    arms = (0.5 * (1.0 + np.cos(psi))) ** width
    # OUR CHOICE: arm brightness varies along the arm (real arms are patchy, not perfect waves).
    patch = 1.0 + 0.35 * np.cos(theta * rng.integers(1, 4) + rng.uniform(0, 2 * math.pi)) * rng.uniform(0, 1)
    onset = 1.0 / (1.0 + np.exp(-(r - r0) / (0.25 * r0 + 0.5)))
    return arms * onset * patch


def ferrers_bar(r: np.ndarray, theta: np.ndarray, length: float, axis_ratio: float, angle: float) -> np.ndarray:
    """Ferrers (n=2) bar in the disk plane: (1 - m^2)^2 inside the ellipse m < 1, zero outside."""
    u, v = r * np.cos(theta - angle), r * np.sin(theta - angle)
    m2 = (u / length) ** 2 + (v / (length * axis_ratio)) ** 2
    return np.where(m2 < 1.0, (1.0 - np.minimum(m2, 1.0)) ** 2, 0.0)


def ring(r: np.ndarray, theta: np.ndarray, radius: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """Ring in the disk plane, peak 1: a Gaussian in radius at ``radius`` (sigma ``width``, px).

    OUR CHOICE: brightness varies along the ring (an m=2 wave and a random m=1 term), as real
    resonance rings are brighter where they meet the bar's ends and patchy with star formation.
    """
    along = 1.0 + 0.3 * np.cos(2 * theta - rng.uniform(0, 2 * math.pi)) + 0.2 * np.cos(theta - rng.uniform(0, 2 * math.pi))
    return np.exp(-0.5 * ((r - radius) / max(width, 0.3)) ** 2) * np.clip(along, 0.2, None)


def deposit(grid: Grid, x: np.ndarray, y: np.ndarray, flux: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Add point sources (knots, tail particles) at image positions (px) to an oversampled array."""
    out = grid.zeros() if out is None else out
    i = np.floor((y + grid.size / 2) * grid.oversample).astype(int)
    j = np.floor((x + grid.size / 2) * grid.oversample).astype(int)
    keep = (i >= 0) & (i < grid.n) & (j >= 0) & (j < grid.n)
    np.add.at(out, (i[keep], j[keep]), flux[keep])
    return out


def arm_knots(rng: np.random.Generator, count: int, h: float, n_arms: int, pitch: float, phase: float,
              r_start: float, on_arm: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Star-forming knots in the disk plane (r, theta, relative flux): along the arms, or scattered."""
    r = np.maximum(rng.gamma(2.0, h, count), 0.3 * h) + (r_start if on_arm else 0.0) * 0.5
    if on_arm and n_arms > 0:
        j = rng.integers(0, n_arms, count)
        r0 = max(r_start, 0.5)
        theta = np.log(r / r0) / math.tan(pitch) + (phase + 2 * math.pi * j) / n_arms
        theta = theta + rng.normal(0, 0.12, count)
    else:
        theta = rng.uniform(0, 2 * math.pi, count)
    return r, theta, rng.lognormal(0.0, 0.7, count)


def tidal_tail(rng: np.random.Generator, cx: float, cy: float, r_in: float, length: float, angle: float,
               curl: float, width: float, n_particles: int = 1500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A curved tidal tail as particles: it leaves the galaxy at ``angle`` and bends by ``curl`` rad."""
    t = rng.uniform(0, 1, n_particles) ** 0.8
    theta = angle + curl * t
    r = r_in + t * length
    spread = rng.normal(0, 1, n_particles) * width * (0.3 + t)
    x = cx + r * np.cos(theta) - spread * np.sin(theta)
    y = cy + r * np.sin(theta) + spread * np.cos(theta)
    return x, y, (1.0 - 0.75 * t)


def smooth_diffuse(grid: Grid, layer: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur particle layers (tails) so they read as diffuse light; sigma in output pixels."""
    return ndimage.gaussian_filter(layer, sigma_px * grid.oversample, mode="constant")


def dust_lane(grid: Grid, cx: float, cy: float, pa: float, h: float, width: float, offset: float) -> np.ndarray:
    """Optical depth profile (peak 1) of a mid-plane dust lane of an edge-on disk."""
    x, y = grid.xy
    dx, dy = x - cx, y - cy
    along = dx * math.cos(pa) + dy * math.sin(pa)
    across = -dx * math.sin(pa) + dy * math.cos(pa) - offset
    return np.exp(-0.5 * (across / width) ** 2) * np.exp(-0.5 * (along / (2.5 * h)) ** 2)


def moffat_psf(fwhm_px: float, beta: float) -> np.ndarray:
    """Normalised Moffat PSF kernel on the output grid (pixel response comes from the binning)."""
    half = int(math.ceil(2.5 * fwhm_px)) + 2
    k = 2 * half + 1
    image = galsim.Moffat(beta=beta, fwhm=fwhm_px).drawImage(nx=k, ny=k, scale=1.0, method="no_pixel")
    kernel = image.array
    return kernel / kernel.sum()


def patchy(grid: Grid, rng: np.random.Generator, scale_px: float, amplitude: float) -> np.ndarray:
    """Multiplicative lognormal texture (mean ~1): patchy star formation and dust of real disks.

    A Gaussian random field smoothed over ``scale_px`` output pixels, normalised to unit spread,
    then ``exp(amplitude * field)``; ``amplitude`` 0 gives a flat field.
    """
    field = ndimage.gaussian_filter(rng.standard_normal((grid.n, grid.n)), max(scale_px, 0.5) * grid.oversample, mode="wrap")
    field /= field.std() + 1e-12
    texture = np.exp(amplitude * field)
    return texture / texture.mean()
