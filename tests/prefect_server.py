"""`prefect server start` on a free loopback port, for tests and benchmarks that want one server.

Flows that report to a running server start in seconds; without one, every flow process starts a
temporary server of its own (about 10 s on 2 cores), as a user's flows do without `make ui`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.api_server import free_port, stop_server, wait_healthy


@contextmanager
def prefect_server(home: Path, startup_s: float = 120) -> Iterator[str]:
    """Start a server whose state lives in home; yield its API URL and stop it afterwards.

    PREFECT_UI_API_URL is set too: `prefect server start --port N` does not tell the UI its port.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api}
    prefect = Path(sys.executable).parent / "prefect"
    log = (home / "server.log").open("w")
    server = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(api, server, startup_s)
        except RuntimeError as err:
            raise RuntimeError(f"{err}; see {home / 'server.log'}") from None
        yield api
    finally:
        stop(server)
        log.close()


def stop(process: subprocess.Popen, grace_s: float = 20) -> None:
    """Terminate a child process; kill it when it has not exited after grace_s."""
    stop_server(process, grace_s)
