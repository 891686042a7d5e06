"""A sink's lane (fgext._lane): its own bounded queue and task, backpressure, drops for a full lane."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Optional, Sequence

from fgext._events import AnyEvent
from fgext._pipeline import Pipeline
from fgext._plugin import Plugin
from tests.test_pipeline import Collect, Log, Stuck, context, log_event, run, started, until


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


class TestLanes:
    def test_a_stuck_sink_does_not_delay_another(self) -> None:
        """While one sink is stuck in a synchronous hook, the other gets every batch."""
        stuck, fast = Stuck(), Collect()

        async def go() -> None:
            pipeline = await started([stuck, fast])
            for i in range(10):
                await pipeline.submit_telemetry([log_event(str(i))])
            await until(lambda: len(fast.batches) == 10)
            assert stuck.batches == 1
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
