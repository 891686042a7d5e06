"""A FunctionGraph handler wrapped by fgext.function, run as its own process by tests/test_function.py.

Invocations come on stdin, one JSON object a line: ``{"request_id": ..., "event": ...}``. After each,
one JSON line on stdout says what the handler returned or raised; the script then waits for the next
line, so that the test can freeze it (SIGSTOP) between invocations as the platform does. ``FGEXT_TEST_BLOCK``
names modules made unimportable first (``opentelemetry.sdk`` to run without the SDK).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Dict

for blocked in filter(None, os.environ.get("FGEXT_TEST_BLOCK", "").split(",")):
    sys.modules[blocked] = None  # type: ignore[assignment]

import fgext.function  # noqa: E402

HEAVY_AT_IMPORT = sorted(m for m in sys.modules if m.split(".")[0] in ("opentelemetry", "google"))

from fgext.emulator._worker import Context  # noqa: E402  (the emulator's context: the platform's getters)

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

if os.environ.get("FGEXT_TEST_OWN_PROVIDER"):  # the user's code sets its own provider before any invocation
    from opentelemetry import trace as _trace
    from opentelemetry.sdk.trace import TracerProvider as _TracerProvider

    _trace.set_tracer_provider(_TracerProvider())


def user_work(event: Dict[str, Any]) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("user")
    for index in range(int(event.get("spans", 0))):
        with tracer.start_as_current_span(f"step-{index}"):
            pass


@fgext.function.instrument
def handler(event: Dict[str, Any], context: Any) -> Dict[str, Any]:
    if event.get("spans"):
        user_work(event)
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"ok": True, "request_id": context.getRequestID()}


def main() -> None:
    print(json.dumps({"heavy_at_import": HEAVY_AT_IMPORT}), flush=True)
    for line in sys.stdin:
        invocation = json.loads(line)
        context = Context({"request_id": invocation["request_id"], "timeout_s": 30, "function_name": "orders",
                           "function_version": "latest", "package": "default", "project_id": "p",
                           "memory_mb": 128, "cpu_millicores": 300}, time.monotonic())
        outcome: Dict[str, Any]
        try:
            outcome = {"returned": handler(invocation.get("event", {}), context)}
        except Exception as exc:
            outcome = {"raised": type(exc).__name__, "message": str(exc)}
        outcome["destination"] = fgext.function._destination()
        outcome["exporter"] = fgext.function._exporter()
        outcome["sdk_loaded"] = "opentelemetry.sdk.trace" in sys.modules
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
