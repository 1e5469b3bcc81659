"""Morphology statistics of one galaxy cutout: what a rendered galaxy must match in a real one.

Non-parametric morphology (concentration, asymmetry, smoothness, Gini, M20) and a Sérsic fit come
from statmorph; size, surface brightness, colours and the sky noise are measured here so that they
survive a statmorph failure. Every statistic is computed the same way for rendered and real images,
so what matters is that both go through one pipeline, not the absolute calibration of the flux.

Flux: survey colour JPEGs (SDSS gri, DECaLS grz) are asinh stretches of the flux (Lupton et al.
2004) with the red/green/blue channels holding the reddest/middle/bluest band; the green channel is
the r band in both. We invert the asinh stretch to get a linear-ish flux and measure morphology on
the green (r-like) channel; colours come from channel ratios, which Lupton composites preserve.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

# Name -> one-line meaning; the order is the order of tables and plots.
STATISTICS: dict[str, str] = {
    "concentration": "C = 5 log10(r80/r20) (statmorph)",
    "asymmetry": "A, rotational asymmetry (statmorph)",
    "smoothness": "S, clumpiness (statmorph)",
    "gini": "Gini coefficient of the pixel fluxes (statmorph)",
    "m20": "M20, second moment of the brightest 20% (statmorph)",
    "sersic_n": "Sérsic index of a single-Sérsic fit (statmorph)",
    "ellipticity": "1 - b/a from the second moments (statmorph ellipticity_asymmetry)",
    "r_half": "half-light radius / cutout side (r band, inside the segmap)",
    "surface_brightness": "-2.5 log10(mean r flux per pixel inside r_half), flux in faint-end grey units (linear_flux)",
    "colour_b_g": "-2.5 log10(B / G) of the summed channel values inside the segmap (g-r like)",
    "colour_b_r": "-2.5 log10(B / R) of the summed channel values inside the segmap (g-i / g-z like)",
    "colour_gradient": "(B-R) inside r_half/2 minus (B-R) between r_half and 2 r_half (>0: redder centre)",
    "sky_level": "median sky flux (sigma-clipped, sources masked)",
    "sky_noise": "robust std of the sky flux (sigma-clipped, sources masked)",
}
STATMORPH_STATISTICS = ("concentration", "asymmetry", "smoothness", "gini", "m20", "sersic_n", "ellipticity")

# OUR CHOICE: asinh softening Q = 8, the SDSS colour-JPEG value (Lupton et al. 2004). Inverting it
# brings galaxy cores back up to a light profile, which concentration, Gini, M20 and Sérsic need.
ASINH_Q = 8.0
# OUR CHOICE: segmentation = Gaussian smoothing (sigma 1.5 px), then pixels above sky + 1.5 sigma of
# the per-pixel sky, keeping the connected region at (or nearest) the centre. The threshold has a
# floor of 2 grey levels above the sky: SDSS JPEG skies are clipped at 0, so their measured std can
# be ~0 and a pure-sigma threshold would then flood the whole cutout.
SMOOTH_SIGMA = 1.5
DETECT_NSIGMA = 1.5
DETECT_FLOOR_U8 = 2.0


def linear_flux(image: np.ndarray, q: float = ASINH_Q) -> np.ndarray:
    """uint8 colour (or grey) image -> float64 flux by inverting an asinh stretch.

    Units: sinh(q x) / q with x = grey / 255, so faint pixels keep their value (flux ~ x near 0,
    noise in units of full-scale grey) and 255 maps to sinh(q) / q (186 for q = 8).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"linear_flux expects a uint8 image, got dtype {image.dtype}")
    x = image.astype(np.float64) / 255.0
    return np.sinh(q * x) / q


def _u8_to_flux_step(level_u8: float, q: float = ASINH_Q) -> float:
    """Flux difference of a grey-level step at the bottom of the stretch (used for thresholds)."""
    return math.sinh(q * level_u8 / 255.0) / q


def sky_background(flux: np.ndarray, source_mask: np.ndarray | None = None) -> tuple[float, float]:
    """(median, robust std) of the sky: 3-sigma clipped, sources (if given) masked out."""
    from astropy.stats import sigma_clipped_stats

    mask = None if source_mask is None else np.asarray(source_mask, bool)
    if mask is not None and mask.all():
        raise ValueError("sky_background: the source mask covers the whole image; no sky pixels left")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, median, std = sigma_clipped_stats(flux, mask=mask, sigma=3.0, maxiters=10)
    return float(median), float(std)


def segment_galaxy(flux: np.ndarray, q: float = ASINH_Q) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation of the central galaxy: (segmap of the central source, mask of all other sources).

    ``flux`` is a 2-D linear flux image. Raises ValueError when nothing is detected.
    """
    if flux.ndim != 2:
        raise ValueError(f"segment_galaxy expects a 2-D image, got shape {flux.shape}")
    smooth = ndimage.gaussian_filter(flux, SMOOTH_SIGMA)
    sky, _ = sky_background(smooth)
    # The per-pixel (unsmoothed) sky std sets the threshold, as photutils does with a background
    # rms map: on the smoothed image that is a conservative, many-sigma cut that stops the segmap
    # from wandering into correlated noise.
    _, std = sky_background(flux)
    threshold = sky + max(DETECT_NSIGMA * std, _u8_to_flux_step(DETECT_FLOOR_U8, q))
    labels, n = ndimage.label(smooth > threshold)
    if n == 0:
        raise ValueError("no source above the detection threshold")
    h, w = flux.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    central = labels[int(round(cy)), int(round(cx))]
    if central == 0:
        # Nearest labelled pixel to the centre: real cutouts are centred on the galaxy, give or take.
        ys, xs = np.nonzero(labels)
        k = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
        central = labels[ys[k], xs[k]]
    segmap = labels == central
    others = (labels > 0) & ~segmap
    return segmap, others


def half_light_radius(flux: np.ndarray, segmap: np.ndarray, centre: tuple[float, float]) -> float:
    """Radius (pixels) holding half of the segmap's flux, around ``centre`` = (y, x)."""
    ys, xs = np.nonzero(segmap)
    f = np.clip(flux[ys, xs], 0, None)
    if f.sum() <= 0:
        raise ValueError("segmap holds no positive flux")
    r = np.hypot(ys - centre[0], xs - centre[1])
    order = np.argsort(r)
    cum = np.cumsum(f[order])
    k = int(np.searchsorted(cum, 0.5 * cum[-1]))
    return float(max(r[order][k], 0.5))


def _colour(num: np.ndarray, den: np.ndarray) -> float:
    """-2.5 log10(sum num / sum den); NaN when either sum is not positive."""
    a, b = float(num.sum()), float(den.sum())
    return -2.5 * math.log10(a / b) if a > 0 and b > 0 else float("nan")


def _statmorph(flux: np.ndarray, segmap: np.ndarray, others: np.ndarray, noise: float) -> dict:
    import statmorph

    # OUR CHOICE: a constant weight map equal to the sky noise (background-limited images); JPEG
    # cutouts carry no gain. The floor keeps statmorph's S/N finite on clipped, noise-free skies.
    weight = np.full(flux.shape, max(noise, 0.5 / 255))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = statmorph.source_morphology(flux, segmap.astype(np.int32), weightmap=weight, mask=others)[0]
    return {
        "concentration": m.concentration,
        "asymmetry": m.asymmetry,
        "smoothness": m.smoothness,
        "gini": m.gini,
        "m20": m.m20,
        "sersic_n": m.sersic_n if m.flag_sersic < 2 else float("nan"),
        "ellipticity": m.ellipticity_asymmetry,
        "flag": int(m.flag),
        "flag_sersic": int(m.flag_sersic),
        "centre": (float(m.yc_centroid), float(m.xc_centroid)),
    }


def morphology_statistics(flux: np.ndarray, colour: np.ndarray | None = None, q: float = ASINH_Q) -> dict:
    """All statistics of one galaxy from its 2-D r-band flux (and optionally its (H,W,3) colour image,
    any scale in which channel ratios are band flux ratios).

    Never raises for a hard galaxy: a statmorph failure leaves its statistics NaN, sets
    ``failed=True`` and records the reason in ``error``; ``flag`` is statmorph's (0 good, 1 suspect,
    2 bad; -1 when it raised).
    """
    flux = np.asarray(flux, np.float64)
    out: dict = {k: float("nan") for k in STATISTICS}
    out.update(flag=-1, flag_sersic=-1, failed=True, error="")
    try:
        segmap, others = segment_galaxy(flux, q)
    except ValueError as exc:
        out["error"] = f"segmentation: {exc}"
        return out
    sources = ndimage.binary_dilation(segmap | others, iterations=3)
    try:
        sky, noise = sky_background(flux, sources)
    except ValueError as exc:
        out["error"] = f"sky: {exc}"
        return out
    out["sky_level"], out["sky_noise"] = sky, noise
    flux = flux - sky
    if colour is not None:
        colour = np.asarray(colour, np.float64) - np.array([sky_background(colour[..., c], sources)[0] for c in range(3)])

    ys, xs = np.nonzero(segmap)
    w = np.clip(flux[ys, xs], 0, None)
    centre = (float((ys * w).sum() / w.sum()), float((xs * w).sum() / w.sum())) if w.sum() > 0 else (ys.mean(), xs.mean())
    try:
        sm = _statmorph(flux, segmap, others, noise)
        statmorph_centre = sm.pop("centre")
        if all(np.isfinite(statmorph_centre)):
            centre = statmorph_centre
        out.update(sm)
        out["failed"] = out["flag"] >= 2
        if out["failed"]:
            out["error"] = "statmorph flag 2 (bad measurement)"
            for k in STATMORPH_STATISTICS:
                out[k] = float("nan")
    except Exception as exc:  # statmorph raises many kinds on degenerate sources; count, don't crash
        out["error"] = f"statmorph: {type(exc).__name__}: {exc}"

    try:
        r_half = half_light_radius(flux, segmap, centre)
    except ValueError as exc:
        out["error"] = out["error"] or f"size: {exc}"
        return out
    side = math.sqrt(flux.shape[0] * flux.shape[1])
    out["r_half"] = r_half / side
    yy, xx = np.indices(flux.shape)
    r = np.hypot(yy - centre[0], xx - centre[1])
    inner = r <= r_half
    mean_inner = float(flux[inner].mean())
    out["surface_brightness"] = -2.5 * math.log10(mean_inner) if mean_inner > 0 else float("nan")
    if colour is not None:
        red, green, blue = (colour[..., c] for c in range(3))
        out["colour_b_g"] = _colour(blue[segmap], green[segmap])
        out["colour_b_r"] = _colour(blue[segmap], red[segmap])
        # OUR CHOICE: "bulge" = within r_half / 2, "outskirts" = r_half to 2 r_half inside the segmap.
        bulge = r <= 0.5 * r_half
        disc = segmap & (r > r_half) & (r <= 2 * r_half)
        if bulge.any() and disc.any():
            out["colour_gradient"] = _colour(blue[bulge], red[bulge]) - _colour(blue[disc], red[disc])
    return out


def galaxy_statistics(image: np.ndarray, size: int | None = None, q: float = ASINH_Q) -> dict:
    """Statistics of one uint8 RGB cutout, optionally area-resized to ``size`` px first.

    OUR CHOICE: real and rendered cutouts are both resized to the survey's side before measuring,
    so that pixel-scale statistics (noise, smoothness, M20 smoothing) are compared at the
    resolution the model sees; sizes are then relative to the cutout side.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if size is not None and image.shape[:2] != (size, size):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BOX))
    # OUR CHOICE: colours from the uint8 channel values themselves, not from the asinh inverse.
    # Lupton colour composites (SDSS JPEGs, make_lupton_rgb) stretch all three bands by one factor
    # per pixel, asinh(Q I) / (Q I) of the mean intensity I, so channel ratios are band flux ratios;
    # inverting each channel separately would exaggerate the colours of bright pixels.
    colour = image.astype(np.float64) / 255.0
    return morphology_statistics(linear_flux(image[..., 1], q), colour, q)
