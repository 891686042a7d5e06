"""Child processes the emulator owns: line-wise output capture and stopping a whole process group.

Every child starts in its own session, so a launcher script and whatever it ``exec``s or forks share
one process group that SIGSTOP, SIGCONT and SIGTERM reach at once, the way a frozen sandbox stops
everything in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Callable, Optional

__all__ = ["pump_lines", "signal_group", "stop_group"]

_CHUNK = 65536
_MAX_LINE = 64 * 1024


async def pump_lines(stream: Optional[asyncio.StreamReader], on_line: Callable[[str], None]) -> None:
    """Call ``on_line`` with each decoded line of ``stream`` (no newline) until end of file.

    Reads chunks rather than ``readline`` so that an over-long line is cut into pieces instead of
    raising and ending the capture.
    """
    if stream is None:
        return
    pending = b""
    while True:
        chunk = await stream.read(_CHUNK)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            on_line(line.decode("utf-8", "replace").rstrip("\r"))
        while len(pending) > _MAX_LINE:
            on_line(pending[:_MAX_LINE].decode("utf-8", "replace"))
            pending = pending[_MAX_LINE:]
    if pending:
        on_line(pending.decode("utf-8", "replace").rstrip("\r"))


def signal_group(pid: int, signum: int) -> bool:
    """Send ``signum`` to the process group led by our child ``pid``; False if it is gone."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(process: asyncio.subprocess.Process, timeout: float) -> Optional[int]:
    """SIGCONT and SIGTERM the child's group, after ``timeout`` SIGKILL it; return the exit code."""
    if process.returncode is None:
        # A frozen process cannot act on SIGTERM; thaw it first so it can shut down cleanly.
        signal_group(process.pid, signal.SIGCONT)
        signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except asyncio.TimeoutError:
            signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 5.0)
    else:
        # The leader is gone but a child it forked may still hold the group: end it too.
        signal_group(process.pid, signal.SIGKILL)
    return process.returncode
