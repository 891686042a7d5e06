"""The pipeline (fgext._pipeline): ordering, lifecycle, flush policy, deadlines, strict mode, before start."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import pytest

from fgext._deadline import Deadline
from fgext._errors import DropEvent
from fgext._events import AnyEvent, FunctionLog, Invoke
from fgext._flush import FlushPolicy
from fgext._parse import parse_event
from fgext._pipeline import Pipeline, PluginFailure
from fgext._plugin import Plugin, PluginContext, RegistrationInfo


class Log:
    def __init__(self) -> None:
        self.lines: List[tuple] = []  # type: ignore[type-arg]

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self.lines.append((level, event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, **fields)


def log_event(text: str) -> AnyEvent:
    return parse_event({"name": "function", "startTime": "2023-02-01T00:03:50Z", "logs": f"[Function]{text}"})


class Tag(Plugin):
    """A processor appending its tag to each message."""

    role: ClassVar[str] = "processor"

    def __init__(self, tag: str, order: int, use_async: bool = False) -> None:
        self.name = tag  # type: ignore[misc]
        self.order = order  # type: ignore[misc]
        self.tag = tag
        if use_async:
            self.process = self._aprocess  # type: ignore[method-assign]

    def process(self, event: AnyEvent) -> AnyEvent:
        assert isinstance(event, FunctionLog)
        return replace(event, message=event.message + self.tag)

    async def _aprocess(self, event: AnyEvent) -> AnyEvent:
        await asyncio.sleep(0)
        assert isinstance(event, FunctionLog)
        return replace(event, message=event.message + self.tag)


class Collect(Plugin):
    name: ClassVar[str] = "collect"

    def __init__(self) -> None:
        self.batches: List[List[str]] = []
        self.invokes: List[str] = []
        self.calls: List[str] = []

    async def start(self, context: PluginContext) -> None:
        self.calls.append("start")

    async def on_invoke(self, invoke: Invoke) -> None:
        self.invokes.append(invoke.request_id)

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.batches.append([e.message for e in events if isinstance(e, FunctionLog)])

    async def flush(self, timeout: Optional[float] = None) -> None:
        self.calls.append("flush")

    async def shutdown(self, timeout: float) -> None:
        self.calls.append("shutdown")


def context(plugin: Plugin) -> PluginContext:
    return PluginContext(name=plugin.name, registration=RegistrationInfo("extensionX.sh", "127.0.0.1:8081"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class TestOrdering:
    def test_processors_run_by_order_then_sinks(self) -> None:
        """Processors run in ascending order (ties keep enable order), sync and async alike, before sinks."""
        sink = Collect()
        plugins = [Tag("c", 30), sink, Tag("a", 10, use_async=True), Tag("b", 20), Tag("b2", 20)]

        async def go() -> None:
            pipeline = Pipeline(plugins, logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("x"), log_event("y")])
            await pipeline.shutdown(1)

        run(go())
        assert sink.batches == [["xabb2c", "yabb2c"]]
        assert sink.calls == ["start", "shutdown"]

    def test_submitted_items_keep_arrival_order(self) -> None:
        """Invokes and batches queued by the listener reach plugins in the order they arrived."""
        sink = Collect()

        async def go() -> None:
            pipeline = Pipeline([sink], logger=Log())
            await pipeline.start(context)
            for i in range(20):
                await pipeline.submit_invoke(Invoke(f"r{i}", "", None, 0, {}))
                await pipeline.submit_telemetry([log_event(str(i))])
            await pipeline.shutdown(2)

        run(go())
        assert sink.invokes == [f"r{i}" for i in range(20)]
        assert sink.batches == [[str(i)] for i in range(20)]


    def test_a_full_queue_holds_the_submitter_and_loses_nothing(self) -> None:
        """With the pipeline's queue full, submitting waits for room (it does not drop or raise); all arrive."""
        sink = Collect()

        async def go() -> None:
            pipeline = Pipeline([sink], logger=Log(), max_pending=1)
            for i in range(5):  # not started yet: the first fills the queue, the next waits for room
                submit = asyncio.ensure_future(pipeline.submit_telemetry([log_event(str(i))]))
                await asyncio.sleep(0)
                if i == 1:
                    assert not submit.done()
                    await pipeline.start(context)
                await asyncio.wait_for(submit, 5)
            await pipeline.shutdown(2)

        run(go())
        assert sink.batches == [[str(i)] for i in range(5)]

    def test_with_no_processors_a_sink_gets_the_batch_as_a_list(self) -> None:
        """A batch given as a tuple reaches a sink as a list of the same events when no processor copies it."""
        got: List[Any] = []

        class Keep(Plugin):
            name: ClassVar[str] = "keep"

            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                got.append(events)

        events = (log_event("a"), log_event("b"))

        async def go() -> None:
            pipeline = Pipeline([Keep()], logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry(events)
            await pipeline.shutdown(1)

        run(go())
        assert len(got) == 1 and isinstance(got[0], list) and got[0] == list(events)

def report_event(rid: str = "3da1f2dc-3222-475e-9205-e2e6c6318895") -> AnyEvent:
    return parse_event({"name": "platform.report", "startTime": "2023-02-01T00:03:50Z", "traceId": rid,
                        "endTime": "2023-02-01T00:03:51Z", "status": "success"})


class Holding(Plugin):
    """A sink whose flush records itself, then waits until the test lets it finish."""

    name: ClassVar[str] = "holding"

    def __init__(self) -> None:
        self.flushes = 0
        self.release: Optional[asyncio.Event] = None  # made in the running loop (3.9 binds it at creation)
        self.batches = 0

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.batches += 1

    async def flush(self, timeout: Optional[float] = None) -> None:
        self.flushes += 1
        assert self.release is not None
        await self.release.wait()


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class TestFlushAtInvocationEnd:
    def test_a_report_flushes_without_holding_the_worker(self) -> None:
        """A batch with a platform.report flushes the sinks; a slow flush does not delay the next batches, and
        reports arriving meanwhile cost one more flush, not one each."""
        sink = Holding()

        async def go() -> None:
            sink.release = asyncio.Event()
            pipeline = Pipeline([sink], logger=Log())
            await pipeline.start(context)
            await pipeline.submit_telemetry([log_event("no end yet")])
            await until(lambda: sink.batches == 1)
            await asyncio.sleep(0.05)
            assert sink.flushes == 0
            await pipeline.submit_telemetry([log_event("last line"), report_event()])
            await until(lambda: sink.flushes == 1)
            for _ in range(5):  # the flush is still held: batches keep flowing past it
                await pipeline.submit_telemetry([report_event()])
            await until(lambda: sink.batches == 7)
            assert sink.flushes == 1
            sink.release.set()
            await until(lambda: sink.flushes == 2)
            await asyncio.sleep(0.05)
            assert sink.flushes == 2
            await pipeline.shutdown(2)

        run(go())

    def test_a_report_filtered_out_by_a_processor_still_ends_the_invocation(self) -> None:
        """The flush follows the batch as received: dropping the report event does not skip it."""

        class DropReports(Plugin):
            name: ClassVar[str] = "drop-reports"
            role: ClassVar[str] = "processor"

            def process(self, event: AnyEvent) -> AnyEvent:
                if event.name == "platform.report":
                    raise DropEvent
                return event

        sink = Collect()

        async def go() -> None:
            pipeline = Pipeline([DropReports(), sink], logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("x"), report_event()])
            await until(lambda: "flush" in sink.calls)
            await pipeline.shutdown(1)

        run(go())
        assert sink.batches == [["x"]]

    def test_shutdown_waits_for_a_running_flush_before_shutting_down(self) -> None:
        """A plugin is never flushed and shut down at once: shutdown lets the running flush end first."""
        plugin = SlowFlush()
        run(plugin.flushed_by_a_report_then(lambda pipeline: pipeline.shutdown(2)))
        assert plugin.order == ["flush start", "flush end", "shutdown"]

    def test_an_explicit_flush_waits_for_the_end_of_invocation_flush(self) -> None:
        """pipeline.flush() (fgext.testing, a host) lets a running end-of-invocation flush end before
        flushing again: a plugin's flush never runs twice at once."""
        plugin = SlowFlush()

        async def flush_then_shut_down(pipeline: Pipeline) -> None:
            await pipeline.flush(2)
            await pipeline.shutdown(1)

        run(plugin.flushed_by_a_report_then(flush_then_shut_down))
        assert plugin.order == ["flush start", "flush end", "flush start", "flush end", "shutdown"]


class SlowFlush(Plugin):
    """A sink whose flush takes 0.2 s; ``order`` records its flushes and its shutdown."""

    name: ClassVar[str] = "slow"

    def __init__(self) -> None:
        self.order: List[str] = []

    async def flush(self, timeout: Optional[float] = None) -> None:
        self.order.append("flush start")
        await asyncio.sleep(0.2)
        self.order.append("flush end")

    async def shutdown(self, timeout: float) -> None:
        self.order.append("shutdown")

    async def flushed_by_a_report_then(self, then: Any) -> None:
        """Start a pipeline, end an invocation, and call ``then(pipeline)`` while that flush runs."""
        pipeline = Pipeline([self], logger=Log())
        await pipeline.start(context)
        await pipeline.dispatch_telemetry([report_event()])
        await until(lambda: self.order == ["flush start"])
        await then(pipeline)


def platform_event(name: str, rid: str) -> AnyEvent:
    raw: Dict[str, Any] = {"name": name, "startTime": "2023-02-01T00:03:50Z", "traceId": rid}
    if name in ("platform.report", "platform.runtimeDone"):
        raw["status"] = "success"
    return parse_event(raw)


def invocation_events(rid: str, lines: int = 1) -> List[AnyEvent]:
    return [platform_event("platform.start", rid), *[log_event(f"{rid} {i}") for i in range(lines)],
            platform_event("platform.runtimeDone", rid), platform_event("platform.report", rid)]


class Flushes(Plugin):
    """A sink counting its batches and its flushes, and the timeout each flush was given."""

    name: ClassVar[str] = "flushes"

    def __init__(self) -> None:
        self.batches: List[List[str]] = []
        self.flushes: List[Optional[float]] = []
        self.order: List[str] = []

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.batches.append([e.message for e in events if isinstance(e, FunctionLog)])
        self.order.append("telemetry")

    async def flush(self, timeout: Optional[float] = None) -> None:
        self.flushes.append(timeout)
        self.order.append("flush")


async def started(plugins: Sequence[Plugin], **options: Any) -> Pipeline:
    pipeline = Pipeline(plugins, logger=options.pop("logger", None) or Log(), **options)
    await pipeline.start(context)
    return pipeline


class TestFlushPolicy:
    def test_end_flushes_after_each_invocation_and_not_before(self) -> None:
        """end: no flush for lines of an invocation still open, one once its report has been taken."""
        sink = Flushes()

        async def go() -> None:
            pipeline = await started([sink])
            await pipeline.dispatch_telemetry(invocation_events("a")[:2])
            await asyncio.sleep(0.05)
            assert sink.flushes == []
            await pipeline.dispatch_telemetry(invocation_events("a")[2:])
            await until(lambda: len(sink.flushes) == 1)
            await pipeline.shutdown(1)

        run(go())
        assert sink.order == ["telemetry", "telemetry", "flush"]

    def test_periodically_skips_an_invocation_end_before_the_interval(self) -> None:
        """periodically: an invocation ending before the interval passed is not flushed then."""
        sink = Flushes()

        async def go() -> None:
            pipeline = await started([sink], flush=FlushPolicy("periodically", 600.0))
            await pipeline.dispatch_telemetry(invocation_events("a"))
            await asyncio.sleep(0.1)
            await pipeline.shutdown(1)

        run(go())
        assert sink.flushes == []

    @pytest.mark.parametrize("mode", ["periodically", "continuously"])
    def test_timer_flushes_a_sink_that_received_something(self, mode: str) -> None:
        """periodically and continuously: the timer flushes a sink once it has received data, and not again
        while it receives nothing."""
        sink = Flushes()

        async def go() -> None:
            pipeline = await started([sink], flush=FlushPolicy(mode, 0.05))
            await asyncio.sleep(0.2)
            assert sink.flushes == []  # nothing received: no flush
            await pipeline.dispatch_telemetry([log_event("a")])  # no invocation end
            await until(lambda: len(sink.flushes) == 1)
            await asyncio.sleep(0.2)
            assert len(sink.flushes) == 1
            await pipeline.shutdown(1)

        run(go())

    def test_continuously_flushes_at_every_invocation_end(self) -> None:
        """continuously: each invocation's end flushes at once, whatever the interval."""
        sink = Flushes()

        async def go() -> None:
            pipeline = await started([sink], flush=FlushPolicy("continuously", 600.0))
            await pipeline.dispatch_telemetry(invocation_events("a"))
            await until(lambda: len(sink.flushes) == 1)
            await pipeline.shutdown(1)

        run(go())

    def test_late_lines_are_flushed_without_a_next_invocation(self) -> None:
        """end: log lines that arrive after their invocation's report are flushed once taken (item 8)."""
        sink = Flushes()

        async def go() -> None:
            pipeline = await started([sink])
            await pipeline.dispatch_telemetry(invocation_events("a"))
            await until(lambda: len(sink.flushes) == 1)
            await pipeline.dispatch_telemetry([log_event("late 1"), log_event("late 2")])
            await until(lambda: len(sink.flushes) == 2)
            await pipeline.shutdown(1)

        run(go())
        assert sink.order == ["telemetry", "flush", "telemetry", "flush"]
        assert sink.batches[-1] == ["late 1", "late 2"]

    def test_a_flush_follows_the_batch_through_a_busy_lane(self) -> None:
        """The end-of-invocation flush of a sink comes after it took the report's batch, however far
        behind the sink is."""
        sink = Flushes()
        order: List[str] = []

        class Behind(Flushes):
            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                await asyncio.sleep(0.05)
                order.append(f"batch {len(self.batches)}")
                await super().on_telemetry(events)

            async def flush(self, timeout: Optional[float] = None) -> None:
                order.append(f"flush after {len(self.batches)}")

        behind = Behind()

        async def go() -> None:
            pipeline = await started([behind, sink])
            for event in invocation_events("a", lines=3):
                await pipeline.submit_telemetry([event])
            await until(lambda: order[-1:] == ["flush after 6"])
            await pipeline.shutdown(1)

        run(go())
        assert order == [f"batch {i}" for i in range(6)] + ["flush after 6"]

    def test_explicit_flush_comes_after_what_the_lane_holds(self) -> None:
        """pipeline.flush() lets each sink take what is queued for it first, then flushes it."""
        sink = Flushes()

        class Slow(Flushes):
            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                await asyncio.sleep(0.1)
                await super().on_telemetry(events)

        slow = Slow()

        async def go() -> None:
            pipeline = await started([slow, sink])
            await pipeline.submit_telemetry([log_event("a")])
            await until(lambda: sink.batches == [["a"]])
            await pipeline.flush(2)
            await pipeline.shutdown(1)

        run(go())
        assert slow.order == ["telemetry", "flush"]


class TestFailureCounting:
    def test_a_sink_failing_every_batch_is_disabled_despite_invokes_between(self) -> None:
        """Failures are counted per hook: successful on_invoke calls between failing batches reset nothing."""

        class FailsTelemetry(Plugin):
            name: ClassVar[str] = "fails"
            max_failures: ClassVar[int] = 3

            def __init__(self) -> None:
                self.invokes = 0
                self.batches = 0

            def on_invoke(self, invoke: Invoke) -> None:
                self.invokes += 1

            def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                self.batches += 1
                raise RuntimeError("cannot write")

        fails, log = FailsTelemetry(), Log()

        async def go() -> Pipeline:
            pipeline = await started([fails], logger=log)
            for i in range(6):
                await pipeline.dispatch_invoke(Invoke(f"r{i}", "", None, 0, {}))
                await pipeline.dispatch_telemetry([log_event(str(i))])
            await pipeline.shutdown(1)
            return pipeline

        pipeline = run(go())
        assert fails.batches == 3 and fails.invokes == 3
        assert pipeline.stats["plugins_disabled"] == 1
        disabled = [f for _, ev, f in log.lines if ev == "plugin disabled"]
        assert disabled == [{"plugin": "fails", "why": "3 consecutive failures in on_telemetry"}]

    def test_a_success_of_the_same_hook_resets_its_count(self) -> None:
        """Consecutive means consecutive in one hook: a successful batch between failures starts over."""

        class Flaky(Plugin):
            name: ClassVar[str] = "flaky"
            max_failures: ClassVar[int] = 2

            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                if any(isinstance(e, FunctionLog) and e.message == "bad" for e in events):
                    raise RuntimeError("bad batch")

        async def go() -> Pipeline:
            pipeline = await started([Flaky()])
            for text in ("bad", "good", "bad", "good", "bad"):
                await pipeline.dispatch_telemetry([log_event(text)])
            return pipeline

        assert run(go()).stats["plugins_disabled"] == 0

    def test_hooks_the_plugin_does_not_override_are_never_called(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The base class's no-op hooks (on_invoke, flush, shutdown...) are not called at all."""
        called: List[str] = []
        for hook in ("start", "on_invoke", "flush", "shutdown"):
            monkeypatch.setattr(Plugin, hook, lambda self, *args, _hook=hook: called.append(_hook))

        class OnlyTelemetry(Plugin):
            name: ClassVar[str] = "only"

            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                called.append("on_telemetry")

        async def go() -> None:
            pipeline = await started([OnlyTelemetry()])
            await pipeline.dispatch_invoke(Invoke("r", "", None, 0, {}))
            await pipeline.dispatch_telemetry(invocation_events("r"))
            await pipeline.flush(1)
            await pipeline.shutdown(1)

        run(go())
        assert called == ["on_telemetry"]


class Stuck(Plugin):
    """A synchronous sink whose on_telemetry blocks its thread until the test releases it."""

    name: ClassVar[str] = "stuck"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches = 0

    def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.batches += 1
        self.release.wait(30)


class Timeouts(Plugin):
    """A sink recording the timeouts its flush and shutdown were given."""

    name: ClassVar[str] = "timeouts"

    def __init__(self) -> None:
        self.given: Dict[str, float] = {}

    async def flush(self, timeout: Optional[float] = None) -> None:
        assert timeout is not None
        self.given["flush"] = timeout

    async def shutdown(self, timeout: float) -> None:
        self.given["shutdown"] = timeout


class TestDeadline:
    def test_plugins_get_what_is_left_of_the_callers_deadline(self) -> None:
        """One Deadline flows through flush and shutdown: each hook is given at most what it has left."""
        plugin = Timeouts()
        left: Dict[str, float] = {}

        async def go() -> None:
            pipeline = await started([plugin])
            flush_by = Deadline.after(1.5)
            await pipeline.flush(flush_by)
            left["flush"] = flush_by.remaining()
            shutdown_by = Deadline.after(3.0)
            await pipeline.shutdown(shutdown_by)
            left["shutdown"] = shutdown_by.remaining()

        run(go())
        assert left["flush"] <= plugin.given["flush"] <= 1.5
        assert left["shutdown"] <= plugin.given["shutdown"] <= 3.0

    def test_shutdown_holds_its_deadline_with_a_sink_stuck_in_a_thread(self) -> None:
        """A sink stuck in a synchronous hook is left behind at the deadline; the others are still shut
        down within it, and what the stuck lane held is counted."""
        stuck, other = Stuck(), Timeouts()
        log = Log()

        async def go() -> Pipeline:
            pipeline = await started([stuck, other], logger=log)
            for i in range(3):
                await pipeline.submit_telemetry([log_event(str(i))])
            await until(lambda: stuck.batches == 1)
            await asyncio.wait_for(pipeline.shutdown(Deadline.after(1.0)), 10)
            return pipeline

        try:
            pipeline = run(go())
        finally:
            stuck.release.set()
        assert stuck.batches == 1
        assert 0 < other.given["shutdown"] <= 1.0
        assert pipeline.stats["lane_batches_dropped"] == 2
        assert any(ev == "sink did not take its queued telemetry before the shutdown deadline" and f["batches"] == 2
                   for _, ev, f in log.lines)

    def test_plain_function_hooks_run_in_a_daemon_thread(self) -> None:
        """Plain-function hooks run in a daemon thread of the plugin's own, which the interpreter does not
        wait for at exit (so a stuck one cannot hold the process)."""
        seen: List[Tuple[str, bool]] = []

        class Sync(Plugin):
            name: ClassVar[str] = "sync"

            def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                seen.append((threading.current_thread().name, threading.current_thread().daemon))

        async def go() -> None:
            pipeline = await started([Sync()])
            await pipeline.dispatch_telemetry([log_event("a")])
            await pipeline.shutdown(1)

        run(go())
        assert seen == [("fgext-plugin-sync", True)]


class TestBeforeStart:
    def test_submissions_before_start_wait_in_the_bounded_queue(self) -> None:
        """The pipeline exists before its plugins: what is submitted first waits in its bounded queue (the
        submitter waits when it is full) and flows once the plugins start."""
        sink = Collect()

        async def go() -> bool:
            pipeline = Pipeline(logger=Log(), max_pending=2)
            await pipeline.submit_telemetry([log_event("0")])
            await pipeline.submit_telemetry([log_event("1")])
            third = asyncio.ensure_future(pipeline.submit_telemetry([log_event("2")]))
            await asyncio.sleep(0.05)
            waited = not third.done()
            await pipeline.start(context, [sink])
            await asyncio.wait_for(third, 5)
            await until(lambda: len(sink.batches) == 3)
            await pipeline.shutdown(1)
            return waited

        assert run(go()) is True
        assert sink.batches == [["0"], ["1"], ["2"]]

    def test_queued_before_a_start_that_never_came_is_logged(self) -> None:
        """Shut down before plugins started: what waited is reported with its count, not lost silently."""
        log = Log()

        async def go() -> None:
            pipeline = Pipeline(logger=log)
            await pipeline.submit_telemetry([log_event("0")])
            await pipeline.shutdown(1)

        run(go())
        assert [f for _, ev, f in log.lines if ev == "telemetry received before plugins started was not processed"] \
            == [{"count": 1}]

    def test_plugins_started_before_a_strict_start_failure_are_still_shut_down(self) -> None:
        """Strict mode, a plugin's start raises: the plugins that did start still get their shutdown."""

        class NoStart(Plugin):
            name: ClassVar[str] = "nostart"

            def start(self, context: PluginContext) -> None:
                raise RuntimeError("cannot connect")

        first = Collect()

        async def go() -> None:
            pipeline = Pipeline([first, NoStart()], logger=Log(), strict=True)
            with pytest.raises(PluginFailure):
                await pipeline.start(context)
            await pipeline.shutdown(1)

        run(go())
        assert first.calls == ["start", "shutdown"]


class TestOffer:
    def test_offer_queues_without_waiting_and_says_when_the_queue_is_full(self) -> None:
        """offer_telemetry puts a batch in the bounded queue, or returns False at once when it is full."""
        async def scenario() -> Tuple[bool, bool, bool, List[List[str]]]:
            sink = Collect()
            pipeline = Pipeline([sink], logger=Log(), max_pending=1)
            first = pipeline.offer_telemetry([log_event("one")])
            second = pipeline.offer_telemetry([log_event("two")])  # the queue holds one batch: refused
            empty = pipeline.offer_telemetry([])  # nothing to queue is no refusal
            await pipeline.start(context)
            await pipeline.flush(5)
            await pipeline.shutdown(5)
            return first, second, empty, sink.batches

        assert run(scenario()) == (True, False, True, [["one"]])
