"""fgext._local_export: one POST per flush to the agent on loopback, kept alive, reconnecting, never raising."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Iterator, List, Tuple

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from fgext._local_export import InvocationSpanProcessor, LoopbackSpanExporter, is_loopback_http
from tests.receiver_server import ReceiverServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pipeline(url: str, **options: int) -> Tuple[TracerProvider, InvocationSpanProcessor]:
    provider = TracerProvider(shutdown_on_exit=False)
    processor = InvocationSpanProcessor(LoopbackSpanExporter(url), **options)
    provider.add_span_processor(processor)
    return provider, processor


def end_spans(provider: TracerProvider, count: int, prefix: str = "span") -> None:
    tracer = provider.get_tracer("test")
    for index in range(count):
        with tracer.start_as_current_span(f"{prefix}-{index}"):
            pass


class RawServer:
    """A hand-driven HTTP/1.1 server on 127.0.0.1: ``script[n]`` says how connection n answers its requests.

    Each entry is a list of actions, one per request on that connection: a status code to answer with,
    ``"close"`` to close the connection without answering, ``"hang"`` to never answer.
    """

    def __init__(self, script: List[List[object]]) -> None:
        self.script = script
        self.bodies: List[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.stopping = threading.Event()
        self.threads: List[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def _accept(self) -> None:
        for actions in self.script:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection, actions), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, connection: socket.socket, actions: List[object]) -> None:
        with connection:
            connection.settimeout(10)
            buffered = b""
            for action in actions:
                while b"\r\n\r\n" not in buffered:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                head, buffered = buffered.split(b"\r\n\r\n", 1)
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                while len(buffered) < length:
                    buffered += connection.recv(65536)
                body, buffered = buffered[:length], buffered[length:]
                if action == "close":
                    return
                if action == "hang":
                    self.stopping.wait(10)
                    return
                self.bodies.append(body)
                connection.sendall(f"HTTP/1.1 {action} X\r\nContent-Length: 0\r\n\r\n".encode())

    def span_names(self) -> List[str]:
        names = []
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            names += [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        return names

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(10)


@pytest.fixture
def raw_servers() -> Iterator[List[RawServer]]:
    servers: List[RawServer] = []
    yield servers
    for server in servers:
        server.close()


class TestDelivery:
    def test_every_span_arrives_in_one_request_per_flush_on_one_connection(self) -> None:
        """Three flushes of 25 spans: three requests, all 75 spans, one TCP connection kept alive."""
        with ReceiverServer() as receiver:
            provider, processor = pipeline(f"{receiver.url}/v1/traces")
            for round_ in range(3):
                end_spans(provider, 25, prefix=f"r{round_}")
                assert processor.force_flush(5000)
                assert len(receiver.exports) == round_ + 1
                assert processor.buffered() == 0
            names = sorted(span.name for span in receiver.spans())
            assert names == sorted(f"r{r}-{i}" for r in range(3) for i in range(25))
            assert processor.exporter.connections_opened == 1
            provider.shutdown()

    def test_unsampled_spans_are_not_sent(self) -> None:
        """A span the sampler dropped is neither buffered nor exported."""
        with ReceiverServer() as receiver:
            provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
            processor = InvocationSpanProcessor(LoopbackSpanExporter(f"{receiver.url}/v1/traces"))
            provider.add_span_processor(processor)
            end_spans(provider, 5)
            assert processor.buffered() == 0
            assert processor.force_flush(5000)
            assert receiver.exports == []
            provider.shutdown()

    def test_shutdown_sends_what_is_left(self) -> None:
        """Spans still buffered at shutdown (the sandbox exiting) are sent then."""
        with ReceiverServer() as receiver:
            provider, _ = pipeline(f"{receiver.url}/v1/traces")
            end_spans(provider, 4)
            provider.shutdown()
            assert len(receiver.spans()) == 4


class TestReconnection:
    def test_a_restarted_receiver_is_found_again(self) -> None:
        """The receiver restarts on the same port between flushes: the next flush delivers on a new connection."""
        first = ReceiverServer().start()
        port = first.port
        try:
            provider, processor = pipeline(f"{first.url}/v1/traces")
            end_spans(provider, 3, prefix="before")
            assert processor.force_flush(5000)
        finally:
            first.stop()
        try:
            second = ReceiverServer(port=port).start()
        except OSError as exc:
            pytest.skip(f"port {port} could not be taken again: {exc}")
        try:
            end_spans(provider, 3, prefix="after")
            assert processor.force_flush(5000)
            assert sorted(span.name for span in second.spans()) == ["after-0", "after-1", "after-2"]
            assert processor.exporter.connections_opened == 2
        finally:
            second.stop()
        provider.shutdown()

    def test_a_kept_alive_connection_broken_during_the_request_is_replaced_once(
            self, raw_servers: List[RawServer]) -> None:
        """The agent closes the kept-alive connection on the second request: the same flush resends on a new one."""
        server = RawServer([[200, "close"], [200]])
        raw_servers.append(server)
        provider, processor = pipeline(server.url)
        end_spans(provider, 2, prefix="a")
        assert processor.force_flush(5000)
        end_spans(provider, 2, prefix="b")
        assert processor.force_flush(5000)
        assert server.span_names() == ["a-0", "a-1", "b-0", "b-1"]
        assert processor.exporter.connections_opened == 2
        provider.shutdown()

    def test_a_fresh_connection_that_breaks_is_not_retried(self, raw_servers: List[RawServer]) -> None:
        """A new connection closed without an answer fails the flush (no loop); the spans wait for the next."""
        server = RawServer([["close"], [200]])
        raw_servers.append(server)
        provider, processor = pipeline(server.url)
        end_spans(provider, 2)
        assert not processor.force_flush(5000)
        assert processor.buffered() == 2
        assert processor.force_flush(5000)
        assert server.span_names() == ["span-0", "span-1"]
        provider.shutdown()


class TestAgentGone:
    def test_nobody_listening_fails_the_flush_without_raising_and_keeps_the_spans(self) -> None:
        """No agent on the port: force_flush returns False, the spans stay, and a later agent gets them all."""
        port = free_port()
        provider, processor = pipeline(f"http://127.0.0.1:{port}/v1/traces")
        end_spans(provider, 3, prefix="early")
        assert not processor.force_flush(1000)
        assert processor.buffered() == 3
        try:
            receiver = ReceiverServer(port=port).start()
        except OSError as exc:
            pytest.skip(f"port {port} was taken meanwhile: {exc}")
        try:
            end_spans(provider, 1, prefix="late")
            assert processor.force_flush(5000)
            assert sorted(span.name for span in receiver.spans()) == ["early-0", "early-1", "early-2", "late-0"]
        finally:
            receiver.stop()
        provider.shutdown()

    def test_an_agent_that_never_answers_costs_the_budget_and_keeps_the_spans(
            self, raw_servers: List[RawServer]) -> None:
        """The agent accepts and never answers: the flush gives up (False) within its budget; nothing is lost."""
        server = RawServer([["hang"]])
        raw_servers.append(server)
        provider, processor = pipeline(server.url)
        end_spans(provider, 2)
        assert not processor.force_flush(200)
        assert processor.buffered() == 2
        server.close()
        provider.shutdown()

    def test_a_refusal_drops_the_batch_and_a_busy_agent_keeps_it(self, raw_servers: List[RawServer]) -> None:
        """503 keeps the spans for the next flush; 400 (they would be refused again) drops them."""
        server = RawServer([[503, 400, 200]])
        raw_servers.append(server)
        provider, processor = pipeline(server.url)
        end_spans(provider, 2)
        assert not processor.force_flush(5000)
        assert processor.buffered() == 2
        assert not processor.force_flush(5000)
        assert (processor.buffered(), processor.refused) == (0, 2)
        end_spans(provider, 1, prefix="next")
        assert processor.force_flush(5000)
        provider.shutdown()

    def test_spans_that_cannot_be_encoded_are_dropped_not_kept(self) -> None:
        """A batch the encoder fails on is dropped (it would fail forever), and the exporter stays usable."""
        with ReceiverServer() as receiver:
            exporter = LoopbackSpanExporter(f"{receiver.url}/v1/traces")
            assert exporter.send([object()]) == (SpanExportResult.FAILURE, False)  # type: ignore[list-item]
            provider = TracerProvider(shutdown_on_exit=False)
            processor = InvocationSpanProcessor(exporter)
            provider.add_span_processor(processor)
            end_spans(provider, 1)
            assert processor.force_flush(5000)
            assert len(receiver.spans()) == 1
            provider.shutdown()

    def test_the_buffer_is_bounded(self, caplog: pytest.LogCaptureFixture) -> None:
        """With no agent, at most max_buffered spans wait; the others are dropped, counted, and warned of once."""
        provider, processor = pipeline(f"http://127.0.0.1:{free_port()}/v1/traces", max_buffered=5)
        with caplog.at_level(logging.WARNING, logger="fgext.function"):
            end_spans(provider, 8)
        assert (processor.buffered(), processor.dropped) == (5, 3)
        assert [r.getMessage() for r in caplog.records].count(
            "fgext.function: 5 spans wait for the agent already; further spans are dropped") == 1
        assert InvocationSpanProcessor(LoopbackSpanExporter("http://127.0.0.1:1/")).max_buffered == 2048  # the docs
        provider.shutdown()


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:8085/v1/traces", True),
    ("http://localhost:8085/v1/traces", True),
    ("http://[::1]:8085/v1/traces", True),
    ("http://127.8.9.10:1/v1/traces", True),
    ("https://127.0.0.1:8085/v1/traces", False),
    ("http://user:secret@127.0.0.1:8085/v1/traces", False),
    ("http://10.0.0.1:8085/v1/traces", False),
    ("http://collector.example:4318/v1/traces", False),
    ("http://127.0.0.1:port/v1/traces", False),
])
def test_only_plain_http_to_loopback_takes_the_short_path(url: str, loopback: bool) -> None:
    """TLS, credentials or another host keep the SDK's exporter; only plain http to loopback is fgext's."""
    assert is_loopback_http(url) is loopback
    if not loopback:
        with pytest.raises(ValueError) as info:
            LoopbackSpanExporter(url)
        assert "secret" not in str(info.value)


def test_export_without_spans_sends_nothing() -> None:
    """An empty export succeeds without opening a connection."""
    exporter = LoopbackSpanExporter(f"http://127.0.0.1:{free_port()}/v1/traces")
    assert exporter.export([]).name == "SUCCESS"
    assert exporter.connections_opened == 0

