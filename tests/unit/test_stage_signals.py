"""A stage's signals: Ctrl-C and SIGTERM unwind it (tests/e2e/test_faults.py times the exit), except that a
stage the shell started as a background job (`&`, nohup: SIGINT ignored) keeps ignoring Ctrl-C."""

from __future__ import annotations

import signal

import pytest

from flows.cli import exit_on_signals, on_interrupt, on_terminate


@pytest.fixture
def handlers_restored():
    """The test process's own handlers come back afterwards, so no other test inherits these."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_stage_in_the_foreground_unwinds_on_ctrl_c_and_sigterm(handlers_restored):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    exit_on_signals()
    assert signal.getsignal(signal.SIGINT) is on_interrupt
    assert signal.getsignal(signal.SIGTERM) is on_terminate


def test_a_background_stage_keeps_ignoring_ctrl_c_and_still_unwinds_on_sigterm(handlers_restored):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_on_signals()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is on_terminate
