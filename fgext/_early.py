"""Answer the platform while aiohttp loads: a standard-library responder on the socket bound at cold start.

The platform may hold the function until its extensions answer the first ``POST /extension/invoke``, and
importing aiohttp, structlog and the plugins takes 200-340 ms. Right after registering, this thread
answers ``POST /extension/invoke`` and telemetry ``POST /`` with 200 once their bodies are read whole and
kept (bounded in bytes: past the budget it stops accepting, and new connections wait in the listen backlog
for aiohttp). When the agent's listener is ready it calls :meth:`EarlyResponder.stop`: the thread finishes
the connection it is reading (a request is never left half-read), stops accepting and returns what it
kept, in arrival order; the agent submits those to the pipeline before any request aiohttp serves.

Each answer closes its connection (``Connection: close``), so no connection outlives the hand-over.
Bodies are parsed by the agent, not here: a malformed one is answered 200 and counted and logged as
rejected when it is submitted. A body sent with ``Transfer-Encoding`` instead of ``Content-Length`` is
answered 411 (aiohttp would have read it).
"""

from __future__ import annotations

import select
import socket
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

__all__ = ["EarlyResponder"]

# What the responder holds at most (plus one body): beyond it, requests wait in the backlog for aiohttp.
DEFAULT_KEPT_BYTES = 8 * 1024 * 1024
_MAX_HEAD_BYTES = 16 * 1024
# A client that sends a request this slowly is cut off: the hand-over waits for the connection in hand.
_CONNECTION_S = 2.0
_POLL_S = 0.02
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large"}
_PATHS = {b"/extension/invoke": "invoke", b"/": "telemetry"}


class _Closed(Exception):
    """The client closed the connection or was too slow: nothing to answer."""


class EarlyResponder:
    """A thread answering invokes and telemetry on ``sock`` until :meth:`stop`; see the module's doc."""

    def __init__(self, sock: socket.socket, max_body_bytes: int, max_kept_bytes: int = DEFAULT_KEPT_BYTES) -> None:
        self._sock = sock
        self._max_body = max_body_bytes
        self._budget = max_kept_bytes
        self.kept: List[Tuple[str, int, bytes]] = []  # (kind, received_ns, body), in arrival order
        self.kept_bytes = 0
        self.answered = 0  # requests answered (any status)
        self.accepted = 0  # connections taken from the backlog
        self.first_answer: Optional[float] = None  # time.monotonic() of the first 200
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fgext-early-responder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> List[Tuple[str, int, bytes]]:
        """Finish the connection in hand, stop accepting and return what was kept (the socket is the
        caller's again, in blocking mode as it was)."""
        self._stopping.set()
        self._thread.join()
        return self.kept

    # ----------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        sock = self._sock
        sock.setblocking(False)
        try:
            while not self._stopping.is_set():
                if self.kept_bytes >= self._budget:
                    self._stopping.wait(_POLL_S)  # full: new connections wait in the backlog for aiohttp
                    continue
                readable, _, _ = select.select([sock], [], [], _POLL_S)
                if not readable:
                    continue
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                self.accepted += 1
                with conn:
                    self._serve(conn)
        except OSError:
            pass  # the listening socket is unusable: aiohttp will say so when it adopts it
        finally:
            sock.setblocking(True)

    def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        deadline = time.monotonic() + _CONNECTION_S
        buffer = b""
        try:
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                while head_end < 0:
                    if len(buffer) > _MAX_HEAD_BYTES:
                        self._answer(conn, 431, b'{"error": "request head too large"}')
                        return
                    buffer += self._recv(conn, deadline)
                    head_end = buffer.find(b"\r\n\r\n")
                head, buffer = buffer[:head_end], buffer[head_end + 4:]
                status, body_length, kind, expect = self._parse_head(head)
                if status != 200:
                    self._answer(conn, status, b'{"error": "%s"}' % _REASONS[status].encode())
                    return
                if body_length > self._max_body:
                    self._answer(conn, 413, b'{"error": "body of %d bytes exceeds the limit of %d bytes '
                                            b'(FGEXT_MAX_BODY_BYTES)"}' % (body_length, self._max_body))
                    return
                if expect and len(buffer) < body_length:
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                while len(buffer) < body_length:
                    buffer += self._recv(conn, deadline)
                body, buffer = buffer[:body_length], buffer[body_length:]
                self.kept.append((kind, time.time_ns(), body))
                self.kept_bytes += len(body)
                self._answer(conn, 200, b'{"status": "ok"}' if kind == "invoke" else b'{"status": "kept"}')
                if self.first_answer is None:
                    self.first_answer = time.monotonic()
                if not buffer.strip():
                    return  # one request per connection: the answer said Connection: close
        except _Closed:
            return
        except OSError:
            return

    @staticmethod
    def _recv(conn: socket.socket, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Closed()
        conn.settimeout(remaining)
        try:
            data = conn.recv(65536)
        except socket.timeout:
            raise _Closed() from None
        if not data:
            raise _Closed()
        return data

    @staticmethod
    def _parse_head(head: bytes) -> Tuple[int, int, str, bool]:
        """(status to answer, body length, kind, whether the client expects 100 Continue)."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, 0, "", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        length: Optional[int] = None
        expect = chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return 400, 0, "", False
            name = name.strip().lower()
            if name == b"content-length":
                if not value.strip().isdigit() or (length is not None and length != int(value)):
                    return 400, 0, "", False
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                expect = True
        kind = _PATHS.get(target)
        if kind is None:
            return 404, 0, "", False
        if method != b"POST":
            return 405, 0, "", False
        if chunked:
            return 411, 0, "", False
        return 200, length or 0, kind, expect

    def _answer(self, conn: socket.socket, status: int, body: bytes) -> None:
        self.answered += 1
        conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (status, _REASONS[status].encode(), len(body), body))
