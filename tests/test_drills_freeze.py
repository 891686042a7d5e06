"""Drill: the sandbox is frozen (SIGSTOP/SIGCONT) between and during invocations, under the emulator.

Expectation: after every thaw the agent carries on; every trace, log line and the invocation count reach
the collector (oteltap), exactly once, and the emulator dropped no telemetry.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Callable, List

import pytest

from fgext.testing import emulate
from tests.conftest import ROOT
from tests.test_drills_collector import HANDLER, emulated_env, log_lines
from tests.test_otlp_agent import taps  # noqa: F401 - a fixture
from tests.test_otlp_plugin import OtelTap, attr, free_port, metric_value, roots

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]


def test_frozen_between_and_during_invocations_loses_nothing(taps: Callable[[int], OtelTap],  # noqa: F811
                                                             tmp_path: Path) -> None:
    """Three invocations each followed by a 0.5 s freeze, then three concurrent ones (about 1 s each) with
    the agent frozen three times for 0.4 s while their invokes and telemetry are in flight: nothing is lost."""
    tap = taps(free_port())
    function = tmp_path / "func.py"
    function.write_text(HANDLER)

    async def scenario() -> List[str]:
        ids: List[str] = []
        async with emulate(ROOT, function=f"{function}:handler", env=emulated_env(tap.port, tmp_path / "spool"),
                           register_timeout_s=20.0, timeout_s=10.0, invoke_timeout_s=5.0) as emu:
            for n in range(3):
                ids.append((await emu.invoke({"n": n})).request_id)
                await emu.freeze(0.5)  # between invocations, as the platform freezes an idle sandbox
            assert emu.supervisor is not None
            supervisor = emu.supervisor
            thawed: List[float] = []

            async def freezer() -> None:
                for _ in range(3):
                    await asyncio.sleep(0.1)
                    supervisor.freeze()
                    try:
                        await asyncio.sleep(0.4)
                    finally:
                        supervisor.thaw()
                        thawed.append(time.monotonic())

            frozen = asyncio.ensure_future(freezer())
            results = await asyncio.gather(*(emu.invoke({"n": n, "pause": 0.3}) for n in range(3, 6)))
            await frozen
            ids += [result.request_id for result in results]
            assert all(answer.status == 200 for result in results for answer in result.answers)
            await tap.wait("spans", lambda s: len(roots(s)) >= 6, timeout=20)
            await tap.wait("metrics", lambda m: metric_value(m, "faas.invocations") == 6, timeout=20)
            print(f"drill figure: 3 freezes between and 3 during invocations; all delivered "
                  f"{max(0.0, time.monotonic() - thawed[-1]):.2f} s after the last thaw")
        assert emu.report is not None
        assert emu.report.telemetry.events_dropped == 0 and emu.report.freezes == 3
        return ids

    ids = asyncio.run(scenario())
    time.sleep(0.5)
    assert Counter(attr(span, "faas.invocation_id") for span in roots(tap.items("spans"))) == Counter(ids)
    assert log_lines(tap) == Counter({f"INFO drill {n} line {line}": 1 for n in range(6) for line in range(3)})
