"""Which phase was open at a log line's time: the correlation index of the OTLP sink.

A step of the path (listener handler -> parse -> pipeline -> chain -> lane -> ``OtlpPlugin.on_telemetry``
-> assembler -> pending -> flush: take -> encode -> shipper -> transport): the assembler (``_traces``)
indexes each phase when its start is known and asks this index (:meth:`CorrelationIndex.links`), when it
hands its pending log lines over at ``take``, which phase each line belongs to. The encoder never sees
the index: it receives lines already correlated.

Logs carry no request ID field: a line is correlated with a phase when exactly one request had a phase
open at the line's time. When several had (overlapping invocations), the line's text decides: if it
contains the request ID of exactly one of them (at most :data:`MAX_TEXT_CANDIDATES` requests are
checked, one substring search each), it goes to that one; otherwise it stays uncorrelated rather than
guessed. The text is searched only then, so the usual one-at-a-time sandbox pays nothing for it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Dict, Generic, List, Optional, Protocol, Sequence, Tuple, TypeVar

from fgext.otlp._logs import Link, LogLine

__all__ = ["MAX_TEXT_CANDIDATES", "CorrelationIndex"]

#: The most requests open at one moment whose IDs a line's text is searched for (bounds the cost).
MAX_TEXT_CANDIDATES = 16
_FOREVER = 2**64  # beyond any time OTLP carries


class Interval(Protocol):
    """What the index needs of a phase: its extent so far, its request and its kind."""

    @property
    def begin_ns(self) -> Optional[int]: ...

    @property
    def end_ns(self) -> Optional[int]: ...

    @property
    def kind(self) -> str: ...

    @property
    def request(self) -> object: ...

    @property
    def link(self) -> Link: ...


P = TypeVar("P", bound=Interval)


class CorrelationIndex(Generic[P]):
    """Phases with a known start, sorted by start, the most recent ``max_intervals`` of them."""

    def __init__(self, max_intervals: int = 64) -> None:
        # Bounded: every indexed phase keeps a few objects alive, and such long-lived survivors spread
        # over pymalloc's arenas stop them being returned (256 cost ~2 MB more than 64, bench/RESULTS.md).
        self._max = max_intervals
        self._starts: List[int] = []
        self._phases: List[P] = []
        # Phases indexed but not ended yet, and the longest ended one: together they let a lookup stop
        # scanning back as soon as no earlier phase can still contain the time asked about.
        self._running: Dict[int, P] = {}
        self._longest_ns = 0
        #: whether the last :meth:`correlate` found phases of more than one request (see :meth:`by_text`)
        self.ambiguous = False

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, phase: P, begin: int) -> None:
        """Index a phase whose start just became known."""
        self._running[id(phase)] = phase
        if not self._starts or begin >= self._starts[-1]:
            self._starts.append(begin)
            self._phases.append(phase)
        else:
            position = bisect_right(self._starts, begin)
            insort(self._starts, begin)
            self._phases.insert(position, phase)
        # Trimmed a quarter past the bound, not at twice it: a smaller saw-tooth leaves pymalloc's arenas
        # less fragmented, so RSS follows the bound.
        if len(self._starts) > self._max + self._max // 4:
            drop = len(self._starts) - self._max
            del self._starts[:drop]
            del self._phases[:drop]

    def move(self, phase: P, old_begin: int, begin: int) -> None:
        """A phase's start changed (e.g. the start event came after the done event)."""
        starts, phases = self._starts, self._phases
        for position in range(bisect_left(starts, old_begin), bisect_right(starts, old_begin)):
            if phases[position] is phase:
                del starts[position]
                del phases[position]
                position = bisect_right(starts, begin)
                starts.insert(position, begin)
                phases.insert(position, phase)
                return

    def extent_known(self, phase: P) -> None:
        """A phase's end became known (or was forced): it leaves the running set."""
        end = phase.end_ns
        begin = phase.begin_ns
        if end is not None and begin is not None:
            self._running.pop(id(phase), None)
            if end - begin > self._longest_ns:
                self._longest_ns = end - begin

    def is_running(self, phase: P) -> bool:
        return id(phase) in self._running

    def correlate(self, at_ns: int) -> Optional[P]:
        """The phase open at ``at_ns`` when exactly one request had one open then; else ``None``."""
        return self._correlate(at_ns)[0]

    def _correlate(self, at_ns: int) -> Tuple[Optional[P], int]:
        """:meth:`correlate`, and the last time up to which its answer holds as it is: before the next start
        and the first end of a phase open at ``at_ns`` (``at_ns`` itself when the answer is ambiguous)."""
        starts = self._starts
        phases = self._phases
        index = bisect_right(starts, at_ns)
        holds = starts[index] - 1 if index < len(starts) else _FOREVER
        # No ended phase that began before the horizon can reach ``at_ns``; running ones are checked apart.
        horizon = at_ns - self._longest_ns
        lowest = index - 64 if index > 64 else 0
        self.ambiguous = False
        found: Optional[P] = None
        scanned_running = 0
        position = index - 1
        while position >= lowest and starts[position] >= horizon:
            phase = phases[position]
            position -= 1
            end = phase.end_ns
            if end is None:
                scanned_running += 1
            elif end < at_ns:
                continue
            elif end < holds:
                holds = end
            if found is None:
                found = phase
            elif phase.request is not found.request:
                self.ambiguous = True
                return None, at_ns
            elif phase.kind == "invoke":
                found = phase
        if scanned_running < len(self._running):
            # A phase still running that began before the scanned window (rare: a long invocation).
            low_start = starts[position + 1] if position + 1 < index else at_ns + 1
            for phase in self._running.values():
                begin = phase.begin_ns
                if begin is None or begin > at_ns or begin >= low_start:
                    continue
                if found is None:
                    found = phase
                elif phase.request is not found.request:
                    self.ambiguous = True
                    return None, at_ns
                elif phase.kind == "invoke":
                    found = phase
        return found, holds

    def by_text(self, at_ns: int, text: str) -> Optional[P]:
        """Of the requests with a phase open at ``at_ns`` (the first :data:`MAX_TEXT_CANDIDATES`, latest
        start first), the one whose request ID ``text`` contains, if exactly one; its invoke phase if open."""
        candidates: Dict[int, List[P]] = {}
        seen = set()
        index = bisect_right(self._starts, at_ns)
        lowest = index - self._max - self._max // 4 if index > self._max else 0
        for phase in [*reversed(self._phases[lowest:index]), *self._running.values()]:
            if id(phase) in seen:
                continue
            seen.add(id(phase))
            begin, end = phase.begin_ns, phase.end_ns
            if begin is None or begin > at_ns or (end is not None and end < at_ns):
                continue
            key = id(phase.request)
            if key not in candidates:
                if len(candidates) >= MAX_TEXT_CANDIDATES:
                    continue
                candidates[key] = []
            candidates[key].append(phase)
        matched: Optional[List[P]] = None
        for phases in candidates.values():
            request_id = getattr(phases[0].request, "request_id", "")
            if request_id and request_id in text:
                if matched is not None:
                    return None  # two IDs in one line: still not a guess
                matched = phases
        if matched is None:
            return None
        return next((phase for phase in matched if phase.kind == "invoke"), matched[0])

    def links(self, lines: Sequence[LogLine]) -> List[Optional[Link]]:
        """The link of the phase each line belongs to (``None`` for a line that belongs to none surely)."""
        correlate = self._correlate
        links: List[Optional[Link]] = []
        append = links.append
        cached_at = -1
        holds = -2
        cached: Optional[Link] = None
        ambiguous = False
        for line in lines:
            at = line[0]
            if not cached_at <= at <= holds:  # lines while nothing starts or ends share a look-up
                phase, holds = correlate(at)
                cached = phase.link if phase is not None else None
                ambiguous = self.ambiguous
                cached_at = at
            if ambiguous:  # overlapping invocations: the line's own text may name its request
                named = self.by_text(at, line[3])
                append(named.link if named is not None else None)
            else:
                append(cached)
        return links
