"""Cost of adding 10% new images: the caption and embed stages with a warm cache vs from scratch.

Issue 5's promise: captioning and embedding run only for the new images (paths.cache), so adding
10% should cost about 10% of a full rerun of those stages, plus the fixed start-up of the two
processes. The dataset is the bundled digits written as an image folder: first --per-class images
of each class, then 10% more. Each figure is the wall time of `python -m flows.caption` plus
`python -m flows.embed` as whole processes, reporting to one Prefect server as with `make ui`
(Python, Prefect client and model start-up included). The third figure, a rerun with nothing new,
is that fixed start-up cost; what remains above it is the work that depends on the data.
Run: .venv/bin/python benchmarks/incremental_caption_embed.py [--per-class 150] [--runs 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.prefect_server import prefect_server  # noqa: E402
from tests.workspace import make_workspace, own_images, run, write_digits  # noqa: E402

log = logging.getLogger("benchmarks.incremental")
STAGES = (["python", "-m", "flows.caption"], ["python", "-m", "flows.embed"])


def timed_stages(ws: Path) -> float:
    start = time.perf_counter()
    for command in STAGES:
        run(command, ws)
    return time.perf_counter() - start


def train_ids(ws: Path) -> set[str]:
    rows = pq.read_table(ws / "data/01_prepared/manifest.parquet").to_pylist()
    return {row["sha256"] for row in rows if row["split"] == "train"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=150, help="images per class before the addition")
    parser.add_argument("--runs", type=int, default=3, help="timed repetitions of each figure")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(tempfile.mkdtemp(prefix="mvcaug-incremental-"))
    try:
        with prefect_server(folder / "prefect-home") as api:
            os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(folder / "prefect-home"))
            measure(folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(folder: Path, args: argparse.Namespace) -> None:
    """Run the first version, add 10%, then time the three cases."""
    added = max(1, args.per_class // 10)
    params = own_images({"prepare": {"source": "imagefolder", "image_folder": "data/00_source",
                                     "train_per_class": args.per_class - 10, "val_per_class": 5, "test_per_class": 0}})
    ws = make_workspace(folder / "ws", params)
    source, cache = ws / "data/00_source", ws / ".mvcaug-cache"
    write_digits(source, 0, args.per_class)
    run(["python", "-m", "flows.prepare"], ws)
    before = train_ids(ws)
    timed_stages(ws)  # fills the cache with the first version's captions and embeddings
    warm = cache.with_name("warm-cache")
    shutil.copytree(cache, warm)

    write_digits(source, args.per_class, args.per_class + added)
    run(["python", "-m", "flows.prepare"], ws)
    new_train = len(train_ids(ws) - before)
    incremental, scratch, nothing_new = [], [], []
    for _ in range(args.runs):
        shutil.rmtree(cache)
        shutil.copytree(warm, cache)
        incremental.append(timed_stages(ws))
        nothing_new.append(timed_stages(ws))
        shutil.rmtree(cache)
        scratch.append(timed_stages(ws))
    total = len(train_ids(ws))
    inc, full, fixed = (statistics.median(t) for t in (incremental, scratch, nothing_new))
    log.info("dataset: %d -> %d images per class (+%d, 10%%); %d training images, %d of them new",
             args.per_class, args.per_class + added, added, total, new_train)
    log.info("caption + embed from scratch:        median %.1f s over %d runs (%s)",
             full, args.runs, ", ".join(f"{t:.1f}" for t in scratch))
    log.info("caption + embed with the warm cache: median %.1f s over %d runs (%s)",
             inc, args.runs, ", ".join(f"{t:.1f}" for t in incremental))
    log.info("caption + embed, nothing new:        median %.1f s over %d runs (%s): the start-up",
             fixed, args.runs, ", ".join(f"{t:.1f}" for t in nothing_new))
    log.info("incremental / from scratch: %.2f whole; %.2f above the start-up (new training images: %.2f of all)",
             inc / full, (inc - fixed) / (full - fixed), new_train / total)


if __name__ == "__main__":
    main()
