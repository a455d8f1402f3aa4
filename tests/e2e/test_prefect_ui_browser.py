"""A real browser finds a flow run in the Prefect UI.

The API answering is not proof that the UI works: the UI is a JS app that fetches its API URL from
`/ui-settings` and can point at the wrong server or fail to render. So a tiny flow runs against the
session's server (tests/e2e/conftest.py), the Prefect client confirms the run and its artifact, and
headless Chromium (Debian's `chromium` + `chromium-driver`, installed by `make browser`) loads the
flow run page and waits for the run's name. The screenshot is kept in `$MVCAUG_TEST_ARTIFACTS`
(default `test-artifacts/` at the repo root) for a person or CI to look at.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
import uuid
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import ARTIFACTS, PAGE_TIMEOUT_S, browser  # noqa: F401  (browser: a pytest fixture)

pytestmark = pytest.mark.slow

SCREENSHOT = "prefect-ui-flow-run.png"

@task
def count_words(text: str) -> int:
    return len(text.split())


def run_tiny_flow(flow_name: str, artifact_key: str) -> None:
    """One flow run with one task run and one markdown artifact, under a name no other test uses."""

    @flow(name=flow_name)
    def ui_check() -> int:
        words = count_words("the browser should find this run")
        create_markdown_artifact(f"# UI check\n\n{words} words counted.", key=artifact_key)
        return words

    ui_check()


async def read_run_and_artifact_keys(flow_name: str, artifact_key: str) -> tuple[list[FlowRun], list[str]]:
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
        artifact_filter = ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key]))
        artifacts = await client.read_artifacts(artifact_filter=artifact_filter)
    return runs, [a.key for a in artifacts]


def ui_api_url(ui_root: str) -> str:
    """The API URL the UI's JS will call, as the server tells it."""
    with urllib.request.urlopen(f"{ui_root}/ui-settings", timeout=10) as response:
        return json.loads(response.read())["api_url"]


def test_browser_finds_flow_run(prefect_server: str, browser: webdriver.Chrome) -> None:
    ui_root = prefect_server.removesuffix("/api")
    suffix = uuid.uuid4().hex[:8]
    flow_name, artifact_key = f"ui-check-{suffix}", f"ui-check-{suffix}"

    # 1. Run the flow against the session server; pin the URL in case prefect was imported earlier.
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        run_tiny_flow(flow_name, artifact_key)
        APILogWorker.drain_all(timeout=10)  # its logs reach this server before the session stops it
        runs, artifact_keys = asyncio.run(read_run_and_artifact_keys(flow_name, artifact_key))

    # 2. The client API sees one completed run and its artifact.
    assert len(runs) == 1, f"expected one run of {flow_name}, found {len(runs)}"
    flow_run = runs[0]
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    assert artifact_keys == [artifact_key]

    # 3. The UI's JS calls this server. `prefect server start --port N` does not change the UI's API URL
    #    (it stays PREFECT_API_URL or port 4200), so the server needs PREFECT_UI_API_URL in its env.
    assert ui_api_url(ui_root) == prefect_server, (
        "the UI would call another server: start it (tests/prefect_server.py) "
        "with PREFECT_UI_API_URL=<its /api URL>")

    # 4. The flow run page renders the flow's and the run's names and the final state.
    browser.get(f"{ui_root}/runs/flow-run/{flow_run.id}")
    expected = (flow_name, flow_run.name, "Completed")
    try:
        WebDriverWait(browser, PAGE_TIMEOUT_S, poll_frequency=0.5).until(
            lambda driver: all(text in driver.find_element(By.TAG_NAME, "body").text for text in expected))
    except TimeoutException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / f"failed-{SCREENSHOT}"))
        page = browser.find_element(By.TAG_NAME, "body").text[:500]
        pytest.fail(f"UI did not show {expected} in {PAGE_TIMEOUT_S} s; page text: {page!r}")

    # 5. Keep the screenshot as a test artifact.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / SCREENSHOT
    assert browser.save_screenshot(str(screenshot))
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, f"{screenshot}: {len(png)} bytes"
