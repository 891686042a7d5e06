"""fgext: the extension and telemetry agent runtime for Huawei Cloud FunctionGraph.

Importing ``fgext`` stays cheap: the launcher imports this package on the agent's cold-start path,
before it has registered with the platform, so nothing heavy is imported here. Public names that live
in heavier modules are loaded on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict

__version__ = "0.1.0"

# public name -> private module that defines it
_EXPORTS: Dict[str, str] = {
    # events
    "Event": "fgext._events", "PlatformEvent": "fgext._events", "StartEvent": "fgext._events",
    "RuntimeDoneEvent": "fgext._events", "ReportEvent": "fgext._events", "ReportMetrics": "fgext._events",
    "InitStart": "fgext._events", "Start": "fgext._events", "RestoreStart": "fgext._events",
    "InitRuntimeDone": "fgext._events", "RuntimeDone": "fgext._events",
    "RestoreRuntimeDone": "fgext._events", "InitReport": "fgext._events", "Report": "fgext._events",
    "RestoreReport": "fgext._events", "LogEvent": "fgext._events", "FunctionLog": "fgext._events",
    "ExtensionLog": "fgext._events", "UnknownEvent": "fgext._events", "Invoke": "fgext._events",
    "MalformedEvent": "fgext._events", "parse_event": "fgext._events", "parse_batch": "fgext._events",
    # URNs
    "FunctionUrn": "fgext._urn", "parse_urn": "fgext._urn",
    # errors
    "FgextError": "fgext._errors", "ConfigError": "fgext._errors", "UrnError": "fgext._errors",
    "PlatformError": "fgext._errors", "RegistrationError": "fgext._errors", "PluginError": "fgext._errors",
    "PackageError": "fgext._errors", "DropEvent": "fgext._errors",
    # plugins
    "Plugin": "fgext._plugin", "PluginContext": "fgext._plugin",
}

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
    from fgext._errors import (
        ConfigError,
        DropEvent,
        FgextError,
        PackageError,
        PlatformError,
        PluginError,
        RegistrationError,
        UrnError,
    )
    from fgext._events import (
        Event,
        ExtensionLog,
        FunctionLog,
        InitReport,
        InitRuntimeDone,
        InitStart,
        Invoke,
        LogEvent,
        MalformedEvent,
        PlatformEvent,
        Report,
        ReportEvent,
        ReportMetrics,
        RestoreReport,
        RestoreRuntimeDone,
        RestoreStart,
        RuntimeDone,
        RuntimeDoneEvent,
        Start,
        StartEvent,
        UnknownEvent,
        parse_batch,
        parse_event,
    )
    from fgext._plugin import Plugin, PluginContext
    from fgext._urn import FunctionUrn, parse_urn
