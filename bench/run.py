"""fgext's benchmarks, all of them, in one command: a table for a person and JSON for a machine.

    python bench/run.py                        # full run: Python 3.11 (this one) and 3.9, several minutes
    python bench/run.py --smoke                # seconds: tiny counts, proves the harness works
    python bench/run.py --python .venv39/bin/python --json out.json
    python bench/run.py --only coldstart,memory

Sections (each a ratio to a floor taken in the same run where the machine's speed matters; medians of
repeated runs):

1. ``coldstart``: launcher exec -> register received, -> subscription received, -> first invoke answered,
   -> first telemetry batch answered; without plugins and with the OTLP plugin. Floors: ``python -c
   pass``, ``python -c "import aiohttp.web"`` and the same plus the OTLP plugin's protobuf modules.
2. ``cpu``: a load generator posts realistic batches to the agent (OTLP on, exporting to a local sink);
   events/s and agent CPU us/event (``/proc/<pid>/stat``) against a bare aiohttp JSON-parsing handler.
3. ``memory``: agent RSS after start, after 1,000, 10,000 and 20,000 invocations with logs (``--memory-checkpoints``),
   and the floor's RSS after the same invocations in the same run.
4. ``latency``: ``/extension/invoke`` answer p50/p99 under concurrent load (and the floor's), and the end
   flush: ``platform.report`` POSTed -> the invocation's spans and logs answered by the sink (metrics
   leave on their own timer).
5. ``zip``: size of the default Python3.9 build, and its cold start with and without shipped byte code
   (built once per source tree with the packager, cached under /tmp; needs PyPI or a warm pip cache).
6. ``peer``: the issue's workload (one invocation at a time: invoke POST, then one telemetry POST) with no
   log line, 7 and 50 lines, against the floor, fgext (``end`` flush, the default, and
   ``periodically,1000``: keys ``periodic_*``) and ``bench/peer_sdk_extension.py`` (the extension a user
   would write with the OpenTelemetry SDK): CPU us/event, RSS, and the ratios' min, median, max and spread
   (max / min) over rounds (``--runs``, 3 to 9; ``--peer-invocations`` per round, default 500).
   The machine's speed drifts by tens of percent within minutes, so the four are not measured one after
   the other: in each round all four are up at once (each with its own sink and platform; fgext's two
   agents take free ports of 8081-8090 under the tests' lock and the bench reads the port each registered
   with), each is warmed, and then they take the round's invocations in chunks of ``--peer-chunk``
   (default 50), round-robin, the first of each cycle rotating, so every target sees the same minutes of
   the machine. A target's CPU (``/proc/<pid>/stat``) is read once before its first chunk and once at the
   end, after every sink went quiet: that total, which charges it whatever it did between its chunks (a
   periodic flush, an end flush still leaving), is what the figures and ratios use; it is also read around
   each chunk, and ``*_outside_chunks_pct`` is the share of the total spent outside its own chunks.

The agent runs as a subprocess on ``--python`` (``FGEXT_PYTHON``), so the harness stays on 3.11. Ports
8081-8090 are held under the tests' lock. Nothing here asserts; the targets are evaluated in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform as platform_module
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._agents import (
    AGENT_EXTRA_ENV,
    AGENT_PORT,
    ROOT,
    AgentUnderTest,
    FloorServer,
    PeerServer,
    PortTaken,
    Sink,
    cpu_seconds,
    dumps,
    launcher,
    port_range_lock,
    python_version,
    rss_kib,
    use_launcher,
)
from bench._workload import invocation, invoke_body
from tests.platform import RecordingPlatform

SECTIONS = ("coldstart", "cpu", "memory", "latency", "zip", "peer")
OTLP_IMPORTS = ("import aiohttp.web, opentelemetry.proto.collector.trace.v1.trace_service_pb2, "
                "opentelemetry.proto.collector.logs.v1.logs_service_pb2, "
                "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
FIRST_BATCH = dumps(invocation(0, 2))


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --------------------------------------------------------------------------------------- 1 cold start


def floor_ms(python: str, code: str, runs: int, args: Sequence[str] = ()) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([python, *args, "-c", code], check=True, timeout=60)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def one_launch(python: str, platform: RecordingPlatform, plugins: str, launcher: Optional[Path] = None,
               extra: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    before = len(platform.requests)
    start = time.monotonic()
    agent = AgentUnderTest(python, platform.addr, plugins, extra, launcher=launcher)
    try:
        seen = platform.wait_for(lambda r: len(r) >= before + 2, timeout=30)
        register, subscribe = seen[before], seen[before + 1]
        # The socket is bound before registration; the early responder (fgext._early) answers while aiohttp
        # loads. The invoke the platform may wait for first, then the first telemetry batch.
        request = urllib.request.Request(f"http://127.0.0.1:{AGENT_PORT}/extension/invoke",
                                         data=b'{"traceId": "bench-first"}', method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
        invoked = time.monotonic()
        request = urllib.request.Request(f"http://127.0.0.1:{AGENT_PORT}/", data=FIRST_BATCH, method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
        answered = time.monotonic()
    finally:
        agent.stop()
    return {"register_ms": (register.at - start) * 1000, "subscribe_ms": (subscribe.at - start) * 1000,
            "first_invoke_ms": (invoked - start) * 1000, "first_batch_ms": (answered - start) * 1000}


def launches(python: str, plugins: str, runs: int, launcher: Optional[Path] = None,
             extra: Optional[Dict[str, str]] = None, floor: Optional[Tuple[str, str, Sequence[str]]] = None,
             ) -> Dict[str, float]:
    """Medians of ``runs`` launches; with ``floor`` (interpreter, code, its flags), that import floor is timed
    right before each launch, so both see the same load from whatever else runs on the machine."""
    platform = RecordingPlatform().start()
    samples: List[Dict[str, float]] = []
    try:
        with port_range_lock():
            one_launch(python, platform, plugins, launcher, extra)  # warm the page cache
            for _ in range(runs):
                sample = {}
                if floor is not None:
                    sample["floor_ms"] = floor_ms(floor[0], floor[1], 1, floor[2])
                sample.update(one_launch(python, platform, plugins, launcher, extra))
                samples.append(sample)
    finally:
        platform.stop()
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def bench_coldstart(python: str, runs: int) -> Dict[str, float]:
    # The launcher sets PYTHONDONTWRITEBYTECODE (the sandbox is read-only), so a module changed since this
    # interpreter last wrote its byte code would be compiled at every launch; the floor's modules are not.
    # Byte code first, as a shipped zip has it and any second run of a checkout does.
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "fgext")], check=True,
                   stdout=subprocess.DEVNULL)
    progress("cold start floor: python -c pass")
    out = {"floor_python_pass_ms": floor_ms(python, "pass", runs)}
    for label, plugins, code in (("bare", "", "import aiohttp.web"), ("otlp", "otlp", OTLP_IMPORTS)):
        progress(f"cold start, plugins={plugins or '(none)'}, interleaved with its import floor")
        measured = launches(python, plugins, runs, floor=(python, code, ()))
        out[f"{label}_floor_import_ms"] = measured.pop("floor_ms")
        for key, value in measured.items():
            out[f"{label}_{key}"] = value
    for label in ("bare", "otlp"):
        out[f"{label}_register_minus_pass_floor_ms"] = out[f"{label}_register_ms"] - out["floor_python_pass_ms"]
        out[f"{label}_first_batch_over_import_floor"] = out[f"{label}_first_batch_ms"] / out[f"{label}_floor_import_ms"]
    return out


# ------------------------------------------------------------------------------------ load generator


async def post_all(port: int, bodies: List[Tuple[str, bytes]], concurrency: int) -> List[float]:
    """POST every (path, body) with ``concurrency`` keep-alive clients; the latency of each, in ms."""
    import aiohttp

    latencies: List[float] = []
    queue: asyncio.Queue[Tuple[str, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            path, body = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{path} answered {answer.status}")
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies


def telemetry_bodies(first: int, count: int, lines: int) -> Tuple[List[Tuple[str, bytes]], int]:
    bodies, events = [], 0
    for index in range(first, first + count):
        batch = invocation(index, lines)
        events += len(batch)
        bodies.append(("/", dumps(batch)))
    return bodies, events


# --------------------------------------------------------------------------------- 2 per-event CPU


@contextlib.contextmanager
def otlp_agent(python: str, extra: Optional[Dict[str, str]] = None) -> Iterator[Tuple[AgentUnderTest, Sink]]:
    """A ready agent with the OTLP plugin exporting to a fresh sink, under a recording platform; all three
    stopped on the way out."""
    sink = Sink()
    platform = RecordingPlatform().start()
    try:
        with port_range_lock():
            agent = AgentUnderTest(python, platform.addr, "otlp",
                                   {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}", **(extra or {})})
            try:
                agent.wait_ready()
                yield agent, sink
            finally:
                agent.stop()
    finally:
        platform.stop()
        sink.stop()


def _drive(target_pid: int, port: int, bodies: List[Tuple[str, bytes]], concurrency: int,
           drained: Callable[[], float]) -> Tuple[float, float]:
    """(wall seconds until the work is done, CPU seconds the target spent)."""
    cpu0 = cpu_seconds(target_pid)
    started = time.monotonic()
    asyncio.run(post_all(port, bodies, concurrency))
    finished = max(time.monotonic(), drained())
    return finished - started, cpu_seconds(target_pid) - cpu0


def _agent_load(python: str, bodies: List[Tuple[str, bytes]], warm: List[Tuple[str, bytes]], concurrency: int,
                flush: str) -> Tuple[float, float, int]:
    # the drain waits for the sink to go quiet: longer than a periodic flush's interval
    quiet = 1.5 if flush != "end" else 0.5
    with otlp_agent(python, {"FGEXT_FLUSH": flush}) as (agent, sink):
        asyncio.run(post_all(agent.port, warm, concurrency))
        sink.wait_quiet(quiet=quiet)
        wall, cpu = _drive(agent.pid, agent.port, bodies, concurrency, lambda: sink.wait_quiet(quiet=quiet))
        exported = sum(1 for path, _, _ in sink.snapshot() if path == "/v1/logs")
    return wall, cpu, exported


def bench_cpu(python: str, batches: int, lines: int, concurrency: int) -> Dict[str, float]:
    warm, _ = telemetry_bodies(10_000_000, 20, lines)
    bodies, events = telemetry_bodies(0, batches, lines)
    progress(f"per-event CPU: floor, {batches} POSTs x {lines + 3} events")
    floor = FloorServer(python)
    try:
        asyncio.run(post_all(floor.port, warm, concurrency))
        floor_wall, floor_cpu = _drive(floor.pid, floor.port, bodies, concurrency, time.monotonic)
    finally:
        floor.stop()
    progress("per-event CPU: agent with OTLP (FGEXT_FLUSH=end, the default)")
    agent_wall, agent_cpu, exported = _agent_load(python, bodies, warm, concurrency, "end")
    progress("per-event CPU: agent with OTLP (FGEXT_FLUSH=periodically,1000)")
    periodic_wall, periodic_cpu, _ = _agent_load(python, bodies, warm, concurrency, "periodically,1000")
    floor_rate, agent_rate = events / floor_wall, events / agent_wall
    return {"events": events, "floor_events_per_s": floor_rate, "floor_cpu_us_per_event": floor_cpu / events * 1e6,
            "agent_events_per_s": agent_rate, "agent_cpu_us_per_event": agent_cpu / events * 1e6,
            "agent_over_floor_events_per_s": agent_rate / floor_rate,
            "agent_over_floor_cpu_per_event": (agent_cpu / events) / max(floor_cpu / events, 1e-9),
            "log_exports_seen": exported,
            "periodic_cpu_us_per_event": periodic_cpu / events * 1e6,
            # the drain includes up to one flush interval of waiting: a lower bound on throughput
            "periodic_events_per_s_incl_drain": events / periodic_wall}


# ------------------------------------------------------------------------------------------ 3 memory


def _invocations(first: int, count: int, lines: int) -> List[Tuple[str, bytes]]:
    bodies = []
    for index in range(first, first + count):
        bodies.append(("/extension/invoke", dumps(invoke_body(index))))
        bodies.append(("/", dumps(invocation(index, lines))))
    return bodies


def _floor_rss(python: str, checkpoints: Sequence[int], lines: int) -> Dict[int, float]:
    """The floor's RSS (MB) at each checkpoint, driven by the same invocations as the agent."""
    floor = FloorServer(python)
    try:
        rss: Dict[int, float] = {}
        done = 0
        for checkpoint in checkpoints:
            asyncio.run(post_all(floor.port, _invocations(done, checkpoint - done, lines), 2))
            done = checkpoint
            rss[checkpoint] = rss_kib(floor.pid)[0] / 1024
        return rss
    finally:
        floor.stop()


def bench_memory(python: str, checkpoints: Sequence[int], lines: int) -> Dict[str, float]:
    """RSS after start and at each checkpoint (invocations so far), beside the floor's at the same counts in
    the same run; the first two are the targets' 1,000 and 10,000, later ones show whether growth levels off
    once the bounded caches are full."""
    progress(f"memory: floor RSS at {', '.join(map(str, checkpoints))} invocations with {lines} log lines each")
    floor = _floor_rss(python, checkpoints, lines)
    progress(f"memory: agent RSS at {', '.join(map(str, checkpoints))} invocations with {lines} log lines each")
    out: Dict[str, float] = {}
    with otlp_agent(python) as (agent, sink):
        out["rss_start_mb"] = rss_kib(agent.pid)[0] / 1024
        done = 0
        for checkpoint in checkpoints:
            asyncio.run(post_all(agent.port, _invocations(done, checkpoint - done, lines), 2))
            done = checkpoint
            sink.wait_quiet()
            out[f"rss_after_{checkpoint}_mb"] = rss_kib(agent.pid)[0] / 1024
            out[f"floor_rss_after_{checkpoint}_mb"] = floor[checkpoint]
            out[f"over_floor_after_{checkpoint}_mb"] = out[f"rss_after_{checkpoint}_mb"] - floor[checkpoint]
        out["rss_peak_mb"] = rss_kib(agent.pid)[1] / 1024
    first, second = checkpoints[0], checkpoints[1]
    out["growth_first_to_second_mb"] = out[f"rss_after_{second}_mb"] - out[f"rss_after_{first}_mb"]
    out["rss_steady_mb"] = out[f"rss_after_{checkpoints[-1]}_mb"]
    out["rss_steady_over_floor_mb"] = out[f"over_floor_after_{checkpoints[-1]}_mb"]
    if len(checkpoints) > 2:
        out["growth_second_to_last_mb"] = out[f"rss_after_{checkpoints[-1]}_mb"] - out[f"rss_after_{second}_mb"]
    return out


# ------------------------------------------------------------------------------ 6 peer (issue 15)


@dataclasses.dataclass
class _PeerTarget:
    """One server of a peer round, as the interleaved driver sees it."""

    label: str
    pid: int
    port: int
    sink: Optional[Sink] = None  # where its exports go (the floor exports nothing)
    quiet: float = 0.5  # how long its sink must be silent before its work counts as done
    cpu_start: float = 0.0
    chunk_cpu: float = 0.0


def _peer_targets(stack: contextlib.ExitStack, python: str) -> List[_PeerTarget]:
    """The floor, fgext (end flush, then periodically,1000) and the peer, all started, each with its own sink
    and platform; every one is stopped by ``stack``. fgext's two agents take their ports themselves from
    8081-8090 under the tests' lock (held by the caller) and report them when they register."""
    floor = FloorServer(python)
    stack.callback(floor.stop)
    targets = [_PeerTarget("floor", floor.pid, floor.port)]
    for label, flush, quiet in (("fgext", "end", 0.5), ("periodic", "periodically,1000", 1.5)):
        sink = Sink()
        stack.callback(sink.stop)
        platform = RecordingPlatform().start()
        stack.callback(platform.stop)
        agent = AgentUnderTest(python, platform.addr, "otlp", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}", "FGEXT_FLUSH": flush}, port=None)
        stack.callback(agent.stop)
        agent.learn_port(platform)
        agent.wait_ready()
        targets.append(_PeerTarget(label, agent.pid, agent.port, sink, quiet))
    sink = Sink()
    stack.callback(sink.stop)
    platform = RecordingPlatform().start()
    stack.callback(platform.stop)
    peer = PeerServer(python, platform.addr, sink)
    stack.callback(peer.stop)
    targets.append(_PeerTarget("peer", peer.pid, peer.port, sink))
    return targets


async def _post_in_turn(session: Any, port: int, bodies: Sequence[Tuple[str, bytes]]) -> None:
    """POST each body after the previous one was answered (the issue's workload: one invocation at a time)."""
    headers = {"Content-Type": "application/json"}
    for path, body in bodies:
        async with session.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as answer:
            await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{path} answered {answer.status}")


def _settle(targets: Sequence[_PeerTarget]) -> None:
    for target in targets:
        if target.sink is not None:
            target.sink.wait_quiet(quiet=target.quiet)


async def _interleave(targets: Sequence[_PeerTarget], warm: List[Tuple[str, bytes]],
                      bodies: List[Tuple[str, bytes]], chunk: int) -> None:
    """Warm every target, then drive ``bodies`` (invoke, telemetry, invoke, ...) to all of them in chunks of
    ``chunk`` invocations, round-robin, the first target of each cycle rotating; each target's CPU is read
    at the start, around each of its chunks (``chunk_cpu``) and, by the caller, at the end."""
    import aiohttp

    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)))
                    for _ in targets]
        for target, session in zip(targets, sessions):
            await _post_in_turn(session, target.port, warm)
        _settle(targets)  # blocks the loop on purpose: nothing else runs in it
        for target in targets:
            target.cpu_start, target.chunk_cpu = cpu_seconds(target.pid), 0.0
        for cycle, first in enumerate(range(0, len(bodies), 2 * chunk)):
            part = bodies[first:first + 2 * chunk]
            shift = cycle % len(targets)
            for index in [*range(shift, len(targets)), *range(shift)]:
                target, session = targets[index], sessions[index]
                before = cpu_seconds(target.pid)
                await _post_in_turn(session, target.port, part)
                target.chunk_cpu += cpu_seconds(target.pid) - before


def _peer_round(python: str, lines: int, first: int, count: int, chunk: int) -> Dict[str, float]:
    """One round of the issue's workload (one invocation at a time: an invoke POST, then one telemetry POST
    of start, ``lines`` log lines, runtimeDone and report) against the floor, fgext (end flush and periodic)
    and the peer, all up at once and driven in interleaved chunks."""
    warm = _invocations(first + 10_000_000, 20, lines)
    bodies = _invocations(first, count, lines)
    events = count * (lines + 3)
    out: Dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(port_range_lock())
        targets = _peer_targets(stack, python)
        asyncio.run(_interleave(targets, warm, bodies, chunk))
        _settle(targets)  # what each did after its last chunk (an end flush, a periodic export) is its own
        for target in targets:
            total = cpu_seconds(target.pid) - target.cpu_start
            out[f"{target.label}_cpu_us"] = total / events * 1e6
            out[f"{target.label}_rss_mb"] = rss_kib(target.pid)[0] / 1024
            # the share of its CPU spent outside its own chunks: background work (timers, late flushes)
            out[f"{target.label}_outside_chunks_pct"] = (total - target.chunk_cpu) / max(total, 1e-9) * 100
        peer_sink = targets[-1].sink
        assert peer_sink is not None
        out["peer_exports"] = float(len(peer_sink.snapshot()))
    return out


def bench_peer(python: str, rounds: int, count: int, chunk: int) -> Dict[str, float]:
    """CPU per telemetry event and RSS of fgext (default ``end`` flush, and ``periodically,1000``), the floor
    and the peer, per variant (no log line; the issue's 6 function lines and 1 extension line; 50 lines);
    ratios as min, median and max over rounds and their spread (max / min), each round driving all four in
    interleaved chunks of ``chunk`` invocations."""
    out: Dict[str, float] = {}
    for lines in (0, 7, 50):
        progress(f"peer: {rounds} rounds of {count} invocations with {lines} log lines (floor, fgext, periodic, "
                 f"peer interleaved in chunks of {chunk})")
        samples = [_peer_round(python, lines, index * count, count, chunk) for index in range(rounds)]
        ratios = {
            # a smoke run's counts can stay under one clock tick of CPU
            "fgext_over_floor": [s["fgext_cpu_us"] / max(s["floor_cpu_us"], 1e-9) for s in samples],
            "periodic_over_floor": [s["periodic_cpu_us"] / max(s["floor_cpu_us"], 1e-9) for s in samples],
            "peer_over_floor": [s["peer_cpu_us"] / max(s["floor_cpu_us"], 1e-9) for s in samples],
            "peer_over_fgext": [s["peer_cpu_us"] / max(s["fgext_cpu_us"], 1e-9) for s in samples],
        }
        for key in ("floor_cpu_us", "fgext_cpu_us", "periodic_cpu_us", "peer_cpu_us", "floor_rss_mb", "fgext_rss_mb",
                    "periodic_rss_mb", "peer_rss_mb", "peer_exports", "floor_outside_chunks_pct",
                    "fgext_outside_chunks_pct", "periodic_outside_chunks_pct", "peer_outside_chunks_pct"):
            out[f"l{lines}_{key}"] = statistics.median(s[key] for s in samples)
        for key, values in ratios.items():
            out[f"l{lines}_{key}_min"], out[f"l{lines}_{key}_max"] = min(values), max(values)
            out[f"l{lines}_{key}_median"] = statistics.median(values)
            out[f"l{lines}_{key}_spread"] = max(values) / max(min(values), 1e-9)
    return out


# ----------------------------------------------------------------------------------------- 4 latency


def _end_flush(agent: AgentUnderTest, sink: Sink, index: int, events: int) -> float:
    batch = invocation(index, events - 3)
    asyncio.run(post_all(agent.port, [("/", dumps(batch[:-1]))], 1))
    before = len(sink.snapshot())
    started = time.monotonic()
    asyncio.run(post_all(agent.port, [("/", dumps(batch[-1:]))], 1))
    deadline = started + 10
    while time.monotonic() < deadline:
        paths = {path: at for path, at, _ in sink.snapshot()[before:]}
        # metrics leave on their own timer (FGEXT_OTLP_METRICS_INTERVAL_MS), not with the end flush
        if {"/v1/traces", "/v1/logs"} <= set(paths):
            return (max(paths.values()) - started) * 1000
        time.sleep(0.0005)
    raise RuntimeError("the end flush did not reach the sink within 10 s")


def bench_latency(python: str, invokes: int, concurrency: int, flushes: int) -> Dict[str, float]:
    bodies = [("/extension/invoke", dumps(invoke_body(i))) for i in range(invokes)]
    progress(f"invoke latency: floor, {invokes} invokes, {concurrency} concurrent clients")
    floor = FloorServer(python)
    try:
        asyncio.run(post_all(floor.port, bodies[:50], concurrency))
        floor_lat = asyncio.run(post_all(floor.port, bodies, concurrency))
        floor_seq = asyncio.run(post_all(floor.port, bodies[: len(bodies) // 5], 1))
    finally:
        floor.stop()
    progress(f"invoke latency and end flush ({flushes} invocations of 100 events): agent with OTLP")
    with otlp_agent(python) as (agent, sink):
        asyncio.run(post_all(agent.port, bodies[:50], concurrency))
        agent_lat = asyncio.run(post_all(agent.port, bodies, concurrency))
        agent_seq = asyncio.run(post_all(agent.port, bodies[: len(bodies) // 5], 1))
        _end_flush(agent, sink, 5_000_000, 100)  # warm-up: the exporter's connections
        flush = [_end_flush(agent, sink, 5_000_001 + i, 100) for i in range(flushes)]
    return {"invokes": invokes, "concurrency": concurrency,
            "floor_invoke_p50_ms": statistics.median(floor_lat), "floor_invoke_p99_ms": percentile(floor_lat, 99),
            "agent_invoke_p50_ms": statistics.median(agent_lat), "agent_invoke_p99_ms": percentile(agent_lat, 99),
            "agent_over_floor_invoke_p99": percentile(agent_lat, 99) / percentile(floor_lat, 99),
            "floor_sequential_p50_ms": statistics.median(floor_seq),
            "floor_sequential_p99_ms": percentile(floor_seq, 99),
            "agent_sequential_p50_ms": statistics.median(agent_seq),
            "agent_sequential_p99_ms": percentile(agent_seq, 99),
            "end_flushes": flushes, "end_flush_p50_ms": statistics.median(flush),
            "end_flush_p99_ms": percentile(flush, 99)}


# --------------------------------------------------------------------------------------------- 5 zip


def _tree_key() -> str:
    digest = hashlib.sha256()
    for base in ("fgext", "extension", "pyproject.toml"):
        path = ROOT / base
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                     if p.is_file() and "__pycache__" not in p.parts)
        for item in files:
            digest.update(str(item.relative_to(ROOT)).encode())
            digest.update(item.read_bytes())
    return digest.hexdigest()[:16]


def build_zip(python39: str) -> Path:
    cache = Path("/tmp/fgext-bench-zips")
    cache.mkdir(exist_ok=True)
    target = cache / f"fgext-py39-{_tree_key()}.zip"
    if not target.exists():
        progress(f"building the default Python3.9 zip with the packager into {target} (pip cache under /tmp)")
        env = {**os.environ, "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", "/tmp/fgext-pip-cache")}
        partial = target.with_suffix(".part.zip")
        subprocess.run([sys.executable, "-m", "fgext", "package", "-o", str(partial), "--python", python39, "-q"],
                       cwd=str(ROOT), env=env, check=True, timeout=900, stdout=subprocess.DEVNULL)
        partial.rename(target)
    return target


def _unpacked_bytes(root: Path) -> Tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def bench_zip(python39: str, runs: int) -> Dict[str, float]:
    archive = build_zip(python39)
    out: Dict[str, float] = {"zip_bytes": archive.stat().st_size}
    with tempfile.TemporaryDirectory(prefix="fgext-bench-zip-") as scratch:
        code = Path(scratch) / "code"
        code.mkdir()
        subprocess.run(["unzip", "-q", str(archive), "-d", str(code)], check=True)
        out["unpacked_bytes"], out["files"] = _unpacked_bytes(code)
        lib = code / "extension" / "fgext-lib"
        wrapper = Path(scratch) / "python-nosite"
        # The sandbox's runtime has no site-packages of ours: only what the zip ships is importable.
        wrapper.write_text(f'#!/bin/sh\nexec {python39} -S "$@"\n')
        wrapper.chmod(0o755)
        for label in ("pyc", "source"):
            if label == "source":
                for cache_dir in list(code.rglob("__pycache__")):
                    shutil.rmtree(cache_dir)
            out[f"{label}_files_pyc"] = sum(1 for _ in lib.rglob("*.pyc"))
            subprocess.run(["chmod", "-R", "a-w", str(code)], check=True)  # the sandbox's code is read-only
            try:
                progress(f"zip cold start, {label}")
                floor = f"import sys; sys.path.insert(0, {str(lib)!r}); {OTLP_IMPORTS}"
                measured = launches(str(wrapper), "otlp", runs, launcher=code / "extension" / "extensionFgext.sh",
                                    floor=(python39, floor, ("-S", "-E", "-B")))
                out[f"{label}_floor_import_otlp_deps_ms"] = measured.pop("floor_ms")
                for key, value in measured.items():
                    out[f"{label}_{key}"] = value
            finally:
                subprocess.run(["chmod", "-R", "u+w", str(code)], check=True)
    out["source_minus_pyc_first_batch_ms"] = out["source_first_batch_ms"] - out["pyc_first_batch_ms"]
    for label in ("pyc", "source"):
        out[f"{label}_first_batch_over_import_floor"] = (out[f"{label}_first_batch_ms"]
                                                         / out[f"{label}_floor_import_otlp_deps_ms"])
    return out


# --------------------------------------------------------------------------------------- the report

# (section, key, comparison, bound, what the target says)
TARGETS: List[Tuple[str, str, str, float, str]] = [
    ("coldstart", "bare_register_ms", "<", 60.0, "register within 60 ms of exec"),
    ("coldstart", "otlp_register_ms", "<", 60.0, "register within 60 ms of exec (OTLP on)"),
    ("coldstart", "bare_first_invoke_ms", "<=", 60.0, "first invoke answered within 60 ms of exec"),
    ("coldstart", "otlp_first_invoke_ms", "<=", 60.0, "first invoke answered within 60 ms of exec (OTLP on)"),
    ("coldstart", "bare_first_batch_over_import_floor", "<=", 1.2,
     "ready for telemetry within 1.2x import floor (aiohttp.web)"),
    ("coldstart", "otlp_first_batch_over_import_floor", "<=", 1.2,
     "ready for telemetry within 1.2x import floor (aiohttp.web + OTLP protobuf)"),
    ("cpu", "agent_over_floor_events_per_s", ">=", 0.5, "at least half the floor's events/s"),
    ("memory", "rss_steady_mb", "<", 45.0, "RSS under 45 MB at steady state"),
    ("memory", "rss_steady_over_floor_mb", "<=", 4.0, "RSS at most the floor's + 4 MB at steady state"),
    ("memory", "growth_first_to_second_mb", "<", 2.0, "RSS growth 1,000 -> 10,000 under 2 MB"),
    ("latency", "agent_invoke_p99_ms", "<", 2.0, "p99 invoke answer under 2 ms"),
    ("latency", "end_flush_p99_ms", "<", 20.0, "end flush p99 under 20 ms (100 events)"),
]


def evaluate(runs: Dict[str, Dict[str, Dict[str, float]]]) -> List[Dict[str, Any]]:
    verdicts = []
    for version, sections in runs.items():
        for section, key, op, bound, text in TARGETS:
            if key not in sections.get(section, {}):
                continue
            value = sections[section][key]
            met = {"<": value < bound, "<=": value <= bound, ">=": value >= bound}[op]
            verdicts.append({"python": version, "section": section, "key": key, "value": value,
                             "target": f"{op} {bound:g}", "met": met, "meaning": text})
    return verdicts


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(result: Dict[str, Any]) -> str:
    versions = list(result["runs"])
    lines = [f"fgext benchmarks  {result['date']}  {result['machine']['cpu']} x{result['machine']['nproc']}"
             f"  ({'smoke' if result['smoke'] else 'full'})", ""]
    for section in SECTIONS:
        keys: List[str] = []
        for version in versions:
            for key in result["runs"][version].get(section, {}):
                if key not in keys:
                    keys.append(key)
        if not keys:
            continue
        width = max(len(k) for k in keys)
        lines.append(f"[{section}]".ljust(width + 2) + "".join(f"{'python ' + v:>16}" for v in versions))
        for key in keys:
            cells = "".join(f"{fmt(result['runs'][v].get(section, {}).get(key, '-')):>16}" for v in versions)
            lines.append(f"  {key:<{width}}{cells}")
        lines.append("")
    lines.append("targets")
    for verdict in result["targets"]:
        lines.append(f"  {'MET   ' if verdict['met'] else 'MISSED'} python {verdict['python']:<7} "
                     f"{verdict['key']} = {fmt(verdict['value'])} (target {verdict['target']}): {verdict['meaning']}")
    return "\n".join(lines)


def machine() -> Dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform_module.release(),
            "harness_python": sys.version.split()[0]}


def compile_agent(python: str) -> None:
    """Byte code for the agent's tree (the launcher's checkout) on ``python``, before anything is measured.

    The launcher sets PYTHONDONTWRITEBYTECODE (a sandbox's code directory is read-only), so a checkout
    without ``__pycache__`` - a fresh clone, another commit's worktree - compiles every fgext module at
    every launch: tens of milliseconds of cold start and the compiler's memory in the RSS, which would
    measure the checkout rather than the agent. A packaged zip ships its byte code (``zip`` section)."""
    tree = launcher().parent.parent / "fgext"
    if tree.is_dir():
        subprocess.run([python, "-m", "compileall", "-q", "-j", "0", str(tree)], check=True, timeout=300,
                       stdout=subprocess.DEVNULL)


def default_pythons() -> List[str]:
    """This interpreter, and the Python 3.9 environment ``./dev test`` makes (.venv39), when it exists."""
    pythons = [sys.executable]
    py39 = Path(__file__).resolve().parent.parent / ".venv39" / "bin" / "python"
    if py39.exists() and sys.version_info[:2] != (3, 9):
        pythons.append(str(py39))
    return pythons


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Sections: " + ", ".join(SECTIONS))
    parser.add_argument("--smoke", action="store_true", help="tiny counts: seconds, to keep the harness working")
    parser.add_argument("--python", action="append", help="interpreter the agent runs on (repeatable; default: "
                                                          "this one and ./.venv39/bin/python if present)")
    parser.add_argument("--json", dest="json_out", type=Path, help="write the results as JSON here")
    parser.add_argument("--only", help="comma-separated sections to run")
    parser.add_argument("--runs", type=int, help="repetitions for medians (default 15, smoke 2)")
    parser.add_argument("--peer-invocations", type=int, default=500, metavar="N",
                        help="invocations per round of the peer section (default 500)")
    parser.add_argument("--peer-chunk", type=int, default=50, metavar="N",
                        help="invocations each target of the peer section takes in turn (default 50)")
    parser.add_argument("--memory-checkpoints", help="comma-separated invocation counts at which the memory "
                                                     "section reads RSS, at least two (default 1000,10000,20000)")
    parser.add_argument("--packaged", action="store_true",
                        help="run every agent from the default Python3.9 zip, built by the packager and unpacked "
                             "read-only, as the sandbox runs it (every --python must be a 3.9)")
    parser.add_argument("--agent-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every agent of the run (repeatable), e.g. FGEXT_OTLP_REPORT_LOG=0")
    args = parser.parse_args(argv)
    for option, value in (("--peer-invocations", args.peer_invocations), ("--peer-chunk", args.peer_chunk)):
        if value < 1:
            parser.error(f"{option} {value}: give a count of at least 1")
    for item in args.agent_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--agent-env {item}: give NAME=VALUE")
        AGENT_EXTRA_ENV[name] = value
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    pythons = [os.path.abspath(p) if os.sep in p else (shutil.which(p) or p)
               for p in (args.python or default_pythons())]
    for python in pythons:
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            parser.error(f"--python {python}: not an executable file")
    smoke = args.smoke
    checkpoints: Tuple[int, ...] = (20, 60) if smoke else (1000, 10_000, 20_000)
    if args.memory_checkpoints:
        try:
            checkpoints = tuple(int(c) for c in args.memory_checkpoints.split(","))
        except ValueError:
            checkpoints = ()
        if len(checkpoints) < 2 or any(b <= a for a, b in zip((0, *checkpoints), checkpoints)):
            parser.error(f"--memory-checkpoints {args.memory_checkpoints}: give at least two increasing counts")
    if args.packaged:
        wrong = [p for p in pythons if not python_version(p).startswith("3.9.")]
        if wrong:
            parser.error(f"--packaged builds the default Python3.9 zip: {', '.join(wrong)} is not a Python 3.9")
    with contextlib.ExitStack() as stack:
        if args.packaged:
            use_launcher(stack.enter_context(_unpacked_zip(pythons[0])) / "extension" / "extensionFgext.sh")
        try:
            return _run(args, argv, only, pythons, checkpoints)
        except PortTaken as error:
            print(f"bench: {error}", file=sys.stderr)
            return 2


@contextlib.contextmanager
def _unpacked_zip(python39: str) -> Iterator[Path]:
    """The default Python3.9 zip, unpacked read-only (as the sandbox's code directory is) for the run."""
    archive = build_zip(python39)
    with tempfile.TemporaryDirectory(prefix="fgext-bench-packaged-") as scratch:
        code = Path(scratch) / "code"
        code.mkdir()
        subprocess.run(["unzip", "-q", str(archive), "-d", str(code)], check=True)
        subprocess.run(["chmod", "-R", "a-w", str(code)], check=True)
        try:
            print(f"agents run from {archive} (unpacked read-only)", file=sys.stderr, flush=True)
            yield code
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(code)], check=True)


def _run(args: argparse.Namespace, argv: Optional[Sequence[str]], only: List[str], pythons: List[str],
         checkpoints: Tuple[int, ...]) -> int:
    smoke = args.smoke
    runs = args.runs or (2 if smoke else 15)
    result: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(), "smoke": smoke, "runs_per_median": runs, "runs": {}, "targets": [],
        "launcher": str(launcher()), "agent_env": dict(AGENT_EXTRA_ENV)}
    for python in pythons:
        version = python_version(python)
        result["machine"].setdefault("pythons", {})[version] = python
        print(f"python {version} ({python})", file=sys.stderr, flush=True)
        compile_agent(python)
        sections: Dict[str, Dict[str, float]] = {}
        if "coldstart" in only:
            sections["coldstart"] = bench_coldstart(python, runs)
        if "cpu" in only:
            sections["cpu"] = bench_cpu(python, 30 if smoke else 1500, 20, 4)
        if "memory" in only:
            sections["memory"] = bench_memory(python, checkpoints, 5)
        if "latency" in only:
            sections["latency"] = (bench_latency(python, 100, 8, 5) if smoke else
                                   bench_latency(python, 5000, 8, 100))
        if "zip" in only and version.startswith("3.9."):
            sections["zip"] = bench_zip(python, runs)
        if "peer" in only:
            sections["peer"] = bench_peer(python, 2 if smoke else max(3, min(runs, 9)),
                                          30 if smoke else args.peer_invocations,
                                          10 if smoke else args.peer_chunk)
        result["runs"][version] = sections
    if "zip" in only and not any("zip" in s for s in result["runs"].values()):
        print("zip: skipped, no Python 3.9 among --python (the default build is Python3.9)", file=sys.stderr)
    result["targets"] = evaluate(result["runs"])
    print(table(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
