"""CPU per export POST: aiohttp's ClientSession, fgext's OTLP/HTTP transport, and a minimal floor client.

Issue 15, item 1 asks whether a lean hand-written client is worth its code: this measures only the
client side (``time.process_time`` of this process; the collector is a subprocess), sequential POSTs of
a typical traces request over one kept-alive connection, alternating the clients for ``--rounds``:

- ``aiohttp``: a ``ClientSession`` POST (what the agent used before fgext/otlp/_http.py);
- ``transport``: the agent's real ``HttpTransport.send`` (fgext/otlp/_transports.py, built by
  ``build_transports`` from ``OTEL_*`` settings): its awake-time timeout, the request head, the lean
  client in fgext/otlp/_http.py and the OTLP answer parsing, all counted;
- ``floor``: the least a keep-alive exchange on asyncio streams can cost (no timeout, no checks).

    .venv/bin/python bench/http_client.py --posts 1500 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Coroutine, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._agents import Sink

BODY = b"\x0a" + b"x" * 2000  # about one invocation's traces request


async def aiohttp_posts(port: int, posts: int) -> float:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=BODY, headers=headers) as answer:  # connect outside the count
            await answer.read()
        started = time.process_time()
        for _ in range(posts):
            async with session.post(url, data=BODY, headers=headers, allow_redirects=False) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(answer.status)
        return time.process_time() - started


async def transport_posts(port: int, posts: int) -> float:
    from fgext.otlp._config import load_config
    from fgext.otlp._transports import build_transports

    transports, close = build_transports(load_config({
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        "OTEL_LOGS_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}))
    send = transports["traces"].send
    try:
        await send(BODY)  # connect outside the count
        started = time.process_time()
        for _ in range(posts):
            outcome = await send(BODY)
            if not outcome.ok:
                raise RuntimeError(outcome.detail)
        return time.process_time() - started
    finally:
        await close()


async def streams_posts(port: int, posts: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode()

    async def one() -> None:
        writer.write(head + BODY)
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        if b" 200 " not in status_line:
            raise RuntimeError(status_line)

    await one()
    started = time.process_time()
    for _ in range(posts):
        await one()
    elapsed = time.process_time() - started
    writer.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sink = Sink()
    clients: Dict[str, Callable[[int, int], Coroutine[Any, Any, float]]] = {
        "aiohttp": aiohttp_posts, "transport": transport_posts, "floor": streams_posts}
    samples: Dict[str, List[float]] = {name: [] for name in clients}
    try:
        for _ in range(args.rounds):
            for name, client in clients.items():
                samples[name].append(asyncio.run(client(sink.port, args.posts)) / args.posts * 1e6)
    finally:
        sink.stop()
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds of {args.posts} POSTs of {len(BODY)} bytes")
    for name, values in samples.items():
        print(f"{name:9} CPU per POST: median {statistics.median(values):.1f} us "
              f"(min {min(values):.1f}, max {max(values):.1f})")
    for top, bottom in (("aiohttp", "transport"), ("transport", "floor"), ("aiohttp", "floor")):
        ratios = [a / b for a, b in zip(samples[top], samples[bottom])]
        print(f"{top} / {bottom}: {min(ratios):.2f}-{max(ratios):.2f} (per round)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
