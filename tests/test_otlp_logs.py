"""Tests for fgext.otlp._logs: log lines as plain records, their size bound, their LogRecords."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from fgext.otlp._requests import encode_trace_requests
from tests.otlp_helpers import (
    attrs,
    by_name,
    done,
    encoded_logs,
    events,
    log,
    make_assembler,
    ns,
    report,
    start,
    take_spans,
    ts,
)


class TestLogs:
    def test_log_record_fields(self) -> None:
        """Body without marker, time from startTime, severity from the level word, source attribute."""
        assembler = make_assembler()
        assembler.consume(events(log(5, "[Function]WARNING disk almost full"), log(6, "[Extension]plain line",
                                                                               name="extension")))
        first, second = encoded_logs(assembler)
        assert first.body.string_value == "WARNING disk almost full"
        assert first.time_unix_nano == ns(5) and first.observed_time_unix_nano > ns(5)
        assert (first.severity_number, first.severity_text) == (13, "WARNING")
        assert attrs(first) == {"fgext.log.source": "function"}
        assert second.severity_number == 0 and attrs(second) == {"fgext.log.source": "extension"}
        assert first.trace_id == b"" and first.span_id == b""

    def test_severity_words(self) -> None:
        """Each level word maps to the OTel severity number; lower-case words inside text do not."""
        assembler = make_assembler()
        lines = ["DEBUG a", "[INFO] b", "x WARN c", "ERROR: d", "CRITICAL e", "FATAL f", "no error here"]
        assembler.consume(events(*(log(i, "[Function]" + text) for i, text in enumerate(lines))))
        assert [r.severity_number for r in encoded_logs(assembler)] == [5, 9, 13, 17, 21, 21, 0]


    def test_lone_surrogates_are_escaped_not_fatal(self) -> None:
        """JSON may carry a lone surrogate ("\\ud800"), which UTF-8 cannot encode: in a log line, a request
        ID, a status or an unknown event's name it is written as its escape, and nothing else is lost."""
        rid = "req-\ud800"
        assembler = make_assembler()
        assembler.consume(events(start(rid, 0), log(5, "[Function]bad \udcff byte"), done(rid, 10, "fail\ud800"),
                              report(rid, 0, 11, "fail\ud800"), {"name": "odd\ud800", "startTime": ts(6)},
                              log(7, "[Function]fine")))
        spans = by_name(take_spans(assembler))
        trace = ExportTraceServiceRequest.FromString(
            encode_trace_requests(assembler.resource.message(), list(spans.values())).requests[0][0])
        root = trace.resource_spans[0].scope_spans[0].spans[1]
        assert attrs(root)["faas.invocation_id"] == "req-\\ud800"
        assert spans["invoke"].status.message == "fail\\ud800"
        bad, odd, fine = encoded_logs(assembler)
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
        assembler = make_assembler()
        rid = rid.strip() or "x"
        assembler.consume(events(start(rid, 0), log(5, "[Function]" + text), done(rid, 10, text or "ok"),
                              report(rid, 0, 11, text or "ok"), {"name": "odd" + text, "startTime": ts(6)}))
        spans = take_spans(assembler)
        assert encode_trace_requests(assembler.resource.message(), spans).unencodable == 0
        assert len(spans) == 2 and len(encoded_logs(assembler)) == 2

    def test_unknown_event_is_kept_as_a_log_record(self) -> None:
        """An event name fgext does not know is exported whole, never dropped."""
        assembler = make_assembler()
        assembler.consume(events({"name": "platform.somethingNew", "startTime": ts(1), "value": 7}))
        (record,) = encoded_logs(assembler)
        assert attrs(record)["fgext.event.name"] == "platform.somethingNew"
        assert '"value": 7' in record.body.string_value
        assert record.time_unix_nano == ns(1)

