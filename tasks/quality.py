"""Task of the quality stage: how faithful, diverse and novel the generated images are, and whether the
text condition moves the generator's output at all."""

from __future__ import annotations

import math
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.io.atomic import write_json
from mvcaug.io.classifiers import load_classifier
from mvcaug.io.generation_inputs import load_inputs
from mvcaug.core.devices import resolve_device
from mvcaug.data.images import ImageSet
from mvcaug.io.images import load_images, load_split
from mvcaug.io.scorer_models import load_inception
from mvcaug.io.params_file import load_params
from mvcaug.data.synthetic_sets import MVC, SyntheticSet
from mvcaug.io.synthetic_sets import manifest_rows
from mvcaug.io.catalog import FILES

__all__ = ["kid_subset_size", "fid_comparison_set", "quality"]

NOT_COMPUTED = "not computed: quality.inception_weights is empty"
NOT_APPLICABLE = "not applicable: the generator takes no conditioning image (generate.mode: pretrained)"


def kid_subset_size(held_out: int, synthetic: int) -> int:
    """Half the smaller set: KID's spread over subsets is only an estimate when the subsets differ (a subset
    as large as both sets is the whole of each, and its std is 0 whatever the sets hold)."""
    return max(2, min(held_out, synthetic) // 2)


def fid_comparison_set(prepared: str, channels: int) -> tuple[str, ImageSet]:
    """FID's comparison set, (split name, images): what FID and KID compare the synthetic set with. The
    reference split, real images that neither the generator nor any classifier saw or selected on; without one,
    the validation split. Never the test split: it is scored once, for the accuracies, and nothing else is
    measured on it."""
    reference = load_split(prepared, "reference", channels)
    if reference.ids:
        return "reference", reference
    return "val", load_split(prepared, "val", channels)


@task(cache_policy=NO_CACHE)
def quality(root: str, params_file: str) -> dict:
    """Label fidelity, FID/KID and diversity in the feature space of the filter stage's real-only
    classifier, memorisation (overall and per class), and the text-vs-image condition effect, for every
    generated image of the MVC set (before filtering: this measures the generator). FID/KID in Inception
    features too when quality.inception_weights names the weights file."""
    from mvcaug.judging.condition_effect import condition_effect
    from mvcaug.judging.inception import inception_feature_fn
    from mvcaug.judging.quality import classifier_feature_fns, quality_report

    params = load_params(Path(root) / params_file)
    channels, paths, weights = params.prepare.channels, params.paths, params.quality.inception_weights
    inception_fn = inception_feature_fn(load_inception(weights).to(resolve_device())) if weights else None
    real = load_split(paths.prepared, "train", channels)
    against, held_out = fid_comparison_set(paths.prepared, channels)
    synthetic_set = SyntheticSet.named(MVC, paths)
    synthetic = load_images(synthetic_set.folder, manifest_rows(synthetic_set), channels, id_key="path")
    model, config = load_classifier(Path(paths.filter) / FILES.classifier)
    feature_fn, predict_fn = classifier_feature_fns(model)
    report = quality_report(feature_fn, predict_fn, real.pixels, real.labels, synthetic.pixels, synthetic.labels,
                            config["classes"], kid_subset_size=kid_subset_size(len(held_out.ids), len(synthetic.ids)),
                            inception_fn=inception_fn, comparison_pixels=held_out.pixels)
    effect = condition_effect(load_inputs(root, params_file, MVC))
    report.update({f"condition.{key}": value for key, value in effect.items() if math.isfinite(value)})
    provenance = {"inception_weights": weights} if weights else {"fid_inception": NOT_COMPUTED}
    if not math.isfinite(effect["image_change"]):
        provenance["condition.image_change"] = NOT_APPLICABLE
    write_json(Path(paths.quality) / FILES.metrics,
               {"feature_model": config["model"], "fid_compared_with": against, **provenance, **report})
    return report
