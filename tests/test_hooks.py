"""Calling one plugin hook: isolation, time bounds, per-hook failure counts, the plugin's own thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import pytest

from fgext._deadline import Deadline
from fgext._hooks import Hooks, PluginFailure, PluginState, bounded, overrides
from fgext._plugin import Plugin


class Log:
    def __init__(self) -> None:
        self.lines: List[Tuple[str, str, Dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))


def hooks(log: Optional[Log] = None, strict: bool = False, hook_timeout: float = 5.0) -> Hooks:
    return Hooks(logger=log or Log(), strict=strict, hook_timeout=hook_timeout,
                 stats={"plugin_failures": 0, "plugins_disabled": 0})


class Mixed(Plugin):
    """on_telemetry always fails; on_invoke always succeeds; flush takes whatever time it is given."""

    name: ClassVar[str] = "mixed"
    max_failures: ClassVar[int] = 3

    def __init__(self) -> None:
        self.threads: List[Tuple[str, bool]] = []
        self.flush_timeouts: List[Optional[float]] = []

    def on_invoke(self, invoke: Any) -> None:
        self.threads.append((threading.current_thread().name, threading.current_thread().daemon))

    def on_telemetry(self, events: Sequence[Any]) -> None:
        raise RuntimeError("broken")

    async def flush(self, timeout: Optional[float] = None) -> None:
        self.flush_timeouts.append(timeout)
        await asyncio.sleep(60)


class TestCall:
    def test_failures_are_counted_per_hook(self) -> None:
        """Successes of on_invoke between failing on_telemetry calls do not reset its count: disabled at 3."""
        plugin, log = Mixed(), Log()
        state = PluginState(plugin)
        calls = hooks(log)

        async def go() -> List[bool]:
            outcomes = []
            for _ in range(3):
                outcomes.append(await calls.call(state, "on_invoke", None))
                outcomes.append(await calls.call(state, "on_telemetry", []))
            return outcomes

        assert asyncio.run(go()) == [True, False] * 3
        assert state.disabled and state.failures == {"on_telemetry": 3}
        assert [f["consecutive"] for _, ev, f in log.lines if ev == "plugin failed"] == [1, 2, 3]

    def test_plain_functions_run_in_the_plugins_own_daemon_thread(self) -> None:
        """A plain-function hook runs in a daemon thread named after the plugin (the process never waits on it)."""
        plugin = Mixed()

        async def go() -> None:
            state = PluginState(plugin)
            await hooks().call(state, "on_invoke", None)
            await hooks().call(state, "on_invoke", None)
            state.thread.close()

        asyncio.run(go())
        assert plugin.threads == [("fgext-plugin-mixed", True)] * 2

    def test_a_hook_is_held_to_its_deadline_and_told_what_it_has(self) -> None:
        """call_until gives the hook the deadline's remaining seconds and counts running past it as a failure."""
        plugin = Mixed()
        state = PluginState(plugin)

        async def go() -> bool:
            return await hooks().call_until(state, "flush", Deadline.after(0.2))

        assert asyncio.run(asyncio.wait_for(go(), 5)) is False
        assert len(plugin.flush_timeouts) == 1 and 0 < (plugin.flush_timeouts[0] or 0) <= 0.2
        assert state.failures == {"flush": 1}

    def test_strict_raises_with_the_cause(self) -> None:
        """In strict mode the first failure raises PluginFailure naming the plugin and the hook."""
        state = PluginState(Mixed())
        with pytest.raises(PluginFailure) as info:
            asyncio.run(hooks(strict=True).call(state, "on_telemetry", []))
        assert (info.value.plugin, info.value.hook) == ("mixed", "on_telemetry")
        assert isinstance(info.value.__cause__, RuntimeError)


class TestBounded:
    def test_a_hook_that_never_suspends_returns_its_value_with_no_time_left(self) -> None:
        """A coroutine that returns without suspending is not timed out, even with no time left (it cannot be)."""

        async def quick() -> int:
            return 7

        async def go() -> int:
            return await bounded(quick(), 0.0)

        assert asyncio.run(go()) == 7

    def test_a_hook_that_suspends_gets_results_and_raises_its_own_errors(self) -> None:
        """After its first suspension the hook still receives what it awaits and its exception reaches the caller."""

        async def slow() -> str:
            await asyncio.sleep(0)
            value = await asyncio.sleep(0.01, result="late")
            raise ValueError(value)

        async def go() -> None:
            await bounded(slow(), 5.0)

        with pytest.raises(ValueError, match="late"):
            asyncio.run(go())

    def test_a_hook_that_suspends_past_its_limit_is_cancelled_and_can_clean_up(self) -> None:
        """Past the limit the hook sees CancelledError at its await (its finally runs); the caller a TimeoutError."""
        seen: List[str] = []

        async def stuck() -> None:
            await asyncio.sleep(0)
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        async def go() -> None:
            await bounded(stuck(), 0.05)

        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(asyncio.wait_for(go(), 5))
        assert seen == ["cancelled"]

    def test_a_hook_that_does_not_suspend_costs_no_timer(self) -> None:
        """A hook that returns at once schedules nothing on the loop (no timeout scope was entered)."""

        async def quick() -> None:
            return None

        async def go() -> int:
            loop = asyncio.get_running_loop()
            await bounded(quick(), 5.0)
            return len(loop._scheduled)  # type: ignore[attr-defined]

        assert asyncio.run(go()) == 0


class TestOverrides:
    def test_base_hooks_are_not_overrides_own_and_assigned_ones_are(self) -> None:
        """A hook from the base class is not the plugin's own; a subclass method or an instance attribute is."""
        plugin = Mixed()
        assert overrides(plugin, "on_invoke") and overrides(plugin, "flush")
        assert not overrides(plugin, "shutdown") and not overrides(plugin, "start")
        plugin.shutdown = lambda timeout: None  # type: ignore[method-assign,assignment,return-value]
        assert overrides(plugin, "shutdown")
