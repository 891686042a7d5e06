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

from fgext._deadline import Deadline
from fgext._events import AnyEvent, Invoke
from fgext._logging import redact_url
from fgext._plugin import Plugin, PluginContext
from fgext.otlp._config import OtlpConfig, load_config
from fgext.otlp._metrics import Metrics
from fgext.otlp._requests import Encoded, encode_logs_requests, encode_metrics_request, encode_trace_requests
from fgext.otlp._resource import ResourceBuilder
from fgext.otlp._shipper import Shipper
from fgext.otlp._spool import Spool
from fgext.otlp._traces import Assembler
from fgext.otlp._transports import build_transports

__all__ = ["OtlpPlugin"]

_DEFAULT_FLUSH_TIMEOUT_S = 5.0
# Kept of the shutdown deadline for spilling what was not sent to disk and closing connections.
_SHUTDOWN_MARGIN_S = 0.1
# Longest a telemetry batch waits for a backlogged (up but slow) collector before it is taken anyway.
_BACKPRESSURE_WAIT_S = 30.0


class OtlpPlugin(Plugin):
    """Exports FunctionGraph telemetry as OpenTelemetry spans, logs and metrics over OTLP.

    Configured by the standard ``OTEL_*`` variables (endpoint, protocol, headers, compression,
    timeout, ``OTEL_SDK_DISABLED``, ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER=none``) and by
    ``FGEXT_SPOOL_DIR``, ``FGEXT_SPOOL_MAX_BYTES`` and the ``FGEXT_OTLP_MAX_*_BYTES`` bounds; see
    ``docs/otlp.md``. When data leaves is the pipeline's decision (``FGEXT_FLUSH``).
    """

    name: ClassVar[str] = "otlp"
    role: ClassVar[str] = "sink"
    #: ``FGEXT_OTLP_<KEY>`` or ``plugins.otlp.<key>`` in the config file. ``close_margin_ms``: how long past
    #: the function timeout an unfinished request waits before it is closed as incomplete; the byte bounds
    #: of one request, of pending data and of one log line; how often the metrics leave (``docs/otlp.md``)
    config_schema: ClassVar[Dict[str, type]] = {"close_margin_ms": float, "max_request_bytes": int,
                                                "max_pending_bytes": int, "max_log_bytes": int,
                                                "metrics_interval_ms": float}

    def __init__(self) -> None:
        self.config: Optional[OtlpConfig] = None
        self.disabled = False
        self.invokes = 0
        self._log: Any = None
        self._resource: Optional[ResourceBuilder] = None
        self._metrics: Optional[Metrics] = None
        self._assembler: Optional[Assembler] = None
        self._shipper: Optional[Shipper] = None
        self._close_transports: Optional[Callable[[], Awaitable[None]]] = None
        self._ticker: Optional[asyncio.Task[None]] = None
        self._metrics_timer: Optional[asyncio.Task[None]] = None
        self._stopped = False
        self._drops: Dict[str, int] = {}
        self.early_exports = 0
        self._counted_rejections = 0

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self, context: PluginContext) -> None:
        """Read the configuration, open the spool and start the sender; raise ``ConfigError`` if bad."""
        self._log = context.logger
        if self._log is None:
            import structlog

            self._log = structlog.get_logger("fgext.otlp")
        environ = context.environ if context.environ else os.environ
        config = self.config = load_config(environ, close_margin_ms=context.config.get("close_margin_ms"),
                                           settings=context.config)
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
        self._assembler = Assembler(self._resource, self._metrics, open_wait_s=config.open_wait_s,
                                    function_timeout_s=config.function_timeout_s,
                                    max_log_bytes=config.max_log_bytes)
        spool = Spool(config.spool_dir, config.spool_max_bytes, self._spool_dropped, self._log)
        spool.open()
        self._shipper = Shipper(transports, spool, self._count_drop, self._log,
                                max_queue_bytes=config.queue_max_bytes, spool_after_s=config.spool_after_s)
        self._shipper.start()
        self._ticker = asyncio.ensure_future(self._expire_loop())
        if config.signals["metrics"].enabled:
            self._metrics_timer = asyncio.ensure_future(self._metrics_loop(config.metrics_interval_s))
        self._log.info(
            "otlp export ready", spool=str(config.spool_dir), max_request_bytes=config.max_request_bytes,
            endpoints={s: redact_url(c.endpoint) for s, c in config.signals.items() if c.enabled},
            protocol=sorted({c.protocol for c in config.signals.values() if c.enabled}),
        )

    async def on_invoke(self, invoke: Invoke) -> None:
        """Learn the region and project from the invoked URN (resource attributes)."""
        self.invokes += 1
        if self._resource is not None and invoke.urn is not None:
            self._resource.note_urn(invoke.urn)

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        """Consume a batch: sort it into requests, log lines and metrics. Exports nothing, except when
        pending data reached ``FGEXT_OTLP_MAX_PENDING_BYTES`` (see :meth:`_export_early_for_memory`)."""
        assembler = self._assembler
        if assembler is None or self._stopped:
            return
        shipper = self._shipper
        assert shipper is not None and self.config is not None
        if shipper.backlogged:
            # The collector is up but slower than the platform: hold this batch (and so, through the
            # pipeline's bounded queue, the platform's POST) instead of spilling to a spool that fills.
            await shipper.drained(_BACKPRESSURE_WAIT_S)
        assembler.consume(events)
        if assembler.pending_bytes >= self.config.max_pending_bytes:
            self._export_early_for_memory()

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Take every finished span and log line, encode them, hand them to the shipper and wait, at most
        ``timeout`` s. Metrics are not part of a flush: they leave on their own timer and at shutdown."""
        if self._shipper is None or self._stopped:
            return
        self._export_pending()
        await self._shipper.flush(_DEFAULT_FLUSH_TIMEOUT_S if timeout is None else max(0.0, timeout))

    async def shutdown(self, timeout: float) -> None:
        """Close every open request (marked incomplete), export within the deadline, spool the rest."""
        if self._shipper is None or self._stopped:
            return
        self._stopped = True
        deadline = Deadline.after(timeout)
        for task in (self._ticker, self._metrics_timer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert self._assembler is not None
        try:
            self._assembler.expire(everything=True)
            self._export_pending()
            self._export_metrics()
            # Keep time for writing leftovers to disk and closing connections.
            await self._shipper.flush(deadline.before(_SHUTDOWN_MARGIN_S).remaining())
        finally:
            # Synchronous, so it happens even if the agent's deadline cancels this coroutine.
            self._shipper.spill()
        await self._shipper.close()
        if self._close_transports is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._close_transports(), max(0.01, deadline.remaining()))

    # ------------------------------------------------------------------------------ internals

    @property
    def stats(self) -> Dict[str, int]:
        """Counters for tests and diagnostics."""
        assembler, shipper = self._assembler, self._shipper
        return {
            "invokes": self.invokes,
            "open_requests": assembler.open_requests if assembler else 0,
            "pending_logs": len(assembler.lines) if assembler else 0,
            "pending_bytes": assembler.pending_bytes if assembler else 0,
            "late_events": assembler.late_events if assembler else 0,
            "closed_incomplete": assembler.closed_incomplete if assembler else 0,
            "rejected_events": assembler.rejected_events if assembler else 0,
            "early_exports": self.early_exports,
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

    def _export_early_for_memory(self) -> None:
        """The only export the plugin starts by itself: pending data reached ``max_pending_bytes``
        (one invocation printing without end, or many finishing between flushes), so it goes to the
        shipper now instead of growing; ``flush`` still decides everything else."""
        self.early_exports += 1
        self._export_pending()

    def _export_pending(self) -> None:
        """Take -> encode -> ship: what is finished is encoded into byte-bounded requests, let go once
        encoded (a record that cannot be encoded is dropped alone and counted), and handed to the shipper."""
        assembler, shipper, resource = self._assembler, self._shipper, self._resource
        assert assembler is not None and shipper is not None and resource is not None
        assert self.config is not None
        signals = self.config.signals
        max_bytes = self.config.max_request_bytes
        if self._counted_rejections < assembler.rejected_events:
            self._count_drop("events", "malformed", assembler.rejected_events - self._counted_rejections)
            self._counted_rejections = assembler.rejected_events
        message = resource.message()
        pending = assembler.pending()
        traces = encode_trace_requests(message, pending.spans, max_bytes) if signals["traces"].enabled else None
        logs = (encode_logs_requests(message, pending.lines, pending.links, max_bytes)
                if signals["logs"].enabled else None)
        assembler.taken(pending)
        self._submit("traces", traces)
        self._submit("logs", logs)

    def _export_metrics(self) -> None:
        """One snapshot of the FaaS metrics, encoded and handed to the shipper (timer and shutdown only)."""
        metrics, resource = self._metrics, self._resource
        assert metrics is not None and resource is not None and self.config is not None
        if not self.config.signals["metrics"].enabled or not metrics.dirty:
            return
        now = time.time_ns()
        points = metrics.snapshot(now)
        if points:
            encoded = encode_metrics_request(resource.message(), points)
            metrics.taken(now)
            self._submit("metrics", encoded)

    def _submit(self, signal: str, encoded: Optional[Encoded]) -> None:
        if encoded is None:
            return
        assert self._shipper is not None
        if encoded.unencodable:
            self._count_drop(signal, "unencodable", encoded.unencodable)
        for data, items in encoded.requests:
            self._shipper.submit(signal, data, items)

    async def _metrics_loop(self, interval_s: float) -> None:
        """Export the metrics every ``interval_s`` (``FGEXT_OTLP_METRICS_INTERVAL_MS``).

        A frozen sandbox runs no timer: an export due during a freeze happens right after the thaw, and a
        sandbox destroyed while frozen loses only what was counted since the last export (``docs/otlp.md``).
        """
        while True:
            await asyncio.sleep(interval_s)
            try:
                self._export_metrics()
            except Exception as error:  # the timer must outlive any one bad snapshot
                self._log.error("otlp metrics export failed", error=repr(error))

    async def _expire_loop(self) -> None:
        """Close requests that waited too long (the assembler's completeness rule, not an export: their
        spans leave with the next flush)."""
        assert self.config is not None and self._assembler is not None
        tick = max(0.02, min(1.0, self.config.open_wait_s / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                self._assembler.expire()
            except Exception as error:  # housekeeping must outlive any one bad record
                self._log.error("otlp housekeeping failed", error=repr(error))
