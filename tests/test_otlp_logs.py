"""Tests for fgext.otlp._logs: log lines as plain records, their size bound, their LogRecords."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogsData

from fgext.otlp._logs import encode_logs, truncate_utf8
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

    def test_shared_parts_follow_each_line_in_mixed_runs(self) -> None:
        """Lines alternating source, level and phase each get their own severity, source and correlation:
        the shared parts merged per run of alike lines never leak into a neighbour."""
        link_a = (b"\x01" * 16, b"\x02" * 8, "request-a", 1)
        link_b = (b"\x03" * 16, b"\x04" * 8, "request-b", 0)
        plan = [("function", "ERROR a", link_a), ("extension", "INFO b", link_a), ("function", "ERROR c", link_a),
                ("function", "ERROR d", link_b), ("function", "plain e", None), ("function", "ERROR f", link_a)]
        lines = [(ns(i), ns(100), source, body, None, 0) for i, (source, body, _) in enumerate(plan)]
        container = LogsData().resource_logs.add().scope_logs.add().log_records
        encode_logs(container, lines, [link for _, _, link in plan])
        for i, ((source, body, link), record) in enumerate(zip(plan, container)):
            assert record.body.string_value == body and record.time_unix_nano == ns(i)
            assert record.observed_time_unix_nano == ns(100)
            word = body.split()[0]
            assert record.severity_text == (word if word.isupper() else "")
            assert attrs(record)["fgext.log.source"] == source
            if link is None:
                assert (record.trace_id, record.span_id, record.flags) == (b"", b"", 0)
                assert "faas.invocation_id" not in attrs(record)
            else:
                assert (record.trace_id, record.span_id, record.flags) == (link[0], link[1], link[3])
                assert attrs(record)["faas.invocation_id"] == link[2]

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



class TestSizeBound:
    def test_short_text_is_untouched(self) -> None:
        """Text within the bound comes back as it is, with no original size."""
        assert truncate_utf8("hello", 1024) == ("hello", 0)
        assert truncate_utf8("é" * 600, 1200) == ("é" * 600, 0)  # 1,200 bytes exactly

    def test_cut_lands_on_a_character_boundary(self) -> None:
        """A cut through a multi-byte character drops the whole character, never leaves half of it."""
        text = "a" + "€" * 1000  # 1 + 3,000 bytes
        cut, original = truncate_utf8(text, 1025)
        assert original == 3001
        assert cut == "a" + "€" * 341 and len(cut.encode("utf-8")) == 1024

    @settings(max_examples=200, deadline=None)
    @given(st.text(st.characters(blacklist_categories=())), st.integers(1024, 4096))
    def test_any_text_is_cut_to_valid_utf8_within_the_bound(self, text: str, bound: int) -> None:
        """Whatever the text (surrogates included), the result encodes to at most the bound, is a prefix of
        what is exported, and reports the original size exactly when it was cut."""
        cut, original = truncate_utf8(text * 10, bound)
        exported = (text * 10).encode("utf-8", "backslashreplace")
        data = cut.encode("utf-8", "backslashreplace")
        assert len(data) <= bound and exported.startswith(data)
        assert original == (len(exported) if len(exported) > bound else 0)

    def test_oversize_line_is_truncated_with_attributes_and_its_neighbours_kept(self) -> None:
        """A 1 MB line is cut to the bound and says so (fgext.log.truncated, fgext.log.original_bytes);
        the lines around it are exported whole."""
        assembler = make_assembler(max_log_bytes=4096)
        assembler.consume(events(log(1, "[Function]before"), log(2, "[Function]" + "x" * 1_000_000),
                                 log(3, "[Function]after")))
        assert assembler.pending_bytes < 3 * 4096  # memory holds the cut line, not the original
        before, big, after = encoded_logs(assembler)
        assert before.body.string_value == "before" and after.body.string_value == "after"
        assert big.body.string_value == "x" * 4096
        assert attrs(big)["fgext.log.truncated"] is True
        assert attrs(big)["fgext.log.original_bytes"] == 1_000_000
        assert "fgext.log.truncated" not in attrs(before)

    def test_unknown_event_body_is_bounded_too(self) -> None:
        """An unknown event is kept as a record whose JSON body is cut like a log line."""
        assembler = make_assembler(max_log_bytes=2048)
        assembler.consume(events({"name": "platform.huge", "startTime": ts(1), "blob": "y" * 10_000}))
        (record,) = encoded_logs(assembler)
        assert len(record.body.string_value) <= 2048 and attrs(record)["fgext.log.truncated"] is True
        assert attrs(record)["fgext.event.name"] == "platform.huge"
