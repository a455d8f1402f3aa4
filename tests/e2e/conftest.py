"""One Prefect server for the end-to-end tests, on a free loopback port: for the whole `make test` (tests.suite),
or for the session of a lone pytest run.

Every flow the tests start (through `dvc repro` or directly) reports to it, as flows do when a user
runs `make ui`: faster than a temporary server per flow, and the tests can ask it what ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.prefect_server import prefect_server as running_server
from tests.prefect_server import wait_answering
from tests.suite import SERVER_HOME_VARIABLE, SERVER_VARIABLE
from tests.workspace import mixed_base, reproduced_base

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes share the two cores (`make test` runs pytest-xdist with -n 2): every stage they start
    # runs torch on one thread, as two runs on two threads each slow each other many times over.
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """The session's `prefect server start` on 127.0.0.1, with PREFECT_API_URL exported for every subprocess:
    under `make test` the one tests.suite started for the whole command (waited for here: it starts while
    pytest collects), in a lone pytest run one started for this session."""
    shared = os.environ.get(SERVER_VARIABLE)
    if shared:
        home = Path(os.environ[SERVER_HOME_VARIABLE])
        wait_answering(shared, 120, home / "server.log")
        with exported(shared, home):
            yield shared
        return
    home = tmp_path_factory.mktemp("prefect-home")
    with running_server(home) as api, exported(api, home):
        yield api


@contextmanager
def exported(api: str, home: Path) -> Iterator[None]:
    """PREFECT_API_URL and PREFECT_HOME set to the server's for the block, the previous values back after it."""
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    try:
        yield
    finally:
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
