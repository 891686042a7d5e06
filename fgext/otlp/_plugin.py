"""The OTLP sink plugin: telemetry events in, OTLP traces, logs and metrics out, nothing lost.

The sink step of the path (listener handler -> parse -> pipeline -> chain -> lane -> **the plugin** ->
assembler -> pending -> flush: take -> encode -> shipper -> transport). Batches come from the sink's
lane (:mod:`fgext._lane`), one call of ``on_telemetry`` at a time; the plugin gives them to the
assembler (``_traces``). At the pipeline's flush it takes what is pending, has ``_requests`` encode it
and hands the bytes to the shipper (``_shipper``), which sends them through ``_transports``.

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
from typing import Any, Awaitable, Callable, ClassVar, Dict, Optional, Sequence, Tuple

from fgext._deadline import Deadline
from fgext._events import AnyEvent, Invoke, OtlpPayload
from fgext._logging import redact_url
from fgext._plugin import Plugin, PluginContext
from fgext._selfstats import AgentStats
from fgext._urn import FunctionUrn
from fgext.otlp._config import OtlpConfig, load_config
from fgext.otlp._foreign import ForeignTelemetry
from fgext.otlp._metrics import Metrics
from fgext.otlp._requests import Encoded, encode_logs_requests, encode_metrics_request, encode_trace_requests
from fgext.otlp._resource import ResourceBuilder
from fgext.otlp._selfmetrics import Attrs, Number, Readings, SelfMetrics, process_readings
from fgext.otlp._shipper import Shipper
from fgext.otlp._spool import Spool
from fgext.otlp._traces import Assembler
from fgext.otlp._transports import build_transports

__all__ = ["OtlpPlugin"]

_DEFAULT_FLUSH_TIMEOUT_S = 5.0
# A flush waits at least this long for an answer, even with FGEXT_OTLP_SPOOL_AFTER_MS=0 (all on disk at once).
_MIN_FLUSH_WAIT_S = 0.05
# Kept of the shutdown deadline for spilling what was not sent to disk and closing connections.
_SHUTDOWN_MARGIN_S = 0.1
# Longest a telemetry batch waits for a backlogged (up but slow) collector before it is taken anyway.
_BACKPRESSURE_WAIT_S = 30.0


class OtlpPlugin(Plugin):
    """Exports FunctionGraph telemetry as OpenTelemetry spans, logs and metrics over OTLP.

    Configured by the standard ``OTEL_*`` variables (endpoint, protocol, headers, compression,
    timeout, ``OTEL_SDK_DISABLED``, ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER=none``) and by
    ``FGEXT_SPOOL_DIR``, ``FGEXT_SPOOL_MAX_BYTES``, the ``FGEXT_OTLP_MAX_*_BYTES`` bounds and
    ``FGEXT_OTLP_REPORT_LOG`` (one report log record per invocation); see ``docs/otlp.md``. Besides the
    FaaS metrics it exports the agent's own (``fgext.agent.*``, read through ``PluginContext.stats``).
    When data leaves is the pipeline's decision (``FGEXT_FLUSH``).
    """

    name: ClassVar[str] = "otlp"
    role: ClassVar[str] = "sink"
    # on_invoke and on_telemetry only consume (on_telemetry's one wait, for a backlogged collector, enters
    # no timeout scope): called in the listener's task when the lane is idle.
    inline: ClassVar[bool] = True
    #: ``FGEXT_OTLP_<KEY>`` or ``plugins.otlp.<key>`` in the config file. ``close_margin_ms``: how long past
    #: the function timeout an unfinished request waits before it is closed as incomplete; the byte bounds
    #: of one request, of pending data and of one log line; how often the metrics leave (``docs/otlp.md``)
    # Every FGEXT_OTLP_<KEY> the agent reads must be here: the agent maps each such variable to a setting
    # of this plugin and refuses the unknown ones (docs/otlp.md's table is tested against this).
    config_schema: ClassVar[Dict[str, type]] = {"close_margin_ms": float, "max_request_bytes": int,
                                                "max_pending_bytes": int, "max_log_bytes": int,
                                                "metrics_interval_ms": float, "spool_after_ms": float,
                                                "queue_max_bytes": int, "report_log": bool}

    def __init__(self) -> None:
        self.config: Optional[OtlpConfig] = None
        self.disabled = False
        self.invokes = 0
        self._log: Any = None
        self._resource: Optional[ResourceBuilder] = None
        self._noted_urn: Optional[FunctionUrn] = None  # the URN last noted: every invoke of a sandbox has it
        self._metrics: Optional[Metrics] = None
        self._assembler: Optional[Assembler] = None
        self._foreign = ForeignTelemetry()  # what the function exported to the agent's receiver
        self._shipper: Optional[Shipper] = None
        self._close_transports: Optional[Callable[[], Awaitable[None]]] = None
        self._ticker: Optional[asyncio.Task[None]] = None
        self._metrics_timer: Optional[asyncio.Task[None]] = None
        self._stopped = False
        self._drops: Dict[Tuple[str, str], int] = {}  # items dropped, by (signal, reason)
        self._agent: Optional[AgentStats] = None
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
        if isinstance(context.stats, AgentStats):
            self._agent = context.stats
            context.stats.publish(self.name, self.summary)
        self._metrics.agent = SelfMetrics(self._self_readings, delta=self._metrics.delta, start_ns=time.time_ns())
        self._assembler = Assembler(self._resource, self._metrics, open_wait_s=config.open_wait_s,
                                    function_timeout_s=config.function_timeout_s,
                                    max_log_bytes=config.max_log_bytes, report_log=config.report_log,
                                    head=config.head, tail=config.tail)
        spool = Spool(config.spool_dir, config.spool_max_bytes, self._spool_dropped, self._log)
        spool.open()
        self._shipper = Shipper(transports, spool, self._count_drop, self._log,
                                max_queue_bytes=config.queue_max_bytes, max_request_bytes=config.max_request_bytes,
                                spool_after_s=config.spool_after_s)
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
        urn = invoke.urn
        if self._resource is not None and urn is not None and urn is not self._noted_urn:
            self._resource.note_urn(urn)  # the same URN again (parse_invoke reuses it) would change nothing
            self._noted_urn = urn

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
        platform: Sequence[AnyEvent] = events
        if OtlpPayload in set(map(type, events)):  # the function's own exports (fgext._events.OtlpPayload)
            platform = [event for event in events if not isinstance(event, OtlpPayload)]
            for event in events:
                if isinstance(event, OtlpPayload):
                    self._foreign.add(event)
        if platform:
            assembler.consume(platform)
        if assembler.pending_bytes + self._foreign.pending_bytes >= self.config.max_pending_bytes:
            self._export_early_for_memory()

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Take everything finished, encode it, hand it to the shipper and wait until it is acknowledged or
        on disk: at most ``timeout`` s, and no longer than the write-ahead delay.

        A flush makes data safe against a freeze or a kill, and what the collector has not acknowledged
        within ``FGEXT_OTLP_SPOOL_AFTER_MS`` is on disk (the send goes on in the background): waiting
        longer would only hold the next invocations' data back in memory behind a slow collector.
        Metrics are not part of a flush: they leave on their own timer and at shutdown.
        """
        if self._shipper is None or self._stopped:
            return
        assert self.config is not None
        try:
            self._export_pending(send=False)
        except BaseException:
            self._shipper.wake()  # what was handed over before the failure leaves in the background
            raise
        limit = _DEFAULT_FLUSH_TIMEOUT_S if timeout is None else max(0.0, timeout)
        await self._shipper.flush(min(limit, max(self.config.spool_after_s, _MIN_FLUSH_WAIT_S)))

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
            self._export_pending(send=False)
            self._export_metrics(send=False)
            # Keep time for writing leftovers to disk and closing connections.
            await self._shipper.flush(deadline.before(_SHUTDOWN_MARGIN_S).remaining())
        finally:
            # Synchronous, so it happens even if the agent's deadline cancels this coroutine.
            self._shipper.spill()
            spooled = self._spooled_by_signal()
            if spooled:
                # Not lost (the next agent sends it), but late: whoever reads the logs should know.
                self._log.warning("otlp data spooled at the shutdown deadline, left for the next agent",
                                  spooled=spooled)
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
            "unsampled_traces": assembler.unsampled_traces if assembler else 0,
            "unsampled_spans": assembler.unsampled_spans if assembler else 0,
            "received_spans": self._foreign.received_items["traces"],
            "received_log_records": self._foreign.received_items["logs"],
            "received_metrics": self._foreign.received_items["metrics"],
        }

    def _self_readings(self) -> Readings:
        """The ``fgext.agent.*`` self-metrics, read from their owners (fgext.otlp._selfmetrics)."""
        readings = process_readings()
        dropped: Dict[Attrs, Number] = {
            (("fgext.reason", reason), ("fgext.signal", signal)): items
            for (signal, reason), items in self._drops.items()
        }
        agent = self._agent
        if agent is not None:
            readings["fgext.agent.events.received"] = {
                (("fgext.event.kind", kind),): n for kind, n in agent.events_by_kind().items()}
            readings["fgext.agent.events.malformed"] = {(): agent.get("events_malformed", 0)}
            readings["fgext.agent.bodies.rejected"] = {(): agent.get("bodies_rejected", 0)}
            readings["fgext.agent.invokes.received"] = {(): agent.get("invokes_received", 0)}
            for plugin, events in agent.lane_drops().items():
                dropped[(("fgext.plugin", plugin), ("fgext.reason", "lane_full"), ("fgext.signal", "events"))] = events
            by_processors = agent.get("dropped_by_processors", 0)
            if by_processors:
                dropped[(("fgext.reason", "processor"), ("fgext.signal", "events"))] = by_processors
            readings["fgext.agent.queue.depth"] = {
                (("fgext.plugin", plugin),): depth for plugin, depth in agent.queue_depths().items()}
            readings["fgext.agent.plugin.failures"] = {
                (("fgext.hook", hook), ("fgext.plugin", plugin)): n
                for (plugin, hook), n in agent.plugin_failures().items()}
            readings["fgext.agent.plugin.disabled"] = {
                (("fgext.plugin", plugin),): int(disabled) for plugin, disabled in agent.plugins().items()}
        readings["fgext.agent.dropped"] = dropped
        assembler, shipper = self._assembler, self._shipper
        if assembler is not None:
            readings["fgext.agent.events.late"] = {(): assembler.late_events}
            readings["fgext.agent.invocations.incomplete"] = {(): assembler.closed_incomplete}
        if shipper is not None:
            readings["fgext.agent.export.requests"] = {
                (("fgext.outcome", outcome), ("fgext.signal", signal)): n
                for (signal, outcome), n in shipper.requests.items()}
            readings["fgext.agent.export.sent"] = {
                (("fgext.signal", signal),): n for signal, n in shipper.sent_bytes.items()}
            readings["fgext.agent.spool.added"] = {(): shipper.spool.added}
            readings["fgext.agent.spool.size"] = {(): shipper.spool.size}
            readings["fgext.agent.spool.files"] = {(): len(shipper.spool)}
        return readings

    def summary(self) -> Dict[str, Any]:
        """What this sink sent, spooled and dropped, by signal (the agent's ``stopped`` line carries it)."""
        shipper = self._shipper
        out: Dict[str, Any] = {}
        if shipper is not None:
            out["sent"] = {signal: {"requests": shipper.requests.get((signal, "success"), 0),
                                    "items": shipper.sent_items.get(signal, 0), "bytes": n}
                           for signal, n in sorted(shipper.sent_bytes.items())}
            out["spooled"] = self._spooled_by_signal()
            out["failed_attempts"] = shipper.failed_attempts
        dropped: Dict[str, Dict[str, int]] = {}
        for (signal, reason), items in sorted(self._drops.items()):
            dropped.setdefault(signal, {})[reason] = items
        out["dropped"] = dropped
        if self._assembler is not None:
            out["late_events"] = self._assembler.late_events
            out["closed_incomplete"] = self._assembler.closed_incomplete
        return out

    def _spooled_by_signal(self) -> Dict[str, Dict[str, int]]:
        """What the spool holds now, by signal: requests, items, bytes."""
        assert self._shipper is not None
        out: Dict[str, Dict[str, int]] = {}
        for entry in self._shipper.requests_on_disk():
            counts = out.setdefault(entry.signal, {"requests": 0, "items": 0, "bytes": 0})
            counts["requests"] += 1
            counts["items"] += entry.items
            counts["bytes"] += entry.size
        return out

    def _count_drop(self, signal: str, reason: str, items: int) -> None:
        key = (signal, reason)
        self._drops[key] = self._drops.get(key, 0) + items

    def _spool_dropped(self, signal: str, items: int, size: int) -> None:
        self._count_drop(signal, "spool_full", items)

    def _export_early_for_memory(self) -> None:
        """The only export the plugin starts by itself: pending data reached ``max_pending_bytes``
        (one invocation printing without end, or many finishing between flushes), so it goes to the
        shipper now instead of growing; ``flush`` still decides everything else."""
        self.early_exports += 1
        self._export_pending()

    def _export_pending(self, *, send: bool = True) -> None:
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
        traces = (encode_trace_requests(message, pending.spans, max_bytes, pending.message)
                  if signals["traces"].enabled else None)
        logs = (encode_logs_requests(message, pending.lines, pending.links, max_bytes, pending.records)
                if signals["logs"].enabled else None)
        assembler.taken(pending)
        self._submit("traces", traces, send)
        self._submit("logs", logs, send)
        # The function's own telemetry: its resource kept, fgext's attributes added where missing.
        for signal in ("traces", "logs", "metrics"):
            if self._foreign.pending_items(signal):
                if signals[signal].enabled:
                    self._submit(signal, self._foreign.encode(signal, message, max_bytes), send)
                else:
                    self._foreign.drop(signal)

    def _export_metrics(self, *, send: bool = True) -> None:
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
            self._submit("metrics", encoded, send)

    def _submit(self, signal: str, encoded: Optional[Encoded], send: bool) -> None:
        """Hand one signal's requests to the shipper; ``send=False`` when a flush of the shipper follows."""
        if encoded is None:
            return
        assert self._shipper is not None
        if encoded.unencodable:
            self._count_drop(signal, "unencodable", encoded.unencodable)
        for data, items in encoded.requests:
            self._shipper.submit(signal, data, items, send=send)

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
