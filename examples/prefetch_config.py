"""Configuration prefetch, decorator style: the function reads its settings from a local file.

At start (during the function's init phase, before most first invocations) the extension fetches a
JSON document from ``url`` and writes it atomically to ``path``; the function reads that file
instead of calling the configuration service itself. On each invoke, when the copy is older than
``ttl`` seconds, the extension fetches it again. The platform does not document whether it waits
for the extension's answer to the invoke before running the function, and fgext answers at once,
so a refresh is for the next invocation: the function always reads a complete file, at most one
``ttl`` (plus one invocation) old. A failed fetch keeps the last good copy and is logged.

Settings: ``url`` (required), ``path`` (default ``/tmp/fgext-config.json``), ``ttl`` (seconds,
default 30), ``timeout`` (seconds per fetch, default 2).

In the function::

    import json
    with open("/tmp/fgext-config.json") as f:
        settings = json.load(f)
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from typing import Any, Dict

import aiohttp

import fgext

ext = fgext.Extension(name="prefetch", config={"url": str, "path": str, "ttl": float, "timeout": float})
state: Dict[str, Any] = {"fetched_at": None, "fetches": 0, "failures": 0, "lock": None}


def _write_atomically(path: str, data: Any) -> None:
    # A reader never sees a half-written file: write beside it, then rename over it.
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".prefetch-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


async def refresh() -> bool:
    """Fetch the document and replace the local copy; keep the old copy on any failure."""
    url = ext.config["url"]
    try:
        timeout = aiohttp.ClientTimeout(total=float(ext.config.get("timeout", 2.0)))
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            response.raise_for_status()
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
        state["failures"] += 1
        ext.log.warning("configuration fetch failed; keeping the last copy", url=url,
                        error=f"{type(error).__name__}: {error}")
        return False
    _write_atomically(ext.config.get("path", "/tmp/fgext-config.json"), data)
    state["fetched_at"] = time.monotonic()
    state["fetches"] += 1
    return True


@ext.on_start
async def fetch_at_start(context: fgext.PluginContext) -> None:
    if not context.config.get("url"):
        raise fgext.PluginError("plugin 'prefetch': setting 'url' is required (FGEXT_PREFETCH_URL)")
    # Created here, on the agent's loop: on Python 3.9 a lock binds to the loop current at creation.
    state["lock"] = asyncio.Lock()
    await refresh()


@ext.on_invoke
async def refresh_when_stale(invoke: fgext.Invoke) -> None:
    async with state["lock"]:  # invokes arriving together trigger one fetch, not one each
        fetched_at = state["fetched_at"]
        if fetched_at is None or time.monotonic() - fetched_at >= float(ext.config.get("ttl", 30.0)):
            await refresh()


if __name__ == "__main__":
    ext.run()
