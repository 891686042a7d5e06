"""Drill: a soak of a real agent process (OTLP on, exporting to oteltap): 20,000 invocations with logs.

Expectation: every invocation's trace arrives (20,000 distinct request IDs), the agent answers every POST,
never touches its spool (the collector is up the whole time: invocations that end during a send are
coalesced into the next request, and a backlog holds the listener instead of spilling), and its memory
is flat once started: the OTLP mapping keeps bounded memories (1,024 written traces, 64-80 indexed
phases), and a written phase keeps only its extent, so RSS from 1,000 to 20,000 invocations grows by
about 1 MB (bench/RESULTS.md). RSS is a correctness property here, not a timing.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

from tests.agentproc import AgentProcess
from tests.conftest import free_extension_ports
from tests.platform import RecordingPlatform
from tests.test_drills_hostile import rss_mb
from tests.test_otlp_agent import otlp_env
from tests.test_otlp_plugin import OtelTap, attr, free_port, invocation, roots

pytestmark = [pytest.mark.agent, pytest.mark.slow, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]
PER_POST = 4  # invocations per telemetry POST, as the platform batches events


def bodies(first: int, count: int) -> List[Tuple[str, bytes]]:
    out = []
    for start in range(first, first + count, PER_POST):
        events = []
        for index in range(start, min(start + PER_POST, first + count)):
            rid = f"00000000-0000-4000-8000-{index:012d}"
            out.append(("/extension/invoke", json.dumps({"traceId": rid}).encode()))
            events += invocation(rid, 0, logs=2)
        out.append(("/", json.dumps(events).encode()))
    return out


async def post_all(port: int, items: List[Tuple[str, bytes]], concurrency: int = 2) -> None:
    import aiohttp

    queue = list(reversed(items))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            path, body = queue.pop()
            async with session.post(f"http://127.0.0.1:{port}{path}", data=body) as answer:
                assert answer.status == 200, await answer.text()
                await answer.read()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def test_twenty_thousand_invocations_all_arrive_and_rss_levels_off(platform: RecordingPlatform, agents: Start,
                                                                taps: Callable[[int], OtelTap],
                                                                tmp_path: Path) -> None:
    """20,000 invocations with logs: 20,000 traces at oteltap, no spooling; RSS grows < 6 MB after 1,000."""
    tap = taps(free_port())
    # At log level warning the agent does not log its port: the test chooses it (never scans the range,
    # where another developer's agent may answer).
    port = free_extension_ports()[0]
    agent = agents(otlp_env(platform, tap.port, tmp_path / "spool", FGEXT_LOG_LEVEL="warning",
                            FGEXT_PORT=str(port)))
    wait_serving(agent, port)
    rss: Dict[int, float] = {0: rss_mb(agent.pid)}
    started = time.monotonic()
    done = 0
    for checkpoint in (1000, 10_000, 20_000):
        asyncio.run(post_all(port, bodies(done, checkpoint - done)))
        done = checkpoint
        expected = 2 * checkpoint  # root and invoke span of each invocation

        def arrived(spans: List[Dict[str, Any]], expected: int = expected) -> bool:
            return len(spans) >= expected

        asyncio.run(tap.wait("spans", arrived, timeout=60))
        rss[checkpoint] = rss_mb(agent.pid)
    took = time.monotonic() - started
    ids = {attr(span, "faas.invocation_id") for span in roots(tap.items("spans"))}
    assert len(ids) == 20_000
    print(f"drill figure: soak 20,000 invocations in {took:.1f} s; RSS MB " +
          ", ".join(f"{n}: {value:.1f}" for n, value in rss.items()))
    # ~1 MB measured on 3.11 and 3.9; a leak of one small object per invocation would add more than 6
    assert rss[20_000] - rss[1000] < 6, rss
    assert max(rss.values()) < 80, rss
    assert agent.stop() == 0
    assert "spool" not in agent.stderr(), agent.stderr()[-2000:]


def wait_serving(agent: AgentProcess, port: int, timeout: float = 20.0) -> None:
    """Wait until the agent this test started answers on the port the test gave it."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            break
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"[]", method="POST")
            with urllib.request.urlopen(request, timeout=2) as answer:
                if json.loads(answer.read()).get("accepted") == 0:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the agent never served on {port}; exit={agent.proc.poll()} stderr:\n{agent.stderr()}")
