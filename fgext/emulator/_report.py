"""What a run produced, as plain data: per invocation, per extension, and for telemetry as a whole.

The CLI renders these as a table or JSON; tests and benchmarks read the same objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fgext.emulator._telemetry import TelemetryStats

__all__ = ["EmulatorReport", "ExtensionAnswer", "ExtensionStatus", "InvocationResult", "PhaseResult"]


@dataclass(frozen=True)
class ExtensionAnswer:
    """One extension's answer to ``POST /extension/invoke``: an HTTP status, or why there was none."""

    extension: str
    status: Optional[int]
    latency_ms: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    def summary(self) -> str:
        return str(self.status) if self.status is not None else (self.error or "no answer")


@dataclass(frozen=True)
class PhaseResult:
    """The init (or restore) phase a cold invocation carried."""

    phase: str  # "init" or "restore"
    status: str
    duration_ms: float
    error: Optional[Dict[str, str]] = None


@dataclass
class InvocationResult:
    """One invocation: how the handler ended, what it cost, and what the extensions saw of it."""

    index: int
    request_id: str
    status: str  # "success", "failure" or "timeout"
    duration_ms: float
    billed_ms: float
    memory_used_mb: float
    cold: bool
    started_at: float
    init: Optional[PhaseResult] = None
    result: Any = None
    error: Optional[Dict[str, str]] = None
    answers: List[ExtensionAnswer] = field(default_factory=list)
    telemetry: TelemetryStats = field(default_factory=TelemetryStats)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def as_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["answers"] = {a.extension: {"status": a.status, "latency_ms": round(a.latency_ms, 3),
                                         "error": a.error} for a in self.answers}
        return data


@dataclass(frozen=True)
class ExtensionStatus:
    """One extension script at the end of the run."""

    name: str
    pid: int
    address: Optional[str]
    subscribed: Tuple[str, ...]
    exit_code: Optional[int]
    crashed: bool
    run_via_sh: bool
    last_lines: Tuple[str, ...]
    #: an fgext agent's counters at exit (its ``stopped`` log line), else None
    self_report: Optional[Dict[str, Any]] = None


@dataclass
class EmulatorReport:
    """The whole run; ``problems`` empty means exit code 0."""

    function_name: str
    function_version: str
    urn: str
    api_address: str
    spec_typos: bool
    invocations: List[InvocationResult]
    extensions: List[ExtensionStatus]
    telemetry: TelemetryStats
    events_filtered: int = 0
    events_undelivered: int = 0  # queued while nobody ever subscribed
    freezes: int = 0
    rejections: List[Dict[str, str]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> Dict[str, Any]:
        return {
            "ok": self.ok,
            "function": {"name": self.function_name, "version": self.function_version, "urn": self.urn},
            "api_address": self.api_address,
            "spec_typos": self.spec_typos,
            "invocations": [result.as_dict() for result in self.invocations],
            "extensions": [dataclasses.asdict(ext) for ext in self.extensions],
            "telemetry": {**self.telemetry.as_dict(), "events_filtered": self.events_filtered,
                          "events_undelivered": self.events_undelivered},
            "freezes": self.freezes,
            "rejections": self.rejections,
            "problems": self.problems,
        }
