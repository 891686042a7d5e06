"""A small FunctionGraph handler to try the example plugins with: ``--function examples/handler.py:handler``.

It prints two marked log lines (the platform collects only lines carrying ``[Function]``), and raises
when the event asks it to, so a run shows both outcomes.
"""


def handler(event, context):
    request_id = context.getRequestID()
    print(f"[Function] handling {request_id}: contact ada@example.com, order ORD-12345678", flush=True)
    if isinstance(event, dict) and event.get("fail"):
        raise RuntimeError("the event asked to fail")
    print(f"[Function] done {request_id}", flush=True)
    return {"ok": True, "request_id": request_id}
