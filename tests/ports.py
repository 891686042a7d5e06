"""The platform's extension port range as the tests and the bench share it: which ports are free, and the
machine-wide lock every process that binds in the range holds (two test runs, or a test run and a bench,
would otherwise take each other's ports)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import Iterator

EXTENSION_PORTS = range(8081, 8091)  # the platform's fixed range for extension listeners


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now (as the agent binds: SO_REUSEADDR, so TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def port_range_lock() -> Iterator[None]:
    """Hold the machine-wide lock on 127.0.0.1:8081-8090 (``FGEXT_TEST_LOCK`` names its file)."""
    with open(os.environ.get("FGEXT_TEST_LOCK", "/tmp/fgext-test-ports.lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
