"""Waiting for a child made with ``os.fork`` in a test."""

from __future__ import annotations

import os
import signal
import time

import pytest


def wait_child(pid: int, timeout: float = 15.0) -> int:
    """The child's exit status; killed (and the test failed) if it has not exited in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child did not finish (deadlock?)")
