"""Tests for fgext.otlp._requests: records to serialized requests, each within the byte limit."""

from __future__ import annotations

from typing import List

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext.otlp._ids import trace_id_for
from fgext.otlp._logs import LogLine
from fgext.otlp._report import record_of
from fgext.otlp._requests import Encoded, encode_logs_requests, encode_metrics_request, encode_trace_requests
from tests.otlp_helpers import (
    INVOKE_ID,
    attrs,
    events,
    invocation,
    make_assembler,
    ns,
    take_spans,
)

OTHER_ID = "0c3c5a57-25b5-4d4a-9d52-6b5b3c0f7a11"


class TestRequests:
    def test_trace_request_carries_resource_and_scope(self) -> None:
        """An encoded trace request holds the resource, the fgext scope and every span."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10)))
        ((data, items),) = encode_trace_requests(assembler.resource.message(), take_spans(assembler)).requests
        request = ExportTraceServiceRequest.FromString(data)
        assert items == 2
        scope_spans = request.resource_spans[0].scope_spans[0]
        assert scope_spans.scope.name == "fgext.otlp"
        assert len(scope_spans.spans) == 2
        assert attrs(request.resource_spans[0].resource)["faas.name"] == "hello"

    def test_spans_built_in_the_pending_message_are_sent_as_it_is(self) -> None:
        """Given the pending message the spans were built in, the request is that message with the resource
        and scope set: the same request as copying the spans into a new one."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10), *invocation(OTHER_ID, 20, 30)))
        pending = assembler.pending()
        assert pending.message is not None
        resource = assembler.resource.message()
        ((data, items),) = encode_trace_requests(resource, pending.spans, message=pending.message).requests
        ((copied, _),) = encode_trace_requests(resource, list(pending.spans)).requests
        assert items == 4 and ExportTraceServiceRequest.FromString(data) == ExportTraceServiceRequest.FromString(copied)

    def test_pending_spans_over_one_request_are_still_split(self) -> None:
        """Spans in the pending message that do not fit one request are split by bytes as without it."""
        assembler = make_assembler()
        for index in range(40):
            request_id = f"{index:08d}-0000-4000-8000-000000000000"
            assembler.consume(events(*invocation(request_id, index * 10, index * 10 + 5)))
        pending = assembler.pending()
        encoded = encode_trace_requests(Resource(), pending.spans, 8 * 1024, pending.message)
        assert len(encoded.requests) > 1 and all(len(data) <= 8 * 1024 for data, _ in encoded.requests)
        assert sum(items for _, items in encoded.requests) == 80


def decoded_logs(encoded: Encoded) -> List[str]:
    bodies = []
    for data, items in encoded.requests:
        records = ExportLogsServiceRequest.FromString(data).resource_logs[0].scope_logs[0].log_records
        assert len(records) == items
        bodies += [record.body.string_value for record in records]
    return bodies


def lines(texts: List[str]) -> List[LogLine]:
    return [(ns(i % 1000), ns(2000), "function", text, None, 0) for i, text in enumerate(texts)]


class TestByteLimit:
    def test_many_big_lines_make_several_requests_all_under_the_limit(self) -> None:
        """2,000 lines of 24 KB: several requests, each at most the limit, all 2,000 lines in order."""
        texts = [f"{i:06d}" + "z" * 24_000 for i in range(2000)]
        limit = 4 * 1024 * 1024
        encoded = encode_logs_requests(Resource(), lines(texts), [None] * 2000, limit)
        assert len(encoded.requests) >= 12
        assert all(len(data) <= limit for data, _ in encoded.requests)
        assert decoded_logs(encoded) == texts and encoded.unencodable == 0

    def test_text_larger_than_estimated_is_split_after_encoding(self) -> None:
        """Multi-byte text is estimated by characters; a request that comes out over the limit is halved
        until every part fits, and nothing is lost."""
        texts = ["界" * 3000 for _ in range(200)]  # 9,000 bytes each, estimated as ~3,200
        limit = 128 * 1024
        encoded = encode_logs_requests(Resource(), lines(texts), [None] * 200, limit)
        assert all(len(data) <= limit for data, _ in encoded.requests)
        assert decoded_logs(encoded) == texts

    def test_spans_are_split_by_bytes(self) -> None:
        """Spans too many for one request of the limit are spread over several, none lost."""
        spans = [Span(trace_id=bytes(15) + b"\x01", span_id=i.to_bytes(8, "big"), name="s" * 1000,
                      start_time_unix_nano=1, end_time_unix_nano=2) for i in range(1, 301)]
        limit = 64 * 1024
        encoded = encode_trace_requests(Resource(), spans, limit)
        assert len(encoded.requests) >= 5 and all(len(data) <= limit for data, _ in encoded.requests)
        assert sum(items for _, items in encoded.requests) == 300


    def test_one_record_over_the_limit_is_sent_alone(self) -> None:
        """A span bigger than the limit (a huge status text) cannot be split: it goes alone, its
        neighbours in requests within the limit."""
        spans = [Span(trace_id=bytes(15) + b"\x01", span_id=i.to_bytes(8, "big"), name="s",
                      start_time_unix_nano=1, end_time_unix_nano=2) for i in range(1, 11)]
        spans[4].status.message = "x" * 100_000
        encoded = encode_trace_requests(Resource(), spans, 65536)
        sizes = sorted((len(data), items) for data, items in encoded.requests)
        assert sizes[-1][1] == 1 and sizes[-1][0] > 65536
        assert all(size <= 65536 for size, _ in sizes[:-1]) and sum(items for _, items in sizes) == 10


class TestIsolation:
    def test_one_unencodable_record_is_dropped_alone(self) -> None:
        """A record with a value OTLP cannot carry (a negative time) is found by halving and dropped alone,
        counted; its 999 neighbours are encoded."""
        batch = lines([f"line {i}" for i in range(1000)])
        _, observed, source, text, name, original = batch[400]
        batch[400] = (-1, observed, source, text, name, original)
        encoded = encode_logs_requests(Resource(), batch, [None] * 1000)
        assert encoded.unencodable == 1
        assert decoded_logs(encoded) == [f"line {i}" for i in range(1000) if i != 400]

    def test_report_records_go_in_the_last_request_after_the_lines(self) -> None:
        """Report records are written into the last request, after every log line, the same records as
        ``record_of`` makes; the request counts them among its items."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10), *invocation(OTHER_ID, 20, 30)))
        pending = assembler.pending()
        assert len(pending.records) == 2
        encoded = encode_logs_requests(Resource(), lines(["a", "b"]), [None] * 2, records=pending.records)
        ((data, items),) = encoded.requests
        records = ExportLogsServiceRequest.FromString(data).resource_logs[0].scope_logs[0].log_records
        assert items == 4 and [record.body.string_value for record in records[:2]] == ["a", "b"]
        assert list(records[2:]) == [record_of(line) for line in pending.records]
        assert records[2].trace_id == trace_id_for(INVOKE_ID) and records[3].trace_id == trace_id_for(OTHER_ID)

    def test_a_report_record_that_cannot_be_written_costs_only_itself(self) -> None:
        """A report record with a value OTLP cannot carry (a negative time) is left out and counted; the lines
        and the other record are encoded."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10), *invocation(OTHER_ID, 20, 30)))
        good, bad = assembler.pending().records
        bad = (*bad[:6], -1, *bad[7:])
        encoded = encode_logs_requests(Resource(), lines(["a", "b"]), [None] * 2, records=[bad, good])
        assert encoded.unencodable == 1
        assert decoded_logs(encoded) == ["a", "b", record_of(good).body.string_value]

    def test_metrics_request_counts_its_points(self) -> None:
        """A metrics snapshot is one request holding every data point."""
        assembler = make_assembler()
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10)))
        encoded = encode_metrics_request(Resource(), assembler.metrics.snapshot(ns(100)))
        ((data, points),) = encoded.requests
        assert points == 8 and len(data) > 0
