"""A sink's lane (fgext._lane): its own queue, bounded in batches and bytes, and task; drops for a full lane."""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar, Optional, Sequence

import pytest

from fgext._events import AnyEvent, FunctionLog, Invoke
from fgext._lane import estimate_bytes
from fgext._pipeline import Pipeline
from fgext._plugin import Plugin
from tests.test_pipeline import Collect, Log, Stuck, context, log_event, report_event, run, started, until


class Gate(Plugin):
    """A sink whose on_telemetry waits until the test opens the gate; ``batches`` counts what it was handed."""

    name: ClassVar[str] = "gate"

    def __init__(self) -> None:
        self.gate: Optional[asyncio.Event] = None  # made in the running loop (3.9 binds it at creation)
        self.batches = 0

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.batches += 1
        assert self.gate is not None
        await self.gate.wait()


class TestBackpressure:
    def test_full_queues_make_submit_wait(self) -> None:
        """With the sink's hook busy, its lane full and the dispatcher's queue full, submit_telemetry waits
        instead of growing memory, and goes on once the sink moves."""
        gate = Gate()

        async def go() -> int:
            gate.gate = asyncio.Event()
            pipeline = Pipeline([gate], logger=Log(), max_pending=2, lane_capacity=1, lane_wait=30)
            await pipeline.start(context)
            accepted = 0
            for i in range(10):
                submit = asyncio.ensure_future(pipeline.submit_telemetry([log_event(str(i))]))
                await asyncio.sleep(0.05)
                if not submit.done():
                    break
                accepted += 1
            gate.gate.set()
            await asyncio.wait_for(submit, 5)
            await pipeline.shutdown(2)
            assert pipeline.stats["lane_batches_dropped"] == 0 and gate.batches == accepted + 1
            return accepted

        # One in the hook, one in the lane, one held by the dispatcher at the full lane, two queued.
        assert run(go()) == 5


    def test_batches_dispatched_at_once_and_queued_ones_keep_arrival_order(self) -> None:
        """Batches are handed over in the submitter's task while the way is clear, queued once a lane is full;
        the sink gets them all, in the order they were submitted, and invokes in their place among them."""
        seen: list = []  # type: ignore[type-arg]

        class Ordered(Gate):
            async def on_invoke(self, invoke: Invoke) -> None:
                seen.append(invoke.request_id)

            async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                seen.extend(e.message for e in events if isinstance(e, FunctionLog))
                await super().on_telemetry(events)

        sink = Ordered()

        async def go() -> None:
            sink.gate = asyncio.Event()
            pipeline = Pipeline([sink], logger=Log(), max_pending=64, lane_capacity=2, lane_wait=30)
            await pipeline.start(context)
            submits = []
            for i in range(12):
                submits.append(asyncio.ensure_future(pipeline.submit_invoke(Invoke(f"r{i}", "", None, 0, {}))))
                submits.append(asyncio.ensure_future(pipeline.submit_telemetry([log_event(str(i))])))
                if i == 1:
                    await asyncio.sleep(0.05)  # the sink is in its hook now: the lane fills, the rest queue
            await asyncio.sleep(0.05)
            assert pipeline.pending > 0  # some had to wait in the dispatcher's queue
            sink.gate.set()
            await asyncio.wait_for(asyncio.gather(*submits), 5)
            await pipeline.dispatch_telemetry([])  # waits until the sink took everything
            await pipeline.shutdown(2)

        run(go())
        assert seen == [x for i in range(12) for x in (f"r{i}", str(i))]

class TestLanes:
    def test_a_stuck_sink_does_not_delay_another(self) -> None:
        """While one sink is stuck in a synchronous hook, the other gets every batch."""
        stuck, fast = Stuck(), Collect()

        async def go() -> None:
            pipeline = await started([stuck, fast])
            for i in range(10):
                await pipeline.submit_telemetry([log_event(str(i))])
            await until(lambda: len(fast.batches) == 10)
            # the stuck hook's thread may start after the fast sink is done: it holds at its first batch
            await until(lambda: stuck.batches == 1)
            assert len(fast.batches) == 10
            stuck.release.set()
            await until(lambda: stuck.batches == 10)
            await pipeline.shutdown(2)

        try:
            run(go())
        finally:
            stuck.release.set()

    def test_a_full_lane_waits_then_drops_for_that_sink_only(self) -> None:
        """A full lane holds the dispatcher for lane_wait, then that sink's batches are dropped and counted
        while the other sink still gets all of them."""
        stuck, fast, log = Stuck(), Collect(), Log()

        async def go() -> Pipeline:
            pipeline = await started([stuck, fast], logger=log, lane_capacity=2, lane_wait=0.1)
            for i in range(10):
                await pipeline.submit_telemetry([log_event(str(i))])
            await until(lambda: len(fast.batches) == 10)
            assert pipeline.stats["lane_batches_dropped"] == 7  # one in the hook, two in the lane
            stuck.release.set()
            await until(lambda: stuck.batches == 3)
            await pipeline.shutdown(2)
            return pipeline

        try:
            pipeline = run(go())
        finally:
            stuck.release.set()
        assert pipeline.stats["lane_events_dropped"] == 7
        full = [f for _, ev, f in log.lines if ev == "sink lane full: batches for this sink are dropped"]
        assert full and full[0]["plugin"] == "stuck"

    def test_default_lane_holds_32_batches_and_waits_2_seconds(self) -> None:
        """By default a lane holds 32 batches; past that the dispatcher waits (2 s) and then drops for that sink."""
        stuck, fast = Stuck(), Collect()

        async def go() -> Pipeline:
            pipeline = await started([stuck, fast])
            for i in range(40):
                await pipeline.submit_telemetry([log_event(str(i))])
            await until(lambda: len(fast.batches) == 40, timeout=15)
            stuck.release.set()
            await until(lambda: stuck.batches == 33)
            await pipeline.shutdown(2)
            return pipeline

        try:
            assert run(go()).stats["lane_batches_dropped"] == 40 - 1 - 32
        finally:
            stuck.release.set()

    def test_a_lane_with_room_again_takes_batches_again(self) -> None:
        """Once the stuck sink has drained its lane to half, its batches are queued again, not dropped."""
        stuck = Stuck()

        async def go() -> Pipeline:
            pipeline = await started([stuck], lane_capacity=2, lane_wait=0.1)
            for i in range(4):
                await pipeline.submit_telemetry([log_event(str(i))])
            await until(lambda: pipeline.stats["lane_batches_dropped"] == 1)
            stuck.release.set()
            await until(lambda: stuck.batches == 3)
            await pipeline.submit_telemetry([log_event("after")])
            await until(lambda: stuck.batches == 4)
            await pipeline.shutdown(2)
            return pipeline

        try:
            assert run(go()).stats["lane_batches_dropped"] == 1
        finally:
            stuck.release.set()


class TestBytes:
    def test_a_lane_is_bounded_in_bytes_too(self) -> None:
        """With room for batches but not for their bytes, the lane waits lane_wait and then drops for that
        sink, counted as for a full lane; the other sink gets every batch."""
        stuck, fast = Stuck(), Collect()

        async def go() -> Pipeline:
            pipeline = await started([stuck, fast], lane_capacity=32, lane_wait=0.1, lane_max_bytes=100_000)
            for i in range(6):
                await pipeline.submit_telemetry([log_event(str(i)), log_event(f"{i}b")], 40_000)
            await until(lambda: len(fast.batches) == 6)
            # one in the hook, two queued (80,000 bytes), three more did not fit in 100,000
            assert pipeline.stats["lane_batches_dropped"] == 3 and pipeline.stats["lane_events_dropped"] == 6
            stuck.release.set()
            await until(lambda: stuck.batches == 3)
            await pipeline.shutdown(2)
            return pipeline

        try:
            pipeline = run(go())
        finally:
            stuck.release.set()
        assert pipeline.lane_drops() == {"stuck": 6}

    def test_a_batch_over_the_byte_bound_still_enters_an_empty_lane(self) -> None:
        """A single batch bigger than the bound is not refused for its size: an empty lane takes it."""
        sink = Collect()

        async def go() -> Pipeline:
            pipeline = await started([sink], lane_max_bytes=1000, lane_wait=0.1)
            await pipeline.submit_telemetry([log_event("big")], 10_000_000)
            await until(lambda: len(sink.batches) == 1)
            await pipeline.shutdown(2)
            return pipeline

        assert run(go()).stats["lane_batches_dropped"] == 0

    def test_a_batch_of_unknown_size_is_estimated_from_its_events(self) -> None:
        """Without the body's size, a batch weighs about its log text plus a fixed amount per event."""
        small = estimate_bytes([log_event("x")])
        assert estimate_bytes([log_event("x" * 10_000)]) >= small + 9_999
        assert estimate_bytes([log_event("x"), log_event("y")]) == 2 * small


class Inline(Plugin):
    """A sink declaring ``inline``: records the task each hook ran in; the batch marked ``wait`` suspends
    until the test opens the gate, one marked ``fail`` raises (``fail-late``: after suspending)."""

    name: ClassVar[str] = "inline"
    inline: ClassVar[bool] = True

    def __init__(self) -> None:
        self.gate: Optional[asyncio.Event] = None
        self.seen: list = []  # type: ignore[type-arg]
        self.tasks: list = []  # type: ignore[type-arg]
        self.flushed: list = []  # type: ignore[type-arg]

    async def on_invoke(self, invoke: Invoke) -> None:
        self.tasks.append(asyncio.current_task())
        self.seen.append(invoke.request_id)

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.tasks.append(asyncio.current_task())
        messages = [e.message for e in events if isinstance(e, FunctionLog)]
        if "fail" in messages:
            raise RuntimeError("refused")
        if "wait" in messages or "fail-late" in messages:
            assert self.gate is not None
            await self.gate.wait()
            if "fail-late" in messages:
                raise RuntimeError("refused late")
        self.seen.extend(messages or ["report"])

    async def flush(self, timeout: Optional[float] = None) -> None:
        self.flushed.append(list(self.seen))


class TestInline:
    def test_an_idle_lanes_inline_hooks_run_in_the_submitting_task(self) -> None:
        """A sink declaring ``inline`` has on_invoke and on_telemetry called in the submitter's task while its
        lane is idle; a sink that does not declare it is called in its lane's task."""
        sink, other = Inline(), Collect()
        tasks: list = []  # type: ignore[type-arg]

        async def on_telemetry(events: Sequence[AnyEvent]) -> None:
            tasks.append(asyncio.current_task())

        other.on_telemetry = on_telemetry  # type: ignore[method-assign]

        async def go() -> object:
            pipeline = await started([sink, other])
            await pipeline.submit_invoke(Invoke("r1", "", None, 0, {}))
            await pipeline.submit_telemetry([log_event("a")])
            await until(lambda: len(tasks) == 1)
            await pipeline.shutdown(2)
            return asyncio.current_task()

        me = run(go())
        assert sink.seen == ["r1", "a"] and sink.tasks == [me, me]
        assert tasks and tasks[0] is not me

    def test_a_plain_function_hook_declared_inline_still_runs_in_its_thread(self) -> None:
        """``inline`` applies to coroutine hooks only: a plain-function on_telemetry keeps its own thread."""
        threads: list = []  # type: ignore[type-arg]

        class Plain(Plugin):
            name: ClassVar[str] = "plain"
            inline: ClassVar[bool] = True

            def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
                threads.append(threading.current_thread())

        async def go() -> None:
            pipeline = await started([Plain()])
            await pipeline.submit_telemetry([log_event("a")])
            await until(lambda: len(threads) == 1)
            await pipeline.shutdown(2)

        run(go())
        assert threads[0] is not threading.main_thread()

    def test_a_suspended_inline_hook_goes_on_alone_and_later_batches_keep_their_order(self) -> None:
        """An inline hook that suspends does not hold the submitter; the lane is busy until it ends: what
        arrives meanwhile is queued behind it and reaches the sink in order, in the lane's task."""
        sink = Inline()

        async def go() -> object:
            sink.gate = asyncio.Event()
            pipeline = await started([sink])
            await pipeline.submit_telemetry([log_event("wait")])  # returns: the gate is still shut
            for text in ("b", "c"):
                await pipeline.submit_telemetry([log_event(text)])
            await asyncio.sleep(0.05)
            assert sink.seen == []
            sink.gate.set()
            await until(lambda: len(sink.seen) == 3)
            await pipeline.submit_telemetry([log_event("d")])  # idle again: inline again
            await pipeline.shutdown(2)
            return asyncio.current_task()

        me = run(go())
        assert sink.seen == ["wait", "b", "c", "d"]
        assert sink.tasks[0] is me and sink.tasks[-1] is me and me not in sink.tasks[1:3]

    def test_a_flush_after_a_suspended_inline_hook_waits_for_it(self) -> None:
        """The end-of-invocation flush starts only once the inline hook that took the report has ended."""
        sink = Inline()

        async def go() -> None:
            sink.gate = asyncio.Event()
            pipeline = await started([sink])
            await pipeline.submit_telemetry([log_event("wait"), report_event()])
            await asyncio.sleep(0.05)
            assert sink.flushed == []
            sink.gate.set()
            await until(lambda: len(sink.flushed) == 1)
            await pipeline.flush(2)  # an explicit flush waits for what the lane took
            await pipeline.shutdown(2)

        run(go())
        assert sink.flushed[0] == ["wait"]

    def test_inline_failures_are_counted_per_hook_and_disable_the_sink(self) -> None:
        """An inline hook raising, before or after suspending, is counted like any hook's failure; after
        ``max_failures`` in a row the sink is disabled, and another sink gets every batch."""
        sink, other = Inline(), Collect()
        sink.max_failures = 3  # type: ignore[misc]

        async def go() -> Pipeline:
            sink.gate = asyncio.Event()
            sink.gate.set()
            pipeline = await started([sink, other])
            for text in ("fail", "fail-late", "fail", "after"):
                await pipeline.submit_telemetry([log_event(text)])
                await until(lambda: pipeline.stats["plugin_failures"] >= 1)
            await until(lambda: len(other.batches) == 4)
            await pipeline.shutdown(2)
            return pipeline

        pipeline = run(go())
        assert pipeline.hook_failures() == {("inline", "on_telemetry"): 3}
        assert pipeline.disabled_plugins()["inline"] and "after" not in sink.seen

    def test_a_suspended_inline_hook_is_bounded_by_the_hook_timeout(self) -> None:
        """An inline hook that suspends past the hook timeout counts as a failure, and the lane moves on."""
        sink = Inline()

        async def go() -> Pipeline:
            sink.gate = asyncio.Event()
            pipeline = await started([sink], hook_timeout=0.2)
            await pipeline.submit_telemetry([log_event("wait")])
            await pipeline.submit_telemetry([log_event("b")])
            await until(lambda: sink.seen == ["b"])
            await pipeline.shutdown(2)
            return pipeline

        assert run(go()).hook_failures() == {("inline", "on_telemetry"): 1}

    @pytest.mark.parametrize("text", ["fail", "fail-late"])
    def test_strict_mode_stops_on_an_inline_failure(self, text: str) -> None:
        """With ``strict``, an inline hook's failure (before or after suspending) stops the pipeline."""
        sink = Inline()
        stopped: list = []  # type: ignore[type-arg]

        async def go() -> Pipeline:
            sink.gate = asyncio.Event()
            sink.gate.set()
            pipeline = await started([sink], strict=True)
            pipeline.on_fatal = stopped.append
            await pipeline.submit_telemetry([log_event(text)])
            await until(lambda: bool(stopped))
            await pipeline.shutdown(2)
            return pipeline

        pipeline = run(go())
        assert pipeline.failure is not None and pipeline.failure.hook == "on_telemetry"

    def test_a_stuck_inline_hook_is_cancelled_at_the_shutdown_deadline(self) -> None:
        """An inline hook still suspended when the shutdown's drain time ends is cancelled and counted."""
        sink = Inline()

        async def go() -> Pipeline:
            sink.gate = asyncio.Event()
            pipeline = await started([sink])
            await pipeline.submit_telemetry([log_event("wait")])
            await pipeline.shutdown(0.8)
            return pipeline

        pipeline = run(go())
        assert pipeline.stats["lane_batches_dropped"] == 1 and sink.seen == []
