"""The function ``fgext emulate`` runs when no ``--function`` is given: a tiny FunctionGraph handler.

It logs with the ``[Function]`` marker (so its lines become telemetry), does a little work, and obeys
a few event keys so that one sample covers every outcome: ``{"fail": true}`` raises,
``{"sleep": 0.5}`` sleeps that many seconds (longer than the timeout gives a timeout status).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Dict

_WARM = {"invocations": 0}

# Printed while the module is imported: a log line of the init phase.
print("[Function] sample function loaded")


def handler(event: Any, context: Any) -> Dict[str, Any]:
    _WARM["invocations"] += 1
    event = event if isinstance(event, dict) else {}
    request_id = context.getRequestID()
    print(f"[Function] handling request {request_id} (invocation {_WARM['invocations']} of this instance)")
    context.getLogger().info("[Function] remaining time %d ms", context.getRemainingTimeInMilliSeconds())
    digest = hashlib.sha256(repr(event).encode()).hexdigest()[:12]
    if event.get("sleep"):
        time.sleep(float(event["sleep"]))
    if event.get("fail"):
        print("[Function] about to fail, as the event asked")
        raise RuntimeError(f"the sample function was asked to fail (event digest {digest})")
    return {"statusCode": 200, "body": f"hello from {context.getFunctionName()} {context.getVersion()}",
            "digest": digest, "warm": _WARM["invocations"] > 1}
