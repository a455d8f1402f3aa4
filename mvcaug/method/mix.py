"""Mixing Visual Concepts: Algorithm 1 of the paper, with provenance so every mix can be replayed.

Index convention: the paper's 1-based inclusive ranges r:s (1 <= r < s <= m) and u:v (1 <= u < v <= d)
are stored 0-based and half-open: rows [r-1, s), columns [u-1, v). Every edit is one block copy
`new[row_start:row_stop, col_start:col_stop] = source[...]`, coarse edits spanning all columns and fine
edits one row.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from mvcaug.core.errors import UserError
from mvcaug.core.params import MixParams

__all__ = ["MixError", "draw_plan", "apply_plan", "class_stream", "mix_class", "unmixed_params", "mix_embeddings",
    "replay_row"]

log = logging.getLogger(__name__)

EDIT_TYPE = pa.struct([
    ("kind", pa.string()), ("source", pa.string()),  # the source caption's image id
    ("row_start", pa.int32()), ("row_stop", pa.int32()),
    ("col_start", pa.int32()), ("col_stop", pa.int32()),
])


class MixError(UserError, ValueError):
    """The embeddings cannot be mixed as asked."""


@dataclass(frozen=True)
class Edit:
    """Copy rows [row_start, row_stop) x columns [col_start, col_stop) from embedding `source`."""

    kind: str  # "coarse" or "fine"
    source: int  # index into the class's embeddings
    row_start: int
    row_stop: int
    col_start: int
    col_stop: int


@dataclass(frozen=True)
class MixPlan:
    """Which embedding to start from and the ordered edits applied to it."""

    start: int
    edits: tuple[Edit, ...]


def _ordered_pair(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """r < s drawn uniformly from {1..size} (two distinct values, sorted), as 0-based half-open."""
    r, s = sorted(int(v) for v in rng.choice(np.arange(1, size + 1), size=2, replace=False))
    return r - 1, s


def _other(rng: np.random.Generator, count: int, start: int) -> int:
    """A uniform index from {0..count-1} without `start`: RandSample(E minus the start)."""
    pick = int(rng.integers(count - 1))
    return pick + 1 if pick >= start else pick


def draw_plan(
    rng: np.random.Generator, count: int, m: int, d: int, coarse: int, fine: int, start: int | None = None
) -> MixPlan:
    """Lines 4-15 of Algorithm 1: a random start, P coarse and Q fine edits from other embeddings.
    `start` fixes the start embedding instead (finetune.text_condition: target starts from the target
    image's own caption), and the stream then draws only the edits."""
    if count < 1:
        raise MixError("a class has no embeddings to mix")
    if count < 2 and coarse + fine > 0:
        raise MixError("mixing needs at least two captions per class; add images or set P = Q = 0")
    if start is None:
        start = int(rng.integers(count))
    edits = []
    for _ in range(coarse):
        source = _other(rng, count, start)
        row_start, row_stop = _ordered_pair(rng, m)
        edits.append(Edit("coarse", source, row_start, row_stop, 0, d))
    for _ in range(fine):
        source = _other(rng, count, start)
        col_start, col_stop = _ordered_pair(rng, d)
        row = int(rng.integers(m))
        edits.append(Edit("fine", source, row, row + 1, col_start, col_stop))
    return MixPlan(start, tuple(edits))


def apply_plan(plan: MixPlan, embeddings: np.ndarray) -> np.ndarray:
    """Replay a plan on the class's (K, m, d) embeddings; returns a new (m, d) array."""
    mixed = embeddings[plan.start].copy()
    for e in plan.edits:
        mixed[e.row_start : e.row_stop, e.col_start : e.col_stop] = (
            embeddings[e.source, e.row_start : e.row_stop, e.col_start : e.col_stop]
        )
    return mixed


def class_stream(seed: int, label: str, index: int) -> np.random.Generator:
    """One random stream per (seed, class, index): raising N_y leaves earlier mixes unchanged."""
    return np.random.default_rng([seed, zlib.crc32(label.encode()), index])


def mix_class(embeddings: np.ndarray, label: str, params: MixParams) -> list[tuple[MixPlan, np.ndarray]]:
    """N_y new embeddings for one class (lines 3-18 of Algorithm 1)."""
    count, m, d = embeddings.shape
    results = []
    for index in range(params.per_class):
        rng = class_stream(params.seed, label, index)
        plan = draw_plan(rng, count, m, d, params.coarse_steps, params.fine_steps)
        results.append((plan, apply_plan(plan, embeddings)))
    return results


def unmixed_params(params: MixParams) -> MixParams:
    """The unmixed set's mix params (the MVC ablation): P = Q = 0 with the same N_y and seed. Each (class, index)
    stream draws its start first, so unmixed row i is exactly the start embedding of MVC mix i, without its edits."""
    return replace(params, coarse_steps=0, fine_steps=0)


def mix_embeddings(ids: Sequence[str], labels: Sequence[str], embeddings: np.ndarray, params: MixParams):
    """Mix every class; returns (columns with provenance, (n, m, d) array) for embedding_table."""
    columns: dict[str, list] = {"id": [], "label": [], "index": [], "start_id": [], "edits": []}
    arrays = []
    for label in tqdm(sorted(set(labels)), desc="mix", unit="class"):
        members = [i for i, item in enumerate(labels) if item == label]
        try:
            mixes = mix_class(embeddings[members], label, params)
        except MixError as err:
            raise MixError(f"class '{label}' ({len(members)} captions): {err}") from err
        for index, (plan, mixed) in enumerate(mixes):
            columns["id"].append(f"{label}-mix{index:05d}")
            columns["label"].append(label)
            columns["index"].append(index)
            columns["start_id"].append(ids[members[plan.start]])
            columns["edits"].append([{**vars(edit), "source": ids[members[edit.source]]} for edit in plan.edits])
            arrays.append(mixed)
    log.info("mixed %d embeddings (P=%d, Q=%d)", len(arrays), params.coarse_steps, params.fine_steps)
    columns["edits"] = pa.array(columns["edits"], type=pa.list_(EDIT_TYPE))
    return columns, np.stack(arrays)


def replay_row(row: dict, caption_ids: Sequence[str], caption_embeddings: np.ndarray) -> np.ndarray:
    """Rebuild one stored mix from its provenance (start_id, edits) and the caption embeddings."""
    position = {caption_id: i for i, caption_id in enumerate(caption_ids)}
    mixed = caption_embeddings[position[row["start_id"]]].copy()
    for edit in row["edits"]:
        rows = slice(edit["row_start"], edit["row_stop"])
        cols = slice(edit["col_start"], edit["col_stop"])
        mixed[rows, cols] = caption_embeddings[position[edit["source"]], rows, cols]
    return mixed
