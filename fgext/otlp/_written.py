"""What stays of a written trace: its IDs and the phases already exported, for events that come late.

Beside the assembler (``_traces``) on the OTLP sink's path: when the assembler writes a request's spans it
remembers the trace here, and an event of that request arriving afterwards - a report in a later POST,
a phase the trace had not seen - joins the same trace instead of starting a new one, or is counted as
late when its span is already out. Bounded: the oldest of ``capacity`` traces is forgotten first. No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, FrozenSet, Iterable, Optional

__all__ = ["Written", "WrittenTraces"]

# A thousand remembered traces share a handful of phase combinations: one frozenset each, not a set per
# trace (216 bytes apiece, most of what a remembered trace cost).
_KINDS: Dict[FrozenSet[str], FrozenSet[str]] = {}


def _kinds(kinds: Iterable[str]) -> FrozenSet[str]:
    key = frozenset(kinds)
    return _KINDS.setdefault(key, key)


class Written:
    """One written trace: its IDs and the phases whose spans are out."""

    __slots__ = ("emitted", "root_span_id", "trace_id")

    def __init__(self, trace_id: bytes, root_span_id: bytes, emitted: Iterable[str]) -> None:
        self.trace_id = trace_id
        self.root_span_id = root_span_id
        self.emitted = _kinds(emitted)


class WrittenTraces:
    """The last ``capacity`` written traces by request ID, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._traces: OrderedDict[str, Written] = OrderedDict()

    def __len__(self) -> int:
        return len(self._traces)

    def get(self, request_id: str) -> Optional[Written]:
        return self._traces.get(request_id)

    def remember(self, request_id: str, trace_id: bytes, root_span_id: bytes, kinds: Iterable[str]) -> None:
        self._traces[request_id] = Written(trace_id, root_span_id, kinds)
        while len(self._traces) > self._capacity:
            self._traces.popitem(last=False)

    def add(self, request_id: str, kinds: Iterable[str]) -> None:
        """Late phases of a remembered trace are out too (a forgotten trace stays forgotten)."""
        written = self._traces.get(request_id)
        if written is not None:
            written.emitted = _kinds(written.emitted.union(kinds))
