"""Answer the platform while aiohttp loads: a standard-library responder on the socket bound at cold start.

The platform may hold the function until its extensions answer the first ``POST /extension/invoke``, and
importing aiohttp, structlog and the plugins takes 200-340 ms. Right after registering, this thread
answers ``POST /extension/invoke`` and telemetry ``POST /`` with 200 once their bodies are read whole and
kept, with ``Content-Length`` or ``Transfer-Encoding: chunked`` (decoded, bounded by
``FGEXT_MAX_BODY_BYTES``). One thread serves many connections at once (a selector), with the listener's
limits:

- a connection must deliver a complete request head within ``FGEXT_HEADER_TIMEOUT`` seconds of being
  accepted, or it is closed, so a silent client holds nothing for long, and never delays another;
- at most ``MAX_CONNECTIONS`` connections are open; above that the longest-quiet one without a complete
  head is closed to make room, and when every one has a request under way new connections wait in
  the listen backlog;
- what it keeps (bodies read whole, and bytes of requests under way) is bounded by a budget (8 MiB): at
  the budget it stops reading and accepting, and everything waits for the listener.

When the agent's listener is ready it calls :meth:`EarlyResponder.stop`, which returns at once (it never
waits for a client): the thread stops, and hands back what it kept, in arrival order, and the
connections it had not finished (:attr:`EarlyResponder.handed`: each socket with the bytes read from it
so far), which the listener adopts and serves from their first byte (``ConnectionGuard.adopt``). So a
request half read at hand-over is finished by aiohttp, however slow its client, and nothing answered
200 is ever lost. A request it does not keep itself but aiohttp serves (a function's OTLP export on
``/v1/...``, a compressed body) is handed over the same way, unanswered.

Each answer closes its connection (``Connection: close``), so no answered connection outlives the
hand-over. Bodies are parsed by the agent, not here: a malformed one is answered 200 and counted and
logged as rejected when it is submitted.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

__all__ = ["DEFAULT_KEPT_BYTES", "MAX_CONNECTIONS", "EarlyResponder"]

# What the responder holds at most (kept bodies plus bytes of requests under way, give or take one read):
# beyond it, requests wait for aiohttp.
DEFAULT_KEPT_BYTES = 8 * 1024 * 1024
MAX_CONNECTIONS = 64
_MAX_HEAD_BYTES = 16 * 1024
_MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions
_READ_BYTES = 65536
_POLL_S = 0.02
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 431: "Request Header Fields Too Large"}
_PATHS = {b"/extension/invoke": "invoke", b"/": "telemetry"}
# Served by the listener's other routes (the function's OTLP receiver): left for it, unanswered.
_LISTENER_PATHS = (b"/v1/traces", b"/v1/logs", b"/v1/metrics")
_HEAD, _BODY, _PARKED = 0, 1, 2


class _Refuse(Exception):
    """The request cannot be kept: answer ``status`` and close."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message or _REASONS[status]


class _Chunked:
    """An incremental ``Transfer-Encoding: chunked`` decoder over a growing buffer, bounded in every part."""

    def __init__(self, start: int, max_body: int) -> None:
        self.position = start  # next undecoded byte of the buffer
        self.body = bytearray()
        self._max_body = max_body
        self._remaining = -1  # data bytes left in the current chunk; -1: a size line is next
        self._trailers = False
        self._trailer_bytes = 0

    def feed(self, buffer: bytearray) -> Optional[int]:
        """Decode what ``buffer`` holds; the end of the message once complete, else None (more needed)."""
        while True:
            if self._remaining > 0:
                take = min(self._remaining, len(buffer) - self.position)
                self.body += buffer[self.position:self.position + take]
                self.position += take
                self._remaining -= take
                if self._remaining:
                    return None
            line_end = buffer.find(b"\r\n", self.position)
            if line_end < 0:
                if len(buffer) - self.position > (_MAX_HEAD_BYTES if self._trailers else _MAX_CHUNK_LINE):
                    raise _Refuse(431 if self._trailers else 400, "malformed chunked body")
                return None
            line = bytes(buffer[self.position:line_end])
            self.position = line_end + 2
            if self._trailers:
                if not line:
                    return self.position
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > _MAX_HEAD_BYTES:
                    raise _Refuse(431, "chunked trailers too large")
                continue
            if self._remaining == 0:  # the CRLF that ends a chunk's data
                if line:
                    raise _Refuse(400, "malformed chunked body")
                self._remaining = -1
                continue
            size = line.split(b";", 1)[0].strip()
            if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
                raise _Refuse(400, "malformed chunk size")
            length = int(size, 16)
            if len(self.body) + length > self._max_body:
                raise _Refuse(413, f"body exceeds the limit of {self._max_body} bytes (FGEXT_MAX_BODY_BYTES)")
            if length == 0:
                self._trailers = True
            else:
                self._remaining = length


class _Connection:
    """One accepted connection: the bytes of the request under way and where its parsing stands."""

    __slots__ = ("active_at", "body_start", "chunked", "head_deadline", "kind", "length", "raw", "received_ns",
                 "sock", "state")

    def __init__(self, sock: socket.socket, now: float, header_timeout: float) -> None:
        self.sock = sock
        self.raw = bytearray()  # every byte of the request under way, from its first
        self.state = _HEAD
        self.head_deadline = now + header_timeout
        self.active_at = now
        self.kind = ""
        self.length = 0
        self.body_start = 0
        self.chunked: Optional[_Chunked] = None
        self.received_ns = 0


class EarlyResponder:
    """A thread answering invokes and telemetry on ``sock`` until :meth:`stop`; see the module's doc."""

    def __init__(self, sock: socket.socket, max_body_bytes: int, max_kept_bytes: int = DEFAULT_KEPT_BYTES,
                 header_timeout: float = 10.0) -> None:
        self._sock = sock
        self._max_body = max_body_bytes
        self._budget = max_kept_bytes
        self._header_timeout = header_timeout
        self.kept: List[Tuple[str, int, bytes]] = []  # (kind, received_ns, body), in arrival order
        self.kept_bytes = 0
        #: (socket, bytes read from it so far, seconds left for its head or None once read) for the listener
        self.handed: List[Tuple[socket.socket, bytes, Optional[float]]] = []
        self.answered = 0  # requests answered (any status)
        self.accepted = 0  # connections taken from the backlog
        self.header_timeouts = 0  # connections closed for want of a complete head in time
        self.evicted = 0  # connections closed to make room (no complete head, quiet longest)
        self.first_answer: Optional[float] = None  # time.monotonic() of the first 200
        self._connections: Dict[int, _Connection] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fgext-early-responder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> List[Tuple[str, int, bytes]]:
        """Stop at once and return what was kept; the connections under way are in :attr:`handed` (the
        listening socket is the caller's again, in blocking mode as it was)."""
        self._stopping.set()
        self._thread.join()
        return self.kept

    # ----------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        sock = self._sock
        sock.setblocking(False)
        selector = selectors.DefaultSelector()
        try:
            selector.register(sock, selectors.EVENT_READ)
            listening = True
            while not self._stopping.is_set():
                now = time.monotonic()
                self._expire_heads(selector, now)
                full = self.kept_bytes + self._buffered() >= self._budget
                # At the budget nothing more is read or accepted: it all waits for the listener.
                want_listen = not full and self._may_accept()
                if want_listen != listening:
                    if want_listen:
                        selector.register(sock, selectors.EVENT_READ)
                    else:
                        selector.unregister(sock)
                    listening = want_listen
                if full:
                    self._stopping.wait(_POLL_S)
                    continue
                for key, _ in selector.select(_POLL_S):
                    if key.fileobj is sock:
                        self._accept(selector)
                    else:
                        self._read(selector, key.data)
        except OSError:
            pass  # the listening socket is unusable: aiohttp will say so when it adopts it
        finally:
            self._hand_over(selector)
            selector.close()
            sock.setblocking(True)

    def _buffered(self) -> int:
        return sum(len(c.raw) for c in self._connections.values())

    def _may_accept(self) -> bool:
        """Below the cap, or at it with a connection that can make room (no complete head yet)."""
        return len(self._connections) < MAX_CONNECTIONS or any(c.state == _HEAD for c in self._connections.values())

    def _expire_heads(self, selector: selectors.BaseSelector, now: float) -> None:
        for conn in [c for c in self._connections.values() if c.state == _HEAD and c.head_deadline <= now]:
            self.header_timeouts += 1
            self._close(selector, conn)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            sock, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        idle = [c for c in self._connections.values() if c.state == _HEAD]
        if len(self._connections) >= MAX_CONNECTIONS and idle:
            # Who has been quiet longest without a complete head goes: a hostile peer holds a connection
            # without using it, the platform sends its request at once (as fgext._listener decides). With
            # none (a read just completed a head), this one is taken over the cap and accepting pauses.
            self.evicted += 1
            self._close(selector, min(idle, key=lambda c: c.active_at))
        self.accepted += 1
        sock.setblocking(False)
        conn = _Connection(sock, time.monotonic(), self._header_timeout)
        self._connections[sock.fileno()] = conn
        selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(selector, conn)  # the client left before an answer: it knows nothing was kept
            return
        conn.active_at = time.monotonic()
        conn.raw += data
        try:
            self._advance(selector, conn)
        except _Refuse as refusal:
            with contextlib.suppress(OSError):  # a client that left is owed no answer
                self._answer(conn, refusal.status, b'{"error": "%s"}' % refusal.message.encode())
            self._close(selector, conn)
        except OSError:  # the client left before its answer (a body kept is still delivered)
            self._close(selector, conn)

    def _advance(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        """Parse what ``conn`` holds: answer every request read whole, park one to leave to the listener."""
        while True:
            if conn.state == _HEAD:
                head_end = conn.raw.find(b"\r\n\r\n")
                if head_end < 0:
                    if len(conn.raw) > _MAX_HEAD_BYTES:
                        raise _Refuse(431, "request head too large")
                    return
                if head_end > _MAX_HEAD_BYTES:
                    raise _Refuse(431, "request head too large")
                if not self._begin(conn, bytes(conn.raw[:head_end]), head_end + 4):
                    conn.state = _PARKED  # for the listener, with its bytes: read no more of it
                    selector.unregister(conn.sock)
                    return
            if conn.chunked is not None:
                end = conn.chunked.feed(conn.raw)
                if end is None:
                    return
                body = bytes(conn.chunked.body)
            else:
                end = conn.body_start + conn.length
                if len(conn.raw) < end:
                    return
                body = bytes(conn.raw[conn.body_start:end])
            self.kept.append((conn.kind, conn.received_ns, body))
            self.kept_bytes += len(body)
            self._answer(conn, 200, b'{"status": "ok"}' if conn.kind == "invoke" else b'{"status": "kept"}')
            if self.first_answer is None:
                self.first_answer = time.monotonic()
            del conn.raw[:end]
            conn.state, conn.chunked = _HEAD, None
            if not conn.raw.strip():
                self._close(selector, conn)  # one request per connection: the answer said Connection: close
                return

    def _begin(self, conn: _Connection, head: bytes, body_start: int) -> bool:
        """Read a request head into ``conn``; False if the listener is to serve it. Raises _Refuse."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _Refuse(400)
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        length: Optional[int] = None
        expect = chunked = encoded = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _Refuse(400)
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise _Refuse(400)
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise _Refuse(400, "unsupported Transfer-Encoding")
                chunked = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
            elif name == b"content-encoding" and value.lower() not in (b"", b"identity"):
                encoded = True
        if chunked and length is not None:
            raise _Refuse(400, "both Content-Length and Transfer-Encoding")
        kind = _PATHS.get(target)
        if kind is None:
            if target in _LISTENER_PATHS:
                return False
            raise _Refuse(404)
        if method != b"POST":
            raise _Refuse(405)
        if length is not None and length > self._max_body:
            raise _Refuse(413, f"body of {length} bytes exceeds the limit of {self._max_body} bytes "
                               f"(FGEXT_MAX_BODY_BYTES)")
        if encoded:
            return False  # the listener bounds its decompression (fgext._agent)
        conn.state = _BODY
        conn.kind = kind
        conn.received_ns = time.time_ns()
        conn.body_start = body_start
        conn.length = length or 0
        conn.chunked = _Chunked(body_start, self._max_body) if chunked else None
        if expect and len(conn.raw) == body_start:
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _answer(self, conn: _Connection, status: int, body: bytes) -> None:
        self.answered += 1
        # Small enough for the socket's send buffer: a non-blocking send takes it whole.
        conn.sock.setblocking(True)
        conn.sock.settimeout(1.0)
        try:
            conn.sock.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n%s" % (status, _REASONS[status].encode(), len(body), body))
        finally:
            conn.sock.setblocking(False)

    def _close(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        self._connections.pop(conn.sock.fileno(), None)
        if conn.state != _PARKED:
            selector.unregister(conn.sock)
        conn.sock.close()

    def _hand_over(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn in self._connections.values():
            if conn.state != _PARKED:
                selector.unregister(conn.sock)
            conn.sock.setblocking(True)
            self.handed.append((conn.sock, bytes(conn.raw),
                                max(0.0, conn.head_deadline - now) if conn.state == _HEAD else None))
        self._connections.clear()
