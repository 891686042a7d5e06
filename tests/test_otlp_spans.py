"""Tests for fgext.otlp._spans: a phase and a request written as spans, with their attributes."""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from fgext.otlp._ids import TRACE_FLAG_SAMPLED
from fgext.otlp._spans import phase_attributes, root_attributes, write_span
from tests.otlp_helpers import INVOKE_ID, POD, attrs, events, report


class TestPhaseAttributes:
    def test_a_report_gives_its_metrics_and_status(self) -> None:
        """A phase with a report carries its status and every report metric as fgext.report.*."""
        event = events(report(INVOKE_ID, 0, 11, status="error", huge=2**70, nested={"a": 1}))[0]
        shared, rest = phase_attributes("invoke", event.status, event, None)
        got = dict([*shared, *rest])
        assert got["fgext.status"] == "error"
        assert got["fgext.report.duration_ms"] == 11.0 and got["fgext.report.billed_duration_ms"] == 12.0
        assert got["fgext.report.memory_used_mb"] == 23.4 and got["fgext.report.memory_size_mb"] == 128
        assert got["fgext.report.pod_name"] == POD and got["fgext.report.huge"] == 2**70
        assert "fgext.report.nested" not in got  # not a plain value: left out
        assert "faas.invocation_id" not in got

    def test_an_adopted_init_names_the_request_that_caused_it(self) -> None:
        """An init or restore span of an adopted init carries that init's request ID; an invoke span does not."""
        assert ("faas.invocation_id", "init-1") in phase_attributes("init", None, None, "init-1")[1]
        assert ("faas.invocation_id", "init-1") in phase_attributes("restore", None, None, "init-1")[1]
        assert phase_attributes("invoke", None, None, "init-1") == ((), [])

    def test_values_shared_by_invocations_are_apart(self) -> None:
        """Status, memory size and pod (a handful of values in a sandbox) are the shared part; the
        durations and memory used, which change with every invocation, are not."""
        event = events(report(INVOKE_ID, 0, 11))[0]
        shared, rest = phase_attributes("invoke", "success", event, None)
        assert shared == (("fgext.status", "success"), ("fgext.report.memory_size_mb", 128),
                          ("fgext.report.pod_name", POD))
        assert {key for key, _ in rest} == {"fgext.report.duration_ms", "fgext.report.billed_duration_ms",
                                            "fgext.report.memory_used_mb"}


class TestRootAttributes:
    def test_a_complete_request(self) -> None:
        """A complete request's root names the invocation, cold start and trigger, and nothing of closing."""
        assert root_attributes("r1", True, None, None) == (
            (("faas.coldstart", True), ("faas.trigger", "other")), [("faas.invocation_id", "r1")])

    def test_an_incomplete_request_says_why_it_was_closed(self) -> None:
        """A request closed before its report is marked incomplete, with the reason; an adopted init is named."""
        shared, rest = root_attributes("r1", False, "init-1", "timeout")
        got = dict([*shared, *rest])
        assert got["fgext.incomplete"] is True and got["fgext.close_reason"] == "timeout"
        assert got["fgext.init.request_id"] == "init-1"


class TestWriteSpan:
    def test_fills_the_span_in_place(self) -> None:
        """The span gets its IDs, name, kind, times, sampled flag and attributes; an error sets its status."""
        span = ScopeSpans().spans.add()
        write_span(span, b"t" * 16, b"s" * 8, "invoke", Span.SPAN_KIND_INTERNAL, 10, 20,
                   [("fgext.status", "error")], "error\x00")
        assert (span.trace_id, span.span_id, span.name) == (b"t" * 16, b"s" * 8, "invoke")
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (10, 20)
        assert span.kind == Span.SPAN_KIND_INTERNAL and span.flags == TRACE_FLAG_SAMPLED
        assert attrs(span) == {"fgext.status": "error"}
        assert span.status.code == Status.STATUS_CODE_ERROR and span.status.message

    def test_shared_attributes_are_written_as_the_others(self) -> None:
        """Shared attributes, merged from bytes made once, give the span the attributes field-by-field writes
        give (each kept combination, and a surrogate escaped, alike)."""
        for shared in ((("faas.coldstart", True), ("faas.trigger", "other")), (("fgext.status", "bad\ud800"),)):
            merged, written = ScopeSpans().spans.add(), ScopeSpans().spans.add()
            for _ in range(2):  # made, then kept
                merged.Clear()
                write_span(merged, b"t" * 16, b"s" * 8, "root", Span.SPAN_KIND_SERVER, 1, 2, [("k", 1)], None, shared)
            write_span(written, b"t" * 16, b"s" * 8, "root", Span.SPAN_KIND_SERVER, 1, 2, [*shared, ("k", 1)], None)
            assert merged == written

    def test_no_error_leaves_the_status_unset(self) -> None:
        """Without an error the status stays unset."""
        span = ScopeSpans().spans.add()
        write_span(span, b"t" * 16, b"s" * 8, "root", Span.SPAN_KIND_SERVER, 1, 2, [], None)
        assert span.status.code == Status.STATUS_CODE_UNSET


def test_spans_with_ever_new_shared_values_keep_the_cache_bounded() -> None:
    """Shared attribute values that keep changing (a status per invocation) are written right every time, and
    the serialized parts kept for them stay within their bound."""
    from fgext.otlp import _spans
    from fgext.otlp._ids import _PARTS_MAX

    scope = ScopeSpans()
    for n in range(3 * _PARTS_MAX):
        shared = (("fgext.status", f"status-{n}"),)
        write_span(scope.spans.add(), b"t" * 16, b"s" * 8, "invoke", Span.SPAN_KIND_INTERNAL, 1, 2, [], None, shared)
        assert attrs(scope.spans[-1])["fgext.status"] == f"status-{n}"
        assert len(_spans._SHARED) <= _PARTS_MAX

