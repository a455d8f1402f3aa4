"""Flow of the filter stage: keep or drop every synthetic image, with the reason."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.io.params_file import load_params
from mvcaug.data.synthetic_sets import SET_NAMES
from tasks.filter import filter_set, train_real_classifier, write_filter_metrics

__all__ = ["filter_flow"]


@flow(name="filter")
def filter_flow(params_file: str = "params.yaml") -> dict:
    """Train the real-only classifier, then score and decide each synthetic set on it (a set switched off
    gets an empty decisions table)."""
    params = load_params(params_file)
    classifier = train_real_classifier(params)
    by_set = {name: filter_set(params, name) for name in SET_NAMES}
    return write_filter_metrics(params, classifier, by_set)


if __name__ == "__main__":
    run_stage(filter_flow)
