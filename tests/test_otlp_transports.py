"""Tests for fgext.otlp._transports: one attempt over HTTP or gRPC, awake-time timeouts, no redirects, TLS.

Real sockets on 127.0.0.1 throughout: an aiohttp server (HTTPS with a throwaway CA made by the
``openssl`` command for the TLS cases) that records what it receives.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from aiohttp import web

from fgext._errors import ConfigError
from fgext.otlp._config import load_config
from fgext.otlp._transports import (
    AwakeTimer,
    KeptTimer,
    Outcome,
    Transport,
    build_transports,
    safe_location,
    wait_awake,
)
from tests.test_otlp_http import OK, RawServer, Say, until
from tests.test_otlp_plugin import free_port


class Server:
    """An OTLP/HTTP endpoint on a real loopback socket: answers ``status`` (with ``headers``), records."""

    def __init__(self, status: int = 200, headers: Optional[Dict[str, str]] = None,
                 ssl_context: Optional[ssl.SSLContext] = None, delay: float = 0.0) -> None:
        self.status = status
        self.headers = headers or {}
        self.ssl_context = ssl_context
        self.delay = delay
        self.received: List[Tuple[str, Dict[str, str], bytes]] = []
        self._runner: Optional[web.AppRunner] = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, headers=self.headers)

    async def __aenter__(self) -> Server:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def one_send(environ: Dict[str, str], data: bytes = b"\x0a\x00") -> Outcome:
    transports, close = build_transports(load_config(environ))
    try:
        return await transports["traces"].send(data)
    finally:
        await close()


def only_traces(endpoint: str, **extra: str) -> Dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, "OTEL_LOGS_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none", **extra}


class TestHttp:
    def test_accepted(self) -> None:
        """A 200 is an accepted request; the body arrives as given, with the configured headers."""

        async def go() -> Tuple[Outcome, Server]:
            async with Server() as server:
                url = f"http://127.0.0.1:{server.port}/v1/traces"
                return await one_send(only_traces(url, OTEL_EXPORTER_OTLP_HEADERS="x-team=a%20b")), server

        outcome, server = asyncio.run(go())
        assert outcome.ok
        assert server.received[0][0] == "/v1/traces" and server.received[0][2] == b"\x0a\x00"
        assert server.received[0][1]["x-team"] == "a b"

    @pytest.mark.parametrize("status,retryable", [(429, True), (503, True), (500, False), (400, False)])
    def test_failure_answers_follow_the_retry_policy(self, status: int, retryable: bool) -> None:
        """A failure's retryability is fgext._retry's (429 and 503 yes; 500 and 400 no), with Retry-After."""

        async def go() -> Outcome:
            async with Server(status, {"Retry-After": "7"}) as server:
                return await one_send(only_traces(f"http://127.0.0.1:{server.port}/v1/traces"))

        outcome = asyncio.run(go())
        assert not outcome.ok and outcome.retryable is retryable and outcome.retry_after == 7.0

    def test_a_redirect_is_refused_and_not_followed(self) -> None:
        """A 307 to another loopback server is a final rejection; the other server receives nothing, and the
        outcome names the target without its user-info or query."""

        async def go() -> Tuple[Outcome, Server]:
            async with Server() as other:
                target = f"http://u:PASSWORD@127.0.0.1:{other.port}/v1/traces?api_key=K"
                async with Server(307, {"Location": target}) as server:
                    return await one_send(only_traces(f"http://127.0.0.1:{server.port}/v1/traces")), other

        outcome, other = asyncio.run(go())
        assert not outcome.ok and not outcome.retryable
        assert other.received == []
        assert f"127.0.0.1:{other.port}/v1/traces" in outcome.detail
        assert "PASSWORD" not in outcome.detail and "api_key" not in outcome.detail

    def test_timeout_is_retryable(self) -> None:
        """No answer within OTEL_EXPORTER_OTLP_TIMEOUT is a retryable failure."""

        async def go() -> Outcome:
            async with Server(delay=5) as server:
                return await one_send(only_traces(f"http://127.0.0.1:{server.port}/v1/traces",
                                                  OTEL_EXPORTER_OTLP_TIMEOUT="300"))

        outcome = asyncio.run(go())
        assert not outcome.ok and outcome.retryable and "no answer within 0.3 s" in outcome.detail


    def test_a_timeout_after_prompt_answers_on_the_kept_timer(self) -> None:
        """Sends on one transport share a kept timer: after prompt answers, a send with no answer still gives up
        after OTEL_EXPORTER_OTLP_TIMEOUT, and the next prompt answer is accepted again."""

        async def go() -> List[Outcome]:
            async with Server() as server:
                transports, close = build_transports(load_config(only_traces(
                    f"http://127.0.0.1:{server.port}/v1/traces", OTEL_EXPORTER_OTLP_TIMEOUT="300")))
                send = transports["traces"].send
                try:
                    outcomes = [await send(b"\x0a\x00"), await send(b"\x0a\x00")]
                    server.delay = 5
                    outcomes.append(await send(b"\x0a\x00"))
                    server.delay = 0
                    outcomes.append(await send(b"\x0a\x00"))
                    return outcomes
                finally:
                    await close()

        outcomes = asyncio.run(go())
        assert [outcome.ok for outcome in outcomes] == [True, True, False, True]
        assert outcomes[2].retryable and "no answer within 0.3 s" in outcomes[2].detail


TOKEN = "tok-SECRET-9876"


def raw_send(answers: List[Say], environ: Callable[[int], Dict[str, str]], sends: int = 1,
             data: bytes = b"\x0a\x00") -> Tuple[List[Outcome], RawServer, Dict[str, Transport]]:
    """``sends`` exports of ``data`` over the traces transport to a raw server scripted with ``answers``."""

    async def go() -> Tuple[List[Outcome], RawServer, Dict[str, Transport]]:
        async with RawServer(*answers) as server:
            transports, close = build_transports(load_config(environ(server.port)))
            try:
                return [await transports["traces"].send(data) for _ in range(sends)], server, transports
            finally:
                await close()

    return asyncio.run(go())


def header_names(head: bytes) -> List[str]:
    return [line.split(b":", 1)[0].decode().lower() for line in head.split(b"\r\n")[1:] if line]


class TestHttpClient:
    def test_the_request_head_exactly(self) -> None:
        """The request carries Host, User-Agent, the user's headers, Content-Type, Content-Encoding (gzip on)
        and Content-Length, and nothing else; the body is the gzip of the data."""
        outcomes, server, _ = raw_send([Say(OK)], lambda port: only_traces(
            f"http://127.0.0.1:{port}/v1/traces", OTEL_EXPORTER_OTLP_HEADERS="x-team=a%20b,Api-Key=K1",
            OTEL_EXPORTER_OTLP_COMPRESSION="gzip"), data=b"\x0a\x00" * 100)
        assert outcomes[0].ok
        _, head, body = server.requests[0]
        assert head.startswith(b"POST /v1/traces HTTP/1.1\r\n")
        assert sorted(header_names(head)) == sorted(["host", "user-agent", "x-team", "api-key", "content-type",
                                                     "content-encoding", "content-length"])
        assert f"\r\nHost: 127.0.0.1:{server.port}\r\n".encode() in head
        assert b"\r\nx-team: a b\r\n" in head and b"\r\napi-key: K1\r\n" in head
        assert b"\r\nContent-Type: application/x-protobuf\r\n" in head
        assert b"\r\nContent-Encoding: gzip\r\n" in head
        assert gzip.decompress(body) == b"\x0a\x00" * 100
        assert f"\r\nContent-Length: {len(body)}\r\n".encode() in head

    def test_user_info_in_the_endpoint_is_sent_as_basic_auth(self) -> None:
        """``http://user:pass@host`` sends ``Authorization: Basic`` (percent-decoded) and neither part in the
        request line or Host; no Content-Encoding without compression."""
        outcomes, server, _ = raw_send([Say(OK)], lambda port: only_traces(
            f"http://me:p%40ss@127.0.0.1:{port}/v1/traces?tenant=1"))
        assert outcomes[0].ok
        head = server.requests[0][1]
        assert head.startswith(b"POST /v1/traces?tenant=1 HTTP/1.1\r\n")
        assert b"\r\nAuthorization: Basic " + base64.b64encode(b"me:p@ss") + b"\r\n" in head
        assert b"me" not in head.split(b"\r\n")[0] and "content-encoding" not in header_names(head)

    def test_signals_to_one_endpoint_share_one_kept_connection(self) -> None:
        """Traces, logs and metrics to one collector, twice each, travel over one connection."""

        async def go() -> RawServer:
            async with RawServer(Say(OK)) as server:
                transports, close = build_transports(load_config(
                    {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.port}"}))
                try:
                    for _ in range(2):
                        for signal in ("traces", "logs", "metrics"):
                            assert (await transports[signal].send(b"")).ok
                finally:
                    await close()
                await until(lambda: server.eofs == 1)  # close() ended it
                return server

        server = asyncio.run(go())
        assert server.connections == 1
        assert [head.split(b" ")[1] for _, head, _ in server.requests] == [b"/v1/traces", b"/v1/logs",
                                                                           b"/v1/metrics"] * 2

    def test_a_timed_out_connection_is_not_reused(self) -> None:
        """A request without an answer within the timeout fails retryably; its connection is closed and the
        next request opens another."""
        outcomes, server, _ = raw_send([Say(hold=True), Say(OK)], lambda port: only_traces(
            f"http://127.0.0.1:{port}/v1/traces", OTEL_EXPORTER_OTLP_TIMEOUT="300"), sends=2)
        assert not outcomes[0].ok and outcomes[0].retryable and "no answer within 0.3 s" in outcomes[0].detail
        assert outcomes[1].ok
        assert [number for number, _, _ in server.requests] == [1, 2]

    def test_a_cancel_of_the_sender_propagates(self) -> None:
        """Cancelling the task that sends (the shipper closing) cancels it, not a timeout outcome, and closes
        the connection."""

        async def go() -> Tuple[bool, int]:
            async with RawServer(Say(hold=True)) as server:
                transports, close = build_transports(load_config(only_traces(f"http://127.0.0.1:{server.port}/v1/traces")))
                try:
                    sending = asyncio.ensure_future(transports["traces"].send(b"\x0a\x00"))
                    await until(lambda: len(server.requests) == 1)
                    sending.cancel()
                    await asyncio.wait({sending})
                    await until(lambda: server.eofs == 1)  # the client closed the connection
                    return sending.cancelled(), transports["traces"]._connection.connects  # type: ignore
                finally:
                    await close()

        cancelled, connects = asyncio.run(go())
        assert cancelled and connects == 1

    def test_an_unreadable_answer_is_a_retryable_failure(self) -> None:
        """An answer that is not HTTP fails the attempt retryably, like a broken connection."""
        outcomes, _, _ = raw_send([Say(b"garbage\r\n\r\n", close=True)], lambda port: only_traces(
            f"http://127.0.0.1:{port}/v1/traces"))
        assert not outcomes[0].ok and outcomes[0].retryable and "ProtocolError" in outcomes[0].detail

    def test_redirect_location_from_a_raw_answer(self) -> None:
        """A 308 with a Location is refused, its target shown without credentials or query."""
        answer = (b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://u:PASSWORD@elsewhere:4318/v1/traces"
                  b"?key=K\r\nContent-Length: 0\r\n\r\n")
        outcomes, server, _ = raw_send([Say(answer)], lambda port: only_traces(f"http://127.0.0.1:{port}/v1/traces"),
                                       sends=2)
        assert not outcomes[0].ok and not outcomes[0].retryable
        assert outcomes[0].detail == "HTTP 308: redirect to https://elsewhere:4318/v1/traces refused (not followed)"
        assert len(server.requests) == 2  # each send asked once: nothing followed, nothing resent

    @pytest.mark.parametrize("answer", [
        Say(close=True), Say(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", close=True),
        Say(b"HTTP/9 200\r\n\r\n", close=True), Say(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000),
        Say(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"),
        Say(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v2\r\nContent-Length: 0\r\n\r\n"),
        Say(hold=True),
    ], ids=["closed", "cut", "not-http", "huge-head", "401", "307", "timeout"])
    def test_header_values_never_appear_in_an_outcome(self, answer: Say) -> None:
        """Whatever goes wrong, the outcome's text holds no piece of a header value or of the URL's
        password."""
        outcomes, server, _ = raw_send([answer], lambda port: only_traces(
            f"http://me:PASSWORD-5678@127.0.0.1:{port}/v1/traces", OTEL_EXPORTER_OTLP_TIMEOUT="300",
            OTEL_EXPORTER_OTLP_TRACES_HEADERS=f"x-api-key={TOKEN}"))
        assert server.requests and TOKEN.encode() in server.requests[0][1]
        assert not outcomes[0].ok and outcomes[0].detail
        for secret in (TOKEN, "PASSWORD-5678", base64.b64encode(b"me:PASSWORD-5678").decode()):
            for size in range(6, len(secret) + 1):
                for first in range(len(secret) - size + 1):
                    assert secret[first:first + size] not in outcomes[0].detail

    def test_refused_connection_is_retryable_and_quiet(self) -> None:
        """No listener: a retryable failure whose text names neither header value nor password."""
        port = free_port()
        outcome = asyncio.run(one_send(only_traces(f"http://me:PASSWORD-5678@127.0.0.1:{port}/v1/traces",
                                                   OTEL_EXPORTER_OTLP_HEADERS=f"x-api-key={TOKEN}")))
        assert not outcome.ok and outcome.retryable
        assert TOKEN not in outcome.detail and "PASSWORD" not in outcome.detail

    def test_a_port_out_of_range_is_a_configuration_error(self) -> None:
        """An endpoint whose port is not 1-65535 fails at start, not at every export."""
        with pytest.raises(ConfigError, match="port"):
            build_transports(load_config(only_traces("http://127.0.0.1:99999/v1/traces")))

    def test_oteltap_receives_the_export(self, taps: Callable[[int], Any]) -> None:
        """A real OTLP receiver (oteltap) takes three exports over the kept-alive connection (uncompressed:
        oteltap 1.0 answers 400 to a gzip body, from aiohttp's client as well)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        tap = taps(free_port())
        request = ExportTraceServiceRequest()
        for name in ("first", "second"):
            span = request.resource_spans.add().scope_spans.add().spans.add()
            span.trace_id, span.span_id, span.name = bytes(range(1, 17)), bytes(range(1, 9)), name
            span.start_time_unix_nano, span.end_time_unix_nano = 1, 2

        async def go() -> List[Outcome]:
            transports, close = build_transports(load_config(only_traces(
                f"http://127.0.0.1:{tap.port}/v1/traces")))
            try:
                outcomes = [await transports["traces"].send(request.SerializeToString()) for _ in range(3)]
                await tap.wait("spans", lambda spans: len(spans) >= 6)
                assert transports["traces"]._connection.connects == 1  # type: ignore[attr-defined]
                return outcomes
            finally:
                await close()

        outcomes = asyncio.run(go())
        assert all(outcome.ok for outcome in outcomes)
        assert sorted(span["name"] for span in tap.items("spans")) == ["first"] * 3 + ["second"] * 3


def test_safe_location_strips_credentials_and_query() -> None:
    """User-info, query and fragment are removed; scheme, host, port and path are kept."""
    assert safe_location("https://u:p@collector.example:4318/v1/logs?token=x#f") == \
        "https://collector.example:4318/v1/logs"
    assert safe_location("/elsewhere?k=v") == "/elsewhere"


class TestWaitAwake:
    def test_frozen_time_does_not_count(self) -> None:
        """A slice that overran by more than the gap (the process did not run) is not counted: the wait
        goes on past a clock jump much larger than the timeout, and ends when the task does."""

        async def go() -> bool:
            clock = [0.0]
            jumps = [100.0]  # the first slice "took" 100 s: a freeze

            def now() -> float:
                return clock[0]

            async def work() -> None:
                await asyncio.sleep(0.2)

            async def ticking() -> None:
                while True:
                    await asyncio.sleep(0.01)
                    clock[0] += jumps.pop() if jumps else 0.01

            ticker = asyncio.ensure_future(ticking())
            try:
                return await wait_awake(work(), 0.5, clock=now, slice_s=0.05, gap_s=1.0)
            finally:
                ticker.cancel()

        assert asyncio.run(go()) is True

    def test_a_restarted_timer_counts_from_the_restart(self) -> None:
        """AwakeTimer.restart on a timer whose slice is still armed counts the timeout afresh: the time before
        the restart is not charged to the new count; an idle timer never calls the expire it had before."""

        async def go() -> List[Tuple[str, float]]:
            clock = [0.0]
            fired: List[Tuple[str, float]] = []
            timer = AwakeTimer(0.3, lambda: fired.append(("first", clock[0])), clock=lambda: clock[0],
                               slice_s=0.05, gap_s=1.0)
            timer.idle()
            clock[0] += 0.5  # awake time before the restart (under the freeze gap): not the new count's
            timer.restart(0.3, lambda: fired.append(("second", clock[0])))
            for _ in range(200):
                if fired:
                    break
                clock[0] += 0.01
                await asyncio.sleep(0.01)
            timer.idle()
            for _ in range(10):  # the idle timer lets its handle go, and calls nothing
                await asyncio.sleep(0.01)
            return fired

        fired = asyncio.run(go())
        assert [name for name, _ in fired] == ["second"] and fired[0][1] >= 0.5 + 0.3 - 1e-9

    def test_a_restart_shorter_than_the_armed_slice_is_not_held_late(self) -> None:
        """A restart whose timeout ends before the slice armed for the last count re-arms: a 50 ms count on a
        timer whose 10 s slice is still armed fires at about 50 ms, not at the old slice's end."""

        async def go() -> bool:
            fired = asyncio.Event()
            timer = AwakeTimer(10.0, lambda: None, slice_s=10.0)
            timer.idle()
            timer.restart(0.05, fired.set)
            try:
                await asyncio.wait_for(fired.wait(), 5.0)
                return True
            except asyncio.TimeoutError:
                return False
            finally:
                timer.cancel()

        assert asyncio.run(go())

    def test_a_kept_timer_serves_one_wait_at_a_time(self) -> None:
        """KeptTimer restarts its one timer for waits that come one after another; a wait started while it is
        busy gets a timer of its own, and each wait's expiry calls only its own callback."""

        async def go() -> Tuple[bool, bool, List[str]]:
            fired: List[str] = []
            kept = KeptTimer()
            first = kept.start(10.0, lambda: fired.append("first"))
            kept.stop(first)
            again = kept.start(10.0, lambda: fired.append("again"))
            beside = kept.start(0.05, lambda: fired.append("beside"))
            reused, separate = again is first, beside is not again
            for _ in range(100):
                if fired:
                    break
                await asyncio.sleep(0.01)
            kept.stop(again)
            kept.stop(beside)
            return reused, separate, fired

        assert asyncio.run(go()) == (True, True, ["beside"])

    def test_a_task_resolving_woke_ends_the_wait_before_its_done_callbacks(self) -> None:
        """With ``woke``, the wait ends as the task resolves it, ahead of the task's done callbacks; without,
        only through them, a loop turn later."""

        async def go(use_woke: bool) -> Tuple[bool, List[str]]:
            order: List[str] = []
            woke: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def work() -> None:
                await asyncio.sleep(0)
                woke.set_result(None)

            task = asyncio.ensure_future(work())
            task.add_done_callback(lambda _: order.append("done callback"))
            ended = await wait_awake(task, 30.0, woke=woke if use_woke else None)
            order.append("wait over")
            await asyncio.sleep(0)
            return ended, order

        assert asyncio.run(go(True)) == (True, ["wait over", "done callback"])
        assert asyncio.run(go(False)) == (True, ["done callback", "wait over"])

    def test_a_task_that_never_resolves_woke_still_ends_the_wait(self) -> None:
        """A task cancelled before it ran (so it never resolved ``woke``) ends the wait through its done
        callbacks, not at the timeout."""

        async def go() -> bool:
            woke: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(asyncio.sleep(60))
            task.cancel()
            return await asyncio.wait_for(wait_awake(task, 60.0, woke=woke), 10.0)

        assert asyncio.run(go()) is True

    def test_awake_time_runs_out(self) -> None:
        """Without a freeze, the wait ends after ``timeout`` and reports the task unfinished."""

        async def go() -> bool:
            return await wait_awake(asyncio.sleep(5), 0.1, slice_s=0.03)

        assert asyncio.run(go()) is False

    def test_send_gives_up_after_the_timeout(self) -> None:
        """Transport.send cancels an attempt that outlives its timeout and says so, retryably."""
        cancelled: List[bool] = []

        class Hung(Transport):
            timeout_s = 0.1

            async def _attempt(self, data: bytes) -> Outcome:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise
                return Outcome(ok=True)

        outcome = asyncio.run(Hung().send(b""))
        assert not outcome.ok and outcome.retryable and cancelled == [True]


# ------------------------------------------------------------------------------------------------ TLS


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=fgext test CA", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf", cwd=folder)
    return folder


def server_context(pki: Path, require_client: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    if require_client:
        context.load_verify_locations(str(pki / "ca.pem"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def https(pki: Path, environ: Callable[[str], Dict[str, str]], *, require_client: bool = False) -> Tuple[Outcome, int]:
    async def go() -> Tuple[Outcome, int]:
        async with Server(ssl_context=server_context(pki, require_client)) as server:
            outcome = await one_send(environ(f"https://127.0.0.1:{server.port}/v1/traces"))
            return outcome, len(server.received)

    return asyncio.run(go())


class TestTls:
    def test_a_ca_bundle_is_trusted(self, pki: Path) -> None:
        """OTEL_EXPORTER_OTLP_CERTIFICATE makes a collector signed by that CA reachable over HTTPS."""
        outcome, received = https(pki, lambda url: only_traces(
            url, OTEL_EXPORTER_OTLP_CERTIFICATE=str(pki / "ca.pem")))
        assert outcome.ok and received == 1

    def test_the_tls_connection_is_kept(self, pki: Path) -> None:
        """Three exports to an HTTPS collector use one TLS connection (server_hostname checked against the
        certificate's IP address)."""

        async def go() -> Tuple[List[Outcome], int, int]:
            async with Server(ssl_context=server_context(pki, False)) as server:
                transports, close = build_transports(load_config(only_traces(
                    f"https://127.0.0.1:{server.port}/v1/traces", OTEL_EXPORTER_OTLP_CERTIFICATE=str(pki / "ca.pem"))))
                try:
                    outcomes = [await transports["traces"].send(b"\x0a\x00") for _ in range(3)]
                    return outcomes, len(server.received), transports["traces"]._connection.connects  # type: ignore
                finally:
                    await close()

        outcomes, received, connects = asyncio.run(go())
        assert all(outcome.ok for outcome in outcomes) and received == 3 and connects == 1

    def test_without_the_ca_the_collector_is_not_trusted(self, pki: Path) -> None:
        """Without the CA bundle the same collector fails certificate verification and receives nothing."""
        outcome, received = https(pki, lambda url: only_traces(url))
        assert not outcome.ok and "certificate" in outcome.detail.lower() and received == 0

    def test_per_signal_client_certificate(self, pki: Path) -> None:
        """The per-signal CA, client certificate and key variables authenticate to a collector that
        requires a client certificate."""
        outcome, received = https(pki, lambda url: only_traces(
            url, OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE=str(pki / "ca.pem"),
            OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE=str(pki / "client.pem"),
            OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY=str(pki / "client.key")), require_client=True)
        assert outcome.ok and received == 1

    def test_no_client_certificate_is_refused_by_such_a_collector(self, pki: Path) -> None:
        """Without a client certificate, a collector that requires one receives nothing."""
        outcome, received = https(pki, lambda url: only_traces(
            url, OTEL_EXPORTER_OTLP_CERTIFICATE=str(pki / "ca.pem")), require_client=True)
        assert not outcome.ok and received == 0

    def test_a_file_that_is_not_a_certificate_is_a_configuration_error(self, tmp_path: Path) -> None:
        """A readable CA file that holds no certificate is a ConfigError naming the file."""
        bogus = tmp_path / "ca.pem"
        bogus.write_text("not a certificate\n")
        with pytest.raises(ConfigError, match=r"ca\.pem"):
            build_transports(load_config(only_traces("https://127.0.0.1:1/v1/traces",
                                                     OTEL_EXPORTER_OTLP_CERTIFICATE=str(bogus))))


@pytest.fixture
def grpc_module() -> Any:
    return pytest.importorskip("grpc")


def test_grpc_tls_with_a_ca_bundle(pki: Path, grpc_module: Any) -> None:
    """gRPC honours OTEL_EXPORTER_OTLP_CERTIFICATE: a TLS gRPC server signed by the CA takes the export."""
    from grpc import aio

    received: List[bytes] = []

    async def go() -> Outcome:
        def export(request: bytes, context: Any) -> bytes:
            received.append(request)
            return b""

        handler = grpc_module.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc_module.unary_unary_rpc_method_handler(export)})
        server = aio.server()
        server.add_generic_rpc_handlers((handler,))
        credentials = grpc_module.ssl_server_credentials(
            [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        try:
            return await one_send({**only_traces(f"https://127.0.0.1:{port}"), "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                   "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem")}, b"\x0a\x00")
        finally:
            await server.stop(0)

    outcome = asyncio.run(go())
    assert outcome.ok, outcome.detail
    assert received == [b"\x0a\x00"]

