"""A generic captioned image corpus for pretraining: glyphs rendered from the font faces matplotlib ships.

Stable Diffusion's premise is a text-to-image model that already ties words to shapes before it sees the
user's images. The embedded default has no such model to download, so it pretrains one on this corpus:
digits and letters drawn from about twenty text faces (DejaVu, STIX, Computer Modern), each under a random
affine transform, stroke width, blur and placement. Nothing here comes from the task's data: the faces are
files of a pip package and every transform is drawn from a seed, so the corpus is the same on every machine
and cannot hold a task image.

A glyph is named with the task's class words ("three", not "3"), and letters as "letter k", so the words the
pretrained model learns are the ones the task's captions use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageFont

__all__ = ["DIGIT_WORDS", "FACES", "CANVAS", "faces_folder", "glyph_word", "GlyphSpec", "draw_specs", "render"]

DIGIT_WORDS = {str(i): w for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}
"""A digit's word: the digits default's class names (mvcaug.data.prepare.DIGIT_NAMES), so "three" means 3 in both."""

FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf",
)
"""The text faces of matplotlib's mpl-data/fonts/ttf (the symbol, display and fallback faces left out)."""

CANVAS = 64
"""Glyphs are drawn and transformed at this size, then reduced to the working resolution (anti-aliased)."""


def faces_folder() -> Path:
    """matplotlib's bundled TrueType folder; importing matplotlib itself is not needed for it."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the glyph corpus needs matplotlib's fonts: pip install matplotlib")
    return Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"


def glyph_word(glyph: str) -> str:
    """The words a caption names a glyph with: a digit's class word, "letter x" for a letter."""
    return DIGIT_WORDS.get(glyph, f"letter {glyph.lower()}")


@dataclass(frozen=True)
class GlyphSpec:
    """Everything one corpus image is drawn from: rendering it again gives the same pixels."""

    id: str
    glyph: str
    word: str
    face: str
    rotation: float  # degrees, counter-clockwise
    shear: float  # x shift per unit of y
    scale: float  # glyph height / canvas height
    shift_x: float  # centre offset, fraction of the canvas
    shift_y: float
    stroke: int  # max (> 0) or min (< 0) filter passes at the canvas size: bolder or thinner strokes
    blur: float  # Gaussian sigma at the canvas size


def draw_specs(glyphs: str, per_glyph: int, seed: int) -> list[GlyphSpec]:
    """per_glyph specs of each glyph, faces cycled and transforms drawn from one seeded stream."""
    rng = np.random.default_rng(seed)
    specs = []
    for index in range(per_glyph):
        for glyph in glyphs:
            specs.append(GlyphSpec(
                id=f"glyph-{_safe(glyph)}-{index:05d}",
                glyph=glyph,
                word=glyph_word(glyph),
                face=FACES[int(rng.integers(len(FACES)))],
                rotation=float(rng.uniform(-15, 15)),
                shear=float(rng.uniform(-0.3, 0.3)),
                scale=float(rng.uniform(0.6, 0.9)),
                shift_x=float(rng.uniform(-0.1, 0.1)),
                shift_y=float(rng.uniform(-0.08, 0.08)),
                stroke=int(rng.integers(-1, 4)),
                blur=float(rng.uniform(0.0, 2.0)),
            ))
    return specs


def _safe(glyph: str) -> str:
    """A glyph as part of an id (file name): upper and lower case letters stay apart on any file system."""
    return glyph if glyph.isdigit() else f"{'u' if glyph.isupper() else 'l'}{glyph.lower()}"


def render(spec: GlyphSpec, resolution: int, fonts: Mapping[str, ImageFont.FreeTypeFont]) -> Image.Image:
    """The glyph white on black (as the digits are), in mode L at resolution x resolution; `fonts`: each face of
    FACES at CANVAS size (mvcaug.io.fonts.load_faces)."""
    font = fonts[spec.face]
    mask = font.getmask(spec.glyph, mode="L")
    glyph = Image.frombytes("L", mask.size, bytes(mask)) if mask.size[0] and mask.size[1] else Image.new("L", (1, 1))
    box = glyph.getbbox() or (0, 0, glyph.width, glyph.height)
    glyph = glyph.crop(box)
    height = spec.scale * CANVAS
    factor = height / max(glyph.height, 1)
    glyph = glyph.resize((max(1, round(glyph.width * factor)), max(1, round(height))), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (2 * CANVAS, 2 * CANVAS))  # room for the transform before the crop
    canvas.paste(glyph, ((2 * CANVAS - glyph.width) // 2, (2 * CANVAS - glyph.height) // 2))
    for _ in range(abs(spec.stroke)):
        canvas = canvas.filter(ImageFilter.MaxFilter(3) if spec.stroke > 0 else ImageFilter.MinFilter(3))
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, _inverse_affine(spec, 2 * CANVAS),
                              resample=Image.Resampling.BILINEAR)
    if spec.blur > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(spec.blur))
    offset = CANVAS // 2
    canvas = canvas.crop((offset, offset, offset + CANVAS, offset + CANVAS))
    return canvas.resize((resolution, resolution), Image.Resampling.BOX)


def _inverse_affine(spec: GlyphSpec, size: int) -> tuple[float, ...]:
    """PIL's AFFINE maps output to input pixels: the inverse of rotate-shear about the centre, then shift."""
    angle = math.radians(spec.rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    # forward: p' = R S (p - c) + c + t, with S = [[1, shear], [0, 1]], R = rotation (y down: counter-clockwise)
    a, b, c, d = cos, cos * spec.shear + sin, -sin, -sin * spec.shear + cos
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    centre = size / 2
    tx, ty = spec.shift_x * CANVAS, spec.shift_y * CANVAS
    ox, oy = centre + tx, centre + ty
    return (ia, ib, centre - ia * ox - ib * oy, ic, id_, centre - ic * ox - id_ * oy)


def spec_rows(specs: list[GlyphSpec]) -> list[dict]:
    """The manifest's rows: every field of each spec (glyph, face, transform)."""
    return [asdict(spec) for spec in specs]
