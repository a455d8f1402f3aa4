"""Measurable properties of an image, put into words: the offline captioner's vocabulary.

Two kinds of image get two kinds of sentence. A drawing (a grey shape on a plain ground, like
scikit-learn's digits) is described by its strokes: thickness, slant, size, position. Anything else
(a photo, a texture) is described by its look: named colours, brightness, contrast, colourfulness,
how many edges, their direction and the grain of the texture. Which kind an image is follows from
its own measurements (is_drawing).

Thresholds are absolute numbers, never fitted to the dataset, so an image's caption does not change
when other images are added. Edges and grain are measured in pixels of the working image, which every
image of a run shares (prepare.resolution).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["measure", "COLOUR_NAMES", "colour_names", "is_drawing", "STROKE_CUTS", "describe"]


@dataclass(frozen=True)
class ImageAttributes:
    """Scalar measurements: the foreground's shape (pixels that differ from the border) and the whole look."""

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
    pieces: int  # connected foreground pieces (8-neighbour)
    ground_spread: float  # median distance of border pixels from their median intensity: 0 = plain ground
    colours: tuple[str, ...]  # the one or two most common named colours, most common first
    rms_contrast: float  # standard deviation of intensity, 0..0.5
    colourfulness: float  # Hasler and Suesstrunk's M on 0..1 channels (their scale / 255)
    edge_density: float  # share of pixels whose intensity gradient exceeds EDGE_GRADIENT
    edge_angle: float  # dominant edge direction in degrees: 0 = horizontal edges, 90 = vertical
    edge_coherence: float  # how strongly gradients share that direction: 0 = none, 1 = all
    fineness: float  # share of gradient strength lost to a 1.5-px blur: 1 = fine grain, 0 = coarse


EDGE_GRADIENT = 0.1  # intensity change from one pixel to the next that counts as an edge


def measure(image: Image.Image) -> ImageAttributes:
    """Measure an image in any mode; the foreground is what stands out from the border's median.

    The whole look (colours, contrast, edges, grain) is measured on every pixel; the shape fields
    matter only where is_drawing holds.
    """
    from scipy import ndimage

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
    gx, gy = _gradients(gray)
    magnitude = np.hypot(gx, gy)
    angle, coherence = _edge_direction(gx, gy)
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
        pieces=int(ndimage.label(mask, structure=np.ones((3, 3)))[1]),
        ground_spread=float(np.median(np.abs(border - background))),
        colours=dominant_colours(colour_names(rgb)),
        rms_contrast=float(gray.std()),
        colourfulness=_colourfulness(rgb),
        edge_density=float((magnitude > EDGE_GRADIENT).mean()),
        edge_angle=angle,
        edge_coherence=coherence,
        fineness=_fineness(gray, magnitude),
    )


def _gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients at the centre of each 2x2 block of pixels.

    Unlike central differences they see 1-px stripes, and unlike one-sided differences their x and y
    parts are uncorrelated on noise, so noise has no false diagonal direction.
    """
    # A one-pixel row or column gets a copy of itself as neighbour: no change, no empty arrays.
    gray = np.pad(gray, ((0, int(gray.shape[0] < 2)), (0, int(gray.shape[1] < 2))), mode="edge")
    right = np.diff(gray, axis=1)
    down = np.diff(gray, axis=0)
    return (right[:-1] + right[1:]) / 2, (down[:, :-1] + down[:, 1:]) / 2


def _edge_direction(gx: np.ndarray, gy: np.ndarray) -> tuple[float, float]:
    """The structure tensor's main direction, turned from gradient to edge, and its coherence."""
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    total = jxx + jyy
    if total < 1e-9:
        return 0.0, 0.0
    gradient_angle = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))
    coherence = float(np.hypot(jxx - jyy, 2 * jxy)) / total
    # An edge runs across its gradient: a horizontal gradient (angle 0) marks a vertical edge.
    return float((gradient_angle + 90.0) % 180.0), coherence


def _fineness(gray: np.ndarray, magnitude: np.ndarray) -> float:
    """How much edge strength a small blur removes: fine grain vanishes, broad edges only soften."""
    from scipy import ndimage

    total = float(magnitude.mean())
    if total < 1e-6:
        return 0.0
    bx, by = _gradients(ndimage.gaussian_filter(gray, sigma=1.5))
    return float(np.clip(1.0 - float(np.hypot(bx, by).mean()) / total, 0.0, 1.0))


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003): spread plus 0.3 x mean of the opponent channels rg and yb."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


COLOUR_NAMES = ("black", "white", "grey", "beige", "brown", "pink", "red", "orange", "yellow", "green",
                "cyan", "blue", "purple", "magenta")
HUE_EDGES = ((15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (200, "cyan"), (260, "blue"),
             (290, "purple"), (345, "magenta"), (361, "red"))  # upper hue bound in degrees, name


def colour_names(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's colour name as an index into COLOUR_NAMES, from hue, chroma and lightness."""
    top, low = rgb.max(axis=2), rgb.min(axis=2)
    chroma, lightness = top - low, (top + low) / 2
    saturation = chroma / np.maximum(top, 1e-6)
    # The angle in the opponent-colour plane: within a few degrees of HSV's hue, and vectorised.
    hue = np.degrees(np.arctan2(np.sqrt(3) * (rgb[..., 1] - rgb[..., 2]),
                                2 * rgb[..., 0] - rgb[..., 1] - rgb[..., 2])) % 360
    warm = (hue >= 15) & (hue < 65)
    reddish = (hue < 15) | (hue >= 290)
    hue_name = np.select([hue < edge for edge, _ in HUE_EDGES], [COLOUR_NAMES.index(n) for _, n in HUE_EDGES])
    # First match wins: darkness before hue, pale warm tones before grey, dim warm tones are brown.
    rules = [
        (top < 0.2, "black"),
        (warm & (lightness >= 0.6) & (chroma >= 0.06) & (saturation < 0.45), "beige"),
        (((chroma < 0.1) | (saturation < 0.2)) & (lightness > 0.8), "white"),
        ((chroma < 0.1) | (saturation < 0.2), "grey"),
        (warm & (top < 0.6), "brown"),
        (reddish & (lightness >= 0.7), "pink"),
    ]
    return np.select([rule for rule, _ in rules], [COLOUR_NAMES.index(n) for _, n in rules], hue_name)


def dominant_colours(names: np.ndarray) -> tuple[str, ...]:
    """The most common name, and the second when it covers at least a fifth of the image."""
    counts = np.bincount(names.ravel(), minlength=len(COLOUR_NAMES))
    order = sorted(range(len(COLOUR_NAMES)), key=lambda i: (-counts[i], i))  # ties: fixed name order
    first, second = order[0], order[1]
    return (COLOUR_NAMES[first],) + ((COLOUR_NAMES[second],) if counts[second] >= 0.2 * names.size else ())


def is_drawing(attributes: ImageAttributes) -> bool:
    """A grey shape on a plain ground: one border tone, no colour, one or two pieces that stand out."""
    a = attributes
    # The bundled digits at 16 px: border spread <= 0.002, coverage <= 0.5, contrast >= 0.56, at most
    # 2 pieces. Hasler's "not colourful" ends at M = 15 (of 255). Photos of surfaces spread far more
    # along the border, break into more pieces, or (when nearly flat) have nothing standing out by 0.3;
    # a shape covering over 80% leaves too little ground to be drawn on it.
    plain_ground = a.ground_spread <= 0.02 and a.colourfulness < 15 / 255
    return plain_ground and a.coverage <= 0.8 and a.contrast >= 0.3 and a.pieces <= 2


STROKE_CUTS: dict[str, tuple[float, float]] = {
    "thickness": (0.3633, 0.4023), "slant": (-0.0952, 0.009), "extent": (0.625, 0.6875), "aspect": (0.625, 0.6875),
    "centre_x": (0.4945, 0.5267), "centre_y": (0.4762, 0.5155), "contrast": (0.6973, 0.7346),
}
"""The cut points of the stroke words: the tertiles (to 4 decimals) of each attribute over the digits of the
default split that are not test images (train, validation and reference: 450 digits at 16 px), so that captions
differ within a class there and no test image shaped a caption (tests/unit/test_image_attributes.py recomputes
them). They stay fixed numbers, so a caption never depends on the other images of a run."""


def _bucket(value: float, cuts: tuple[float, float], words: tuple[str, str, str]) -> str:
    return words[0] if value < cuts[0] else words[1] if value < cuts[1] else words[2]


def describe(attributes: ImageAttributes) -> str:
    """A sentence for the attributes: strokes for a drawing, colour and texture for anything else."""
    return describe_strokes(attributes) if is_drawing(attributes) else describe_look(attributes)


def describe_strokes(attributes: ImageAttributes) -> str:
    """E.g. 'A thick, right-leaning, large shape, centred ... drawn in bold strokes.'"""
    a, cuts = attributes, STROKE_CUTS
    stroke = _bucket(a.thickness, cuts["thickness"], ("thin", "medium", "thick"))
    lean = _bucket(a.slant, cuts["slant"], ("left-leaning", "upright", "right-leaning"))
    size = _bucket(a.extent, cuts["extent"], ("small", "medium-sized", "large"))
    shape = _bucket(a.aspect, cuts["aspect"], ("narrow", "compact", "wide"))
    horizontal = _bucket(a.centre_x, cuts["centre_x"], ("left of centre", "centred", "right of centre"))
    vertical = _bucket(a.centre_y, cuts["centre_y"], ("high", "at mid-height", "low"))
    tone = _bucket(a.contrast, cuts["contrast"], ("faint", "clear", "bold"))
    colour = "grey" if a.hue is None else _hue_name(a.hue)
    return (
        f"A {stroke}, {lean}, {size} {shape} {colour} shape, {horizontal} and {vertical}, "
        f"drawn in {tone} {'strokes' if a.coverage < 0.5 else 'fill'}."
    )


def describe_look(attributes: ImageAttributes) -> str:
    """E.g. 'A dark, muted image, mostly brown and grey, with low contrast: a busy, coarse texture ...'"""
    a = attributes
    light = _bucket(a.brightness, (0.35, 0.65), ("dark", "mid-toned", "bright"))
    # Hasler's scale: below 33 at most slightly colourful, from 59 quite colourful (of 255).
    colour = _bucket(a.colourfulness, (33 / 255, 59 / 255), ("muted", "moderately colourful", "vivid"))
    contrast = _bucket(a.rms_contrast, (0.1, 0.22), ("low", "medium", "high"))
    head = f"A {light}, {colour} image, mostly {' and '.join(a.colours)}, with {contrast} contrast"
    if a.edge_density < 0.05:
        return f"{head}: smooth, with few edges."
    grain = _bucket(a.fineness, (0.3, 0.6), ("coarse", "medium-grained", "fine-grained"))
    busy = a.edge_density >= 0.3
    direction = _edge_word(a.edge_angle) if a.edge_coherence >= 0.25 else None
    edges = f"{direction} edges" if direction else "edges in no clear direction"
    texture = f"a busy, {grain} texture with many {edges}" if busy else f"a {grain} texture with some {edges}"
    return f"{head}: {texture}."


def _edge_word(angle: float) -> str:
    """0 and 180 degrees are horizontal edges, 90 vertical; 22.5 degrees either side count as either."""
    if angle < 22.5 or angle >= 157.5:
        return "horizontal"
    return "vertical" if 67.5 <= angle < 112.5 else "diagonal"


def _hue_name(hue: float) -> str:
    names = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta", "red")
    edges = (0.04, 0.11, 0.19, 0.45, 0.54, 0.72, 0.8, 0.95, 1.01)
    return next(name for name, edge in zip(names, edges) if hue < edge)
