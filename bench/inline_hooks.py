"""CPU per invocation in the pipeline: a sink called in its lane's task against one declaring ``inline``.

One invocation is an invoke and one telemetry batch of 7 function lines, submitted as the listener does
(``Pipeline.submit_invoke``, ``Pipeline.submit_telemetry``), then two turns of the event loop (the
listener answering). The sink's hooks return at once, so what is measured is the pipeline's own cost:
the lane's queue and task wake-ups, or the inline call. Alternating for ``--rounds``, on the
interpreter that runs it:

    .venv39/bin/python bench/inline_hooks.py --invocations 20000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Sequence, Type

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fgext._events import AnyEvent, Invoke
from fgext._parse import parse_event
from fgext._pipeline import Pipeline
from fgext._plugin import Plugin, PluginContext, RegistrationInfo


class _Quiet:
    def error(self, event: str, **fields: Any) -> None:
        pass

    warning = info = error


class _Sink(Plugin):
    name: ClassVar[str] = "sink"

    def __init__(self) -> None:
        self.calls = 0

    async def on_invoke(self, invoke: Invoke) -> None:
        self.calls += 1

    async def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        self.calls += 1


class _InlineSink(_Sink):
    inline: ClassVar[bool] = True


def _context(plugin: Plugin) -> PluginContext:
    return PluginContext(name=plugin.name, registration=RegistrationInfo("extensionX.sh", "127.0.0.1:8081"))


async def _per_invocation(kind: Type[_Sink], invocations: int) -> float:
    sink = kind()
    pipeline = Pipeline([sink], logger=_Quiet())
    await pipeline.start(_context)
    batch = [parse_event({"name": "function", "startTime": "2023-02-01T00:03:50Z", "logs": f"[Function]{i}"})
             for i in range(7)]
    invoke = Invoke("4a1f2dc0-3222-475e-9205-e2e6c6318895", "", None, 0, {})
    started = time.process_time()
    for _ in range(invocations):
        await pipeline.submit_invoke(invoke)
        await pipeline.submit_telemetry(batch, 4000)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    spent = time.process_time() - started
    await pipeline.shutdown(2)
    assert sink.calls == 2 * invocations, "the sink missed calls"
    return spent / invocations * 1e6


async def measure(invocations: int, rounds: int) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {"lane": [], "inline": []}
    for _ in range(rounds):
        out["lane"].append(await _per_invocation(_Sink, invocations))
        out["inline"].append(await _per_invocation(_InlineSink, invocations))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--invocations", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.invocations < 1 or args.rounds < 1:
        parser.error("--invocations and --rounds must be at least 1")
    out = asyncio.run(measure(args.invocations, args.rounds))
    print(f"python {sys.version.split()[0]}, {args.invocations} invocations x {args.rounds} rounds, "
          "CPU us per invocation")
    for name, values in out.items():
        print(f"  {name:7} median {statistics.median(values):7.2f}  range {min(values):.2f}-{max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
