"""The plugin contract: everything a plugin may implement, in one place.

A plugin is a class deriving from :class:`Plugin`. Every hook has a no-op default, so a plugin
overrides only what it needs. Hooks may be plain functions or coroutines: the pipeline awaits
coroutines on the event loop and runs plain functions in a worker thread, so a slow synchronous
hook never blocks the agent.

Two roles, declared by ``role``:

- ``"processor"``: runs first, in ``order`` (lower first), on each telemetry event. ``process``
  returns the event (the same one or a changed copy; events are immutable, use
  ``dataclasses.replace``) or raises :class:`fgext.DropEvent` to drop it.
- ``"sink"``: runs after every processor, on the batch that survived them (``on_telemetry``), and
  sends it somewhere (OTLP, a file, a webhook).

A plugin that cares about some events only declares ``accepts``, a tuple of event classes (for
example ``(fgext.Report,)`` or ``(fgext.LogEvent,)``): a sink then receives only those (and is not
called for a batch holding none), and a processor sees only those, the others passing it unchanged.
An empty tuple, the default, means every event.

Both roles receive ``on_invoke`` for every ``POST /extension/invoke``, ``start`` once the agent is
registered, ``flush`` when the pipeline asks for pending data to leave now (the flush policy,
``FGEXT_FLUSH``, decides when, for every plugin alike: by default after each batch that ends an
invocation, since the sandbox may freeze next), and ``shutdown`` with a deadline at the end of the
agent's life. A hook a plugin does not override is never called.

Failure policy: a hook that raises is logged with the plugin's name; for a processor, ``on_error``
says whether the event is then passed on unchanged (``"pass"``, the default) or dropped (``"drop"``).
After ``max_failures`` consecutive failures of one hook the plugin is disabled with a warning (a
success of another hook does not reset that count). With ``FGEXT_STRICT=1`` the first failure stops
the agent instead, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    ClassVar,
    Dict,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

if TYPE_CHECKING:
    from fgext._events import AnyEvent, Invoke

__all__ = [
    "EventTypes",
    "HookResult",
    "Plugin",
    "PluginContext",
    "ProcessResult",
    "Processor",
    "RegistrationInfo",
    "Sink",
]

#: what a lifecycle, invoke or telemetry hook returns: nothing, or an awaitable of nothing (``async def``)
HookResult = Union[None, Awaitable[None]]
#: what ``process`` returns: the event to pass on (or an awaitable of it); raise ``DropEvent`` to drop
ProcessResult = Union["AnyEvent", Awaitable["AnyEvent"]]
#: the ``accepts`` declaration: event classes a plugin wants; empty for all
EventTypes = Tuple[type, ...]


@dataclass(frozen=True)
class RegistrationInfo:
    """What the platform answered to ``/extension/register``, and where the agent listens."""

    extension_name: str
    address: str  # "127.0.0.1:8081"
    function_name: str = ""
    function_version: str = ""
    telemetry_types: Sequence[str] = ()
    subscribed: bool = False


@dataclass(frozen=True)
class PluginContext:
    """Handed to :meth:`Plugin.start`: who the agent is, and this plugin's own configuration.

    ``config`` holds the plugin's settings, merged from the config file's ``plugins.<name>`` object
    and the ``FGEXT_<NAME>_<KEY>`` environment variables (environment wins); ``logger`` is a
    structlog logger bound to the plugin's name; ``stats`` are the agent's own counters, read live: a
    :class:`fgext._selfstats.AgentStats` in the agent (a mapping of counters, plus their breakdowns
    and :meth:`~fgext._selfstats.AgentStats.publish` for a summary in the agent's ``stopped`` line).
    """

    name: str
    registration: RegistrationInfo
    config: Mapping[str, Any] = field(default_factory=dict)
    logger: Any = None
    stats: Mapping[str, int] = field(default_factory=dict)
    environ: Mapping[str, str] = field(default_factory=dict)


class Plugin:
    """Base class of every fgext plugin: built-in ones (OTLP, redact, jsonl...) and users' alike."""

    #: the name used by ``FGEXT_PLUGINS``, in logs and in configuration keys
    name: ClassVar[str] = ""
    #: ``"processor"`` (runs on each event, in ``order``) or ``"sink"`` (receives processed batches)
    role: ClassVar[str] = "sink"
    #: processors run in ascending order; ties keep the order plugins were enabled in
    order: ClassVar[int] = 100
    #: what happens to an event when ``process`` raises: ``"pass"`` it on unchanged, or ``"drop"`` it
    on_error: ClassVar[str] = "pass"
    #: consecutive failures of one hook after which the plugin is disabled
    max_failures: ClassVar[int] = 10
    #: configuration keys the plugin accepts, with their types; anything else is a configuration error
    config_schema: ClassVar[Dict[str, type]] = {}
    #: event classes this plugin receives (``isinstance``); empty means every event
    accepts: ClassVar[EventTypes] = ()
    #: a sink whose coroutine ``on_invoke`` and ``on_telemetry`` only consume what they are given: they may
    #: be started in the task that delivers the batch when the sink's lane is idle, saving a task switch;
    #: such a hook must not enter a timeout scope or set a context variable before its first ``await``
    inline: ClassVar[bool] = False

    def wants(self, event: AnyEvent) -> bool:
        """Whether ``accepts`` lets ``event`` reach this plugin."""
        return not self.accepts or isinstance(event, self.accepts)

    def start(self, context: PluginContext) -> HookResult:
        """Called once after registration, before any event; raise to refuse to start."""
        return None

    def on_invoke(self, invoke: Invoke) -> HookResult:
        """Called for every ``POST /extension/invoke``; must not wait on the function."""
        return None

    def process(self, event: AnyEvent) -> ProcessResult:
        """Processors only: return the event (possibly replaced) or raise ``DropEvent``."""
        return event

    def on_telemetry(self, events: Sequence[AnyEvent]) -> HookResult:
        """Sinks only: a batch of events that survived every processor, in arrival order."""
        return None

    def flush(self, timeout: Optional[float] = None) -> HookResult:
        """Send whatever is pending now, within ``timeout`` seconds when given."""
        return None

    def shutdown(self, timeout: float) -> HookResult:
        """The agent is stopping: flush and release everything within ``timeout`` seconds."""
        return None


class Processor(Plugin):
    """Convenience base of a processor: override :meth:`process` (and ``order``, ``accepts``)."""

    role: ClassVar[str] = "processor"


class Sink(Plugin):
    """Convenience base of a sink: override :meth:`on_telemetry` (and ``accepts``)."""

    role: ClassVar[str] = "sink"
