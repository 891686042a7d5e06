"""CPU of one `end` flush's export: a traces and a logs request through the real shipper, per checkout.

What the OTLP plugin's ``flush`` does once it has encoded an invocation: ``Shipper.submit`` both
requests and ``Shipper.flush`` until the collector (the bench's aiohttp sink, a subprocess) acknowledged
them; ``time.process_time`` of a child process per checkout, so two trees (this one and ``/work/main``,
say) are compared in one run, alternating, on one sink:

    .venv/bin/python bench/flush_path.py --python .venv39/bin/python --flushes 2000 --rounds 5 . ../main

``--count`` instead counts, per flush, what the export costs the event loop (untimed, one run per
checkout): loop turns (``_run_once``), tasks and futures made, callbacks and timers scheduled.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._agents import Sink

# Run in the child, with the checkout first on sys.path: its own shipper, transports and spool.
_CHILD = r"""
import asyncio, collections, json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
COUNTS = collections.Counter()
COUNTING = [False]
if len(sys.argv) > 4:  # --count: wrap the loop's scheduling methods (slower, so untimed)
    base = asyncio.base_events.BaseEventLoop
    for name in ("_run_once", "call_soon", "call_later", "call_at", "create_future", "create_task"):
        def wrapped(self, *args, _original=getattr(base, name), _name=name, **kwargs):
            if COUNTING[0]:
                COUNTS[_name] += 1
            return _original(self, *args, **kwargs)
        setattr(base, name, wrapped)
from fgext.otlp._config import load_config
from fgext.otlp._shipper import Shipper
from fgext.otlp._spool import Spool
from fgext.otlp._transports import build_transports

class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None

TRACES, LOGS = b"\x0a" + b"t" * 2500, b"\x0a" + b"l" * 3000  # about one invocation's two requests

async def main(port, flushes):
    transports, close = build_transports(load_config({
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_METRICS_EXPORTER": "none"}))
    with tempfile.TemporaryDirectory() as folder:
        shipper = Shipper(transports, Spool(Path(folder), 10**8, lambda *a: None, Quiet()), lambda *a: None, Quiet())
        shipper.start()
        for n in range(flushes + 50):  # the first 50 (connection, warm-up) are not counted
            if n == 50:
                started = time.process_time()
                COUNTING[0] = True
            shipper.submit("traces", TRACES, 3, send=False)
            shipper.submit("logs", LOGS, 8, send=False)
            if not await shipper.flush(10):
                raise SystemExit("a flush was not acknowledged")
        elapsed = time.process_time() - started
        COUNTING[0] = False
        await shipper.close()
        await close()
    if len(sys.argv) > 4:
        print(json.dumps({name: count / flushes for name, count in sorted(COUNTS.items())}))
    else:
        print(elapsed / flushes * 1e6)

asyncio.run(main(int(sys.argv[2]), int(sys.argv[3])))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="*", default=["."], help="source trees to compare (default: this one)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter the shippers run on")
    parser.add_argument("--flushes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", action="store_true",
                        help="count loop turns, tasks, futures, callbacks and timers per flush instead of timing")
    args = parser.parse_args()
    trees = [str(Path(checkout).resolve()) for checkout in args.checkouts]
    if args.count:
        return count(args.python, trees, args.flushes)
    samples: Dict[str, List[float]] = {tree: [] for tree in trees}
    sink = Sink(args.python)
    try:
        for _ in range(args.rounds):
            for tree in trees:
                done = subprocess.run([args.python, "-c", _CHILD, tree, str(sink.port), str(args.flushes)],
                                      capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{tree}: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                    return 1
                samples[tree].append(float(done.stdout))
    finally:
        sink.stop()
    print(f"{args.rounds} rounds of {args.flushes} flushes (traces + logs), CPU per flush:")
    for tree, values in samples.items():
        print(f"{tree}: median {statistics.median(values):.1f} us (min {min(values):.1f}, max {max(values):.1f}) "
              f"{' '.join(f'{v:.1f}' for v in values)}")
    return 0


def count(python: str, trees: List[str], flushes: int) -> int:
    """One untimed run per checkout, printing what a flush costs the event loop."""
    sink = Sink(python)
    try:
        for tree in trees:
            done = subprocess.run([python, "-c", _CHILD, tree, str(sink.port), str(flushes), "count"],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{tree}: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 1
            counts = json.loads(done.stdout)
            print(f"{tree}: per flush " + ", ".join(f"{name} {value:.2f}" for name, value in counts.items()))
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
