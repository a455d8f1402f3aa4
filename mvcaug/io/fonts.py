"""Font files: the TrueType faces the glyph corpus is drawn with (mvcaug.data.glyphs), read from matplotlib's
bundled fonts folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PIL import ImageFont

__all__ = ["load_faces"]


def load_faces(folder: str | Path, faces: Iterable[str], size: int) -> dict[str, ImageFont.FreeTypeFont]:
    """{face file name: the face at `size` pixels} for each of `faces` in `folder`."""
    return {face: ImageFont.truetype(str(Path(folder) / face), size=size) for face in faces}
