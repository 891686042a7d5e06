"""The function's short path to the local agent: one OTLP/HTTP POST per invocation, on a kept-alive connection.

``fgext.function`` uses this when its spans go to the fgext agent on the loopback interface
(``FGEXT_AGENT_ENDPOINT`` naming 127.0.0.1, ``::1`` or ``localhost`` over ``http``, or the agent's
discovery file). A remote ``OTEL_EXPORTER_OTLP_ENDPOINT`` keeps the SDK's own OTLP/HTTP exporter
(TLS, headers, compression, retries).

- :class:`InvocationSpanProcessor` keeps each sampled span that ends, in the thread that ends it (no
  hand-off to a worker thread), and exports all of them in one request when the helper flushes at
  the end of the invocation. Spans stay buffered until the agent has taken them: a failed export
  keeps them for the next flush, except when the agent refused them (a 4xx answer), since sending
  them again would be refused again. At most :data:`MAX_BUFFERED` spans wait; more are dropped and
  counted (a warning on the ``fgext.function`` logger says so once).
- :class:`LoopbackSpanExporter` encodes with the OTLP exporters' own encoder (``encode_spans`` of
  ``opentelemetry-exporter-otlp-proto-common``) and POSTs ``application/x-protobuf`` over one
  persistent ``http.client.HTTPConnection``. A connection the agent closed while idle is noticed
  before sending and replaced; a kept-alive connection that breaks during the request is replaced
  once and the request sent again (the agent may then, rarely, get a batch twice). Every step is
  bounded by the flush's :class:`~fgext._deadline.Deadline`; a connection that fails is closed, and
  the next export opens a new one, so an agent that restarts is found again.

This module imports the OpenTelemetry SDK: ``fgext.function`` imports it only at set-up.
"""

from __future__ import annotations

import http.client
import logging
import select
import socket
import threading
from typing import List, Optional, Sequence

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from fgext._deadline import Deadline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = ["MAX_BUFFERED", "InvocationSpanProcessor", "LoopbackSpanExporter", "is_loopback_http"]

MAX_BUFFERED = 2048
_DEFAULT_TIMEOUT_S = 1.0
_HEADERS = {"Content-Type": "application/x-protobuf"}
# A reused connection that fails with one of these was most likely closed by the agent while idle.
_BROKEN = (http.client.RemoteDisconnected, http.client.BadStatusLine, BrokenPipeError, ConnectionResetError,
           ConnectionAbortedError)

_log = logging.getLogger("fgext.function")


def is_loopback_http(url: str) -> bool:
    """Whether ``url`` is plain ``http`` to this host's loopback interface (where the agent listens)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    if parts.scheme != "http" or parts.username is not None:
        return False
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackSpanExporter(SpanExporter):
    """OTLP/HTTP protobuf to ``http://<host>:<port><path>`` over one kept-alive connection."""

    def __init__(self, url: str, timeout_s: float = _DEFAULT_TIMEOUT_S) -> None:
        from urllib.parse import urlsplit

        if not is_loopback_http(url):
            raise ValueError("not a plain http URL on the loopback interface")  # the URL may hold a secret
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query
        self.timeout_s = timeout_s
        self._connection: Optional[http.client.HTTPConnection] = None
        self._lock = threading.Lock()
        self.connections_opened = 0  # for the tests of reconnection

    def export(self, spans: Sequence[ReadableSpan], deadline: Optional[Deadline] = None) -> SpanExportResult:
        """POST the spans; SUCCESS when the agent answered 2xx. Never raises for a network failure."""
        result, _ = self.send(spans, deadline)
        return result

    def send(self, spans: Sequence[ReadableSpan], deadline: Optional[Deadline] = None
             ) -> tuple[SpanExportResult, bool]:
        """Like :meth:`export`, and whether a failure is worth retrying later (not a refusal by the agent)."""
        if not spans:
            return SpanExportResult.SUCCESS, False
        deadline = deadline or Deadline.after(self.timeout_s)
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._lock:
                return self._send_locked(spans, deadline)
        finally:
            detach(token)

    def _send_locked(self, spans: Sequence[ReadableSpan], deadline: Deadline) -> tuple[SpanExportResult, bool]:
        body: Optional[bytes] = None
        if self._connection is not None and self._closed_by_peer(self._connection):
            self._close()  # the agent closed it while idle (or restarted): a new one, no failed request
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                connection = self._connect(deadline)
                if body is None:  # after connecting: an absent agent costs no encoding
                    try:
                        body = encode_spans(spans).SerializePartialToString()
                    except Exception as exc:  # spans that cannot be encoded never will be: not worth keeping
                        _log.warning("fgext.function: spans could not be encoded (%s: %s); they are dropped",
                                     type(exc).__name__, exc)
                        return SpanExportResult.FAILURE, False
                self._set_timeout(connection, deadline)
                connection.request("POST", self.path, body, _HEADERS)
                self._set_timeout(connection, deadline)
                response = connection.getresponse()
                response.read()
            except _BROKEN as exc:
                self._close()
                if reused and attempt == 1 and not deadline.expired():
                    continue
                _log.debug("fgext.function: export to the agent failed (%s)", exc)
                return SpanExportResult.FAILURE, True
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out, ...
                self._close()
                _log.debug("fgext.function: export to the agent failed (%s)", exc)
                return SpanExportResult.FAILURE, True
            if response.will_close:
                self._close()
            if 200 <= response.status < 300:
                return SpanExportResult.SUCCESS, False
            # 4xx: the agent refused these spans and would again; 5xx (503: busy): try later.
            return SpanExportResult.FAILURE, response.status >= 500 or response.status in (408, 429)
        return SpanExportResult.FAILURE, True  # pragma: no cover - the loop always returns

    def _connect(self, deadline: Deadline) -> http.client.HTTPConnection:
        connection = self._connection
        if connection is None:
            if deadline.expired():
                raise socket.timeout("no time left to connect")
            connection = http.client.HTTPConnection(self.host, self.port, timeout=deadline.remaining())
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connection = connection
            self.connections_opened += 1
        return connection

    @staticmethod
    def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
        # An idle kept-alive socket is readable only when the agent closed it (EOF) or reset it.
        # poll, not select: select cannot watch a descriptor numbered 1024 or more.
        sock = connection.sock
        if sock is None:
            return True
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    @staticmethod
    def _set_timeout(connection: http.client.HTTPConnection, deadline: Deadline) -> None:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise socket.timeout("flush budget spent")
        if connection.sock is not None:
            connection.sock.settimeout(remaining)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def shutdown(self) -> None:
        with self._lock:
            self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class InvocationSpanProcessor(SpanProcessor):
    """Keeps ended sampled spans and exports them together at :meth:`force_flush` (the end of an invocation)."""

    def __init__(self, exporter: LoopbackSpanExporter, max_buffered: int = MAX_BUFFERED) -> None:
        self.exporter = exporter
        self.max_buffered = max_buffered
        self.dropped = 0
        self.refused = 0
        self._spans: List[ReadableSpan] = []
        self._lock = threading.Lock()  # the buffer
        self._flush_lock = threading.Lock()  # one export at a time, so the exported prefix is still the prefix

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        with self._lock:
            if len(self._spans) < self.max_buffered:
                self._spans.append(span)
                return
            self.dropped += 1
            first = self.dropped == 1
        if first:
            _log.warning("fgext.function: %d spans wait for the agent already; further spans are dropped",
                         self.max_buffered)

    def buffered(self) -> int:
        with self._lock:
            return len(self._spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export every buffered span in one request within ``timeout_millis``; True when the agent took them."""
        deadline = Deadline.after(max(0, timeout_millis) / 1000)
        if not self._flush_lock.acquire(timeout=deadline.remaining()):
            return False
        try:
            with self._lock:
                batch = list(self._spans)
            if not batch:
                return True
            result, retry = self.exporter.send(batch, deadline)
            if result is SpanExportResult.SUCCESS or not retry:
                with self._lock:  # spans that ended meanwhile were appended after the batch
                    del self._spans[:len(batch)]
            if result is not SpanExportResult.SUCCESS and not retry:
                self.refused += len(batch)
                if self.refused == len(batch):  # the first refusal only: tell once
                    _log.warning("fgext.function: the agent refused %d spans; they are dropped", len(batch))
            return result is SpanExportResult.SUCCESS
        finally:
            self._flush_lock.release()

    def shutdown(self) -> None:
        self.force_flush(int(self.exporter.timeout_s * 1000))
        self.exporter.shutdown()
