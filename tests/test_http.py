"""The cold start's one-request HTTP client, against a real socket that answers byte for byte as told."""

from __future__ import annotations

import socket
import threading
from typing import Iterator, List, Tuple

import pytest

from fgext._http import ProtocolError, Redirected, post


class RawServer:
    """Accepts one connection per answer, records the request, writes the canned bytes, closes."""

    def __init__(self, answers: List[bytes]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests: List[bytes] = []
        self.thread = threading.Thread(target=self._serve, args=(answers,), daemon=True)
        self.thread.start()

    def _serve(self, answers: List[bytes]) -> None:
        for answer in answers:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                while len(body) < length:
                    body += conn.recv(4096)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(answer)

    def close(self) -> None:
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def server() -> Iterator:  # type: ignore[type-arg]
    made: List[RawServer] = []

    def make(*answers: bytes) -> RawServer:
        made.append(RawServer(list(answers)))
        return made[-1]

    yield make
    for item in made:
        item.close()


def call(port: int) -> Tuple[int, bytes]:
    return post("127.0.0.1", port, "/extension/register", b'{"a": 1}', {"X-Name": "extensionA.sh"}, timeout=5)


class TestPost:
    def test_request_shape(self, server) -> None:  # type: ignore[no-untyped-def]
        """The request line, Host, Content-Length, Connection: close and custom headers are all sent."""
        srv = server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        assert call(srv.port) == (200, b"{}")
        srv.close()
        head = srv.requests[0].decode()
        assert head.startswith("POST /extension/register HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{srv.port}\r\n" in head and "Content-Length: 8\r\n" in head
        assert "Connection: close\r\n" in head and "X-Name: extensionA.sh\r\n" in head
        assert head.endswith('\r\n\r\n{"a": 1}')

    def test_a_host_name_is_resolved(self, server) -> None:  # type: ignore[no-untyped-def]
        """A name (not only an IP address) reaches the server, and the Host header carries the name."""
        srv = server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        assert post("localhost", srv.port, "/extension/register", b"{}", {}, timeout=5) == (200, b"{}")
        srv.close()
        assert f"Host: localhost:{srv.port}\r\n" in srv.requests[0].decode()

    def test_chunked(self, server) -> None:  # type: ignore[no-untyped-def]
        """A chunked answer is reassembled."""
        srv = server(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b'4\r\n{"a"\r\n3;x=1\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n')
        assert call(srv.port) == (400, b'{"a": 1}')

    def test_body_to_eof(self, server) -> None:  # type: ignore[no-untyped-def]
        """Without Content-Length or chunking the body runs to the end of the connection."""
        srv = server(b"HTTP/1.0 503 Busy\r\n\r\nplatform busy")
        assert call(srv.port) == (503, b"platform busy")

    @pytest.mark.parametrize("answer", [
        b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"HTTP/1.1 200 OK\r\nNo-End",
        # read strictly, as the OTLP exporter reads its collector's answers (one parser: _http.parse_head)
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
    ], ids=["nothing", "truncated", "not-http", "bad-status", "bad-length", "bad-chunk", "no-header-end",
            "two-lengths", "space-before-colon", "no-colon", "four-digit-status", "signed-length"])
    def test_unreadable_answers_are_oserrors(self, server, answer: bytes) -> None:  # type: ignore[no-untyped-def]
        """Anything short of a readable answer is a ProtocolError, an OSError the retry loop handles."""
        srv = server(answer)
        with pytest.raises(ProtocolError):
            call(srv.port)

    def test_refused(self) -> None:
        """Nobody listening is the ordinary ConnectionRefusedError."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            call(port)

    def test_redirect_is_not_followed(self, server) -> None:  # type: ignore[no-untyped-def]
        """A 3xx raises Redirected with its Location; no second request is made anywhere."""
        srv = server(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://u:pw@127.0.0.1:1/x\r\n"
                     b"Content-Length: 0\r\n\r\n")
        with pytest.raises(Redirected) as caught:
            call(srv.port)
        assert caught.value.status == 307 and caught.value.location == "http://u:pw@127.0.0.1:1/x"
        assert len(srv.requests) == 1 and "pw" not in str(caught.value)
