"""The wall time ``fgext.function`` adds to an invocation whose handler starts 10 spans.

Run from the repository root: ``python bench/function_helper.py [invocations]`` (default 2000). In
this process, a handler that starts 10 spans is timed first plain (no SDK set up: the API's no-op
tracer), then wrapped with ``@fgext.function.instrument`` (SDK, and the flush before returning: one
OTLP/HTTP request per invocation on a kept-alive connection, fgext._local_export) exporting to
fgext's own receiver (fgext.otlp._receiver) in a separate process on 127.0.0.1, as the agent would
be in the sandbox. It prints the median and the
95th percentile of each, the difference, and the first instrumented invocation (the SDK's import and
set-up) on its own. Nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fgext._discovery_file import write_agent_file

# fgext's receiver in a real aiohttp server; prints its port, then on stdin's end the spans received.
_RECEIVER = r"""
import asyncio, sys
from aiohttp import web
from fgext.otlp._receiver import Receiver
spans = [0]
def on_export(signal, request):
    spans[0] += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
async def main():
    app = web.Application()
    app.router.add_routes(Receiver(on_export).routes())
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
    print(spans[0], flush=True)
asyncio.run(main())
"""


class Context:
    """The getters of FunctionGraph's context that the helper calls."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def getRequestID(self) -> str:
        return self.request_id

    def getFunctionName(self) -> str:
        return "bench"

    def getRemainingTimeInMilliSeconds(self) -> int:
        return 30_000


def handler(event: Dict[str, Any], context: Any) -> Dict[str, Any]:
    from opentelemetry import trace

    tracer = trace.get_tracer("bench")
    for index in range(10):
        with tracer.start_as_current_span(f"step-{index}"):
            pass
    return {"statusCode": 200}


def timed(function: Callable[[Dict[str, Any], Any], Any], count: int) -> List[float]:
    samples = []
    for _ in range(count):
        context = Context(str(uuid.uuid4()))
        begin = time.perf_counter()
        function({}, context)
        samples.append((time.perf_counter() - begin) * 1e6)
    return samples


def describe(name: str, samples: List[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"{name:<44} median {statistics.median(samples):8.1f} us   p95 {p95:8.1f} us"


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, cwd=str(Path(__file__).resolve().parent.parent))
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        port = int(receiver.stdout.readline())
        with tempfile.TemporaryDirectory() as directory:
            os.environ["FGEXT_AGENT_FILE"] = write_agent_file(port, pid=receiver.pid,
                                                              path=str(Path(directory) / "agent.json"))
            for key in [k for k in os.environ if k.startswith("OTEL_")]:
                del os.environ[key]
            import fgext.function

            plain = timed(handler, count)
            wrapped = fgext.function.instrument(handler)
            first = timed(wrapped, 1)[0]
            instrumented = timed(wrapped, count)
        receiver.stdin.close()
        received = int(receiver.stdout.readline())
        receiver.wait(10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait(10)
    added = statistics.median(instrumented) - statistics.median(plain)
    print(f"Python {sys.version.split()[0]}, {count} invocations each, 10 spans per invocation "
          f"(+1: the helper's own span)")
    print(describe("plain handler (no SDK: no-op tracer)", plain))
    print(describe("@fgext.function.instrument, exported", instrumented))
    print(f"{'added by the helper (difference of medians)':<44} {added:8.1f} us")
    print(f"{'first invocation (SDK import and set-up)':<44} {first / 1000:8.1f} ms")
    print(f"spans received by the receiver: {received} (expected {11 * (count + 1)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
