"""One Prefect server for the whole end-to-end session, on a free loopback port.

Every flow the tests start (through `dvc repro` or directly) reports to it, as flows do when a user
runs `make ui`: faster than a temporary server per flow, and the tests can ask it what ran.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1; export PREFECT_API_URL for every subprocess."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api}
    prefect = Path(sys.executable).parent / "prefect"
    log = (home / "server.log").open("w")
    server = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited; see {home / 'server.log'}")
            time.sleep(1)
    else:
        server.kill()
        raise RuntimeError(f"prefect server did not start in 120 s; see {home / 'server.log'}")
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))
    yield api
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
