"""Drill: the real agent process against peers that try to learn its secrets or starve it.

Each test starts the agent as the platform would (the launcher, a subprocess) with a recording
platform and loopback servers that answer as an attacker or a careless operator would: a collector
that quotes the token back, credentials in the endpoint URL, a malformed headers variable, a 307 to
a second server, connections that dribble headers or sit idle while file descriptors run out.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.agentproc import AgentProcess, ready
from tests.conftest import agent_python
from tests.platform import RecordingPlatform
from tests.test_otlp_agent import otlp_env
from tests.test_otlp_plugin import invocation

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]
TOKEN = "tok-SECRET-1234"


class Peer:
    """A loopback HTTP server in a thread: answers every POST with ``status``/``body``/``headers``."""

    def __init__(self, status: int = 200, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> None:
        self.requests: List[Tuple[str, Dict[str, str], bytes]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                peer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, data))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    started: List[Peer] = []

    def start(*args: object, **kwargs: object) -> Peer:
        peer = Peer(*args, **kwargs)  # type: ignore[arg-type]
        started.append(peer)
        return peer

    try:
        yield start
    finally:
        for peer in started:
            peer.stop()


def assert_nowhere(secret: str, *texts: str) -> None:
    """Neither ``secret`` nor any piece of it of 6 characters or more appears in ``texts``."""
    for text in texts:
        for size in range(6, len(secret) + 1):
            for first in range(len(secret) - size + 1):
                piece = secret[first:first + size]
                assert piece not in text, f"{piece!r} of a secret leaked:\n{text[-3000:]}"


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def send_invocation(agent: AgentProcess, port: int, rid: str, status: str = "success") -> None:
    answer = agent.post(port, "/", json.dumps(invocation(rid, 0, status=status)).encode())
    assert answer[0] == 200, answer


RID = "3da1f2dc-3222-475e-9205-e2e6c6318895"


class TestSecretsNeverPrint:
    def test_collector_quoting_the_token_back_is_masked(self, platform: RecordingPlatform, agents: Start,
                                                        peers: Callable[..., Peer], tmp_path: Path) -> None:
        """A 401 whose body quotes the token is logged with the token masked, whole and alone."""
        collector = peers(401, f"invalid token {TOKEN}".encode())
        agent = agents(otlp_env(platform, collector.port, tmp_path / "spool",
                                OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Bearer {TOKEN}"))
        port = ready(agent)
        send_invocation(agent, port, RID)
        agent.wait_log("otlp collector rejected a request for good; dropped")
        assert collector.requests and collector.requests[0][1]["authorization"] == f"Bearer {TOKEN}"
        agent.stop()
        assert "invalid token ***" in agent.stderr()
        assert_nowhere(TOKEN, agent.stderr(), agent.stdout())

    def test_endpoint_credentials_are_masked(self, platform: RecordingPlatform, agents: Start,
                                             peers: Callable[..., Peer], tmp_path: Path) -> None:
        """User-info and query values of the endpoint never print; the endpoint is shown without them."""
        collector = peers(401, b"invalid password PASSWORD-5678 or key KEY-abcdef99")
        env = otlp_env(platform, collector.port, tmp_path / "spool")
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = (f"http://user:PASSWORD-5678@127.0.0.1:{collector.port}"
                                              "?api_key=KEY-abcdef99")
        agent = agents(env)
        port = ready(agent)
        ready_line = agent.wait_log("otlp export ready")
        assert f"***@127.0.0.1:{collector.port}" in json.dumps(ready_line["endpoints"])
        send_invocation(agent, port, RID)
        assert wait_until(lambda: bool(collector.requests))
        agent.wait_log("otlp collector rejected a request for good; dropped")
        agent.stop()
        for secret in ("PASSWORD-5678", "KEY-abcdef99"):
            assert_nowhere(secret, agent.stderr(), agent.stdout())

    def test_malformed_headers_variable_is_masked(self, platform: RecordingPlatform, agents: Start,
                                                  peers: Callable[..., Peer], tmp_path: Path) -> None:
        """A headers variable with ':' for '=' is never printed with its value, by any library."""
        collector = peers(200)
        agent = agents(otlp_env(platform, collector.port, tmp_path / "spool",
                                OTEL_EXPORTER_OTLP_LOGS_HEADERS=f"Authorization:Bearer {TOKEN}"))
        # A malformed headers variable is a configuration error: the plugin does not start (one line says why).
        assert wait_until(lambda: "pipeline started" in agent.stderr() or agent.proc.poll() is not None)
        agent.stop()
        assert "OTEL_EXPORTER_OTLP_LOGS_HEADERS" in agent.stderr()
        assert_nowhere(TOKEN, agent.stderr(), agent.stdout())

    def test_refused_registration_quoting_the_token(self, platform: RecordingPlatform, agents: Start) -> None:
        """The one-line error of a refused registration is scrubbed too, though logging is not set up yet."""
        platform.register_statuses = [403]
        platform.error_body = {"errorInfo": {"errorType": "Forbidden", "errorMessage": f"bad token {TOKEN}"}}
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_WEBHOOK_TOKEN": TOKEN})
        assert agent.wait_exit() == 3
        assert "bad token ***" in agent.stderr()
        assert_nowhere(TOKEN, agent.stderr(), agent.stdout())


class TestNoRedirectFollowed:
    def test_registration_redirect_is_refused(self, agents: Start, peers: Callable[..., Peer],
                                              tmp_path: Path) -> None:
        """A 307 from the Extension API fails registration (exit 3); the other host receives nothing."""
        elsewhere = peers(200, b"{}")
        api = peers(307, b"", {"Location": f"http://admin:PASSWORD-5678@127.0.0.1:{elsewhere.port}/steal"})
        agent = agents({"EXTENSION_API_ADDR": f"127.0.0.1:{api.port}", "FGEXT_PLUGINS": "jsonl",
                        "FGEXT_JSONL_PATH": str(tmp_path / "out.jsonl")})
        assert agent.wait_exit() == 3
        assert len(api.requests) == 1 and not elsewhere.requests
        assert f"redirect to http://***@127.0.0.1:{elsewhere.port}/steal" in agent.stderr()
        assert_nowhere("PASSWORD-5678", agent.stderr(), agent.stdout())

    def test_webhook_redirect_is_not_followed(self, platform: RecordingPlatform, agents: Start,
                                              peers: Callable[..., Peer], tmp_path: Path) -> None:
        """A webhook URL answering 307 is a failed delivery, not retried; the other host receives nothing."""
        elsewhere = peers(200)
        hook = peers(307, b"", {"Location": f"http://127.0.0.1:{elsewhere.port}/?token=KEY-abcdef99"})
        config = tmp_path / "fgext.json"
        config.write_text(json.dumps({"plugins": {"webhook": {"headers": {"x-api-key": "KEY-hook-4321"}}}}))
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "webhook",
                        "FGEXT_WEBHOOK_URL": f"http://127.0.0.1:{hook.port}/alert", "FGEXT_CONFIG": str(config)})
        port = ready(agent)
        send_invocation(agent, port, RID, status="error")
        line = agent.wait_log("webhook alert not delivered")
        assert "307" in line["error"] and f"127.0.0.1:{elsewhere.port}/?token=***" in line["error"]
        assert len(hook.requests) == 1 and not elsewhere.requests
        agent.stop()
        assert_nowhere("KEY-abcdef99", agent.stderr(), agent.stdout())
        assert_nowhere("KEY-hook-4321", agent.stderr(), agent.stdout())


INVOKE = json.dumps({"traceId": RID, "invokedFunctionUrn": "sn:cn:yrk:1111:function:0@test@hello:latest"}).encode()


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the agent closed ``sock`` (EOF or reset); never blocks."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(4096) == b""
    except OSError:
        return True


def invoke_answered(port: int, timeout: float = 5.0) -> bool:
    """One invoke on a fresh connection, as the platform sends it; True when answered 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/extension/invoke", body=INVOKE, headers={"Content-Type": "application/json"})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class TestListenerProtection:
    def test_dribbled_headers_are_cut_off(self, platform: RecordingPlatform, agents: Start) -> None:
        """200 connections sending their head a byte at a time are closed after FGEXT_HEADER_TIMEOUT."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": "-",
                        "FGEXT_HEADER_TIMEOUT": "1"})
        port = ready(agent)
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
        try:
            for sock in socks:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            open_ = list(socks)
            deadline = time.monotonic() + 8
            while open_ and time.monotonic() < deadline:
                for sock in list(open_):
                    try:
                        sock.send(b"a")
                    except OSError:
                        open_.remove(sock)
                        continue
                    if closed_by_peer(sock):
                        open_.remove(sock)
                time.sleep(0.2)
            assert not open_, f"{len(open_)} of 200 dribbling connections still open"
            assert invoke_answered(port)
        finally:
            for sock in socks:
                sock.close()
        agent.wait_log("listener closed a connection that sent no complete request head in time")

    def test_idle_keep_alive_connection_is_closed(self, platform: RecordingPlatform, agents: Start) -> None:
        """A kept-alive connection with no next request is closed after FGEXT_IDLE_TIMEOUT."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": "-",
                        "FGEXT_IDLE_TIMEOUT": "1"})
        port = ready(agent)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /extension/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(INVOKE)).encode() + b"\r\n\r\n" + INVOKE)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            assert wait_until(lambda: closed_by_peer(sock), timeout=8)

    def test_idle_connections_at_the_fd_limit_do_not_starve_the_platform(
            self, platform: RecordingPlatform, agents: Start, tmp_path: Path) -> None:
        """With 256 file descriptors and 400 idle connections, invokes are answered and stderr stays small."""
        wrapper = tmp_path / "python-256fds"
        wrapper.write_text(f"#!/bin/sh\nulimit -n 256\nexec {agent_python()} \"$@\"\n")
        wrapper.chmod(0o755)
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": "-",
                        "FGEXT_PYTHON": str(wrapper)})
        port = ready(agent)
        assert re.search(r"Max open files\s+256\s", Path(f"/proc/{agent.pid}/limits").read_text())
        socks: List[socket.socket] = []
        try:
            for _ in range(400):
                try:
                    socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                except OSError:
                    break  # the agent no longer accepts: its backlog is full
            answered = sum(invoke_answered(port) for _ in range(5))
            time.sleep(1)  # what a flood would write, it writes in this second too
        finally:
            for sock in socks:
                sock.close()
        after = invoke_answered(port)
        agent.stop()
        stderr = agent.stderr()
        print(f"drill figure: {len(socks)} idle connections at 256 file descriptors: {answered} of 5 invokes "
              f"answered, stderr {len(stderr):,} bytes in {len(stderr.splitlines())} lines")
        assert len(socks) == 400 and answered == 5 and after, stderr[-2000:]
        assert len(stderr) < 20_000, stderr[-3000:]
        assert "Traceback" not in stderr

    def test_connection_cap_closes_the_longest_quiet(self, platform: RecordingPlatform, agents: Start) -> None:
        """Above FGEXT_MAX_CONNECTIONS the oldest quiet connections are closed; the platform is served."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": "-",
                        "FGEXT_MAX_CONNECTIONS": "20"})
        port = ready(agent)
        socks = []
        try:
            for _ in range(50):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            assert invoke_answered(port)
            assert wait_until(lambda: sum(closed_by_peer(s) for s in socks[:30]) == 30, timeout=10)
            assert not any(closed_by_peer(s) for s in socks[31:])
        finally:
            for sock in socks:
                sock.close()
        line = agent.wait_log("listener at its connection cap; closing the longest-quiet connections to keep "
                              "serving the platform")
        assert line["max_connections"] == 20

    def test_connections_that_sent_a_request_are_kept_longest(self, platform: RecordingPlatform,
                                                              agents: Start) -> None:
        """At the cap, connections that never sent a request go first, though newer than kept-alive ones."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": "-",
                        "FGEXT_MAX_CONNECTIONS": "20"})
        port = ready(agent)
        request = (b"POST /extension/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(INVOKE)).encode() + b"\r\n\r\n" + INVOKE)
        used: List[socket.socket] = []
        silent: List[socket.socket] = []
        try:
            for _ in range(10):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(request)
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                used.append(sock)
            for _ in range(20):
                silent.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            assert wait_until(lambda: sum(closed_by_peer(s) for s in silent[:10]) == 10, timeout=10)
            assert not any(closed_by_peer(s) for s in used + silent[10:])
        finally:
            for sock in used + silent:
                sock.close()

    @pytest.mark.parametrize("name, value", [("FGEXT_HEADER_TIMEOUT", "soon"), ("FGEXT_IDLE_TIMEOUT", "0"),
                                             ("FGEXT_MAX_CONNECTIONS", "1")])
    def test_bad_limit_is_a_configuration_error(self, platform: RecordingPlatform, agents: Start,
                                                 name: str, value: str) -> None:
        """A bad listener limit exits 2 with one line naming it, before registering."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, name: value})
        assert agent.wait_exit() == 2
        assert name in agent.stderr() and "Traceback" not in agent.stderr()
        assert platform.requests == []
