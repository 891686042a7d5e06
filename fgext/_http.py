"""One HTTP/1.1 POST over a plain socket: what the cold start needs to register and subscribe.

Why not ``http.client``: importing it costs about 40 ms on the sandbox's fraction of a core (it pulls
in ``email`` for header parsing and ``ssl`` for HTTPS), which alone is most of the 60 ms budget from
exec to registration. The Extension API is plain HTTP on the sandbox's own network, one request per
connection, so this module speaks exactly that: a request with ``Content-Length`` and
``Connection: close``, and a response read to its end (by ``Content-Length``, chunked, or to EOF).
Everything after registration uses aiohttp.

A redirect is never followed: the request carries the extension's name and address, and the only
peer entitled to them is the Extension API the platform named. A 3xx raises :class:`Redirected`.
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

__all__ = ["ProtocolError", "Redirected", "parse_head", "post"]

_MAX_RESPONSE = 1024 * 1024


class ProtocolError(OSError):
    """The peer's answer was not HTTP/1.x this client (or the OTLP exporter's) can read; treated like a
    connection error."""


class Redirected(Exception):
    """The peer answered 3xx; the redirect was not followed. ``location`` may hold credentials."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(f"HTTP {status} redirect (not followed)")
        self.status = status
        self.location = location


def _dechunk(data: bytes) -> bytes:
    body = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            raise ProtocolError("truncated chunked body")
        try:
            size = int(data[position:line_end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError("malformed chunk size") from None
        position = line_end + 2
        if size == 0:
            return bytes(body)
        if position + size > len(data):
            raise ProtocolError("truncated chunked body")
        body += data[position:position + size]
        position += size + 2


def post(host: str, port: int, path: str, body: bytes, headers: Dict[str, str],
         timeout: float) -> Tuple[int, bytes]:
    """POST ``body`` to ``http://host:port/path``; return the status and the body of the answer.

    Raises ``OSError`` (``ProtocolError`` included) for anything short of a readable answer, and
    ``Redirected`` for a 3xx answer.
    """
    host_header = f"[{host}]" if ":" in host else host
    lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}:{port}", f"Content-Length: {len(body)}",
             "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    # An ASCII host as bytes: for a str, getaddrinfo loads the idna codec (and stringprep, ~100 KiB kept for
    # the process's life) even for an IP address.
    address = host.encode("ascii") if host.isascii() else host
    with socket.create_connection((address, port), timeout=timeout) as sock:  # type: ignore[arg-type]
        sock.sendall(request)
        chunks = []
        received = 0
        while received <= _MAX_RESPONSE:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            data = b"".join(chunks)
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = _content_length(data[:head_end])
                if length is not None and len(data) >= head_end + 4 + length:
                    break
    data = b"".join(chunks)
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        raise ProtocolError("no complete HTTP response header" if data else "connection closed without an answer")
    status, _, fields = parse_head(data[:head_end])
    rest = data[head_end + 4:]
    if 300 <= status < 400:
        raise Redirected(status, fields.get("location", ""))
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, _dechunk(rest)
    if "content-length" in fields:
        length = _length(fields["content-length"])
        if len(rest) < length:
            raise ProtocolError("connection closed before the whole body arrived")
        return status, rest[:length]
    return status, rest


def _content_length(head: bytes) -> Optional[int]:
    """The Content-Length of a header block still being read (to know when the answer is whole)."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.lower() == b"content-length":
            return _length(value.strip().decode("latin-1"))
    return None


def _length(text: str) -> int:
    if not text.isdigit():
        raise ProtocolError("malformed Content-Length in the answer")
    return int(text)


def parse_head(head: bytes) -> Tuple[int, bool, Dict[str, str]]:
    """An answer's status line and header block (without the blank line that ends them) -> the status,
    whether the connection may carry the next request (HTTP/1.1 without ``Connection: close``), and the
    fields by lower-case name. Strict, for this client and the OTLP exporter's (fgext.otlp._http) alike: a
    header line that is not ``name: value``, whitespace before the colon, or two different Content-Lengths
    are a :class:`ProtocolError` - the answer could be read more than one way."""
    text = head.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    fields: Dict[str, str] = {}
    if rest:
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError("malformed header line in the answer")
            key = name.lower()
            value = value.strip()
            if key == "content-length" and fields.get(key, value) != value:
                raise ProtocolError("conflicting Content-Length in the answer")
            fields[key] = value
    connection = fields.get("connection")
    keep = parts[0] == "HTTP/1.1" and (
        connection is None or "close" not in {token.strip().lower() for token in connection.split(",")})
    return int(parts[1]), keep, fields
