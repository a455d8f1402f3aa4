"""The type check the test command runs: mypy over mvcaug/, tasks/, flows/ and tools/ ([tool.mypy] in
pyproject.toml), with no error. A test module, so that `make test` schedules its single-core minute (from a fresh
clone, with no .mypy_cache) beside the other tests on the second core instead of before all of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.runtime(50)  # seconds from a fresh clone (no cache), measured at ab618f0

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_type_error() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"mypy found type errors:\n{result.stdout}{result.stderr}"
    assert result.stdout.startswith("Success: no issues found in "), result.stdout
