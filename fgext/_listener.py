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
"""

from __future__ import annotations

import asyncio
import resource
import socket
from typing import Any, Callable, Dict, Optional, Set

from aiohttp import web

from fgext._config import ListenerLimits

__all__ = ["ConnectionGuard", "GuardedSockSite", "max_connections"]

#: file descriptors kept free for the agent itself: interpreter, event loop, OTLP and webhook
#: connections, spool files, the platform's next connection
_FD_RESERVE = 64
_MAX_DEFAULT = 1000


def max_connections(limits: ListenerLimits) -> int:
    """The configured cap, else the soft file-descriptor limit less the agent's reserve (16 to 1000)."""
    if limits.max_connections is not None:
        return limits.max_connections
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_DEFAULT
    return max(16, min(_MAX_DEFAULT, soft - _FD_RESERVE))


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's bookkeeping around it."""

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

    # asyncio.Protocol, forwarded to aiohttp
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.active_at = loop.time()
        if not self.head_seen:
            self._deadline = loop.call_later(self._head_timeout, self._header_timeout)
        self.guard.opened(self)
        self.inner.connection_made(transport)
        if self._read:
            # Before the transport reads anything more: aiohttp parses the request from its first byte.
            read, self._read = self._read, b""
            self.data_received(read)

    def data_received(self, data: bytes) -> None:
        self.active_at = asyncio.get_running_loop().time()
        if not self.head_seen:
            # The head ends with an empty line; it may arrive split anywhere, one byte at a time.
            window = self._tail + data
            if b"\r\n\r\n" in window or b"\n\n" in window:
                self.head_seen = True
                self._cancel_deadline()
            self._tail = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._cancel_deadline()
        self.guard.closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # the guard's side
    @property
    def busy(self) -> bool:
        """A request is being handled (never closed to make room)."""
        return bool(getattr(self.inner, "_request_in_progress", False))

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

    def __init__(self, factory: Callable[[], Any], limits: ListenerLimits, log: Any) -> None:
        self.factory = factory
        self.limits = limits
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
