"""Caption a manifest's training images the way the caption stage does (its domain steps, no Prefect)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mvcaug.method.caption import Captioner, caption_bodies, caption_table, training_rows
from mvcaug.core.params import CaptionParams


def caption_manifest(manifest: pa.Table, folder: Path, captioner: Captioner, params: CaptionParams) -> pa.Table:
    """(id, label, caption, captioner) for the training rows of `manifest`, images under `folder`."""
    rows = training_rows(manifest, Path(folder))
    return caption_table(rows, caption_bodies(rows, Path(folder), captioner, params.batch_size), captioner.id,
                         params.prefix)
