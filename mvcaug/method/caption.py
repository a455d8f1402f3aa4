"""Caption every training image, each caption prefixed "This is an image of <label>." (the paper's 3.2).

A captioner is anything with an `id` and a `describe(images, sources)` returning one sentence per
image; `mvcaug.io.captions.build_captioner` picks the backend that caption.backend names (reading a caption
file or loading BLIP-2 is I/O), so a new model is one
class and one entry there, not a new stage. A caption body depends only on the image's content, the
captioner's configuration and the captioning code, which `cache_namespace` hashes: the caption task
reuses cached bodies across runs and captions only images it has not seen.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from tqdm import tqdm

from mvcaug.core.errors import UserError
from mvcaug.method.image_attributes import describe as describe_attributes
from mvcaug.method.image_attributes import measure
from mvcaug.core.params import CaptionParams, PrepareParams
from mvcaug.io.catalog import FILES
from mvcaug.io.images import read_image

__all__ = ["CaptionError", "Captioner", "AttributeCaptioner", "FileCaptioner", "CAPTION_FILES", "parse_caption_file",
    "prefixed", "training_rows", "image_path", "image_key", "caption_bodies", "caption_table",
    "CODE_ENTRIES", "captioner_config", "cache_namespace", "uncached_rows", "shard_rows"]

log = logging.getLogger(__name__)


class CaptionError(UserError, ValueError):
    """Captions cannot be produced; the message names the file and the fix."""


class Captioner(Protocol):
    id: str

    def describe(self, images: Sequence[Image.Image], sources: Sequence[str]) -> list[str]:
        """One caption body (without the label prefix) per image."""


class AttributeCaptioner:
    """Offline, deterministic: words for stroke thickness, slant, size, position, tone and colour."""

    id = "attributes-v1"

    def describe(self, images: Sequence[Image.Image], sources: Sequence[str]) -> list[str]:
        return [describe_attributes(measure(image)) for image in images]


class FileCaptioner:
    """Captions written by people beside the images: metadata.jsonl (file_name, text) or captions.csv."""

    def __init__(self, captions_file: Path, by_file: dict[str, str]):
        self.id = f"file:{captions_file.name}"
        self.by_file = by_file
        self.path = captions_file

    def describe(self, images: Sequence[Image.Image], sources: Sequence[str]) -> list[str]:
        missing = [s for s in sources if s not in self.by_file]
        if missing:
            raise CaptionError(
                f"{self.path}: no caption for {len(missing)} image(s), e.g. '{missing[0]}'; "
                "add a row per image (file_name relative to the image folder)"
            )
        return [self.by_file[s] for s in sources]


CAPTION_COLUMNS = "'file_name' (the image's path in the image folder) and 'text' (or 'caption')"
"""What every row of a caption file holds."""
CAPTION_FILES = ("metadata.jsonl", "captions.csv")
"""The caption files looked for in a folder, in this order."""


def parse_caption_file(path: Path, data: bytes) -> dict[str, str]:
    """file_name -> caption from the bytes of `path` (mvcaug.io.captions.read_caption_file reads them):
    metadata.jsonl (one JSON object per line) or a CSV with a header row.

    A file in another encoding or a row of the wrong shape is a CaptionError naming the file, the line
    and the fix, not a traceback from deep inside the JSON or CSV reader."""
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is not part of the header
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CaptionError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x}); "
                           "save the file as UTF-8 and rerun") from err
    rows = _jsonl_rows(path, text) if path.suffix == ".jsonl" else _csv_rows(path, text)
    captions: dict[str, str] = {}
    for line, row in rows:
        name, body = row.get("file_name"), row.get("text", row.get("caption"))
        if not isinstance(name, str) or not name.strip() or not isinstance(body, str):
            raise CaptionError(f"{path}:{line}: each row needs {CAPTION_COLUMNS} as text; got {_shown(row)}")
        captions[Path(name).as_posix()] = body.strip()
    return captions


def _shown(row: object, limit: int = 120) -> str:
    """A row as the message shows it: repr, cut to `limit` characters."""
    shown = repr(row)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines file."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CaptionError(f"{path}:{number}: not valid JSON ({err}); write one object per line with "
                               f"{CAPTION_COLUMNS}") from err
        if not isinstance(row, dict):
            raise CaptionError(f"{path}:{number}: expected an object with {CAPTION_COLUMNS}; got {_shown(row)}")
        rows.append((number, row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, row) for each record of a CSV file whose header names the columns; a record with
    more or fewer fields than the header is an error, not a row shifted into the wrong columns."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or "file_name" not in header or not {"text", "caption"} & set(header):
            raise CaptionError(f"{path}:1: the header row must name the columns {CAPTION_COLUMNS}; "
                               f"got {_shown(header or [])}")
        rows = []
        for record in reader:
            if not any(field.strip() for field in record):
                continue
            if len(record) != len(header):
                raise CaptionError(f"{path}:{reader.line_num}: {len(record)} fields where the header has "
                                   f"{len(header)} ({', '.join(header)}); quote fields that contain commas")
            rows.append((reader.line_num, dict(zip(header, record, strict=True))))
    except csv.Error as err:
        raise CaptionError(f"{path}:{reader.line_num}: not valid CSV ({err})") from err
    return rows


def prefixed(label: str, body: str, prefix: str) -> str:
    """The paper's prefix, so the class is named even when the captioner misses it."""
    head = prefix.format(label=label).strip()
    return f"{head} {body.strip()}".strip()


def training_rows(manifest: pa.Table, prepared_dir: Path) -> list[dict]:
    """The manifest's training images, in manifest order; an error when there are none."""
    train = manifest.filter(pc.equal(manifest["split"], "train")).to_pylist()
    if not train:
        raise CaptionError(f"{prepared_dir}/{FILES.manifest} has no training images; check prepare params")
    return train


def image_path(row: dict) -> str:
    """The image a caption describes: the copy at the generative model's resolution when prepare wrote one
    (BLIP-2 then sees the source resized once, not an upsampled working image), else the working image."""
    return row.get("model_path") or row["path"]


def image_key(row: dict) -> str:
    """The content hash of that image: the caption cache's key."""
    return row.get("model_sha256") or row["sha256"]


def caption_bodies(rows: Sequence[dict], prepared_dir: Path, captioner: Captioner, batch_size: int) -> list[str]:
    """One caption body (no prefix) per row's image, in batches of batch_size."""
    bodies: list[str] = []
    batch = max(1, batch_size)
    for start in tqdm(range(0, len(rows), batch), desc=f"caption ({captioner.id})", unit="batch",
                      disable=len(rows) <= batch):
        chunk = rows[start : start + batch]
        images = [read_image(prepared_dir / image_path(row)).convert("RGB") for row in chunk]
        described = captioner.describe(images, [row["source"] for row in chunk])
        if len(described) != len(chunk):
            raise CaptionError(f"captioner {captioner.id} returned {len(described)} captions for {len(chunk)} images")
        bodies += described
    return bodies


def caption_table(rows: Sequence[dict], bodies: Sequence[str], captioner_id: str, prefix: str) -> pa.Table:
    """(id, label, caption, captioner): each body behind the paper's label prefix."""
    return pa.table({
        "id": [row["id"] for row in rows],
        "label": [row["label"] for row in rows],
        "caption": [prefixed(row["label"], body, prefix) for row, body in zip(rows, bodies, strict=True)],
        "captioner": [captioner_id] * len(rows),
    })


CODE_ENTRIES = ("mvcaug.method.caption",)
"""The modules (with their import closure) whose code turns an image into a caption body."""
CODE_LIBRARIES = ("pillow", "numpy", "scipy", "transformers", "torch")


def captioner_config(params: CaptionParams) -> dict | None:
    """What a caption body depends on besides the image, known without loading the model.

    None for the file backend: its captions come from a file, not the image, and cost nothing.
    """
    if params.backend == "attributes":
        return {"id": AttributeCaptioner.id}
    if params.backend == "blip2":
        from mvcaug.method.blip2 import blip2_id
        from mvcaug.io.content_cache import folder_listing
        from mvcaug.core.devices import auto_dtype, resolve_device

        device = resolve_device(params.device)
        return {"id": blip2_id(params), "files": folder_listing(params.model),
                "max_new_tokens": params.max_new_tokens, "device": device.type, "dtype": str(auto_dtype(device))}
    return None


def cache_namespace(config: dict) -> str:
    """The cache namespace of caption bodies: the captioner's configuration and the captioning code."""
    from mvcaug.io.content_cache import config_digest
    from mvcaug.io.digests import code_digest

    return "caption:" + config_digest({**config, "code": code_digest(CODE_ENTRIES, CODE_LIBRARIES)})


def uncached_rows(rows: Sequence[dict], known: dict[str, str]) -> list[dict]:
    """Rows whose image content has no cached body, one per distinct content hash."""
    todo: dict[str, dict] = {}
    for row in rows:
        if image_key(row) not in known:
            todo.setdefault(image_key(row), row)
    return list(todo.values())


def shard_rows(rows: Sequence[dict], shard_size: int) -> list[list[dict]]:
    """Consecutive blocks of at most shard_size rows: the units of work a task runner spreads."""
    return [list(rows[start : start + shard_size]) for start in range(0, len(rows), max(1, shard_size))]
