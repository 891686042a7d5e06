"""Tests for fgext.otlp._metrics: the FaaS metrics from written phases, one snapshot per flush."""

from __future__ import annotations

from typing import Any, Dict

from fgext.otlp._traces import Assembler
from tests.otlp_helpers import (
    INIT_ID,
    INVOKE_ID,
    cold,
    events,
    invocation,
    make_assembler,
    ns,
)


class TestMetrics:
    def _values(self, assembler: Assembler) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        snapshot = assembler.metrics.snapshot(ns(1000))
        assembler.metrics.taken(ns(1000))
        for metric in snapshot:
            if metric.HasField("sum"):
                out[metric.name] = sum(p.as_int for p in metric.sum.data_points)
            else:
                point = metric.histogram.data_points[0]
                out[metric.name] = (point.count, round(point.sum, 6))
        return out

    def test_faas_metrics_from_reports(self) -> None:
        """Invocations, errors, timeouts, cold starts and the duration/memory histograms follow reports."""
        assembler = make_assembler()
        assembler.consume(events(*cold(INIT_ID, 0), *invocation(INIT_ID, 20, 30),
                              *invocation(INVOKE_ID, 100, 120, status="timeout")))
        values = self._values(assembler)
        assert values["faas.invocations"] == 2
        assert values["faas.errors"] == 1
        assert values["faas.timeouts"] == 1
        assert values["faas.coldstarts"] == 1
        assert values["faas.invoke_duration"] == (2, 0.032)  # 11 ms + 21 ms, from durationMs
        assert values["faas.init_duration"] == (1, 0.011)
        assert values["faas.mem_usage"] == (2, round(2 * 23.4 * 1024 * 1024, 6))
        assert values["fgext.faas.billed_duration"] == (2, 0.034)

    def test_snapshot_only_when_something_changed(self) -> None:
        """No new data, no metric export; a snapshot stays pending until it is marked taken."""
        assembler = make_assembler()
        assert assembler.metrics.snapshot(1) == []
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10)))
        assert assembler.metrics.snapshot(2) != []
        assert assembler.metrics.snapshot(3) != [], "a snapshot not yet encoded is not gone"
        assembler.metrics.taken(3)
        assert assembler.metrics.snapshot(4) == []

    def test_delta_temporality_resets(self) -> None:
        """With delta temporality each snapshot counts only what happened since the previous one."""
        assembler = make_assembler(temporality="delta")
        assembler.consume(events(*invocation(INVOKE_ID, 0, 10)))
        assert self._values(assembler)["faas.invocations"] == 1
        assembler.consume(events(*invocation("req-2", 20, 30)))
        assert self._values(assembler)["faas.invocations"] == 1

    def test_histogram_buckets_are_upper_inclusive(self) -> None:
        """A value equal to a bound falls in that bound's bucket, as OTLP defines it."""
        assembler = make_assembler()
        assembler.metrics.record("faas.invoke_duration", 0.01)
        metric = next(m for m in assembler.metrics.snapshot(5) if m.name == "faas.invoke_duration")
        assert list(metric.histogram.data_points[0].bucket_counts)[:3] == [0, 1, 0]

    def test_histogram_min_and_max_are_the_extremes_recorded(self) -> None:
        """A histogram's min and max are the smallest and largest values recorded, in any order."""
        assembler = make_assembler()
        for value in (0.5, 0.01, 2.0, 0.7):
            assembler.metrics.record("faas.invoke_duration", value)
        metric = next(m for m in assembler.metrics.snapshot(5) if m.name == "faas.invoke_duration")
        point = metric.histogram.data_points[0]
        assert (point.min, point.max) == (0.01, 2.0)
