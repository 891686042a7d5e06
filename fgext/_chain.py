"""The one place where the plugin chain runs: every processor over a batch, in ``order``.

The chain step of every sink's path (listener handler -> parse (:mod:`fgext._parse`) -> pipeline
(:mod:`fgext._pipeline`) -> **chain** -> back to the pipeline, which hands what survived to each sink's
lane (:mod:`fgext._lane`) -> the sink, for OTLP ``OtlpPlugin.on_telemetry`` -> assembler -> ...).

Each processor sees the batch that the one before it left, event by event and isolated: an event whose
``process`` raises goes on unchanged or is dropped, as the processor's ``on_error`` declares, and the
failure is counted per hook through :class:`fgext._hooks.Hooks`; returning ``None`` or raising
:class:`~fgext._errors.DropEvent` drops that event alone, counted in ``dropped_by_processors`` and
reported to ``on_drop``. A processor's ``accepts`` narrows what it sees; the others pass it unchanged,
in their place. A plain-function processor runs the whole batch in one hop to its own thread.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fgext._errors import DropEvent
from fgext._events import AnyEvent
from fgext._hooks import Hooks, PluginState, is_async, within
from fgext._lane import Lane

__all__ = ["Chain"]

_Outcome = Tuple[Optional[AnyEvent], Optional[BaseException], AnyEvent]


class Chain:
    """Runs processors over batches; counts what they drop and what fails."""

    def __init__(self, hooks: Hooks, *, hook_timeout: float, stats: Dict[str, int]) -> None:
        self._hooks = hooks
        self._hook_timeout = hook_timeout
        self._stats = stats
        #: called with (plugin name, original event) for every event a processor drops
        self.on_drop: Optional[Callable[[str, AnyEvent], None]] = None

    async def run(self, processors: Sequence[Lane], events: List[AnyEvent]) -> List[AnyEvent]:
        """``events`` after every enabled processor in turn (each given what the one before left)."""
        survivors = events
        for lane in processors:
            if lane.state.disabled or not lane.telemetry or not survivors:
                continue
            lane.received = True  # for the flush clock: this processor has something to flush
            survivors = await self._process(lane.state, survivors)
        return survivors

    async def _process(self, state: PluginState, events: List[AnyEvent]) -> List[AnyEvent]:
        if state.plugin.accepts:
            # Events the processor does not accept pass by it unchanged, in their place in the batch.
            mine = [e for e in events if state.plugin.wants(e)]
            if not mine:
                return events
            if len(mine) < len(events):
                done = iter(await self._process_all(state, mine))
                merged: List[AnyEvent] = []
                for event in events:
                    if state.plugin.wants(event):
                        outcome = next(done)
                        if outcome is not None:
                            merged.append(outcome)
                    else:
                        merged.append(event)
                return merged
        return [e for e in await self._process_all(state, events) if e is not None]

    def _dropped(self, state: PluginState, event: AnyEvent) -> None:
        self._stats["dropped_by_processors"] += 1
        if self.on_drop is not None:
            self.on_drop(state.name, event)

    async def _process_all(self, state: PluginState, events: List[AnyEvent]) -> List[Optional[AnyEvent]]:
        """Run one processor over ``events``; a dropped event leaves ``None`` in its slot."""
        process = state.plugin.process
        if is_async(process):
            return [await self._one(state, event, process) for event in events]

        def run_batch() -> List[_Outcome]:
            results: List[_Outcome] = []
            for event in events:
                try:
                    results.append((process(event), None, event))  # type: ignore[arg-type]
                except DropEvent:
                    results.append((None, None, event))
                except Exception as error:  # isolation is the point
                    results.append((None, error, event))
            return results

        # One thread hop per batch, not per event: a slow sync processor never blocks the loop.
        try:
            outcomes = await within(state.thread.call(run_batch), self._hook_timeout)
        except asyncio.TimeoutError as timeout:
            # The whole batch waited too long: one failure, and every event goes as ``on_error`` says.
            self._hooks.failed(state, "process", timeout)
            outcomes = [(None, timeout, event) for event in events]
        kept: List[Optional[AnyEvent]] = []
        for result, error, original in outcomes:
            if error is not None:
                if not isinstance(error, asyncio.TimeoutError):
                    self._hooks.failed(state, "process", error)
                if state.plugin.on_error != "drop":
                    kept.append(original)
                else:
                    self._dropped(state, original)
                    kept.append(None)
            elif result is None:
                self._dropped(state, original)
                kept.append(None)
            else:
                self._hooks.succeeded(state, "process")
                kept.append(result)
        return kept

    async def _one(self, state: PluginState, event: AnyEvent, process: Callable[..., Any]) -> Optional[AnyEvent]:
        try:
            result = await within(process(event), self._hook_timeout)
        except DropEvent:
            self._dropped(state, event)
            return None
        except Exception as error:
            self._hooks.failed(state, "process", error)
            if state.plugin.on_error == "drop":
                self._dropped(state, event)
                return None
            return event
        self._hooks.succeeded(state, "process")
        if result is None:
            # Returning None drops the event, as it does for a synchronous processor.
            self._dropped(state, event)
        return result  # type: ignore[no-any-return]
