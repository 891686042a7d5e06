"""The listener's self-protection: a header deadline, an idle limit and a cap on open connections.

aiohttp serves the requests; this module stands between the listening socket and aiohttp's protocol:

- a connection must deliver a complete request head within ``FGEXT_HEADER_TIMEOUT`` seconds of
  being accepted, or it is closed (a client that dribbles headers holds nothing for long); later
  requests on a kept-alive connection fall under aiohttp's keep-alive timeout, ``FGEXT_IDLE_TIMEOUT``,
  which closes a connection that has not completed its next request in that time;
- at most ``FGEXT_MAX_CONNECTIONS`` connections are open at once (default: the file-descriptor limit
  less a reserve for the agent's own files and outgoing connections). A connection accepted above the
  cap makes room by closing the least recently active connection that has no request in flight, so
  the platform's own requests (``/extension/invoke``, telemetry POSTs) are still accepted and served
  while idle or hostile connections fill the table;
- accept errors when file descriptors run out are logged once per interval (see
  :mod:`fgext._logging`), and the cap keeps the agent below the limit in the first place.

The fast path (``FGEXT_FAST_PATH``, on by default): on a connection aiohttp has never served, the
platform's two hot requests - ``POST /extension/invoke`` and ``POST /`` with a JSON body - are answered
here, without aiohttp's request, stream, task and writer per request (docs/security.md has the measured
gain). Only a request whose head is unambiguously plain (:func:`plain_head`) is taken, so the fast path can
never disagree with aiohttp about where a request ends; anything else - another path or method, a chunked
or compressed body, ``Expect``, ``Upgrade``, a lenient spelling or a repeat of any header, a head larger than
``_HEAD_MAX`` - and any body whose answer is not the usual 200 (invalid JSON, malformed events) is handed
to aiohttp unchanged from the request's first byte, and the connection stays aiohttp's for good. The agent's
one owner of "body -> parsed, counted, submitted, answer" (fgext._agent.Agent._take) serves both paths. A
fast-path connection that has not completed its next request ``FGEXT_IDLE_TIMEOUT`` after its last answer is
closed by the guard's sweep (aiohttp's keep-alive timer runs only on requests it served).
"""

from __future__ import annotations

import asyncio
import functools
import re
import resource
import socket
import time
from email.utils import formatdate
from typing import Any, Callable, Dict, Optional, Set, Tuple, Union

from aiohttp import web

from fgext._config import ListenerLimits

__all__ = ["ConnectionGuard", "FastHandler", "GuardedSockSite", "max_connections", "plain_head"]

#: the agent's side of the fast path: (is it an invoke, body) -> (JSON answer, what to await before
#: writing it) or None: not the usual answer, hand the request to aiohttp
FastHandler = Callable[[bool, bytes], Optional[Tuple[str, Optional["asyncio.Future[None]"]]]]

#: file descriptors kept free for the agent itself: interpreter, event loop, OTLP and webhook
#: connections, spool files, the platform's next connection
_FD_RESERVE = 64
_MAX_DEFAULT = 1000


#: the longest head the fast path waits for: aiohttp's own line limit (8190); longer goes to aiohttp
_HEAD_MAX = 8190
#: at most this many header lines on the fast path (aiohttp allows 128; the platform sends a handful)
_FIELDS_MAX = 32
_PREFIX = b"POST /"
_TARGETS = {b"POST / HTTP/1.1": False, b"POST /extension/invoke HTTP/1.1": True}
# RFC 9110: field-name is a token; the value holds visible ASCII, SP and HTAB only (no CR, LF, NUL, DEL,
# obs-text); OWS around it. A head is plain only if every line after the request line is one of these.
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e]*?)([ \t]*)\r\n")
_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*")
#: a header among these makes a request not plain unless its value is the one given (None: any value does)
_FORBIDDEN: Dict[bytes, Optional[bytes]] = {
    b"transfer-encoding": None, b"expect": None, b"upgrade": None, b"connection": b"keep-alive",
    b"content-encoding": b"identity"}


def plain_head(head: bytes, max_body: int) -> Optional[Tuple[bool, int]]:
    """``head`` (up to and including the CRLF of its last header line, without the blank line) if it is a
    plain request the fast path takes: (is it an invoke, Content-Length); else None."""
    line_end = head.find(b"\r\n")
    invoke = _TARGETS.get(head[:line_end]) if line_end > 0 else None
    if invoke is None or _FIELDS.fullmatch(head, line_end + 2) is None:
        return None
    fields = _FIELD.findall(head, line_end + 2)
    if len(fields) > _FIELDS_MAX:
        return None
    length: Optional[int] = None
    hosts = 0
    seen: Set[bytes] = set()
    for name, value, trailing in fields:
        name = name.lower()
        if name in seen:
            # aiohttp refuses some fields repeated (its private SINGLETON_HEADERS, which differ between
            # versions); the platform repeats none, so any repeat goes to aiohttp to decide.
            return None
        seen.add(name)
        if name == b"content-length":
            # Whitespace after the number: llhttp 9.1 (aiohttp 3.13) refuses a tab there, 9.2 does not.
            if length is not None or not value.isdigit() or len(value) > 12 or trailing:
                return None
            length = int(value)
        elif name == b"host":
            hosts += 1  # HTTP/1.1 requires one; aiohttp refuses a request without
        elif name in _FORBIDDEN:
            wanted = _FORBIDDEN[name]
            if wanted is None or value.lower() != wanted:
                return None
    if length is None or length > max_body or hosts != 1:
        return None
    return invoke, length


_date = (0, b"")


def _http_date() -> bytes:
    """The Date header's value, made once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    return _date[1]


def _answer(text: str) -> bytes:
    body = text.encode()
    return b"".join((b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ",
                     str(len(body)).encode(), b"\r\nDate: ", _http_date(), b"\r\n\r\n", body))


def max_connections(limits: ListenerLimits) -> int:
    """The configured cap, else the soft file-descriptor limit less the agent's reserve (16 to 1000)."""
    if limits.max_connections is not None:
        return limits.max_connections
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_DEFAULT
    return max(16, min(_MAX_DEFAULT, soft - _FD_RESERVE))


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's bookkeeping and the fast path around it."""

    def __init__(self, guard: ConnectionGuard, inner: Any, read: bytes = b"",
                 head_timeout: Optional[float] = None) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: Optional[asyncio.Transport] = None
        self.head_seen = False
        self.active_at = 0.0
        self._tail = b""
        self._deadline: Optional[asyncio.TimerHandle] = None
        self._read = read  # bytes an earlier owner read from this connection (ConnectionGuard.adopt)
        self._head_timeout = guard.limits.header_timeout if head_timeout is None else head_timeout
        # The fast path's state: None once the connection is aiohttp's (for good).
        self._fast: Optional[FastHandler] = guard.fast
        # what is read and not yet answered or handed over, from a request's first byte (a bytearray once
        # a request spans reads: a body of many reads is not copied whole for each)
        self._buf: Union[bytes, bytearray] = b""
        self._body_at = 0  # where the body starts in _buf, once a plain head is read
        self._end = 0  # where the request ends in _buf; 0: no complete head yet
        self._invoke = False  # the request read is an invoke (else telemetry)
        self._pending: Optional[asyncio.Future[None]] = None  # the submission the answer waits for
        self.answered_at: Optional[float] = None  # the last fast-path answer (the idle limit counts from it)
        self._made = False  # aiohttp's protocol has the connection (from the first request it serves)
        self._stopping = False  # the listener is stopping: close once the request in flight is answered

    # asyncio.Protocol, forwarded to aiohttp
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.active_at = loop.time()
        if not self.head_seen:
            self._deadline = loop.call_later(self._head_timeout, self._header_timeout)
        self.guard.opened(self)
        if self._fast is None:
            self._make_inner()
        # else aiohttp sees the connection only if it is handed one: its keep-alive timer, which starts with
        # the connection, would close one the fast path is using (the guard's sweep and stop close those).
        if self._read:
            # Before the transport reads anything more: aiohttp parses the request from its first byte.
            read, self._read = self._read, b""
            self.data_received(read)

    def data_received(self, data: bytes) -> None:
        self.active_at = asyncio.get_running_loop().time()
        if self._fast is not None:
            if not self._buf:
                self._buf = data
            elif isinstance(self._buf, bytearray):
                self._buf += data
            else:
                self._buf = bytearray(self._buf)
                self._buf += data
            if self._pending is None:
                self._serve()
            return
        self._to_inner(data)

    def _to_inner(self, data: bytes) -> None:
        if not self.head_seen:
            # The head ends with an empty line; it may arrive split anywhere, one byte at a time.
            window = self._tail + data
            if b"\r\n\r\n" in window or b"\n\n" in window:
                self.head_seen = True
                self._cancel_deadline()
            self._tail = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        if self._made:
            return self.inner.eof_received()  # type: ignore[no-any-return]
        return None  # as aiohttp's: the transport closes

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._cancel_deadline()
        self.guard.closed(self)
        self._fast = None
        self._buf = b""
        if self._made:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._made:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._made:
            self.inner.resume_writing()

    def _make_inner(self) -> None:
        self._made = True
        self.inner.connection_made(self.transport)

    # the fast path
    def _serve(self) -> None:
        """Answer the plain requests complete in ``_buf``, in order; hand the first other one to aiohttp."""
        fast = self._fast
        transport = self.transport
        while fast is not None and transport is not None and self._buf and not transport.is_closing():
            buf = self._buf
            if not self._end:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0 or head_end > _HEAD_MAX:
                    if len(buf) > _HEAD_MAX or buf[:6] != _PREFIX[:len(buf)] or b"\n\n" in buf:
                        self._hand_over()
                    return
                taken = plain_head(bytes(buf[:head_end + 2]), self.guard.max_body)
                if taken is None:
                    self._hand_over()
                    return
                self._invoke, length = taken
                if not self.head_seen:
                    self.head_seen = True
                    self._cancel_deadline()
                self._body_at = head_end + 4
                self._end = self._body_at + length
            if len(buf) < self._end:
                return  # busy: the body is on its way
            result = fast(self._invoke, bytes(buf[self._body_at:self._end]))
            if result is None:
                self._hand_over()  # aiohttp answers it (an error, or malformed events), nothing was submitted
                return
            text, pending = result
            self._buf = buf[self._end:]
            if pending is not None:
                # Answers stay in order: read nothing more until this one is written.
                self._pending = pending
                transport.pause_reading()
                pending.add_done_callback(functools.partial(self._answer_after, text=text))
                return
            self._answered(transport, text)

    def _answered(self, transport: asyncio.Transport, text: str) -> None:
        transport.write(_answer(text))
        self._end = 0
        if self._stopping:
            transport.close()
            return
        self.answered_at = asyncio.get_running_loop().time()
        self.guard.watch_idle()

    def _answer_after(self, pending: asyncio.Future[None], text: str) -> None:
        self._pending = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if pending.cancelled() or pending.exception() is not None:
            transport.close()  # not submitted (the agent is stopping): no answer says it was
            return
        self._answered(transport, text)
        transport.resume_reading()
        self._serve()

    def _hand_over(self) -> None:
        """The connection is aiohttp's from the current request on, for good: its keep-alive bookkeeping
        would otherwise close a connection the fast path is using."""
        buf, self._buf, self._fast, self._end = self._buf, b"", None, 0
        self._make_inner()
        self._to_inner(bytes(buf))

    # the guard's side
    @property
    def busy(self) -> bool:
        """A request is being read or answered (never closed to make room)."""
        return bool(self._end or self._pending is not None or getattr(self.inner, "_request_in_progress", False))

    @property
    def idle_since(self) -> Optional[float]:
        """When the fast path last answered on this connection, if it waits for the next request since."""
        if self._fast is None or self._end or self._pending is not None:
            return None
        return self.answered_at

    def stop(self) -> None:
        """The listener stops: a fast-path connection closes now, or once its request in flight is answered
        (aiohttp's shutdown closes the connections it was handed)."""
        if self._made or self.transport is None:
            return
        self._stopping = True
        if self._pending is None:
            self.transport.close()

    def close(self, reason: str) -> None:
        self.guard.count(reason)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _header_timeout(self) -> None:
        self._deadline = None
        if not self.head_seen:
            self.close("header_timeouts")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class ConnectionGuard:
    """Protocol factory for ``loop.create_server``: wraps each of aiohttp's protocols in a ``_Guarded``."""

    def __init__(self, factory: Callable[[], Any], limits: ListenerLimits, log: Any,
                 fast: Optional[FastHandler] = None, max_body: int = 0) -> None:
        self.factory = factory
        self.limits = limits
        self.fast = fast  # None: aiohttp serves every request
        self.max_body = max_body
        self._sweep: Optional[asyncio.TimerHandle] = None
        self.cap = max_connections(limits)
        self.log = log
        self.connections: Set[_Guarded] = set()
        self.stats: Dict[str, int] = {"header_timeouts": 0, "evicted": 0, "refused": 0}
        self._warned = False

    def __call__(self) -> _Guarded:
        return _Guarded(self, self.factory())

    async def adopt(self, sock: socket.socket, read: bytes, head_timeout: Optional[float]) -> None:
        """Serve a connection an earlier owner accepted (fgext._early), ``read`` being what it already read
        from it; ``head_timeout`` is what is left of its header deadline (None: its head was complete)."""
        loop = asyncio.get_running_loop()
        head_seen = head_timeout is None

        def protocol() -> _Guarded:
            guarded = _Guarded(self, self.factory(), read, head_timeout)
            guarded.head_seen = head_seen
            return guarded

        try:
            await loop.connect_accepted_socket(protocol, sock)
        except OSError:
            sock.close()  # the client left meanwhile

    def count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1
        if self.stats[reason] == 1 and reason == "header_timeouts":
            # Once: the count is in the stats; a line per closed connection would be the flood itself.
            self.log.warning("listener closed a connection that sent no complete request head in time",
                             header_timeout=self.limits.header_timeout)

    def opened(self, conn: _Guarded) -> None:
        self.connections.add(conn)
        if len(self.connections) <= self.cap:
            return
        idle = [c for c in self.connections if c is not conn and not c.busy and
                (c.transport is None or not c.transport.is_closing())]
        if idle:
            # Who has been quiet longest goes: a hostile peer holds a connection without using it,
            # the platform sends a request and is answered at once.
            min(idle, key=lambda c: (c.head_seen, c.active_at)).close("evicted")
        else:
            conn.close("refused")
        if not self._warned:
            self._warned = True
            self.log.warning("listener at its connection cap; closing the longest-quiet connections to "
                             "keep serving the platform", max_connections=self.cap)

    def closed(self, conn: _Guarded) -> None:
        self.connections.discard(conn)

    def stop(self) -> None:
        """No more fast-path requests; every connection aiohttp was not handed closes (:meth:`_Guarded.stop`)."""
        self.fast = None
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self.connections):
            conn.stop()

    def watch_idle(self) -> None:
        """Have the idle sweep run (a fast-path connection has answered and waits for its next request)."""
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self._sweep_interval(), self._close_idle)

    def _sweep_interval(self) -> float:
        # One timer for every connection, not one per request: a connection is closed between one and
        # one and a quarter idle limits after its last answer.
        return self.limits.idle_timeout / 4

    def _close_idle(self) -> None:
        self._sweep = None
        now = asyncio.get_running_loop().time()
        limit = self.limits.idle_timeout
        watching = False
        for conn in list(self.connections):
            since = conn.idle_since
            if since is None:
                continue
            if now - since >= limit:
                if conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.close()
            else:
                watching = True
        if watching:
            self.watch_idle()


class GuardedSockSite(web.SockSite):
    """``web.SockSite`` whose server creates guarded protocols and keeps the socket's own backlog."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.BaseRunner, sock: Any, guard: ConnectionGuard, backlog: int) -> None:
        super().__init__(runner, sock, backlog=backlog)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner, which stops it at cleanup
        loop = asyncio.get_event_loop()
        self._server = await loop.create_server(self._guard, sock=self._sock, backlog=self._backlog)

    async def stop(self) -> None:
        await super().stop()
        self._guard.stop()  # aiohttp's shutdown, which follows, closes only the connections it knows
