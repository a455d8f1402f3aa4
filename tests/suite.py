"""`make test` and `make test-fast`: the suite in two pytest-xdist processes at once, then (make test) the serial
tests alone, with what both runs share started once around them.

- One Prefect server for the whole command (tests.prefect_server), in place of one per test process: each took
  about 13 s of a core to start, three times per `make test` (two xdist processes and the serial run). It starts
  while pytest collects; the end-to-end session fixture (tests/e2e/conftest.py) waits for it to answer. Every
  flow the tests start reports to it, so a base workspace built in one process (tests.workspace.shared_workspace)
  left its flow runs where every other process's tests can ask for them.
- One folder for the base workspaces both runs copy ($MVCAUG_TEST_WORKSPACES), removed afterwards.

A lone `pytest` run (no runner) starts its own server and builds its own bases, as before.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.prefect_server import start, stop
from tests.workspace import ROOT, SHARED_VARIABLE

SERVER_VARIABLE = "MVCAUG_TEST_PREFECT_API"
"""The API URL of the server tests.suite started for this command; unset in a lone pytest run."""
SERVER_HOME_VARIABLE = "MVCAUG_TEST_PREFECT_HOME"
"""That server's PREFECT_HOME (its database and server.log)."""


def pytest_runs(jobs: int, fast: bool) -> list[list[str]]:
    """The pytest command lines, in order: the parallel part (each module whole to one process, in collection
    order: tests/conftest.py puts the longest first), then the serial tests (bounds in seconds) alone."""
    pytest = [sys.executable, "-m", "pytest", "-q"]
    parallel = [*pytest, "-n", str(jobs), "--dist", "loadfile", "--no-loadscope-reorder",
                "-m", "not slow and not serial" if fast else "not serial"]
    return [parallel] if fast else [parallel, [*pytest, "-m", "serial"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="pytest-xdist processes of the parallel part")
    parser.add_argument("--fast", action="store_true", help="skip the slow end-to-end tests (make test-fast)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mvcaug-tests-") as folder:
        shared, home = Path(folder) / "workspaces", Path(folder) / "prefect-home"
        shared.mkdir()
        server, api = start(home)
        env = {**os.environ, SHARED_VARIABLE: str(shared), SERVER_VARIABLE: api, SERVER_HOME_VARIABLE: str(home),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        try:
            for command in pytest_runs(args.jobs, args.fast):
                code = subprocess.run(command, cwd=ROOT, env=env).returncode
                if code != 0:
                    return code
            return 0
        finally:
            stop(server)


if __name__ == "__main__":
    sys.exit(main())
