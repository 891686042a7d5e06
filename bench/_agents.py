"""Processes the benchmarks drive: the agent (through its launcher), a bare aiohttp floor, an OTLP sink.

Everything listens on 127.0.0.1 only and every process is stopped by its PID (SIGTERM, then SIGKILL).
The agent runs on the interpreter under test (``FGEXT_PYTHON``); the sink and the load generator run on
the harness's own interpreter, so one 3.11 harness measures a 3.9 agent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from tests.ports import port_free, port_range_lock  # noqa: F401 (port_range_lock: for the bench sections)

if TYPE_CHECKING:
    from tests.platform import RecordingPlatform

ROOT = Path(__file__).resolve().parent.parent
# FGEXT_BENCH_LAUNCHER runs another checkout's agent under this harness: "same bench, before and after"
# compares two commits with one load generator, one floor and one way of counting.
# bench/run.py --packaged replaces it with the launcher of the built zip, unpacked (``use_launcher``).
LAUNCHER = Path(os.environ.get("FGEXT_BENCH_LAUNCHER") or ROOT / "extension" / "extensionFgext.sh").resolve()
_launcher = [LAUNCHER]


def launcher() -> Path:
    """The launcher every agent of this run starts from."""
    return _launcher[0]


def use_launcher(path: Path) -> None:
    _launcher[0] = path.resolve()


AGENT_PORT = 8090  # the platform fixes extension ports to 8081-8090; held under the tests' lock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_connect(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (``/proc/<pid>/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> Tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    values: Dict[str, int] = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


# A minimal OTLP/HTTP collector: answers 200 to every POST, printing "<path> <monotonic> <bytes>" per
# request once answered (CLOCK_MONOTONIC is machine-wide on Linux, so the harness compares times).
_SINK = r"""
import sys, time
from aiohttp import web
out = sys.stdout
async def ok(request):
    body = await request.read()
    response = web.Response(status=200, content_type="application/x-protobuf")
    await response.prepare(request)
    await response.write_eof()
    out.write(f"{request.path} {time.monotonic()} {len(body)}\n"); out.flush()
    return response
app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

# The floor of benchmarks 2 and 4: a bare aiohttp handler that only reads and parses the same JSON.
_FLOOR = r"""
import json, sys
from aiohttp import web
async def parse(request):
    json.loads(await request.read())
    return web.json_response({"status": "ok"})
app = web.Application(client_max_size=8 * 1024 * 1024)
app.router.add_post("/extension/invoke", parse)
app.router.add_post("/", parse)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


class Sink:
    """The OTLP sink subprocess; ``received`` lists (path, monotonic time answered, body bytes)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.port = free_port()
        self.received: List[Tuple[str, float, int]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([python, "-c", _SINK, str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_connect(self.port)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            path, at, size = line.split()
            with self._lock:
                self.received.append((path, float(at), int(size)))

    def snapshot(self) -> List[Tuple[str, float, int]]:
        with self._lock:
            return list(self.received)

    def wait_quiet(self, quiet: float = 0.5, timeout: float = 60.0) -> float:
        """Wait until nothing arrived for ``quiet`` seconds; return the time the last request was answered."""
        deadline = time.monotonic() + timeout
        last_count = -1
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            count = len(self.snapshot())
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                break
            time.sleep(0.05)
        items = self.snapshot()
        return items[-1][1] if items else time.monotonic()

    def stop(self) -> None:
        stop(self.proc)
        self._reader.join(5)


# Settings every agent of a run gets (``bench/run.py --agent-env``): to compare commits with a later
# feature switched off, say. A section's own settings (extra) still win.
AGENT_EXTRA_ENV: Dict[str, str] = {}


def agent_env(python: str, platform_addr: str, plugins: str, extra: Optional[Dict[str, str]] = None,
              ) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FGEXT_", "OTEL_", "PYTHONPATH", "EXTENSION_API_ADDR"))}
    env.update({"EXTENSION_API_ADDR": platform_addr, "FGEXT_PYTHON": python, "FGEXT_PLUGINS": plugins,
                "FGEXT_PORT": str(AGENT_PORT), "FGEXT_LOG_LEVEL": "warning",
                # an OTLP plugin with no collector configured exports to a closed port: start-up cost only
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "RUNTIME_TIMEOUT": "3"})
    env.update(AGENT_EXTRA_ENV)
    env.update(extra or {})
    return env


class PortTaken(RuntimeError):
    """The port the bench gives its agent is held by other software."""


class AgentUnderTest:
    """The agent started by its launcher (``exec`` keeps the PID), ready to take POSTs on ``port``
    (AGENT_PORT; with ``port=None`` the agent takes the first free one of 8081-8090 itself, and
    ``learn_port`` reads which from its registration)."""

    def __init__(self, python: str, platform_addr: str, plugins: str, extra: Optional[Dict[str, str]] = None,
                 launcher: Optional[Path] = None, port: Optional[int] = AGENT_PORT) -> None:
        if port is not None and not port_free(port):  # whoever answered there would be measured instead
            raise PortTaken(f"127.0.0.1:{port} is taken by other software: the bench's agent listens there")
        self.port = port or 0
        self.tmp = tempfile.TemporaryDirectory(prefix="fgext-bench-")
        env = agent_env(python, platform_addr, plugins,
                        {"FGEXT_SPOOL_DIR": str(Path(self.tmp.name) / "spool"),
                         "FGEXT_PORT": str(port) if port is not None else "", **(extra or {})})
        self.stderr_path = Path(self.tmp.name) / "agent.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen([str(launcher or _launcher[0])], env=env, cwd=self.tmp.name,
                                         stdout=subprocess.DEVNULL,
                                         stderr=err, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def learn_port(self, platform: RecordingPlatform, timeout: float = 30.0) -> int:
        """The port the agent registered with (its ``FunctionGraph-Extension-Address`` at ``platform``),
        which it bound before registering; it becomes ``self.port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in list(platform.requests):
                if request.path == "/extension/register":
                    headers = {key.lower(): value for key, value in request.headers.items()}
                    self.port = int(headers["functiongraph-extension-address"].rsplit(":", 1)[1])
                    return self.port
            if self.proc.poll() is not None:
                said = self.stderr_path.read_text(errors="replace").strip().splitlines()
                raise PortTaken(f"the bench's agent exited before registering: {said[-1] if said else '(silent)'}")
            time.sleep(0.01)
        raise RuntimeError(f"the bench's agent did not register within {timeout} s")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until aiohttp answers a telemetry POST (not the early responder, fgext._early, whose answer
        carries no ``accepted`` count): aiohttp and the plugins are loaded."""
        import urllib.request

        wait_connect(self.port, timeout)
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(f"http://127.0.0.1:{self.port}/", data=b"[]", method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                if b"accepted" in answer.read():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agent's listener did not take over within {timeout} s")
            time.sleep(0.01)
        # the pipeline starts right after the listener: a moment for plugin start (HTTP session etc.)
        time.sleep(0.2)

    def stop(self) -> None:
        stop(self.proc)
        self.tmp.cleanup()


class _Served:
    """A server process the bench started: its PID (for CPU and RSS readings) and how it is stopped."""

    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


class FloorServer(_Served):
    """The bare aiohttp JSON-parsing handler, on the interpreter under test."""

    def __init__(self, python: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([python, "-c", _FLOOR, str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_connect(self.port)


class PeerServer(_Served):
    """bench/peer_sdk_extension.py on the interpreter under test, exporting to ``sink``."""

    def __init__(self, python: str, platform_addr: str, sink: Sink) -> None:
        # registers and subscribes like any extension: the recording platform at platform_addr answers
        self.port = free_port()
        env = agent_env(python, platform_addr, "", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"})
        self.proc = subprocess.Popen([python, str(ROOT / "bench" / "peer_sdk_extension.py"), str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_connect(self.port)


def python_version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                          text=True, check=True).stdout.strip()


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
