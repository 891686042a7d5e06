"""The shipper: serialized requests out in order, written ahead to disk, backed off, replayed.

It is the last step of the OTLP sink (consume -> take -> encode -> *ship*) and never calls up: the
plugin hands it bytes encoded by ``_requests`` with :meth:`Shipper.submit`, asks for them to leave with
:meth:`Shipper.flush`, puts everything on disk with :meth:`Shipper.spill` and stops it with
:meth:`Shipper.close`. The bytes go next to the collector through a transport (``_transports``), and to
disk through the spool (``_spool``).

One ordered queue holds every request not yet acknowledged; each is in memory, on disk, or both:

- **write-ahead:** a request the collector has not acknowledged ``spool_after_s`` after it was
  submitted (250 ms by default) is written to the spool, so a kill at any later moment - even with a
  collector that accepted the connection and never answers - loses nothing: the next agent on the
  same spool directory replays it. Its file is removed once the collector acknowledges it. A kill
  between the acknowledgement and that removal means the next agent sends it again: a duplicate, the
  one OTLP's at-least-once delivery allows;
- **bounded in bytes:** past ``max_queue_bytes`` in memory, the oldest requests are written to the
  spool and their bytes released; the spool itself is bounded by its own ``max_bytes``;
- **coalescing:** requests of one signal that queued behind the one in flight leave together as one
  request (serialized OTLP requests concatenate into a valid one), up to 4 MiB;
- **backoff:** after a retryable failure (the :mod:`fgext._retry` policy decides which) everything
  goes to the spool and the queue is retried, oldest first, after the policy's delay (never before a
  ``Retry-After``). A final rejection drops that request, counted.

Sending is at-least-once: a request leaves the queue only when the collector accepted it (or refused
it for good, which is counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple, Union

from fgext._deadline import Deadline
from fgext._retry import Backoff
from fgext.otlp._spool import Spool, SpoolEntry
from fgext.otlp._transports import KeptTimer, Outcome, Transport, wait_awake

__all__ = ["DropCounter", "Shipper"]

DropCounter = Callable[[str, str, int], None]  # signal, reason, items
_CLAIM_EVERY_S = 10.0  # how often an idle shipper looks for requests of agents that died meanwhile
# Queued requests of one signal sent together at most (well under a collector's usual 4-20 MiB body limit).
_COALESCE_REQUESTS = 64


class _Request:
    """One serialized request until the collector acknowledges it."""

    __slots__ = ("born", "data", "entry", "items", "signal", "size")

    def __init__(self, signal: str, items: int, size: int, born: float, data: Optional[bytes],
                 entry: Optional[SpoolEntry]) -> None:
        self.signal = signal
        self.items = items
        self.size = size
        self.born = born
        self.data = data  # in memory (counted in the queue's bytes), or None once released to the spool
        self.entry = entry  # its spool file, once written ahead


class Shipper:
    """Sends queued requests in order; writes unacknowledged ones ahead to the spool; replays it."""

    def __init__(
        self,
        transports: Mapping[str, Transport],
        spool: Spool,
        on_drop: DropCounter,
        logger: Any,
        *,
        max_queue_bytes: int = 8 * 1024 * 1024,
        max_request_bytes: int = 4 * 1024 * 1024,
        spool_after_s: float = 0.25,
        backoff: Optional[Backoff] = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transports = transports
        self.spool = spool
        self._on_drop = on_drop
        self._log = logger
        self._backoff = backoff if backoff is not None else Backoff(0.5, 30.0)
        self._max_queue_bytes = max_queue_bytes
        # Coalesced requests stay within the encoder's request bound (FGEXT_OTLP_MAX_REQUEST_BYTES): the
        # collector's body limit is the one size decision, whether a request was encoded or concatenated.
        self._max_request_bytes = max_request_bytes
        self._spool_after = spool_after_s
        self._monotonic = monotonic
        self._queue: Deque[_Request] = deque()
        self._queue_bytes = 0  # bytes of queued requests held in memory
        self._lock = asyncio.Lock()
        self._wakeup: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._write_ahead: Optional[asyncio.TimerHandle] = None
        self._down = False
        self._next_attempt = 0.0  # monotonic time before which the background loop does not retry
        self._not_before = 0.0  # Retry-After: nothing is sent before this, not even on flush
        self._last_claim = monotonic()
        self._drained: Optional[asyncio.Event] = None
        self._flushes: Set[asyncio.Task[bool]] = set()  # flushes' sends, which outlive a flush's timeout
        self._flush_timer = KeptTimer()  # the awake-time bound of flushes, which come one after another
        #: export requests sent, by (signal, outcome): ``success``, ``retry`` (failed, kept to retry),
        #: ``rejected`` (refused for good); coalesced requests count as the one request sent
        self.requests: Dict[Tuple[str, str], int] = {}
        self.sent_bytes: Dict[str, int] = {}  # bytes of acknowledged requests, by signal
        self.sent_items: Dict[str, int] = {}  # items in acknowledged requests, by signal

    @property
    def sent_requests(self) -> int:
        return sum(n for (_, outcome), n in self.requests.items() if outcome == "success")

    @property
    def failed_attempts(self) -> int:
        return sum(n for (_, outcome), n in self.requests.items() if outcome != "success")

    def _count(self, signal: str, outcome: str) -> None:
        key = (signal, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1

    # ------------------------------------------------------------------------------ the interface

    def start(self) -> None:
        """Open the spool (claiming what agents that are gone left) and start sending."""
        self.spool.open()
        for entry in self.spool.entries():
            self._queue.append(_Request(entry.signal, entry.items, entry.size, self._monotonic(), None, entry))
        self._wakeup = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())
        if self._queue:
            self._wakeup.set()  # an earlier run left requests: try them now

    def submit(self, signal: str, data: bytes, items: int, *, send: bool = True) -> None:
        """Queue one serialized request (requests of a switched-off signal are ignored).

        ``send=False``: the caller flushes right after, and that flush sends it; waking the background
        sender as well would only make it contend for the queue (a wake-up, a task and a timer per
        request, for nothing to do).
        """
        if signal not in self._transports:
            return
        request = _Request(signal, items, len(data), self._monotonic(), data, None)
        self._queue.append(request)
        self._queue_bytes += request.size
        if self._down or self._spool_after <= 0:
            self._persist(request, release=self._down)
        self._bound_memory()
        self._arm_write_ahead()
        if send:
            self.wake()

    async def flush(self, timeout: Union[float, Deadline, None] = None) -> bool:
        """Try to send everything within ``timeout`` seconds (or the deadline); True when all was
        acknowledged. What is left is on disk when this returns.

        Running out of time does not cancel a send in flight: it goes on in the background, so an
        answer that comes later (after a freeze, say) still removes its request instead of the request
        being sent again. Time spent frozen does not count toward ``timeout``.
        """
        if isinstance(timeout, Deadline):
            timeout = timeout.timeout()
        woke = asyncio.get_running_loop().create_future()
        pump = asyncio.ensure_future(self._flush_pump(woke))
        self._flushes.add(pump)
        pump.add_done_callback(self._flush_done)
        try:
            if timeout is None:
                await asyncio.wait({pump})
                finished = True
            else:
                finished = await wait_awake(pump, timeout, kept=self._flush_timer, woke=woke)
        except asyncio.CancelledError:
            self.spill()  # the caller's own deadline hit: keep the data on disk, then let go
            raise
        done = finished and not pump.cancelled() and pump.exception() is None and bool(pump.result())
        if not done:
            self.spill()
        return done

    async def _flush_pump(self, woke: asyncio.Future[None]) -> bool:
        """A flush's send; its end wakes the waiting flush at once, not a loop turn later through the
        task's done callbacks."""
        try:
            return await self._pump(force=True)
        finally:
            if not woke.done():
                woke.set_result(None)

    def _flush_done(self, pump: asyncio.Task[bool]) -> None:
        self._flushes.discard(pump)
        if not pump.cancelled() and pump.exception() is not None:
            self._log.error("otlp flush failed", error=repr(pump.exception()))

    def spill(self) -> None:
        """Write everything not yet on disk to the spool (before a freeze, a deadline or exit)."""
        for request in list(self._queue):
            self._persist(request, release=True)

    async def close(self) -> None:
        """Spill, then stop the sender."""
        self.spill()
        if self._write_ahead is not None:
            self._write_ahead.cancel()
            self._write_ahead = None
        tasks = list(self._flushes) + ([self._task] if self._task is not None else [])
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._task = None

    # --------------------------------------------------------------------------------- state

    @property
    def down(self) -> bool:
        return self._down

    @property
    def pending(self) -> int:
        """Requests not yet acknowledged (in memory, on disk or both)."""
        return len(self._queue)

    @property
    def backlogged(self) -> bool:
        """The in-memory queue holds more than half its bound while the collector is up."""
        return self._queue_bytes * 2 > self._max_queue_bytes and not self._down

    async def drained(self, timeout: float) -> bool:
        """Wait until the queue is no longer backlogged, at most ``timeout`` seconds: how a slow
        collector slows the listener instead of filling the spool while it is up."""
        deadline = self._monotonic() + timeout
        while self.backlogged:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return False
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            waiter = asyncio.ensure_future(self._drained.wait())
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                waiter.cancel()
        return True

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # ------------------------------------------------------------------------------ internals

    def _persist(self, request: _Request, *, release: bool) -> None:
        """Write one request to the spool if it is not there yet; optionally release its memory."""
        if request.entry is None and request.data is not None:
            entry = self.spool.add(request.signal, request.data, request.items)
            if entry is None:
                self._forget(request)  # larger than the whole spool: dropped there, counted
                return
            request.entry = entry
        if release and request.data is not None and request.entry is not None:
            request.data = None
            self._queue_bytes -= request.size

    def _bound_memory(self) -> None:
        if self._queue_bytes <= self._max_queue_bytes:  # the usual case: no copy of the queue to walk
            return
        for request in list(self._queue):
            if self._queue_bytes <= self._max_queue_bytes:
                break
            self._persist(request, release=True)

    def _arm_write_ahead(self) -> None:
        if self._write_ahead is not None or self._spool_after <= 0:
            return
        first = next((r for r in self._queue if r.entry is None and r.data is not None), None)
        if first is None:
            return
        delay = max(0.0, first.born + self._spool_after - self._monotonic())
        self._write_ahead = asyncio.get_running_loop().call_later(delay, self._write_ahead_due)

    def _write_ahead_due(self) -> None:
        """Every request unacknowledged for ``spool_after_s`` goes to disk (and stays in memory)."""
        self._write_ahead = None
        now = self._monotonic()
        for request in list(self._queue):
            if request.born + self._spool_after > now:
                break
            self._persist(request, release=False)
        self._arm_write_ahead()

    def _forget(self, request: _Request) -> None:
        """The request is done with (acknowledged, refused for good or dropped): out of queue and spool."""
        with contextlib.suppress(ValueError):
            if self._queue and self._queue[0] is request:  # the usual case: acknowledged in order
                self._queue.popleft()
            else:
                self._queue.remove(request)
            if request.data is not None:
                self._queue_bytes -= request.size
        request.data = None
        if request.entry is not None:
            self.spool.remove(request.entry)
        if self._drained is not None:
            self._drained.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            timeout: Optional[float] = None
            if self._down:
                timeout = max(0.0, self._next_attempt - self._monotonic())
            elif not self._queue:
                timeout = _CLAIM_EVERY_S
            # asyncio.wait, not wait_for: a cancel (close) that meets wait_for's own timeout can be lost
            waiter = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({waiter}, timeout=timeout)
            finally:
                waiter.cancel()
            self._wakeup.clear()
            try:
                if not self._queue and self._monotonic() - self._last_claim >= _CLAIM_EVERY_S:
                    self._claim()
                await self._pump(force=False)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the sender must outlive any single bad request
                self._log.error("otlp sender failed", error=repr(error))
                await asyncio.sleep(self._backoff.first)

    def _claim(self) -> None:
        """Adopt requests of agents on this spool directory that died since we started."""
        self._last_claim = self._monotonic()
        for entry in self.spool.claim_orphans():
            self._queue.append(_Request(entry.signal, entry.items, entry.size, self._monotonic(), None, entry))

    async def _pump(self, *, force: bool) -> bool:
        """Send the queue in order; return True when nothing is left pending.

        ``force`` (a flush) tries even while backing off, but never before a ``Retry-After``.
        """
        async with self._lock:
            try:
                return await self._pump_locked(force)
            finally:
                # Whatever happened, the queue is shorter (sent or spilled): backpressure may let go.
                if self._drained is not None:
                    self._drained.set()

    async def _pump_locked(self, force: bool) -> bool:
        sent_before = self.sent_requests if self._down else 0  # only asked when the collector was down
        now = self._monotonic()
        if now < self._not_before or (self._down and not force and now < self._next_attempt):
            self.spill()
            return False
        while self._queue:
            request = self._queue[0]
            transport = self._transports.get(request.signal)
            if transport is None:
                self._log.warning("otlp spooled data for a switched-off signal dropped",
                                  signal=request.signal, items=request.items)
                self._on_drop(request.signal, "disabled", request.items)
                self._forget(request)
                continue
            data = self._bytes(request)
            if data is None:  # dropped for the spool's bound, or unreadable: counted there
                self._forget(request)
                continue
            batch, parts = self._coalesce(request, data)
            body = b"".join(parts)
            outcome = await transport.send(body)
            if outcome.ok:
                signal = request.signal
                self.sent_bytes[signal] = self.sent_bytes.get(signal, 0) + len(body)
                items = batch[0].items if len(batch) == 1 else sum(r.items for r in batch)
                self.sent_items[signal] = self.sent_items.get(signal, 0) + items
            if not self._handle(outcome, batch):
                return False
        if self._down:
            if self.sent_requests > sent_before:
                self._log.info("otlp collector reachable again", failed_attempts=self._backoff.failures)
            self._down = False
        self._backoff.reset()
        return True

    def _bytes(self, request: _Request) -> Optional[bytes]:
        if request.data is not None:
            return request.data
        return self.spool.read(request.entry) if request.entry is not None else None

    def _coalesce(self, first: _Request, data: bytes) -> Tuple[List[_Request], List[bytes]]:
        """``first`` and the queued requests of its signal behind it, up to the request bound: sent as one.

        Serialized OTLP export requests concatenate into one valid request (protobuf appends repeated
        fields), so requests that queued while one was in flight - invocations that ended meanwhile -
        leave together, with no re-encoding and nothing asked of the plugin.
        """
        batch, parts, size = [first], [data], len(data)
        if len(self._queue) == 1:  # the usual flush: nothing queued behind it
            return batch, parts
        for request in list(self._queue)[1:]:
            if len(batch) >= _COALESCE_REQUESTS or size >= self._max_request_bytes:
                break
            if request.signal != first.signal or size + request.size > self._max_request_bytes:
                continue
            more = self._bytes(request)
            if more is None:
                continue  # dealt with when it reaches the head of the queue
            batch.append(request)
            parts.append(more)
            size += len(more)
        return batch, parts

    def _handle(self, outcome: Outcome, batch: List[_Request]) -> bool:
        """Account for one send; return False when the collector is down (stop sending for now)."""
        signal = batch[0].signal
        if outcome.ok:
            self._count(signal, "success")
            for request in batch:
                self._forget(request)
            if outcome.rejected_items:
                self._log.warning("otlp collector rejected part of a request", signal=signal,
                                  rejected=outcome.rejected_items, message=outcome.detail)
                self._on_drop(signal, "rejected", outcome.rejected_items)
            return True
        self._count(signal, "retry" if outcome.retryable else "rejected")
        items = sum(request.items for request in batch)
        if not outcome.retryable:
            self._log.warning("otlp collector rejected a request for good; dropped", signal=signal,
                              items=items, detail=outcome.detail)
            self._on_drop(signal, "rejected", items)
            for request in batch:
                self._forget(request)
            return True
        now = self._monotonic()
        first_failure = not self._down
        self._down = True
        delay = self._backoff.next_delay(outcome.retry_after)
        if outcome.retry_after is not None:
            self._not_before = now + outcome.retry_after
        self._next_attempt = now + delay
        if first_failure:
            self._log.warning("otlp export failed; spooling and retrying with backoff", signal=signal,
                              detail=outcome.detail, retry_in_s=round(delay, 3))
        self.spill()
        # The retries are the background sender's, at the backoff's time: a flush's send (submitted with
        # send=False) may be the first it hears of this queue.
        self.wake()
        return False

    def requests_on_disk(self) -> List[SpoolEntry]:
        """The spool entries of queued requests (for diagnostics and tests)."""
        return [r.entry for r in self._queue if r.entry is not None]
