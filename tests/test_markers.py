"""The `unit` marker is enforced: a test without I/O fixtures that reaches the network fails, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.io  # its inner `io` test connects; the outer guard would intercept that
def test_a_unit_test_that_opens_a_connection_fails_and_io_tests_may(pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    io: i\n    long: l\n    soak: s\n    micropython: m\n")
    pytester.makepyfile(test_probe='''
import socket
import pytest

def test_pure():
    assert 1 + 1 == 2

def test_sneaks_out():
    socket.create_connection(("127.0.0.1", 9), timeout=0.1)

@pytest.mark.io
def test_declared():
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)
''')
    r = pytester.runpytest("-m", "unit", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1, deselected=1)
    r.stdout.fnmatch_lines(["*test_sneaks_out: a `unit` test opened a network connection; mark it `@pytest.mark.io`*"])
    assert pytester.runpytest("-m", "io", "-p", "no:cacheprovider").ret == 0
