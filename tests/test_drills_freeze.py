"""Drill: the sandbox is frozen (SIGSTOP/SIGCONT) between and during invocations, under the emulator.

Expectation: after every thaw the agent carries on; every trace, log line and the invocation count reach
the collector (oteltap), exactly once, and the emulator dropped no telemetry. A freeze longer than the
export timeout, in the middle of an export, makes no duplicate: frozen time does not count.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Callable, List

import pytest

from fgext.testing import emulate
from tests.agentproc import ready
from tests.conftest import ROOT
from tests.platform import RecordingPlatform
from tests.test_drills_collector import (  # noqa: F401 - scripted is a fixture
    HANDLER,
    ScriptedCollector,
    Start,
    emulated_env,
    log_lines,
    scripted,
    wait_for,
)
from tests.test_otlp_agent import otlp_env, post_events
from tests.test_otlp_plugin import OtelTap, attr, free_port, invocation, metric_value, roots

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]


def test_frozen_between_and_during_invocations_loses_nothing(taps: Callable[[int], OtelTap],
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


def test_freeze_mid_export_longer_than_the_timeout_sends_no_duplicate(
        platform: RecordingPlatform, agents: Start, scripted: ScriptedCollector,  # noqa: F811
        tmp_path: Path) -> None:
    """The agent is SIGSTOPped for 12 s while an export (timeout 5 s) is in flight and the collector answers
    during the freeze: after SIGCONT the answer is taken, nothing times out, every span arrives once."""
    spool = tmp_path / "spool"
    scripted.mode = "slow"  # answers 3 s after the request arrived: while the agent is frozen
    agent = agents(otlp_env(platform, scripted.port, spool, OTEL_EXPORTER_OTLP_TIMEOUT="5000",
                            OTEL_METRICS_EXPORTER="none"))
    port = ready(agent)
    rid = "00000000-0000-4000-8000-000000000001"
    post_events(agent, port, invocation(rid, 0, logs=2))
    wait_for(lambda: any(path == "/v1/traces" for _, path, _, _ in scripted.snapshot()[0]), 10,
             "the trace export to arrive")
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(12)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    scripted.mode = "ok"
    rid2 = "00000000-0000-4000-8000-000000000002"
    post_events(agent, port, invocation(rid2, 100, logs=1))
    wait_for(lambda: rid2 in scripted.snapshot()[1], 20, "the next invocation to be exported")
    assert agent.stop() == 0
    requests, ids = scripted.snapshot()
    assert Counter(ids) == Counter([rid, rid2]), Counter(ids)
    assert [path for _, path, _, _ in requests].count("/v1/logs") == 2  # one per invocation, none again
    assert list(spool.glob("*.pb")) == []
