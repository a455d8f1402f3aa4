"""Does the text condition move the generator's output? The MVC mixes can only matter if it does.

For a few (class, seed) probes, three images are generated with the same initial noise: from a
conditioning image c and a mix a, from c and another mix b of the class, and from another conditioning
image c' of the class and a. The mean pixel RMSE between the first two is how far the text moves the
image (`text_change`); between the first and the third, how far the conditioning image does
(`image_change`). A text_change far below image_change says the generator mostly follows its
conditioning image, and mixing caption embeddings had little chance to change what it draws.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from mvcaug.method.generate import GenerationInputs, ImageSpec, denoise
from mvcaug.models.denoiser import takes_image_condition

__all__ = ["probe_specs", "condition_effect"]


def probe_specs(inputs: GenerationInputs, label: str, probes: int, seed: int) -> list[tuple[ImageSpec, ImageSpec, ImageSpec]]:
    """(base, other mix, other conditioning image) triples of one class, drawn from a seeded stream."""
    rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
    pool = [inputs.cond_images.ids[i] for i in inputs.cond_images.of_class(label)]
    mixes = inputs.mixed_ids[label]
    conditioned = takes_image_condition(inputs.denoiser)
    triples = []
    for index in range(probes):
        noise_seed = int(rng.integers(2**31 - 1))
        mix_a, mix_b = (mixes[i] for i in rng.choice(len(mixes), 2, replace=False))
        cond_a, cond_b = (pool[i] for i in rng.choice(len(pool), 2, replace=False)) if conditioned else ("", "")
        triples.append((ImageSpec(index, noise_seed, mix_a, cond_a), ImageSpec(index, noise_seed, mix_b, cond_a),
                        ImageSpec(index, noise_seed, mix_a, cond_b)))
    return triples


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).flatten(1).mean(1).sqrt()


@torch.no_grad()
def condition_effect(inputs: GenerationInputs, probes_per_class: int = 2, seed: int = 0) -> dict[str, float]:
    """{"text_change", "image_change", "text_to_image_ratio", "probes"}: mean RMSE (images in [-1, 1]) when
    only the text changes and when only the conditioning image changes. Without an image condition
    (pretrained text-to-image) image_change and the ratio are NaN. Classes with fewer than two mixes or
    conditioning images are left out."""
    text, image = [], []
    for label in sorted(inputs.mixed_ids):
        if len(inputs.mixed_ids[label]) < 2 or len(inputs.cond_images.of_class(label)) < 2:
            continue
        triples = probe_specs(inputs, label, probes_per_class, seed)
        # the three images of every probe of the class in one batch: on 2 CPU cores the stage's condition
        # effect took 20 s as three batches of `probes` images per class
        images = denoise([t[k] for k in range(3) for t in triples], label, inputs)
        base, other_text, other_image = images.split(len(triples))
        text.append(rmse(base, other_text))
        if takes_image_condition(inputs.denoiser):
            image.append(rmse(base, other_image))
    if not text:
        raise ValueError("no class has two mixes and two conditioning images to probe")
    text_change = float(torch.cat(text).mean())
    image_change = float(torch.cat(image).mean()) if image else math.nan
    return {"text_change": text_change, "image_change": image_change,
            "text_to_image_ratio": text_change / image_change if image and image_change > 0 else math.nan,
            "probes": float(len(torch.cat(text)))}
