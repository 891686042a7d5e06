"""Test your plugin or extension in a few lines: on synthetic events, or against the emulated platform.

A plugin on synthetic events, through the agent's real pipeline (strict mode on)::

    from fgext.testing import make_log, make_invocation, run_plugin

    def test_my_plugin():
        run = run_plugin(MyPlugin(), events=[*make_invocation("r1"), make_log("password=hunter2")])
        assert "hunter2" not in " ".join(run.messages)

A whole extension zip or directory against the emulator:

Async (pytest-asyncio, anyio, or plain ``asyncio.run``)::

    from fgext.testing import emulate

    async def test_my_extension(tmp_path):
        async with emulate("dist/my-extension.zip", function="tests/handler.py:handler") as emu:
            result = await emu.invoke({"hello": "world"})
            assert result.ok
        assert emu.report.ok, emu.report.problems

Sync::

    from fgext.testing import run_emulator

    report = run_emulator("dist/my-extension.zip", events=[{"a": 1}, {"fail": True}])
    assert [r.status for r in report.invocations] == ["success", "failure"]

Keyword options are the fields of :class:`fgext.emulator.EmulatorConfig` (``timeout_s``,
``spec_typos``, ``freeze_s``, ``env``...). Importing this module is cheap: aiohttp and the emulator are
imported when a helper is first called.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional, Sequence, Union

if TYPE_CHECKING:
    from fgext.emulator import Emulator, EmulatorReport

from fgext._pipeline import PluginFailure
from fgext._plugintest import (
    CaptureSink,
    PluginRun,
    arun_plugin,
    make_done,
    make_event,
    make_invocation,
    make_invoke,
    make_log,
    make_report,
    make_start,
    run_plugin,
)

__all__ = [
    "CaptureSink",
    "PluginFailure",
    "PluginRun",
    "arun_plugin",
    "emulate",
    "make_done",
    "make_event",
    "make_invocation",
    "make_invoke",
    "make_log",
    "make_report",
    "make_start",
    "run_emulator",
    "run_plugin",
]


@contextlib.asynccontextmanager
async def emulate(target: Union[str, Path], **options: Any) -> AsyncIterator[Emulator]:
    """Start an emulator for ``target`` (zip or directory), yield it, stop it; ``emu.report`` after."""
    from fgext.emulator import Emulator, EmulatorConfig

    emulator = Emulator(EmulatorConfig(target=target, **options))
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def run_emulator(target: Union[str, Path], event: Any = None, invocations: Optional[int] = None,
                 concurrency: int = 1, events: Optional[Sequence[Any]] = None,
                 **options: Any) -> EmulatorReport:
    """Run ``invocations`` (default: one per entry of ``events``, else 1) and return the final report.

    Raises :class:`fgext.emulator.ExtensionError` when an extension does not register, and
    :class:`fgext.ConfigError` for a bad target or option. Must not be called from a running event loop.
    """
    count = invocations if invocations is not None else (len(events) if events else 1)

    async def main() -> EmulatorReport:
        async with emulate(target, **options) as emulator:
            await emulator.run(count, concurrency, event=event, events=list(events) if events else None)
        assert emulator.report is not None
        return emulator.report

    return asyncio.run(main())
