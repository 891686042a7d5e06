"""How much CPU the OTLP plugin spends per telemetry event, from parsed events to serialized requests.

Run from the repository root: ``python bench/otlp_encode.py [invocations] [lines_per_invocation]``.
It prints microseconds per event for JSON decoding (the reference the issue sets: ~1.2 us), fgext's
event parsing, and the OTLP plugin's conversion + encoding (sorting events into requests, building
spans, log records and metrics as protobuf messages, correlating log lines, serializing once), for a
log-heavy workload and for platform events alone; then the whole plugin's CPU per invocation with the
default ``end`` strategy, HTTP export included, against a receiver in another process. CPU time of
this process, best of several rounds for the first part; nothing is asserted.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._agents import wait_connect
from fgext._parse import parse_body
from fgext.otlp._metrics import Metrics
from fgext.otlp._requests import encode_logs_requests, encode_metrics_request, encode_trace_requests
from fgext.otlp._resource import ResourceBuilder
from fgext.otlp._traces import Assembler


def stamp(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"2023-02-01T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def workload(invocations: int, lines: int, with_logs: bool = True) -> List[Dict[str, Any]]:
    events: List[Dict[str, Any]] = []
    metrics = {"durationMs": 10.6, "billingDurationMS": 11, "memoryUsed": 23.4, "memorySize": 128,
               "podName": "pool22-300-128-fusion-64774779-4g77v"}
    for index in range(invocations):
        rid = str(uuid.UUID(int=index + 1))
        begin = index * 100
        events.append({"name": "platform.start", "startTime": stamp(begin), "traceId": rid})
        if with_logs:
            events += [{"name": "function", "startTime": stamp(begin + 1 + i % 90),
                        "logs": f"[Function]INFO request {index} step {i}: handled item with some detail"}
                       for i in range(lines)]
        events.append({"name": "platform.runtimeDone", "startTime": stamp(begin + 95), "traceId": rid,
                       "status": "success"})
        events.append({"name": "platform.report", "startTime": stamp(begin), "traceId": rid,
                       "endTime": stamp(begin + 96), "status": "success", "reportMetrics": metrics})
    return events


def best(rounds: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        # CPU time of this process: other work on the machine does not inflate the number
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return min(times)


def convert_and_encode(parsed: List[Any]) -> Callable[[], None]:
    def run() -> None:
        resource = ResourceBuilder({}, function_name="hello", function_version="latest")
        assembler = Assembler(resource, Metrics("cumulative", 0), open_wait_s=60, function_timeout_s=30)
        message = resource.message()

        def export() -> None:
            pending = assembler.pending()
            encode_trace_requests(message, pending.spans)
            encode_logs_requests(message, pending.lines, pending.links)
            assembler.taken(pending)

        # one POST of 100 events at a time, as the platform would send them, exporting at each report
        for first in range(0, len(parsed), 100):
            if assembler.consume(parsed[first:first + 100]):
                export()
                now = time.time_ns()
                encode_metrics_request(message, assembler.metrics.snapshot(now))
                assembler.metrics.taken(now)
        export()
    return run


_RECEIVER = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(status=200)
app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def end_to_end(invocations: int, lines: int) -> None:
    """The whole plugin with FGEXT_FLUSH=end, exporting over HTTP to a receiver in another process."""
    import asyncio
    import socket
    import subprocess
    import tempfile

    from fgext._plugin import PluginContext, RegistrationInfo
    from fgext.otlp import OtlpPlugin

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER, str(port)])
    try:
        wait_connect(port, timeout=15)
        events = workload(invocations, lines)
        per_invocation = 3 + lines
        batches = [parse_body(json.dumps(events[i:i + per_invocation])).events
                   for i in range(0, len(events), per_invocation)]

        async def run() -> float:
            with tempfile.TemporaryDirectory() as spool:
                plugin = OtlpPlugin()
                environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "FGEXT_SPOOL_DIR": spool}
                registration = RegistrationInfo("extensionFgext.sh", "127.0.0.1:8081", "hello", "latest")
                await plugin.start(PluginContext(name="otlp", registration=registration, environ=environ))
                await plugin.on_telemetry(batches[0])  # warm up: the HTTP session and its TLS context
                await plugin.flush(10)
                started = time.process_time()
                for batch in batches[1:]:
                    await plugin.on_telemetry(batch)
                    await plugin.flush(10)  # each invocation's export completes before the next, as in a sandbox
                spent = time.process_time() - started
                assert plugin.stats["sent_requests"] >= 3 * invocations, plugin.stats
                invocations_timed = len(batches) - 1
                await plugin.shutdown(5)
                return spent / invocations_timed * invocations

        spent = asyncio.run(run())
        print(f"{'end to end (HTTP)':>22}: {invocations} invocations x {per_invocation} events, FGEXT_FLUSH=end "
              f"| {spent / invocations * 1e6:7.0f} us CPU per invocation (3 POSTs) "
              f"| {spent / len(events) * 1e6:5.2f} us/event")
    finally:
        receiver.terminate()
        try:
            receiver.wait(5)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait(5)


def main() -> None:
    invocations = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    import google.protobuf
    from google.protobuf.internal import api_implementation

    print(f"python {sys.version.split()[0]}, protobuf {google.protobuf.__version__} "
          f"({api_implementation.Type()}), {invocations} invocations x {lines} log lines")
    for label, events in (("log-heavy", workload(invocations, lines)),
                          ("platform events only", workload(invocations * 5, 0, with_logs=False))):
        body = json.dumps(events)
        count = len(events)
        parsed = parse_body(body).events
        decode = best(5, lambda body=body: json.loads(body)) / count * 1e6  # type: ignore[misc]
        parse = best(5, lambda body=body: parse_body(body)) / count * 1e6  # type: ignore[misc]
        otlp = best(5, convert_and_encode(parsed)) / count * 1e6
        print(f"{label:>22}: {count} events | json.loads {decode:5.2f} us/event | fgext parse "
              f"{parse:5.2f} us/event | otlp convert+encode {otlp:5.2f} us/event "
              f"({otlp / decode:.1f}x json.loads)")
    end_to_end(min(invocations, 200), lines)


if __name__ == "__main__":
    main()
