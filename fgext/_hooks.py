"""Calling one hook of one plugin: isolated, bounded in time, and counted per hook.

Everything the pipeline asks of a plugin goes through :meth:`Hooks.call`. Coroutine hooks are awaited
on the event loop; plain-function hooks run in a daemon thread of the plugin's own
(:class:`HookThread`). Every call is bounded (the hook timeout, or what a deadline has left). A hook
that raises or runs out of time is logged with the plugin's name and the hook, and counted in a
consecutive-failure count of its own: a plugin failing ``max_failures`` times in a row in one hook
is disabled, and a success of another hook never resets that count. With ``strict`` the first
failure raises :class:`PluginFailure` instead.
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import sys
import threading
from typing import Any, Awaitable, Callable, Coroutine, Dict, Generator, Optional, Tuple

from fgext._deadline import Deadline
from fgext._plugin import Plugin

__all__ = ["HookThread", "Hooks", "PluginFailure", "PluginState", "bounded", "is_async", "overrides", "within"]


class PluginFailure(Exception):
    """Strict mode: a plugin hook raised; ``__cause__`` is what it raised."""

    def __init__(self, plugin: str, hook: str) -> None:
        super().__init__(f"plugin {plugin!r} failed in {hook}")
        self.plugin = plugin
        self.hook = hook


def is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


def overrides(plugin: Plugin, hook: str) -> bool:
    """Whether ``plugin`` has a ``hook`` of its own: the base ones do nothing, and calling a plain function
    costs a thread hop, so the base class's no-ops are never called."""
    return getattr(getattr(plugin, hook), "__func__", None) is not getattr(Plugin, hook)


if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # aiohttp's own dependency before 3.11: the same scope, from aio-libs
    from async_timeout import timeout as _timeout


async def within(call: Awaitable[Any], limit: Optional[float]) -> Any:
    """Await ``call`` for at most ``limit`` seconds (None: no bound); asyncio.TimeoutError past it.

    A timeout scope runs the call in the caller's task; ``wait_for`` (before 3.12) wraps it in a task of
    its own per call, which was a measurable share of the per-batch cost (`bench/hook_call.py`).
    """
    async with _timeout(limit):
        return await call


class _Started:
    """A coroutine that was started by hand and suspended on ``first``, awaited from there on as ``await``
    would: what the task sends or throws in (a result, a cancellation) goes on to the coroutine."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, None, Any]:
        coro = self._coro
        yielded = self._first
        while True:
            try:
                yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as error:  # a cancellation (the timeout's) goes to the hook, as await does
                try:
                    yielded = coro.throw(error)
                except StopIteration as stop:
                    return stop.value
            else:
                return (yield from coro.__await__())


async def bounded(coro: Coroutine[Any, Any, Any], limit: Optional[float]) -> Any:
    """Await a hook's coroutine for at most ``limit`` seconds, like :func:`within`, but start it first.

    A hook that returns without suspending (a sink that only files the batch in memory: the usual
    ``on_telemetry``) cannot be timed out anyway, so it pays for no timeout scope (a timer per call,
    a tenth of the per-batch cost on 3.9); one that suspends is bounded from there, by what is left of
    ``limit``.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        first = coro.send(None)
    except StopIteration as stop:
        return stop.value
    return await within(_Started(coro, first), None if limit is None else limit - (loop.time() - began))


def _settle(future: asyncio.Future[Any], result: Any, error: Optional[BaseException]) -> None:
    if future.done():  # the caller stopped waiting (its timeout)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class HookThread:
    """The thread one plugin's plain-function hooks run in, one call at a time, in call order.

    Not the loop's default executor: its threads are joined when the interpreter exits (and by
    ``asyncio.run``), so one plugin stuck in a synchronous hook would keep the process alive past
    ``FGEXT_SHUTDOWN_TIMEOUT``. This thread is a daemon, which the interpreter does not wait for: once
    every plugin has had its share of the deadline the process exits, whatever a stuck hook is doing
    (rather than ``os._exit``, which would also skip the other plugins' and the logger's clean-up).
    One per plugin also keeps a stuck plugin's later calls queued behind its own stuck call, instead
    of taking threads the other plugins need.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Optional[Tuple[Any, ...]]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None

    def call(self, function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"fgext-plugin-{self._name}", daemon=True)
            self._thread.start()
        self._jobs.put((loop, future, function, args))
        return future

    def close(self) -> None:
        """Let the thread end once it is done with what it was given."""
        if self._thread is not None:
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, future, function, args = job
            result: Any = None
            error: Optional[BaseException] = None
            try:
                result = function(*args)
            except BaseException as raised:  # handed to the coroutine awaiting it, whatever it is
                error = raised
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return


class PluginState:
    """One plugin and what the pipeline knows about it."""

    __slots__ = ("coroutines", "disabled", "failures", "name", "plugin", "started", "thread")

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.name = plugin.name or type(plugin).__name__
        self.failures: Dict[str, int] = {}  # consecutive failures, by hook
        self.disabled = False
        self.started = False
        self.thread = HookThread(self.name)
        self.coroutines: Dict[str, bool] = {}  # whether each hook called so far is a coroutine function


class Hooks:
    """Calls plugins' hooks; counts failures (in ``stats``: ``plugin_failures``, ``plugins_disabled``)."""

    def __init__(self, *, logger: Any, strict: bool, hook_timeout: float, stats: Dict[str, int]) -> None:
        self._log = logger
        self._strict = strict
        self.hook_timeout = hook_timeout
        self._stats = stats
        #: failures since start by (plugin, hook); ``stats["plugin_failures"]`` is their total
        self.failures: Dict[Tuple[str, str], int] = {}

    async def call(self, state: PluginState, hook: str, *args: Any, deadline: Optional[Deadline] = None) -> bool:
        """Call one hook of one plugin, isolated and bounded in time; return whether it succeeded."""
        function = getattr(state.plugin, hook)
        limit = self.hook_timeout if deadline is None else deadline.remaining()
        coroutine = state.coroutines.get(hook)
        if coroutine is None:  # inspect's answer is costly and never changes for a plugin's hook
            coroutine = state.coroutines[hook] = is_async(function)
        try:
            if coroutine:
                await bounded(function(*args), limit)
            else:
                result = await within(state.thread.call(function, *args), limit)
                if inspect.isawaitable(result):
                    # A plain function that returned a coroutine (a wrapped or decorated hook).
                    await within(result, limit if deadline is None else deadline.remaining())
        except (Exception, asyncio.TimeoutError) as error:
            self.failed(state, hook, error)
            return False
        self.succeeded(state, hook)
        return True

    def call_inline(self, state: PluginState, hook: str, *args: Any) -> Optional[Awaitable[bool]]:
        """Start a coroutine hook in the caller's task (a plugin's ``inline`` declaration): None once it ended,
        counted like :meth:`call`; if it suspends, the rest, bounded by what is left of the hook timeout,
        to be awaited in a task of its own (it returns whether the hook succeeded).

        With ``strict`` a failure before the first suspension raises :class:`PluginFailure` here.
        """
        began = asyncio.get_running_loop().time()
        try:
            coro = getattr(state.plugin, hook)(*args)
            first = coro.send(None)
        except StopIteration:
            self.succeeded(state, hook)
            return None
        except Exception as error:
            self.failed(state, hook, error)
            return None
        return self._rest(state, hook, _Started(coro, first), began)

    async def _rest(self, state: PluginState, hook: str, rest: _Started, began: float) -> bool:
        limit = self.hook_timeout - (asyncio.get_running_loop().time() - began)
        try:
            await within(rest, limit)
        except (Exception, asyncio.TimeoutError) as error:
            self.failed(state, hook, error)
            return False
        self.succeeded(state, hook)
        return True

    async def call_until(self, state: PluginState, hook: str, deadline: Deadline) -> bool:
        """``flush`` or ``shutdown``: the plugin is told the seconds it has (its public contract takes float
        seconds) and is held to them."""
        if deadline.timeout() is None:
            deadline = Deadline.after(self.hook_timeout)
        return await self.call(state, hook, deadline.remaining(), deadline=deadline)

    def succeeded(self, state: PluginState, hook: str) -> None:
        if state.failures.get(hook):
            state.failures[hook] = 0

    def failed(self, state: PluginState, hook: str, error: BaseException) -> None:
        self._stats["plugin_failures"] += 1
        key = (state.name, hook)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self._strict:
            # The original exception is logged here: PluginFailure only names the plugin and the hook.
            self._log.error("plugin failed", plugin=state.name, hook=hook, error=f"{type(error).__name__}: {error}",
                            strict=True)
            raise PluginFailure(state.name, hook) from error
        count = state.failures[hook] = state.failures.get(hook, 0) + 1
        self._log.error("plugin failed", plugin=state.name, hook=hook, error=f"{type(error).__name__}: {error}",
                        consecutive=count)
        if count >= max(1, state.plugin.max_failures) and not state.disabled:
            self.disable(state, f"{count} consecutive failures in {hook}")

    def disable(self, state: PluginState, why: str) -> None:
        state.disabled = True
        self._stats["plugins_disabled"] += 1
        self._log.warning("plugin disabled", plugin=state.name, why=why)
