"""Parsing (fgext._parse): every documented example, every contradiction, and no crash on anything."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgext._errors import MalformedEvent
from fgext._events import (
    ExtensionLog,
    FunctionLog,
    InitReport,
    InitRuntimeDone,
    InitStart,
    Report,
    ReportMetrics,
    RestoreReport,
    RestoreRuntimeDone,
    RestoreStart,
    RuntimeDone,
    Start,
    UnknownEvent,
)
from fgext._parse import parse_batch, parse_body, parse_event, parse_invoke

UUID = "69be64a7-0233-11e8-82e4-e5d37911193e"
# The spec's examples as the original document prints them: trailing commas and all.
VERBATIM_DONE = ('{ "name": "platform.initRuntimeDone", "startTime": "2023-02-01T00:03:50.000Z", '
                 '"tracelId": "69be64a7-0233-11e8-82e4-e5d37911193e", "status": "success", }')
VERBATIM_REPORT = ('{ "name": "platform.initReport", "startTime": "2023-02-01T00:03:50.000Z", "tracelId": '
                   '"69be64a7-0233-11e8-82e4-e5d37911193e", "endTime": "2023-02-02T00:03:50.000Z", "status": '
                   '"success", "reportMetrics": { "durationMs": 10.6, "billingDurationMS": 11, "memoryUsed": 23.4, '
                   '"memorySize": 128, "podName": "pool22-300-128-fusion-64774779-4g77v", } }')
START = {"name": "platform.initStart", "startTime": "2023-02-01T00:03:50.000Z", "traceId": UUID}
DONE = {"name": "platform.initRuntimeDone", "startTime": "2023-02-01T00:03:50.000Z", "tracelId": UUID,
        "status": "success"}
REPORT = {"name": "platform.initReport", "startTime": "2023-02-01T00:03:50.000Z", "tracelId": UUID,
          "endTime": "2023-02-02T00:03:50.000Z", "status": "success",
          "reportMetrics": {"durationMs": 10.6, "billingDurationMS": 11, "memoryUsed": 23.4, "memorySize": 128,
                            "podName": "pool22-300-128-fusion-64774779-4g77v"}}
FUNCTION_LOG = {"name": "function", "startTime": "2023-02-01T00:03:50.000Z", "logs": "[Function]this is a simple log."}
EXTENSION_LOG = {"name": "extension", "startTime": "2023-02-01T00:03:50.000Z",
                 "logs": "[Extension]this is a simple log."}
T0 = datetime(2023, 2, 1, 0, 3, 50, tzinfo=timezone.utc)


class TestSpecExamples:
    def test_init_start(self) -> None:
        """The initStart example becomes an InitStart with its request ID and an aware start time."""
        event = parse_event(START)
        assert isinstance(event, InitStart)
        assert event.request_id == UUID
        assert event.start_time == T0
        assert event.start_ns == int(T0.timestamp()) * 10**9
        assert event.phase == "init"

    def test_init_runtime_done_with_tracel_id(self) -> None:
        """The done example's ``tracelId`` spelling is read as the request ID."""
        event = parse_event(DONE)
        assert isinstance(event, InitRuntimeDone)
        assert event.request_id == UUID and event.status == "success" and event.ok

    def test_init_report_with_report_metrics(self) -> None:
        """The report example's ``reportMetrics`` and ``billingDurationMS`` fill the typed metrics."""
        event = parse_event(REPORT)
        assert isinstance(event, InitReport)
        assert event.end_time == datetime(2023, 2, 2, 0, 3, 50, tzinfo=timezone.utc)
        assert event.metrics.duration_ms == 10.6
        assert event.metrics.billing_duration_ms == 11.0
        assert event.metrics.memory_used_mb == 23.4
        assert event.metrics.memory_size_mb == 128
        assert event.metrics.pod_name == "pool22-300-128-fusion-64774779-4g77v"

    def test_log_examples(self) -> None:
        """Function and extension log examples keep the raw text and lose the marker in ``message``."""
        function, extension = parse_event(FUNCTION_LOG), parse_event(EXTENSION_LOG)
        assert isinstance(function, FunctionLog) and isinstance(extension, ExtensionLog)
        assert function.message == extension.message == "this is a simple log."
        assert function.logs == "[Function]this is a simple log."
        assert function.category == "function" and extension.category == "extension"

    @pytest.mark.parametrize("text", [VERBATIM_DONE, VERBATIM_REPORT])
    def test_verbatim_examples_with_trailing_commas_are_not_json(self, text: str) -> None:
        """The document's literal examples are not JSON; the body is refused with a clear reason."""
        with pytest.raises(MalformedEvent, match="not valid JSON"):
            parse_body("[" + text + "]")

    def test_whole_documented_batch(self) -> None:
        """One array with every documented example yields one typed event each, in order."""
        batch = parse_body(json.dumps([START, DONE, REPORT, FUNCTION_LOG, EXTENSION_LOG]))
        assert [type(e) for e in batch.events] == [InitStart, InitRuntimeDone, InitReport, FunctionLog, ExtensionLog]
        assert batch.errors == []


class TestContradictions:
    @pytest.mark.parametrize("name", ["platform.RuntimeDone", "platform.runtimeDone", "platform.runtimedone",
                                      " platform.RuntimeDone "])
    def test_runtime_done_spellings(self, name: str) -> None:
        """Every spelling of the invoke's done event is RuntimeDone with the canonical name."""
        event = parse_event({**DONE, "name": name})
        assert isinstance(event, RuntimeDone)
        assert event.name == "platform.runtimeDone"

    def test_table_name_with_trailing_comma(self) -> None:
        """The document's table spells ``platform.initRuntimeDone,`` with a comma; it is still known."""
        assert isinstance(parse_event({**DONE, "name": "platform.initRuntimeDone,"}), InitRuntimeDone)

    @pytest.mark.parametrize(("name", "cls"), [
        ("platform.start", Start), ("platform.restoreStart", RestoreStart), ("platform.report", Report),
        ("platform.restoreRuntimeDone", RestoreRuntimeDone), ("platform.restoreReport", RestoreReport),
    ])
    def test_every_platform_name(self, name: str, cls: type) -> None:
        """Each documented platform event name maps to its own class."""
        assert type(parse_event({**REPORT, "name": name})) is cls

    def test_metrics_field_name(self) -> None:
        """Metrics under ``metrics`` (the field list's name) are read like ``reportMetrics``."""
        raw = {**REPORT, "metrics": REPORT["reportMetrics"]}
        del raw["reportMetrics"]
        event = parse_event(raw)
        assert isinstance(event, InitReport) and event.metrics.duration_ms == 10.6

    def test_metric_key_case_and_strings(self) -> None:
        """``billingDurationMs`` and numeric strings are accepted; unknown metric keys are kept."""
        event = parse_event({**REPORT, "reportMetrics": {"billingDurationMs": " 12.5 ", "memorySize": "256",
                                                         "cpuMs": 3}})
        assert isinstance(event, InitReport)
        assert event.metrics.billing_duration_ms == 12.5
        assert event.metrics.memory_size_mb == 256
        assert event.metrics.extra == {"cpuMs": 3}

    def test_lines_that_must_not_take_the_platform_fast_paths(self) -> None:
        """A blank or non-text traceId falls back to the other keys, a numeric status and metric keys in other
        cases are normalised, and a non-finite float metric is left out, exactly as the general path does."""
        start = parse_event({"name": "platform.start", "startTime": START["startTime"], "traceId": "  ",
                             "tracelId": UUID})
        assert isinstance(start, Start) and start.request_id == UUID
        numeric = parse_event({"name": "platform.start", "startTime": START["startTime"], "traceId": 42})
        assert numeric.request_id == "42"  # type: ignore[union-attr]
        done = parse_event({**DONE, "name": "platform.runtimeDone", "status": 500})
        assert isinstance(done, RuntimeDone) and done.status == "500"
        report = parse_event({**REPORT, "name": "platform.report", "status": None,
                              "reportMetrics": {" DurationMS ": 1.5, "memoryUsed": float("inf"),
                                                "billingDurationMS": float("nan"), "podName": " pod "}})
        assert isinstance(report, Report) and report.status == ""
        assert report.metrics == ReportMetrics(duration_ms=1.5, pod_name="pod")
        assert vars(report.metrics) == vars(ReportMetrics(duration_ms=1.5, pod_name="pod"))

    def test_stray_spaces_trimmed(self) -> None:
        """Huawei's pages show values like ``" success "``: they compare as ``success``."""
        event = parse_event({**DONE, "status": " success ", "tracelId": f" {UUID} "})
        assert isinstance(event, InitRuntimeDone)
        assert event.status == "success" and event.ok and event.request_id == UUID

    def test_failure_status(self) -> None:
        """A status other than success is kept as text and is not ok."""
        event = parse_event({**DONE, "status": "error"})
        assert isinstance(event, InitRuntimeDone) and not event.ok and event.status == "error"


class TestBoundary:
    def test_bad_event_costs_only_itself(self) -> None:
        """Among 1,000 good lines, one dated 1969 is counted malformed and every other line is kept."""
        items = [{**FUNCTION_LOG, "logs": f"[Function]line {i}"} for i in range(1000)]
        items.insert(500, {**FUNCTION_LOG, "startTime": "1969-07-20T20:17:40.000Z"})
        batch = parse_batch(items)
        assert batch.malformed == 1 and "out of range" in batch.errors[0]
        assert [e.message for e in batch.events] == [f"line {i}" for i in range(1000)]

    @pytest.mark.parametrize("size", [1e20, 1e15, -1, "1e300", float("nan")])
    def test_memory_size_beyond_int64_bytes_costs_only_that_value(self, size: object) -> None:
        """A memorySize OTLP cannot carry in bytes is dropped; the report and its other metrics stay."""
        event = parse_event({**REPORT, "reportMetrics": {**REPORT["reportMetrics"], "memorySize": size}})
        assert isinstance(event, InitReport)
        assert event.metrics.memory_size_mb is None
        assert event.metrics.duration_ms == 10.6 and event.metrics.memory_used_mb == 23.4

    def test_bad_end_time_costs_only_itself(self) -> None:
        """A report whose endTime is out of range keeps its status and metrics, without an end."""
        event = parse_event({**REPORT, "endTime": "9999-12-31T23:59:59.999Z"})
        assert isinstance(event, InitReport)
        assert event.end_ns is None and event.status == "success" and event.metrics.duration_ms == 10.6


class TestBatches:
    def test_malformed_items_are_counted_and_skipped(self) -> None:
        """One bad object costs one event; the rest of the array is kept."""
        batch = parse_batch([START, 3, {"startTime": "x"}, {**START, "startTime": "nope"},
                             {"name": "platform.start", "startTime": "2023-02-01T00:03:50Z"}, FUNCTION_LOG])
        assert [type(e) for e in batch.events] == [InitStart, FunctionLog]
        assert batch.malformed == 4
        assert "event 1" in batch.errors[0] and "no traceId" in batch.errors[3]

    def test_unknown_event_is_kept(self) -> None:
        """A name from the future becomes an UnknownEvent holding the whole object."""
        raw = {"name": "platform.telemetrySubscription", "startTime": "2023-02-01T00:03:50Z", "x": [1]}
        event = parse_event(raw)
        assert isinstance(event, UnknownEvent)
        assert event.raw == raw and event.start_ns == 1675209830 * 10**9

    @pytest.mark.parametrize("body", ['{"name": "function"}', '"text"', "null", "12"])
    def test_body_must_be_an_array(self, body: str) -> None:
        """A body that is valid JSON but not an array is refused with what it was instead."""
        with pytest.raises(MalformedEvent, match="JSON array"):
            parse_body(body)

    def test_deep_nesting_is_malformed_not_a_crash(self) -> None:
        """JSON nested beyond the recursion limit is a refusal, not a RecursionError."""
        with pytest.raises(MalformedEvent):
            parse_body("[" * 100_000 + "]" * 100_000)

class TestInvoke:
    @pytest.mark.parametrize("key", ["tracelId", "traceId"])
    def test_both_spellings(self, key: str) -> None:
        """The invoke body's request ID is read under either documented spelling."""
        invoke = parse_invoke({key: UUID, "invokedFunctionUrn": "sn:cn:yrk:1111:function:0@test@hello:latest"}, 5)
        assert invoke.request_id == UUID
        assert invoke.urn is not None and invoke.urn.function_name == "hello" and invoke.urn.package == "test"

    def test_bad_urn_is_kept_as_text(self) -> None:
        """An unparseable URN does not refuse the invoke; the text stays available."""
        invoke = parse_invoke({"traceId": "r", "invokedFunctionUrn": "a:b:c:d:e"}, 5)
        assert invoke.urn is None and invoke.function_urn == "a:b:c:d:e"

    def test_the_same_urn_is_parsed_once_and_its_object_reused(self) -> None:
        """Invokes naming the same URN share one parsed object (equal to a fresh parse); another URN gets its own,
        a bad one stays None every time, and the cache stays bounded."""
        from fgext._parse import _URNS, _URNS_MAX
        from fgext._urn import parse_urn

        text = "sn:cn:yrk:1111:function:0@test@hello:latest"
        first, second = (parse_invoke({"traceId": "r", "invokedFunctionUrn": text}, 5) for _ in range(2))
        assert first.urn is second.urn and first.urn == parse_urn(text)
        other = parse_invoke({"traceId": "r", "invokedFunctionUrn": text.replace("hello", "bye")}, 5)
        assert other.urn is not None and other.urn.function_name == "bye"
        assert all(parse_invoke({"invokedFunctionUrn": "a:b:c:d:e"}, 5).urn is None for _ in range(2))
        for index in range(3 * _URNS_MAX):
            parse_invoke({"invokedFunctionUrn": text.replace("hello", f"f{index}")}, 5)
        assert len(_URNS) <= _URNS_MAX

    def test_non_object_refused(self) -> None:
        """An invoke body that is not an object is malformed."""
        with pytest.raises(MalformedEvent, match="JSON object"):
            parse_invoke([1], 5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {"name": st.sampled_from(["platform.initStart", "platform.start", "platform.RuntimeDone", "platform.report",
                              "platform.restoreReport", "function", "extension", "other", ""]) | json_values},
    optional={"startTime": st.sampled_from(["2023-02-01T00:03:50.000Z", "bad"]) | json_values,
              "traceId": json_values, "tracelId": json_values, "status": json_values, "endTime": json_values,
              "reportMetrics": json_values, "metrics": json_values, "logs": json_values},
)


class TestProperties:
    @settings(max_examples=250, deadline=None)
    @given(st.lists(event_like | json_values, max_size=8))
    def test_parse_batch_never_raises_on_arrays(self, items: list) -> None:  # type: ignore[type-arg]
        """Any JSON array parses: every item is either an event or a counted error."""
        batch = parse_batch(items)
        assert len(batch.events) + batch.malformed == len(items)

    @settings(max_examples=200, deadline=None)
    @given(json_values)
    def test_parse_body_only_raises_malformed(self, value: object) -> None:
        """Any JSON document either parses or raises MalformedEvent, nothing else."""
        try:
            parse_body(json.dumps(value))
        except MalformedEvent:
            assert not isinstance(value, list)

    @settings(max_examples=300, deadline=None)
    @given(event_like)
    def test_parsed_events_equal_their_dataclass_construction(self, obj: object) -> None:
        """Events built on the fast path are the same objects the dataclasses' own __init__ would build:
        equal, same fields, same hash, and still frozen."""
        import dataclasses

        try:
            event = parse_event(obj)
        except MalformedEvent:
            return
        values = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}  # type: ignore[arg-type]
        again = type(event)(**values)
        assert event == again and vars(event) == vars(again) and hash(event) == hash(again)
        assert repr(event) == repr(again)
        metrics = getattr(event, "metrics", None)
        if metrics is not None:  # built on the fast path too
            fields = {f.name: getattr(metrics, f.name) for f in dataclasses.fields(metrics)}
            assert vars(metrics) == vars(type(metrics)(**fields)) and repr(metrics) == repr(type(metrics)(**fields))
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.name = "changed"  # type: ignore[misc]

    @pytest.mark.parametrize("obj", [START, DONE, REPORT, FUNCTION_LOG, EXTENSION_LOG,
                                     {**FUNCTION_LOG, "logs": ["a", "b"]}, {**FUNCTION_LOG, "logs": None},
                                     {**DONE, "name": "platform.RuntimeDone"}, {**START, "name": " platform.START "}])
    def test_documented_examples_equal_their_dataclass_construction(self, obj: dict) -> None:  # type: ignore[type-arg]
        """The spec's examples and their variants give events equal to the dataclass-built ones."""
        import dataclasses

        event = parse_event(obj)
        values = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}  # type: ignore[arg-type]
        assert vars(event) == vars(type(event)(**values))
