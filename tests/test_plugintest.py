"""The plugin authors' test helpers: real events, the real pipeline, what was captured and dropped."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, ClassVar, Dict, List

import pytest

from fgext._errors import DropEvent, PluginError
from fgext._events import (
    AnyEvent,
    ExtensionLog,
    FunctionLog,
    InitReport,
    Report,
    RuntimeDone,
    Start,
    event_to_dict,
)
from fgext._pipeline import PluginFailure
from fgext._plugin import Plugin, PluginContext, Processor, Sink
from fgext._plugintest import (
    CaptureSink,
    arun_plugin,
    make_done,
    make_invocation,
    make_invoke,
    make_log,
    make_report,
    make_start,
    run_plugin,
)


class Suffix(Processor):
    name: ClassVar[str] = "suffix"
    config_schema: ClassVar[Dict[str, type]] = {"text": str}

    def __init__(self) -> None:
        self.text = "!"

    def start(self, context: PluginContext) -> None:
        self.text = context.config.get("text", self.text)

    def process(self, event: AnyEvent) -> AnyEvent:
        if isinstance(event, FunctionLog):
            if event.message == "drop":
                raise DropEvent
            return replace(event, message=event.message + self.text)
        return event


class Explodes(Sink):
    name: ClassVar[str] = "explodes"
    max_failures: ClassVar[int] = 2

    def on_telemetry(self, events: Any) -> None:
        raise ValueError("sink is broken")


class TestFactories:
    def test_events_use_the_documented_wire_spellings(self) -> None:
        """Factories write the platform's own spellings and the real parser types them."""
        report = make_report("r1", status="error", duration_ms=40.5)
        assert isinstance(report, Report) and report.request_id == "r1" and not report.ok
        assert report.raw["tracelId"] == "r1" and report.raw["reportMetrics"]["billingDurationMS"] == 41.0
        assert report.metrics.duration_ms == 40.5 and report.end_time is not None
        done = make_done("r1")
        assert isinstance(done, RuntimeDone) and done.raw["name"] == "platform.RuntimeDone"
        assert isinstance(make_start("r1"), Start) and isinstance(make_report(phase="init"), InitReport)
        ext = make_log("hi", category="extension")
        assert isinstance(ext, ExtensionLog) and ext.message == "hi" and ext.logs == "[Extension]hi"

    def test_invocation_and_invoke(self) -> None:
        """make_invocation is start, logs, done, report of one request; make_invoke parses an invoke body."""
        events = make_invocation("r2", logs=["a", "b"], status="timeout")
        assert [type(e).__name__ for e in events] == ["Start", "FunctionLog", "FunctionLog", "RuntimeDone", "Report"]
        assert all(getattr(e, "request_id", "r2") == "r2" for e in events)
        assert [e.start_ns for e in events] == sorted(e.start_ns for e in events)
        invoke = make_invoke("r2")
        assert invoke.request_id == "r2" and invoke.urn is not None and invoke.urn.function_name == "hello"
        assert event_to_dict(invoke)["raw"]["tracelId"] == "r2"

    def test_bad_category(self) -> None:
        """make_log refuses a category the platform does not have."""
        with pytest.raises(ValueError, match="category"):
            make_log("x", category="platform")


class TestRunPlugin:
    def test_captures_survivors_drops_and_lifecycle(self) -> None:
        """The capture sink gets what survived, in batches; drops are listed by processor; hooks all ran."""
        result = run_plugin(Suffix(), batches=[[make_log("a"), make_log("drop")], [make_log("b")]],
                            invokes=[make_invoke("r")], config={"text": "?"})
        assert result.messages == ["a?", "b?"]
        assert [[e.message for e in b if isinstance(e, FunctionLog)] for b in result.batches] == [["a?"], ["b?"]]
        assert [(name, getattr(e, "message", "")) for name, e in result.drops] == [("suffix", "drop")]
        assert [i.request_id for i in result.invokes] == ["r"]
        assert result.sink.calls == ["start", "flush", "shutdown"]
        assert result.stats["dropped_by_processors"] == 1 and result.stats["events"] == 3

    def test_strict_by_default(self) -> None:
        """A raising hook fails the test at once, with the plugin, the hook and the original exception."""
        with pytest.raises(PluginFailure) as info:
            run_plugin([Suffix(), Explodes()], [make_log("a")])
        assert (info.value.plugin, info.value.hook) == ("explodes", "on_telemetry")
        assert isinstance(info.value.__cause__, ValueError)

    def test_non_strict_shows_isolation(self) -> None:
        """With strict=False failures are recorded, the plugin disabled, and the capture sink unaffected."""
        result = run_plugin([Suffix(), Explodes()], batches=[[make_log("a")], [make_log("b")], [make_log("c")]],
                            strict=False)
        assert result.messages == ["a!", "b!", "c!"]
        assert [(f.plugin, f.hook) for f in result.failures] == [("explodes", "on_telemetry")] * 2
        assert "ValueError: sink is broken" in result.failures[0].error
        assert result.disabled == ["explodes"]

    def test_config_is_validated_like_the_agent(self) -> None:
        """Unknown keys and several plugins given one config are refused before anything runs."""
        with pytest.raises(PluginError, match="'suffix': unknown setting 'colour'"):
            run_plugin(Suffix(), [make_log("a")], config={"colour": "red"})
        with pytest.raises(ValueError, match="configs="):
            run_plugin([Suffix(), CaptureSink()], [make_log("a")], config={"text": "x"})
        result = run_plugin([Suffix(), CaptureSink()], [make_log("a")], configs={"suffix": {"text": "#"}},
                            environ={"FGEXT_SUFFIX_TEXT": "%"})
        assert result.messages == ["a%"]  # the environment wins over the file, as in the agent

    def test_inside_a_running_loop(self) -> None:
        """run_plugin refuses a running loop with a pointer to arun_plugin, which works there."""

        async def go() -> List[str]:
            with pytest.raises(RuntimeError, match="arun_plugin"):
                run_plugin(Suffix(), [make_log("a")])
            return (await arun_plugin(Suffix(), [make_log("a")])).messages

        assert asyncio.run(go()) == ["a!"]

    def test_refuses_what_is_not_a_plugin(self) -> None:
        """Passing something that is neither a Plugin nor an Extension is a TypeError."""
        with pytest.raises(TypeError, match="Plugin instances or Extensions"):
            run_plugin(object(), [make_log("a")])

    def test_capture_sink_is_a_plugin(self) -> None:
        """CaptureSink can be used directly beside other sinks."""
        assert isinstance(CaptureSink(), Plugin) and CaptureSink.role == "sink"
