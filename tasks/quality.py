"""Task of the quality stage: measure the synthetic set with a classifier trained on real images only."""

from dataclasses import replace

from prefect import task
from prefect.cache_policies import NO_CACHE

from mvcaug.atomic import write_json
from mvcaug.devices import resolve_device
from mvcaug.images import load_images, load_split
from mvcaug.inception import inception_feature_fn, load_inception
from mvcaug.params import Params
from mvcaug.quality import classifier_feature_fns, quality_report
from mvcaug.synthetic_sets import MVC, SyntheticSet, kept_rows
from mvcaug.cells import Cell
from mvcaug.train import TrainingData, fit_cell

NOT_COMPUTED = "not computed: quality.inception_weights is empty"


@task(cache_policy=NO_CACHE)
def quality(params: Params, out_file: str) -> dict:
    """Label fidelity, FID/KID and diversity in the real-only classifier's feature space, memorisation;
    FID/KID in Inception features too when quality.inception_weights names the weights file."""
    channels, paths, weights = params.prepare.channels, params.paths, params.quality.inception_weights
    inception_fn = inception_feature_fn(load_inception(weights).to(resolve_device())) if weights else None
    real, val, test = (load_split(paths.prepared, split, channels) for split in ("train", "val", "test"))
    synthetic_set = SyntheticSet.named(MVC, paths)
    synthetic = load_images(synthetic_set.folder, kept_rows(synthetic_set, paths), channels, id_key="path")
    classes = sorted(set(real.labels))
    model_name = params.train.models[0]
    grid = replace(params.train, strategies=("real",), baselines=("default",))
    _, model = fit_cell(Cell(model_name, "default", "real", 0), TrainingData(real, val, test, classes), grid)
    feature_fn, predict_fn = classifier_feature_fns(model)
    # FID/KID against the test split: real images that neither the generator nor this classifier saw
    report = quality_report(feature_fn, predict_fn, real.pixels, real.labels, synthetic.pixels, synthetic.labels,
                            classes, kid_subset_size=min(len(test.ids), len(synthetic.ids)), inception_fn=inception_fn,
                            reference_pixels=test.pixels)
    provenance = {"inception_weights": weights} if weights else {"fid_inception": NOT_COMPUTED}
    write_json(out_file, {"feature_model": model_name, "fid_reference": "test", **provenance, **report})
    return report
