"""Telemetry as the platform sends it: event bodies in the spec's spellings, batched, delivered in order.

Events wait in one FIFO queue from the moment they happen (also before anyone subscribed: the platform
buffers them, and an extension subscribes a moment after it registers). One sender task cuts the queue
into batches - a batch leaves when it holds ``batch_max_items`` events or its oldest event is
``batch_timeout_ms`` old - and POSTs each batch to the subscriber. A failed or slow POST is retried with
exponential backoff; a batch that still fails is dropped and counted, per event and per invocation.
While the sandbox is frozen nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Deque, Dict, List, Optional

import aiohttp

from fgext.emulator._platform import Subscription

__all__ = ["EventFactory", "TelemetrySender", "TelemetryStats", "iso_time"]

# Past this many undelivered events the oldest are dropped (and counted): a subscriber that never
# answers must not make the emulator grow without bound.
MAX_QUEUED = 100_000


def iso_time(epoch: float) -> str:
    """``2023-02-01T00:03:50.000Z``: the documented timestamp shape (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_NAMES = {
    ("init", "start"): "platform.initStart",
    ("init", "done"): "platform.initRuntimeDone",
    ("init", "report"): "platform.initReport",
    ("invoke", "start"): "platform.start",
    ("invoke", "done"): "platform.runtimeDone",
    ("invoke", "report"): "platform.report",
    ("restore", "start"): "platform.restoreStart",
    ("restore", "done"): "platform.restoreRuntimeDone",
    ("restore", "report"): "platform.restoreReport",
}


@dataclass(frozen=True)
class EventFactory:
    """Builds event bodies; with ``spec_typos`` names and fields are spelled as the spec's examples are."""

    spec_typos: bool = True

    @property
    def id_field(self) -> str:
        """The request-ID field of done and report events (start events always use ``traceId``)."""
        return "tracelId" if self.spec_typos else "traceId"

    def name(self, phase: str, kind: str) -> str:
        name = _NAMES[(phase, kind)]
        if self.spec_typos and name == "platform.runtimeDone":
            return "platform.RuntimeDone"
        return name

    def start(self, phase: str, request_id: str, start: float) -> Dict[str, Any]:
        return {"name": self.name(phase, "start"), "startTime": iso_time(start), "traceId": request_id}

    def done(self, phase: str, request_id: str, at: float, status: str) -> Dict[str, Any]:
        """``at`` is when the phase finished: a done event's ``startTime`` is the time it happened."""
        return {"name": self.name(phase, "done"), "startTime": iso_time(at), self.id_field: request_id,
                "status": status}

    def report(self, phase: str, request_id: str, start: float, end: float, status: str,
               metrics: Dict[str, Any]) -> Dict[str, Any]:
        return {"name": self.name(phase, "report"), "startTime": iso_time(start), self.id_field: request_id,
                "endTime": iso_time(end), "status": status,
                ("reportMetrics" if self.spec_typos else "metrics"): metrics}

    @staticmethod
    def log(category: str, text: str, at: float) -> Dict[str, Any]:
        return {"name": category, "startTime": iso_time(at), "logs": text}


@dataclass
class _Queued:
    category: str
    body: Dict[str, Any]
    request_id: Optional[str]
    queued: float


@dataclass
class TelemetryStats:
    """What happened to the telemetry of a run, or of one invocation."""

    batches_delivered: int = 0
    batches_retried: int = 0  # batches that needed more than one attempt
    batches_dropped: int = 0
    events_delivered: int = 0
    events_dropped: int = 0
    attempts_failed: int = 0
    last_error: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class _PerInvocation(Dict[str, TelemetryStats]):
    """Telemetry stats by request ID, created on first use."""

    def of(self, request_id: str) -> TelemetryStats:
        return self.setdefault(request_id, TelemetryStats())


class TelemetrySender:
    """The queue and the one task that delivers it; :meth:`start` and :meth:`stop` bracket its life."""

    def __init__(self, batch_max_items: int, batch_timeout_ms: int, timeout_s: float, retries: int,
                 backoff_s: float) -> None:
        self.batch_max_items = batch_max_items
        self.batch_timeout_s = batch_timeout_ms / 1000
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.subscription: Optional[Subscription] = None
        self.stats = TelemetryStats()
        self.events_filtered = 0
        self.per_invocation = _PerInvocation()
        self._queue: Deque[_Queued] = deque()
        # Created in start(): on Python 3.9 an asyncio primitive binds to the loop current at creation.
        self._wake: asyncio.Event
        self._idle: asyncio.Event
        self._paused = False
        self._flushing = False
        self._task: Optional[asyncio.Task[None]] = None
        self._current: List[_Queued] = []  # the batch being delivered, out of the queue already
        self._session: Optional[aiohttp.ClientSession] = None

    # ---------------------------------------------------------------------------------- producers

    def emit(self, category: str, body: Dict[str, Any], request_id: Optional[str] = None) -> None:
        """Queue one event of ``category`` (platform, function or extension), tagged with its request."""
        if len(self._queue) >= MAX_QUEUED:
            dropped = self._queue.popleft()
            self._count([dropped], delivered=False, retried=False, error="queue full")
        self._queue.append(_Queued(category, body, request_id, time.monotonic()))
        self._idle.clear()
        self._wake.set()

    def subscribe(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ---------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._task = asyncio.ensure_future(self._run())

    def pause(self) -> None:
        """Hold deliveries (the sandbox is frozen); events keep queueing."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    async def flush(self, timeout: float) -> bool:
        """Send everything queued now, ignoring the batch timer; True if the queue emptied in time."""
        if self.subscription is None:
            return not self._queue
        self._flushing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._flushing = False

    async def stop(self, timeout: float) -> None:
        """Deliver what is queued (within ``timeout``), then end the sender and its HTTP session."""
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        reason = "the emulator stopped before they could be delivered"
        if self._current:
            self._count(self._current, delivered=False, retried=False, error=reason)
            self._current = []
        if self.subscription is not None and self._queue:
            self._count(list(self._queue), delivered=False, retried=False, error=reason)
            self._queue.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -------------------------------------------------------------------------------------- sender

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            types = self.subscription.types if self.subscription else ()
            wanted = [item for item in batch if item.category in types]
            self.events_filtered += len(batch) - len(wanted)
            if wanted:
                self._current = wanted
                await self._deliver(wanted)
                self._current = []
            if not self._queue:
                self._idle.set()

    def _ready(self) -> bool:
        return bool(self._queue) and self.subscription is not None and not self._paused

    async def _next_batch(self) -> List[_Queued]:
        while True:
            if self._ready():
                oldest = self._queue[0].queued
                due = oldest + self.batch_timeout_s - time.monotonic()
                if len(self._queue) >= self.batch_max_items or due <= 0 or self._flushing:
                    count = min(self.batch_max_items, len(self._queue))
                    return [self._queue.popleft() for _ in range(count)]
                wait: Optional[float] = due
            else:
                wait = None
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _deliver(self, batch: List[_Queued]) -> None:
        assert self.subscription is not None and self._session is not None
        body = json.dumps([item.body for item in batch]).encode()
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)))
                while self._paused:
                    self._wake.clear()
                    await self._wake.wait()
            try:
                async with self._session.post(self.subscription.uri, data=body,
                                              headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self._count(batch, delivered=True, retried=attempt > 0)
                        return
                    error = f"HTTP {response.status}"
            except asyncio.TimeoutError:
                error = f"no answer within {self.timeout_s:g} s"
            except aiohttp.ClientError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.stats.attempts_failed += 1
            self.stats.last_error = error
        self._count(batch, delivered=False, retried=self.retries > 0, error=error)

    def _count(self, batch: List[_Queued], delivered: bool, retried: bool, error: str = "") -> None:
        """Count one batch's fate in the totals and for every invocation it carried events of."""
        requests = {item.request_id for item in batch if item.request_id}
        for stats in [self.stats, *(self.per_invocation.of(r) for r in requests)]:
            stats.batches_retried += int(retried)
            if delivered:
                stats.batches_delivered += 1
            else:
                stats.batches_dropped += 1
                stats.last_error = error
        self._add_events(self.stats, len(batch), delivered)
        for item in batch:
            if item.request_id:
                self._add_events(self.per_invocation.of(item.request_id), 1, delivered)

    @staticmethod
    def _add_events(stats: TelemetryStats, count: int, delivered: bool) -> None:
        if delivered:
            stats.events_delivered += count
        else:
            stats.events_dropped += count
