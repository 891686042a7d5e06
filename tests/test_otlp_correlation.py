"""Tests for fgext.otlp._correlation: a log line belongs to the one phase open at its time."""

from __future__ import annotations

from typing import List, Optional, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from fgext.otlp._correlation import CorrelationIndex
from tests.otlp_helpers import (
    INIT_ID,
    INVOKE_ID,
    attrs,
    by_name,
    cold,
    done,
    encoded_logs,
    events,
    invocation,
    log,
    make_assembler,
    report,
    start,
    take_spans,
)


class TestCorrelation:
    def test_log_inside_one_invocation_is_correlated(self) -> None:
        """A line printed while exactly one invocation ran carries its trace ID, span ID and request ID."""
        assembler = make_assembler()
        assembler.consume(events(start(INVOKE_ID, 0), log(5, "[Function]hi"), done(INVOKE_ID, 10),
                              report(INVOKE_ID, 0, 11), log(50, "[Function]after")))
        spans = by_name(take_spans(assembler))
        inside, after = encoded_logs(assembler)
        assert inside.trace_id == spans["invoke"].trace_id
        assert inside.span_id == spans["invoke"].span_id
        assert attrs(inside)["faas.invocation_id"] == INVOKE_ID
        assert after.trace_id == b"" and "faas.invocation_id" not in attrs(after)

    def test_log_arriving_before_its_start_event_is_still_correlated(self) -> None:
        """Correlation happens at export, so a start event in a later POST still counts."""
        assembler = make_assembler()
        assembler.consume(events(log(5, "[Function]early")))
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10)))
        (record,) = encoded_logs(assembler)
        assert attrs(record)["faas.invocation_id"] == INVOKE_ID

    def test_start_arriving_after_done_still_covers_early_lines(self) -> None:
        """A line early in a phase whose start event came after its done event is still correlated."""
        assembler = make_assembler()
        assembler.consume(events(done(INVOKE_ID, 10)))
        assembler.consume(events(start(INVOKE_ID, 0), log(2, "[Function]early"), report(INVOKE_ID, 0, 11)))
        (record,) = encoded_logs(assembler)
        assert attrs(record)["faas.invocation_id"] == INVOKE_ID

    def test_init_log_is_correlated_with_the_init_span(self) -> None:
        """A line printed during init belongs to the init span of the request that caused it."""
        assembler = make_assembler()
        assembler.consume(events(*cold(INIT_ID, 0)[:1], log(3, "[Function]importing"), *cold(INIT_ID, 0)[1:],
                              *invocation(INIT_ID, 20, 30)))
        spans = by_name(take_spans(assembler))
        (record,) = encoded_logs(assembler)
        assert record.span_id == spans["init"].span_id

    def test_overlapping_invocations_leave_lines_uncorrelated(self) -> None:
        """With two invocations open at once, a line in the overlap is not guessed."""
        other = "5d2b0a7e-1111-4222-8333-944455556666"
        assembler = make_assembler()
        assembler.consume(events(start(INVOKE_ID, 0), log(5, "[Function]only first"), start(other, 10),
                              log(15, "[Function]both"), done(INVOKE_ID, 20), report(INVOKE_ID, 0, 21),
                              log(25, "[Function]only second"), done(other, 30), report(other, 10, 31)))
        first_only, both, second_only = encoded_logs(assembler)
        assert attrs(first_only)["faas.invocation_id"] == INVOKE_ID
        assert both.trace_id == b"" and "faas.invocation_id" not in attrs(both)
        assert attrs(second_only)["faas.invocation_id"] == other

    def test_a_line_naming_an_open_request_is_correlated_to_it_while_invocations_overlap(self) -> None:
        """In the overlap, a line whose text contains one open request's ID goes to that request's invoke span."""
        other = "5d2b0a7e-1111-4222-8333-944455556666"
        assembler = make_assembler()
        assembler.consume(events(start(INVOKE_ID, 0), start(other, 10),
                                 log(15, f"[Function]{other} INFO charging"),
                                 log(15, f"[Function]RequestId: {INVOKE_ID} done"), log(15, "[Function]both"),
                                 log(16, f"[Function]{INVOKE_ID} and {other}"),
                                 done(INVOKE_ID, 20), report(INVOKE_ID, 0, 21), done(other, 30), report(other, 10, 31)))
        spans = take_spans(assembler)
        names_other, names_first, unnamed, names_both = encoded_logs(assembler)
        assert attrs(names_other)["faas.invocation_id"] == other
        assert attrs(names_first)["faas.invocation_id"] == INVOKE_ID
        invokes = {s.trace_id: s.span_id for s in spans if s.name == "invoke"}
        assert names_other.span_id == invokes[names_other.trace_id]
        assert names_first.span_id == invokes[names_first.trace_id] and names_first.trace_id != names_other.trace_id
        assert unnamed.trace_id == b"" and "faas.invocation_id" not in attrs(unnamed)
        assert names_both.trace_id == b""  # two IDs in one line: not guessed either

    def test_a_line_naming_a_request_that_is_not_open_then_is_not_correlated_to_it(self) -> None:
        """The text only chooses among requests open at the line's time: naming a finished one does not count."""
        other = "5d2b0a7e-1111-4222-8333-944455556666"
        third = "6e3c1b8f-2222-4333-8444-a55566667777"
        assembler = make_assembler()
        assembler.consume(events(*invocation(third, 0, 5), start(INVOKE_ID, 10), start(other, 12),
                                 log(15, f"[Function]retrying {third}"),
                                 done(INVOKE_ID, 20), report(INVOKE_ID, 10, 21),
                                 done(other, 30), report(other, 12, 31)))
        (line,) = encoded_logs(assembler)
        assert line.trace_id == b""

    def test_written_phase_keeps_its_extent_not_its_report(self) -> None:
        """After its span is written a phase lets its report event go (memory: it stays indexed for a while),
        and a line that arrives later in the phase's interval is still correlated with it."""
        import gc
        import weakref

        assembler = make_assembler()
        batch = events(*invocation(INVOKE_ID, 0, 10))
        watched = weakref.ref(batch[-1])
        assembler.consume(batch)
        spans = by_name(take_spans(assembler))
        del batch
        gc.collect()
        assert watched() is None, "the written phase still holds its report event"
        assembler.consume(events(log(5, "[Function]late line")))
        (record,) = encoded_logs(assembler)
        assert record.span_id == spans["invoke"].span_id
        assert attrs(record)["faas.invocation_id"] == INVOKE_ID

    def test_correlation_index_is_bounded(self) -> None:
        """Only the last ~64 phases are indexed: a line for an invocation 200 invocations back is left
        uncorrelated rather than kept searchable forever."""
        assembler = make_assembler()
        for index in range(200):
            assembler.consume(events(*invocation(f"00000000-0000-4000-8000-{index:012d}", index * 20,
                                              index * 20 + 10)))
        assembler.consume(events(log(5, "[Function]very late"), log(199 * 20 + 5, "[Function]recent")))
        old, recent = encoded_logs(assembler)
        assert old.trace_id == b""
        assert attrs(recent)["faas.invocation_id"] == f"00000000-0000-4000-8000-{199:012d}"


class _Request:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


class _Phase:
    """What the index needs of a phase (the Interval protocol), with a fixed extent."""

    def __init__(self, request: _Request, kind: str, begin: int, end: Optional[int]) -> None:
        self.request, self.kind, self.begin_ns, self.end_ns = request, kind, begin, end
        self.link = (request.request_id.encode(), kind.encode(), request.request_id, 1)


_phases = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["init", "restore", "invoke"]),
                             st.integers(0, 100), st.none() | st.integers(0, 60)), max_size=10)
_lines = st.lists(st.tuples(st.integers(0, 170), st.sampled_from(["x", "r0", "r1 r2", "r3"])), max_size=30)


class TestLinksProperties:
    @settings(max_examples=400, deadline=None)
    @given(_phases, _lines, st.booleans())
    def test_links_equal_one_lookup_per_line(self, phases: List[Tuple[int, str, int, Optional[int]]],
                                             lines: List[Tuple[int, str]], ordered: bool) -> None:
        """Lines that share a look-up (nothing starts or ends between them) get the link a look-up of their own
        gives: the one phase open then, none, or for overlapping requests the one the text names."""
        index: CorrelationIndex[_Phase] = CorrelationIndex(max_intervals=64)
        requests = [_Request(f"r{n}") for n in range(4)]
        for request_index, kind, begin, length in phases:
            phase = _Phase(requests[request_index], kind, begin, None if length is None else begin + length)
            index.add(phase, begin)
            index.extent_known(phase)
        log_lines = [(at, 0, "function", text, None, 0) for at, text in (sorted(lines) if ordered else lines)]
        expected = []
        for line in log_lines:
            phase = index.correlate(line[0])
            if index.ambiguous:
                named = index.by_text(line[0], line[3])
                expected.append(named.link if named is not None else None)
            else:
                expected.append(phase.link if phase is not None else None)
        assert index.links(log_lines) == expected  # type: ignore[arg-type]
