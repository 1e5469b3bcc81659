"""Preprocessing: uint8 ``(H,W,3)`` images (numpy or PIL) -> normalised float tensors ``(3,S,S)``.

Transforms are small classes (picklable, so DataLoader workers can use them). Random draws use
torch's global RNG, which DataLoader seeds per worker.

Crop policy (OUR CHOICE): survey cutouts are centred on the galaxy, so the shorter side is resized
to ``S`` (bilinear, antialiased) and the centre ``S x S`` kept; nothing else is cropped away.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def to_float_tensor(image) -> torch.Tensor:
    """uint8 (H,W,3) / (H,W) numpy or PIL -> float (3,H,W) in [0,1]."""
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image.convert("RGB"))  # PIL
        except AttributeError:
            raise TypeError(f"expected a uint8 (H,W,3) array or PIL image, got {type(image).__name__}") from None
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an image of shape (H,W,3), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    rgb = image[:, :, :3]
    if not (rgb.flags.writeable and rgb.flags.c_contiguous):
        rgb = rgb.copy()  # torch refuses read-only arrays (e.g. memory-mapped HDF5 / PIL buffers)
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased) and keep the centre square."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top : top + size, left : left + size]


class _Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _rotate(x: torch.Tensor, degrees: float, scale: float = 1.0) -> torch.Tensor:
    """Rotate (and zoom by 1/scale) about the centre; corners repeat the border (sky or symbol background)."""
    theta = math.radians(degrees)
    c, s = math.cos(theta) / scale, math.sin(theta) / scale
    mat = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype)[None]
    grid = F.affine_grid(mat, [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x[0]


class EvalTransform:
    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]):
        self.image_size = int(image_size)
        self.normalize = _Normalize(mean, std)

    def __call__(self, image) -> torch.Tensor:
        return self.normalize(resize_center_crop(to_float_tensor(image), self.image_size))


class TrainTransform(EvalTransform):
    """Augmentations that leave morphology unchanged: any rotation, flips, a mild zoom; photometric jitter.

    OUR CHOICE of strengths at ``strength=1`` (sim-to-real: the rendered survey and real cutouts
    differ in field of view, calibration, seeing and noise): rotation uniform in [0, 360),
    horizontal flip p=0.5, zoom (random resized crop about the centre) log-uniform in
    ``zoom`` = [0.8, 1.25]; per-channel gain (colour balance) log-uniform within
    ``1 ± channel_gain`` = 0.08; brightness and contrast factors in [0.9, 1.1]; Gaussian blur sigma in
    [0.1, 1.0] px with p=0.3; additive Gaussian noise sigma 0.01 (in [0,1] units). ``strength``
    scales the zoom range and the photometric parts; ``strength=0`` keeps only rotation and flip.
    """

    def __init__(self, image_size: int, mean, std, strength: float = 1.0, zoom: tuple[float, float] = (0.8, 1.25),
                 channel_gain: float = 0.08):
        super().__init__(image_size, mean, std)
        if strength < 0:
            raise ValueError(f"augmentation strength must be >= 0, got {strength}")
        if not (0 < zoom[0] <= zoom[1]):
            raise ValueError(f"zoom range must satisfy 0 < low <= high, got {tuple(zoom)}")
        if not 0 <= channel_gain < 1:
            raise ValueError(f"channel_gain must be in [0, 1), got {channel_gain}")
        self.strength = float(strength)
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.channel_gain = float(channel_gain)

    def __call__(self, image) -> torch.Tensor:
        x = resize_center_crop(to_float_tensor(image), self.image_size)
        s = self.strength
        # Zoom > 1 magnifies (a narrower field), < 1 shows more sky (border-repeated, i.e. sky-like).
        lo, hi = math.log(self.zoom[0]) * s, math.log(self.zoom[1]) * s
        zoom = math.exp(lo + (hi - lo) * float(torch.rand(()))) if s > 0 else 1.0
        x = _rotate(x, float(torch.rand(()) * 360.0), scale=zoom)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        if s > 0:
            g = math.log1p(self.channel_gain * s)
            gains = torch.exp((2 * torch.rand(3) - 1) * g).view(3, 1, 1)
            x = x * gains
            brightness = 1.0 + s * 0.1 * (2 * float(torch.rand(())) - 1)
            contrast = 1.0 + s * 0.1 * (2 * float(torch.rand(())) - 1)
            mean = x.mean()
            x = (x - mean) * contrast + mean * brightness
            if torch.rand(()) < 0.3:
                x = _gaussian_blur(x, 0.1 + 0.9 * s * float(torch.rand(())))
            x = x + torch.randn_like(x) * 0.01 * s
            x = x.clamp(0.0, 1.0)
        return self.normalize(x)


class SymbolTransform(EvalTransform):
    """Symbols: resize + normalise; with ``train=True`` a light geometric augmentation.

    OUR CHOICE: rotation uniform in [0, 360), flip p=0.5 and zoom in [0.9, 1.1] — a schematic's
    meaning (bulge, arms, bar, edge-on disc) is orientation-free. Shape variation itself comes from
    the symbol renderer's own augmented variants (galaxalign.symbols).
    """

    def __init__(self, image_size: int, mean, std, train: bool = False):
        super().__init__(image_size, mean, std)
        self.train = bool(train)

    def __call__(self, image) -> torch.Tensor:
        x = resize_center_crop(to_float_tensor(image), self.image_size)
        if self.train:
            zoom = 0.9 + 0.2 * float(torch.rand(()))
            x = _rotate(x, float(torch.rand(()) * 360.0), scale=zoom)
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return self.normalize(x)


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> EvalTransform:
    return EvalTransform(image_size, mean, std)


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float], strength: float = 1.0,
                    zoom: tuple[float, float] = (0.8, 1.25), channel_gain: float = 0.08) -> TrainTransform:
    return TrainTransform(image_size, mean, std, strength, zoom, channel_gain)


def symbol_transform(image_size: int, mean: Sequence[float], std: Sequence[float], train: bool = False) -> SymbolTransform:
    return SymbolTransform(image_size, mean, std, train)


def stack(images, transform) -> torch.Tensor:
    """Apply ``transform`` to each image of a list / (N,H,W,3) array and stack into (N,3,S,S)."""
    return torch.stack([transform(im) for im in images])
