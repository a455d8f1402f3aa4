"""Suite-wide collection order: the modules that declare a long runtime first, longest first.

`make test` runs two pytest-xdist processes with `--dist loadfile --no-loadscope-reorder`: each module goes whole
to one process, in collection order, and a process whose module is down to its last two tests is handed the next
one. Left in pytest's order, the one-test end-to-end modules (a full `dvc repro` each) came last and queued behind
test_pipeline's last tests in one process while the other sat idle for three minutes. Handing out the longest
modules first (the classic longest-processing-time-first rule) lets the short ones fill in at the end, so both
processes finish together. A module declares its measured runtime with `pytest.mark.runtime(seconds)`; the figures
only order the queue, so one that goes stale costs minutes of the suite, never a result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SERIAL_FOLDER = Path(__file__).resolve().parent / "e2e"
"""Where the `serial` tests live: `make test` collects only this folder for its serial run (the whole suite's
collection imports every test module, about 6 s more of a run that has nothing else to do)."""

pytest_plugins = ["pytester"]  # tests/unit/test_suite_order.py runs pytest on modules it writes


def declared_runtime(item: pytest.Item) -> float:
    """The seconds `pytest.mark.runtime` declares for the item's module (0 where none is declared)."""
    marker = item.get_closest_marker("runtime")
    return float(marker.args[0]) if marker else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    stray = [item.nodeid for item in items
             if item.get_closest_marker("serial") and not item.path.is_relative_to(SERIAL_FOLDER)]
    if stray:
        raise pytest.UsageError(f"serial tests must live in {SERIAL_FOLDER} (make test's serial run collects only "
                                f"that folder): {', '.join(stray)}")
    # a stable sort: within a module, and among modules that declare nothing, pytest's order is kept
    items.sort(key=lambda item: -declared_runtime(item))
