"""A recording stand-in for the platform's Extension API, for the agent's own tests.

It runs a real aiohttp server on 127.0.0.1 in a background thread, records every request, and
answers as told (``register_statuses`` are used in turn, the last one repeating).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from aiohttp import web


@dataclass
class Recorded:
    path: str
    headers: Dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RecordingPlatform:
    """Extension API on a real socket; ``start()`` and ``stop()`` are explicit."""

    port: int = 0
    register_statuses: List[int] = field(default_factory=lambda: [200])
    subscribe_status: int = 200
    error_body: Dict[str, Any] = field(default_factory=lambda: {
        "errorInfo": {"errorType": "InvalidExtension", "errorMessage": "name header does not match a script"}})
    requests: List[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._register_calls = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _record(self, request: web.Request) -> Recorded:
        item = Recorded(request.path, dict(request.headers), await request.read(), time.monotonic())
        with self._lock:
            self.requests.append(item)
        return item

    async def _register(self, request: web.Request) -> web.Response:
        await self._record(request)
        with self._lock:
            index = min(self._register_calls, len(self.register_statuses) - 1)
            self._register_calls += 1
        status = self.register_statuses[index]
        if status == 200:
            return web.json_response({"functionName": "helloWorld", "functionVersion": "$LATEST",
                                      "errorInfo": {"errorType": "", "errorMessage": ""}})
        return web.json_response(self.error_body, status=status)

    async def _subscribe(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.subscribe_status == 200:
            return web.json_response({})
        return web.json_response({"error_code": "FSS.0400", "error_msg": "types must not be empty"},
                                 status=self.subscribe_status)

    def start(self) -> RecordingPlatform:
        if self.port == 0:
            self.port = free_port()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/extension/register", self._register)
            app.router.add_post("/telemetry", self._subscribe)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="test-platform", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test platform did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def wait_for(self, predicate: Callable[[List[Recorded]], bool], timeout: float = 15.0) -> List[Recorded]:
        """Poll the recorded requests until ``predicate`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.requests)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.02)
        raise AssertionError(f"platform never saw the expected requests; got {[r.path for r in self.requests]}")

    def paths(self) -> List[str]:
        with self._lock:
            return [r.path for r in self.requests]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
