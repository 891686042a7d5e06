"""Tests for fgext.otlp._traces: events to one trace per request, in any order, each value checked."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from fgext._parse import parse_batch
from fgext._sampling import HeadSampler, TailRule
from fgext.otlp._ids import span_id_for, trace_id_for
from fgext.otlp._metrics import Metrics
from fgext.otlp._requests import encode_logs_requests, encode_metrics_request, encode_trace_requests
from fgext.otlp._resource import ResourceBuilder
from fgext.otlp._traces import Assembler
from tests.otlp_helpers import (
    INIT_ID,
    INVOKE_ID,
    POD,
    Clock,
    attrs,
    by_name,
    cold,
    done,
    encoded_logs,
    events,
    invocation,
    log,
    make_assembler,
    ns,
    report,
    start,
    take_spans,
)


class TestSpecExamples:
    def test_cold_invocation_is_one_waterfall(self) -> None:
        """initStart..report of one request give a SERVER root with init and invoke children."""
        assembler = make_assembler()
        completed = assembler.consume(events(*cold(INIT_ID, 0), *invocation(INIT_ID, 20, 30)))
        assert completed == 1
        spans = by_name(take_spans(assembler))
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
        assembler = make_assembler()
        assembler.consume(events(
            {"name": "platform.initStart", "startTime": "2023-02-01T00:03:50.000Z", "traceId": INIT_ID},
            {"name": "platform.initRuntimeDone", "startTime": "2023-02-01T00:03:50.000Z", "tracelId": INIT_ID,
             "status": "success"},
            {"name": "platform.initReport", "startTime": "2023-02-01T00:03:50.000Z", "tracelId": INIT_ID,
             "endTime": "2023-02-02T00:03:50.000Z", "status": "success",
             "reportMetrics": {"durationMs": 10.6, "billingDurationMS": 11, "memoryUsed": 23.4,
                               "memorySize": 128, "podName": POD}},
        ))
        assert take_spans(assembler) == []  # an init waits for its invocation
        assembler.expire(everything=True)
        spans = by_name(take_spans(assembler))
        assert set(spans) == {"hello", "init"}
        assert spans["init"].end_time_unix_nano == ns(0) + 86400 * 10**9
        assert attrs(spans["init"])["fgext.report.duration_ms"] == 10.6
        assert attrs(spans["hello"])["faas.coldstart"] is True
        assert assembler.resource.attributes()["faas.instance"] == POD

    def test_warm_invocation_has_no_init(self) -> None:
        """A request without init starts its root at platform.start and is not a cold start."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 100, 150)))
        spans = by_name(take_spans(assembler))
        assert set(spans) == {"hello", "invoke"}
        assert spans["hello"].start_time_unix_nano == ns(100)
        assert attrs(spans["hello"])["faas.coldstart"] is False

    def test_failed_status_sets_error_on_span_and_root(self) -> None:
        """A status other than success marks the phase span and the root ERROR with the platform's text."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10, status=" function invocation timed out ")))
        spans = by_name(take_spans(assembler))
        assert spans["invoke"].status.code == Status.STATUS_CODE_ERROR
        assert spans["invoke"].status.message == "function invocation timed out"
        assert spans["hello"].status.code == Status.STATUS_CODE_ERROR

    def test_init_error_is_named_on_root(self) -> None:
        """A failed init marks its span ERROR and the root says which phase failed."""
        assembler = make_assembler()
        batch = cold(INIT_ID, 0)
        batch[2] = report(INIT_ID, 0, 11, status="error", name="platform.initReport")
        assembler.consume(events(*batch, *invocation(INIT_ID, 20, 30)))
        spans = by_name(take_spans(assembler))
        assert spans["init"].status.code == Status.STATUS_CODE_ERROR
        assert spans["hello"].status.message == "init: error"

    def test_restore_phase_becomes_restore_span(self) -> None:
        """restoreStart/restoreRuntimeDone/restoreReport give a ``restore`` child and a cold start."""
        assembler = make_assembler()
        assembler.consume(events(
            start(INVOKE_ID, 0, "platform.restoreStart"),
            done(INVOKE_ID, 5, name="platform.restoreRuntimeDone"),
            report(INVOKE_ID, 0, 6, name="platform.restoreReport"), *invocation(INVOKE_ID, 10, 20),
        ))
        spans = by_name(take_spans(assembler))
        assert set(spans) == {"hello", "restore", "invoke"}
        assert attrs(spans["hello"])["faas.coldstart"] is True


class TestDerivedIds:
    def test_root_and_invoke_span_ids_derive_from_the_request_id(self) -> None:
        """The root and invoke spans' IDs are span_id_for(request ID, "root"/"invoke"), so a function that
        knows its request ID can parent its own spans to ``invoke``; init keeps a random ID."""
        assembler = make_assembler()
        assembler.consume(events(*cold(INIT_ID, 0), *invocation(INIT_ID, 20, 30)))
        spans = by_name(take_spans(assembler))
        assert spans["hello"].span_id == span_id_for(INIT_ID, "root")
        assert spans["invoke"].span_id == span_id_for(INIT_ID, "invoke")
        assert spans["invoke"].parent_span_id == span_id_for(INIT_ID, "root")
        assert spans["init"].span_id not in (span_id_for(INIT_ID, "root"), span_id_for(INIT_ID, "invoke"))


class TestOrdering:
    def test_out_of_order_and_split_batches_give_the_same_trace(self) -> None:
        """Reversed events across several POSTs still give one complete waterfall."""
        assembler = make_assembler()
        reversed_events = list(reversed(cold(INIT_ID, 0) + invocation(INIT_ID, 20, 30)))
        # the invoke report first closes the request; the rest of the batch is late but joins it
        for single in reversed_events[:1]:
            assembler.consume(events(single))
        first = by_name(take_spans(assembler))
        assert set(first) == {"hello", "invoke"}
        assembler.consume(events(*reversed_events[1:4]))
        assembler.consume(events(*reversed_events[4:]))
        late = by_name(take_spans(assembler))
        assert set(late) == {"init"}
        assert late["init"].trace_id == first["hello"].trace_id
        assert late["init"].parent_span_id == first["hello"].span_id
        # the invoke's start and done add nothing after its report, nor the init's after the initReport
        assert assembler.late_events == 4

    def test_split_batches_in_order_wait_for_the_report(self) -> None:
        """A request split over POSTs is written once its report arrives, not before."""
        assembler = make_assembler()
        batch = invocation(INVOKE_ID, 0, 10)
        assert assembler.consume(events(batch[0])) == 0
        assert assembler.consume(events(batch[1])) == 0
        assert take_spans(assembler) == []
        assert assembler.consume(events(batch[2])) == 1
        assert {s.name for s in take_spans(assembler)} == {"hello", "invoke"}

    def test_done_without_report_closes_after_the_wait_marked_incomplete(self) -> None:
        """With no report, the root ends at the done event once the bounded wait has passed."""
        clock = Clock()
        assembler = make_assembler(clock, open_wait=40)
        assembler.consume(events(start(INVOKE_ID, 0), done(INVOKE_ID, 10)))
        clock.now += 39
        assert assembler.expire() == 0
        clock.now += 2
        assert assembler.expire() == 1
        spans = by_name(take_spans(assembler))
        assert spans["hello"].end_time_unix_nano == ns(10)
        assert attrs(spans["hello"])["fgext.incomplete"] is True
        assert attrs(spans["hello"])["fgext.close_reason"] == "timeout"
        assert "fgext.incomplete" not in attrs(spans["invoke"])

    def test_never_ending_invocation_is_closed_at_shutdown(self) -> None:
        """A start with nothing after it is still written at shutdown, marked incomplete, never lost."""
        assembler = make_assembler()
        assembler.consume(events(start(INVOKE_ID, 0)))
        assert assembler.expire(everything=True) == 1
        spans = by_name(take_spans(assembler))
        assert attrs(spans["invoke"])["fgext.incomplete"] is True
        assert attrs(spans["hello"])["fgext.close_reason"] == "shutdown"
        assert spans["invoke"].end_time_unix_nano >= spans["invoke"].start_time_unix_nano

    def test_unclaimed_init_is_adopted_by_the_first_invocation_after_it(self) -> None:
        """An init whose ID never starts (like the spec's unrelated example IDs) joins the next invocation."""
        assembler = make_assembler()
        assembler.consume(events(*cold(INIT_ID, 0)))
        assembler.consume(events(*invocation(INVOKE_ID, 20, 30)))
        spans = by_name(take_spans(assembler))
        assert set(spans) == {"hello", "init", "invoke"}
        assert spans["init"].trace_id == trace_id_for(INVOKE_ID)
        assert spans["init"].parent_span_id == spans["hello"].span_id
        assert spans["hello"].start_time_unix_nano == ns(0)
        assert attrs(spans["hello"])["faas.coldstart"] is True
        assert attrs(spans["hello"])["fgext.init.request_id"] == INIT_ID
        assert assembler.open_requests == 0

    @settings(max_examples=150, deadline=None)
    @given(order=st.permutations(range(6)), cuts=st.sets(st.integers(1, 5)))
    def test_any_order_and_split_gives_each_span_exactly_once(self, order: List[int], cuts: set) -> None:  # type: ignore[type-arg]
        """Whatever the order and POST boundaries, a cold request yields one root, one init, one invoke."""
        assembler = make_assembler()
        objects = cold(INIT_ID, 0) + invocation(INIT_ID, 20, 30)
        shuffled = [objects[i] for i in order]
        bounds = [0, *sorted(cuts), len(shuffled)]
        for first, last in zip(bounds, bounds[1:]):
            assembler.consume(events(*shuffled[first:last]))
        assembler.expire(everything=True)
        spans = take_spans(assembler)
        assert sorted(s.name for s in spans) == ["hello", "init", "invoke"]
        assert {s.trace_id for s in spans} == {trace_id_for(INIT_ID)}
        root = next(s for s in spans if s.name == "hello")
        assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
        assert assembler.open_requests == 0

    def test_capacity_bound_closes_the_oldest(self) -> None:
        """More open requests than the bound close the oldest as incomplete: memory stays bounded."""
        resource = ResourceBuilder({}, function_name="f")
        assembler = Assembler(resource, Metrics("cumulative", 0), open_wait_s=60, function_timeout_s=30,
                        max_open=3)
        assembler.consume(events(*(start(f"req-{i}", i) for i in range(5))))
        assert assembler.open_requests == 3
        roots = [s for s in take_spans(assembler) if s.name == "f"]
        assert sorted(attrs(s)["faas.invocation_id"] for s in roots) == ["req-0", "req-1"]
        assert all(attrs(s)["fgext.close_reason"] == "capacity" for s in roots)


    def test_a_phase_repeated_after_its_trace_was_written_is_late_not_a_new_trace(self) -> None:
        """The written traces are remembered (``_written``): the same phase of a request again, after its
        trace is out, is counted late and writes nothing."""
        assembler = make_assembler()
        assembler.consume(events(*[e for i in range(4) for e in invocation(f"req-{i}", 100 * i, 100 * i + 50)]))
        assert len(take_spans(assembler)) == 8
        assembler.consume(events(*invocation("req-0", 1000, 1050)))
        assert not take_spans(assembler)
        assert assembler.late_events == 3

    def test_the_last_256_written_requests_are_remembered(self) -> None:
        """What docs/otlp.md promises: a phase of the 256th-last written request is late; of the 257th-last, a new
        trace (the memory is bounded)."""
        assembler = make_assembler()
        assembler.consume(events(*[e for i in range(257) for e in invocation(f"req-{i}", 10 * i, 10 * i + 5)]))
        assert len(take_spans(assembler)) == 2 * 257
        assembler.consume(events(*invocation("req-1", 5000, 5005)))
        assert not take_spans(assembler) and assembler.late_events == 3
        assembler.consume(events(*invocation("req-0", 6000, 6005)))
        assert len(take_spans(assembler)) == 2 and assembler.late_events == 3

    def test_written_requests_leave_nothing_for_the_cyclic_collector(self) -> None:
        """Written requests are freed by reference counting alone: no request-phase cycle is left for gc (such
        survivors kept pymalloc's arenas, and RSS grew with the invocation count)."""
        import gc

        assembler = make_assembler()
        assembler.consume(events(*invocation("warm", 0, 5)))
        take_spans(assembler)
        gc.collect()
        gc.disable()
        try:
            assembler.consume(events(*[e for i in range(200) for e in invocation(f"req-{i}", 10 * i, 10 * i + 5)]))
            assert len(take_spans(assembler)) == 2 * 200
            assert gc.collect() == 0
        finally:
            gc.enable()

# ------------------------------------------------------------------------------ values at the boundary

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(blacklist_categories=())),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
EDGE_TIMES = st.sampled_from([
    "1969-12-31T23:59:59.999Z", "0001-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "2262-04-11T23:47:16.854Z",
    "2262-04-12T00:00:00Z", "1970-01-01T00:00:00.000Z", "2023-02-01T00:03:50.000Z", "2023-02-01T00:03:50+25:00",
])
HOSTILE = st.fixed_dictionaries(
    {"name": st.sampled_from(["platform.initStart", "platform.start", "platform.runtimeDone", "platform.report",
                              "platform.initReport", "platform.restoreReport", "function", "extension",
                              "platform.new"])},
    optional={
        "startTime": EDGE_TIMES | JSONISH, "endTime": EDGE_TIMES | JSONISH, "traceId": JSONISH,
        "tracelId": st.text(), "status": JSONISH, "logs": JSONISH,
        "reportMetrics": st.dictionaries(
            st.sampled_from(["durationMs", "billingDurationMS", "memoryUsed", "memorySize", "podName", "extra",
                             "huge"]),
            JSONISH | st.sampled_from([2**70, -(2**64), 1e20, 1e15, float("nan"), float("inf")]), max_size=6),
    },
)


class TestBoundary:
    def _export(self, assembler: Assembler) -> Dict[str, Any]:
        """Encode everything pending, as a flush does; return what came out."""
        pending = assembler.pending()
        message = assembler.resource.message()
        traces = encode_trace_requests(message, pending.spans)
        logs = encode_logs_requests(message, pending.lines, pending.links)
        assembler.taken(pending)
        metrics = encode_metrics_request(message, assembler.metrics.snapshot(ns(5000)))
        spans = [span for data, _ in traces.requests
                 for span in ExportTraceServiceRequest.FromString(data).resource_spans[0].scope_spans[0].spans]
        bodies = [record.body.string_value for data, _ in logs.requests
                  for record in ExportLogsServiceRequest.FromString(data).resource_logs[0].scope_logs[0].log_records]
        return {"spans": spans, "bodies": bodies,
                "unencodable": traces.unencodable + logs.unencodable + metrics.unencodable}

    @settings(max_examples=300, deadline=None)
    @given(hostile=st.lists(HOSTILE, min_size=1, max_size=3), position=st.integers(0, 9))
    def test_any_values_in_any_field_cost_only_their_event(self, hostile: List[Dict[str, Any]],
                                                            position: int) -> None:
        """Whatever values a batch's other events carry (dates of year 1, 1969 or 9999, 2**70, 1e20, NaN,
        nested JSON, wrong types), parsing, assembling and encoding never raise, and the valid request
        of the same batch is exported whole: its root and invoke spans and every one of its lines. (A
        hostile init or restore may be adopted by it, as any before an invocation is: that adds a span.)"""
        valid = [start(INVOKE_ID, 20), *(log(21 + i, f"[Function]valid {i}") for i in range(5)),
                 done(INVOKE_ID, 30), report(INVOKE_ID, 20, 31)]
        objects: List[Any] = list(valid)
        for offset, item in enumerate(hostile):
            objects.insert(min(position + offset, len(objects)), item)
        batch = parse_batch(objects)
        assembler = make_assembler()
        assembler.consume(batch.events)
        assembler.expire(everything=True)
        out = self._export(assembler)
        assert out["unencodable"] == 0 and assembler.rejected_events == 0
        mine = [span.name for span in out["spans"] if span.trace_id == trace_id_for(INVOKE_ID)]
        assert mine.count("hello") == 1 and mine.count("invoke") == 1
        assert set(mine) <= {"hello", "init", "restore", "invoke"}
        assert [body for body in out["bodies"] if body.startswith("valid ")] == [f"valid {i}" for i in range(5)]
        # ... and a later export still works
        assembler.consume(events(*invocation("00000000-0000-4000-8000-00000000a7e2", 100, 110)))
        assert sorted(span.name for span in self._export(assembler)["spans"]) == ["hello", "invoke"]

    def test_extra_metric_of_2_pow_70_is_exported_as_a_double(self) -> None:
        """An extra report metric beyond int64 stays on the span as a double, and the POST's other events
        are exported."""
        extra = report(INVOKE_ID, 0, 11, huge=2**70)
        assembler = make_assembler()
        assembler.consume(events(start(INVOKE_ID, 0), log(5, "[Function]kept"), done(INVOKE_ID, 10), extra))
        out = self._export(assembler)
        invoke = next(span for span in out["spans"] if span.name == "invoke")
        assert attrs(invoke)["fgext.report.huge"] == float(2**70)
        assert out["bodies"] == ["kept"] and out["unencodable"] == 0

    @pytest.mark.parametrize("size", [1e20, 1e15])
    def test_huge_memory_size_breaks_no_later_export(self, size: float) -> None:
        """memorySize 1e15 or 1e20 (RUNTIME_MEMORY unset) costs that value only: this export and later
        ones go out, the resource intact."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10)[:2], report(INVOKE_ID, 0, 11, memorySize=size)))
        first = self._export(assembler)
        assert len(first["spans"]) == 2 and "fgext.report.memory_size_mb" not in attrs(first["spans"][0])
        assembler.consume(events(*invocation("req-2", 100, 110)))
        assert len(self._export(assembler)["spans"]) == 2
        assert "faas.max_memory" in assembler.resource.attributes()  # from the later, valid report

    def test_an_event_the_assembler_cannot_take_is_dropped_alone(self) -> None:
        """An event that fails inside assembly (a value no check caught) is counted and skipped with any
        span it began; the batch's other events are assembled."""
        assembler = make_assembler()
        bad = events(start("bad", 0))[0]
        object.__setattr__(bad, "request_id", ["unhashable"])  # what no parser produces
        assembler.consume([bad, *events(*invocation(INVOKE_ID, 100, 110), log(105, "[Function]kept"))])
        assert assembler.rejected_events == 1
        out = self._export(assembler)
        assert sorted(span.name for span in out["spans"]) == ["hello", "invoke"] and out["bodies"] == ["kept"]


class TestSampling:
    """The head decision (``OTEL_TRACES_SAMPLER``) and the tail rule applied to fgext's own traces."""

    @staticmethod
    def sampled_assembler(name: str, ratio: Optional[float] = None, **tail: Any) -> Assembler:
        assembler = make_assembler()
        return Assembler(assembler.resource, assembler.metrics, open_wait_s=60.0, function_timeout_s=30.0,
                         monotonic=Clock(), head=HeadSampler(name, ratio), tail=TailRule(**tail))

    def test_an_unsampled_trace_exports_no_spans_and_is_counted(self) -> None:
        """always_off: the invocation's spans are let go and counted; its log line still leaves, flags 0."""
        assembler = self.sampled_assembler("always_off")
        assembler.consume(events(start(INVOKE_ID, 0), log(5, "[Function]hi"), done(INVOKE_ID, 10),
                                 report(INVOKE_ID, 0, 11)))
        assert take_spans(assembler) == []
        assert (assembler.unsampled_traces, assembler.unsampled_spans) == (1, 2)
        (line,) = encoded_logs(assembler)
        assert attrs(line)["faas.invocation_id"] == INVOKE_ID and line.flags == 0
        assert assembler.metrics.dirty  # the invocation is still counted in the metrics

    def test_a_sampled_trace_is_exported_and_its_lines_say_sampled(self) -> None:
        """always_on: spans leave, log lines carry the sampled flag."""
        assembler = self.sampled_assembler("always_on")
        assembler.consume(events(start(INVOKE_ID, 0), log(5, "[Function]hi"), done(INVOKE_ID, 10),
                                 report(INVOKE_ID, 0, 11)))
        assert len(take_spans(assembler)) == 2 and assembler.unsampled_traces == 0
        (line,) = encoded_logs(assembler)
        assert line.flags == 1

    @pytest.mark.parametrize("status", ["error", "timeout"])
    def test_the_tail_rule_keeps_errors_and_timeouts(self, status: str) -> None:
        """A failed or timed-out invocation is exported although the head decision dropped it."""
        assembler = self.sampled_assembler("always_off")
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10, status)))
        assert len(take_spans(assembler)) == 2

    def test_the_tail_rule_keeps_cold_starts_unless_told_not_to(self) -> None:
        """An invocation after an init is kept by default, and not with keep_cold_starts off."""
        for keep, expected in ((True, 3), (False, 0)):
            assembler = self.sampled_assembler("always_off", keep_cold_starts=keep)
            assembler.consume(events(*cold(INIT_ID, 0), *invocation(INIT_ID, 20, 30)))
            assert len(take_spans(assembler)) == expected

    def test_the_tail_rule_keeps_slow_invocations(self) -> None:
        """slower_than_ms: an invocation reported at least that long is kept, a quicker one is not."""
        assembler = self.sampled_assembler("always_off", slower_than_ms=100)
        quick, slow = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
        assembler.consume(events(*invocation(quick, 0, 50), *invocation(slow, 100, 300)))
        assert {span.trace_id for span in take_spans(assembler)} == {trace_id_for(slow)}

    @pytest.mark.parametrize(("name", "ratio"), [("always_on", None), ("traceidratio", 1.0),
                                                 ("parentbased_traceidratio", 1.0)])
    def test_a_head_that_keeps_everything_is_not_asked_per_trace(self, name: str, ratio: Optional[float],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        """A ratio of 1 keeps every trace without a sampling value computed per request; its lines say sampled."""
        monkeypatch.setattr(HeadSampler, "sampled", lambda self, trace_id: pytest.fail("asked"))
        assembler = self.sampled_assembler(name, ratio)
        rids = [f"00000000-0000-4000-8000-{index:012d}" for index in range(20)]
        for index, rid in enumerate(rids):
            assembler.consume(events(*invocation(rid, index * 20, index * 20 + 10)))
        assert {span.trace_id for span in take_spans(assembler)} == {trace_id_for(rid) for rid in rids}
        assert assembler.unsampled_traces == 0

    def test_a_ratio_keeps_exactly_the_traces_the_head_sampler_samples(self) -> None:
        """traceidratio 0.5 over 40 request IDs: the exported traces are those HeadSampler.sampled says."""
        head = HeadSampler("traceidratio", 0.5)
        assembler = self.sampled_assembler("traceidratio", 0.5)
        rids = [f"00000000-0000-4000-8000-{index:012d}" for index in range(40)]
        for index, rid in enumerate(rids):
            assembler.consume(events(*invocation(rid, index * 20, index * 20 + 10)))
        expected = {trace_id_for(rid) for rid in rids if head.sampled(trace_id_for(rid))}
        assert 0 < len(expected) < len(rids)
        assert {span.trace_id for span in take_spans(assembler)} == expected
        assert assembler.unsampled_traces == len(rids) - len(expected)
