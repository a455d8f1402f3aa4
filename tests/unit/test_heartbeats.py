"""Stage flows send Prefect's flow-run heartbeats only when the user set their frequency (flows/cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
from prefect.settings import get_current_settings
from flows.cli import heartbeats_as_asked
with heartbeats_as_asked():
    inside = get_current_settings().flows.heartbeat_frequency
print(inside, get_current_settings().flows.heartbeat_frequency)
"""
"""What the flow engine reads for its heartbeat interval, inside a stage's block and after it."""


def probe(environment: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_HEARTBEAT_FREQUENCY")} | environment
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_stage_sends_no_heartbeats_by_default_and_restores_the_setting_after() -> None:
    inside, after = probe({})
    assert inside == "None" and after != "None"  # Prefect's own default (180 s in Prefect 3.9) outside the stage


@pytest.mark.parametrize("variable", ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"])
def test_a_frequency_the_user_set_is_kept(variable: str) -> None:
    assert probe({variable: "60"}) == ["60", "60"]
