"""Flow of the report stage: DVC metrics, the HTML report, and Prefect artifacts for the UI."""

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.cli import run_stage
from mvcaug.params import load_params
from tasks.report import report


@flow(name="report")
def report_flow(params_file: str = "params.yaml") -> dict:
    """Summarise the runs, render the report, and show both in the Prefect UI."""
    params = load_params(params_file)
    metrics = report(params)
    create_markdown_artifact(markdown=(Path(params.paths.report) / "report.md").read_text(), key="mvcaug-metrics",
                             description="Test accuracy per training set, the MVC ablation, synthetic-set quality")
    html = (Path(params.paths.report) / "report.html").resolve()
    create_link_artifact(link=html.as_uri(), link_text="report.html (real vs synthetic grid)",
                         key="mvcaug-report", description="The offline HTML report")
    return metrics


if __name__ == "__main__":
    run_stage(report_flow)
