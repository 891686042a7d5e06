"""``fgext emulate``: a local FunctionGraph platform that runs extensions and a real Python function.

The Python API, separate from the command line's rendering::

    from fgext.emulator import Emulator, EmulatorConfig

    async with Emulator(EmulatorConfig(target="dist/my-extension.zip")) as emulator:
        result = await emulator.invoke({"hello": "world"})
    report = emulator.report

:mod:`fgext.testing` wraps this for tests in a few lines.
"""

from __future__ import annotations

from fgext.emulator._config import SAMPLE_FUNCTION, EmulatorConfig, FunctionSpec, parse_function_spec
from fgext.emulator._emulator import Emulator
from fgext.emulator._extensions import ExtensionError
from fgext.emulator._platform import Registration, Rejection, Subscription
from fgext.emulator._report import (
    EmulatorReport,
    ExtensionAnswer,
    ExtensionStatus,
    InvocationResult,
    PhaseResult,
)
from fgext.emulator._telemetry import EventFactory, TelemetryStats

__all__ = [
    "SAMPLE_FUNCTION",
    "Emulator",
    "EmulatorConfig",
    "EmulatorReport",
    "EventFactory",
    "ExtensionAnswer",
    "ExtensionError",
    "ExtensionStatus",
    "FunctionSpec",
    "InvocationResult",
    "PhaseResult",
    "Registration",
    "Rejection",
    "Subscription",
    "TelemetryStats",
    "parse_function_spec",
]
