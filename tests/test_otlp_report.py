"""The per-invocation report record (fgext.otlp._report): one OTLP log record per platform report."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, List

import pytest

from fgext._parse import parse_batch
from fgext.otlp._report import is_oom, record_of
from fgext.otlp._traces import Assembler
from tests.otlp_helpers import INVOKE_ID, cold, events, invocation, make_assembler, report
from tests.test_otlp_plugin import OtelTap, attr, environ, parsed, started
from tests.test_otlp_plugin import invocation as spec_invocation


def _attrs(record: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for kv in record.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def _records(assembler: Assembler) -> List[Any]:
    return [record_of(line) for line in assembler.pending().records]


def test_a_report_becomes_one_record_correlated_to_the_invoke_span() -> None:
    """The record carries the invocation's trace ID and invoke span ID, a body like the platform's report
    line and the report's values as attributes; its cold start is the invocation's."""
    assembler = make_assembler()
    assembler.consume(events(*cold(INVOKE_ID, 0), *invocation(INVOKE_ID, 20, 30)))
    pending = assembler.pending()
    (record,) = map(record_of, pending.records)
    invoke = next(span for span in pending.spans if span.name == "invoke")
    assert record.trace_id == invoke.trace_id and record.span_id == invoke.span_id
    assert record.body.string_value == (f"REPORT RequestId: {INVOKE_ID} Duration: 11 ms Billed Duration: 12 ms "
                                        "Memory Size: 128 MB Max Memory Used: 23.4 MB Status: success")
    values = _attrs(record)
    assert values["faas.invocation_id"] == INVOKE_ID and values["faas.coldstart"] is True
    assert values["fgext.report.duration_ms"] == 11.0 and values["fgext.report.billed_duration_ms"] == 12.0
    assert values["fgext.report.memory_used_mb"] == 23.4 and values["fgext.report.memory_size_mb"] == 128
    assert values["fgext.report.status"] == "success" and "fgext.oom" not in values
    assert record.severity_text == "INFO"
    assembler.taken(pending)
    assert _records(assembler) == []


def test_report_metrics_that_are_absent_are_not_attributes() -> None:
    """A report without durations or memory writes none of those attributes, and "-" in the body."""
    assembler = make_assembler()
    bare = report(INVOKE_ID, 20, 30)
    bare["reportMetrics"] = {}
    assembler.consume(events(*invocation(INVOKE_ID, 20, 30)[:-1], bare))
    (record,) = _records(assembler)
    values = _attrs(record)
    assert not [key for key in values if key.startswith("fgext.report.") and key != "fgext.report.status"]
    assert "Duration: - Billed Duration: - Memory Size: - Max Memory Used: -" in record.body.string_value


@pytest.mark.parametrize("status, used, oom", [
    ("success", 23.4, False),
    ("Out of Memory", 23.4, True),
    ("error: runtime memory limit exceeded", 23.4, True),
    ("failed", 128.0, True),  # memory used reached the size
    ("timeout", 127.9, False),
])
def test_out_of_memory_is_flagged_from_the_status_or_the_memory_used(status: str, used: float, oom: bool) -> None:
    """fgext.oom=true when the status mentions memory (any case) or memory used reached memory size."""
    (event,) = parse_batch([report(INVOKE_ID, 0, 10, status=status, memoryUsed=used)]).events
    assert is_oom(event) is oom  # type: ignore[arg-type]
    assembler = make_assembler()
    assembler.consume(events(*invocation(INVOKE_ID, 0, 10, status=status)[:-1],
                             report(INVOKE_ID, 0, 11, status=status, memoryUsed=used)))
    (record,) = _records(assembler)
    assert _attrs(record).get("fgext.oom") is (True if oom else None)
    assert record.severity_text == ("INFO" if status == "success" and not oom else "ERROR")


def test_an_invocation_closed_without_its_report_has_no_record() -> None:
    """No report, no report record (the span is closed as incomplete at shutdown)."""
    assembler = make_assembler()
    assembler.consume(events(*invocation(INVOKE_ID, 0, 10)[:-1]))
    assembler.expire(everything=True)
    assert _records(assembler) == []


def test_report_log_can_be_switched_off() -> None:
    """Assembler(report_log=False), which FGEXT_OTLP_REPORT_LOG=0 sets, writes no report record."""
    from fgext.otlp._config import load_config

    assert load_config({"FGEXT_OTLP_REPORT_LOG": "0"}).report_log is False
    assert load_config({}).report_log is True
    assembler = make_assembler()
    off = Assembler(assembler.resource, assembler.metrics, open_wait_s=60, function_timeout_s=30, report_log=False)
    off.consume(events(*invocation(INVOKE_ID, 0, 10)))
    assert _records(off) == []


@pytest.mark.parametrize("setting, expected", [(None, 1), ("0", 0)])
def test_report_record_reaches_the_collector_unless_switched_off(tap: OtelTap, tmp_path: Path,
                                                                 setting: Any, expected: int) -> None:
    """At the collector: one REPORT record per invocation, on the invoke span; none with FGEXT_OTLP_REPORT_LOG=0."""
    extra = {} if setting is None else {"FGEXT_OTLP_REPORT_LOG": setting}

    async def scenario() -> None:
        plugin = await started(environ(tap.port, tmp_path, **extra))
        await plugin.on_telemetry(parsed(spec_invocation(INVOKE_ID, 0, logs=2)))
        await plugin.flush(3)
        spans = await tap.wait("spans", lambda s: len(s) >= 2)
        logs = await tap.wait("logs", lambda items: len(items) >= 2 + expected)
        await plugin.shutdown(3)
        reports = [item for item in logs if item["body"]["stringValue"].startswith("REPORT ")]
        assert len(reports) == expected
        if expected:
            invoke = next(s for s in spans if s["name"] == "invoke")
            assert reports[0]["spanId"] == invoke["spanId"] and reports[0]["traceId"] == invoke["traceId"]
            assert attr(reports[0], "fgext.log.source") == "platform"
            assert attr(reports[0], "faas.coldstart") is False

    asyncio.run(scenario())


@pytest.fixture
def tap(tap_factory: Any) -> OtelTap:
    from tests.test_otlp_plugin import free_port

    collector: OtelTap = tap_factory(free_port())
    collector.start()
    return collector
