"""The pipeline: the plugins' lifecycle, the dispatcher, and the one owner of when plugins flush.

The pipeline step of every sink's path (listener handler (:mod:`fgext._agent`) -> parse
(:mod:`fgext._parse`) -> **pipeline** -> chain (:mod:`fgext._chain`) -> back here -> one lane per sink
(:mod:`fgext._lane`) -> the sink; for OTLP ``OtlpPlugin.on_telemetry`` -> assembler
(:mod:`fgext.otlp._traces`) -> flush: take -> encode (:mod:`fgext.otlp._requests`) -> shipper
(:mod:`fgext.otlp._shipper`) -> transport).

The HTTP handlers hand invokes and parsed telemetry batches to :meth:`Pipeline.submit_invoke` and
:meth:`Pipeline.submit_telemetry`, which only queue them (a bounded queue that exists from the
agent's first request, before any plugin is loaded): the platform gets its answer at once. One
dispatcher task takes items in arrival order and has the chain run every processor over the batch,
in ``order``. Then each sink gets what survived through its own lane: a bounded queue and a task of
its own, so a slow or failing sink delays nobody else. When there is no processor, nothing is queued
or being dispatched and every lane has room, the handler puts the item in the lanes itself, which is
what the dispatcher would do next, without waking it.

When plugins flush is decided here, for every plugin alike, by the flush policy (``FGEXT_FLUSH``,
:mod:`fgext._flush`): after a batch that ends an invocation (a report, or log lines arriving after
their invocation's report) a sink is flushed once it has taken that batch; with a timer policy,
also on the timer. The lane carries a flush out, beside its queue.

Every hook is called through :class:`fgext._hooks.Hooks`: isolated, bounded in time, failures counted
per hook; with ``strict`` the first failure stops the agent instead. A hook the plugin does not
override is never called.

One :class:`~fgext._deadline.Deadline` flows through :meth:`Pipeline.flush` and
:meth:`Pipeline.shutdown` into every lane; plugins' hooks receive its remaining seconds.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from fgext._chain import Chain
from fgext._config import DEFAULT_LANE_MAX_BYTES
from fgext._deadline import Deadline
from fgext._events import AnyEvent, Invoke
from fgext._flush import FlushPolicy, InvocationTracker
from fgext._hooks import Hooks, PluginFailure, overrides
from fgext._lane import STOP, Lane, estimate_bytes, gather_all, until
from fgext._plugin import Plugin, PluginContext

__all__ = ["Pipeline", "PluginFailure"]

#: at shutdown, the time kept for plugins' own ``shutdown`` after queued work has had its turn
_SHUTDOWN_RESERVE_S = 0.5


def _as_deadline(timeout: Union[Deadline, float, None], default: float) -> Deadline:
    if isinstance(timeout, Deadline):
        return timeout
    return Deadline.after(default if timeout is None else timeout)


def _as_list(events: Sequence[AnyEvent]) -> List[AnyEvent]:
    """With no processors a batch goes on as it came (the chain would copy it to give it back)."""
    return events if events.__class__ is list else list(events)


class Pipeline:
    """Runs plugins over invokes and telemetry; owns their lifecycle (start, flush, shutdown) and when they flush."""

    def __init__(self, plugins: Sequence[Plugin] = (), *, logger: Any, strict: bool = False,
                 max_pending: int = 256, hook_timeout: float = 30.0, flush: Optional[FlushPolicy] = None,
                 lane_capacity: int = 32, lane_wait: float = 2.0, lane_max_bytes: int = DEFAULT_LANE_MAX_BYTES,
                 ) -> None:
        self._log = logger
        self._hook_timeout = hook_timeout
        self._policy = flush or FlushPolicy()
        self._lane_capacity = max(1, lane_capacity)
        self._lane_wait = lane_wait
        self._lane_max_bytes = lane_max_bytes
        self._processors: List[Lane] = []
        self._sinks: List[Lane] = []
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_pending)
        self._worker: Optional[asyncio.Task[None]] = None
        self._timer: Optional[asyncio.Task[None]] = None
        self._tracker = InvocationTracker()
        self._busy = False  # the dispatcher took an item and has not finished dispatching it
        self._started = False
        self._closing = False
        self.failure: Optional[PluginFailure] = None  # strict mode: what stopped the pipeline
        self._failure_raised = False
        self.stats: Dict[str, int] = {
            "invokes": 0, "batches": 0, "events": 0, "dropped_by_processors": 0,
            "plugin_failures": 0, "plugins_disabled": 0, "lane_batches_dropped": 0, "lane_events_dropped": 0,
        }
        self._hooks = Hooks(logger=logger, strict=strict, hook_timeout=hook_timeout, stats=self.stats)
        self._chain = Chain(self._hooks, hook_timeout=hook_timeout, stats=self.stats)
        self.on_fatal: Optional[Callable[[BaseException], None]] = None
        self._add(plugins)

    @property
    def on_drop(self) -> Optional[Callable[[str, AnyEvent], None]]:
        """Called with (plugin name, original event) for every event a processor drops."""
        return self._chain.on_drop

    @on_drop.setter
    def on_drop(self, callback: Optional[Callable[[str, AnyEvent], None]]) -> None:
        self._chain.on_drop = callback

    def _add(self, plugins: Sequence[Plugin]) -> None:
        for plugin in plugins:
            lane = Lane(plugin, self._policy, self._lane_capacity, hooks=self._hooks, logger=self._log,
                        stats=self.stats, hook_timeout=self._hook_timeout, wait=self._lane_wait, fatal=self._fatal,
                        max_bytes=self._lane_max_bytes)
            (self._sinks if lane.is_sink else self._processors).append(lane)
        # sorted() is stable: processors of equal order keep the order they were enabled in.
        self._processors.sort(key=lambda lane: lane.state.plugin.order)

    # -------------------------------------------------------------------------------- lifecycle

    @property
    def _lanes(self) -> List[Lane]:
        return self._processors + self._sinks

    @property
    def plugins(self) -> List[Plugin]:
        return [lane.state.plugin for lane in self._lanes]

    @property
    def policy(self) -> FlushPolicy:
        return self._policy

    async def start(self, make_context: Callable[[Plugin], PluginContext], plugins: Sequence[Plugin] = ()) -> None:
        """Add ``plugins``, start every plugin (one that fails to start is disabled), then the lanes and
        the dispatcher: what was submitted before flows now."""
        if self._started:
            raise RuntimeError("the pipeline is already started")
        self._add(plugins)
        for lane in self._lanes:
            state = lane.state
            ok = True
            if overrides(state.plugin, "start"):
                ok = await self._hooks.call(state, "start", make_context(state.plugin))
            state.started = ok
            if not ok and not state.disabled:
                self._hooks.disable(state, "failed to start")
        self._started = True
        for lane in self._sinks:
            lane.start()
        self._worker = asyncio.ensure_future(self._run())
        interval = self._policy.timer_interval
        if interval is not None:
            self._timer = asyncio.ensure_future(self._tick(interval))

    async def submit_invoke(self, invoke: Invoke) -> None:
        if not self._dispatch_now("invoke", invoke):
            await self._put(("invoke", invoke))

    async def submit_telemetry(self, events: Sequence[AnyEvent], size: Optional[int] = None) -> None:
        """Queue a batch; ``size`` is its raw body's size in bytes when known (else it is estimated)."""
        if events and not self._dispatch_now("telemetry", events, size):
            await self._put(("telemetry", (events, size)))

    def submit_now(self, kind: str, payload: Any, size: Optional[int] = None) -> bool:
        """:meth:`submit_invoke` (kind ``invoke``) or :meth:`submit_telemetry` without a coroutine; False,
        with nothing submitted, when it would have to wait for room in the queue."""
        if (kind != "invoke" and not payload) or self._dispatch_now(kind, payload, size):
            return True
        if self._queue.full():
            return False
        self._queue.put_nowait((kind, payload) if kind == "invoke" else (kind, (payload, size)))
        return True

    async def _put(self, item: Tuple[str, Any]) -> None:
        # With room (the usual case) no Queue.put coroutine is made: the caller waits only for room.
        if self._queue.full():
            await self._queue.put(item)
        else:
            self._queue.put_nowait(item)

    def offer_telemetry(self, events: Sequence[AnyEvent]) -> bool:
        """Queue a batch without waiting; False when the queue is full (the caller answers "retry later":
        the OTLP receiver's 503, where the platform's POST is held instead by :meth:`submit_telemetry`)."""
        if events:
            try:
                self._queue.put_nowait(("telemetry", (events, None)))
            except asyncio.QueueFull:
                return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # Read by fgext._selfstats.AgentStats (the agent's self-metrics); the counts stay owned here.

    def queue_depths(self) -> Dict[str, int]:
        """Batches waiting in each sink's lane, by plugin name."""
        return {lane.state.name: lane.queue.qsize() for lane in self._sinks if lane.queue is not None}

    def lane_drops(self) -> Dict[str, int]:
        """Events dropped for a full lane, by plugin name (only lanes that dropped any)."""
        return {lane.state.name: lane.dropped_events for lane in self._sinks if lane.dropped_events}

    def hook_failures(self) -> Dict[Tuple[str, str], int]:
        """Hook failures since start, by (plugin name, hook)."""
        return dict(self._hooks.failures)

    def disabled_plugins(self) -> Dict[str, bool]:
        """Every plugin by name, and whether it is disabled."""
        return {lane.state.name: lane.state.disabled for lane in self._lanes}

    async def flush(self, timeout: Union[Deadline, float, None] = None) -> None:
        """Have every plugin send what it holds now, within ``timeout`` (a Deadline or seconds).

        A sink is flushed once it has taken what its lane holds. Processors are flushed too: the
        contract gives ``flush`` to both roles, and a processor may hold state of its own.
        """
        deadline = _as_deadline(timeout, self._hook_timeout)
        await gather_all(lane.flush_now(deadline) for lane in self._lanes if lane.flushes and not lane.state.disabled)
        self._raise_failure()

    async def shutdown(self, timeout: Union[Deadline, float]) -> None:
        """Dispatch what is queued, let each lane deliver its queue, then shut plugins down, all by the deadline.

        Queued work has until ``_SHUTDOWN_RESERVE_S`` before the deadline; plugins' ``shutdown`` has what
        is left. A lane still busy then is cancelled (its queued batches counted as dropped); a plugin
        stuck in a plain-function hook keeps its thread, which does not hold the process.
        """
        deadline = _as_deadline(timeout, self._hook_timeout)
        drain = deadline.before(_SHUTDOWN_RESERVE_S)
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if not self._started and self._queue.qsize():
            # Plugins never started (a configuration error, a stop during start-up): said, not lost silently.
            self._log.warning("telemetry received before plugins started was not processed",
                              count=self._queue.qsize())
        worker = self._worker
        if worker is not None and not worker.done():
            if self._queue.empty():
                self._queue.put_nowait(STOP)  # wake it; with items queued it stops once they are dispatched
            if not await until(asyncio.shield(worker), drain):
                self._log.warning("pipeline shutdown: queued telemetry not fully dispatched in time",
                                  pending=self._queue.qsize())
                worker.cancel()
        try:
            await asyncio.gather(*(lane.close(drain, deadline) for lane in self._lanes))
        finally:
            for lane in self._lanes:
                lane.state.thread.close()

    # ---------------------------------------------------------------------------------- dispatch

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is STOP:
                return
            kind, payload = item
            self._busy = True
            try:
                if kind == "invoke":
                    await self._dispatch_invoke(payload)
                else:
                    await self._dispatch_telemetry(*payload)
            except PluginFailure as failure:
                self._fatal(failure)
                return
            finally:
                self._busy = False
            if self._closing and self._queue.empty():
                return

    async def dispatch_invoke(self, invoke: Invoke) -> None:
        """Hand one invoke to every plugin now, and wait until every sink has taken it (for tests and
        ``fgext.testing``; the listener uses :meth:`submit_invoke`)."""
        await self._dispatch_invoke(invoke)
        await self._lanes_taken()

    async def dispatch_telemetry(self, events: Sequence[AnyEvent]) -> List[AnyEvent]:
        """Run the chain on one batch now and wait until every sink has taken what survived; return it
        (for tests and ``fgext.testing``; the listener uses :meth:`submit_telemetry`)."""
        survivors = await self._dispatch_telemetry(events)
        await self._lanes_taken()
        return survivors

    async def _lanes_taken(self) -> None:
        if not self._started:
            raise RuntimeError("start the pipeline before dispatching to it")
        await gather_all(lane.taken() for lane in self._sinks if lane.enqueued > lane.done)
        self._raise_failure()

    async def _dispatch_invoke(self, invoke: Invoke) -> None:
        self._count_dispatch("invoke", invoke)
        if self._processors:
            await gather_all(self._hooks.call(lane.state, "on_invoke", invoke) for lane in self._processors
                             if lane.invokes and not lane.state.disabled)
        for lane, item, events, share in self._invoke_offers(invoke):
            if not lane.offer_now(item, share):
                await lane.offer(item, events, share)

    async def _dispatch_telemetry(self, events: Sequence[AnyEvent], size: Optional[int] = None) -> List[AnyEvent]:
        self._count_dispatch("telemetry", events)
        survivors = await self._chain.run(self._processors, list(events)) if self._processors else _as_list(events)
        for lane, item, count, share in self._telemetry_offers(events, survivors, size):
            if not lane.offer_now(item, share):
                await lane.offer(item, count, share)
        self._batch_done(events)
        return survivors

    def _count_dispatch(self, kind: str, payload: Any) -> None:
        """The dispatch counters, by the dispatcher or by :meth:`_dispatch_now` alike."""
        if kind == "invoke":
            self.stats["invokes"] += 1
        else:
            self.stats["batches"] += 1
            self.stats["events"] += len(payload)

    def _invoke_offers(self, invoke: Invoke) -> List[Tuple[Lane, Tuple[str, Any], int, int]]:
        return [(lane, ("on_invoke", invoke), 0, 0) for lane in self._sinks
                if lane.invokes and not lane.state.disabled]

    def _telemetry_offers(self, events: Sequence[AnyEvent], survivors: List[AnyEvent],
                          size: Optional[int]) -> List[Tuple[Lane, Tuple[str, Any], int, int]]:
        """What each sink's lane is to get of a batch: (lane, item, events, raw bytes)."""
        offers: List[Tuple[Lane, Tuple[str, Any], int, int]] = []
        if survivors:
            # Each sink's lane counts its share of the batch's raw bytes (by events, after the processors).
            per_event = (estimate_bytes(events) if size is None else size) / len(events)
            for lane in self._sinks:
                if lane.state.disabled or not lane.telemetry:
                    continue
                plugin = lane.state.plugin
                # ``accepts`` narrows what a sink sees; a batch with nothing for it is not delivered at all.
                wanted = survivors if not plugin.accepts else [e for e in survivors if plugin.wants(e)]
                if wanted:
                    offers.append((lane, ("on_telemetry", wanted), len(wanted), int(per_event * len(wanted))))
        return offers

    def _batch_done(self, events: Sequence[AnyEvent]) -> None:
        # The original batch: a processor may have dropped the report, the invocation still ended.
        if self._tracker.ends_invocation(events):
            for lane in self._lanes:
                if lane.flushes and not lane.state.disabled and lane.clock.at_invocation_end():
                    lane.flush_after_queued()

    def _dispatch_now(self, kind: str, payload: Any, size: Optional[int] = None) -> bool:
        """Dispatch in the caller's task, when that is exactly what the dispatcher would do next: no processor
        to run, nothing queued or being dispatched ahead, and room in every lane it goes to. It then takes
        no task switch (a tenth of a batch's cost); else False, and the caller queues it."""
        if self._processors or self._busy or not self._started or self._closing or self.failure is not None \
                or not self._queue.empty():
            return False
        offers = (self._invoke_offers(payload) if kind == "invoke"
                  else self._telemetry_offers(payload, _as_list(payload), size))
        if not all(lane.has_room(share) for lane, _, _, share in offers):
            return False
        self._count_dispatch(kind, payload)
        for lane, item, _, share in offers:
            lane.offer_now(item, share)
        if kind != "invoke":
            self._batch_done(payload)
        return True

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for lane in self._lanes:
                if lane.flushes and not lane.state.disabled and lane.clock.on_timer(lane.received):
                    lane.request_flush(None)

    # ----------------------------------------------------------------------------------- strict

    def _fatal(self, failure: PluginFailure) -> None:
        if self.failure is not None:
            return
        self.failure = failure
        if self.on_fatal is not None:
            self.on_fatal(failure)

    def _raise_failure(self) -> None:
        """Strict mode: the first failure, raised once to whoever awaits the pipeline next."""
        if self.failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self.failure
