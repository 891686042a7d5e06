"""fgext.function: the handler's own spans, in the agent's trace, exported to a real loopback receiver.

Each scenario runs tests/function_script.py as its own process (the SDK is set up once per process,
as once per sandbox), with the real SDK and OTLP/HTTP exporter posting to fgext's receiver in a real
aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

import fgext.function
from fgext._discovery_file import write_agent_file
from fgext._ids import invoke_span_id_for, trace_id_for
from fgext._sampling import HeadSampler
from tests.receiver_server import ReceiverServer

ROOT = Path(__file__).resolve().parent.parent


class Function:
    """The handler's process: invoke() sends one invocation and returns the script's outcome line."""

    def __init__(self, env: Dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.function_script"], cwd=str(ROOT), env=env,
                                        text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.first = self._line()

    def _line(self) -> Dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"function process ended: {self.stderr()}")
        return dict(json.loads(line))

    def invoke(self, request_id: str, event: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"request_id": request_id, "event": event or {}}) + "\n")
        self.process.stdin.flush()
        return self._line()

    def stderr(self) -> str:
        self.stop()
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    with ReceiverServer() as running:
        yield running


def agent_file(tmp_path: Path, receiver: ReceiverServer) -> None:
    write_agent_file(receiver.port, pid=os.getpid(), path=str(tmp_path / "fgext-agent.json"))


def by_name(spans: List[Span]) -> Dict[str, Span]:
    return {span.name: span for span in spans}


class TestInvocationSpan:
    def test_spans_are_children_of_the_invoke_span_in_the_request_trace(
            self, tmp_path: Path, receiver: ReceiverServer, functions: Any) -> None:
        """The handler's span has the request's trace ID and fgext's invoke span as parent; user spans nest in it."""
        agent_file(tmp_path, receiver)
        function = functions()
        request_id = str(uuid.uuid4())
        outcome = function.invoke(request_id, {"spans": 3})
        assert outcome["returned"] == {"ok": True, "request_id": request_id}
        assert (outcome["destination"], outcome["exporter"]) == (f"{receiver.url}/v1/traces", "loopback")
        spans = by_name(receiver.wait_for_spans(4))
        top = spans["handler"]
        assert top.trace_id == trace_id_for(request_id) == uuid.UUID(request_id).bytes
        assert top.parent_span_id == invoke_span_id_for(request_id)
        for index in range(3):
            assert spans[f"step-{index}"].parent_span_id == top.span_id
            assert spans[f"step-{index}"].trace_id == top.trace_id
        attributes = {kv.key: kv.value.string_value for kv in top.attributes}
        assert attributes["faas.invocation_id"] == request_id
        assert {"service.name": "orders", "faas.name": "orders"}.items() <= receiver.resources()[0].items()

    def test_an_exception_is_recorded_and_reraised(self, tmp_path: Path, receiver: ReceiverServer,
                                                   functions: Any) -> None:
        """A failing handler raises its own exception; its span has status ERROR and an exception event."""
        agent_file(tmp_path, receiver)
        outcome = functions().invoke("req-fail", {"fail": True})
        assert (outcome["raised"], outcome["message"]) == ("RuntimeError", "asked to fail")
        [span] = receiver.wait_for_spans(1)
        assert span.status.code == Status.STATUS_CODE_ERROR
        assert "RuntimeError: asked to fail" in span.status.message
        [event] = span.events
        attributes = {kv.key: kv.value.string_value for kv in event.attributes}
        assert (event.name, attributes["exception.type"]) == ("exception", "RuntimeError")

    def test_spans_are_delivered_before_the_handler_returns_so_a_freeze_loses_none(
            self, tmp_path: Path, receiver: ReceiverServer, functions: Any) -> None:
        """Frozen (SIGSTOP) right after each invocation returns, the function has already delivered its spans."""
        agent_file(tmp_path, receiver)
        function = functions()
        for number in range(1, 4):
            function.invoke(f"req-{number}", {"spans": 2})
            os.kill(function.process.pid, signal.SIGSTOP)
            try:
                assert len(receiver.spans()) == 3 * number  # no waiting: they are there already
            finally:
                os.kill(function.process.pid, signal.SIGCONT)

    def test_a_traceparent_header_becomes_a_link(self, tmp_path: Path, receiver: ReceiverServer,
                                                 functions: Any) -> None:
        """An HTTP event's W3C traceparent is a link on the handler's span; the parent stays the invoke span."""
        agent_file(tmp_path, receiver)
        caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        event = {"httpMethod": "GET", "headers": {"Traceparent": f"00-{caller_trace}-{caller_span}-01"}}
        functions().invoke("req-http", event)
        [span] = receiver.wait_for_spans(1)
        assert span.parent_span_id == invoke_span_id_for("req-http")
        assert span.trace_id == trace_id_for("req-http")
        [link] = span.links
        assert (link.trace_id.hex(), link.span_id.hex()) == (caller_trace, caller_span)

    def test_an_invalid_traceparent_is_ignored(self, tmp_path: Path, receiver: ReceiverServer, functions: Any) -> None:
        """A traceparent that does not parse gives no link and no failure."""
        agent_file(tmp_path, receiver)
        outcome = functions().invoke("req-bad", {"headers": {"traceparent": "garbage"}})
        assert outcome["returned"]["ok"]
        [span] = receiver.wait_for_spans(1)
        assert list(span.links) == []


    def test_the_sdk_resource_settings_win(self, tmp_path: Path, receiver: ReceiverServer, functions: Any) -> None:
        """OTEL_SERVICE_NAME names the service; faas.name is still the function's name."""
        agent_file(tmp_path, receiver)
        functions(OTEL_SERVICE_NAME="shop").invoke("req-1")
        receiver.wait_for_spans(1)
        assert {"service.name": "shop", "faas.name": "orders"}.items() <= receiver.resources()[0].items()

    def test_a_provider_the_user_set_first_is_left_alone(self, tmp_path: Path, receiver: ReceiverServer,
                                                         functions: Any) -> None:
        """The user's own global provider stays global: their spans go there, the handler's span to the agent."""
        agent_file(tmp_path, receiver)
        functions(FGEXT_TEST_OWN_PROVIDER="1").invoke("req-1", {"spans": 2})
        assert [span.name for span in receiver.wait_for_spans(1)] == ["handler"]


class TestExportPath:
    @pytest.mark.parametrize(("url", "to_agent", "kind"), [
        ("http://127.0.0.1:8085/v1/traces", True, "loopback"),
        ("http://localhost:8085/v1/traces", True, "loopback"),
        ("https://127.0.0.1:8085/v1/traces", True, "otlp-http"),
        ("http://10.1.2.3:8085/v1/traces", True, "otlp-http"),
        ("http://127.0.0.1:4318/v1/traces", False, "otlp-http"),  # OTEL_EXPORTER_OTLP_*: headers may matter
    ])
    def test_only_the_agent_on_plain_loopback_http_takes_fgexts_path(
            self, monkeypatch: pytest.MonkeyPatch, url: str, to_agent: bool, kind: str) -> None:
        """fgext's one-POST path for the agent on loopback; the SDK's batch exporter for anything else."""
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from fgext._local_export import InvocationSpanProcessor

        monkeypatch.setattr(fgext.function._STATE, "exporter", None)
        processor = fgext.function._processor(url, to_agent)
        try:
            assert fgext.function._exporter() == kind
            expected = InvocationSpanProcessor if kind == "loopback" else BatchSpanProcessor
            assert isinstance(processor, expected)
        finally:
            processor.shutdown()


class TestDocs:
    def test_the_handler_in_docs_function_md_runs_and_nests_its_spans(
            self, tmp_path: Path, receiver: ReceiverServer) -> None:
        """The complete handler of docs/function.md returns its answer and its spans nest under invoke."""
        text = (ROOT / "docs" / "function.md").read_text()
        code = text.split("```python\n", 1)[1].split("```", 1)[0]
        (tmp_path / "doc_handler.py").write_text(code)
        driver = (
            "import json, sys, time\n"
            "import doc_handler\n"
            "from fgext.emulator._worker import Context\n"
            "ctx = Context({'request_id': sys.argv[1], 'timeout_s': 30, 'function_name': 'orders',"
            " 'function_version': 'latest', 'package': 'default', 'project_id': 'p', 'memory_mb': 128,"
            " 'cpu_millicores': 300}, time.monotonic())\n"
            "event = {'httpMethod': 'POST', 'headers': {}, 'body': json.dumps({'order_id': 'A-17'})}\n"
            "print(json.dumps(doc_handler.handler(event, ctx)))\n")
        request_id = str(uuid.uuid4())
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "FGEXT_"))}
        env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", FGEXT_AGENT_ENDPOINT=receiver.url)
        done = subprocess.run([sys.executable, "-c", driver, request_id], env=env, capture_output=True, text=True,
                              timeout=60, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"order": "A-17", "total": 30})
        spans = by_name(receiver.wait_for_spans(3))
        assert spans["handler"].parent_span_id == invoke_span_id_for(request_id)
        assert spans["load-order"].parent_span_id == spans["handler"].span_id
        assert spans["price-order"].parent_span_id == spans["handler"].span_id
        assert {kv.key: kv.value.string_value for kv in spans["load-order"].attributes} == {"order.id": "A-17"}


class TestSampling:
    def test_the_function_keeps_exactly_the_traces_the_agent_samples(
            self, tmp_path: Path, receiver: ReceiverServer, functions: Any) -> None:
        """With traceidratio 0.5 and UUIDv4/v1 request IDs, the function exports exactly those HeadSampler samples."""
        agent_file(tmp_path, receiver)
        env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
        function = functions(**env)
        rng = random.Random(5)
        request_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(12)]
        node, clock_seq = rng.getrandbits(48), rng.getrandbits(14)  # one host's UUIDv1: only the time differs
        for tick in range(0x1EF000000000000, 0x1EF000000000000 + 12 * 40_000, 40_000):
            fields = (tick & 0xFFFFFFFF, (tick >> 32) & 0xFFFF, (tick >> 48) & 0x0FFF, clock_seq >> 8,
                      clock_seq & 0xFF, node)
            request_ids.append(str(uuid.UUID(fields=fields, version=1)))
        expected = {rid for rid in request_ids if HeadSampler.from_environ(env).sampled(trace_id_for(rid))}
        assert 0 < len(expected & set(request_ids[:12])) < 12
        assert 0 < len(expected & set(request_ids[12:])) < 12
        for request_id in request_ids:
            function.invoke(request_id, {"spans": 1})
        # Every flush completed before its invocation returned: what is here is all there will be.
        got = {dict((kv.key, kv.value.string_value) for kv in span.attributes).get("faas.invocation_id")
               for span in receiver.spans() if span.name == "handler"}
        assert got == expected
        assert len(receiver.spans()) == 2 * len(expected)

    def test_fgexts_sdk_sampler_decides_roots_by_fgexts_rule_and_children_by_their_parent(self) -> None:
        """The helper's SDK sampler: a root gets HeadSampler's decision; a child its parent's flag."""
        from opentelemetry.sdk.trace.sampling import Decision

        head = HeadSampler("traceidratio", 0.3)
        sampler = fgext.function._sdk_sampler(head)
        rng = random.Random(9)
        trace_ids = [trace_id_for(str(uuid.UUID(int=rng.getrandbits(128), version=4))) for _ in range(2000)]
        decisions = []
        for trace_id in trace_ids:
            number = int.from_bytes(trace_id, "big")
            root = sampler.should_sample(None, number, "root").decision
            decisions.append(head.sampled(trace_id))
            assert root.is_sampled() == decisions[-1]
            for flag in (True, False):
                parent = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
                    number, 0x1234, is_remote=True, trace_flags=trace.TraceFlags(int(flag)))))
                child = sampler.should_sample(parent, number, "child").decision
                assert child == (Decision.RECORD_AND_SAMPLE if flag else Decision.DROP)
        assert 0.25 < sum(decisions) / len(decisions) < 0.35

    def test_a_users_own_provider_with_the_default_sampler_agrees_through_trace_context(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The user's TracerProvider (default sampler, from the same env) keeps exactly the traces HeadSampler keeps."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        monkeypatch.setattr(fgext.function, "_SAMPLER_FROM_ENV", [])
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
        exporter = InMemorySpanExporter()
        provider = TracerProvider()  # the SDK's default sampler, read from the environment
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("user")
        rng = random.Random(3)
        request_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
        for request_id in request_ids:
            with tracer.start_as_current_span("work", context=fgext.function.trace_context(request_id)):
                pass
        head = HeadSampler.from_environ()
        expected = {trace_id_for(rid) for rid in request_ids if head.sampled(trace_id_for(rid))}
        got = {span.context.trace_id.to_bytes(16, "big") for span in exporter.get_finished_spans()}
        assert got == expected
        assert 0.2 < len(got) / len(request_ids) < 0.3
        provider.shutdown()

    def test_a_users_provider_with_a_plain_traceidratio_sampler_disagrees(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Why the docs say keep ParentBased: the SDK's own traceidratio ignores the invoke span's flag."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        monkeypatch.setattr(fgext.function, "_SAMPLER_FROM_ENV", [])
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        rng = random.Random(4)
        request_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(200)]
        for request_id in request_ids:
            with provider.get_tracer("user").start_as_current_span(
                    "work", context=fgext.function.trace_context(request_id)):
                pass
        head = HeadSampler.from_environ()
        assert any(head.sampled(trace_id_for(rid)) for rid in request_ids)
        assert exporter.get_finished_spans() == ()  # the SDK's rule keeps no UUIDv4 at 0.5
        provider.shutdown()

    def test_an_unreadable_sampler_leaves_the_handler_running(self, tmp_path: Path, receiver: ReceiverServer,
                                                              functions: Any) -> None:
        """OTEL_TRACES_SAMPLER=sometimes: the handler returns, no span is sent, one warning says why."""
        agent_file(tmp_path, receiver)
        function = functions(OTEL_TRACES_SAMPLER="sometimes")
        assert function.invoke("req-1")["returned"]["ok"]
        assert function.invoke("req-2")["returned"]["ok"]
        assert receiver.spans() == []
        assert function.stderr().count("OTEL_TRACES_SAMPLER must be one of") == 1


class TestWithoutAgent:
    def test_nowhere_when_nothing_is_configured(self, functions: Any) -> None:
        """No agent file and no OTLP endpoint: the handler runs and the SDK is not even imported."""
        function = functions()
        assert function.first["heavy_at_import"] == []
        outcome = function.invoke("req-1")
        assert outcome["returned"]["ok"]
        assert (outcome["destination"], outcome["sdk_loaded"]) == (None, False)

    @pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
    def test_to_the_otlp_endpoint_when_set(self, receiver: ReceiverServer, functions: Any, variable: str) -> None:
        """No agent, an OTLP endpoint variable set: spans go straight there."""
        url = receiver.url + ("/v1/traces" if "TRACES" in variable else "")
        function = functions(**{variable: url})
        outcome = function.invoke("req-1", {"spans": 1})
        assert (outcome["destination"], outcome["exporter"]) == (f"{receiver.url}/v1/traces", "otlp-http")
        assert len(receiver.wait_for_spans(2)) == 2

    def test_an_agent_starting_late_is_found(self, tmp_path: Path, receiver: ReceiverServer, functions: Any) -> None:
        """The agent file is looked for again at each invocation until found."""
        function = functions()
        assert function.invoke("req-1")["destination"] is None
        agent_file(tmp_path, receiver)
        assert function.invoke("req-2")["destination"] == f"{receiver.url}/v1/traces"
        [span] = receiver.wait_for_spans(1)
        assert span.trace_id == trace_id_for("req-2")

    def test_a_file_left_by_a_dead_agent_is_ignored(self, tmp_path: Path, functions: Any) -> None:
        """An agent file whose PID is gone counts as no agent."""
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait(10)
        write_agent_file(9, pid=dead.pid, path=str(tmp_path / "fgext-agent.json"))
        assert functions().invoke("req-1")["destination"] is None

    def test_an_agent_that_does_not_answer_costs_only_the_flush_budget(self, tmp_path: Path, functions: Any) -> None:
        """The agent file names a port nobody listens on: the handler still returns its result."""
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        write_agent_file(port, pid=os.getpid(), path=str(tmp_path / "fgext-agent.json"))
        function = functions(FGEXT_FUNCTION_FLUSH_MS="200")
        assert function.invoke("req-1", {"spans": 2})["returned"]["ok"]
        assert function.invoke("req-2", {"fail": True})["raised"] == "RuntimeError"

    def test_an_agent_that_accepts_but_never_answers_leaves_the_handler_running(
            self, tmp_path: Path, functions: Any) -> None:
        """The agent accepts connections and never answers: each flush gives up at its budget; the handler returns."""
        import socket

        with socket.create_server(("127.0.0.1", 0)) as silent:  # never accept()ed: the kernel still connects
            write_agent_file(silent.getsockname()[1], pid=os.getpid(), path=str(tmp_path / "fgext-agent.json"))
            function = functions(FGEXT_FUNCTION_FLUSH_MS="150")
            outcome = function.invoke("req-1", {"spans": 2})
            assert (outcome["returned"]["ok"], outcome["exporter"]) == (True, "loopback")
            assert function.invoke("req-2", {"fail": True})["raised"] == "RuntimeError"
            assert "spans not flushed within 150 ms" in function.stderr()

    def test_an_agent_that_restarts_gets_the_spans_it_missed(self, tmp_path: Path, functions: Any) -> None:
        """The agent goes away and comes back on its port: the handler never fails, and no span is lost."""
        first = ReceiverServer().start()
        port = first.port
        write_agent_file(port, pid=os.getpid(), path=str(tmp_path / "fgext-agent.json"))
        function = functions()
        try:
            assert function.invoke("req-1")["exporter"] == "loopback"
            assert len(first.spans()) == 1
        finally:
            first.stop()
        assert function.invoke("req-2", {"spans": 1})["returned"]["ok"]  # no agent now
        assert function.invoke("req-3", {"fail": True})["raised"] == "RuntimeError"
        try:
            second = ReceiverServer(port=port).start()
        except OSError as exc:
            pytest.skip(f"port {port} could not be taken again: {exc}")
        try:
            assert function.invoke("req-4")["returned"]["ok"]
            got = sorted(dict((kv.key, kv.value.string_value) for kv in span.attributes).get("faas.invocation_id")
                         for span in second.spans() if span.name == "handler")
            assert got == ["req-2", "req-3", "req-4"]
        finally:
            second.stop()

    def test_without_the_sdk_the_handler_runs(self, tmp_path: Path, receiver: ReceiverServer, functions: Any) -> None:
        """The SDK cannot be imported: the handler runs and returns, and one warning says why."""
        agent_file(tmp_path, receiver)
        function = functions(FGEXT_TEST_BLOCK="opentelemetry.sdk")
        assert function.invoke("req-1")["returned"]["ok"]
        assert function.invoke("req-2", {"fail": True})["raised"] == "RuntimeError"
        assert function.stderr().count("the OpenTelemetry SDK cannot be imported") == 1
        assert receiver.spans() == []

    def test_the_endpoint_variable_overrides_the_agent_file(self, tmp_path: Path, receiver: ReceiverServer,
                                                            functions: Any) -> None:
        """FGEXT_AGENT_ENDPOINT wins over the agent file."""
        write_agent_file(9, pid=os.getpid(), path=str(tmp_path / "fgext-agent.json"))
        outcome = functions(FGEXT_AGENT_ENDPOINT=receiver.url + "/").invoke("req-1")
        assert outcome["destination"] == f"{receiver.url}/v1/traces"
        assert len(receiver.wait_for_spans(1)) == 1


class TestTraceContext:
    def test_the_context_holds_the_invoke_span(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """trace_context() gives a Context whose current span is the request's remote invoke span."""
        monkeypatch.setattr(fgext.function, "_SAMPLER_FROM_ENV", [])
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
        request_id = str(uuid.uuid4())
        span_context = trace.get_current_span(fgext.function.trace_context(request_id)).get_span_context()
        assert span_context.trace_id.to_bytes(16, "big") == trace_id_for(request_id)
        assert span_context.span_id.to_bytes(8, "big") == invoke_span_id_for(request_id)
        assert span_context.is_remote and span_context.trace_flags.sampled

    def test_the_sampled_flag_is_the_head_decision(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Under always_off the invoke span is not sampled, so a ParentBased sampler drops children too."""
        monkeypatch.setattr(fgext.function, "_SAMPLER_FROM_ENV", [])
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
        span_context = trace.get_current_span(fgext.function.trace_context("req-1")).get_span_context()
        assert not span_context.trace_flags.sampled

    def test_an_unreadable_sampler_is_a_config_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Called by the user's own code, a bad sampler setting is a ConfigError, not a silent guess."""
        from fgext._errors import ConfigError

        monkeypatch.setattr(fgext.function, "_SAMPLER_FROM_ENV", [])
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
        with pytest.raises(ConfigError):
            fgext.function.trace_context("req-1")


def test_wrapping_keeps_the_handler_name() -> None:
    """instrument() keeps the handler's name and docstring (FunctionGraph finds handlers by name)."""
    def handler(event: Any, context: Any) -> None:
        """Doc."""

    wrapped = fgext.function.instrument(handler)
    assert (wrapped.__name__, wrapped.__doc__) == ("handler", "Doc.")


PACKAGED_HANDLER = '''
import fgext.function
from opentelemetry import trace

@fgext.function.instrument
def handler(event, context):
    with trace.get_tracer("orders").start_as_current_span("load-order"):
        pass
    return {"fgext": fgext.function.__file__, "sdk": trace.__file__}
'''

PACKAGED_RUN = '''
import json, sys
sys.path.insert(0, sys.argv[1])
import index

class Context:
    def getRequestID(self): return sys.argv[2]
    def getRemainingTimeInMilliSeconds(self): return 3000
    def getFunctionName(self): return "orders"
    def getVersion(self): return "latest"

print(json.dumps(index.handler({}, Context())))
'''


@pytest.mark.slow
class TestPackaging:
    def test_the_documented_pip_target_install_makes_the_helper_importable_from_the_code_dir(
            self, tmp_path: Path, receiver: ReceiverServer) -> None:
        """``pip install --target <code dir> 'fgext[function]'`` (docs/function.md): a handler in that dir,
        run by an interpreter without site-packages, imports everything from it and its spans arrive."""
        code = tmp_path / "code"
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--target", str(code), f"{ROOT}[function]"], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        (code / "index.py").write_text(PACKAGED_HANDLER)
        agent_file(tmp_path, receiver)
        env = {"PATH": os.environ.get("PATH", ""), "FGEXT_AGENT_FILE": str(tmp_path / "fgext-agent.json")}
        rid = str(uuid.uuid4())
        # -S: no site-packages at all, as in a sandbox whose runtime has only the standard library.
        ran = subprocess.run([sys.executable, "-S", "-c", PACKAGED_RUN, str(code), rid], capture_output=True,
                             text=True, env=env, cwd=str(tmp_path), timeout=120)
        assert ran.returncode == 0, ran.stderr[-2000:]
        where = json.loads(ran.stdout.strip().splitlines()[-1])
        assert where["fgext"].startswith(str(code)) and where["sdk"].startswith(str(code))
        spans = by_name(receiver.spans())
        assert set(spans) == {"handler", "load-order"}
        assert spans["handler"].parent_span_id == invoke_span_id_for(rid)
        assert spans["handler"].trace_id == trace_id_for(rid)
