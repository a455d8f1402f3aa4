"""The suite hands out the modules that declare the longest runtime first, and keeps its serial tests where
`make test`'s serial run looks for them (tests/conftest.py)."""

from __future__ import annotations

import pytest

MODULE = """
import pytest
{mark}

def test_one():
    pass

def test_two():
    pass
"""


def test_modules_declaring_a_runtime_come_first_longest_first_and_the_rest_keep_their_order(
        pytester: pytest.Pytester) -> None:
    pytester.makeini('[pytest]\nmarkers =\n    runtime(seconds): measured seconds\n')
    pytester.makeconftest("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    pytester.makepyfile(
        test_a_short=MODULE.format(mark="pytestmark = pytest.mark.runtime(10)"),
        test_b_plain=MODULE.format(mark=""),
        test_c_long=MODULE.format(mark="pytestmark = pytest.mark.runtime(300)"),
        test_d_plain=MODULE.format(mark=""),
    )
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    collected = [line for line in result.outlines if "::" in line]
    assert collected == [f"{module}.py::{test}" for module in ("test_c_long", "test_a_short", "test_b_plain",
                                                              "test_d_plain") for test in ("test_one", "test_two")]


def test_a_serial_test_outside_the_e2e_folder_stops_the_collection(pytester: pytest.Pytester) -> None:
    pytester.makeini('[pytest]\nmarkers =\n    serial: alone\n    runtime(seconds): measured seconds\n')
    pytester.makeconftest("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    pytester.makepyfile(test_timing=MODULE.format(mark="pytestmark = pytest.mark.serial"))
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*serial tests must live in*tests/e2e*test_timing.py::test_one*"])
