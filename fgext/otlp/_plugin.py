"""The OTLP sink plugin: telemetry events in, OTLP traces, logs and metrics out, nothing lost.

Hot path (``on_telemetry``): events are sorted into per-request records and a list of pending log
lines; no protobuf work happens per event until an export, where a whole batch is encoded straight
into one request and serialized once. Exporting runs in a background task, so the hook returns at
once; ``flush`` and ``shutdown`` wait for it within their deadlines and spool what did not make it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any, Awaitable, Callable, ClassVar, Dict, Optional, Sequence

from fgext._events import AnyEvent, Invoke
from fgext._plugin import Plugin, PluginContext
from fgext.otlp._config import OtlpConfig, load_config
from fgext.otlp._export import (
    encode_logs_requests,
    encode_metrics_request,
    encode_trace_requests,
)
from fgext.otlp._flush import FlushScheduler
from fgext.otlp._mapping import Mapper, Metrics
from fgext.otlp._resource import ResourceBuilder
from fgext.otlp._shipper import Shipper
from fgext.otlp._spool import Spool
from fgext.otlp._transports import build_transports

__all__ = ["OtlpPlugin"]

# Pending log lines (or finished spans) that trigger an export whatever the flush strategy: memory
# stays bounded even when one invocation prints without end or many finish between exports.
MAX_PENDING_LOGS = 5000
MAX_PENDING_SPANS = 5000
_DEFAULT_FLUSH_TIMEOUT_S = 5.0
# Longest a telemetry batch waits for a backlogged (up but slow) collector before it is taken anyway.
_BACKPRESSURE_WAIT_S = 30.0


class OtlpPlugin(Plugin):
    """Exports FunctionGraph telemetry as OpenTelemetry spans, logs and metrics over OTLP.

    Configured by the standard ``OTEL_*`` variables (endpoint, protocol, headers, compression,
    timeout, ``OTEL_SDK_DISABLED``, ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER=none``) and by
    ``FGEXT_FLUSH``, ``FGEXT_SPOOL_DIR`` and ``FGEXT_SPOOL_MAX_BYTES``; see ``docs/otlp.md``.
    """

    name: ClassVar[str] = "otlp"
    role: ClassVar[str] = "sink"
    #: ``FGEXT_OTLP_CLOSE_MARGIN_MS`` (or ``plugins.otlp.close_margin_ms`` in the config file): how long
    #: past the function timeout an unfinished request waits before it is closed as incomplete
    config_schema: ClassVar[Dict[str, type]] = {"close_margin_ms": float}
    #: the flush strategy (``FGEXT_FLUSH``) decides what leaves at the end of an invocation, not the pipeline
    flush_at_invocation_end: ClassVar[bool] = False

    def __init__(self) -> None:
        self.config: Optional[OtlpConfig] = None
        self.disabled = False
        self.invokes = 0
        self._log: Any = None
        self._resource: Optional[ResourceBuilder] = None
        self._metrics: Optional[Metrics] = None
        self._mapper: Optional[Mapper] = None
        self._shipper: Optional[Shipper] = None
        self._scheduler: Optional[FlushScheduler] = None
        self._close_transports: Optional[Callable[[], Awaitable[None]]] = None
        self._ticker: Optional[asyncio.Task[None]] = None
        self._stopped = False
        self._drops: Dict[str, int] = {}

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self, context: PluginContext) -> None:
        """Read the configuration, open the spool and start the sender; raise ``ConfigError`` if bad."""
        self._log = context.logger
        if self._log is None:
            import structlog

            self._log = structlog.get_logger("fgext.otlp")
        environ = context.environ if context.environ else os.environ
        config = self.config = load_config(environ, close_margin_ms=context.config.get("close_margin_ms"))
        if config.disabled or not any(s.enabled for s in config.signals.values()):
            self.disabled = True
            self._log.info("otlp export disabled by configuration")
            return
        transports, close = build_transports(config)
        self._close_transports = close
        registration = context.registration
        self._resource = ResourceBuilder(
            environ, function_name=registration.function_name, function_version=registration.function_version,
            service_name=config.service_name, user_attributes=config.resource_attributes,
        )
        self._metrics = Metrics(config.temporality, time.time_ns())
        self._mapper = Mapper(self._resource, self._metrics, open_wait_s=config.open_wait_s,
                              function_timeout_s=config.function_timeout_s)
        spool = Spool(config.spool_dir, config.spool_max_bytes, self._spool_dropped, self._log)
        spool.open()
        self._shipper = Shipper(transports, spool, self._count_drop, self._log,
                                max_queue_bytes=config.queue_max_bytes, spool_after_s=config.spool_after_s)
        self._shipper.start()
        self._scheduler = FlushScheduler(config.flush)
        self._ticker = asyncio.ensure_future(self._tick_loop())
        self._log.info(
            "otlp export ready", flush=str(config.flush), spool=str(config.spool_dir),
            endpoints={s: c.endpoint for s, c in config.signals.items() if c.enabled},
            protocol=sorted({c.protocol for c in config.signals.values() if c.enabled}),
        )

    async def on_invoke(self, invoke: Invoke) -> None:
        """Learn the region and project from the invoked URN (resource attributes)."""
        self.invokes += 1
        if self._resource is not None and invoke.urn is not None:
            self._resource.note_urn(invoke.urn)

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        """Sort a batch into requests and pending logs; export if the flush strategy says so."""
        mapper = self._mapper
        if mapper is None or self._stopped:
            return
        shipper = self._shipper
        assert self._scheduler is not None and shipper is not None
        if shipper.backlogged:
            # The collector is up but slower than the platform: hold this batch (and so, through the
            # pipeline's bounded queue, the platform's POST) instead of spilling to a spool that fills.
            await shipper.drained(_BACKPRESSURE_WAIT_S)
        completed = mapper.consume(events)
        full = len(mapper.logs) >= MAX_PENDING_LOGS or mapper.pending_spans >= MAX_PENDING_SPANS
        if full or (completed and self._scheduler.at_invocation_end()):
            self._export_pending()

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Export everything pending now and wait for it, at most ``timeout`` seconds."""
        if self._shipper is None or self._stopped:
            return
        self._export_pending()
        await self._shipper.flush(_DEFAULT_FLUSH_TIMEOUT_S if timeout is None else max(0.0, timeout))

    async def shutdown(self, timeout: float) -> None:
        """Close every open request (marked incomplete), export within the deadline, spool the rest."""
        if self._shipper is None or self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + max(0.0, timeout)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        assert self._mapper is not None
        try:
            self._mapper.expire(everything=True)
            self._export_pending()
            # Keep a sliver of the deadline for writing leftovers to disk and closing connections.
            await self._shipper.flush(max(0.0, (deadline - time.monotonic()) * 0.9))
        finally:
            # Synchronous, so it happens even if the agent's deadline cancels this coroutine.
            self._shipper.spill()
        await self._shipper.close()
        if self._close_transports is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._close_transports(), max(0.01, deadline - time.monotonic()))

    # ------------------------------------------------------------------------------ internals

    @property
    def stats(self) -> Dict[str, int]:
        """Counters for tests and diagnostics."""
        mapper, shipper = self._mapper, self._shipper
        return {
            "invokes": self.invokes,
            "open_requests": mapper.open_requests if mapper else 0,
            "pending_logs": len(mapper.logs) if mapper else 0,
            "late_events": mapper.late_events if mapper else 0,
            "closed_incomplete": mapper.closed_incomplete if mapper else 0,
            "sent_requests": shipper.sent_requests if shipper else 0,
            "failed_attempts": shipper.failed_attempts if shipper else 0,
            "spooled_requests": len(shipper.spool) if shipper else 0,
            "spooled_bytes": shipper.spool.size if shipper else 0,
            "spooled_total": shipper.spool.added if shipper else 0,
            "dropped_items": sum(self._drops.values()),
        }

    def _count_drop(self, signal: str, reason: str, items: int) -> None:
        key = f"{signal}:{reason}"
        self._drops[key] = self._drops.get(key, 0) + items
        if self._metrics is not None:
            self._metrics.dropped(signal, reason, items)

    def _spool_dropped(self, signal: str, items: int, size: int) -> None:
        self._count_drop(signal, "spool_full", items)

    def _export_pending(self) -> None:
        """Encode what is pending into requests (one serialization each) and hand them to the sender."""
        mapper, shipper, resource, metrics = self._mapper, self._shipper, self._resource, self._metrics
        assert mapper is not None and shipper is not None and resource is not None and metrics is not None
        assert self.config is not None and self._scheduler is not None
        signals = self.config.signals
        message = resource.message()
        spans = mapper.take_spans()
        if spans and signals["traces"].enabled:
            for data, items in encode_trace_requests(message, spans):
                shipper.submit("traces", data, items)
        logs = mapper.take_logs()
        if logs and signals["logs"].enabled:
            for data, items in encode_logs_requests(message, logs, mapper):
                shipper.submit("logs", data, items)
        if signals["metrics"].enabled and metrics.dirty:
            points = metrics.snapshot(time.time_ns())
            if points:
                data, items = encode_metrics_request(message, points)
                shipper.submit("metrics", data, items)
        self._scheduler.exported()

    async def _tick_loop(self) -> None:
        """Close requests that waited too long, and run the ``continuously`` timer."""
        assert self.config is not None and self._scheduler is not None and self._mapper is not None
        interval = self._scheduler.timer_interval
        tick = min(1.0, self.config.open_wait_s / 4, interval if interval else 1.0)
        tick = max(0.02, tick)
        while True:
            await asyncio.sleep(tick)
            try:
                closed = self._mapper.expire()
                mapper = self._mapper
                pending = bool(mapper.pending_spans or mapper.logs or self._metrics_dirty())
                due = self._scheduler.timer_due()
                if (closed and self._scheduler.at_invocation_end()) or (due and pending):
                    self._export_pending()
                elif due:
                    self._scheduler.exported()
            except Exception as error:  # housekeeping must outlive any one bad record
                self._log.error("otlp housekeeping failed", error=repr(error))

    def _metrics_dirty(self) -> bool:
        return self._metrics is not None and self._metrics.dirty
