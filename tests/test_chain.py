"""The plugin chain (fgext._chain): processors in order, per-event isolation, drops counted, accepts."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from typing import Any, ClassVar, List, Optional, Sequence, Tuple

import pytest

from fgext._errors import DropEvent
from fgext._events import AnyEvent, FunctionLog
from fgext._parse import parse_event
from fgext._pipeline import Pipeline, PluginFailure
from fgext._plugin import Plugin, PluginContext
from tests.test_pipeline import Collect, Log, context, log_event, run


class Dropper(Plugin):
    name: ClassVar[str] = "dropper"
    role: ClassVar[str] = "processor"

    def process(self, event: AnyEvent) -> AnyEvent:
        if isinstance(event, FunctionLog) and "secret" in event.message:
            raise DropEvent
        return event


class Broken(Plugin):
    name: ClassVar[str] = "broken"
    role: ClassVar[str] = "processor"
    max_failures: ClassVar[int] = 3

    def __init__(self, on_error: str = "pass") -> None:
        self.on_error = on_error  # type: ignore[misc]
        self.calls = 0

    def process(self, event: AnyEvent) -> AnyEvent:
        self.calls += 1
        raise RuntimeError("boom")


class TestDropAndIsolation:
    def test_drop_event_removes_only_that_event(self) -> None:
        """DropEvent drops the event it was raised for and is counted; the others go on."""
        sink = Collect()

        async def go() -> Pipeline:
            pipeline = Pipeline([Dropper(), sink], logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a"), log_event("secret"), log_event("b")])
            return pipeline

        pipeline = run(go())
        assert sink.batches == [["a", "b"]]
        assert pipeline.stats["dropped_by_processors"] == 1

    def test_raising_processor_passes_events_then_is_disabled(self) -> None:
        """A raising processor is logged by name, events pass unchanged, and after max_failures it is off."""
        sink, broken, log = Collect(), Broken(), Log()

        async def go() -> Pipeline:
            pipeline = Pipeline([broken, sink], logger=log)
            await pipeline.start(context)
            for i in range(5):
                await pipeline.dispatch_telemetry([log_event(str(i))])
            return pipeline

        pipeline = run(go())
        assert sink.batches == [[str(i)] for i in range(5)]
        assert broken.calls == 3
        assert pipeline.stats["plugins_disabled"] == 1
        assert ("error", "plugin failed") in [(lv, ev) for lv, ev, _ in log.lines]
        assert any(ev == "plugin disabled" and f["plugin"] == "broken" for _, ev, f in log.lines)

    def test_drop_policy_drops_on_error(self) -> None:
        """A processor declaring on_error="drop" loses the event it failed on, counted."""
        sink = Collect()

        async def go() -> Pipeline:
            pipeline = Pipeline([Broken(on_error="drop"), sink], logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a")])
            return pipeline

        pipeline = run(go())
        assert sink.batches == [] and pipeline.stats["dropped_by_processors"] == 1

    def test_failing_sink_does_not_stop_other_sinks(self) -> None:
        """One sink raising leaves the other sink's delivery intact."""

        class BadSink(Plugin):
            name: ClassVar[str] = "bad"

            def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                raise ValueError("nope")

        good = Collect()

        async def go() -> None:
            pipeline = Pipeline([BadSink(), good], logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a")])

        run(go())
        assert good.batches == [["a"]]

    def test_plugin_failing_to_start_is_disabled(self) -> None:
        """A plugin whose start raises never receives events; the others do."""

        class NoStart(Collect):
            name: ClassVar[str] = "nostart"

            async def start(self, context: PluginContext) -> None:
                raise RuntimeError("cannot connect")

        bad, good, log = NoStart(), Collect(), Log()

        async def go() -> None:
            pipeline = Pipeline([bad, good], logger=log)
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a")])

        run(go())
        assert bad.batches == [] and good.batches == [["a"]]

    def test_strict_mode_raises(self) -> None:
        """With strict on, the first failure surfaces as PluginFailure carrying the cause."""

        async def go() -> None:
            pipeline = Pipeline([Broken(), Collect()], logger=Log(), strict=True)
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a")])

        with pytest.raises(PluginFailure) as info:
            run(go())
        assert info.value.plugin == "broken" and isinstance(info.value.__cause__, RuntimeError)


class TestSyncHooks:
    def test_slow_sync_hook_does_not_block_the_loop(self) -> None:
        """A sync sink sleeping 0.3 s runs in a worker thread while the loop keeps ticking."""

        class Slow(Plugin):
            name: ClassVar[str] = "slow"

            def __init__(self) -> None:
                self.thread: Optional[str] = None

            def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                self.thread = threading.current_thread().name
                time.sleep(0.3)

        slow = Slow()
        ticks: List[float] = []

        async def ticker() -> None:
            for _ in range(10):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        async def go() -> None:
            pipeline = Pipeline([slow], logger=Log())
            await pipeline.start(context)
            await asyncio.gather(pipeline.dispatch_telemetry([log_event("a")]), ticker())

        run(go())
        assert slow.thread is not None and slow.thread != threading.main_thread().name
        assert len(ticks) == 10

    def test_hook_timeout_counts_as_failure(self) -> None:
        """An async hook that hangs past hook_timeout is cut off and counted, not awaited forever."""

        class Hang(Plugin):
            name: ClassVar[str] = "hang"

            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                await asyncio.sleep(60)

        async def go() -> Pipeline:
            pipeline = Pipeline([Hang()], logger=Log(), hook_timeout=0.1)
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a")])
            return pipeline

        assert run(go()).stats["plugin_failures"] == 1


class TestAccepts:
    def test_sink_gets_only_accepted_events_and_no_empty_batch(self) -> None:
        """A sink declaring accepts receives only those events, and no call for a batch without any."""
        from fgext._events import Report

        class Reports(Collect):
            name: ClassVar[str] = "reports"
            accepts: ClassVar[Tuple[type, ...]] = (Report,)

            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                self.batches.append([type(e).__name__ for e in events])

        reports, everything = Reports(), Collect()
        report = parse_event({"name": "platform.report", "startTime": "2023-02-01T00:03:50Z", "traceId": "r",
                              "status": "success"})

        async def go() -> None:
            pipeline = Pipeline([reports, everything], logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a")])
            await pipeline.dispatch_telemetry([log_event("b"), report])

        run(go())
        assert reports.batches == [["Report"]]
        assert everything.batches == [["a"], ["b"]]

    def test_processor_sees_only_accepted_events_others_keep_their_place(self) -> None:
        """A processor with accepts is skipped by other events, which stay in order; its drops still count."""
        from fgext._events import LogEvent

        seen: List[str] = []

        class LogsOnly(Plugin):
            name: ClassVar[str] = "logsonly"
            role: ClassVar[str] = "processor"
            accepts: ClassVar[Tuple[type, ...]] = (LogEvent,)

            def process(self, event: AnyEvent) -> AnyEvent:
                assert isinstance(event, FunctionLog)
                seen.append(event.message)
                if event.message == "drop":
                    raise DropEvent
                return replace(event, message=event.message.upper())

        start = parse_event({"name": "platform.start", "startTime": "2023-02-01T00:03:50Z", "traceId": "r"})
        sink = Collect()
        order: List[str] = []

        class Names(Plugin):
            name: ClassVar[str] = "names"

            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                order.extend(getattr(e, "message", e.name) for e in events)

        async def go() -> Pipeline:
            pipeline = Pipeline([LogsOnly(), sink, Names()], logger=Log())
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a"), start, log_event("drop"), log_event("b")])
            return pipeline

        pipeline = run(go())
        assert seen == ["a", "drop", "b"]
        assert order == ["A", "platform.start", "B"]
        assert pipeline.stats["dropped_by_processors"] == 1


class TestDropSignal:
    @pytest.mark.parametrize("use_async", [False, True])
    def test_none_return_drops_and_on_drop_reports_original(self, use_async: bool) -> None:
        """Returning None drops like DropEvent, sync or async; on_drop gets the processor's name and the event."""

        class NoneDropper(Plugin):
            name: ClassVar[str] = "nonedrop"
            role: ClassVar[str] = "processor"

            def __init__(self) -> None:
                if use_async:
                    self.process = self._aprocess  # type: ignore[method-assign]

            def process(self, event: AnyEvent) -> Any:
                return None if isinstance(event, FunctionLog) and event.message == "x" else event

            async def _aprocess(self, event: AnyEvent) -> Any:
                return self.__class__.process(self, event)

        sink = Collect()
        drops: List[Tuple[str, str]] = []
        x = log_event("x")

        async def go() -> Pipeline:
            pipeline = Pipeline([NoneDropper(), sink], logger=Log())
            pipeline.on_drop = lambda name, event: drops.append((name, getattr(event, "message", "")))
            await pipeline.start(context)
            await pipeline.dispatch_telemetry([log_event("a"), x])
            return pipeline

        pipeline = run(go())
        assert sink.batches == [["a"]]
        assert drops == [("nonedrop", "x")] and pipeline.stats["dropped_by_processors"] == 1
