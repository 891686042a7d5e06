"""AgentStats (fgext._selfstats): the agent's counters, read live by plugins, and what the OTLP sink makes of them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence

from fgext._errors import DropEvent
from fgext._events import AnyEvent
from fgext._parse import parse_batch
from fgext._pipeline import Pipeline
from fgext._plugin import Plugin, PluginContext, RegistrationInfo
from fgext._selfstats import AgentStats, event_kind
from fgext.otlp import OtlpPlugin
from tests.test_otlp_plugin import INVOKE_ID, OtelTap, environ, free_port, invocation
from tests.test_pipeline import Log, log_event


class DropLogs(Plugin):
    """A processor dropping every function log line."""

    name: ClassVar[str] = "droplogs"
    role: ClassVar[str] = "processor"

    def process(self, event: AnyEvent) -> AnyEvent:
        if event.category == "function":
            raise DropEvent()
        return event


class Boom(Plugin):
    """A sink failing on every batch."""

    name: ClassVar[str] = "boom"

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        raise ValueError("boom")


class Stuck(Plugin):
    """A sink whose hook waits until told, so its lane fills."""

    name: ClassVar[str] = "stuck"

    def __init__(self) -> None:
        self.gate: Optional[asyncio.Event] = None

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        assert self.gate is not None
        await self.gate.wait()


def _view(pipeline: Optional[Pipeline], agent: Optional[Dict[str, int]] = None) -> AgentStats:
    return AgentStats(agent if agent is not None else {"events_received": 0}, {}, lambda: pipeline)


def test_the_view_reads_the_owners_live_and_cannot_write() -> None:
    """Counters are read from the listener's and pipeline's own dicts at each access; the view has no setter."""
    counters = {"events_received": 1}

    async def scenario() -> None:  # on Python 3.9 the pipeline's queue binds to the running loop
        pipeline = Pipeline(logger=Log())
        view = _view(pipeline, counters)
        counters["events_received"] = 5
        pipeline.stats["plugin_failures"] = 2
        assert view["events_received"] == 5 and view["plugin_failures"] == 2
        assert set(view) >= {"events_received", "plugin_failures", "lane_events_dropped"}
        assert not hasattr(view, "__setitem__")

    asyncio.run(scenario())
    assert _view(None)["events_received"] == 0 and "plugin_failures" not in _view(None)


def test_event_kind_is_bounded() -> None:
    """Platform events count under their canonical name, logs under their category, the rest as unknown."""
    unknown = {"name": "platform.new", "startTime": "2023-02-01T00:03:50Z"}
    events = parse_batch([*invocation(INVOKE_ID, 0, logs=1), unknown]).events
    assert [event_kind(e) for e in events] == ["platform.start", "function", "platform.runtimeDone",
                                               "platform.report", "unknown"]


def test_lane_drops_queue_depths_failures_and_disabled_are_broken_down_by_plugin() -> None:
    """What the pipeline counts in totals, the view gives per plugin (and per hook for failures)."""
    stuck = Stuck()

    async def scenario() -> None:
        stuck.gate = asyncio.Event()
        pipeline = Pipeline([stuck, Boom()], logger=Log(), lane_capacity=1, lane_wait=0.05)
        view = _view(pipeline)
        await pipeline.start(lambda p: PluginContext(name=p.name, registration=RegistrationInfo("x", "y"),
                                                     stats=view))
        for index in range(4):  # one in the hook, one in the lane, then drops
            await pipeline.submit_telemetry([log_event(str(index))])
        await _until(lambda: view.lane_drops().get("stuck", 0) >= 1)
        assert view.queue_depths()["stuck"] == 1
        await _until(lambda: view.plugin_failures().get(("boom", "on_telemetry"), 0) >= 1)
        assert view.plugins() == {"stuck": False, "boom": False}
        assert view["lane_events_dropped"] == sum(view.lane_drops().values())
        stuck.gate.set()
        await pipeline.shutdown(2)

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _points(metrics: List[Dict[str, Any]], name: str) -> Dict[Any, float]:
    out: Dict[Any, float] = {}
    for metric in metrics:
        if metric["name"] == name:
            data = metric.get("sum") or metric.get("gauge") or {}
            for point in data.get("dataPoints", []):
                attrs = tuple(sorted((a["key"], a["value"].get("stringValue", ""))
                                     for a in point.get("attributes", [])))
                out[attrs] = float(point.get("asInt", point.get("asDouble", 0)))
    return out


def test_otlp_sink_exports_processor_drops_and_plugin_failures(tap_factory: Callable[[int], OtelTap],
                                                             tmp_path: Path) -> None:
    """Through PluginContext.stats the OTLP sink exports what the pipeline counted: events a processor
    dropped and another plugin's failures by hook, and the plugins' disabled state."""
    tap = tap_factory(free_port())
    tap.start()

    async def scenario() -> None:
        otlp = OtlpPlugin()
        pipeline = Pipeline([DropLogs(), Boom(), otlp], logger=Log())
        view = _view(pipeline)
        env = environ(tap.port, tmp_path)
        await pipeline.start(lambda p: PluginContext(name=p.name, registration=RegistrationInfo("x", "y", "hello"),
                                                     stats=view, environ=env))
        await pipeline.dispatch_telemetry(parse_batch(invocation(INVOKE_ID, 0, logs=3)).events)
        await pipeline.flush(3)

        def counted(metrics: List[Dict[str, Any]]) -> bool:
            return bool(_points(metrics, "fgext.agent.plugin.failures"))
        metrics = await tap.wait("metrics", counted, 10)
        dropped = _points(metrics, "fgext.agent.dropped")
        assert dropped[(("fgext.reason", "processor"), ("fgext.signal", "events"))] == 3
        assert _points(metrics, "fgext.agent.plugin.failures") == {
            (("fgext.hook", "on_telemetry"), ("fgext.plugin", "boom")): 1}
        assert _points(metrics, "fgext.agent.plugin.disabled") == {
            (("fgext.plugin", "droplogs"),): 0, (("fgext.plugin", "boom"),): 0, (("fgext.plugin", "otlp"),): 0}
        await pipeline.shutdown(3)

    asyncio.run(scenario())
