"""The function ``fgext emulate`` runs when no ``--function`` is given: a tiny FunctionGraph handler.

It logs with the ``[Function]`` marker (so its lines become telemetry), does a little work, and obeys
a few event keys so that one sample covers every outcome: ``{"fail": true}`` raises,
``{"sleep": 0.5}`` sleeps that many seconds (longer than the timeout gives a timeout status).

It is wrapped by ``fgext.function.instrument`` and makes two spans of its own (``digest`` and
``respond``), so ``fgext emulate --demo`` draws them under fgext's ``invoke`` span. Without the
OpenTelemetry SDK (or without fgext in the function's path) the handler runs the same and exports
nothing of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any, Callable, ContextManager, Dict, TypeVar

Handler = TypeVar("Handler", bound=Callable[..., Any])

try:  # in the cloud, fgext.function comes with the function's code (docs/function.md)
    from fgext.function import instrument
except ImportError:  # pragma: no cover - the sample still runs unwrapped
    def instrument(handler: Handler) -> Handler:
        return handler

_WARM = {"invocations": 0}

# Printed while the module is imported: a log line of the init phase.
print("[Function] sample function loaded")


def _span(name: str) -> ContextManager[Any]:
    """A span of the function's own, or nothing when OpenTelemetry is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        return contextlib.nullcontext()
    return trace.get_tracer("fgext.sample").start_as_current_span(name)


@instrument
def handler(event: Any, context: Any) -> Dict[str, Any]:
    _WARM["invocations"] += 1
    event = event if isinstance(event, dict) else {}
    request_id = context.getRequestID()
    print(f"[Function] handling request {request_id} (invocation {_WARM['invocations']} of this instance)")
    context.getLogger().info("[Function] remaining time %d ms", context.getRemainingTimeInMilliSeconds())
    with _span("digest"):
        digest = hashlib.sha256(repr(event).encode()).hexdigest()[:12]
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    if event.get("fail"):
        print("[Function] about to fail, as the event asked")
        raise RuntimeError(f"the sample function was asked to fail (event digest {digest})")
    with _span("respond"):
        return {"statusCode": 200, "body": f"hello from {context.getFunctionName()} {context.getVersion()}",
                "digest": digest, "warm": _WARM["invocations"] > 1}
