"""One Prefect server for the whole end-to-end session, on a free loopback port.

Every flow the tests start (through `dvc repro` or directly) reports to it, as flows do when a user
runs `make ui`: faster than a temporary server per flow, and the tests can ask it what ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prefect_server import prefect_server as running_server
from tests.workspace import mixed_base, reproduced_base

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the two cores (`make test` runs pytest-xdist with -n 2): every stage they start
    # runs torch on one thread, as two runs on two threads each slow each other many times over.
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1; export PREFECT_API_URL for every subprocess.

    One per test process: one server shared by both pytest-xdist processes answered each stage about 0.5 s later
    (a 12-run loop of the mix stage in each of two workspaces at once: 3.7 and 4.0 s a run against 3.3 s with a
    server each), which cost the suite more than the 13 s of a core that a second server takes to start."""
    home = tmp_path_factory.mktemp("prefect-home")
    with running_server(home) as api:
        saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
        os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
        yield api
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """The tiny workspace up to mix and pretrain (tests.workspace.mixed_base): built once per `make test`, for
    the fault tests of the parallel part and the serial one, the full grid and the generate runners; copy it."""
    return mixed_base(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    """The tiny workspace with every stage reproduced and committed (tests.workspace.reproduced_base): built once
    per `make test`, for the pipeline's tests and the fault tests that need a fine-tuned model; copy it."""
    return reproduced_base(tmp_path_factory.mktemp("reproduced"))
