"""The filter plugin: drops by type, level, pattern, rule and sampling, and never drops an error."""

from __future__ import annotations

from typing import Optional

import pytest

from fgext._errors import PluginError
from fgext._events import AnyEvent, FunctionLog, LogEvent, Report, RuntimeDone, Start
from fgext._plugintest import make_done, make_invocation, make_log, make_report, make_start, run_plugin
from fgext.plugins.filter import FilterPlugin, log_level


class TestLevels:
    @pytest.mark.parametrize(("line", "level"), [
        ("ERROR something broke", 40), ("[WARN] slow disk", 30), ("2025-02-08 12:00:00,001 INFO started", 20),
        ("level=debug msg=x", 10), ('{"level": "error", "msg": "x"}', 40), ("severity: CRITICAL", 50),
        ("just a line", None), ("information about errors", None),
    ])
    def test_level_read_from_line(self, line: str, level: Optional[int]) -> None:
        """Common level spellings are read from the start of a line; prose words are not levels."""
        assert log_level(line) == level


class TestDropping:
    def test_drop_types_by_category_name_and_class(self) -> None:
        """drop_types accepts a category, an event name or a class name."""
        events = [*make_invocation("r1", logs=["hello"]), make_log("ext says hi", category="extension")]
        result = run_plugin(FilterPlugin(), events=events,
                            config={"drop_types": ["extension", "platform.start", "RuntimeDone"]})
        assert [type(e).__name__ for e in result.events] == ["FunctionLog", "Report"]
        assert len(result.dropped) == 3

    def test_min_level_keeps_unleveled_as_info(self) -> None:
        """Below min_level is dropped; a line stating no level counts as info."""
        events = [make_log("DEBUG x"), make_log("INFO y"), make_log("plain z"), make_log("WARNING w")]
        assert run_plugin(FilterPlugin(), events=events, config={"min_level": "info"}).messages == [
            "INFO y", "plain z", "WARNING w"]
        assert run_plugin(FilterPlugin(), events=events, config={"min_level": "warning"}).messages == ["WARNING w"]

    def test_drop_and_keep_matching(self) -> None:
        """drop_matching drops a line; keep_matching wins over every drop setting."""
        events = [make_log("GET /health 200"), make_log("GET /health 200 canary"), make_log("GET /orders 200")]
        result = run_plugin(FilterPlugin(), events=events,
                            environ={"FGEXT_FILTER_DROP_MATCHING": "/health", "FGEXT_FILTER_KEEP_MATCHING": "canary"})
        assert result.messages == ["GET /health 200 canary", "GET /orders 200"]

    def test_errors_are_always_kept(self) -> None:
        """Error lines, tracebacks and failed platform events pass even when their type is dropped."""
        events = [make_log("ERROR db down"), make_log("Traceback (most recent call last):\n  File x"),
                  make_log("fine"), make_done("r1", status="error"), make_done("r2"),
                  make_report("r1", status="error"), make_report("r2")]
        result = run_plugin(FilterPlugin(), events=events,
                            config={"drop_types": ["function", "platform"], "drop_matching": [".*"]})
        assert result.messages == ["ERROR db down", "Traceback (most recent call last):\n  File x"]
        assert [(type(e).__name__, e.request_id) for e in result.events if not isinstance(e, LogEvent)] == [
            ("RuntimeDone", "r1"), ("Report", "r1")]

    def test_rule_in_code(self) -> None:
        """A subclass's rule decides first: True drops, False keeps, None defers to the settings."""

        class NoSlowReports(FilterPlugin):
            def rule(self, event: AnyEvent) -> Optional[bool]:
                if isinstance(event, Report):
                    return (event.metrics.duration_ms or 0) < 100
                return None

        events = [make_report("fast", duration_ms=5), make_report("slow", duration_ms=500), make_log("x")]
        result = run_plugin(NoSlowReports(), events=events)
        assert [getattr(e, "request_id", "log") for e in result.events] == ["slow", "log"]


class TestSampling:
    def _ids(self, rate: float, wanted: bool, count: int) -> list:  # type: ignore[type-arg]
        plugin = FilterPlugin()
        plugin.configure({"sample": rate})
        ids = [f"req-{i}" for i in range(500) if plugin.sampled(f"req-{i}") == wanted]
        return ids[:count]

    def test_rate_is_roughly_honoured_and_stable(self) -> None:
        """About the configured share of request IDs is sampled, the same way every time."""
        plugin = FilterPlugin()
        plugin.configure({"sample": 0.25})
        decisions = [plugin.sampled(f"req-{i}") for i in range(2000)]
        assert 0.2 < sum(decisions) / len(decisions) < 0.3
        assert decisions == [plugin.sampled(f"req-{i}") for i in range(2000)]

    def test_unsampled_invocation_loses_logs_but_not_errors_or_platform_events(self) -> None:
        """Logs of an unsampled invocation are dropped, except error lines; sampled ones keep theirs."""
        skipped = self._ids(0.5, wanted=False, count=1)[0]
        kept = self._ids(0.5, wanted=True, count=1)[0]
        events = [*make_invocation(skipped, logs=["step 1", "ERROR step 2"]),
                  *make_invocation(kept, logs=["step A"]), make_log("between invocations")]
        result = run_plugin(FilterPlugin(), events=events, config={"sample": 0.5})
        assert result.messages == ["ERROR step 2", "step A", "between invocations"]
        assert sum(isinstance(e, (Start, RuntimeDone, Report)) for e in result.events) == 6

    def test_sampling_follows_invocations_across_batches(self) -> None:
        """The decision made at platform.start holds for log lines in later batches until done."""
        skipped = self._ids(0.3, wanted=False, count=1)[0]
        result = run_plugin(FilterPlugin(), batches=[[make_start(skipped)], [make_log("late line")],
                                                     [make_done(skipped)], [make_log("after")]],
                            config={"sample": 0.3})
        assert [e.message for e in result.events if isinstance(e, FunctionLog)] == ["after"]

    @pytest.mark.parametrize(("config", "message"), [
        ({"sample": 1.5}, "between 0 and 1"), ({"min_level": "loud"}, "min_level"),
        ({"drop_matching": ["("]}, "not a valid regular"),
    ])
    def test_bad_settings(self, config: dict, message: str) -> None:  # type: ignore[type-arg]
        """Bad settings are refused with the plugin's name and the key."""
        with pytest.raises(PluginError, match=f"plugin 'filter'.*{message}"):
            FilterPlugin().configure(config)


def test_the_functions_own_otlp_data_passes_the_filter() -> None:
    """An OtlpPayload (the function's export to the agent's receiver) is not a log line: never dropped here."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from fgext._events import OtlpPayload

    payload = OtlpPayload("traces", ExportTraceServiceRequest(), 1)
    result = run_plugin(FilterPlugin(), events=[payload, make_log("DEBUG x")],
                        config={"min_level": "error", "sample": 0.0})
    assert result.events == [payload]
