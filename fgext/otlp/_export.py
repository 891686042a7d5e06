"""Export: serialized OTLP requests out over HTTP/protobuf or gRPC, with retry, backoff and the spool.

Every request is serialized exactly once; the bytes are what is POSTed, what is spooled on failure
and what is replayed later. Sending is at-least-once: a request is forgotten only after the
collector accepted it (or rejected it for good, which is counted), so a flush cut short by its
deadline or a killed agent can at worst send something twice, never lose it.

Failure handling follows the OTLP exporter specification: HTTP 429/502/503/504, connection errors,
timeouts and the retryable gRPC codes are retried; ``Retry-After`` is honoured; other answers are
permanent rejections. After a retryable failure the collector is treated as down: everything
pending goes to the spool (disk), and the spool is replayed, oldest first, with capped exponential
backoff until the collector answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Tuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from fgext._errors import ConfigError
from fgext.otlp._config import GRPC, OtlpConfig, SignalConfig
from fgext.otlp._spool import Spool

__all__ = [
    "GrpcTransport", "HttpTransport", "Outcome", "Shipper", "Transport", "build_transports",
]

_USER_AGENT = "fgext-otlp/0.1.0"
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_RETRYABLE_GRPC = frozenset({
    "CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE",
    "DATA_LOSS",
})
_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_RESPONSES: Dict[str, Any] = {
    "traces": ExportTraceServiceResponse, "logs": ExportLogsServiceResponse,
    "metrics": ExportMetricsServiceResponse,
}


# -------------------------------------------------------------------------------------- transports


@dataclass(frozen=True)
class Outcome:
    """How one send went: accepted, worth retrying (maybe not before ``retry_after`` s), or rejected."""

    ok: bool
    retryable: bool = False
    retry_after: Optional[float] = None
    detail: str = ""
    rejected_items: int = 0  # partial success: items the collector refused although it answered OK


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import email.utils  # only for a Retry-After date: email costs milliseconds of the cold start

        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def _rejected(signal: str, body: bytes) -> Tuple[int, str]:
    """Items refused in an OTLP partial-success answer, and the collector's message."""
    if not body:
        return 0, ""
    try:
        response = _RESPONSES[signal].FromString(body)
    except Exception:  # an answer we cannot read is not a refusal we can count
        return 0, ""
    if not response.HasField("partial_success"):
        return 0, ""
    partial = response.partial_success
    count = {"traces": "rejected_spans", "logs": "rejected_log_records",
             "metrics": "rejected_data_points"}[signal]
    return int(getattr(partial, count)), partial.error_message


class Transport:
    """Sends one signal's serialized requests to its endpoint."""

    signal = ""

    async def send(self, data: bytes) -> Outcome:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class HttpTransport(Transport):
    """OTLP/HTTP with binary protobuf bodies, over one shared aiohttp session."""

    def __init__(self, config: SignalConfig, session: Callable[[], Any]) -> None:
        self.signal = config.signal
        self._config = config
        self._session = session
        headers = {"User-Agent": _USER_AGENT}
        headers.update(config.headers)
        headers["Content-Type"] = "application/x-protobuf"
        if config.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        self._headers = headers

    async def send(self, data: bytes) -> Outcome:
        import aiohttp

        body = data
        if self._config.compression == "gzip":
            import gzip

            body = gzip.compress(data, compresslevel=6)
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        for attempt in (1, 2):
            try:
                async with self._session().post(self._config.endpoint, data=body, headers=self._headers,
                                                timeout=timeout) as response:
                    payload = await response.read()
                    status = response.status
                    if 200 <= status < 300:
                        rejected, message = _rejected(self.signal, payload)
                        return Outcome(ok=True, rejected_items=rejected, detail=message)
                    detail = f"HTTP {status}: {payload[:200].decode('utf-8', 'replace')}"
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    return Outcome(ok=False, retryable=status in _RETRYABLE_HTTP, retry_after=retry_after,
                                   detail=detail)
            except aiohttp.ServerDisconnectedError as error:
                # A keep-alive connection that died while the sandbox was frozen: one fresh attempt.
                if attempt == 2:
                    return Outcome(ok=False, retryable=True, detail=f"disconnected: {error}")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                return Outcome(ok=False, retryable=True, detail=f"{type(error).__name__}: {error}")
        return Outcome(ok=False, retryable=True, detail="unreachable")


def _load_grpc() -> Any:
    try:
        grpc = importlib.import_module("grpc")
        importlib.import_module("grpc.aio")
    except ImportError:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC extra, which is not installed: "
            "install fgext[grpc] (pip install 'fgext[grpc]'), or use http/protobuf"
        ) from None
    return grpc


class GrpcTransport(Transport):
    """OTLP/gRPC: the collector services' Export methods, called with the already serialized bytes."""

    def __init__(self, config: SignalConfig, grpc: Any) -> None:
        self.signal = config.signal
        self._config = config
        self._grpc = grpc
        target = config.endpoint.split("://", 1)[-1].rstrip("/")
        if config.insecure:
            self._channel = grpc.aio.insecure_channel(target)
        else:
            self._channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
        # No request serializer: gRPC sends the bytes given, so encoding happens once, here too.
        self._call = self._channel.unary_unary(_GRPC_METHODS[config.signal], request_serializer=None,
                                               response_deserializer=None)
        self._metadata = tuple((key.lower(), value) for key, value in config.headers.items())
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else None

    async def send(self, data: bytes) -> Outcome:
        grpc = self._grpc
        try:
            answer = await self._call(data, timeout=self._config.timeout_s, metadata=self._metadata,
                                      compression=self._compression)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            name = getattr(code, "name", str(code))
            return Outcome(ok=False, retryable=name in _RETRYABLE_GRPC,
                           detail=f"gRPC {name}: {error.details()}")
        except (asyncio.TimeoutError, OSError) as error:
            return Outcome(ok=False, retryable=True, detail=f"{type(error).__name__}: {error}")
        rejected, message = _rejected(self.signal, answer or b"")
        return Outcome(ok=True, rejected_items=rejected, detail=message)

    async def close(self) -> None:
        await self._channel.close()


class _SessionHolder:
    """One aiohttp session for all HTTP signals, created inside the running loop on first use."""

    def __init__(self) -> None:
        self.session: Any = None

    def __call__(self) -> Any:
        if self.session is None or self.session.closed:
            import aiohttp

            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4))
        return self.session

    async def close(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()


def build_transports(config: OtlpConfig) -> Tuple[Dict[str, Transport], Callable[[], Any]]:
    """A transport per enabled signal, and a coroutine function that releases them all.

    Raises :class:`ConfigError` when gRPC is asked for but its extra is not installed.
    """
    holder = _SessionHolder()
    grpc: Any = _load_grpc() if config.uses_grpc else None
    transports: Dict[str, Transport] = {}
    for signal, signal_config in config.signals.items():
        if not signal_config.enabled:
            continue
        if signal_config.protocol == GRPC:
            transports[signal] = GrpcTransport(signal_config, grpc)
        else:
            transports[signal] = HttpTransport(signal_config, holder)

    async def close() -> None:
        for transport in transports.values():
            await transport.close()
        await holder.close()

    return transports, close


# ---------------------------------------------------------------------------------------- shipper

DropCounter = Callable[[str, str, int], None]  # signal, reason, items


class Shipper:
    """Sends queued requests in order; spools them while the collector is down; replays the spool."""

    def __init__(
        self,
        transports: Mapping[str, Transport],
        spool: Spool,
        on_drop: DropCounter,
        logger: Any,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_queue_bytes: int = 8 * 1024 * 1024,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transports = transports
        self.spool = spool
        self._on_drop = on_drop
        self._log = logger
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._max_queue_bytes = max_queue_bytes
        self._monotonic = monotonic
        self._queue: Deque[Tuple[str, bytes, int]] = deque()
        self._queue_bytes = 0
        self._lock = asyncio.Lock()
        self._wakeup: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._failures = 0
        self._next_attempt = 0.0  # monotonic time before which the background loop does not retry
        self._not_before = 0.0  # Retry-After: nothing is sent before this, not even on flush
        self.sent_requests = 0
        self.failed_attempts = 0
        #: Called when the sender has nothing left to send; returns True if it submitted more. The plugin
        #: uses it to coalesce: invocations that end while a send is in flight leave in one request.
        self.refill: Optional[Callable[[], bool]] = None
        self._drained: Optional[asyncio.Event] = None

    @property
    def down(self) -> bool:
        return self._failures > 0

    @property
    def pending(self) -> int:
        """Requests not yet accepted: queued in memory plus spooled."""
        return len(self._queue) + len(self.spool)

    @property
    def sending(self) -> bool:
        """A send is in flight to a collector believed up: what ends meanwhile can wait and coalesce."""
        return self._lock.locked() and not self.down

    @property
    def backlogged(self) -> bool:
        """The in-memory queue holds more than half its bound while the collector is up."""
        return self._queue_bytes * 2 > self._max_queue_bytes and not self.down

    async def drained(self, timeout: float) -> bool:
        """Wait until the queue is no longer backlogged (sent, or spooled because the collector went
        down), at most ``timeout`` seconds: how a slow collector slows the listener instead of filling
        the spool while it is up."""
        deadline = self._monotonic() + timeout
        while self.backlogged:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return False
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), remaining)
        return True

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())
        if len(self.spool):
            self._wakeup.set()  # an earlier run left requests: try them now

    def submit(self, signal: str, data: bytes, items: int) -> None:
        """Queue one serialized request; memory stays bounded by spilling the oldest to the spool."""
        if signal not in self._transports:
            return
        if self.down:
            self.spool.add(signal, data, items)
        else:
            self._queue.append((signal, data, items))
            self._queue_bytes += len(data)
            while self._queue_bytes > self._max_queue_bytes and len(self._queue) > 1:
                self._spill_one()
        self.wake()

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _spill_one(self) -> None:
        signal, data, items = self._queue.popleft()
        self._queue_bytes -= len(data)
        self.spool.add(signal, data, items)

    def spill(self) -> None:
        """Move everything still in memory to the spool (before a freeze, a deadline or exit)."""
        while self._queue:
            self._spill_one()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            timeout: Optional[float] = None
            if self.down or len(self.spool):
                timeout = max(0.0, self._next_attempt - self._monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            self._wakeup.clear()
            try:
                await self.pump(force=False)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the sender must outlive any single bad request
                self._log.error("otlp sender failed", error=repr(error))
                await asyncio.sleep(self._backoff_initial)

    async def pump(self, *, force: bool) -> bool:
        """Send the spool then the queue, in order; return True when nothing is left pending.

        ``force`` (a flush) tries even while backing off, but never before a ``Retry-After``. When all is
        sent, ``refill`` may hand over what accumulated meanwhile, which is sent in the same turn.
        """
        async with self._lock:
            try:
                while True:
                    done = await self._pump_locked(force)
                    refill = self.refill
                    # After a failure the refill still runs: what it submits goes to the spool, on disk.
                    if refill is None or not refill() or not done:
                        return done
            finally:
                # Whatever happened, the queue is shorter (sent or spilled): backpressure may let go.
                if self._drained is not None:
                    self._drained.set()

    async def _pump_locked(self, force: bool) -> bool:
        """``pump`` with the lock held: one pass over the spool and the queue."""
        sent_before = self.sent_requests
        now = self._monotonic()
        if now < self._not_before or (self.down and not force and now < self._next_attempt):
            self.spill()
            return False
        for entry in self.spool.entries():
            transport = self._transports.get(entry.signal)
            if transport is None:
                self._log.warning("otlp spooled data for a switched-off signal dropped",
                                  signal=entry.signal, items=entry.items)
                self.spool.remove(entry)
                self._on_drop(entry.signal, "disabled", entry.items)
                continue
            data = self.spool.read(entry)
            if data is None:
                continue
            outcome = await transport.send(data)
            if not self._handle(outcome, entry.signal, entry.items):
                return False
            self.spool.remove(entry)
        while self._queue:
            item = self._queue[0]
            signal, data, items = item
            outcome = await self._transports[signal].send(data)
            if not self._handle(outcome, signal, items):
                return False
            # A deadline may have spilled the queue to the spool while this send was in flight:
            # then the spooled copy is sent again later (at-least-once), never lost.
            if self._queue and self._queue[0] is item:
                self._queue.popleft()
                self._queue_bytes -= len(data)
                if self._drained is not None:
                    self._drained.set()
        if self._failures:
            if self.sent_requests > sent_before:
                self._log.info("otlp collector reachable again", failed_attempts=self._failures)
            # Either it answered, or nothing was left to try: new requests go straight out again.
            self._failures = 0
        return True

    def _handle(self, outcome: Outcome, signal: str, items: int) -> bool:
        """Account for one send; return False when the collector is down (stop sending for now)."""
        if outcome.ok:
            self.sent_requests += 1
            if outcome.rejected_items:
                self._log.warning("otlp collector rejected part of a request", signal=signal,
                                  rejected=outcome.rejected_items, message=outcome.detail)
                self._on_drop(signal, "rejected", outcome.rejected_items)
            return True
        self.failed_attempts += 1
        if not outcome.retryable:
            self._log.warning("otlp collector rejected a request for good; dropped", signal=signal,
                              items=items, detail=outcome.detail)
            self._on_drop(signal, "rejected", items)
            return True
        now = self._monotonic()
        self._failures += 1
        delay = min(self._backoff_max, self._backoff_initial * (2 ** min(self._failures - 1, 16)))
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
            self._not_before = now + outcome.retry_after
        self._next_attempt = now + delay
        if self._failures == 1:
            self._log.warning("otlp export failed; spooling and retrying with backoff", signal=signal,
                              detail=outcome.detail, retry_in_s=round(delay, 3))
        self.spill()
        return False

    async def flush(self, timeout: float) -> bool:
        """Try to send everything within ``timeout`` seconds; what is left ends up in the spool."""
        try:
            return await asyncio.wait_for(self.pump(force=True), timeout)
        except asyncio.TimeoutError:
            self.spill()
            return False
        except asyncio.CancelledError:
            self.spill()  # the caller's own deadline hit: keep the data on disk, then let go
            raise

    async def close(self) -> None:
        self.spill()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
