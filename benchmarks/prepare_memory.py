"""Peak memory of `prepare` on an image folder of large photos, for a small and a large number of them.

`prepare` converts and writes each image as it reads it, keeping only hashes, so its peak memory should
not depend on how many photos there are (it once held every decoded photo until all were converted: 25
camera photos peaked at 1.6 GB). This writes N synthetic photos (smooth noise at --size, as JPEGs, two
classes) into a temporary folder, runs prepare on them in a fresh process for each N, and prints each
run's peak resident memory and their ratio. The peak is the child's own VmHWM (Linux's high-water mark of
its address space, /proc/self/status), not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
of a large process (pytest with torch loaded, ~900 MB) would report its parent's size.

Run: .venv/bin/python benchmarks/prepare_memory.py [--counts 10 200] [--size 4000x3000]
(200 photos at 4000 x 3000 take about 1 GB of temporary disk and a few minutes.)
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.prepare_memory")

CHILD = """
import sys
from mvcaug.core.params import PrepareParams
from tasks.prepare import prepare_dataset
prepare_dataset(PrepareParams(source="imagefolder", image_folder=sys.argv[1], train_per_class=2, val_per_class=1,
                              test_per_class=0, resolution=int(sys.argv[3]), channels=3), sys.argv[2])
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""
"""The measured process: prepare alone (no Prefect flow or server), on the folder, into the output."""


def write_photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """count distinct photo-like JPEGs (width, height), split over two classes, under folder/<class>/."""
    rng = np.random.default_rng(seed)
    width, height = size
    for index in range(count):
        label = ("a", "b")[index % 2]
        (folder / label).mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8)
        photo = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        photo.save(folder / label / f"photo{index:04d}.jpg", quality=90)
    return folder


def peak_rss_of_prepare(folder: Path, out: Path, resolution: int = 64) -> int:
    """Peak resident memory, in bytes, of a fresh process that runs prepare on folder (Linux)."""
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    result = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(out), str(resolution)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True, check=True)
    return int(result.stdout.split()[-1]) * 1024  # VmHWM is in kB


def measure(counts: list[int], size: tuple[int, int]) -> dict[int, int]:
    """Peak RSS of prepare for each number of photos, each on its own fresh folder."""
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="prepare-memory-") as tmp:
        for count in counts:
            log.info("writing %d photos of %dx%d, then preparing them", count, *size)
            folder = write_photos(Path(tmp) / f"photos-{count}", count, size)
            peaks[count] = peak_rss_of_prepare(folder, Path(tmp) / f"out-{count}")
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--size", default="4000x3000", help="width x height of each photo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    peaks = measure(args.counts, size)
    for count, peak in peaks.items():
        print(f"{count:6d} photos of {args.size}: peak RSS {peak / 2**20:8.1f} MB")
    low, high = peaks[min(peaks)], peaks[max(peaks)]
    print(f"ratio {max(peaks)} / {min(peaks)} photos: {high / low:.3f}")


if __name__ == "__main__":
    main()
