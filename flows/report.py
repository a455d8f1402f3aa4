"""Flow of the report stage: DVC metrics, the HTML and Markdown reports, and Prefect artifacts for the UI."""

from prefect import flow

from flows.cli import run_stage
from mvcaug.io.params_file import load_params
from tasks.report import publish, report

__all__ = ["report_flow"]


@flow(name="report")
def report_flow(params_file: str = "params.yaml") -> dict:
    """Summarise the runs, render the report (the verdict first), and show it in the Prefect UI."""
    params = load_params(params_file)
    summary = report(params)
    publish(params, summary["verdict"])
    return summary["metrics"]


if __name__ == "__main__":
    run_stage(report_flow)
