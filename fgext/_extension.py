"""The decorator style: a whole extension in one file, on the same contract as class-style plugins.

::

    import fgext

    ext = fgext.Extension(name="slow-alert", config={"threshold_ms": float})

    @ext.on_telemetry(types=(fgext.Report,))
    def report(events):
        for event in events:
            if (event.metrics.duration_ms or 0) > ext.config.get("threshold_ms", 1000):
                ext.log.warning("slow invocation", request_id=event.request_id)

    if __name__ == "__main__":
        ext.run()

One slot per signal, each empty by default (the shape of the Rust ``lambda-extension`` builder):
``on_start``, ``on_invoke``, ``on_event`` (a processor: return the event, a changed copy, or ``None``
to drop it), ``on_telemetry`` (a sink), ``on_flush`` and ``on_shutdown``. Handlers may be plain
functions or coroutines, exactly like class-style hooks: the pipeline runs plain ones in a worker
thread. ``on_start``, ``on_flush`` and ``on_shutdown`` handlers may omit their argument.

Underneath, :meth:`Extension.as_plugins` builds ordinary :class:`fgext.Plugin` instances: a
processor when ``on_event`` is set, a sink for the rest. So the same object runs three ways: with
``ext.run()`` as the agent itself, named in ``FGEXT_PLUGINS`` as ``module:ext`` beside other plugins,
or under :func:`fgext.testing.run_plugin` in a test.
"""

from __future__ import annotations

import inspect
import sys
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    TypeVar,
    Union,
    overload,
)

from fgext._plugin import EventTypes, Plugin, PluginContext

__all__ = ["Extension"]

F = TypeVar("F", bound=Callable[..., Any])


def _positional_capacity(function: Callable[..., Any]) -> int:
    """How many positional arguments ``function`` takes (a large number for ``*args``)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return 1
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind == parameter.VAR_POSITIONAL:
            return 1 << 16
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _without_arguments(function: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a zero-argument handler to a one-argument hook, keeping it sync or async."""
    if inspect.iscoroutinefunction(function):
        async def async_hook(*_args: Any) -> Any:
            return await function()

        return async_hook

    def hook(*_args: Any) -> Any:
        return function()

    return hook


class _ExtensionPlugin(Plugin):
    """One role of an :class:`Extension`; its hooks are the user's handlers, set per instance."""

    name: ClassVar[str] = ""

    def __init__(self, extension: Extension, role: str, lifecycle: bool) -> None:
        # Instance attributes shadow the class-level declarations: each Extension has its own values.
        self.name = extension.name  # type: ignore[misc]
        self.role = role  # type: ignore[misc]
        self.order = extension.order  # type: ignore[misc]
        self.on_error = extension.on_error  # type: ignore[misc]
        self.max_failures = extension.max_failures  # type: ignore[misc]
        self.config_schema = dict(extension.config_schema)  # type: ignore[misc]
        handlers = extension._handlers
        if role == "processor":
            self.process = handlers["event"]  # type: ignore[method-assign]
            self.accepts = extension._types.get("event", ())  # type: ignore[misc]
        elif "telemetry" in handlers:
            self.on_telemetry = handlers["telemetry"]  # type: ignore[method-assign]
            self.accepts = extension._types.get("telemetry", ())  # type: ignore[misc]
        if not lifecycle:
            # Only one of an extension's plugins runs its lifecycle handlers, so each runs once.
            return
        self.start = self._starter(extension, handlers.get("start"))  # type: ignore[method-assign,assignment]
        for slot, hook in (("invoke", "on_invoke"), ("flush", "flush"), ("shutdown", "shutdown")):
            if slot in handlers:
                setattr(self, hook, handlers[slot])

    @staticmethod
    def _starter(extension: Extension, handler: Optional[Callable[..., Any]]) -> Callable[[PluginContext], Any]:
        if handler is None:
            async def remember(context: PluginContext) -> None:
                extension._context = context

            return remember
        user = handler
        if inspect.iscoroutinefunction(user):
            async def async_start(context: PluginContext) -> None:
                extension._context = context
                await user(context)

            return async_start

        def start(context: PluginContext) -> None:
            extension._context = context
            user(context)

        return start


class Extension:
    """An extension written as decorated functions; see the module documentation for an example.

    ``name`` is the plugin name (in logs, ``FGEXT_<NAME>_<KEY>`` settings and the config file's
    ``plugins.<name>`` section); ``config`` maps the settings it accepts to their types; ``order``,
    ``on_error`` and ``max_failures`` mean what they mean on :class:`fgext.Plugin`.
    """

    def __init__(self, name: str = "extension", *, config: Optional[Mapping[str, type]] = None,
                 order: int = 100, on_error: str = "pass", max_failures: int = 10) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("an Extension needs a non-empty name")
        if on_error not in ("pass", "drop"):
            raise ValueError(f"on_error must be 'pass' or 'drop', got {on_error!r}")
        self.name = name
        self.config_schema: Dict[str, type] = dict(config or {})
        self.order = order
        self.on_error = on_error
        self.max_failures = max_failures
        self._handlers: Dict[str, Callable[..., Any]] = {}
        self._types: Dict[str, EventTypes] = {}
        self._context: Optional[PluginContext] = None

    def __repr__(self) -> str:
        return f"Extension(name={self.name!r}, handlers={sorted(self._handlers)})"

    # ------------------------------------------------------------------------------- registration

    def _register(self, slot: str, function: Callable[..., Any], types: EventTypes = (),
                  optional_argument: bool = False) -> None:
        if not callable(function):
            raise TypeError(f"@{self.name}.on_{slot} decorates a function, got {function!r}")
        if slot in self._handlers:
            raise ValueError(f"extension {self.name!r} already has an on_{slot} handler "
                             f"({getattr(self._handlers[slot], '__name__', '?')})")
        if not isinstance(types, tuple) or not all(isinstance(t, type) for t in types):
            raise TypeError(f"on_{slot}(types=...) must be a tuple of event classes, got {types!r}")
        if optional_argument and _positional_capacity(function) == 0:
            function = _without_arguments(function)
        self._handlers[slot] = function
        if types:
            self._types[slot] = types

    def on_start(self, function: F) -> F:
        """``fn(context)`` or ``fn()``: once, after registration, before any event."""
        self._register("start", function, optional_argument=True)
        return function

    def on_invoke(self, function: F) -> F:
        """``fn(invoke)``: each ``POST /extension/invoke``, with an :class:`fgext.Invoke`."""
        self._register("invoke", function)
        return function

    @overload
    def on_event(self, function: F) -> F: ...

    @overload
    def on_event(self, *, types: EventTypes = ..., order: Optional[int] = ...) -> Callable[[F], F]: ...

    def on_event(self, function: Optional[F] = None, *, types: EventTypes = (),
                 order: Optional[int] = None) -> Union[F, Callable[[F], F]]:
        """``fn(event) -> event | None``: a processor, before every sink; ``None`` drops the event.

        ``types`` limits it to those event classes (others pass unchanged); ``order`` places it in
        the chain (lower first).
        """
        def decorate(fn: F) -> F:
            self._register("event", fn, types)
            if order is not None:
                self.order = order
            return fn

        return decorate(function) if function is not None else decorate

    @overload
    def on_telemetry(self, function: F) -> F: ...

    @overload
    def on_telemetry(self, *, types: EventTypes = ...) -> Callable[[F], F]: ...

    def on_telemetry(self, function: Optional[F] = None, *,
                     types: EventTypes = ()) -> Union[F, Callable[[F], F]]:
        """``fn(events)``: a sink, given each batch that survived the processors.

        ``types`` limits it to those event classes; a batch holding none of them is not delivered.
        """
        def decorate(fn: F) -> F:
            self._register("telemetry", fn, types)
            return fn

        return decorate(function) if function is not None else decorate

    def on_flush(self, function: F) -> F:
        """``fn(timeout)`` or ``fn()``: send what is pending now."""
        self._register("flush", function, optional_argument=True)
        return function

    def on_shutdown(self, function: F) -> F:
        """``fn(timeout)`` or ``fn()``: the agent is stopping; release everything within ``timeout``."""
        self._register("shutdown", function, optional_argument=True)
        return function

    # ------------------------------------------------------------------------------------ runtime

    @property
    def context(self) -> PluginContext:
        """The :class:`fgext.PluginContext` given at start (registration, config, logger)."""
        if self._context is None:
            raise RuntimeError(f"extension {self.name!r} has not started yet")
        return self._context

    @property
    def config(self) -> Mapping[str, Any]:
        """This extension's validated settings; empty before start."""
        return self._context.config if self._context is not None else {}

    @property
    def log(self) -> Any:
        """A structured logger bound to this extension's name."""
        if self._context is not None and self._context.logger is not None:
            return self._context.logger
        import structlog

        return structlog.get_logger().bind(plugin=self.name)

    def as_plugins(self) -> List[Plugin]:
        """The plugins this extension stands for: a processor if ``on_event`` is set, and a sink."""
        plugins: List[Plugin] = []
        has_processor = "event" in self._handlers
        # Lifecycle handlers ride on whichever plugin exists; a sink is needed only for on_telemetry.
        needs_sink = not has_processor or "telemetry" in self._handlers
        if has_processor:
            plugins.append(_ExtensionPlugin(self, "processor", lifecycle=not needs_sink))
        if needs_sink:
            plugins.append(_ExtensionPlugin(self, "sink", lifecycle=True))
        return plugins

    def as_plugin(self) -> Plugin:
        """The single plugin of an extension that is only a processor or only a sink."""
        plugins = self.as_plugins()
        if len(plugins) != 1:
            raise ValueError(f"extension {self.name!r} is both a processor and a sink; use as_plugins()")
        return plugins[0]

    def run(self, *, exit: bool = True, plugins: Sequence[Plugin] = ()) -> int:
        """Run the agent with this extension (plus ``plugins``, plus any named in ``FGEXT_PLUGINS``).

        Exits the process with the agent's exit code unless ``exit=False``.
        """
        from fgext._bootstrap import main_run

        code = main_run(plugins=[*self.as_plugins(), *plugins])
        if exit:
            sys.exit(code)
        return code

