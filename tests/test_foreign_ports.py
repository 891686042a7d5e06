"""The port-sensitive tests pass while another process listens on 8081-8083 and answers like an agent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_free_ports

FOREIGN = [8081, 8082, 8083]
# Every test file that starts an agent or an extension in 8081-8090, or binds there itself.
PORT_SENSITIVE = ["tests/test_agent.py", "tests/test_bootstrap.py", "tests/test_emulator.py",
                  "tests/test_emulator_cli.py", "tests/test_emulator_agent.py", "tests/test_otlp_agent.py",
                  "tests/test_drills_soak.py"]


@pytest.mark.slow
@pytest.mark.agent
@pytest.mark.timeout(1800)
@pytest.mark.usefixtures("port_range_lock")
def test_port_sensitive_tests_pass_beside_a_foreign_agent(tmp_path: Path) -> None:
    """With a stranger's agent on 8081-8083, the port-sensitive test files pass (none talks to it)."""
    require_free_ports(FOREIGN)
    ready = tmp_path / "foreign.ready"
    foreign = subprocess.Popen([sys.executable, str(ROOT / "tests" / "foreign_agent.py"), str(ready),
                                *map(str, FOREIGN)], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and foreign.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), f"the foreign agent did not start: exit={foreign.poll()}"
        # This test holds the machine-wide port lock; the inner run takes a lock of its own.
        env = {**os.environ, "FGEXT_TEST_LOCK": str(tmp_path / "inner.lock")}
        inner = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PORT_SENSITIVE],
                               cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=1500)
        assert inner.returncode == 0, inner.stdout[-6000:] + inner.stderr[-2000:]
        print(f"inner run beside the foreign agent: {inner.stdout.strip().splitlines()[-1]}")
        # Seven ports stay free: no test may have skipped for want of one.
        assert "other software listens" not in inner.stdout, inner.stdout[-3000:]
        assert foreign.poll() is None, "the foreign agent died: a test disturbed it"
    finally:
        foreign.kill()
        foreign.wait(5)
