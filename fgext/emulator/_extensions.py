"""The extension processes: started as the platform starts them, watched, frozen, and stopped.

Each ``extension/extension*.sh`` runs with the sandbox's working directory and environment. Its output
is captured line by line: the last lines are kept for error messages, lines that carry
``[Extension]`` are handed on as extension log events, and structured log lines (JSON, as the fgext
agent writes on stderr) that report lost telemetry are kept as the extension's problems: every error
(a plugin that failed, a bad exporter setting, a strict-mode failure) and the agent's warnings listed
in ``LOSING_WARNINGS`` (a plugin disabled, an export that failed, data dropped). In the cloud nobody
watches the extension's own log; here they fail the run. A plugin's own warnings (an alert) are not
problems.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple

from fgext._errors import FgextError
from fgext.emulator._platform import PlatformApi
from fgext.emulator._process import pump_lines, signal_group, stop_group

__all__ = [
    "LOSING_WARNINGS",
    "ExtensionError",
    "ExtensionProcess",
    "ExtensionSupervisor",
    "agent_stopped",
    "describe_exit",
    "ended",
    "logged_problem",
]

EXTENSION_MARKER = "[Extension]"
_ERROR_LEVELS = ("error", "critical", "fatal")
#: The agent's warnings that mean telemetry was or may be lost (tests/test_emulator.py keeps this list
#: in step with the agent's code: a new warning must be sorted in here or among the harmless ones).
LOSING_WARNINGS = frozenset({
    "plugin disabled",
    "malformed telemetry events skipped",
    "telemetry received before plugins started was not processed",
    "sink lane full: batches for this sink are dropped",
    "sink did not take its queued telemetry before the shutdown deadline",
    "plugin flush still running at shutdown: cancelled",
    "no time left for the plugin's shutdown",
    "cannot write the agent file: the function will not find the receiver",
    "pipeline shutdown: queued telemetry not fully dispatched in time",
    "otlp export failed; spooling and retrying with backoff",
    "otlp collector rejected part of a request",
    "otlp collector rejected a request for good; dropped",
    "otlp spool full: dropped the oldest telemetry",
    "otlp spool file unreadable; dropping it",
    "otlp spooled data for a switched-off signal dropped",
    "webhook queue full; alert dropped",
    "webhook alert not delivered",
    "webhook alerts still pending after flush",
    "telemetry body rejected",
    "otlp data spooled at the shutdown deadline, left for the next agent",
})
#: An info line that takes back an earlier warning: the collector answered again, what was spooled is sent.
_RECOVERIES = {"otlp collector reachable again": "otlp export failed; spooling and retrying with backoff"}
_MAX_PROBLEM_KINDS = 50  # distinct problem lines kept per extension; repeats are counted, not kept


def describe_exit(code: Optional[int]) -> str:
    """``exit 3``, or the signal's name (``SIGTERM``) for a process a signal ended (asyncio reports -15)."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"


def ended(code: Optional[int]) -> str:
    """How a process ended, to follow its name: ``exited with code 3``, ``was killed by SIGKILL``."""
    if code is not None and code < 0:
        return f"was killed by {describe_exit(code)}"
    return f"exited with code {code}"


def _record(line: str) -> Optional[Dict[str, Any]]:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record: Any = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def recovered(line: str) -> Optional[str]:
    """The warning event a structured line takes back (the collector is reachable again), if any."""
    record = _record(line)
    return _RECOVERIES.get(str(record.get("event"))) if record is not None else None


def agent_stopped(line: str) -> Optional[Dict[str, Any]]:
    """The fgext agent's final ``stopped`` line (its counters: what it received, sent, spooled, dropped)."""
    record = _record(line)
    return record if record is not None and record.get("event") == "stopped" else None


def logged_problem(line: str) -> Optional[str]:
    """A structured log line reporting lost telemetry, as one readable line; None for anything else."""
    record = _record(line)
    if record is None:
        return None
    level = str(record.get("level", "")).lower()
    if level not in _ERROR_LEVELS and not (level == "warning" and record.get("event") in LOSING_WARNINGS):
        return None
    skip = {"level", "event", "timestamp", "logger"}
    fields = " ".join(f"{key}={value}" for key, value in record.items() if key not in skip)
    return f"{record.get('level')}: {record.get('event', '?')}" + (f" ({fields})" if fields else "")


class ExtensionError(FgextError):
    """An extension did not register in time, exited early, or crashed while the function ran."""


@dataclass
class ExtensionProcess:
    """One started extension script and what it printed."""

    script: Path
    process: asyncio.subprocess.Process
    output: Deque[str]
    started: float
    run_via_sh: bool = False
    exit_code: Optional[int] = None
    exited_at: Optional[float] = None
    crashed: bool = False
    tasks: List[asyncio.Task[None]] = field(default_factory=list)
    # Problems it logged, in first-seen order, with how often each was logged.
    problems: Dict[str, int] = field(default_factory=dict)
    # The fgext agent's own report at exit (its ``stopped`` line), when it is one.
    self_report: Optional[Dict[str, Any]] = None

    @property
    def name(self) -> str:
        return self.script.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def last_lines(self, count: int = 10) -> List[str]:
        return list(self.output)[-count:]

    def problem_lines(self) -> List[Tuple[str, int]]:
        return list(self.problems.items())

    def describe_output(self, count: int = 10) -> str:
        lines = self.last_lines(count)
        if not lines:
            return "  (it printed nothing)"
        return "\n".join(f"  | {line}" for line in lines)


class ExtensionSupervisor:
    """Starts every script, waits for their registrations, freezes and thaws them, stops them."""

    def __init__(self, scripts: List[Path], cwd: Path, env: Mapping[str, str], keep_lines: int,
                 on_log: Callable[[str, str], None],
                 on_output: Optional[Callable[[str, str], None]] = None) -> None:
        self.scripts = scripts
        self.cwd = cwd
        self.env = dict(env)
        self.keep_lines = keep_lines
        self.on_log = on_log
        self.on_output = on_output
        self.processes: Dict[str, ExtensionProcess] = {}
        self.frozen = False
        self._stopping = False

    async def start(self) -> None:
        for script in self.scripts:
            # The platform identifies an extension by its script's full file name; a script without
            # the executable bit (zipped on Windows, say) still runs, through sh.
            via_sh = not os.access(script, os.X_OK)
            argv = ["/bin/sh", str(script)] if via_sh else [str(script)]
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, cwd=str(self.cwd), env=self.env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
                )
            except OSError as error:
                raise ExtensionError(f"{script.name} could not be started: {error}") from None
            ext = ExtensionProcess(script=script, process=process, output=deque(maxlen=self.keep_lines),
                                   started=time.time(), run_via_sh=via_sh)
            self.processes[ext.name] = ext
            ext.tasks = [
                asyncio.ensure_future(pump_lines(process.stdout, self._line_handler(ext))),
                asyncio.ensure_future(pump_lines(process.stderr, self._line_handler(ext))),
                asyncio.ensure_future(self._watch(ext)),
            ]

    def _line_handler(self, ext: ExtensionProcess) -> Callable[[str], None]:
        def handle(line: str) -> None:
            ext.output.append(line)
            if self.on_output is not None:
                self.on_output(ext.name, line)
            problem = logged_problem(line)
            if problem is not None and (problem in ext.problems or len(ext.problems) < _MAX_PROBLEM_KINDS):
                ext.problems[problem] = ext.problems.get(problem, 0) + 1
            stopped = agent_stopped(line)
            if stopped is not None:
                ext.self_report = stopped
            taken_back = recovered(line)
            if taken_back is not None:
                for key in [key for key in ext.problems if key.startswith(f"warning: {taken_back} (")]:
                    del ext.problems[key]
            if EXTENSION_MARKER in line:
                self.on_log(ext.name, line)
        return handle

    async def _watch(self, ext: ExtensionProcess) -> None:
        ext.exit_code = await ext.process.wait()
        ext.exited_at = time.time()
        if not self._stopping:
            ext.crashed = True

    async def wait_registered(self, platform: PlatformApi, timeout: float) -> None:
        """Return once every started script registered; raise :class:`ExtensionError` naming the others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            missing = [ext for ext in self.processes.values() if ext.name not in platform.registrations]
            if not missing:
                return
            for ext in missing:
                if ext.exit_code is not None:
                    await self._drain(ext)
                    raise ExtensionError(
                        f"{ext.name} {ended(ext.exit_code)} before it registered; "
                        f"its last output:\n{ext.describe_output()}{self._refusals(platform, ext.name)}"
                    )
            remaining = deadline - loop.time()
            if remaining <= 0:
                details = "\n".join(
                    f"{ext.name} did not register within {timeout:g} s; its last output:\n"
                    f"{ext.describe_output()}{self._refusals(platform, ext.name)}"
                    for ext in missing
                )
                raise ExtensionError(details)
            platform.changed.clear()
            # Wake on a registration, or every 50 ms to notice a script that exited.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(platform.changed.wait(), min(remaining, 0.05))

    @staticmethod
    def _refusals(platform: PlatformApi, name: str) -> str:
        refused = [r for r in platform.rejections if r.extension == name]
        if not refused:
            return ""
        return "\n  the platform refused it: " + "; ".join(f"{r.error_type}: {r.message}" for r in refused)

    async def _drain(self, ext: ExtensionProcess) -> None:
        """Let the output readers finish, so an exited script's last lines are all there."""
        await asyncio.wait([task for task in ext.tasks[:2]], timeout=1.0)

    def crashed(self) -> List[ExtensionProcess]:
        return [ext for ext in self.processes.values() if ext.crashed]

    def freeze(self) -> None:
        """Stop every extension's process group, as the sandbox freezes between invocations."""
        for ext in self.processes.values():
            if ext.exit_code is None:
                signal_group(ext.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        for ext in self.processes.values():
            if ext.exit_code is None:
                signal_group(ext.pid, signal.SIGCONT)
        self.frozen = False

    def _mark_exited(self) -> None:
        """Mark extensions that already exited on their own but are not reaped yet as crashed.

        asyncio may notice a child's exit a moment late; without this look, a crash just before the end
        of a run would pass for the SIGTERM the emulator is about to send. ``WNOWAIT`` leaves the child
        for asyncio to reap.
        """
        if not hasattr(os, "waitid"):  # macOS has no waitid; there the race stays possible
            return
        for ext in self.processes.values():
            if ext.exit_code is not None:
                continue
            try:
                info = os.waitid(os.P_PID, ext.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except (ChildProcessError, OSError):
                continue
            if info is not None:
                ext.crashed = True

    async def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM every extension (its documented end of life), SIGKILL what outlives ``timeout``."""
        self._mark_exited()
        self._stopping = True
        self.frozen = False
        await asyncio.gather(*(stop_group(ext.process, timeout) for ext in self.processes.values()))
        for ext in self.processes.values():
            await asyncio.wait(ext.tasks, timeout=1.0)
            for task in ext.tasks:
                task.cancel()
