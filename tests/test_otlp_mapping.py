"""Tests for fgext.otlp._mapping and _resource: events to spans, log records, metrics and a resource."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, Dict, List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from fgext._events import parse_batch
from fgext._urn import parse_urn
from fgext.otlp._export import encode_logs_requests, encode_trace_requests
from fgext.otlp._mapping import Mapper, Metrics, trace_id_for
from fgext.otlp._resource import ResourceBuilder

INIT_ID = "69be64a7-0233-11e8-82e4-e5d37911193e"  # the spec's init examples
INVOKE_ID = "3da1f2dc-3222-475e-9205-e2e6c6318895"  # the spec's invoke example
POD = "pool22-300-128-fusion-64774779-4g77v"


class Clock:
    """A hand-driven monotonic clock, so deadlines are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_mapper(clock: Optional[Clock] = None, *, open_wait: float = 60.0, timeout: float = 30.0,
                temporality: str = "cumulative") -> Mapper:
    resource = ResourceBuilder({}, function_name="hello", function_version="latest")
    return Mapper(resource, Metrics(temporality, 1), open_wait_s=open_wait, function_timeout_s=timeout,
                  monotonic=clock or Clock())


def events(*objects: Dict[str, Any]) -> List[Any]:
    batch = parse_batch(list(objects))
    assert not batch.errors, batch.errors
    return batch.events


def ts(ms: int) -> str:
    return f"2023-02-01T00:03:{50 + ms // 1000:02d}.{ms % 1000:03d}Z"


def ns(ms: int) -> int:
    return 1675209830_000_000_000 + ms * 1_000_000


def start(rid: str, ms: int, name: str = "platform.start") -> Dict[str, Any]:
    return {"name": name, "startTime": ts(ms), "traceId": rid}


def done(rid: str, ms: int, status: str = "success", name: str = "platform.RuntimeDone") -> Dict[str, Any]:
    return {"name": name, "startTime": ts(ms), "tracelId": rid, "status": status}


def report(rid: str, begin: int, end: int, status: str = "success", name: str = "platform.report",
           **metrics: Any) -> Dict[str, Any]:
    values = {"durationMs": float(end - begin), "billingDurationMS": float(end - begin + 1),
              "memoryUsed": 23.4, "memorySize": 128, "podName": POD}
    values.update(metrics)
    return {"name": name, "startTime": ts(begin), "tracelId": rid, "endTime": ts(end), "status": status,
            "reportMetrics": values}


def log(ms: int, text: str, name: str = "function") -> Dict[str, Any]:
    return {"name": name, "startTime": ts(ms), "logs": text}


def invocation(rid: str, begin: int, end: int, status: str = "success") -> List[Dict[str, Any]]:
    return [start(rid, begin), done(rid, end, status), report(rid, begin, end + 1, status)]


def cold(rid: str, begin: int) -> List[Dict[str, Any]]:
    return [start(rid, begin, "platform.initStart"), done(rid, begin + 10, name="platform.initRuntimeDone"),
            report(rid, begin, begin + 11, name="platform.initReport")]


def by_name(spans: List[Span]) -> Dict[str, Span]:
    return {span.name: span for span in spans}


def attrs(message: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kv in message.attributes:
        out[kv.key] = getattr(kv.value, kv.value.WhichOneof("value"))
    return out


def encoded_logs(mapper: Mapper) -> List[LogRecord]:
    records: List[LogRecord] = []
    for data, _ in encode_logs_requests(mapper.resource.message(), mapper.take_logs(), mapper):
        request = ExportLogsServiceRequest.FromString(data)
        records.extend(request.resource_logs[0].scope_logs[0].log_records)
    return records


class TestTraceId:
    def test_uuid_request_id_gives_its_own_bytes(self) -> None:
        """A UUID request ID becomes the trace ID byte for byte (hex without dashes)."""
        assert trace_id_for(INVOKE_ID).hex() == INVOKE_ID.replace("-", "")

    def test_other_request_id_gives_sha256_prefix(self) -> None:
        """A request ID that is not a UUID gives the first 16 bytes of its SHA-256."""
        assert trace_id_for("req-42") == hashlib.sha256(b"req-42").digest()[:16]

    def test_nil_uuid_is_not_an_invalid_trace_id(self) -> None:
        """The all-zero UUID would be an invalid trace ID, so it is hashed instead."""
        nil = str(uuid.UUID(int=0))
        assert trace_id_for(nil) == hashlib.sha256(nil.encode()).digest()[:16]


class TestSpecExamples:
    def test_cold_invocation_is_one_waterfall(self) -> None:
        """initStart..report of one request give a SERVER root with init and invoke children."""
        mapper = make_mapper()
        completed = mapper.consume(events(*cold(INIT_ID, 0), *invocation(INIT_ID, 20, 30)))
        assert completed == 1
        spans = by_name(mapper.take_spans())
        assert set(spans) == {"hello", "init", "invoke"}
        root, init, invoke = spans["hello"], spans["init"], spans["invoke"]
        trace = bytes.fromhex(INIT_ID.replace("-", ""))
        assert {root.trace_id, init.trace_id, invoke.trace_id} == {trace}
        assert root.kind == Span.SPAN_KIND_SERVER and root.parent_span_id == b""
        assert init.parent_span_id == root.span_id == invoke.parent_span_id
        assert len({root.span_id, init.span_id, invoke.span_id}) == 3
        assert (root.start_time_unix_nano, root.end_time_unix_nano) == (ns(0), ns(31))
        assert (init.start_time_unix_nano, init.end_time_unix_nano) == (ns(0), ns(11))
        assert (invoke.start_time_unix_nano, invoke.end_time_unix_nano) == (ns(20), ns(31))
        assert attrs(root) == {"faas.invocation_id": INIT_ID, "faas.coldstart": True, "faas.trigger": "other"}
        assert root.flags & 0xFF == 0x01  # sampled, and not the W3C "random" flag
        assert attrs(init)["fgext.report.pod_name"] == POD
        assert attrs(invoke)["fgext.report.duration_ms"] == 11.0
        assert attrs(invoke)["fgext.report.billed_duration_ms"] == 12.0
        assert attrs(invoke)["fgext.report.memory_used_mb"] == 23.4
        assert attrs(invoke)["fgext.report.memory_size_mb"] == 128
        assert root.status.code == Status.STATUS_CODE_UNSET

    def test_spec_init_example_verbatim(self) -> None:
        """The document's three init examples (traceId/tracelId, reportMetrics) give an init span."""
        mapper = make_mapper()
        mapper.consume(events(
            {"name": "platform.initStart", "startTime": "2023-02-01T00:03:50.000Z", "traceId": INIT_ID},
            {"name": "platform.initRuntimeDone", "startTime": "2023-02-01T00:03:50.000Z", "tracelId": INIT_ID,
             "status": "success"},
            {"name": "platform.initReport", "startTime": "2023-02-01T00:03:50.000Z", "tracelId": INIT_ID,
             "endTime": "2023-02-02T00:03:50.000Z", "status": "success",
             "reportMetrics": {"durationMs": 10.6, "billingDurationMS": 11, "memoryUsed": 23.4,
                               "memorySize": 128, "podName": POD}},
        ))
        assert mapper.take_spans() == []  # an init waits for its invocation
        mapper.expire(everything=True)
        spans = by_name(mapper.take_spans())
        assert set(spans) == {"hello", "init"}
        assert spans["init"].end_time_unix_nano == ns(0) + 86400 * 10**9
        assert attrs(spans["init"])["fgext.report.duration_ms"] == 10.6
        assert attrs(spans["hello"])["faas.coldstart"] is True
        assert mapper.resource.attributes()["faas.instance"] == POD

    def test_warm_invocation_has_no_init(self) -> None:
        """A request without init starts its root at platform.start and is not a cold start."""
        mapper = make_mapper()
        mapper.consume(events(*invocation(INVOKE_ID, 100, 150)))
        spans = by_name(mapper.take_spans())
        assert set(spans) == {"hello", "invoke"}
        assert spans["hello"].start_time_unix_nano == ns(100)
        assert attrs(spans["hello"])["faas.coldstart"] is False

    def test_failed_status_sets_error_on_span_and_root(self) -> None:
        """A status other than success marks the phase span and the root ERROR with the platform's text."""
        mapper = make_mapper()
        mapper.consume(events(*invocation(INVOKE_ID, 0, 10, status=" function invocation timed out ")))
        spans = by_name(mapper.take_spans())
        assert spans["invoke"].status.code == Status.STATUS_CODE_ERROR
        assert spans["invoke"].status.message == "function invocation timed out"
        assert spans["hello"].status.code == Status.STATUS_CODE_ERROR

    def test_init_error_is_named_on_root(self) -> None:
        """A failed init marks its span ERROR and the root says which phase failed."""
        mapper = make_mapper()
        batch = cold(INIT_ID, 0)
        batch[2] = report(INIT_ID, 0, 11, status="error", name="platform.initReport")
        mapper.consume(events(*batch, *invocation(INIT_ID, 20, 30)))
        spans = by_name(mapper.take_spans())
        assert spans["init"].status.code == Status.STATUS_CODE_ERROR
        assert spans["hello"].status.message == "init: error"

    def test_restore_phase_becomes_restore_span(self) -> None:
        """restoreStart/restoreRuntimeDone/restoreReport give a ``restore`` child and a cold start."""
        mapper = make_mapper()
        mapper.consume(events(
            start(INVOKE_ID, 0, "platform.restoreStart"),
            done(INVOKE_ID, 5, name="platform.restoreRuntimeDone"),
            report(INVOKE_ID, 0, 6, name="platform.restoreReport"), *invocation(INVOKE_ID, 10, 20),
        ))
        spans = by_name(mapper.take_spans())
        assert set(spans) == {"hello", "restore", "invoke"}
        assert attrs(spans["hello"])["faas.coldstart"] is True


class TestOrdering:
    def test_out_of_order_and_split_batches_give_the_same_trace(self) -> None:
        """Reversed events across several POSTs still give one complete waterfall."""
        mapper = make_mapper()
        reversed_events = list(reversed(cold(INIT_ID, 0) + invocation(INIT_ID, 20, 30)))
        # the invoke report first closes the request; the rest of the batch is late but joins it
        for single in reversed_events[:1]:
            mapper.consume(events(single))
        first = by_name(mapper.take_spans())
        assert set(first) == {"hello", "invoke"}
        mapper.consume(events(*reversed_events[1:4]))
        mapper.consume(events(*reversed_events[4:]))
        late = by_name(mapper.take_spans())
        assert set(late) == {"init"}
        assert late["init"].trace_id == first["hello"].trace_id
        assert late["init"].parent_span_id == first["hello"].span_id
        # the invoke's start and done add nothing after its report, nor the init's after the initReport
        assert mapper.late_events == 4

    def test_split_batches_in_order_wait_for_the_report(self) -> None:
        """A request split over POSTs is written once its report arrives, not before."""
        mapper = make_mapper()
        batch = invocation(INVOKE_ID, 0, 10)
        assert mapper.consume(events(batch[0])) == 0
        assert mapper.consume(events(batch[1])) == 0
        assert mapper.take_spans() == []
        assert mapper.consume(events(batch[2])) == 1
        assert {s.name for s in mapper.take_spans()} == {"hello", "invoke"}

    def test_done_without_report_closes_after_the_wait_marked_incomplete(self) -> None:
        """With no report, the root ends at the done event once the bounded wait has passed."""
        clock = Clock()
        mapper = make_mapper(clock, open_wait=40)
        mapper.consume(events(start(INVOKE_ID, 0), done(INVOKE_ID, 10)))
        clock.now += 39
        assert mapper.expire() == 0
        clock.now += 2
        assert mapper.expire() == 1
        spans = by_name(mapper.take_spans())
        assert spans["hello"].end_time_unix_nano == ns(10)
        assert attrs(spans["hello"])["fgext.incomplete"] is True
        assert attrs(spans["hello"])["fgext.close_reason"] == "timeout"
        assert "fgext.incomplete" not in attrs(spans["invoke"])

    def test_never_ending_invocation_is_closed_at_shutdown(self) -> None:
        """A start with nothing after it is still written at shutdown, marked incomplete, never lost."""
        mapper = make_mapper()
        mapper.consume(events(start(INVOKE_ID, 0)))
        assert mapper.expire(everything=True) == 1
        spans = by_name(mapper.take_spans())
        assert attrs(spans["invoke"])["fgext.incomplete"] is True
        assert attrs(spans["hello"])["fgext.close_reason"] == "shutdown"
        assert spans["invoke"].end_time_unix_nano >= spans["invoke"].start_time_unix_nano

    def test_unclaimed_init_is_adopted_by_the_first_invocation_after_it(self) -> None:
        """An init whose ID never starts (like the spec's unrelated example IDs) joins the next invocation."""
        mapper = make_mapper()
        mapper.consume(events(*cold(INIT_ID, 0)))
        mapper.consume(events(*invocation(INVOKE_ID, 20, 30)))
        spans = by_name(mapper.take_spans())
        assert set(spans) == {"hello", "init", "invoke"}
        assert spans["init"].trace_id == trace_id_for(INVOKE_ID)
        assert spans["init"].parent_span_id == spans["hello"].span_id
        assert spans["hello"].start_time_unix_nano == ns(0)
        assert attrs(spans["hello"])["faas.coldstart"] is True
        assert attrs(spans["hello"])["fgext.init.request_id"] == INIT_ID
        assert mapper.open_requests == 0

    @settings(max_examples=150, deadline=None)
    @given(order=st.permutations(range(6)), cuts=st.sets(st.integers(1, 5)))
    def test_any_order_and_split_gives_each_span_exactly_once(self, order: List[int], cuts: set) -> None:  # type: ignore[type-arg]
        """Whatever the order and POST boundaries, a cold request yields one root, one init, one invoke."""
        mapper = make_mapper()
        objects = cold(INIT_ID, 0) + invocation(INIT_ID, 20, 30)
        shuffled = [objects[i] for i in order]
        bounds = [0, *sorted(cuts), len(shuffled)]
        for first, last in zip(bounds, bounds[1:]):
            mapper.consume(events(*shuffled[first:last]))
        mapper.expire(everything=True)
        spans = mapper.take_spans()
        assert sorted(s.name for s in spans) == ["hello", "init", "invoke"]
        assert {s.trace_id for s in spans} == {trace_id_for(INIT_ID)}
        root = next(s for s in spans if s.name == "hello")
        assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
        assert mapper.open_requests == 0

    def test_capacity_bound_closes_the_oldest(self) -> None:
        """More open requests than the bound close the oldest as incomplete: memory stays bounded."""
        resource = ResourceBuilder({}, function_name="f")
        mapper = Mapper(resource, Metrics("cumulative", 0), open_wait_s=60, function_timeout_s=30,
                        max_open=3)
        mapper.consume(events(*(start(f"req-{i}", i) for i in range(5))))
        assert mapper.open_requests == 3
        roots = [s for s in mapper.take_spans() if s.name == "f"]
        assert sorted(attrs(s)["faas.invocation_id"] for s in roots) == ["req-0", "req-1"]
        assert all(attrs(s)["fgext.close_reason"] == "capacity" for s in roots)


class TestLogs:
    def test_log_record_fields(self) -> None:
        """Body without marker, time from startTime, severity from the level word, source attribute."""
        mapper = make_mapper()
        mapper.consume(events(log(5, "[Function]WARNING disk almost full"), log(6, "[Extension]plain line",
                                                                               name="extension")))
        first, second = encoded_logs(mapper)
        assert first.body.string_value == "WARNING disk almost full"
        assert first.time_unix_nano == ns(5) and first.observed_time_unix_nano > ns(5)
        assert (first.severity_number, first.severity_text) == (13, "WARNING")
        assert attrs(first) == {"fgext.log.source": "function"}
        assert second.severity_number == 0 and attrs(second) == {"fgext.log.source": "extension"}
        assert first.trace_id == b"" and first.span_id == b""

    def test_severity_words(self) -> None:
        """Each level word maps to the OTel severity number; lower-case words inside text do not."""
        mapper = make_mapper()
        lines = ["DEBUG a", "[INFO] b", "x WARN c", "ERROR: d", "CRITICAL e", "FATAL f", "no error here"]
        mapper.consume(events(*(log(i, "[Function]" + text) for i, text in enumerate(lines))))
        assert [r.severity_number for r in encoded_logs(mapper)] == [5, 9, 13, 17, 21, 21, 0]

    def test_log_inside_one_invocation_is_correlated(self) -> None:
        """A line printed while exactly one invocation ran carries its trace ID, span ID and request ID."""
        mapper = make_mapper()
        mapper.consume(events(start(INVOKE_ID, 0), log(5, "[Function]hi"), done(INVOKE_ID, 10),
                              report(INVOKE_ID, 0, 11), log(50, "[Function]after")))
        spans = by_name(mapper.take_spans())
        inside, after = encoded_logs(mapper)
        assert inside.trace_id == spans["invoke"].trace_id
        assert inside.span_id == spans["invoke"].span_id
        assert attrs(inside)["faas.invocation_id"] == INVOKE_ID
        assert after.trace_id == b"" and "faas.invocation_id" not in attrs(after)

    def test_log_arriving_before_its_start_event_is_still_correlated(self) -> None:
        """Correlation happens at export, so a start event in a later POST still counts."""
        mapper = make_mapper()
        mapper.consume(events(log(5, "[Function]early")))
        mapper.consume(events(*invocation(INVOKE_ID, 0, 10)))
        (record,) = encoded_logs(mapper)
        assert attrs(record)["faas.invocation_id"] == INVOKE_ID

    def test_start_arriving_after_done_still_covers_early_lines(self) -> None:
        """A line early in a phase whose start event came after its done event is still correlated."""
        mapper = make_mapper()
        mapper.consume(events(done(INVOKE_ID, 10)))
        mapper.consume(events(start(INVOKE_ID, 0), log(2, "[Function]early"), report(INVOKE_ID, 0, 11)))
        (record,) = encoded_logs(mapper)
        assert attrs(record)["faas.invocation_id"] == INVOKE_ID

    def test_init_log_is_correlated_with_the_init_span(self) -> None:
        """A line printed during init belongs to the init span of the request that caused it."""
        mapper = make_mapper()
        mapper.consume(events(*cold(INIT_ID, 0)[:1], log(3, "[Function]importing"), *cold(INIT_ID, 0)[1:],
                              *invocation(INIT_ID, 20, 30)))
        spans = by_name(mapper.take_spans())
        (record,) = encoded_logs(mapper)
        assert record.span_id == spans["init"].span_id

    def test_overlapping_invocations_leave_lines_uncorrelated(self) -> None:
        """With two invocations open at once, a line in the overlap is not guessed."""
        other = "5d2b0a7e-1111-4222-8333-944455556666"
        mapper = make_mapper()
        mapper.consume(events(start(INVOKE_ID, 0), log(5, "[Function]only first"), start(other, 10),
                              log(15, "[Function]both"), done(INVOKE_ID, 20), report(INVOKE_ID, 0, 21),
                              log(25, "[Function]only second"), done(other, 30), report(other, 10, 31)))
        first_only, both, second_only = encoded_logs(mapper)
        assert attrs(first_only)["faas.invocation_id"] == INVOKE_ID
        assert both.trace_id == b"" and "faas.invocation_id" not in attrs(both)
        assert attrs(second_only)["faas.invocation_id"] == other

    def test_written_phase_keeps_its_extent_not_its_report(self) -> None:
        """After its span is written a phase lets its report event go (memory: it stays indexed for a while),
        and a line that arrives later in the phase's interval is still correlated with it."""
        import gc
        import weakref

        mapper = make_mapper()
        batch = events(*invocation(INVOKE_ID, 0, 10))
        watched = weakref.ref(batch[-1])
        mapper.consume(batch)
        spans = by_name(mapper.take_spans())
        del batch
        gc.collect()
        assert watched() is None, "the written phase still holds its report event"
        mapper.consume(events(log(5, "[Function]late line")))
        (record,) = encoded_logs(mapper)
        assert record.span_id == spans["invoke"].span_id
        assert attrs(record)["faas.invocation_id"] == INVOKE_ID

    def test_correlation_index_is_bounded(self) -> None:
        """Only the last ~64 phases are indexed: a line for an invocation 200 invocations back is left
        uncorrelated rather than kept searchable forever."""
        mapper = make_mapper()
        for index in range(200):
            mapper.consume(events(*invocation(f"00000000-0000-4000-8000-{index:012d}", index * 20,
                                              index * 20 + 10)))
        mapper.consume(events(log(5, "[Function]very late"), log(199 * 20 + 5, "[Function]recent")))
        old, recent = encoded_logs(mapper)
        assert old.trace_id == b""
        assert attrs(recent)["faas.invocation_id"] == f"00000000-0000-4000-8000-{199:012d}"

    def test_lone_surrogates_are_escaped_not_fatal(self) -> None:
        """JSON may carry a lone surrogate ("\\ud800"), which UTF-8 cannot encode: in a log line, a request
        ID, a status or an unknown event's name it is written as its escape, and nothing else is lost."""
        rid = "req-\ud800"
        mapper = make_mapper()
        mapper.consume(events(start(rid, 0), log(5, "[Function]bad \udcff byte"), done(rid, 10, "fail\ud800"),
                              report(rid, 0, 11, "fail\ud800"), {"name": "odd\ud800", "startTime": ts(6)},
                              log(7, "[Function]fine")))
        spans = by_name(mapper.take_spans())
        trace = ExportTraceServiceRequest.FromString(
            encode_trace_requests(mapper.resource.message(), list(spans.values()))[0][0])
        root = trace.resource_spans[0].scope_spans[0].spans[1]
        assert attrs(root)["faas.invocation_id"] == "req-\\ud800"
        assert spans["invoke"].status.message == "fail\\ud800"
        bad, odd, fine = encoded_logs(mapper)
        assert bad.body.string_value == "bad \\udcff byte"
        assert attrs(bad)["faas.invocation_id"] == "req-\\ud800"
        assert attrs(odd)["fgext.event.name"] == "odd\\ud800" and "\\ud800" in odd.body.string_value
        assert fine.body.string_value == "fine"

    @settings(max_examples=150, deadline=None)
    @given(st.text(st.characters(blacklist_categories=())), st.text(st.characters(blacklist_categories=()),
                                                                     min_size=1))
    def test_any_text_encodes(self, text: str, rid: str) -> None:
        """Whatever text the platform sends (surrogates included) as a line, a status or a request ID, the
        mapping and the encoding of all three signals never raise, and each line becomes one record."""
        mapper = make_mapper()
        rid = rid.strip() or "x"
        mapper.consume(events(start(rid, 0), log(5, "[Function]" + text), done(rid, 10, text or "ok"),
                              report(rid, 0, 11, text or "ok"), {"name": "odd" + text, "startTime": ts(6)}))
        spans = mapper.take_spans()
        encode_trace_requests(mapper.resource.message(), spans)
        assert len(spans) == 2 and len(encoded_logs(mapper)) == 2

    def test_unknown_event_is_kept_as_a_log_record(self) -> None:
        """An event name fgext does not know is exported whole, never dropped."""
        mapper = make_mapper()
        mapper.consume(events({"name": "platform.somethingNew", "startTime": ts(1), "value": 7}))
        (record,) = encoded_logs(mapper)
        assert attrs(record)["fgext.event.name"] == "platform.somethingNew"
        assert '"value": 7' in record.body.string_value
        assert record.time_unix_nano == ns(1)


class TestMetrics:
    def _values(self, mapper: Mapper) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for metric in mapper.metrics.snapshot(ns(1000)):
            if metric.HasField("sum"):
                out[metric.name] = sum(p.as_int for p in metric.sum.data_points)
            else:
                point = metric.histogram.data_points[0]
                out[metric.name] = (point.count, round(point.sum, 6))
        return out

    def test_faas_metrics_from_reports(self) -> None:
        """Invocations, errors, timeouts, cold starts and the duration/memory histograms follow reports."""
        mapper = make_mapper()
        mapper.consume(events(*cold(INIT_ID, 0), *invocation(INIT_ID, 20, 30),
                              *invocation(INVOKE_ID, 100, 120, status="timeout")))
        values = self._values(mapper)
        assert values["faas.invocations"] == 2
        assert values["faas.errors"] == 1
        assert values["faas.timeouts"] == 1
        assert values["faas.coldstarts"] == 1
        assert values["faas.invoke_duration"] == (2, 0.032)  # 11 ms + 21 ms, from durationMs
        assert values["faas.init_duration"] == (1, 0.011)
        assert values["faas.mem_usage"] == (2, round(2 * 23.4 * 1024 * 1024, 6))
        assert values["fgext.faas.billed_duration"] == (2, 0.034)

    def test_snapshot_only_when_something_changed(self) -> None:
        """No new data, no metric export."""
        mapper = make_mapper()
        assert mapper.metrics.snapshot(1) == []
        mapper.consume(events(*invocation(INVOKE_ID, 0, 10)))
        assert mapper.metrics.snapshot(2) != []
        assert mapper.metrics.snapshot(3) == []

    def test_delta_temporality_resets(self) -> None:
        """With delta temporality each snapshot counts only what happened since the previous one."""
        mapper = make_mapper(temporality="delta")
        mapper.consume(events(*invocation(INVOKE_ID, 0, 10)))
        assert self._values(mapper)["faas.invocations"] == 1
        mapper.consume(events(*invocation("req-2", 20, 30)))
        assert self._values(mapper)["faas.invocations"] == 1

    def test_histogram_buckets_are_upper_inclusive(self) -> None:
        """A value equal to a bound falls in that bound's bucket, as OTLP defines it."""
        mapper = make_mapper()
        mapper.metrics.record("faas.invoke_duration", 0.01)
        metric = next(m for m in mapper.metrics.snapshot(5) if m.name == "faas.invoke_duration")
        assert list(metric.histogram.data_points[0].bucket_counts)[:3] == [0, 1, 0]


class TestResource:
    def test_resource_from_every_source(self) -> None:
        """Registration, RUNTIME_* variables, the invoked URN and reports all fill resource attributes."""
        builder = ResourceBuilder(
            {"RUNTIME_MEMORY": "256", "RUNTIME_PROJECT_ID": "proj-env", "RUNTIME_PACKAGE": "default"},
            function_name="hello", function_version="v1",
        )
        builder.note_urn(parse_urn("urn:fss:cn-north-4:proj-urn:function:default:hello:latest"))
        builder.note_report(POD, 128)
        values = builder.attributes()
        assert values["service.name"] == "hello"
        assert values["faas.name"] == "hello" and values["faas.version"] == "v1"
        assert values["faas.max_memory"] == 256 * 1024 * 1024  # RUNTIME_MEMORY first, in bytes
        assert values["faas.instance"] == POD
        assert values["cloud.provider"] == "huawei_cloud"
        assert values["cloud.platform"] == "huawei_cloud.functiongraph"
        assert values["cloud.region"] == "cn-north-4"
        assert values["huawei_cloud.project.id"] == "proj-env"
        assert values["cloud.resource_id"] == "urn:fss:cn-north-4:proj-urn:function:default:hello:latest"

    def test_user_attributes_and_service_name_win(self) -> None:
        """OTEL_RESOURCE_ATTRIBUTES overrides detected values and OTEL_SERVICE_NAME beats both."""
        builder = ResourceBuilder({}, function_name="hello", service_name="svc",
                                  user_attributes={"cloud.region": "mine", "service.name": "ignored",
                                                   "team": "a"})
        builder.note_urn(parse_urn("sn:cn:cn-east-3:tenant:function:0@pkg@hello:latest"))
        values = builder.attributes()
        assert values["cloud.region"] == "mine" and values["team"] == "a"
        assert values["service.name"] == "svc"

    def test_message_is_rebuilt_when_an_attribute_changes(self) -> None:
        """The cached resource message reflects the region learnt from a later invoke."""
        builder = ResourceBuilder({}, function_name="hello")
        first = builder.message()
        assert builder.message() is first
        builder.note_urn(parse_urn("urn:fss:ap-southeast-1:p:function:default:hello"))
        assert "cloud.region" in {kv.key for kv in builder.message().attributes}

    def test_trace_request_carries_resource_and_scope(self) -> None:
        """An encoded trace request holds the resource, the fgext scope and every span."""
        mapper = make_mapper()
        mapper.consume(events(*invocation(INVOKE_ID, 0, 10)))
        ((data, items),) = encode_trace_requests(mapper.resource.message(), mapper.take_spans())
        request = ExportTraceServiceRequest.FromString(data)
        assert items == 2
        scope_spans = request.resource_spans[0].scope_spans[0]
        assert scope_spans.scope.name == "fgext.otlp"
        assert len(scope_spans.spans) == 2
        assert attrs(request.resource_spans[0].resource)["faas.name"] == "hello"
