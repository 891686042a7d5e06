"""fgext.otlp._written: the bounded memory of written traces that late events join."""

from __future__ import annotations

from fgext.otlp._written import WrittenTraces

TRACE, ROOT = b"t" * 16, b"r" * 8


class TestWrittenTraces:
    def test_the_oldest_trace_is_forgotten_past_the_capacity(self) -> None:
        """Memory stays bounded: the first remembered goes first, the rest keep their IDs."""
        written = WrittenTraces(3)
        for i in range(5):
            written.remember(f"req-{i}", TRACE, ROOT, ["invoke"])
        assert len(written) == 3
        assert written.get("req-0") is None and written.get("req-1") is None
        found = written.get("req-4")
        assert found is not None and (found.trace_id, found.root_span_id) == (TRACE, ROOT)

    def test_traces_share_one_phase_set_per_combination(self) -> None:
        """A thousand remembered traces cost one frozenset per phase combination, not a set each."""
        written = WrittenTraces(1024)
        for i in range(1000):
            written.remember(f"req-{i}", TRACE, ROOT, ["init", "invoke"] if i % 2 else ["invoke"])
        kinds = {id(w.emitted) for w in (written.get(f"req-{i}") for i in range(1000)) if w is not None}
        assert len(kinds) == 2

    def test_late_phases_are_added_and_a_forgotten_trace_stays_forgotten(self) -> None:
        """``add`` records a late phase's span as out; for a request no longer remembered it does nothing."""
        written = WrittenTraces(1)
        written.remember("req-0", TRACE, ROOT, ["invoke"])
        written.add("req-0", ["init"])
        found = written.get("req-0")
        assert found is not None and found.emitted == frozenset({"init", "invoke"})
        written.remember("req-1", TRACE, ROOT, ["invoke"])
        written.add("req-0", ["restore"])
        assert written.get("req-0") is None and len(written) == 1
