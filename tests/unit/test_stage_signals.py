"""A stage's signals: Ctrl-C and SIGTERM unwind it (tests/e2e/test_faults.py times the exit), except that a
stage the shell started as a background job (`&`, nohup: SIGINT ignored) keeps ignoring Ctrl-C.

Each test starts a real process that installs the stage's handlers, sends it a real signal and reads what
the process did: unwound through its `finally` (cleanup ran) with the exception a stage reports, or went on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGE = """
import signal, sys, time
sys.path.insert(0, {root!r})
signal.signal(signal.SIGINT, {inherited})
from flows.cli import Terminated, exit_on_signals
exit_on_signals()
try:
    try:
        print("ready", flush=True)  # inside: a signal that comes as soon as this is read still unwinds
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.05)
        print("still running", flush=True)
    finally:
        print("cleanup ran", flush=True)
except KeyboardInterrupt:
    print("unwound: interrupted", flush=True)
except Terminated:
    print("unwound: terminated", flush=True)
"""


def signalled(signum: int, inherited: str, then: int | None = None) -> list[str]:
    """Start a stand-in stage with SIGINT's handler as a shell would hand it, send `signum` (and `then` 0.5 s
    later), and return what it printed."""
    process = subprocess.Popen([sys.executable, "-c", STAGE.format(root=str(ROOT), inherited=inherited)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    process.send_signal(signum)
    if then is not None:
        time.sleep(0.5)
        process.send_signal(then)
    out, _ = process.communicate(timeout=30)
    return out.split()


@pytest.mark.parametrize(("signum", "outcome"), [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")])
def test_a_stage_in_the_foreground_unwinds_on_ctrl_c_and_sigterm(signum, outcome):
    said = " ".join(signalled(signum, "signal.default_int_handler"))
    assert said == f"cleanup ran unwound: {outcome}"


def test_a_background_stage_keeps_ignoring_ctrl_c_and_still_unwinds_on_sigterm():
    said = " ".join(signalled(signal.SIGINT, "signal.SIG_IGN", then=signal.SIGTERM))
    assert said == "cleanup ran unwound: terminated"  # Ctrl-C went unnoticed; SIGTERM 0.5 s later unwound it
