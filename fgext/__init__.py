"""fgext: the extension and telemetry agent runtime for Huawei Cloud FunctionGraph.

Importing ``fgext`` stays cheap: the launcher imports this package on the agent's cold-start path,
before it has registered with the platform, so nothing heavy is imported here. Public names that live
in heavier modules are loaded on first access.
"""

from __future__ import annotations

import importlib

# Not ``typing.TYPE_CHECKING``: importing typing costs milliseconds of every cold start (the launcher
# imports this package before registering), and mypy honours a constant of this name as well.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

__version__ = "0.1.0"

# private module -> the public names it defines
_MODULES: Dict[str, tuple[str, ...]] = {
    "fgext._events": (
        "AnyEvent", "Event", "PlatformEvent", "StartEvent", "RuntimeDoneEvent", "ReportEvent", "ReportMetrics",
        "InitStart", "Start", "RestoreStart", "InitRuntimeDone", "RuntimeDone", "RestoreRuntimeDone",
        "InitReport", "Report", "RestoreReport", "LogEvent", "FunctionLog", "ExtensionLog", "UnknownEvent",
        "Invoke", "OtlpPayload",
    ),
    "fgext._parse": ("parse_event", "parse_batch"),
    "fgext._urn": ("FunctionUrn", "parse_urn"),
    "fgext._errors": (
        "FgextError", "ConfigError", "UrnError", "PlatformError", "RegistrationError", "PluginError",
        "PackageError", "DropEvent", "MalformedEvent",
    ),
    "fgext._plugin": ("Plugin", "PluginContext", "Processor", "Sink", "EventTypes", "RegistrationInfo"),
    "fgext._extension": ("Extension",),
}
_EXPORTS: Dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fgext' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from fgext._errors import ConfigError as ConfigError
    from fgext._errors import DropEvent as DropEvent
    from fgext._errors import FgextError as FgextError
    from fgext._errors import MalformedEvent as MalformedEvent
    from fgext._errors import PackageError as PackageError
    from fgext._errors import PlatformError as PlatformError
    from fgext._errors import PluginError as PluginError
    from fgext._errors import RegistrationError as RegistrationError
    from fgext._errors import UrnError as UrnError
    from fgext._events import AnyEvent as AnyEvent
    from fgext._events import Event as Event
    from fgext._events import ExtensionLog as ExtensionLog
    from fgext._events import FunctionLog as FunctionLog
    from fgext._events import InitReport as InitReport
    from fgext._events import InitRuntimeDone as InitRuntimeDone
    from fgext._events import InitStart as InitStart
    from fgext._events import Invoke as Invoke
    from fgext._events import LogEvent as LogEvent
    from fgext._events import PlatformEvent as PlatformEvent
    from fgext._events import Report as Report
    from fgext._events import ReportEvent as ReportEvent
    from fgext._events import ReportMetrics as ReportMetrics
    from fgext._events import RestoreReport as RestoreReport
    from fgext._events import RestoreRuntimeDone as RestoreRuntimeDone
    from fgext._events import RestoreStart as RestoreStart
    from fgext._events import RuntimeDone as RuntimeDone
    from fgext._events import RuntimeDoneEvent as RuntimeDoneEvent
    from fgext._events import Start as Start
    from fgext._events import StartEvent as StartEvent
    from fgext._events import UnknownEvent as UnknownEvent
    from fgext._extension import Extension as Extension
    from fgext._parse import parse_batch as parse_batch
    from fgext._parse import parse_event as parse_event
    from fgext._plugin import EventTypes as EventTypes
    from fgext._plugin import Plugin as Plugin
    from fgext._plugin import PluginContext as PluginContext
    from fgext._plugin import Processor as Processor
    from fgext._plugin import RegistrationInfo as RegistrationInfo
    from fgext._plugin import Sink as Sink
    from fgext._urn import FunctionUrn as FunctionUrn
    from fgext._urn import parse_urn as parse_urn
