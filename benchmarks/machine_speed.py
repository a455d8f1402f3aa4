"""How fast this machine is right now: training steps per second of the default's pretrain U-Net on fixed data.

    .venv/bin/python benchmarks/machine_speed.py [--steps 30]

Why: the development machine's speed drifts. In one session the same steps ran at 2.51 steps/s and, 40 minutes
later with nothing else running, at 1.95, and every stage moves with them (a fresh clone's stages besides
pretrain took 297.4 s in one stop's run and 367.6 s in the next stop's, writing the same bytes). A stage time
means little without the machine's speed beside it: benchmarks/first_run.py prints this figure before and after.

The step is the pretrain stage's own (mvcaug.method.finetune.train_denoiser on build_text_to_image, conditioned
by corpus_conditions; default params.yaml: batch 64, 16 px, 48 tokens of 384 dims); the images and captions
are seeded random numbers, so the figure does not need the corpus or the text encoder. Five warm-up steps are not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mvcaug.io.params_file import load_params  # noqa: E402
from mvcaug.method.finetune import ConditionSampler, train_denoiser  # noqa: E402
from mvcaug.method.pretrain import NO_MIX, Corpus, build_text_to_image, corpus_conditions, training_params  # noqa: E402

log = logging.getLogger("benchmarks.machine_speed")
WARM_UP = 5
IMAGES, CLASSES, TEXT_DIM = 4800, 16, 384


def steps_per_second(steps: int) -> float:
    """Training steps per second of the default's pretrain U-Net on seeded random images and captions."""
    params = load_params(ROOT / "params.yaml")
    settings = dataclasses.replace(training_params(params.pretrain), steps=steps + WARM_UP)
    tokens, resolution = params.embed.max_length, params.prepare.resolution
    pixels = torch.rand((IMAGES, params.prepare.channels, resolution, resolution),
                        generator=torch.Generator().manual_seed(0)) * 2 - 1
    texts = np.random.default_rng(0).standard_normal((IMAGES, tokens, TEXT_DIM)).astype(np.float32)
    labels = [str(i % CLASSES) for i in range(IMAGES)]
    corpus = Corpus(ids=[], labels=labels, captions=[], pixels=pixels, rows=[])  # what the conditions read
    denoiser = build_text_to_image(params.pretrain, params.prepare.channels, resolution, TEXT_DIM, torch.device("cpu"))
    sampler = ConditionSampler(corpus_conditions(corpus, texts), NO_MIX, "target", 0)
    finished: list[float] = []  # when each step ended
    train_denoiser(denoiser, pixels, sampler, np.zeros((tokens, TEXT_DIM), np.float32), settings,
                   on_step=lambda step, loss: finished.append(time.perf_counter()))
    return steps / (finished[-1] - finished[WARM_UP - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (default 30, about 15 s here)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rate = steps_per_second(args.steps)
    log.info("machine speed: %.2f pretrain steps/s (%d steps, %d torch threads)", rate, args.steps,
             torch.get_num_threads())


if __name__ == "__main__":
    main()
