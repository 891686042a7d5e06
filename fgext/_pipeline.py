"""The one place where the plugin chain runs, and the one owner of when plugins flush.

The HTTP handlers hand invokes and parsed telemetry batches to :meth:`Pipeline.submit_invoke` and
:meth:`Pipeline.submit_telemetry`, which only queue them (a bounded queue that exists from the
agent's first request, before any plugin is loaded): the platform gets its answer at once. One
dispatcher task takes items in arrival order and runs every processor over the batch, in ``order``.
Then each sink gets what survived through its own **lane**: a bounded queue and a task of its own,
so a slow or failing sink delays nobody else. A full lane holds the dispatcher (and through the
bounded queue, the platform's POST) for at most ``lane_wait`` seconds; after that the batches for
that lane alone are dropped and counted until it has drained to half its capacity.

When plugins flush is decided here, for every plugin alike, by the flush policy (``FGEXT_FLUSH``,
:mod:`fgext._flush`): after a batch that ends an invocation (a report, or log lines arriving after
their invocation's report) a sink is flushed once it has taken that batch; with a timer policy,
also on the timer. A flush runs beside the lane, never in its way: one at a time per plugin, and
requests arriving meanwhile are answered by one more flush after it, not one each.

Every hook is called through :class:`fgext._hooks.Hooks`: isolated, bounded in time, failures counted
per hook (a processor's failed event goes on or is dropped, as it declares); with ``strict`` the
first failure stops the agent instead. A hook the plugin does not override is never called.

One :class:`~fgext._deadline.Deadline` flows through :meth:`Pipeline.flush` and
:meth:`Pipeline.shutdown` into every lane; plugins' hooks receive its remaining seconds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import (
    Any,
    Awaitable,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from fgext._deadline import Deadline
from fgext._errors import DropEvent
from fgext._events import AnyEvent, Invoke
from fgext._flush import FlushClock, FlushPolicy, InvocationTracker
from fgext._hooks import Hooks, PluginFailure, PluginState, is_async, overrides, within
from fgext._plugin import Plugin, PluginContext

__all__ = ["Pipeline", "PluginFailure"]

_STOP = object()
#: at shutdown, the time kept for plugins' own ``shutdown`` after queued work has had its turn
_SHUTDOWN_RESERVE_S = 0.5


async def _all(calls: Iterable[Awaitable[Any]]) -> None:
    """``gather`` without its task per call when there is just one (the usual case)."""
    pending = list(calls)
    if len(pending) == 1:
        await pending[0]
    elif pending:
        await asyncio.gather(*pending)


async def _until(call: Awaitable[Any], deadline: Deadline) -> bool:
    """Await ``call`` until ``deadline``; whether it finished (it is cancelled if not)."""
    try:
        await asyncio.wait_for(call, timeout=deadline.timeout())
    except asyncio.TimeoutError:
        return False
    return True


class _Lane:
    """One plugin's delivery: for a sink, its own bounded queue and task; for every plugin, its flushes."""

    def __init__(self, plugin: Plugin, policy: FlushPolicy, capacity: int) -> None:
        self.state = PluginState(plugin)
        is_sink = plugin.role != "processor"
        self.queue: Optional[asyncio.Queue[Any]] = asyncio.Queue(maxsize=capacity) if is_sink else None
        self.task: Optional[asyncio.Task[None]] = None
        self.invokes = overrides(plugin, "on_invoke")
        self.telemetry = overrides(plugin, "on_telemetry" if is_sink else "process")
        self.flushes = overrides(plugin, "flush")
        self.clock = FlushClock(policy)
        self.received = False  # something reached the plugin since its last flush began
        self.enqueued = 0  # items put in the queue, and taken by the plugin: flush targets count in these
        self.done = 0
        self.flush_at: Deque[int] = deque()  # flush once ``done`` reaches each
        self.flusher: Optional[asyncio.Task[None]] = None
        self.wanted = 0  # flush requests made, and answered (one flush answers all made before it began)
        self.completed = 0
        self.flush_deadline: Optional[Deadline] = None
        self.progress = asyncio.Event()  # set (and replaced) when a flush ends
        self.stopping = False
        self.congested = False
        self.dropped_batches = 0
        self.dropped_events = 0


def _as_deadline(timeout: Union[Deadline, float, None], default: float) -> Deadline:
    if isinstance(timeout, Deadline):
        return timeout
    return Deadline.after(default if timeout is None else timeout)


class Pipeline:
    """Runs plugins over invokes and telemetry; owns their lifecycle (start, flush, shutdown) and when they flush."""

    def __init__(self, plugins: Sequence[Plugin] = (), *, logger: Any, strict: bool = False,
                 max_pending: int = 256, hook_timeout: float = 30.0, flush: Optional[FlushPolicy] = None,
                 lane_capacity: int = 32, lane_wait: float = 2.0) -> None:
        self._log = logger
        self._hook_timeout = hook_timeout
        self._policy = flush or FlushPolicy()
        self._lane_capacity = max(1, lane_capacity)
        self._lane_wait = lane_wait
        self._processors: List[_Lane] = []
        self._sinks: List[_Lane] = []
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_pending)
        self._worker: Optional[asyncio.Task[None]] = None
        self._timer: Optional[asyncio.Task[None]] = None
        self._tracker = InvocationTracker()
        self._started = False
        self._closing = False
        self.failure: Optional[PluginFailure] = None  # strict mode: what stopped the pipeline
        self._failure_raised = False
        self.stats: Dict[str, int] = {
            "invokes": 0, "batches": 0, "events": 0, "dropped_by_processors": 0,
            "plugin_failures": 0, "plugins_disabled": 0, "lane_batches_dropped": 0, "lane_events_dropped": 0,
        }
        self._hooks = Hooks(logger=logger, strict=strict, hook_timeout=hook_timeout, stats=self.stats)
        self.on_fatal: Optional[Callable[[BaseException], None]] = None
        #: called with (plugin name, original event) for every event a processor drops
        self.on_drop: Optional[Callable[[str, AnyEvent], None]] = None
        self._add(plugins)

    def _add(self, plugins: Sequence[Plugin]) -> None:
        for plugin in plugins:
            lane = _Lane(plugin, self._policy, self._lane_capacity)
            (self._sinks if lane.queue is not None else self._processors).append(lane)
        # sorted() is stable: processors of equal order keep the order they were enabled in.
        self._processors.sort(key=lambda lane: lane.state.plugin.order)

    # -------------------------------------------------------------------------------- lifecycle

    @property
    def _lanes(self) -> List[_Lane]:
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
            lane.task = asyncio.ensure_future(self._lane_run(lane))
        self._worker = asyncio.ensure_future(self._run())
        interval = self._policy.timer_interval
        if interval is not None:
            self._timer = asyncio.ensure_future(self._tick(interval))

    async def submit_invoke(self, invoke: Invoke) -> None:
        await self._queue.put(("invoke", invoke))

    async def submit_telemetry(self, events: Sequence[AnyEvent]) -> None:
        if events:
            await self._queue.put(("telemetry", events))

    def offer_telemetry(self, events: Sequence[AnyEvent]) -> bool:
        """Queue a batch without waiting; False when the queue is full (the caller answers "retry later":
        the OTLP receiver's 503, where the platform's POST is held instead by :meth:`submit_telemetry`)."""
        if events:
            try:
                self._queue.put_nowait(("telemetry", events))
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
        await _all(self._flush_now(lane, deadline) for lane in self._lanes if lane.flushes and not lane.state.disabled)
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
                self._queue.put_nowait(_STOP)  # wake it; with items queued it stops once they are dispatched
            if not await _until(asyncio.shield(worker), drain):
                self._log.warning("pipeline shutdown: queued telemetry not fully dispatched in time",
                                  pending=self._queue.qsize())
                worker.cancel()
        try:
            await asyncio.gather(*(self._close_lane(lane, drain, deadline) for lane in self._lanes))
        finally:
            for lane in self._lanes:
                lane.state.thread.close()

    # ---------------------------------------------------------------------------------- dispatch

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            kind, payload = item
            try:
                if kind == "invoke":
                    await self._dispatch_invoke(payload)
                else:
                    await self._dispatch_telemetry(payload)
            except PluginFailure as failure:
                self._fatal(failure)
                return
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
        await _all(lane.queue.join() for lane in self._sinks if lane.queue is not None and lane.enqueued > lane.done)
        self._raise_failure()

    async def _dispatch_invoke(self, invoke: Invoke) -> None:
        self.stats["invokes"] += 1
        await _all(self._hooks.call(lane.state, "on_invoke", invoke) for lane in self._processors
                   if lane.invokes and not lane.state.disabled)
        for lane in self._sinks:
            if lane.invokes and not lane.state.disabled:
                await self._offer(lane, ("on_invoke", invoke), 0)

    async def _dispatch_telemetry(self, events: Sequence[AnyEvent]) -> List[AnyEvent]:
        self.stats["batches"] += 1
        self.stats["events"] += len(events)
        survivors: List[AnyEvent] = list(events)
        for lane in self._processors:
            if lane.state.disabled or not lane.telemetry or not survivors:
                continue
            lane.received = True
            survivors = await self._process(lane.state, survivors)
        if survivors:
            for lane in self._sinks:
                if lane.state.disabled or not lane.telemetry:
                    continue
                plugin = lane.state.plugin
                # ``accepts`` narrows what a sink sees; a batch with nothing for it is not delivered at all.
                wanted = survivors if not plugin.accepts else [e for e in survivors if plugin.wants(e)]
                if wanted:
                    await self._offer(lane, ("on_telemetry", wanted), len(wanted))
        # The original batch: a processor may have dropped the report, the invocation still ended.
        if self._tracker.ends_invocation(events):
            for lane in self._lanes:
                if lane.flushes and not lane.state.disabled and lane.clock.at_invocation_end():
                    self._flush_after_queued(lane)
        return survivors

    # -------------------------------------------------------------------------------------- lanes

    async def _offer(self, lane: _Lane, item: Tuple[str, Any], events: int) -> None:
        """Put ``item`` in a sink's lane: wait up to ``lane_wait`` for room, else drop it for that lane."""
        assert lane.queue is not None
        if lane.queue.full():
            if not lane.congested:
                try:
                    await asyncio.wait_for(lane.queue.put(item), self._lane_wait)
                except asyncio.TimeoutError:
                    lane.congested = True
                else:
                    lane.enqueued += 1
                    return
            self._lane_drop(lane, events)
            return
        lane.queue.put_nowait(item)
        lane.enqueued += 1

    def _lane_drop(self, lane: _Lane, events: int) -> None:
        first = lane.dropped_batches == 0
        lane.dropped_batches += 1
        lane.dropped_events += events
        self.stats["lane_batches_dropped"] += 1
        self.stats["lane_events_dropped"] += events
        if first or lane.dropped_batches % 100 == 0:
            self._log.warning("sink lane full: batches for this sink are dropped", plugin=lane.state.name,
                              capacity=self._lane_capacity, dropped_batches=lane.dropped_batches,
                              dropped_events=lane.dropped_events)

    async def _lane_run(self, lane: _Lane) -> None:
        """A sink's own task: take its queue in order, and start its flushes once it took what they follow."""
        lane_queue = lane.queue
        assert lane_queue is not None
        while True:
            item = await lane_queue.get()
            if item is _STOP:
                lane_queue.task_done()
                return
            try:
                if lane.congested and lane_queue.qsize() <= lane_queue.maxsize // 2:
                    lane.congested = False
                    self._log.info("sink lane has room again", plugin=lane.state.name,
                                   dropped_batches=lane.dropped_batches)
                if not lane.state.disabled:
                    hook, payload = item
                    lane.received = True
                    try:
                        await self._hooks.call(lane.state, hook, payload)
                    except PluginFailure as failure:  # strict mode: stop the agent, keep the queue moving
                        self._fatal(failure)
            finally:
                lane.done += 1
                lane_queue.task_done()
            if lane.flush_at and lane.done >= lane.flush_at[0]:
                while lane.flush_at and lane.done >= lane.flush_at[0]:
                    lane.flush_at.popleft()
                self._request_flush(lane, None)
            if lane.stopping and lane_queue.empty():
                return

    def _flush_after_queued(self, lane: _Lane) -> None:
        """Flush ``lane`` once it has taken everything queued so far (at once when it has)."""
        if lane.queue is None or lane.done >= lane.enqueued:
            self._request_flush(lane, None)
        elif not lane.flush_at or lane.flush_at[-1] < lane.enqueued:
            lane.flush_at.append(lane.enqueued)

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for lane in self._lanes:
                if lane.flushes and not lane.state.disabled and lane.clock.on_timer(lane.received):
                    self._request_flush(lane, None)

    # ------------------------------------------------------------------------------------ flushes

    def _request_flush(self, lane: _Lane, deadline: Optional[Deadline]) -> int:
        """Ask for one flush of ``lane`` beside its queue; coalesced with any request not yet started.
        Return the request's number: it is answered once ``lane.completed`` reaches it."""
        lane.wanted += 1
        if deadline is not None and (lane.flush_deadline is None or deadline.at < lane.flush_deadline.at):
            lane.flush_deadline = deadline
        if lane.flusher is None or lane.flusher.done():
            lane.flusher = asyncio.ensure_future(self._flush_loop(lane))
        return lane.wanted

    async def _flush_loop(self, lane: _Lane) -> None:
        try:
            while lane.completed < lane.wanted and not lane.state.disabled:
                answers = lane.wanted
                deadline = lane.flush_deadline or Deadline.after(self._hook_timeout)
                lane.flush_deadline = None
                lane.received = False
                lane.clock.flushed()
                try:
                    await self._hooks.call_until(lane.state, "flush", deadline)
                except PluginFailure as failure:  # strict mode, outside the dispatcher: stop the same way
                    self._fatal(failure)
                    return
                lane.completed = answers
                lane.progress.set()
                lane.progress = asyncio.Event()
        finally:
            # Stopped early (disabled, cancelled at shutdown): nobody waits on a flush that will not come.
            if lane.completed < lane.wanted:
                lane.completed = lane.wanted
                lane.progress.set()
                lane.progress = asyncio.Event()

    async def _flush_now(self, lane: _Lane, deadline: Deadline) -> None:
        if lane.queue is not None and lane.enqueued > lane.done:
            await _until(lane.queue.join(), deadline)  # what is queued leaves with this flush
        answered = self._request_flush(lane, deadline)
        while lane.completed < answered and not deadline.expired():
            await _until(lane.progress.wait(), deadline)

    async def _close_lane(self, lane: _Lane, drain: Deadline, deadline: Deadline) -> None:
        state = lane.state
        task = lane.task
        if task is not None and not task.done():
            assert lane.queue is not None
            lane.stopping = True
            if lane.queue.empty():
                lane.queue.put_nowait(_STOP)
            if not await _until(asyncio.shield(task), drain):
                task.cancel()
                left = lane.queue.qsize()
                self.stats["lane_batches_dropped"] += left
                self._log.warning("sink did not take its queued telemetry before the shutdown deadline",
                                  plugin=state.name, batches=left)
        flusher = lane.flusher
        if flusher is not None and not flusher.done() and not await _until(asyncio.shield(flusher), drain):
            flusher.cancel()
            self._log.warning("plugin flush still running at shutdown: cancelled", plugin=state.name)
        if state.started and not state.disabled and overrides(state.plugin, "shutdown"):
            if deadline.expired():
                self._log.warning("no time left for the plugin's shutdown", plugin=state.name)
                return
            await self._hooks.call_until(state, "shutdown", deadline)

    # ---------------------------------------------------------------------------------- processors

    async def _process(self, state: PluginState, events: List[AnyEvent]) -> List[AnyEvent]:
        if state.plugin.accepts:
            # Events the processor does not accept pass by it unchanged, in their place in the batch.
            mine = [e for e in events if state.plugin.wants(e)]
            if not mine:
                return events
            if len(mine) < len(events):
                done = iter(await self._process_all(state, mine))
                merged: List[AnyEvent] = []
                for event in events:
                    if state.plugin.wants(event):
                        outcome = next(done)
                        if outcome is not None:
                            merged.append(outcome)
                    else:
                        merged.append(event)
                return merged
        return [e for e in await self._process_all(state, events) if e is not None]

    def _dropped(self, state: PluginState, event: AnyEvent) -> None:
        self.stats["dropped_by_processors"] += 1
        if self.on_drop is not None:
            self.on_drop(state.name, event)

    async def _process_all(self, state: PluginState, events: List[AnyEvent]) -> List[Optional[AnyEvent]]:
        """Run one processor over ``events``; a dropped event leaves ``None`` in its slot."""
        process = state.plugin.process
        if is_async(process):
            return [await self._one(state, event, process) for event in events]

        def run_batch() -> List[Tuple[Optional[AnyEvent], Optional[BaseException], AnyEvent]]:
            results: List[Tuple[Optional[AnyEvent], Optional[BaseException], AnyEvent]] = []
            for event in events:
                try:
                    results.append((process(event), None, event))  # type: ignore[arg-type]
                except DropEvent:
                    results.append((None, None, event))
                except Exception as error:  # isolation is the point
                    results.append((None, error, event))
            return results

        # One thread hop per batch, not per event: a slow sync processor never blocks the loop.
        try:
            outcomes = await within(state.thread.call(run_batch), self._hook_timeout)
        except asyncio.TimeoutError as timeout:
            # The whole batch waited too long: one failure, and every event goes as ``on_error`` says.
            self._hooks.failed(state, "process", timeout)
            outcomes = [(None, timeout, event) for event in events]
        kept: List[Optional[AnyEvent]] = []
        for result, error, original in outcomes:
            if error is not None:
                if not isinstance(error, asyncio.TimeoutError):
                    self._hooks.failed(state, "process", error)
                if state.plugin.on_error != "drop":
                    kept.append(original)
                else:
                    self._dropped(state, original)
                    kept.append(None)
            elif result is None:
                self._dropped(state, original)
                kept.append(None)
            else:
                self._hooks.succeeded(state, "process")
                kept.append(result)
        return kept

    async def _one(self, state: PluginState, event: AnyEvent, process: Callable[..., Any]) -> Optional[AnyEvent]:
        try:
            result = await within(process(event), self._hook_timeout)
        except DropEvent:
            self._dropped(state, event)
            return None
        except Exception as error:
            self._hooks.failed(state, "process", error)
            if state.plugin.on_error == "drop":
                self._dropped(state, event)
                return None
            return event
        self._hooks.succeeded(state, "process")
        if result is None:
            # Returning None drops the event, as it does for a synchronous processor.
            self._dropped(state, event)
        return result  # type: ignore[no-any-return]

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
