"""Drills: one misbehaving sink inside a real agent process does not hurt the others (issue 11).

* a synchronous sink taking 8 s per batch beside ``otlp``: the collector (oteltap) gets every
  invocation while that sink is stuck, and SIGTERM ends the process within FGEXT_SHUTDOWN_TIMEOUT + 0.5 s;
* a sink raising on every batch is disabled in real traffic, invokes between its batches or not;
* late log lines (after their invocation's report) are exported under ``end`` without a next invocation.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from tests.agentproc import AgentProcess
from tests.platform import RecordingPlatform
from tests.test_otlp_agent import otlp_env, post_events, ready, wait
from tests.test_otlp_plugin import OtelTap, attr, free_port, invocation, roots

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]

SHUTDOWN_TIMEOUT = 2.0


def test_slow_sink_delays_neither_otlp_nor_the_exit(platform: RecordingPlatform, agents: Start,
                                                    taps: Callable[[int], OtelTap],
                                                    tmp_path: Path) -> None:
    """Beside a sink taking 8 s per batch, the collector gets all 3 invocations, and after SIGTERM the
    process exits 0 within FGEXT_SHUTDOWN_TIMEOUT + 0.5 s."""
    tap = taps(free_port())
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool",
                            FGEXT_PLUGINS="otlp,tests.isolation_plugins:SlowSink",
                            FGEXT_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT)))
    port = ready(agent)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for n, rid in enumerate(ids):
        post_events(agent, port, invocation(rid, n * 100, logs=2))
    spans = wait(tap, "spans", lambda s: len(roots(s)) >= 3, timeout=6)  # under one batch of the slow sink
    assert sorted(attr(s, "faas.invocation_id") for s in roots(spans)) == sorted(ids)
    signalled = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    try:
        code = agent.proc.wait(SHUTDOWN_TIMEOUT + 0.5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {SHUTDOWN_TIMEOUT + 0.5} s after SIGTERM; stderr:\n{agent.stderr()}") \
            from None
    assert code == 0, agent.stderr()
    assert time.monotonic() - signalled <= SHUTDOWN_TIMEOUT + 0.5
    assert any(line.get("event") == "sink did not take its queued telemetry before the shutdown deadline"
               and line.get("plugin") == "slow" for line in agent.logs())
    # One batch per invocation: the first held by the slow sink's hook, the other two counted as dropped.
    assert agent.wait_log("stopped")["lane_batches_dropped"] == 2


def test_sink_raising_on_every_batch_is_disabled(platform: RecordingPlatform, agents: Start,
                                                 taps: Callable[[int], OtelTap],
                                                 tmp_path: Path) -> None:
    """A sink raising on every batch is disabled after its max_failures (3), though every invoke between its
    batches succeeds; otlp goes on exporting."""
    tap = taps(free_port())
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool",
                            FGEXT_PLUGINS="otlp,tests.isolation_plugins:RaisingSink"))
    port = ready(agent)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for n, rid in enumerate(ids):
        assert agent.post(port, "/extension/invoke", f'{{"traceId": "{rid}"}}'.encode())[0] == 200
        post_events(agent, port, invocation(rid, n * 100))
    disabled = agent.wait_log("plugin disabled")
    assert disabled["plugin"] == "raising" and disabled["why"] == "3 consecutive failures in on_telemetry"
    failures = [line for line in agent.logs() if line.get("event") == "plugin failed"]
    assert len(failures) == 3 and {line["plugin"] for line in failures} == {"raising"}
    wait(tap, "spans", lambda s: len(roots(s)) >= 5)
    assert agent.stop() == 0


def test_late_log_lines_are_exported_without_a_next_invocation(platform: RecordingPlatform, agents: Start,
                                                               taps: Callable[[int], OtelTap],
                                                               tmp_path: Path) -> None:
    """Under the default flush policy (end), log lines POSTed after their invocation's report reach the
    collector although no other invocation follows."""
    tap = taps(free_port())
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool"))
    port = ready(agent)
    rid = str(uuid.uuid4())
    post_events(agent, port, invocation(rid, 0, logs=1))
    wait(tap, "logs", lambda items: len(items) >= 1)
    late = [{"name": "function", "startTime": "2023-02-01T00:03:51Z", "logs": f"[Function]INFO late line {i}"}
            for i in range(3)]
    post_events(agent, port, late)
    logs = wait(tap, "logs", lambda items: len(items) >= 4, timeout=10)
    bodies = {item["body"]["stringValue"] for item in logs}
    assert {f"INFO late line {i}" for i in range(3)} <= bodies
    assert agent.stop() == 0
