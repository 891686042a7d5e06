"""fgext's OTLP receiver (fgext.otlp._receiver) in a real aiohttp server on 127.0.0.1, for tests and the bench.

In-process: ``ReceiverServer().start()`` serves from a thread and records what ``on_export`` got.
As a process (``python -m tests.receiver_server``): prints its port on one line, serves until stdin
closes, and on exit prints how many spans it received.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from fgext.otlp._receiver import Receiver


class ReceiverServer:
    """A real aiohttp server with the receiver's routes on 127.0.0.1 (an OS-chosen port)."""

    def __init__(self, *, auto_decompress: bool = True, on_export: Optional[Callable[[str, Any], Any]] = None,
                 port: int = 0, **bounds: int) -> None:
        self.exports: List[Tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._user_on_export = on_export
        self.receiver = Receiver(self._on_export, **bounds)
        self.auto_decompress = auto_decompress
        self.port = port
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self.error: Optional[OSError] = None

    def _on_export(self, signal: str, request: Any) -> Any:
        with self._lock:
            self.exports.append((signal, request))
        return self._user_on_export(signal, request) if self._user_on_export else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ReceiverServer:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_routes(self.receiver.routes())
            runner = web.AppRunner(app, access_log=None, auto_decompress=self.auto_decompress)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            try:
                loop.run_until_complete(site.start())
            except OSError as exc:  # the port asked for is taken
                self.error = exc
                self._ready.set()
                loop.run_until_complete(runner.cleanup())
                loop.close()
                return
            self.port = runner.addresses[0][1]
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="test-otlp-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("receiver did not start")
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> ReceiverServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spans(self) -> List[Any]:
        """Every span received so far, in arrival order."""
        with self._lock:
            exports = list(self.exports)
        return [span for signal, request in exports if signal == "traces"
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]

    def resources(self) -> List[Dict[str, Any]]:
        with self._lock:
            exports = list(self.exports)
        return [{kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for signal, request in exports if signal == "traces" for rs in request.resource_spans]

    def wait_for_export(self, signal: str, timeout: float = 15.0) -> Any:
        """Poll until a request of ``signal`` arrived and return the first; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [request for name, request in self.exports if name == signal]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"receiver got no {signal} request")

    def wait_for_spans(self, count: int, timeout: float = 15.0) -> List[Any]:
        """Poll until at least ``count`` spans arrived; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if len(spans) >= count:
                return spans
            time.sleep(0.02)
        raise AssertionError(f"receiver got {len(self.spans())} span(s), expected {count}")


def post(url: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, Dict[str, str], bytes]:
    """POST with urllib; the status, headers and body whatever the status."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def main() -> int:
    server = ReceiverServer().start()
    print(server.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()
    print(len(server.spans()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
