"""Transports: one serialized OTLP request out to the collector, over HTTP/protobuf or gRPC.

One family behind one base: :class:`Transport` owns the timeout, the two implementations own one
attempt each and say how it went as an :class:`Outcome`; whether that outcome is worth retrying is
:mod:`fgext._retry`'s decision, and what to do about it is the shipper's.

The timeout counts only time the process was awake. A FunctionGraph sandbox is frozen between
invocations (and ``SIGSTOP`` does the same): the monotonic clock keeps running while the process
cannot, so a timeout measured on it expires during the freeze, and the request - which the collector
may well have answered meanwhile - is given up and sent again after the thaw: a duplicate. The wait is
therefore cut into short slices; a slice that took far longer than asked means the process did not run
(frozen, or starved), and that gap is not counted (:class:`AwakeTimer`, the one clock for this rule).
gRPC runs each attempt as a task waited on with :func:`wait_awake`; HTTP runs it in the caller's task,
interrupted by the timer, over the kept-alive client of :mod:`fgext.otlp._http` (cheaper per POST); its
timer is kept between sends and restarted for each (:class:`KeptTimer`), so back-to-back sends share one
armed slice instead of scheduling and cancelling a timer each.

Redirects are never followed: a 3xx is a rejection, reported with its ``Location`` stripped of
credentials and query. TLS uses the standard ``OTEL_EXPORTER_OTLP_*CERTIFICATE``/``CLIENT_KEY`` files.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from fgext._errors import ConfigError
from fgext._retry import retry_after, retryable_grpc, retryable_http
from fgext.otlp._config import GRPC, OtlpConfig, SignalConfig
from fgext.otlp._http import Connection, Expired, Interrupt

__all__ = ["AwakeTimer", "GrpcTransport", "HttpTransport", "KeptTimer", "Outcome", "Transport", "build_transports",
           "safe_location", "wait_awake"]

_USER_AGENT = "fgext-otlp/0.1.0"
_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_RESPONSES: Dict[str, Any] = {
    "traces": ExportTraceServiceResponse, "logs": ExportLogsServiceResponse,
    "metrics": ExportMetricsServiceResponse,
}
# The wait for an answer is measured in slices this long; a slice that overran by more than the gap
# was spent frozen (a freeze shorter than the gap counts, which costs at most that much of the timeout).
_SLICE_S = 0.25
_FROZEN_GAP_S = 1.0


@dataclass(frozen=True)
class Outcome:
    """How one send went: accepted, worth retrying (maybe not before ``retry_after`` s), or rejected."""

    ok: bool
    retryable: bool = False
    retry_after: Optional[float] = None
    detail: str = ""
    rejected_items: int = 0  # partial success: items the collector refused although it answered OK


_ACCEPTED = Outcome(ok=True)  # the usual answer, made once (a frozen dataclass is slow to build)


class AwakeTimer:
    """Calls ``expire`` once ``timeout`` seconds of time this process was running have passed.

    The time is measured in slices of ``slice_s``; a slice that overran by more than ``gap_s`` was spent
    frozen (or starved) and is not counted. :meth:`cancel` before it fires stops it.
    """

    __slots__ = ("_before", "_clock", "_expire", "_gap", "_handle", "_left", "_slice", "_step", "loop")

    _expire: Optional[Callable[[], None]]

    def __init__(self, timeout: float, expire: Callable[[], None], *, clock: Callable[[], float] = time.monotonic,
                 slice_s: float = _SLICE_S, gap_s: float = _FROZEN_GAP_S) -> None:
        self._expire = expire
        self._left = timeout
        self._clock = clock
        self._slice = slice_s
        self._gap = gap_s
        self.loop = asyncio.get_running_loop()  # the one this timer runs on
        self._handle: Optional[asyncio.Handle] = None
        self._step = 0.0
        self._before = 0.0
        if timeout > 0:
            self._arm()
        else:
            self._handle = self.loop.call_soon(self._fire)

    def _arm(self) -> None:
        self._step = min(self._left, self._slice)
        self._before = self._clock()
        self._handle = self.loop.call_later(self._step, self._tick)

    @property
    def busy(self) -> bool:
        """Counting for someone (not yet fired, cancelled or let go by :meth:`idle`)."""
        return self._expire is not None

    def restart(self, timeout: float, expire: Callable[[], None]) -> None:
        """Count ``timeout`` afresh from now, for ``expire``. The slice armed for the last count is kept:
        back-to-back requests share one timer handle instead of scheduling and cancelling one each."""
        self._expire = expire
        self._left = timeout
        if timeout <= 0:
            self.cancel()
            self._expire = expire
            self._handle = self.loop.call_soon(self._fire)
        elif not isinstance(self._handle, asyncio.TimerHandle) or self._handle.when() > self.loop.time() + timeout:
            # none armed, a pending fire, or a slice that would end after this count (not held late)
            if self._handle is not None:
                self._handle.cancel()
            self._arm()
        else:
            self._before = self._clock()  # the running slice counts from now: shorter, never frozen time

    def idle(self) -> None:
        """Stop counting but keep the armed slice for :meth:`restart`; unless restarted, it ends at its tick."""
        self._expire = None

    def _tick(self) -> None:
        if self._expire is None:  # idle: let the handle go
            self._handle = None
            return
        took = self._clock() - self._before
        self._left -= self._step if took - self._step > self._gap else took
        if self._left > 0:
            self._arm()
        else:
            self._fire()

    def _fire(self) -> None:
        self._handle = None
        expire, self._expire = self._expire, None
        if expire is not None:
            expire()

    def cancel(self) -> None:
        self._expire = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class KeptTimer:
    """The :class:`AwakeTimer` of one owner whose waits come one after another (a transport's sends, a
    shipper's flushes): restarted for each wait instead of made, armed and cancelled each time. A wait that
    starts while the kept timer is busy gets a timer of its own."""

    __slots__ = ("_timer",)

    def __init__(self) -> None:
        self._timer: Optional[AwakeTimer] = None

    def start(self, timeout: float, expire: Callable[[], None]) -> AwakeTimer:
        timer = self._timer
        if timer is not None and not timer.busy and timer.loop is asyncio.get_running_loop():
            timer.restart(timeout, expire)
            return timer
        timer = AwakeTimer(timeout, expire)
        if self._timer is None or not self._timer.busy:
            self._timer = timer
        return timer

    def stop(self, timer: AwakeTimer) -> None:
        """The wait ``timer`` was started for is over."""
        if timer is self._timer:
            timer.idle()
        else:
            timer.cancel()


async def wait_awake(task: Awaitable[Any], timeout: float, *, clock: Callable[[], float] = time.monotonic,
                     slice_s: float = _SLICE_S, gap_s: float = _FROZEN_GAP_S, kept: Optional[KeptTimer] = None,
                     woke: Optional[asyncio.Future[None]] = None) -> bool:
    """Wait for ``task`` at most ``timeout`` seconds of time this process was running; True if it ended.
    ``kept``: the caller's timer for its waits (then with the default clock, slice and gap). ``woke``: a
    future the task resolves itself as its last act: the wait ends a loop turn sooner than through the
    task's done callbacks, which are still what ends it should the task end otherwise (cancelled first)."""
    future = asyncio.ensure_future(task)
    if future.done():
        return True
    if woke is None:
        woke = asyncio.get_running_loop().create_future()
    waiter = woke

    def wake(_: Any = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    if kept is not None:
        timer = kept.start(timeout, wake)
    else:
        timer = AwakeTimer(timeout, wake, clock=clock, slice_s=slice_s, gap_s=gap_s)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        if kept is not None:
            kept.stop(timer)
        else:
            timer.cancel()
        future.remove_done_callback(wake)
    return future.done()


def safe_location(location: str) -> str:
    """A redirect target fit for a log line: no user-info, no query, no fragment."""
    try:
        parts = urlsplit(location)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable>"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


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
    """Sends one signal's serialized requests to its endpoint, within an awake-time timeout."""

    signal = ""
    timeout_s = 10.0

    async def send(self, data: bytes) -> Outcome:
        """One attempt, given up (retryably) after ``timeout_s`` seconds awake without an answer."""
        attempt = asyncio.ensure_future(self._attempt(data))
        try:
            finished = await wait_awake(attempt, self.timeout_s)
        except asyncio.CancelledError:
            attempt.cancel()
            raise
        if not finished:
            attempt.cancel()
            await asyncio.wait({attempt})  # let it unwind; a cancel of this send still propagates
            return Outcome(ok=False, retryable=True, detail=f"no answer within {self.timeout_s:g} s")
        try:
            return attempt.result()
        except Exception as error:  # an unforeseen failure: keep the data, back off, try again
            return Outcome(ok=False, retryable=True, detail=f"{type(error).__name__}: {error}")

    async def _attempt(self, data: bytes) -> Outcome:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class HttpTransport(Transport):
    """OTLP/HTTP with binary protobuf bodies, over the endpoint's kept-alive :class:`Connection`;
    redirects refused."""

    def __init__(self, config: SignalConfig, connection: Connection) -> None:
        self.signal = config.signal
        self.timeout_s = config.timeout_s
        self._config = config
        self._connection = connection
        self._timer = KeptTimer()
        self._gzip = config.compression == "gzip"
        parts = urlsplit(config.endpoint)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = _idna(parts.hostname or "")
        host = f"[{host}]" if ":" in host else host
        default_port = 443 if parts.scheme == "https" else 80
        # What aiohttp sent: Host (without a default port), User-Agent, the user's headers (which may
        # replace those two), Authorization from user-info in the URL, then the body's own fields.
        fields: Dict[str, str] = {"Host": host if connection.port == default_port else f"{host}:{connection.port}",
                                  "User-Agent": _USER_AGENT}
        for name, value in config.headers.items():
            if name.lower() in _OURS:
                continue  # the body's framing is this client's, whatever the variable says
            for known in list(fields):
                if known.lower() == name.lower():
                    del fields[known]
            fields[name] = value
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            try:
                raw = credentials.encode("latin-1")
            except UnicodeEncodeError:
                raw = credentials.encode("utf-8")
            fields["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        fields["Content-Type"] = "application/x-protobuf"
        if self._gzip:
            fields["Content-Encoding"] = "gzip"
        lines = [f"POST {target} HTTP/1.1"] + [f"{name}: {value}" for name, value in fields.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("utf-8")

    async def send(self, data: bytes) -> Outcome:
        """One attempt, given up (retryably) after ``timeout_s`` seconds awake without a whole answer.

        Run in the caller's task, not one of its own as :meth:`Transport.send` does: that task and the
        wait for it cost more CPU than the rest of the exchange. The awake-time timer interrupts the
        request's waits instead (fgext/otlp/_http.py); a cancel of the caller still propagates.
        """
        interrupt = Interrupt()
        timer = self._timer.start(self.timeout_s, interrupt.fire)
        try:
            return await self._attempt(data, interrupt)
        except Expired:
            return Outcome(ok=False, retryable=True, detail=f"no answer within {self.timeout_s:g} s")
        except Exception as error:  # an unforeseen failure: keep the data, back off, try again
            return Outcome(ok=False, retryable=True, detail=f"{type(error).__name__}: {error}")
        finally:
            self._timer.stop(timer)

    async def _attempt(self, data: bytes, interrupt: Optional[Interrupt] = None) -> Outcome:
        body = data
        if self._gzip:
            import gzip

            body = gzip.compress(data, compresslevel=6)
        try:
            answer = await self._connection.post(self._head + b"%d\r\n\r\n" % len(body), body, interrupt)
        except Expired:
            raise
        except OSError as error:  # refused, reset, TLS failure, an answer that is not HTTP
            return Outcome(ok=False, retryable=True, detail=f"{type(error).__name__}: {error}")
        status = answer.status
        if 200 <= status < 300:
            if not answer.body:
                return _ACCEPTED
            rejected, message = _rejected(self.signal, answer.body)
            return Outcome(ok=True, rejected_items=rejected, detail=message)
        if 300 <= status < 400:
            where = safe_location(answer.fields.get("location", ""))
            return Outcome(ok=False, retryable=False,
                           detail=f"HTTP {status}: redirect to {where} refused (not followed)")
        detail = f"HTTP {status}: {answer.body[:200].decode('utf-8', 'replace')}"
        return Outcome(ok=False, retryable=retryable_http(status),
                       retry_after=retry_after(answer.fields.get("retry-after")), detail=detail)


# Header fields the client owns: a user's OTEL_EXPORTER_OTLP_*HEADERS entry of these names is not sent.
_OURS = frozenset({"content-length", "content-type", "content-encoding", "transfer-encoding", "connection"})


def _idna(host: str) -> str:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


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


def _read_tls(config: SignalConfig) -> Tuple[Optional[bytes], Optional[bytes], Optional[bytes]]:
    out: List[Optional[bytes]] = []
    for path in (config.certificate, config.client_key, config.client_certificate):
        if path is None:
            out.append(None)
            continue
        try:
            with open(path, "rb") as handle:
                out.append(handle.read())
        except OSError as error:
            raise ConfigError(f"OTLP {config.signal}: TLS file {path!r} cannot be read: "
                              f"{error.strerror or error}") from None
    return out[0], out[1], out[2]


class GrpcTransport(Transport):
    """OTLP/gRPC: the collector services' Export methods, called with the already serialized bytes."""

    def __init__(self, config: SignalConfig, grpc: Any) -> None:
        self.signal = config.signal
        self.timeout_s = config.timeout_s
        self._config = config
        self._grpc = grpc
        target = config.endpoint.split("://", 1)[-1].rstrip("/")
        if config.insecure:
            self._channel = grpc.aio.insecure_channel(target)
        else:
            root, key, chain = _read_tls(config)
            credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                                       certificate_chain=chain)
            self._channel = grpc.aio.secure_channel(target, credentials)
        # No request serializer: gRPC sends the bytes given, so encoding happens once, here too.
        self._call = self._channel.unary_unary(_GRPC_METHODS[config.signal], request_serializer=None,
                                               response_deserializer=None)
        self._metadata = tuple((key.lower(), value) for key, value in config.headers.items())
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else None

    async def _attempt(self, data: bytes) -> Outcome:
        grpc = self._grpc
        try:
            # No gRPC deadline: its clock runs through a freeze; the base class times out awake time only.
            answer = await self._call(data, metadata=self._metadata, compression=self._compression)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            name = getattr(code, "name", str(code))
            return Outcome(ok=False, retryable=retryable_grpc(name), detail=f"gRPC {name}: {error.details()}")
        except (asyncio.TimeoutError, OSError) as error:
            return Outcome(ok=False, retryable=True, detail=f"{type(error).__name__}: {error}")
        rejected, message = _rejected(self.signal, answer or b"")
        return Outcome(ok=True, rejected_items=rejected, detail=message)

    async def close(self) -> None:
        await self._channel.close()


def _ssl_context(config: SignalConfig) -> Any:
    """The SSL context of an https endpoint: the system's CAs, or the configured bundle and client certificate."""
    import ssl

    if config.certificate is None and config.client_certificate is None:
        return ssl.create_default_context()

    try:
        context = ssl.create_default_context(cafile=config.certificate)
        if config.client_certificate is not None:
            context.load_cert_chain(config.client_certificate, config.client_key)
    except (ssl.SSLError, OSError, ValueError) as error:
        files = ", ".join(p for p in (config.certificate, config.client_certificate, config.client_key) if p)
        raise ConfigError(f"OTLP {config.signal}: TLS files {files} cannot be used: {error}") from None
    return context


def build_transports(config: OtlpConfig) -> Tuple[Dict[str, Transport], Callable[[], Awaitable[None]]]:
    """A transport per enabled signal, and a coroutine function that releases them all.

    HTTP signals to one endpoint (scheme, host, port and TLS files) share one kept-alive connection.
    Raises :class:`ConfigError` when gRPC is asked for but its extra is not installed, a TLS file
    cannot be used, or an HTTP endpoint's port is not a port.
    """
    grpc: Any = _load_grpc() if config.uses_grpc else None
    transports: Dict[str, Transport] = {}
    connections: Dict[Tuple[Any, ...], Connection] = {}
    for signal, signal_config in config.signals.items():
        if not signal_config.enabled:
            continue
        if signal_config.protocol == GRPC:
            transports[signal] = GrpcTransport(signal_config, grpc)
            continue
        parts = urlsplit(signal_config.endpoint)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConfigError(f"OTLP {signal}: the endpoint's port is not a number from 1 to 65535 "
                              f"({safe_location(signal_config.endpoint)})") from None
        host = _idna(parts.hostname or "")
        key = (parts.scheme, host, port, signal_config.certificate, signal_config.client_certificate,
               signal_config.client_key)
        connection = connections.get(key)
        if connection is None:
            tls = _ssl_context(signal_config) if parts.scheme == "https" else None
            connection = connections[key] = Connection(host, port, tls)
        transports[signal] = HttpTransport(signal_config, connection)

    async def close() -> None:
        for transport in transports.values():
            await transport.close()
        for connection in connections.values():
            await connection.close()

    return transports, close
