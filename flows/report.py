"""Flow of the report stage: DVC metrics and the HTML report."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.params import load_params
from tasks.report import report


@flow(name="report")
def report_flow(params_file: str = "params.yaml") -> dict:
    """Summarise the runs and render the report."""
    return report(load_params(params_file))


if __name__ == "__main__":
    run_stage(report_flow)
