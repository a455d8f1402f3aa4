"""Measurable properties of an image, put into words: the offline captioner's vocabulary.

Thresholds are absolute (fractions of the image), never fitted to the dataset, so an image's caption
does not change when other images are added.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ImageAttributes:
    """Scalar measurements of the foreground (the pixels that differ from the border)."""

    coverage: float  # foreground pixels / all pixels
    extent: float  # bounding-box area / image area
    thickness: float  # foreground pixels / bounding-box height, as a fraction of the width
    slant: float  # x-y covariance over y variance of foreground coordinates (>0 leans right)
    centre_x: float  # centroid, 0 = left, 1 = right
    centre_y: float  # centroid, 0 = top, 1 = bottom
    aspect: float  # bounding-box width / height
    brightness: float  # mean intensity, 0..1
    contrast: float  # foreground-background intensity difference, 0..1
    hue: float | None  # hue of the mean foreground colour, None for grey


def measure(image: Image.Image) -> ImageAttributes:
    """Measure an image in any mode; the foreground is what stands out from the border's median."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    gray = rgb.mean(axis=2)
    h, w = gray.shape
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    diff = np.abs(gray - background)
    mask = diff > max(0.15, 0.35 * float(diff.max()))
    if not mask.any():
        mask = diff >= diff.max()
    ys, xs = np.nonzero(mask)
    box_h = ys.max() - ys.min() + 1
    box_w = xs.max() - xs.min() + 1
    cy, cx = ys.mean(), xs.mean()
    var_y = float(((ys - cy) ** 2).mean()) + 1e-6
    cov_xy = float(((xs - cx) * -(ys - cy)).mean())  # image y grows downward
    fg_colour = rgb[mask].mean(axis=0)
    r, g, b = (float(c) for c in fg_colour)
    hue, _, saturation = colorsys.rgb_to_hls(r, g, b)
    return ImageAttributes(
        coverage=float(mask.mean()),
        extent=float(box_h * box_w) / (h * w),
        thickness=float(mask.sum()) / box_h / w,
        slant=cov_xy / var_y,
        centre_x=float(cx + 0.5) / w,
        centre_y=float(cy + 0.5) / h,
        aspect=float(box_w) / float(box_h),
        brightness=float(gray.mean()),
        contrast=float(abs(gray[mask].mean() - background)),
        hue=hue if saturation > 0.25 else None,
    )


def _bucket(value: float, cuts: tuple[float, float], words: tuple[str, str, str]) -> str:
    return words[0] if value < cuts[0] else words[1] if value < cuts[1] else words[2]


def describe(attributes: ImageAttributes) -> str:
    """A sentence of words for the attributes, e.g. 'A thick, right-leaning, large shape, centred.'"""
    a = attributes
    # Cut points sit near the tertiles measured on the bundled digits at 16 px, so that captions
    # differ within a class there; they stay fixed numbers so a caption never depends on other images.
    stroke = _bucket(a.thickness, (0.355, 0.395), ("thin", "medium", "thick"))
    lean = _bucket(a.slant, (-0.08, 0.04), ("left-leaning", "upright", "right-leaning"))
    size = _bucket(a.extent, (0.5, 0.75), ("small", "medium-sized", "large"))
    shape = _bucket(a.aspect, (0.62, 0.69), ("narrow", "compact", "wide"))
    horizontal = _bucket(a.centre_x, (0.485, 0.525), ("left of centre", "centred", "right of centre"))
    vertical = _bucket(a.centre_y, (0.47, 0.515), ("high", "at mid-height", "low"))
    tone = _bucket(a.contrast, (0.69, 0.74), ("faint", "clear", "bold"))
    colour = "grey" if a.hue is None else _hue_name(a.hue)
    return (
        f"A {stroke}, {lean}, {size} {shape} {colour} shape, {horizontal} and {vertical}, "
        f"drawn in {tone} {'strokes' if a.coverage < 0.5 else 'fill'}."
    )


def _hue_name(hue: float) -> str:
    names = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta", "red")
    edges = (0.04, 0.11, 0.19, 0.45, 0.54, 0.72, 0.8, 0.95, 1.01)
    return next(name for name, edge in zip(names, edges) if hue < edge)
