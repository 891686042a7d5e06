"""The OTLP plugin inside the real agent process: launcher, subprocess, recording platform, oteltap."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from tests.agentproc import AgentProcess, ready
from tests.platform import RecordingPlatform
from tests.test_otlp_plugin import (
    INIT_ID,
    URN,
    OtelTap,
    attr,
    free_port,
    invocation,
    metric_value,
    roots,
)

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]


def otlp_env(platform: RecordingPlatform, collector_port: int, spool: Path, **extra: str) -> Dict[str, str]:
    """The agent with its default plugin (otlp) pointed at a collector by the standard variable."""
    return {"EXTENSION_API_ADDR": platform.addr, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            "FGEXT_SPOOL_DIR": str(spool), "RUNTIME_TIMEOUT": "3", **extra}


def wait(tap: OtelTap, kind: str, predicate: Callable[[List[Dict[str, Any]]], bool],
         timeout: float = 15.0) -> List[Dict[str, Any]]:
    return asyncio.run(tap.wait(kind, predicate, timeout))


def post_events(agent: AgentProcess, port: int, events: List[Dict[str, Any]]) -> None:
    status, answer = agent.post(port, "/", json.dumps(events).encode())
    assert status == 200 and answer["malformed"] == 0, answer


def test_spec_events_through_the_agent_reach_the_collector(platform: RecordingPlatform, agents: Start,
                                                           taps: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """Invoke and telemetry POSTs to the agent come out at the collector as one trace with its logs."""
    tap = taps(free_port())
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool"))
    port = ready(agent)
    assert agent.post(port, "/extension/invoke",
                      json.dumps({"tracelId": INIT_ID, "invokedFunctionUrn": URN}).encode())[0] == 200
    events = invocation(INIT_ID, 0, init=True, logs=2)
    post_events(agent, port, events[:3])
    post_events(agent, port, events[3:])
    spans = wait(tap, "spans", lambda s: len(s) >= 3)
    assert {s["name"] for s in spans} == {"helloWorld", "init", "invoke"}  # the platform's function name
    assert {s["traceId"] for s in spans} == {INIT_ID.replace("-", "")}
    logs = wait(tap, "logs", lambda items: len(items) >= 2)
    assert all(attr(item, "faas.invocation_id") == INIT_ID for item in logs)
    assert agent.stop() == 0
    wait(tap, "metrics", lambda m: metric_value(m, "faas.invocations") == 1)


def test_metrics_leave_on_their_timer_and_at_shutdown_not_per_invocation(
        platform: RecordingPlatform, agents: Start, taps: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """Each invocation's flush sends its spans but no metrics; FGEXT_OTLP_METRICS_INTERVAL_MS's timer sends
    them, and so does shutdown (the cumulative count of every invocation)."""
    tap = taps(free_port())
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool", FGEXT_OTLP_METRICS_INTERVAL_MS="600000"))
    port = ready(agent)
    for index in range(3):
        post_events(agent, port, invocation(f"req-{index}", index * 100))
        wait(tap, "spans", lambda s, n=index + 1: len(roots(s)) >= n)
    assert tap.items("metrics") == [], "an invocation's flush sent metrics"
    assert agent.stop() == 0
    wait(tap, "metrics", lambda m: metric_value(m, "faas.invocations") == 3)

    timed = taps(free_port())
    agent = agents(otlp_env(platform, timed.port, tmp_path / "spool2", FGEXT_OTLP_METRICS_INTERVAL_MS="200"))
    port = ready(agent)
    post_events(agent, port, invocation("req-timed", 0))
    wait(timed, "metrics", lambda m: metric_value(m, "faas.invocations") == 1)  # the agent still runs
    assert agent.proc.poll() is None
    assert agent.stop() == 0


def test_sigterm_flushes_what_is_pending(platform: RecordingPlatform, agents: Start,
                                         taps: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """With nothing exported yet, SIGTERM exports every span and line within the shutdown deadline."""
    tap = taps(free_port())
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool", FGEXT_SHUTDOWN_TIMEOUT="3"))
    port = ready(agent)
    post_events(agent, port, invocation(INIT_ID, 0, logs=5)[:-1])  # no report: nothing ends, nothing flushes
    post_events(agent, port, invocation("still-running", 500)[:2])  # started, never finished
    time.sleep(0.5)
    assert tap.items("spans") == []
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.wait_exit(10) == 0
    spans = wait(tap, "spans", lambda s: len(roots(s)) >= 2, timeout=5)
    by_id = {attr(s, "faas.invocation_id"): s for s in roots(spans)}
    assert attr(by_id["still-running"], "fgext.close_reason") == "shutdown"
    assert attr(by_id[INIT_ID], "fgext.close_reason") == "shutdown"
    wait(tap, "logs", lambda items: len(items) >= 6, timeout=5)


def test_killed_agent_leaves_spool_that_a_restarted_agent_delivers(
        platform: RecordingPlatform, agents: Start, taps: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """Collector down, agent SIGKILLed: the next agent on the same spool directory sends it all."""
    collector_port = free_port()
    spool = tmp_path / "spool"
    first = agents(otlp_env(platform, collector_port, spool))
    port = ready(first)
    post_events(first, port, invocation(INIT_ID, 0, logs=3))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not list(spool.glob("*.pb")):
        time.sleep(0.05)
    assert list(spool.glob("*-traces-*.pb")), "the failed export was not spooled to disk"
    first.stop(signal.SIGKILL)
    tap = taps(collector_port)
    second = agents(otlp_env(platform, collector_port, spool))
    ready(second)
    spans = wait(tap, "spans", lambda s: len(roots(s)) >= 1)
    assert attr(roots(spans)[0], "faas.invocation_id") == INIT_ID
    wait(tap, "logs", lambda items: len(items) >= 3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and list(spool.glob("*.pb")):
        time.sleep(0.05)
    assert list(spool.glob("*.pb")) == []
    assert second.stop() == 0


# A valid value, other than the default, for every fgext setting docs/otlp.md documents.
GOOD_SETTINGS = {
    "FGEXT_FLUSH": "periodically,200",
    "FGEXT_SPOOL_DIR": "{tmp}/spool-set",
    "FGEXT_SPOOL_MAX_BYTES": "1048576",
    "FGEXT_OTLP_SPOOL_AFTER_MS": "100",
    "FGEXT_OTLP_QUEUE_MAX_BYTES": "1048576",
    "FGEXT_OTLP_CLOSE_MARGIN_MS": "5000",
    "FGEXT_OTLP_MAX_REQUEST_BYTES": "1048576",
    "FGEXT_OTLP_MAX_PENDING_BYTES": "2097152",
    "FGEXT_OTLP_REPORT_LOG": "0",
    "FGEXT_OTLP_METRICS_INTERVAL_MS": "600000",
    "FGEXT_OTLP_MAX_LOG_BYTES": "4096",
}


def documented_settings() -> List[str]:
    """The FGEXT_* rows of docs/otlp.md's table of fgext's own settings."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "otlp.md").read_text()
    table = text.split("fgext's own:", 1)[1].split("\n\n", 2)[1]
    return [row.split("`")[1] for row in table.splitlines() if row.startswith("| `FGEXT_")]


def test_every_documented_setting_is_taken_by_the_real_agent(
        platform: RecordingPlatform, agents: Start, taps: Callable[[int], OtelTap], tmp_path: Path) -> None:
    """Each FGEXT_* setting docs/otlp.md lists, set to a valid value, is accepted by the agent process (the
    agent maps every FGEXT_OTLP_<KEY> to a setting of the plugin and refuses unknown ones) and takes effect:
    no report record, a long line cut at FGEXT_OTLP_MAX_LOG_BYTES, spans on the periodic flush."""
    assert sorted(documented_settings()) == sorted(GOOD_SETTINGS)
    tap = taps(free_port())
    settings = {key: value.format(tmp=tmp_path) for key, value in GOOD_SETTINGS.items()}
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool", **settings))
    port = ready(agent)
    events = invocation("req-settings", 0, logs=1)
    events.insert(1, {"name": "function", "startTime": events[0]["startTime"], "logs": "x" * 10_000})
    post_events(agent, port, events)
    wait(tap, "spans", lambda s: len(roots(s)) >= 1)
    logs = wait(tap, "logs", lambda items: len(items) >= 2)
    assert agent.stop() == 0
    assert not [line for line in agent.logs() if line.get("level") in ("error", "warning")]
    bodies = [item["body"]["stringValue"] for item in tap.items("logs")]
    assert not [body for body in bodies if body.startswith("REPORT ")]
    assert [len(body.encode()) <= 4096 and attr(item, "fgext.log.truncated") is True
            for item, body in zip(logs, bodies) if body.startswith("xxx")] == [True]


def test_bad_otlp_setting_is_reported_with_the_variable(platform: RecordingPlatform, agents: Start,
                                                        tmp_path: Path) -> None:
    """An unsupported OTEL_EXPORTER_OTLP_PROTOCOL is logged naming the variable; the agent keeps serving."""
    agent = agents(otlp_env(platform, free_port(), tmp_path / "spool", OTEL_EXPORTER_OTLP_PROTOCOL="http/json"))
    failure = agent.wait_log("plugin failed")
    assert failure["plugin"] == "otlp" and "OTEL_EXPORTER_OTLP_PROTOCOL" in failure["error"]
    assert "Traceback" not in agent.stderr()
    port = ready(agent)
    post_events(agent, port, invocation(INIT_ID, 0))
    assert agent.stop() == 0
