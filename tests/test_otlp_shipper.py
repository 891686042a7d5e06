"""Tests for fgext.otlp._shipper: in order, written ahead, bounded in bytes, backed off, replayed.

A real aiohttp collector on 127.0.0.1 that answers as told (and can hold its answer), the real HTTP
transport and a spool in a temporary directory.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, List, Optional, Tuple

from aiohttp import web

from fgext._deadline import Deadline
from fgext._retry import Backoff
from fgext.otlp._config import load_config
from fgext.otlp._shipper import Shipper
from fgext.otlp._spool import Spool
from fgext.otlp._transports import build_transports
from tests.test_otlp_spool import GONE, RecordingLogger


class Collector:
    """Answers each POST with the next of ``statuses`` (the last repeating); ``hold`` keeps answers back."""

    def __init__(self, statuses: Optional[List[int]] = None) -> None:
        self.statuses = statuses or [200]
        self.bodies: List[bytes] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self._runner: Optional[web.AppRunner] = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        status = self.statuses[min(len(self.bodies) - 1, len(self.statuses) - 1)]
        await self.hold.wait()
        return web.Response(status=status)

    async def __aenter__(self) -> Collector:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.hold.set()
        assert self._runner is not None
        await self._runner.cleanup()


Drops = List[Tuple[str, str, int]]
Made = Tuple[Shipper, Drops, Callable[[], Awaitable[None]]]


async def shipper_for(port: int, spool_dir: Path, **options: Any) -> Made:
    config = load_config({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                          "OTEL_EXPORTER_OTLP_TIMEOUT": str(options.pop("timeout_ms", 10000))})
    transports, close = build_transports(config)
    drops: Drops = []
    spool = Spool(spool_dir, options.pop("spool_max_bytes", 10**7), lambda s, i, b: drops.append((s, "spool", i)),
                  RecordingLogger())
    shipper = Shipper(transports, spool, lambda s, r, i: drops.append((s, r, i)), RecordingLogger(), **options)
    shipper.start()

    async def stop() -> None:
        await shipper.close()
        await close()

    return shipper, drops, stop


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def files(folder: Path) -> List[Path]:
    return sorted(folder.glob("*.pb"))


def test_an_unacknowledged_request_is_written_ahead_and_removed_once_acknowledged(tmp_path: Path) -> None:
    """While the collector holds its answer, the request is on disk after spool_after; the answer removes it."""

    async def go() -> None:
        async with Collector() as collector:
            collector.hold.clear()
            shipper, drops, stop = await shipper_for(collector.port, tmp_path, spool_after_s=0.05)
            shipper.submit("traces", b"first", 1)
            await until(lambda: len(collector.bodies) == 1 and len(files(tmp_path)) == 1)
            assert files(tmp_path)[0].read_bytes() == b"first"
            collector.hold.set()
            await until(lambda: shipper.pending == 0)
            assert files(tmp_path) == [] and drops == [] and collector.bodies == [b"first"]
            await stop()

    asyncio.run(go())


def test_spool_after_zero_writes_every_request_at_once(tmp_path: Path) -> None:
    """With FGEXT_OTLP_SPOOL_AFTER_MS=0 a request is on disk the moment it is submitted."""

    async def go() -> None:
        async with Collector() as collector:
            collector.hold.clear()
            shipper, _, stop = await shipper_for(collector.port, tmp_path, spool_after_s=0.0)
            shipper.submit("traces", b"now", 1)
            assert [path.read_bytes() for path in files(tmp_path)] == [b"now"]
            collector.hold.set()
            assert await shipper.flush(10)
            assert files(tmp_path) == []
            await stop()

    asyncio.run(go())


def test_a_prompt_answer_writes_nothing(tmp_path: Path) -> None:
    """A request acknowledged before spool_after never touches the disk."""

    async def go() -> None:
        async with Collector() as collector:
            shipper, _, stop = await shipper_for(collector.port, tmp_path, spool_after_s=30.0)
            shipper.submit("logs", b"quick", 1)
            assert await shipper.flush(10)
            assert shipper.spool.added == 0 and collector.bodies == [b"quick"]
            await stop()

    asyncio.run(go())


def test_a_request_submitted_for_a_flush_leaves_with_that_flush(tmp_path: Path) -> None:
    """submit(send=False) leaves the background sender asleep: the request stays queued until the flush
    that follows sends it."""

    async def go() -> None:
        async with Collector() as collector:
            shipper, _, stop = await shipper_for(collector.port, tmp_path, spool_after_s=30.0)
            shipper.submit("logs", b"held", 1, send=False)
            for _ in range(20):  # many loop turns: a woken sender would have sent it by now
                await asyncio.sleep(0)
            assert shipper.pending == 1 and collector.bodies == []
            assert await shipper.flush(10)
            assert collector.bodies == [b"held"] and shipper.pending == 0
            await stop()

    asyncio.run(go())


def test_a_flush_that_fails_hands_the_retries_to_the_background_sender(tmp_path: Path) -> None:
    """A flush's send refused with a 503 is retried after the backoff without another flush."""

    async def go() -> None:
        async with Collector([503, 200]) as collector:
            shipper, drops, stop = await shipper_for(collector.port, tmp_path,
                                                     backoff=Backoff(0.05, 0.2, jitter=0.0))
            shipper.submit("traces", b"again", 1, send=False)
            assert not await shipper.flush(10)
            await until(lambda: shipper.pending == 0)
            assert collector.bodies == [b"again", b"again"] and drops == [] and files(tmp_path) == []
            await stop()

    asyncio.run(go())


def test_memory_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Past max_queue_bytes the oldest requests go to the spool and their memory is released; all are sent,
    in order, once the collector answers."""

    async def go() -> None:
        async with Collector() as collector:
            collector.hold.clear()
            shipper, drops, stop = await shipper_for(collector.port, tmp_path, spool_after_s=60.0,
                                                     max_queue_bytes=1000)
            bodies = [bytes([index]) * 300 for index in range(10)]
            for body in bodies:
                shipper.submit("traces", body, 1)
                assert shipper._queue_bytes <= 1000
            assert len(files(tmp_path)) >= 7
            collector.hold.set()
            assert await shipper.flush(10)
            assert b"".join(collector.bodies) == b"".join(bodies) and drops == [] and files(tmp_path) == []
            await stop()

    asyncio.run(go())


def test_a_retryable_failure_spools_backs_off_and_delivers_in_order(tmp_path: Path) -> None:
    """A 503 puts everything on disk; after the backoff all requests arrive (coalesced), oldest first, and the
    spool empties."""

    async def go() -> None:
        async with Collector([503, 200]) as collector:
            shipper, drops, stop = await shipper_for(collector.port, tmp_path,
                                                     backoff=Backoff(0.05, 0.2, jitter=0.0))
            for index in range(5):
                shipper.submit("logs", f"r{index}".encode(), 1)
            await until(lambda: shipper.pending == 0)
            assert collector.bodies == [b"r0r1r2r3r4", b"r0r1r2r3r4"]
            assert shipper.spool.added == 5 and files(tmp_path) == [] and drops == []
            await stop()

    asyncio.run(go())


def test_a_final_rejection_is_dropped_counted_and_the_rest_goes_on(tmp_path: Path) -> None:
    """A 400 drops that request (counted as rejected); the next one is sent."""

    async def go() -> None:
        async with Collector([400, 200]) as collector:
            shipper, drops, stop = await shipper_for(collector.port, tmp_path)
            shipper.submit("metrics", b"bad", 4)
            assert await shipper.flush(10)
            shipper.submit("metrics", b"good", 2)
            assert await shipper.flush(10)
            assert collector.bodies == [b"bad", b"good"] and drops == [("metrics", "rejected", 4)]
            await stop()

    asyncio.run(go())


def test_flush_cut_short_leaves_everything_on_disk(tmp_path: Path) -> None:
    """A flush whose deadline passes while the collector hangs returns False with every request spooled;
    a later shipper on the same directory (the next agent) sends them."""

    async def go() -> None:
        async with Collector() as collector:
            collector.hold.clear()
            shipper, _, stop = await shipper_for(collector.port, tmp_path, spool_after_s=60.0)
            shipper.submit("traces", b"a", 1)
            shipper.submit("traces", b"b", 1)
            assert not await shipper.flush(Deadline.after(0.3))
            assert sorted(path.read_bytes() for path in files(tmp_path)) == [b"a", b"b"]
            await stop()

    asyncio.run(go())


def test_a_flush_that_runs_out_of_time_does_not_cancel_the_send(tmp_path: Path) -> None:
    """A flush's timeout leaves the request on disk but its send in flight: the late answer removes the file
    and the request is not sent a second time."""

    async def go() -> None:
        async with Collector() as collector:
            collector.hold.clear()
            shipper, drops, stop = await shipper_for(collector.port, tmp_path, spool_after_s=60.0)
            shipper.submit("traces", b"late", 1)
            assert not await shipper.flush(0.3)
            assert [path.read_bytes() for path in files(tmp_path)] == [b"late"]
            collector.hold.set()
            await until(lambda: shipper.pending == 0)
            assert await shipper.flush(5)
            assert collector.bodies == [b"late"] and files(tmp_path) == [] and drops == []
            await stop()

    asyncio.run(go())


def test_a_flush_after_prompt_flushes_still_ends_at_its_timeout(tmp_path: Path) -> None:
    """Flushes share one kept timer: after prompt flushes, one whose collector hangs still returns False at
    its timeout with the request on disk, and the late answer still removes it."""

    async def go() -> None:
        async with Collector() as collector:
            shipper, drops, stop = await shipper_for(collector.port, tmp_path, spool_after_s=60.0)
            for index in range(3):
                shipper.submit("traces", b"prompt%d" % index, 1, send=False)
                assert await shipper.flush(10)
            collector.hold.clear()
            shipper.submit("traces", b"hung", 1, send=False)
            assert not await shipper.flush(0.3)
            assert [path.read_bytes() for path in files(tmp_path)] == [b"hung"]
            collector.hold.set()
            await until(lambda: shipper.pending == 0)
            assert files(tmp_path) == [] and drops == [] and collector.bodies[-1] == b"hung"
            await stop()

    asyncio.run(go())


def test_requests_of_an_agent_that_is_gone_are_replayed_first(tmp_path: Path) -> None:
    """At start the shipper claims a gone agent's spooled requests and sends them before new ones."""
    gone = Spool(tmp_path, 10**6, lambda *a: None, RecordingLogger(), owner=GONE)
    gone.add("traces", b"old-1", 1)
    gone.add("traces", b"old-2", 1)

    async def go() -> List[bytes]:
        async with Collector() as collector:
            shipper, drops, stop = await shipper_for(collector.port, tmp_path)
            shipper.submit("traces", b"new", 1)
            assert await shipper.flush(10)
            assert drops == [] and files(tmp_path) == []
            await stop()
            return collector.bodies

    assert b"".join(asyncio.run(go())) == b"old-1old-2new"


def test_requests_queued_behind_one_in_flight_leave_together_as_one_valid_request(tmp_path: Path) -> None:
    """While a send is in flight, later requests of that signal queue; they then leave as one request that
    the collector parses as all of them (protobuf concatenation), and other signals are not mixed in."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def request(name: str) -> bytes:
        message = ExportTraceServiceRequest()
        message.resource_spans.add().scope_spans.add().spans.add(name=name)
        return message.SerializeToString()

    async def go() -> List[bytes]:
        async with Collector() as collector:
            collector.hold.clear()
            shipper, drops, stop = await shipper_for(collector.port, tmp_path)
            shipper.submit("traces", request("first"), 1)
            await until(lambda: len(collector.bodies) == 1)
            for name in ("second", "third", "fourth"):
                shipper.submit("traces", request(name), 1)
            shipper.submit("logs", b"log-request", 1)
            collector.hold.set()
            assert await shipper.flush(10)
            assert drops == []
            await stop()
            return collector.bodies

    bodies = asyncio.run(go())
    assert len(bodies) == 3 and bodies[2] == b"log-request"
    names = [[span.name for rs in ExportTraceServiceRequest.FromString(body).resource_spans
              for ss in rs.scope_spans for span in ss.spans] for body in bodies[:2]]
    assert names == [["first"], ["second", "third", "fourth"]]
