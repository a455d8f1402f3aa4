"""Task of the quality stage: measure the synthetic set with a classifier trained on real images only."""

from dataclasses import replace

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_json
from mvcaug.images import load_split
from mvcaug.params import Params
from mvcaug.quality import classifier_feature_fns, quality_report
from mvcaug.train import Cell, TrainingData, fit_cell, load_synthetic


@task(cache_policy=NO_CACHE)
def quality(params: Params, out_file: str) -> dict:
    """Label fidelity, FID/KID and diversity in the real-only classifier's feature space, memorisation."""
    channels, paths = params.prepare.channels, params.paths
    real, val, test = (load_split(paths.prepared, split, channels) for split in ("train", "val", "test"))
    synthetic = load_synthetic(paths.synthetic, channels)
    classes = sorted(set(real.labels))
    model_name = params.train.models[0]
    grid = replace(params.train, strategies=("real",), baselines=("default",))
    _, model = fit_cell(Cell(model_name, "default", "real", 0), TrainingData(real, None, val, test, classes), grid)
    feature_fn, predict_fn = classifier_feature_fns(model)
    report = quality_report(feature_fn, predict_fn, real.pixels, real.labels, synthetic.pixels, synthetic.labels,
                            classes, kid_subset_size=min(len(real.ids), len(synthetic.ids)))
    write_json(out_file, {"feature_model": model_name, **report})
    return report
