"""Shared fixtures: the platform port range lock, and the interpreter the agent runs on."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional

import pytest

from tests.ports import EXTENSION_PORTS, port_free
from tests.ports import port_range_lock as range_lock

if TYPE_CHECKING:
    from tests.agentproc import AgentProcess
    from tests.platform import RecordingPlatform
    from tests.test_otlp_plugin import OtelTap

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "extension" / "extensionFgext.sh"


def free_extension_ports(count: int = 1) -> List[int]:
    """``count`` ports of 8081-8090 nobody listens on, lowest first; skip the test when there are fewer.

    Call it while holding ``port_range_lock``: other fgext test runs then stay off the range, and a port
    held by other software (a developer's ``fgext emulate``, another extension) is simply not chosen.
    """
    free = [port for port in EXTENSION_PORTS if port_free(port)]
    if len(free) < count:
        pytest.skip(f"needs {count} free port(s) of 8081-8090, only {free or 'none'} free: "
                    "other software listens on the rest")
    return free[:count]


def require_free_ports(ports: Iterable[int]) -> None:
    """Skip the test, naming them, when any of these exact ports is taken by someone else."""
    taken = [port for port in ports if not port_free(port)]
    if taken:
        pytest.skip(f"needs 127.0.0.1:{','.join(map(str, taken))} free, but other software listens there")


def agent_python() -> str:
    """The interpreter agent subprocesses run on: ``FGEXT_TEST_PYTHON`` (CI points it at 3.9), else ours."""
    chosen = os.environ.get("FGEXT_TEST_PYTHON")
    # Agents run in their own temporary directories: a relative path would not resolve there.
    return os.path.abspath(chosen) if chosen else sys.executable


@pytest.fixture
def port_range_lock() -> Iterator[None]:
    """Hold the machine-wide lock on 127.0.0.1:8081-8090.

    The platform fixes extension ports to that range, so two test runs on one machine (or two test
    processes) would take each other's ports; every test that binds in the range holds this lock.
    """
    with range_lock():
        yield


@pytest.fixture
def platform() -> Iterator[RecordingPlatform]:
    """A recording Extension API on a free loopback port, stopped after the test."""
    from tests.platform import RecordingPlatform

    plat = RecordingPlatform().start()
    try:
        yield plat
    finally:
        plat.stop()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory of agent subprocesses; every one started is stopped by PID after the test."""
    from tests.agentproc import AgentProcess

    started: List[AgentProcess] = []

    def start(env: Dict[str, str], launcher: Optional[Path] = None) -> AgentProcess:
        workdir = tmp_path / f"agent{len(started)}"
        workdir.mkdir()
        agent = AgentProcess(workdir, env, launcher or LAUNCHER)
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.stop(signal.SIGKILL)


@pytest.fixture
def tap_factory() -> Iterator[Callable[[int], OtelTap]]:
    """Factory of oteltap receivers (a third-party OTLP/HTTP receiver) as subprocesses, stopped by PID after.

    oteltap needs Python 3.10+: a 3.9 test run points ``FGEXT_TEST_OTELTAP`` at one from a 3.10+ venv.
    """
    from tests.test_otlp_plugin import OtelTap, oteltap_executable

    executable = oteltap_executable()
    if executable is None:
        pytest.skip("oteltap not found (it needs Python >= 3.10): set FGEXT_TEST_OTELTAP to its executable")
    started: List[OtelTap] = []

    def make(port: int) -> OtelTap:
        tap = OtelTap(executable, port)
        started.append(tap)
        return tap

    try:
        yield make
    finally:
        for tap in started:
            tap.stop()


@pytest.fixture
def taps(tap_factory: Callable[[int], Any]) -> Callable[[int], Any]:
    """Like ``tap_factory``, each receiver already started (and stopped by it after the test)."""

    def make(port: int) -> Any:
        tap = tap_factory(port)
        tap.start()
        return tap

    return make


@pytest.fixture
def functions(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Function processes (tests/function_script.py) finding the agent by ``tmp_path/fgext-agent.json``;
    stopped by PID after the test."""
    from tests.test_function import Function

    started: List[Any] = []

    def make(**extra: str) -> Any:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "FGEXT_"))}
        env.update({"FGEXT_AGENT_FILE": str(tmp_path / "fgext-agent.json"), "PYTHONPATH": str(ROOT)}, **extra)
        function = Function(env)
        started.append(function)
        return function

    yield make
    for function in started:
        function.stop()
