"""The one place where the plugin chain runs.

The HTTP handlers hand invokes and parsed telemetry batches to :meth:`Pipeline.submit_invoke` and
:meth:`Pipeline.submit_telemetry`, which only queue them: the platform gets its answer at once. One
worker task takes items in arrival order and dispatches them: every processor over the batch (in
``order``), then every sink on what survived, concurrently. All isolation lives here: a plugin that
raises is logged with its name and the event goes on (or is dropped, as the processor declares); a
plugin that keeps failing is disabled; with ``strict`` the first failure is raised instead.

The queue is bounded: when plugins fall behind, ``submit_telemetry`` waits for room, so the platform's
POST waits too, instead of the agent's memory growing without limit.

After a batch that ends an invocation (it holds a ``platform.report``), every plugin that implements
``flush`` (and keeps ``flush_at_invocation_end``) is flushed, because the sandbox may be frozen next.
The flush runs beside the worker, never in its way: one at a time per plugin, and reports arriving
meanwhile are answered by one more flush after it, not one each.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from fgext._errors import DropEvent
from fgext._events import AnyEvent, Invoke, Report
from fgext._plugin import Plugin, PluginContext

__all__ = ["Pipeline", "PluginFailure"]

_STOP = object()
_Item = Union[Tuple[str, Any], object]


class PluginFailure(Exception):
    """Strict mode: a plugin hook raised; ``__cause__`` is what it raised."""

    def __init__(self, plugin: str, hook: str) -> None:
        super().__init__(f"plugin {plugin!r} failed in {hook}")
        self.plugin = plugin
        self.hook = hook


@dataclass
class _State:
    plugin: Plugin
    failures: int = 0
    disabled: bool = False
    started: bool = False


def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


async def _all(calls: Iterable[Awaitable[Any]]) -> None:
    """``gather`` without its task per call when there is just one (the usual case: one sink)."""
    pending = list(calls)
    if len(pending) == 1:
        await pending[0]
    elif pending:
        await asyncio.gather(*pending)


if sys.version_info >= (3, 11):
    async def _within(call: Awaitable[Any], limit: float) -> Any:
        # asyncio.timeout runs the hook in the caller's task; wait_for (before 3.12) wraps it in a new
        # task per call, which was a measurable share of the per-batch cost.
        async with asyncio.timeout(limit):
            return await call
else:
    async def _within(call: Awaitable[Any], limit: float) -> Any:
        return await asyncio.wait_for(call, timeout=limit)


def _implements_flush(plugin: Plugin) -> bool:
    """Whether ``plugin`` has a ``flush`` of its own: the base one does nothing, and calling a plain
    function costs a thread hop, so only real flushes are called at the end of each invocation."""
    return getattr(plugin.flush, "__func__", None) is not Plugin.flush


class Pipeline:
    """Runs plugins over invokes and telemetry; owns their lifecycle (start, flush, shutdown)."""

    def __init__(self, plugins: Sequence[Plugin], *, logger: Any, strict: bool = False,
                 max_pending: int = 256, hook_timeout: float = 30.0) -> None:
        processors = [p for p in plugins if p.role == "processor"]
        # sorted() is stable: processors of equal order keep the order they were enabled in.
        self._processors = [_State(p) for p in sorted(processors, key=lambda p: p.order)]
        self._sinks = [_State(p) for p in plugins if p.role != "processor"]
        self._log = logger
        self._strict = strict
        self._hook_timeout = hook_timeout
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_pending)
        self._worker: Optional[asyncio.Task[None]] = None
        self._closing = False
        self.failure: Optional[BaseException] = None  # strict mode: what stopped the pipeline
        self.stats: Dict[str, int] = {
            "invokes": 0, "batches": 0, "events": 0, "dropped_by_processors": 0,
            "plugin_failures": 0, "plugins_disabled": 0,
        }
        self.on_fatal: Optional[Callable[[BaseException], None]] = None
        #: called with (plugin name, original event) for every event a processor drops
        self.on_drop: Optional[Callable[[str, AnyEvent], None]] = None
        self._end_flushers = [s for s in self._processors + self._sinks
                              if s.plugin.flush_at_invocation_end and _implements_flush(s.plugin)]
        self._flushes: Dict[int, asyncio.Task[None]] = {}  # by id(state): the flush running for it
        self._flush_again: Set[int] = set()

    # -------------------------------------------------------------------------------- lifecycle

    @property
    def plugins(self) -> List[Plugin]:
        return [s.plugin for s in self._processors + self._sinks]

    async def start(self, make_context: Callable[[Plugin], PluginContext]) -> None:
        """Start every plugin (a plugin that fails to start is disabled), then the worker."""
        for state in self._processors + self._sinks:
            ok = await self._call(state, "start", make_context(state.plugin))
            state.started = ok
            if not ok and not state.disabled:
                self._disable(state, "failed to start")
        self._worker = asyncio.ensure_future(self._run())

    async def submit_invoke(self, invoke: Invoke) -> None:
        await self._queue.put(("invoke", invoke))

    async def submit_telemetry(self, events: Sequence[AnyEvent]) -> None:
        if events:
            await self._queue.put(("telemetry", events))

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Ask every plugin to send what it holds now (the sandbox may be frozen next).

        Processors are asked too: the contract gives ``flush`` to both roles, and a processor may
        hold state of its own (an extension's lifecycle handlers can ride on its processor).
        """
        # Never two flushes of one plugin at once: an end-of-invocation flush still running goes first.
        if timeout is None:
            await self._settle_flushes(self._hook_timeout)
        else:
            deadline = time.monotonic() + timeout
            await self._settle_flushes(timeout * 0.5)
            timeout = max(0.0, deadline - time.monotonic())
        states = [s for s in self._processors + self._sinks if not s.disabled]
        await asyncio.gather(*(self._call(s, "flush", timeout, timeout=timeout) for s in states))

    async def shutdown(self, timeout: float) -> None:
        """Dispatch everything queued, then flush and shut plugins down, all within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._closing = True
        if self._worker is not None and not self._worker.done():
            await self._queue.put(_STOP)
            # Queued work gets most of the time; plugins keep at least a share for their own flush.
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout=max(0.0, timeout * 0.6))
            except asyncio.TimeoutError:
                self._log.warning("pipeline shutdown: queued telemetry not fully dispatched in time",
                                  pending=self._queue.qsize())
                self._worker.cancel()
        await self._settle_flushes(max(0.0, (deadline - time.monotonic()) * 0.5))
        remaining = max(0.05, deadline - time.monotonic())
        states = [s for s in self._processors + self._sinks if s.started and not s.disabled]
        await asyncio.gather(*(self._call(s, "shutdown", remaining, timeout=remaining) for s in states))

    # ---------------------------------------------------------------------------------- dispatch

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            kind, payload = item  # type: ignore[misc]
            try:
                if kind == "invoke":
                    await self.dispatch_invoke(payload)
                else:
                    await self.dispatch_telemetry(payload)
            except PluginFailure as failure:
                self._fatal(failure)
                return

    async def dispatch_invoke(self, invoke: Invoke) -> None:
        """Hand one invoke to every plugin."""
        self.stats["invokes"] += 1
        states = [s for s in self._processors + self._sinks if not s.disabled]
        await _all(self._call(s, "on_invoke", invoke) for s in states)

    async def dispatch_telemetry(self, events: Sequence[AnyEvent]) -> List[AnyEvent]:
        """Run the chain on one batch: processors in order, then sinks; return what the sinks got."""
        self.stats["batches"] += 1
        self.stats["events"] += len(events)
        survivors: List[AnyEvent] = list(events)
        for state in self._processors:
            if state.disabled or not survivors:
                continue
            survivors = await self._process(state, survivors)
        if survivors:
            calls = []
            for state in self._active_sinks():
                # ``accepts`` narrows what a sink sees; a batch with nothing for it is not delivered at all.
                wanted = survivors if not state.plugin.accepts else [e for e in survivors if state.plugin.wants(e)]
                if wanted:
                    calls.append(self._call(state, "on_telemetry", wanted))
            await _all(calls)
        if self._end_flushers:
            # The original batch: a processor may have filtered the report out, the invocation still ended.
            for event in events:
                if isinstance(event, Report):
                    self._flush_at_end()
                    break
        return survivors

    # ------------------------------------------------------------------------ end of invocation

    def _flush_at_end(self) -> None:
        for state in self._end_flushers:
            if state.disabled:
                continue
            key = id(state)
            running = self._flushes.get(key)
            if running is not None and not running.done():
                self._flush_again.add(key)  # answered by one more flush when the running one ends
            else:
                self._flushes[key] = asyncio.ensure_future(self._flush_loop(state))

    async def _flush_loop(self, state: _State) -> None:
        key = id(state)
        while True:
            self._flush_again.discard(key)
            try:
                await self._call(state, "flush", self._hook_timeout, timeout=self._hook_timeout)
            except PluginFailure as failure:  # strict mode, outside the worker: stop the same way
                self._fatal(failure)
                return
            if key not in self._flush_again or state.disabled or self._closing:
                return

    def _fatal(self, failure: PluginFailure) -> None:
        self.failure = failure
        if self.on_fatal is not None:
            self.on_fatal(failure)

    async def _settle_flushes(self, timeout: float) -> None:
        """Let running end-of-invocation flushes finish (shutdown flushes again, never concurrently)."""
        running = [task for task in self._flushes.values() if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=0.5)
        self._flushes.clear()

    def _active_sinks(self) -> List[_State]:
        return [s for s in self._sinks if not s.disabled]

    async def _process(self, state: _State, events: List[AnyEvent]) -> List[AnyEvent]:
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

    def _dropped(self, state: _State, event: AnyEvent) -> None:
        self.stats["dropped_by_processors"] += 1
        if self.on_drop is not None:
            self.on_drop(state.plugin.name or type(state.plugin).__name__, event)

    async def _process_all(self, state: _State, events: List[AnyEvent]) -> List[Optional[AnyEvent]]:
        """Run one processor over ``events``; a dropped event leaves ``None`` in its slot."""
        process = state.plugin.process
        if _is_async(process):
            return [await self._one(state, event, process) for event in events]

        def run_batch() -> List[Tuple[Optional[AnyEvent], Optional[BaseException], AnyEvent]]:
            results: List[Tuple[Optional[AnyEvent], Optional[BaseException], AnyEvent]] = []
            for event in events:
                try:
                    results.append((process(event), None, event))  # type: ignore[arg-type]
                except DropEvent:
                    results.append((None, None, event))
                except Exception as error:  # isolation is the point
                    results.append((None, error, event))
            return results

        # One thread hop per batch, not per event: a slow sync processor never blocks the loop.
        outcomes = await asyncio.get_running_loop().run_in_executor(None, run_batch)
        kept: List[Optional[AnyEvent]] = []
        for result, error, original in outcomes:
            if error is not None:
                self._failed(state, "process", error)
                if state.plugin.on_error != "drop":
                    kept.append(original)
                else:
                    self._dropped(state, original)
                    kept.append(None)
            elif result is None:
                self._dropped(state, original)
                kept.append(None)
            else:
                self._succeeded(state)
                kept.append(result)
        return kept

    async def _one(self, state: _State, event: AnyEvent, process: Callable[..., Any]) -> Optional[AnyEvent]:
        try:
            result = await _within(process(event), self._hook_timeout)
        except DropEvent:
            self._dropped(state, event)
            return None
        except Exception as error:
            self._failed(state, "process", error)
            if state.plugin.on_error == "drop":
                self._dropped(state, event)
                return None
            return event
        self._succeeded(state)
        if result is None:
            # Returning None drops the event, as it does for a synchronous processor.
            self._dropped(state, event)
        return result  # type: ignore[no-any-return]

    async def _call(self, state: _State, hook: str, *args: Any, timeout: Optional[float] = None) -> bool:
        """Call one hook of one plugin, isolated; return whether it succeeded."""
        function = getattr(state.plugin, hook)
        limit = self._hook_timeout if timeout is None else timeout
        try:
            if _is_async(function):
                await _within(function(*args), limit)
            else:
                result = await _within(asyncio.get_running_loop().run_in_executor(None, function, *args), limit)
                if inspect.isawaitable(result):
                    # A plain function that returned a coroutine (a wrapped or decorated hook).
                    await _within(result, limit)
        except (Exception, asyncio.TimeoutError) as error:
            self._failed(state, hook, error)
            return False
        self._succeeded(state)
        return True

    # ----------------------------------------------------------------------------------- failure

    def _succeeded(self, state: _State) -> None:
        state.failures = 0

    def _failed(self, state: _State, hook: str, error: BaseException) -> None:
        name = state.plugin.name or type(state.plugin).__name__
        self.stats["plugin_failures"] += 1
        if self._strict:
            # The original exception is logged here: PluginFailure only names the plugin and the hook.
            self._log.error("plugin failed", plugin=name, hook=hook, error=f"{type(error).__name__}: {error}",
                            strict=True)
            raise PluginFailure(name, hook) from error
        state.failures += 1
        self._log.error("plugin failed", plugin=name, hook=hook, error=f"{type(error).__name__}: {error}",
                        consecutive=state.failures)
        if state.failures >= max(1, state.plugin.max_failures) and not state.disabled:
            self._disable(state, f"{state.failures} consecutive failures")

    def _disable(self, state: _State, why: str) -> None:
        state.disabled = True
        self.stats["plugins_disabled"] += 1
        self._log.warning("plugin disabled", plugin=state.plugin.name or type(state.plugin).__name__, why=why)
