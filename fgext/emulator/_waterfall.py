"""Traces as terminal waterfalls: the span tree with durations and bars, log lines under their span.

::

    trace 5b8aa5a2d2c872e8321cf37308d69df2  fgext-demo  12.3 ms
      fgext-demo  SERVER   |##############################|  12.3 ms
      ├─ init              |#########                     |   3.9 ms
      │    · [Function] loading
      └─ invoke            |         #####################|   8.1 ms  ERROR boom
           · [Function] handling request ...
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from fgext.emulator._otlp import LogData, MetricPoint, SpanData

__all__ = ["render_metrics", "render_trace", "render_traces"]

BAR_WIDTH = 30


def _bar(span: SpanData, start: int, total: int, width: int) -> str:
    if total <= 0:
        return "#" * width
    left = int((span.start_ns - start) / total * width)
    left = min(max(left, 0), width - 1)
    length = max(1, round(span.duration_ms * 1e6 / total * width))
    length = min(length, width - left)
    return " " * left + "#" * length + " " * (width - left - length)


def _tree(spans: Sequence[SpanData]) -> List[Tuple[SpanData, str, str]]:
    """Depth-first (span, prefix for the span's line, prefix for lines under it), children by start."""
    ids = {span.span_id for span in spans}
    children: Dict[str, List[SpanData]] = defaultdict(list)
    roots: List[SpanData] = []
    for span in spans:
        if span.parent_span_id and span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)  # a root, or a child whose parent never arrived
    ordered: List[Tuple[SpanData, str, str]] = []

    def walk(span: SpanData, prefix: str, last: bool, depth: int) -> None:
        if depth == 0:
            ordered.append((span, "", ""))
            below = ""
        else:
            ordered.append((span, prefix + ("└─ " if last else "├─ "), prefix + ("   " if last else "│  ")))
            below = prefix + ("   " if last else "│  ")
        kids = sorted(children.get(span.span_id, []), key=lambda s: (s.start_ns, s.name))
        for index, child in enumerate(kids):
            walk(child, below, index == len(kids) - 1, depth + 1)

    for root in sorted(roots, key=lambda s: (s.start_ns, s.name)):
        walk(root, "", True, 0)
    return ordered


def render_trace(spans: Sequence[SpanData], logs: Iterable[LogData] = (), width: int = BAR_WIDTH) -> str:
    """One trace (all ``spans`` share a trace ID) with the logs that name its spans."""
    if not spans:
        return ""
    start = min(span.start_ns for span in spans)
    end = max(span.end_ns for span in spans)
    total = end - start
    by_span: Dict[str, List[LogData]] = defaultdict(list)
    span_ids = {span.span_id for span in spans}
    unattached: List[LogData] = []
    for log in sorted(logs, key=lambda record: record.time_ns):
        if log.span_id in span_ids:
            by_span[log.span_id].append(log)
        else:
            unattached.append(log)
    rows = _tree(spans)
    roots = [span for span, prefix, _ in rows if not prefix]
    shown = _shown_durations(spans)
    label = roots[0].name if roots else spans[0].name
    service = next((s.resource.get("service.name") for s in spans if s.resource.get("service.name")), None)
    longest = max([total / 1e6, *(shown[root.span_id] for root in roots)])
    header = f"trace {spans[0].trace_id}  {label}  {longest:.1f} ms"
    if service:
        header += f"  (service {service})"
    names = [f"{prefix}{span.name}" + ("" if span.kind in ("INTERNAL", "UNSPECIFIED") else f"  {span.kind}")
             for span, prefix, _ in rows]
    name_width = max(len(name) for name in names)
    lines = [header]
    for (span, _, below), name in zip(rows, names):
        line = f"  {name.ljust(name_width)}  |{_bar(span, start, total, width)}| {shown[span.span_id]:7.1f} ms"
        if span.status == "ERROR":
            line += "  ERROR" + (f" {span.status_message}" if span.status_message else "")
        lines.append(line)
        for log in by_span.get(span.span_id, []):
            lines.append(f"  {below}   · {_log_text(log)}")
    for log in unattached:
        lines.append(f"    · (no span) {_log_text(log)}")
    return "\n".join(lines)


def _duration_ms(span: SpanData) -> float:
    """The platform's measured duration when the span carries it, else the span's extent.

    Platform events are stamped to the millisecond, so a sub-millisecond invoke spans 0 or 1 ms; the
    report's ``durationMs`` (the ``fgext.report.duration_ms`` attribute) is the figure the table shows.
    """
    reported = span.attributes.get("fgext.report.duration_ms")
    return float(reported) if isinstance(reported, (int, float)) else span.duration_ms


def _shown_durations(spans: Sequence[SpanData]) -> Dict[str, float]:
    """Each span's duration to show: its own (see _duration_ms), and never less than a child's."""
    shown = {span.span_id: _duration_ms(span) for span in spans}
    parents = {span.span_id: span.parent_span_id for span in spans}
    for span in spans:  # a parent spans its children: lift it to the longest reported child
        parent, value, hops = parents.get(span.span_id), shown[span.span_id], 0
        while parent in shown and hops < len(spans):
            shown[parent] = max(shown[parent], value)
            value, parent, hops = shown[parent], parents.get(parent), hops + 1
    return shown


def _log_text(log: LogData) -> str:
    text = log.body.replace("\n", " ").strip()
    if len(text) > 100:
        text = text[:97] + "..."
    # A function's logger writes its level into the line itself: show it once.
    if not log.severity or re.search(rf"\b{re.escape(log.severity)}\b", text):
        return text
    return f"{log.severity} {text}"


def render_traces(spans: Sequence[SpanData], logs: Sequence[LogData] = (),
                  order: Optional[Sequence[str]] = None) -> str:
    """Every trace in ``spans``, in ``order`` (trace IDs) or by start time, each with its logs."""
    by_trace: Dict[str, List[SpanData]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    logs_by_trace: Dict[str, List[LogData]] = defaultdict(list)
    for log in logs:
        logs_by_trace[log.trace_id].append(log)
    trace_ids = list(order) if order is not None else sorted(
        by_trace, key=lambda trace: min(span.start_ns for span in by_trace[trace]))
    return "\n\n".join(render_trace(by_trace[trace], logs_by_trace.get(trace, ()))
                       for trace in trace_ids if by_trace.get(trace))


def _value(point: MetricPoint) -> str:
    if isinstance(point.value, tuple):
        count, total = point.value
        text = f"count {count}"
        if total is not None:
            text += f", sum {total:.3f}" if isinstance(total, float) else f", sum {total}"
            if count:
                text += f", mean {total / count:.3f}"
        return text
    return f"{point.value:.3f}" if isinstance(point.value, float) else str(point.value)


def _in_mb(point: MetricPoint) -> MetricPoint:
    mb = 1024 * 1024
    if isinstance(point.value, tuple):
        count, total = point.value
        value: object = (count, None if total is None else total / mb)
    else:
        value = point.value / mb
    return dataclasses.replace(point, value=value, unit="MB")


def render_metrics(points: Sequence[MetricPoint]) -> str:
    """The last value of each (metric, attributes) pair, one line each, sorted by name."""
    latest: Dict[Tuple[str, str], MetricPoint] = {}
    for point in points:
        key = (point.name, repr(sorted(point.attributes.items())))
        latest[key] = point
    lines = []
    for (name, _), point in sorted(latest.items()):
        if point.unit == "By":  # memory: bytes are unreadable at this size
            point = _in_mb(point)
        unit = f" {point.unit}" if point.unit else ""
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(point.attributes.items()))
        lines.append(f"  {name} ({point.kind}{unit}): {_value(point)}" + (f"  {{{attrs}}}" if attrs else ""))
    return "\n".join(lines)
