"""CPU per bounded hook call: ``asyncio.wait_for`` against the timeout scope fgext uses (fgext._hooks.within).

Every batch a plugin takes, and every flush, is one hook call bounded by the hook timeout or a deadline.
Before Python 3.12 ``wait_for`` wraps the call in a task of its own; a timeout scope (``asyncio.timeout`` on
3.11+, aio-libs' ``async_timeout`` before) runs it in the caller's task. This measures both around a hook
that returns at once, on the interpreter that runs it, alternating for ``--rounds``:

    .venv39/bin/python bench/hook_call.py --calls 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fgext._hooks import within


async def _hook() -> int:
    return 1


async def _wait_for(call: Awaitable[Any], limit: float) -> Any:
    return await asyncio.wait_for(call, timeout=limit)


async def _per_call(bound: Callable[[Awaitable[Any], float], Awaitable[Any]], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        await bound(_hook(), 30.0)
    return (time.process_time() - started) / calls * 1e6


async def measure(calls: int, rounds: int) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {"wait_for": [], "within": [], "bare": []}
    for _ in range(rounds):
        out["wait_for"].append(await _per_call(_wait_for, calls))
        out["within"].append(await _per_call(within, calls))
        started = time.process_time()
        for _ in range(calls):
            await _hook()
        out["bare"].append((time.process_time() - started) / calls * 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.calls < 1 or args.rounds < 1:
        parser.error("--calls and --rounds must be at least 1")
    out = asyncio.run(measure(args.calls, args.rounds))
    print(f"python {sys.version.split()[0]}, {args.calls} calls x {args.rounds} rounds, CPU us per call")
    for name, values in out.items():
        print(f"  {name:9} median {statistics.median(values):7.2f}  range {min(values):.2f}-{max(values):.2f}")
    ratios = [a / b for a, b in zip(out["wait_for"], out["within"]) if b > 0]
    if ratios:
        print(f"  wait_for / within per round: {min(ratios):.2f}-{max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
