"""Wall time of the pretrain stage at the default settings, against its bound, with its self-check.

    .venv/bin/python benchmarks/pretrain_time.py [--keep DIR]

It copies the project into a throw-away git + DVC workspace (params as in the working tree), runs
`dvc repro --single-item pretrain` as one timed process, and prints the seconds against the bound (600 s on the
2-core machine the README's figures come from), the stage's own time split (corpus, training with the
self-checks) and the self-check curve (self_check.csv, with the seconds the run recorded in .mvcaug-run): samples read as asked,
held-out renders read right.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.workspace import make_workspace, run  # noqa: E402

log = logging.getLogger("benchmarks.pretrain_time")
BOUND_S = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="workspace folder to keep (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        workspace = folder if (folder / ".git").is_dir() else make_workspace(folder, params={})
        start = time.perf_counter()
        run(["dvc", "repro", "--single-item", "pretrain"], workspace)
        seconds = time.perf_counter() - start
        metrics = json.loads((workspace / "data/04_pretrain/metrics.json").read_text())
        curve = (workspace / "data/04_pretrain/self_check.csv").read_text().strip().splitlines()
        times = (workspace / ".mvcaug-run/pretrain-self-check-times.csv").read_text().strip().splitlines()
    check = metrics["self_check"]
    print(f"pretrain stage, whole process: {seconds:.1f} s (bound {BOUND_S:.0f} s, ratio {seconds / BOUND_S:.2f}); "
          f"{metrics['steps']} steps on {metrics['images']} images")
    print(f"self-check: samples read as asked {100 * check['sample_accuracy']:.1f}%, held-out renders "
          f"{100 * check['heldout_accuracy']:.1f}%, ratio {check['ratio']:.2f} (needed {check['ratio_needed']}): "
          f"{'passed' if check['passed'] else 'not passed'}")
    print("curve (step, sample accuracy, held-out accuracy, ratio; seconds of training):")
    for line, timed in zip(curve[1:], times[1:]):
        print(f"  {line}; {timed.split(',')[1]} s")


if __name__ == "__main__":
    main()
