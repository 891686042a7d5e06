"""An aiohttp app served from a thread on 127.0.0.1: the scaffolding of the tests' scripted collectors.

A subclass implements ``handle`` (one route, ``POST /{anything}``); ``start`` returns once the port listens,
``stop`` cancels requests still held (a collector told to hang) and closes the loop.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import threading
from typing import Any, Optional

from tests.test_otlp_plugin import free_port


class ThreadedServer:
    #: largest request body the app reads
    client_max_size = 64 * 1024 * 1024

    def __init__(self, ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.port = free_port()
        self.ssl_context = ssl_context
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def handle(self, request: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    async def body(request: Any) -> bytes:
        """The request body, gzip undone."""
        data: bytes = await request.read()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data

    def _serve(self) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # the clean-up's gather() looks for this thread's loop
        self._loop = loop
        app = web.Application(client_max_size=self.client_max_size)
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start())
        self._ready.set()
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()  # a request still held ("hang" or "slow")
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def start(self) -> Any:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
