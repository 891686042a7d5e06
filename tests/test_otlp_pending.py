"""Tests for fgext.otlp._pending: what is finished waits, handed over whole, and leaves only once taken."""

from __future__ import annotations

from fgext.otlp._logs import LINE_OVERHEAD, LogLine
from fgext.otlp._pending import Finished
from fgext.otlp._requests import SPAN_ESTIMATE


def line(text: str) -> LogLine:
    return (1, 2, "function", text, None, 0)


class TestFinished:
    def test_hand_over_removes_nothing(self) -> None:
        """Handing over gives every span, line and link, and keeps them all until taken."""
        finished = Finished()
        finished.scope.spans.add().name = "a"
        finished.lines.append(line("x"))
        pending = finished.hand_over([None])
        assert (pending.span_count, [s.name for s in pending.spans], pending.lines, pending.links) == (
            1, ["a"], [line("x")], [None])
        assert len(finished.scope.spans) == 1 and finished.lines == [line("x")]

    def test_taken_lets_go_only_what_was_handed_over(self) -> None:
        """What was finished after the hand-over stays, and the size estimate counts only what stays."""
        finished = Finished()
        finished.scope.spans.add().name = "old"
        finished.lines.append(line("old"))
        pending = finished.hand_over([None])
        finished.scope.spans.add().name = "new"
        finished.lines.append(line("newer"))
        finished.bytes = 10**9  # what the assembler added since; re-estimated from what stays
        finished.taken(pending)
        assert [s.name for s in finished.scope.spans] == ["new"] and finished.lines == [line("newer")]
        assert finished.bytes == SPAN_ESTIMATE + len("newer") + LINE_OVERHEAD

    def test_taking_everything_leaves_the_handed_over_spans_intact(self) -> None:
        """When all was taken, the spans the encoder still refers to are not cleared under it."""
        finished = Finished()
        finished.scope.spans.add().name = "kept by the encoder"
        pending = finished.hand_over([])
        finished.taken(pending)
        assert len(finished.scope.spans) == 0 and finished.bytes == 0
        assert [s.name for s in pending.spans] == ["kept by the encoder"]
