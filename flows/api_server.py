"""A Prefect API server owned by this process: for one stage, or for a whole run.

Without PREFECT_API_URL, Prefect starts a temporary server of its own in every flow process; it shares
the stage's process group, so Ctrl-C kills it first and the flow then retries against it for minutes,
and a killed stage leaves it running, orphaned. The server started here instead:

- runs in its own session, so Ctrl-C in the terminal reaches the stage alone, which reports the
  interruption to a server still alive and exits at once;
- dies with its parent (Linux PR_SET_PDEATHSIG), even when the parent is killed with SIGKILL;
- is shared by every child process (PREFECT_API_URL is exported), so `python -m flows.api_server -- dvc
  repro` (what `make run` does) starts one server for all stages instead of one per stage.

With PREFECT_API_URL already set (`make ui`, a Prefect server elsewhere), nothing is started.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["die_with_parent", "free_port", "wait_healthy", "stop_server", "prefect_api"]

log = logging.getLogger("mvcaug.api_server")

PR_SET_PDEATHSIG = 1
STARTUP_S = 120.0


def die_with_parent() -> None:
    """Ask the kernel to send SIGTERM to this process when the thread that forked it exits (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the server is still stopped on any normal exit
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(api: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the Prefect API server exited with code {process.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect API server did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.2)


def start_server(port: int) -> subprocess.Popen:
    """Prefect's API (no UI) under uvicorn on 127.0.0.1:port, as Prefect's own temporary server runs it."""
    import prefect
    from prefect.settings import get_current_settings

    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
           "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
               "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=die_with_parent,
                            stdout=subprocess.DEVNULL)


def drain_prefect_workers(timeout_s: float = 10.0) -> None:
    """Send the logs and events Prefect still queues for the API, while the server is still there
    (else its background workers retry against a stopped server for a minute, then give up)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception as err:  # best effort: a failed flush must not hide the stage's own outcome
            log.debug("could not drain %s: %s", worker.__name__, err)


def stop_server(process: subprocess.Popen, grace_s: float = 5.0) -> None:
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL: PREFECT_API_URL when set, else a server started for this block
    (and exported to child processes), stopped when the block ends."""
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield existing
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    process = start_server(port)
    try:
        wait_healthy(api, process, STARTUP_S)
        os.environ["PREFECT_API_URL"] = api
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
    finally:
        drain_prefect_workers()
        os.environ.pop("PREFECT_API_URL", None)
        stop_server(process)


def main(argv: list[str]) -> int:
    """`python -m flows.api_server -- COMMAND ...`: run COMMAND with one Prefect API server for all it starts."""
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        sys.exit("usage: python -m flows.api_server -- COMMAND [ARG ...]")
    with prefect_api():
        child = subprocess.Popen(command)
        try:
            return child.wait()
        except KeyboardInterrupt:  # the child got Ctrl-C too (same process group): let it finish its exit
            return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
