"""What the embed stage's negligible values cost: pretrain steps/s on the corpus's captions as the encoder gives
them and as they are stored (values below 1.1e-19 set to 0), and whether the weights end the same.

    .venv/bin/python benchmarks/negligible_text.py [--steps 30] [--rounds 2]

Why: MiniLM's last hidden state holds values near 1e-32 in two of its 384 dimensions for every token. In the
backward pass their products with the gradients are subnormal floats, which a CPU computes many times slower;
mvcaug.method.embed.negligible_to_zero stores them as 0. This prints both rates, alternated `rounds` times (the
machine's speed drifts), their ratio, and whether both runs end in byte-identical weights (they must: the values
are below float32's resolution of any sum they enter). The step is the pretrain stage's own (train_denoiser on
build_text_to_image, conditioned by corpus_conditions), on the default's real corpus and captions; five warm-up
steps are not timed.
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
from mvcaug.method.embed import (  # noqa: E402
    NEGLIGIBLE, last_hidden_states, load_text_encoder, negligible_to_zero, null_text,
)
from mvcaug.method.finetune import ConditionSampler, train_denoiser  # noqa: E402
from mvcaug.method.pretrain import (  # noqa: E402
    NO_MIX, Corpus, build_text_to_image, corpus_conditions, glyph_corpus, training_params,
)
from mvcaug.core.params import Params  # noqa: E402

log = logging.getLogger("benchmarks.negligible_text")
WARM_UP = 5


def raw_embeddings(params: Params, texts: list[str]) -> np.ndarray:
    """(n, m, d) float32: the encoder's last hidden states as it gives them (encode_texts without the flush)."""
    encoder = load_text_encoder(params.embed)
    size = params.embed.batch_size
    return np.concatenate([last_hidden_states(encoder, texts[start : start + size])
                           for start in range(0, len(texts), size)])


def train(params: Params, corpus: Corpus, texts: np.ndarray, null: np.ndarray, steps: int) -> tuple[float, dict]:
    """(steps/s after the warm-up, the final weights) of `steps` pretrain steps conditioned on `texts`."""
    settings = dataclasses.replace(training_params(params.pretrain), steps=steps + WARM_UP)
    denoiser = build_text_to_image(params.pretrain, params.prepare.channels, params.prepare.resolution,
                                   texts.shape[-1], torch.device("cpu"))
    sampler = ConditionSampler(corpus_conditions(corpus, texts), NO_MIX, "target", params.pretrain.seed)
    finished: list[float] = []
    train_denoiser(denoiser, corpus.pixels, sampler, null, settings,
                   on_step=lambda step, loss: finished.append(time.perf_counter()))
    return steps / (finished[-1] - finished[WARM_UP - 1]), denoiser.unet.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run (default 30)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two runs (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_params(ROOT / "params.yaml")
    p = params.pretrain
    corpus = glyph_corpus(p.glyphs, p.per_glyph, p.seed, params.prepare.resolution, params.prepare.channels,
                          params.caption.prefix, "train")
    raw = raw_embeddings(params, corpus.captions + [null_text()])
    stored = negligible_to_zero(raw.copy())
    negligible = (raw != 0) & (np.abs(raw) < NEGLIGIBLE)
    dims = np.unique(np.nonzero(negligible)[2])
    log.info("%d negligible values (below %.1e) in dims %s of %d captions' embeddings", int(negligible.sum()),
             NEGLIGIBLE, dims.tolist(), len(corpus.captions))
    rates: dict[str, list[float]] = {"as the encoder gives them": [], "as stored": []}
    weights: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, texts in (("as the encoder gives them", raw), ("as stored", stored)):
            rate, weights[name] = train(params, corpus, texts[:-1], texts[-1], args.steps)
            rates[name].append(rate)
            log.info("%-26s %.2f steps/s", name, rate)
    same = all(torch.equal(a, b) for a, b in zip(*(w.values() for w in weights.values())))
    given, kept = (float(np.median(r)) for r in rates.values())
    log.info("median steps/s: %.2f as given, %.2f as stored; ratio %.2f; weights after %d steps byte-identical: %s",
             given, kept, kept / given, args.steps + WARM_UP, same)


if __name__ == "__main__":
    main()
