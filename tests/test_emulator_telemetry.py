"""Telemetry as the emulated platform sends it: spellings, batching, order, retries and drops."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable, Dict, List

import pytest
from aiohttp import web

from fgext._events import InitReport, InitRuntimeDone, InitStart, Report, RestoreStart, RuntimeDone, Start
from fgext._parse import parse_event
from fgext._time import parse_time
from fgext.emulator._platform import Subscription
from fgext.emulator._telemetry import EventFactory, TelemetrySender, iso_time

RID = "69be64a7-0233-11e8-82e4-e5d37911193e"
METRICS = {"durationMs": 10.6, "billingDurationMS": 11.0, "memoryUsed": 23.4, "memorySize": 128,
           "podName": "pool22-300-128-fusion-64774779-4g77v"}


class TestSpellings:
    def test_spec_typos_on_spells_as_the_examples(self) -> None:
        """With spec typos: platform.RuntimeDone, tracelId on done/report events, reportMetrics."""
        events = EventFactory(spec_typos=True)
        done = events.done("invoke", RID, 0.0, "success")
        report = events.report("init", RID, 0.0, 1.0, "success", METRICS)
        assert done == {"name": "platform.RuntimeDone", "startTime": "1970-01-01T00:00:00.000Z",
                        "tracelId": RID, "status": "success"}
        assert report["reportMetrics"] == METRICS and "metrics" not in report and report["tracelId"] == RID
        assert events.start("init", RID, 0.0)["traceId"] == RID

    def test_spec_typos_off_uses_regular_spellings(self) -> None:
        """Without spec typos: platform.runtimeDone, traceId everywhere, metrics."""
        events = EventFactory(spec_typos=False)
        done = events.done("invoke", RID, 0.0, "success")
        report = events.report("invoke", RID, 0.0, 1.0, "failure", METRICS)
        assert done["name"] == "platform.runtimeDone" and done["traceId"] == RID and "tracelId" not in done
        assert report["metrics"] == METRICS and "reportMetrics" not in report

    @pytest.mark.parametrize("typos", [True, False])
    def test_fgexts_own_parser_reads_both_spellings(self, typos: bool) -> None:
        """Every body the factory builds parses into the right typed event with the request ID."""
        events = EventFactory(spec_typos=typos)
        bodies = [events.start("init", RID, 1.5), events.done("init", RID, 1.5, "success"),
                  events.report("init", RID, 1.5, 2.5, "success", METRICS), events.start("invoke", RID, 3.0),
                  events.done("invoke", RID, 3.0, "timeout"),
                  events.report("invoke", RID, 3, 4, "timeout", METRICS), events.start("restore", RID, 1.0)]
        parsed = [parse_event(body) for body in bodies]
        assert [type(p) for p in parsed] == [InitStart, InitRuntimeDone, InitReport, Start, RuntimeDone,
                                             Report, RestoreStart]
        assert {p.request_id for p in parsed} == {RID}  # type: ignore[union-attr]
        report = parsed[2]
        assert isinstance(report, InitReport) and report.metrics.billing_duration_ms == 11.0
        assert report.metrics.pod_name == METRICS["podName"] and report.end_ns == 2_500_000_000

    def test_timestamps_have_the_documented_shape(self) -> None:
        """Times are UTC ISO 8601 with milliseconds and Z, as in the spec's examples."""
        assert iso_time(1675209830.0) == "2023-02-01T00:03:50.000Z"
        assert parse_time(iso_time(1675209830.25))[1] == 1675209830250000000


Received = List[List[Dict[str, Any]]]
Handler = Callable[[web.Request, int], Awaitable[web.Response]]


async def ok(request: web.Request, attempt: int) -> web.Response:
    return web.Response()


def with_subscriber(handler: Handler, test: Callable[[TelemetrySender, Received, str], Awaitable[None]],
                    **sender: Any) -> None:
    """Run ``test`` with a real subscriber (``handler`` decides its answers) and a started sender."""

    async def main() -> None:
        received: Received = []
        attempts = {"n": 0}

        async def receive(request: web.Request) -> web.Response:
            attempts["n"] += 1
            body = await request.json()
            response = await handler(request, attempts["n"])
            if response.status == 200:
                received.append(body)
            return response

        app = web.Application()
        app.router.add_post("/", receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        uri = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        options = {"batch_max_items": 100, "batch_timeout_ms": 20, "timeout_s": 1.0, "retries": 2,
                   "backoff_s": 0.01, **sender}
        telemetry = TelemetrySender(**options)
        await telemetry.start()
        try:
            await test(telemetry, received, uri)
        finally:
            await telemetry.stop(timeout=0.0)
            await runner.cleanup()

    asyncio.run(main())


def log(i: int) -> Dict[str, Any]:
    return {"name": "function", "startTime": iso_time(i), "logs": f"[Function]{i}"}


def everything(uri: str) -> Subscription:
    return Subscription("extensionA.sh", uri, ("platform", "function", "extension"))


class TestDelivery:
    def test_batches_by_size_in_order(self) -> None:
        """With a long batch timer, batches leave when full; order is kept across batches."""
        async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
            telemetry.subscribe(everything(uri))
            for i in range(7):
                telemetry.emit("function", log(i))
            for _ in range(200):
                if len(received) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert [len(batch) for batch in received] == [3, 3]
            assert await telemetry.flush(5.0)
            assert [len(batch) for batch in received] == [3, 3, 1]
            assert [e["logs"] for batch in received for e in batch] == [f"[Function]{i}" for i in range(7)]
            assert telemetry.stats.batches_delivered == 3 and telemetry.stats.events_delivered == 7
        with_subscriber(ok, test, batch_max_items=3, batch_timeout_ms=60_000)

    def test_batches_by_time(self) -> None:
        """A batch that never fills leaves once its oldest event is batch_timeout_ms old."""
        async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
            telemetry.subscribe(everything(uri))
            telemetry.emit("function", log(1))
            telemetry.emit("function", log(2))
            for _ in range(300):
                if received:
                    break
                await asyncio.sleep(0.01)
            assert [len(batch) for batch in received] == [2]
        with_subscriber(ok, test, batch_max_items=100, batch_timeout_ms=50)

    def test_events_wait_for_the_subscriber_and_only_subscribed_types_go(self) -> None:
        """Events queued before the subscription are delivered after it, filtered by its types."""
        async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
            telemetry.emit("extension", EventFactory.log("extension", "[Extension]x", 0))
            telemetry.emit("function", log(1))
            await asyncio.sleep(0.05)
            assert received == []
            telemetry.subscribe(Subscription("extensionA.sh", uri, ("function",)))
            assert await telemetry.flush(5.0)
            assert [e["name"] for batch in received for e in batch] == ["function"]
            assert telemetry.events_filtered == 1
        with_subscriber(ok, test)

    def test_a_failing_subscriber_is_retried(self) -> None:
        """Two failed attempts, then success: delivered once, counted as retried, nothing dropped."""
        async def flaky(request: web.Request, attempt: int) -> web.Response:
            return web.Response(status=500 if attempt <= 2 else 200)

        async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
            telemetry.subscribe(everything(uri))
            telemetry.emit("function", log(1), request_id="r1")
            assert await telemetry.flush(5.0)
            assert len(received) == 1
            stats = telemetry.stats
            assert (stats.batches_delivered, stats.batches_retried, stats.attempts_failed) == (1, 1, 2)
            assert stats.events_dropped == 0 and stats.last_error == "HTTP 500"
            assert telemetry.per_invocation.of("r1").batches_retried == 1
        with_subscriber(flaky, test, retries=3)

    def test_a_slow_subscriber_is_retried_then_dropped_and_counted(self) -> None:
        """A subscriber slower than the delivery timeout costs its batch after the retries; counts say so."""
        async def slow(request: web.Request, attempt: int) -> web.Response:
            await asyncio.sleep(1.0)
            return web.Response()

        async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
            telemetry.subscribe(everything(uri))
            telemetry.emit("platform", {"name": "platform.start", "startTime": iso_time(0), "traceId": "r1"},
                           request_id="r1")
            telemetry.emit("function", log(1), request_id="r1")
            assert await telemetry.flush(5.0)
            stats = telemetry.stats
            assert (stats.batches_dropped, stats.events_dropped, stats.attempts_failed) == (1, 2, 2)
            assert stats.events_delivered == 0 and "no answer within 0.2 s" in stats.last_error
            per = telemetry.per_invocation.of("r1")
            assert (per.batches_dropped, per.events_dropped) == (1, 2)
        with_subscriber(slow, test, timeout_s=0.2, retries=1)

    def test_nothing_is_sent_while_paused(self) -> None:
        """While the sandbox is frozen events queue up; they leave after resume."""
        async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
            telemetry.subscribe(everything(uri))
            telemetry.pause()
            telemetry.emit("function", log(1))
            await asyncio.sleep(0.1)
            assert received == [] and telemetry.pending == 1
            telemetry.resume()
            assert await telemetry.flush(5.0)
            assert len(received) == 1
        with_subscriber(ok, test)

    def test_stop_counts_what_could_not_be_delivered(self) -> None:
        """Events still queued when the sender stops are counted as dropped, never silently lost."""
        async def never(request: web.Request, attempt: int) -> web.Response:
            await asyncio.sleep(1.5)
            return web.Response()

        async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
            telemetry.subscribe(everything(uri))
            for i in range(5):
                telemetry.emit("function", log(i))
            await telemetry.stop(timeout=0.1)
            stats = telemetry.stats
            assert stats.events_dropped + stats.events_delivered == 5 and stats.events_dropped >= 3
        with_subscriber(never, test, batch_max_items=2, timeout_s=1.0, retries=0)


def test_bodies_are_json_arrays() -> None:
    """Each POST carries a JSON array of event objects."""
    async def test(telemetry: TelemetrySender, received: Received, uri: str) -> None:
        telemetry.subscribe(everything(uri))
        telemetry.emit("function", log(1))
        assert await telemetry.flush(5.0)
        assert isinstance(received[0], list) and json.loads(json.dumps(received[0]))[0]["name"] == "function"
    with_subscriber(ok, test)
