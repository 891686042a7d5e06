"""Telemetry the way the platform sends it: one POST per invocation, platform events and log lines mixed."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, List

URN = "sn:cn:yrk:1111:function:0@test@hello:latest"
POD = "pool22-300-128-fusion-64774779-4g77v"
_METRICS = {"durationMs": 10.6, "billingDurationMS": 11, "memoryUsed": 23.4, "memorySize": 128, "podName": POD}
_BASE_MS = int(time.time() * 1000)


def stamp(ms: int) -> str:
    moment = datetime.fromtimestamp((_BASE_MS + ms) / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def request_id(index: int) -> str:
    return str(uuid.UUID(int=index + 1))


def invoke_body(index: int) -> Dict[str, Any]:
    return {"traceId": request_id(index), "invokedFunctionUrn": URN}


def invocation(index: int, lines: int) -> List[Dict[str, Any]]:
    """start, ``lines`` function/extension log lines (about 80-120 bytes, like a real handler's), done, report."""
    rid = request_id(index)
    begin = index * 100
    events: List[Dict[str, Any]] = [{"name": "platform.start", "startTime": stamp(begin), "traceId": rid}]
    for i in range(lines):
        source = "extension" if i % 5 == 4 else "function"
        marker = "[Extension]" if source == "extension" else "[Function]"
        level = ("INFO", "DEBUG", "WARN", "INFO", "ERROR")[i % 5]
        events.append({"name": source, "startTime": stamp(begin + 1 + i % 90),
                       "logs": f"{marker}{level} request {index} step {i}: handled order item {i * 7} "
                               f"for customer c-{index % 97} in {i % 13} ms"})
    events.append({"name": "platform.runtimeDone", "startTime": stamp(begin + 95), "traceId": rid,
                   "status": "success"})
    events.append({"name": "platform.report", "startTime": stamp(begin), "traceId": rid,
                   "endTime": stamp(begin + 96), "status": "success", "reportMetrics": _METRICS})
    return events
