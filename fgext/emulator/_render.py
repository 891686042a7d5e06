"""What a person reads: a live progress line while invocations run, and the summary table at the end."""

from __future__ import annotations

from typing import IO, Any, Callable, Dict, List, Optional, Sequence

from fgext.emulator._extensions import describe_exit
from fgext.emulator._report import EmulatorReport, InvocationResult
from fgext.emulator._telemetry import TelemetryStats

__all__ = ["Progress", "render_summary", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> List[str]:
    """Left-aligned columns, two spaces apart, with a rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    lines = [indent + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             indent + "  ".join("-" * w for w in widths)]
    lines += [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return lines


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _invocation_row(result: InvocationResult, extensions: Sequence[str]) -> List[str]:
    if result.init is not None:
        start = f"cold ({result.init.phase} {_ms(result.init.duration_ms)}"
        start += ")" if result.init.status == "success" else f", {result.init.status})"
    else:
        start = "warm"
    answers = {a.extension: a.summary() for a in result.answers}
    telemetry = result.telemetry
    row = [str(result.index + 1), result.request_id[:8], result.status, _ms(result.duration_ms),
           f"{result.billed_ms:.0f} ms", f"{result.memory_used_mb:.1f} MB", start]
    row += [answers.get(name, "-") for name in extensions]
    row.append(f"{telemetry.batches_delivered}/{telemetry.batches_retried}/{telemetry.batches_dropped}")
    return row


def render_summary(report: EmulatorReport) -> str:
    """The end-of-run report as text: extensions, one row per invocation, telemetry, problems."""
    lines = [f"function {report.function_name} ({report.function_version})  {report.urn}",
             f"platform API {report.api_address}  spec typos {'on' if report.spec_typos else 'off'}", ""]
    ext_rows = []
    for ext in report.extensions:
        if ext.crashed:
            state = f"crashed ({describe_exit(ext.exit_code)})"
        elif ext.exit_code is not None:
            state = f"stopped ({describe_exit(ext.exit_code)})"
        else:
            state = "running"
        ext_rows.append([ext.name, ext.address or "not registered",
                         ",".join(ext.subscribed) if ext.subscribed else "-", state])
    lines += table(["extension", "address", "telemetry", "state"], ext_rows)
    names = [ext.name for ext in report.extensions]
    if report.invocations:
        lines.append("")
        headers = ["#", "request", "status", "duration", "billed", "memory", "start",
                   *names, "batches ok/retried/dropped"]
        lines += table(headers, [_invocation_row(result, names) for result in report.invocations])
        errors = [r for r in report.invocations if r.error]
        for result in errors:
            error = result.error or {}
            lines.append(f"  #{result.index + 1}: {error.get('type', 'Error')}: {error.get('message', '')}")
    stats = report.telemetry
    lines += ["", f"telemetry: {stats.events_delivered} events delivered in {stats.batches_delivered} "
                  f"batches, "
                  f"{stats.batches_retried} batches retried, {stats.batches_dropped} batches "
                  f"({stats.events_dropped} events) dropped, {report.events_filtered} not subscribed"]
    if report.events_undelivered:
        lines.append(f"telemetry: nobody subscribed; {report.events_undelivered} events were never sent")
    if report.freezes:
        lines.append(f"freezes: {report.freezes}")
    for rejection in report.rejections:
        lines.append(f"refused: {rejection['path']} from {rejection['extension'] or '?'}: "
                     f"{rejection['errorType']}: {rejection['errorMessage']}")
    for ext in report.extensions:
        if ext.self_report is not None:
            lines += ["", *render_self_report(ext.name, ext.self_report)]
    if report.problems:
        lines += ["", "problems:"] + [f"  - {problem}" for problem in report.problems]
    else:
        lines += ["", "no problems"]
    return "\n".join(lines)


def _by_signal(counts: Any) -> str:
    """``traces 2 requests/6 items/1.2 kB, logs ...`` from {signal: {what: n}}; ``none`` when empty."""
    if not isinstance(counts, dict) or not counts:
        return "none"
    parts = []
    for signal, values in sorted(counts.items()):
        if isinstance(values, dict):
            parts.append(f"{signal} " + ", ".join(f"{n} {what}" for what, n in values.items()))
        else:
            parts.append(f"{signal} {values}")
    return "; ".join(parts)


def render_self_report(name: str, stopped: Dict[str, Any]) -> List[str]:
    """What an fgext agent said of itself at exit (its ``stopped`` line), for a plugin author without a
    collector: what it received, what its sinks sent, spooled and dropped, and plugin failures."""
    def n(key: str) -> int:
        value = stopped.get(key, 0)
        return value if isinstance(value, int) else 0

    lines = [f"agent {name} at exit: {n('events_received')} events received ({n('events_malformed')} malformed), "
             f"{n('invokes_received')} invokes, {n('bodies_rejected')} bodies rejected",
             f"  plugins: {n('plugin_failures')} hook failures, {n('plugins_disabled')} disabled; dropped: "
             f"{n('lane_events_dropped')} events for a full lane, {n('dropped_by_processors')} by processors"]
    otlp = stopped.get("otlp")
    if isinstance(otlp, dict):
        lines.append(f"  otlp sent: {_by_signal(otlp.get('sent'))}")
        lines.append(f"  otlp spooled: {_by_signal(otlp.get('spooled'))}")
        lines.append(f"  otlp dropped: {_by_signal(otlp.get('dropped'))}")
    return lines


class Progress:
    """A single self-overwriting status line, only when ``stream`` is a terminal."""

    def __init__(self, stream: IO[str], total: int,
                 telemetry: Optional[Callable[[], TelemetryStats]] = None) -> None:
        self.stream = stream
        self.total = total
        self.telemetry = telemetry
        self.done = 0
        self.failed = 0
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = False

    def update(self, result: Optional[InvocationResult] = None) -> None:
        if result is not None:
            self.done += 1
            self.failed += int(not result.ok)
        if not self.enabled:
            return
        line = f"\r\x1b[2Kinvocations {self.done}/{self.total}  not ok {self.failed}"
        if self.telemetry is not None:
            stats = self.telemetry()
            line += f"  telemetry events delivered {stats.events_delivered}, dropped {stats.events_dropped}"
        self.stream.write(line)
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
