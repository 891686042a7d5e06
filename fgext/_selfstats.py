"""A read-only view of the agent's own counters, handed to every plugin as ``PluginContext.stats``.

Each counter keeps its one owner (the listener's ``Agent.stats``, the pipeline's ``Pipeline.stats`` and
lanes, the hooks' failure counts); this view only reads them, live, so a sink (the OTLP plugin's
self-metrics, or a third-party one) reports what the agent knows without counting anything twice.

It is a ``Mapping[str, int]`` of the flat counters (``stats["events_received"]``), as ``stats`` always
was, plus the breakdowns that do not fit in one number. A plugin may also publish a summary of its own
(:meth:`AgentStats.publish`), which the agent's final ``stopped`` log line includes under the plugin's
name, so what a sink sent, spooled and dropped is said at exit in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from fgext._pipeline import Pipeline

__all__ = ["AgentStats", "event_kind"]


def event_kind(event: Any) -> str:
    """The bounded kind an event is counted under: a platform event's canonical name (``platform.report``),
    else its subscription category (``function``, ``extension``, ``unknown``)."""
    return getattr(event, "canonical_name", "") or getattr(event, "category", "") or "unknown"


class AgentStats(Mapping[str, int]):
    """Live, read-only counters of one agent: the listener's, then the pipeline's."""

    def __init__(self, agent: Mapping[str, int], events_by_kind: Mapping[str, int],
                 pipeline: Optional[Callable[[], Optional[Pipeline]]] = None) -> None:
        self._agent = agent
        self._by_kind = events_by_kind
        self._pipeline = pipeline or (lambda: None)
        self._published: Dict[str, Callable[[], Mapping[str, Any]]] = {}

    # the flat counters ------------------------------------------------------------------------

    def _maps(self) -> List[Mapping[str, int]]:
        pipeline = self._pipeline()
        return [self._agent] if pipeline is None else [self._agent, pipeline.stats]

    def __getitem__(self, key: str) -> int:
        for counters in self._maps():
            if key in counters:
                return counters[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for counters in self._maps():
            for key in counters:
                if key not in seen:
                    seen.add(key)
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # breakdowns -------------------------------------------------------------------------------

    def events_by_kind(self) -> Dict[str, int]:
        """Telemetry events received, by :func:`event_kind`."""
        return dict(self._by_kind)

    def queue_depths(self) -> Dict[str, int]:
        """Batches waiting in each sink's lane, by plugin name."""
        pipeline = self._pipeline()
        return pipeline.queue_depths() if pipeline is not None else {}

    def lane_drops(self) -> Dict[str, int]:
        """Telemetry events dropped because a sink's lane was full, by plugin name."""
        pipeline = self._pipeline()
        return pipeline.lane_drops() if pipeline is not None else {}

    def plugin_failures(self) -> Dict[Tuple[str, str], int]:
        """Hook failures since start, by (plugin name, hook)."""
        pipeline = self._pipeline()
        return pipeline.hook_failures() if pipeline is not None else {}

    def plugins(self) -> Dict[str, bool]:
        """Every plugin by name, and whether it is disabled."""
        pipeline = self._pipeline()
        return pipeline.disabled_plugins() if pipeline is not None else {}

    # what plugins publish ---------------------------------------------------------------------

    def publish(self, name: str, summary: Callable[[], Mapping[str, Any]]) -> None:
        """Have ``summary()`` (small, JSON-able) included under ``name`` in the agent's ``stopped`` line."""
        self._published[name] = summary

    def summaries(self) -> Dict[str, Mapping[str, Any]]:
        """What plugins published, read now; a summary that fails to read is left out."""
        out: Dict[str, Mapping[str, Any]] = {}
        for name, summary in self._published.items():
            try:
                out[name] = summary()
            except Exception:  # a plugin's bug must not cost the agent its exit line
                continue
        return out
