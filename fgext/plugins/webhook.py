"""``webhook``: POST a JSON summary of each failed or slow invocation to a URL.

A sink: it reads report events (and the function's log lines just before them, to say what went
wrong) and queues a summary for each invocation that failed or took at least ``slow_ms``. A
background task sends the queue, so the pipeline never waits on the network: each POST has a
timeout, transient failures are retried with backoff (what is transient and how long to wait -
connection errors, timeouts, 429, 502-504, ``Retry-After`` - is :mod:`fgext._retry`'s policy), and
when the queue is full new alerts are dropped and counted rather than held.

Settings (``plugins.webhook`` in the config file, or ``FGEXT_WEBHOOK_<KEY>``):

- ``url`` (required): where to POST, ``http://`` or ``https://``; a redirect (3xx) is not followed
  but counted as a failed delivery, its ``Location`` logged without credentials;
- ``slow_ms`` (default 3000): a report at least this long is "slow"; 0 turns slow alerts off;
- ``failures`` (default true): alert on reports whose status is not ``success``;
- ``phases`` (default ``invoke,init``): which reports count (``invoke``, ``init``, ``restore``);
- ``timeout`` (seconds per attempt, default 2), ``retries`` (default 3), ``backoff`` (first delay in
  seconds, default 0.2, doubling up to 5 s, with jitter);
- ``logs`` (default 5): how many of the function's last log lines to include;
- ``headers``: an object of extra HTTP headers (config file only; for a token, say);
- ``max_queue`` (default 100): alerts held at most while the URL is slow.

The body::

    {"source": "fgext", "reasons": ["failed"], "function": "hello", "version": "latest",
     "extension": "extensionFgext.sh", "request_id": "…", "phase": "invoke", "status": "error",
     "start_time": "…", "end_time": "…", "duration_ms": 3120.5, "billing_duration_ms": 3121,
     "memory_used_mb": 60.1, "memory_size_mb": 128, "pod_name": "…", "slow_ms": 3000,
     "recent_logs": ["Traceback (most recent call last): …"]}
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from typing import Any, ClassVar, Deque, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from fgext._errors import PluginError
from fgext._events import AnyEvent, FunctionLog, ReportEvent, Start
from fgext._logging import redact_url
from fgext._plugin import EventTypes, PluginContext, RegistrationInfo, Sink
from fgext._retry import Backoff, retry_after, retryable_http

__all__ = ["WebhookPlugin", "summarise"]

_MAX_LOG_CHARS = 1000
_BACKOFF_CAP = 5.0


def summarise(report: ReportEvent, reasons: Sequence[str], registration: Optional[RegistrationInfo] = None,
              slow_ms: float = 0.0, recent_logs: Sequence[str] = ()) -> Dict[str, Any]:
    """The JSON-ready summary of one report event."""
    metrics = report.metrics
    return {
        "source": "fgext",
        "reasons": list(reasons),
        "function": registration.function_name if registration else "",
        "version": registration.function_version if registration else "",
        "extension": registration.extension_name if registration else "",
        "request_id": report.request_id,
        "phase": report.phase,
        "status": report.status,
        "start_time": report.start_time.isoformat(),
        "end_time": report.end_time.isoformat() if report.end_time else None,
        "duration_ms": metrics.duration_ms,
        "billing_duration_ms": metrics.billing_duration_ms,
        "memory_used_mb": metrics.memory_used_mb,
        "memory_size_mb": metrics.memory_size_mb,
        "pod_name": metrics.pod_name,
        "slow_ms": slow_ms or None,
        "recent_logs": [line[:_MAX_LOG_CHARS] for line in recent_logs],
    }


class WebhookPlugin(Sink):
    """Alerts a URL about failed or slow invocations, from a background task with retries."""

    name: ClassVar[str] = "webhook"
    accepts: ClassVar[EventTypes] = (ReportEvent, Start, FunctionLog)
    config_schema: ClassVar[Dict[str, type]] = {
        "url": str, "slow_ms": float, "failures": bool, "phases": list, "timeout": float, "retries": int,
        "backoff": float, "logs": int, "headers": dict, "max_queue": int,
    }

    def __init__(self) -> None:
        self.url = ""
        self.slow_ms = 3000.0
        self.failures = True
        self.phases: Tuple[str, ...] = ("invoke", "init")
        self.timeout = 2.0
        self.retries = 3
        self.backoff = 0.2
        self.headers: Dict[str, str] = {}
        self.registration: Optional[RegistrationInfo] = None
        self.stats: Dict[str, int] = {"alerts": 0, "sent": 0, "failed": 0, "dropped": 0, "attempts": 0}
        self._recent: Deque[str] = collections.deque(maxlen=5)
        self._queue: Optional[asyncio.Queue[Dict[str, Any]]] = None
        self._sender: Optional[asyncio.Task[None]] = None
        self._session: Any = None
        self._log: Any = None

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply and check settings (``start`` does this with the agent's validated configuration)."""
        url = str(config.get("url", "")).strip()
        if not url:
            raise PluginError("plugin 'webhook': setting 'url' is required (FGEXT_WEBHOOK_URL or plugins.webhook.url)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PluginError(f"plugin 'webhook': setting 'url' must be an http:// or https:// URL, "
                              f"got {redact_url(url)!r}")
        self.url = url
        self.slow_ms = float(config.get("slow_ms", self.slow_ms))
        self.failures = bool(config.get("failures", self.failures))
        phases = tuple(str(p).strip().lower() for p in config.get("phases", self.phases))
        unknown = [p for p in phases if p not in ("invoke", "init", "restore")]
        if unknown:
            raise PluginError(f"plugin 'webhook': setting 'phases' has unknown phase(s) {', '.join(unknown)}; "
                              "use invoke, init, restore")
        self.phases = phases
        self.timeout = float(config.get("timeout", self.timeout))
        self.retries = int(config.get("retries", self.retries))
        self.backoff = float(config.get("backoff", self.backoff))
        for key, value, low in (("timeout", self.timeout, 0.001), ("retries", self.retries, 0),
                                ("backoff", self.backoff, 0.0), ("slow_ms", self.slow_ms, 0.0)):
            if value < low:
                raise PluginError(f"plugin 'webhook': setting {key!r} must be at least {low}, got {value}")
        headers = config.get("headers", {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise PluginError("plugin 'webhook': setting 'headers' must map header names to string values")
        self.headers = dict(headers)
        self._recent = collections.deque(maxlen=max(0, int(config.get("logs", 5))))
        self._queue = asyncio.Queue(maxsize=max(1, int(config.get("max_queue", 100))))

    async def start(self, context: PluginContext) -> None:
        import aiohttp

        self.configure(context.config)
        self.registration = context.registration
        self._log = context.logger
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"Content-Type": "application/json", "User-Agent": "fgext-webhook", **self.headers})
        self._sender = asyncio.ensure_future(self._send_loop())

    # ------------------------------------------------------------------------------------ alerts

    def reasons(self, report: ReportEvent) -> List[str]:
        """Why ``report`` deserves an alert (empty when it does not)."""
        if report.phase not in self.phases:
            return []
        reasons = []
        if self.failures and not report.ok:
            reasons.append("failed")
        duration = report.metrics.duration_ms
        if self.slow_ms > 0 and duration is not None and duration >= self.slow_ms:
            reasons.append("slow")
        return reasons

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        for event in events:
            if isinstance(event, Start):
                self._recent.clear()
            elif isinstance(event, FunctionLog):
                self._recent.append(event.message)
            elif isinstance(event, ReportEvent):
                reasons = self.reasons(event)
                if reasons:
                    self._enqueue(summarise(event, reasons, self.registration, self.slow_ms, list(self._recent)))
                if event.phase == "invoke":
                    self._recent.clear()

    def _enqueue(self, alert: Dict[str, Any]) -> None:
        assert self._queue is not None, "webhook plugin used before start"
        self.stats["alerts"] += 1
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.stats["dropped"] += 1
            if self._log is not None:
                self._log.warning("webhook queue full; alert dropped", request_id=alert["request_id"],
                                  dropped=self.stats["dropped"])

    async def _send_loop(self) -> None:
        assert self._queue is not None
        while True:
            alert = await self._queue.get()
            try:
                await self._send(alert)
            finally:
                self._queue.task_done()

    async def _send(self, alert: Dict[str, Any]) -> bool:
        import aiohttp

        # backslashreplace: a lone surrogate in a log line must not cost the alert
        body = json.dumps(alert, ensure_ascii=False).encode("utf-8", "backslashreplace")
        backoff = Backoff(self.backoff, max(self.backoff, _BACKOFF_CAP))
        last = ""
        for attempt in range(self.retries + 1):
            self.stats["attempts"] += 1
            wait: Optional[float] = None
            try:
                # A redirect would carry the alert and the configured headers to a host nobody chose.
                async with self._session.post(self.url, data=body, allow_redirects=False) as response:
                    if response.status < 300:
                        self.stats["sent"] += 1
                        return True
                    if response.status < 400:
                        location = response.headers.get("Location", "")
                        last = (f"HTTP {response.status} redirect to "
                                f"{redact_url(location) if location else 'no Location'}, not followed")
                        break
                    last = f"HTTP {response.status}"
                    if not retryable_http(response.status):
                        break  # the URL refuses this alert; asking again will not change that
                    wait = retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                last = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if attempt < self.retries:
                await asyncio.sleep(backoff.next_delay(wait))
        self.stats["failed"] += 1
        if self._log is not None:
            self._log.warning("webhook alert not delivered", url=redact_url(self.url),
                              request_id=alert.get("request_id"), error=last, attempts=self.stats["attempts"])
        return False

    # ---------------------------------------------------------------------------------- lifecycle

    async def flush(self, timeout: Optional[float] = None) -> None:
        if self._queue is None or self._sender is None or self._sender.done():
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout=timeout)
        except asyncio.TimeoutError:
            if self._log is not None:
                self._log.warning("webhook alerts still pending after flush", pending=self._queue.qsize())

    async def shutdown(self, timeout: float) -> None:
        await self.flush(timeout * 0.8)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._session is not None:
            await self._session.close()
            self._session = None
