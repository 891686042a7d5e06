"""One plugin's delivery: a sink's own bounded queue and task, and every plugin's flushes.

The lane step of every sink's path (listener handler -> parse (:mod:`fgext._parse`) -> pipeline
(:mod:`fgext._pipeline`, which runs the processors through :mod:`fgext._chain`) -> **lane** -> the sink's
hooks, for OTLP ``OtlpPlugin.on_telemetry`` -> assembler -> pending -> flush: take -> encode -> shipper ->
transport).

The pipeline's dispatcher :meth:`Lane.offer`\\ s each batch a sink wants; :meth:`Lane.run`, the sink's own
task, takes its queue in order and calls the sink's hook through :class:`fgext._hooks.Hooks`, so a slow or
failing sink delays nobody else. A lane is bounded in batches and in bytes (``FGEXT_LANE_MAX_BYTES``: the
raw size of what it holds, as the platform sent it, or an estimate); a batch bigger than the byte bound
still gets into an empty lane, so none is refused for its size alone. A full lane holds the dispatcher
for at most ``lane_wait`` seconds; after that the batches for that lane alone are dropped and counted
until it has drained to half its capacity.

Flushes run beside the queue, never in its way: one at a time per plugin, and requests arriving meanwhile
are answered by one more flush after it, not one each (:meth:`Lane.request_flush`). A flush that follows
a batch (the end of an invocation) starts once the lane has taken that batch
(:meth:`Lane.flush_after_queued`). *Whether* to flush is the pipeline's decision; a lane only carries it out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, Iterable, Optional, Sequence, Tuple

from fgext._config import DEFAULT_LANE_MAX_BYTES
from fgext._deadline import Deadline
from fgext._flush import FlushClock, FlushPolicy
from fgext._hooks import Hooks, PluginFailure, PluginState, is_async, overrides, within
from fgext._plugin import Plugin

__all__ = ["STOP", "Lane", "estimate_bytes", "gather_all", "until"]

#: put in a queue to stop the task that takes it
STOP = object()
# What an event is taken to weigh when its batch's raw size is not known (a platform event's JSON, or
# a log line's around its text).
_EVENT_ESTIMATE = 384


def estimate_bytes(events: Sequence[Any]) -> int:
    """About the raw JSON size of ``events``, for a batch whose body size is not known."""
    total = 0
    for event in events:
        request = getattr(event, "request", None)
        if request is not None and hasattr(request, "ByteSize"):
            total += request.ByteSize()  # what the function exported to the agent's receiver
        else:
            total += _EVENT_ESTIMATE + len(getattr(event, "logs", ""))
    return total


async def gather_all(calls: Iterable[Awaitable[Any]]) -> None:
    """``gather`` without its task per call when there is just one (the usual case)."""
    pending = list(calls)
    if len(pending) == 1:
        await pending[0]
    elif pending:
        await asyncio.gather(*pending)


async def until(call: Awaitable[Any], deadline: Deadline) -> bool:
    """Await ``call`` until ``deadline``; whether it finished (it is cancelled if not)."""
    try:
        await within(call, deadline.timeout())
    except asyncio.TimeoutError:
        return False
    return True


class Lane:
    """One plugin's delivery: for a sink, its own bounded queue and task; for every plugin, its flushes."""

    def __init__(self, plugin: Plugin, policy: FlushPolicy, capacity: int, *, hooks: Hooks, logger: Any,
                 stats: Dict[str, int], hook_timeout: float, wait: float,
                 fatal: Callable[[PluginFailure], None], max_bytes: int = DEFAULT_LANE_MAX_BYTES) -> None:
        self.state = PluginState(plugin)
        is_sink = plugin.role != "processor"
        self.queue: Optional[asyncio.Queue[Any]] = asyncio.Queue(maxsize=capacity) if is_sink else None
        self.task: Optional[asyncio.Task[None]] = None
        self.invokes = overrides(plugin, "on_invoke")
        self.telemetry = overrides(plugin, "on_telemetry" if is_sink else "process")
        self.flushes = overrides(plugin, "flush")
        # The hooks a sink declared ``inline`` (coroutines that only consume): called in the offering task
        # when the lane is idle, without waking the lane's own task.
        self.inline = frozenset(hook for hook in ("on_invoke", "on_telemetry") if is_sink and plugin.inline
                                and overrides(plugin, hook) and is_async(getattr(plugin, hook)))
        self.rest: Optional[asyncio.Task[None]] = None  # an inline hook that suspended, going on in its own task
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
        self.queued_bytes = 0  # the raw size of what the queue holds (sizes ride with the items)
        self._max_bytes = max_bytes
        self._took: Optional[asyncio.Event] = None  # set when the task takes an item: room may have come
        self._capacity = capacity
        self._hooks = hooks
        self._log = logger
        self._stats = stats
        self._hook_timeout = hook_timeout
        self._wait = wait
        self._fatal = fatal

    @property
    def is_sink(self) -> bool:
        return self.queue is not None

    def start(self) -> None:
        if self.queue is not None:
            self.task = asyncio.ensure_future(self.run())

    # ------------------------------------------------------------------------------------ queue

    def has_room(self, size: int) -> bool:
        """Whether an item of ``size`` raw bytes would be put at once."""
        assert self.queue is not None
        return not self.queue.full() and (self.queued_bytes == 0 or self.queued_bytes + size <= self._max_bytes)

    async def _room(self, size: int) -> None:
        while not self.has_room(size):
            self._took = self._took or asyncio.Event()
            await self._took.wait()

    def offer_now(self, item: Tuple[str, Any], size: int) -> bool:
        """Put ``item`` in a sink's lane if it has room now (no coroutine for the usual case); else False,
        and the caller awaits :meth:`offer`. An ``inline`` hook of an idle lane is called at once instead."""
        if item[0] in self.inline and self.done == self.enqueued and self.task is not None \
                and not self.stopping and not self.state.disabled:
            self._call_inline(item)
            return True
        if self.has_room(size):
            self._put(item, size)
            return True
        return False

    async def offer(self, item: Tuple[str, Any], events: int, size: int = 0) -> None:
        """Put ``item`` (``events`` events, ``size`` raw bytes) in a sink's lane: wait up to ``lane_wait``
        for room, else drop it for this lane."""
        assert self.queue is not None
        if not self.has_room(size):
            if not self.congested:
                try:
                    await asyncio.wait_for(self._room(size), self._wait)
                except asyncio.TimeoutError:
                    self.congested = True
                else:
                    self._put(item, size)
                    return
            self._drop(events)
            return
        self._put(item, size)

    def _put(self, item: Tuple[str, Any], size: int) -> None:
        assert self.queue is not None
        self.queue.put_nowait((item, size))
        self.queued_bytes += size
        self.enqueued += 1

    def _drop(self, events: int) -> None:
        first = self.dropped_batches == 0
        self.dropped_batches += 1
        self.dropped_events += events
        self._stats["lane_batches_dropped"] += 1
        self._stats["lane_events_dropped"] += events
        if first or self.dropped_batches % 100 == 0:
            self._log.warning("sink lane full: batches for this sink are dropped", plugin=self.state.name,
                              capacity=self._capacity, max_bytes=self._max_bytes,
                              dropped_batches=self.dropped_batches, dropped_events=self.dropped_events)

    def _call_inline(self, item: Tuple[str, Any]) -> None:
        # Counted as queued and taken, as the lane's task would: flush targets and ``taken`` see it.
        hook, payload = item
        self.enqueued += 1
        self.received = True
        try:
            rest = self._hooks.call_inline(self.state, hook, payload)
        except PluginFailure as failure:
            self._fatal(failure)
            rest = None
        if rest is None:
            self._took_one()
        else:  # it suspended: the lane is busy (what comes next is queued behind it) until it ends
            self.rest = asyncio.ensure_future(self._finish(rest))

    async def _finish(self, rest: Awaitable[bool]) -> None:
        try:
            await rest
        except PluginFailure as failure:
            self._fatal(failure)
        finally:
            self.rest = None
            self.done += 1
        self._flush_if_due()

    def _took_one(self) -> None:
        self.done += 1
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        if self.flush_at and self.done >= self.flush_at[0]:
            while self.flush_at and self.done >= self.flush_at[0]:
                self.flush_at.popleft()
            self.request_flush(None)

    async def run(self) -> None:
        """A sink's own task: take its queue in order, and start its flushes once it took what they follow."""
        lane_queue = self.queue
        assert lane_queue is not None
        while True:
            queued = await lane_queue.get()
            if queued is STOP:
                lane_queue.task_done()
                return
            item, size = queued
            self.queued_bytes -= size
            if self._took is not None:
                self._took.set()
                self._took = None
            try:
                if self.congested and lane_queue.qsize() <= lane_queue.maxsize // 2 \
                        and self.queued_bytes <= self._max_bytes // 2:
                    self.congested = False
                    self._log.info("sink lane has room again", plugin=self.state.name,
                                   dropped_batches=self.dropped_batches)
                if self.rest is not None:  # an inline hook that suspended comes first
                    await asyncio.wait((self.rest,))
                if not self.state.disabled:
                    hook, payload = item
                    self.received = True
                    try:
                        await self._hooks.call(self.state, hook, payload)
                    except PluginFailure as failure:  # strict mode: stop the agent, keep the queue moving
                        self._fatal(failure)
            finally:
                self.done += 1
                lane_queue.task_done()
            self._flush_if_due()
            if self.stopping and lane_queue.empty():
                return

    async def taken(self) -> None:
        """Wait until the sink has taken everything queued so far."""
        if self.queue is not None and self.enqueued > self.done:
            if self.rest is not None:
                await asyncio.wait((self.rest,))
            await self.queue.join()

    # ---------------------------------------------------------------------------------- flushes

    def flush_after_queued(self) -> None:
        """Flush once this lane has taken everything queued so far (at once when it has)."""
        if self.queue is None or self.done >= self.enqueued:
            self.request_flush(None)
        elif not self.flush_at or self.flush_at[-1] < self.enqueued:
            self.flush_at.append(self.enqueued)

    def request_flush(self, deadline: Optional[Deadline]) -> int:
        """Ask for one flush beside the queue; coalesced with any request not yet started.
        Return the request's number: it is answered once ``completed`` reaches it."""
        self.wanted += 1
        if deadline is not None and (self.flush_deadline is None or deadline.at < self.flush_deadline.at):
            self.flush_deadline = deadline
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.ensure_future(self._flush_loop())
        return self.wanted

    async def _flush_loop(self) -> None:
        try:
            while self.completed < self.wanted and not self.state.disabled:
                answers = self.wanted
                deadline = self.flush_deadline or Deadline.after(self._hook_timeout)
                self.flush_deadline = None
                self.received = False
                self.clock.flushed()
                try:
                    await self._hooks.call_until(self.state, "flush", deadline)
                except PluginFailure as failure:  # strict mode, outside the dispatcher: stop the same way
                    self._fatal(failure)
                    return
                self.completed = answers
                self.progress.set()
                self.progress = asyncio.Event()
        finally:
            # Stopped early (disabled, cancelled at shutdown): nobody waits on a flush that will not come.
            if self.completed < self.wanted:
                self.completed = self.wanted
                self.progress.set()
                self.progress = asyncio.Event()

    async def flush_now(self, deadline: Deadline) -> None:
        """Flush once what is queued has been taken, and wait for that flush, all by ``deadline``."""
        if self.queue is not None and self.enqueued > self.done:
            await until(self.taken(), deadline)  # what is queued leaves with this flush
        answered = self.request_flush(deadline)
        while self.completed < answered and not deadline.expired():
            await until(self.progress.wait(), deadline)

    # --------------------------------------------------------------------------------- shutdown

    async def close(self, drain: Deadline, deadline: Deadline) -> None:
        """Let the queue and a running flush finish by ``drain``, then the plugin's ``shutdown`` by ``deadline``."""
        state = self.state
        task = self.task
        if task is not None and not task.done():
            assert self.queue is not None
            self.stopping = True
            if self.queue.empty():
                self.queue.put_nowait(STOP)
            if not await until(asyncio.shield(task), drain):
                task.cancel()
                left = self.queue.qsize()
                self._stats["lane_batches_dropped"] += left
                self._log.warning("sink did not take its queued telemetry before the shutdown deadline",
                                  plugin=state.name, batches=left)
        rest = self.rest
        if rest is not None and not rest.done() and not await until(asyncio.shield(rest), drain):
            rest.cancel()
            self._stats["lane_batches_dropped"] += 1
            self._log.warning("sink did not take its queued telemetry before the shutdown deadline",
                              plugin=state.name, batches=1)
        flusher = self.flusher
        if flusher is not None and not flusher.done() and not await until(asyncio.shield(flusher), drain):
            flusher.cancel()
            self._log.warning("plugin flush still running at shutdown: cancelled", plugin=state.name)
        if state.started and not state.disabled and overrides(state.plugin, "shutdown"):
            if deadline.expired():
                self._log.warning("no time left for the plugin's shutdown", plugin=state.name)
                return
            await self._hooks.call_until(state, "shutdown", deadline)
