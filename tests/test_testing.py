"""fgext.testing: the helpers plugin authors use to test an extension in a few lines."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fgext._errors import ConfigError
from fgext.testing import emulate, run_emulator
from tests.emulator_helpers import add_extension

ROOT = Path(__file__).resolve().parent.parent


def test_import_is_cheap() -> None:
    """Importing fgext.testing loads neither aiohttp nor the emulator."""
    code = ("import sys, fgext.testing; "
            "print(sorted(m for m in sys.modules if m.startswith(('aiohttp', 'fgext.emulator'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                         check=True).stdout
    assert out.strip() == "[]"


def test_bad_option_is_a_config_error(tmp_path: Path) -> None:
    """A wrong option fails before any process starts."""
    add_extension(tmp_path)
    with pytest.raises(ConfigError, match="memory"):
        run_emulator(tmp_path, memory_mb=0)


@pytest.mark.usefixtures("port_range_lock")
def test_emulate_stops_everything_even_when_the_test_body_fails(tmp_path: Path) -> None:
    """Leaving the context manager by an exception still stops the extension and removes the sandbox."""
    root = add_extension(tmp_path / "ext", subscribe=["platform"])

    async def main() -> tuple[int, Path]:
        with pytest.raises(RuntimeError, match="test failed"):
            async with emulate(root) as emu:
                assert emu.supervisor is not None and emu.sandbox is not None
                pid = emu.supervisor.processes["extensionTest.sh"].pid
                sandbox = emu.sandbox.root
                result = await emu.invoke({"x": 1})
                assert result.ok
                raise RuntimeError("test failed")
        assert emu.report is not None and len(emu.report.invocations) == 1
        return pid, sandbox

    pid, sandbox = asyncio.run(main())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not sandbox.exists()


@pytest.mark.usefixtures("port_range_lock")
def test_run_emulator_runs_one_invocation_per_event(tmp_path: Path) -> None:
    """Given events, the sync helper runs each once, in order, and returns the final report."""
    root = add_extension(tmp_path / "ext")
    report = run_emulator(root, events=[{"a": 1}, {"fail": True}, {"a": 2}])
    assert [r.status for r in report.invocations] == ["success", "failure", "success"]
    assert [r.index for r in report.invocations] == [0, 1, 2]
