"""Benchmark: cold start of a packaged zip, with and without its shipped byte code.

Usage (from the repository root)::

    python bench/zip_coldstart.py --python /root/.pyenv/versions/3.9.18/bin/python3.9 \
        --runs 15 WITH.zip SOURCE_ONLY.zip

For each zip: unpack it with ``unzip`` into a fresh folder, make the tree read-only (as the sandbox's code
directory is), then measure
  * import: wall time of ``python -S -E -B -c "import aiohttp.web, opentelemetry.sdk.trace"`` against
    fgext-lib alone (no site-packages);
  * exec -> registered: from starting the zip's launcher to the first ``POST /extension/register`` at a
    local stand-in platform (stdlib HTTP server on 127.0.0.1);
  * exec -> listening: until the address the agent registered accepts a TCP connection (its invoke
    listener's socket is bound);
  * exec -> first invoke answered: a ``POST /extension/invoke`` sent right then, answered 200 (the
    agent's HTTP stack is imported and serving); then SIGTERM.
Prints median and quartiles in milliseconds. Holds the machine-wide port lock the tests use, because the
agent binds 127.0.0.1:8081-8090. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional, Tuple


class _Platform(BaseHTTPRequestHandler):
    registered: Optional[float] = None
    address = ""
    event = threading.Event()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path == "/extension/register" and not _Platform.event.is_set():
            _Platform.registered = time.monotonic()
            _Platform.address = self.headers.get("FunctionGraph-Extension-Address", "")
            _Platform.event.set()
        body = json.dumps({"functionName": "bench", "functionVersion": "latest",
                           "errorInfo": {"errorType": "", "errorMessage": ""}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _quartiles(values: List[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"median {statistics.median(values):7.1f} ms  (q1 {q[0]:.1f}, q3 {q[2]:.1f}, n={len(values)})"


def _import_times(python: str, lib: Path, runs: int) -> List[float]:
    times = []
    code = "import sys; sys.path.insert(0, sys.argv[1]); import aiohttp.web, opentelemetry.sdk.trace"
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([python, "-S", "-E", "-B", "-c", code, str(lib)], check=True, timeout=60)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _wait_listening(address: str, deadline: float) -> float:
    host, _, port = address.rpartition(":")
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return time.monotonic()
        except OSError:
            time.sleep(0.002)
    raise SystemExit(f"the agent never listened on {address}")


def _invoke(address: str, deadline: float) -> float:
    body = json.dumps({"traceId": "3da1f2dc-3222-475e-9205-e2e6c6318895",
                       "invokedFunctionUrn": "sn:cn:yrk:1111:function:0@test@hello:latest"}).encode()
    request = urllib.request.Request(f"http://{address}/extension/invoke", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=max(deadline - time.monotonic(), 1)) as response:
        if response.status != 200:
            raise SystemExit(f"invoke answered {response.status}")
    return time.monotonic()


def _register_times(python: str, extension: Path, runs: int, workdir: Path,
                    plugins: str) -> Tuple[List[float], ...]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Platform)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    wrapper = workdir / "python-nosite"
    wrapper.write_text(f'#!/bin/sh\nexec {python} -S "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FGEXT_", "PYTHON", "OTEL_"))}
    env.update({"EXTENSION_API_ADDR": f"127.0.0.1:{server.server_address[1]}", "FGEXT_PYTHON": str(wrapper),
                "FGEXT_PLUGINS": plugins, "FGEXT_JSONL_PATH": str(workdir / "events.jsonl"),
                # an OTLP plugin exports to a port nobody listens on: the cost measured is start-up
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    times: List[float] = []
    listening: List[float] = []
    invoked: List[float] = []
    try:
        for _ in range(runs):
            _Platform.event.clear()
            start = time.monotonic()
            proc = subprocess.Popen([str(extension / "extensionFgext.sh")], env=env, cwd=str(workdir),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                if not _Platform.event.wait(30):
                    raise SystemExit("the agent never registered")
                assert _Platform.registered is not None
                times.append((_Platform.registered - start) * 1000)
                listening.append((_wait_listening(_Platform.address, start + 30) - start) * 1000)
                invoked.append((_invoke(_Platform.address, start + 30) - start) * 1000)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    finally:
        server.shutdown()
        server.server_close()
    return times, listening, invoked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="interpreter of the zip's runtime")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--plugins", default="jsonl", help="FGEXT_PLUGINS for the agent (default jsonl)")
    parser.add_argument("zips", nargs="+", type=Path)
    args = parser.parse_args()
    lock_path = Path(os.environ.get("FGEXT_TEST_LOCK", "/tmp/fgext-test-ports.lock"))
    with lock_path.open("a+") as lock, tempfile.TemporaryDirectory(prefix="fgext-bench-") as scratch:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for index, archive in enumerate(args.zips):
            root = Path(scratch) / str(index)
            (root / "code").mkdir(parents=True)
            subprocess.run(["unzip", "-q", str(archive), "-d", str(root / "code")], check=True)
            subprocess.run(["chmod", "-R", "a-w", str(root / "code")], check=True)
            extension = root / "code" / "extension"
            pycs = sum(1 for _ in (extension / "fgext-lib").rglob("*.pyc"))
            print(f"{archive} ({pycs} .pyc)")
            _import_times(args.python, extension / "fgext-lib", 2)  # warm the page cache
            print("  import aiohttp.web + opentelemetry.sdk.trace:", _quartiles(
                _import_times(args.python, extension / "fgext-lib", args.runs)))
            registered, listening, invoked = _register_times(args.python, extension, args.runs, root,
                                                             args.plugins)
            print("  exec -> registered:                          ", _quartiles(registered))
            print("  exec -> invoke listener accepts connections: ", _quartiles(listening))
            print("  exec -> first invoke answered 200:           ", _quartiles(invoked))
            subprocess.run(["chmod", "-R", "u+w", str(root / "code")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
