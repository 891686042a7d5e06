"""Your FunctionGraph handler's own spans, in the same trace as fgext's, under its ``invoke`` span.

::

    import fgext.function
    from opentelemetry import trace

    tracer = trace.get_tracer("orders")

    @fgext.function.instrument
    def handler(event, context):
        with tracer.start_as_current_span("load-order"):
            ...
        return {"statusCode": 200}

:func:`instrument` wraps ``handler(event, context)``. At the first invocation it sets up the
OpenTelemetry SDK once for the sandbox: a ``TracerProvider`` (made the global one unless your code
set one first) and how spans leave: to the agent on loopback, fgext's path (:mod:`fgext._local_export`:
the spans of an invocation in one OTLP/HTTP request on a kept-alive connection); to anywhere else, the
SDK's ``BatchSpanProcessor`` and OTLP/HTTP exporter (TLS, headers, retries). Each invocation then runs
in one span named after the handler, whose trace ID and parent (fgext's ``invoke`` span) are
derived from ``context.getRequestID()`` (:mod:`fgext._ids`), so the agent and the function agree
without talking. An exception is recorded on the span and re-raised. Before the wrapper returns it
force-flushes the spans (at most ``FGEXT_FUNCTION_FLUSH_MS``, default 1000 ms, and never beyond the
invocation's remaining time), so nothing waits across a freeze of the sandbox.

**Where spans go.** In this order:

1. ``FGEXT_AGENT_ENDPOINT`` (a base URL such as ``http://127.0.0.1:8085``) + ``/v1/traces``;
2. the fgext agent's receiver, ``http://127.0.0.1:<port>/v1/traces``, the port read from the file
   the agent writes (``/tmp/fgext-agent.json``, see :mod:`fgext._discovery_file`);
3. without an agent (no extension in the sandbox, or a local run): straight to the collector named
   by ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP/HTTP), which
   makes each invocation wait for that network round trip;
4. with none of these: nowhere. The handler runs unwrapped, and the agent's file is looked for again
   at the next invocation (one ``stat``), so an agent that starts late is still found.

The wrapped handler never fails because of telemetry: without the SDK, with an unreadable sampling
setting, or with an agent that does not answer, it runs and returns as it would unwrapped, and one
warning is logged on the ``fgext.function`` logger.

**Sampling.** ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` give the head decision from the
trace ID exactly as the agent makes it (:mod:`fgext._sampling`: SHA-256 of the trace ID, not the
SDK's ``TraceIdRatioBased`` rule, which is unfair to UUID trace IDs). The helper's provider samples
with fgext's own SDK sampler: that decision for a span without parent, the parent's otherwise. The
``invoke`` span carries the decision as its sampled flag, so the invocation's span and every span
your code starts inside follow it.

**HTTP functions.** A W3C ``traceparent`` header of the incoming request (``event["headers"]``)
becomes a *link* on the invocation's span, not its parent: the trace ID is fixed by the request ID,
which is what lets the agent, which never sees the function's event, put its ``init`` and
``invoke`` spans in the same trace; adopting the caller's trace ID would split the invocation
across two traces. The link leads from the invocation to the caller's trace.

Importing this module costs little: the OpenTelemetry SDK is imported at the first invocation.
"""

from __future__ import annotations

import functools
import os
import threading

from fgext import _discovery_file
from fgext._ids import invoke_span_id_for, trace_id_for
from fgext._sampling import HeadSampler

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
    from opentelemetry.trace import Link, Span, SpanKind, Tracer, TraceState
    from opentelemetry.util.types import Attributes

    Handler = TypeVar("Handler", bound=Callable[..., Any])

__all__ = ["instrument", "trace_context"]

_DEFAULT_FLUSH_MS = 1000
_EXPORT_TIMEOUT_S = 2.0


class _Telemetry:
    """The sandbox's one SDK set-up: made at the first invocation that finds somewhere to send spans."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.provider: Optional[TracerProvider] = None
        self.tracer: Optional[Tracer] = None
        self.sampler: Optional[HeadSampler] = None
        self.endpoint: Optional[str] = None  # where spans go, for the docs' promises and their tests
        self.exporter: Optional[str] = None  # "loopback" (fgext's path to the agent) or "otlp-http" (the SDK's)
        self.disabled: Optional[str] = None  # why telemetry is off for good in this sandbox
        self.warned: set[str] = set()


_STATE = _Telemetry()


def _warn(reason: str) -> None:
    if reason in _STATE.warned:
        return
    _STATE.warned.add(reason)
    import logging

    logging.getLogger("fgext.function").warning("fgext.function: %s", reason)


def _traces_url(environ: Mapping[str, str]) -> Optional[Tuple[str, bool]]:
    """Where spans go, and whether that is the fgext agent (else a collector named by OTEL_*)."""
    base = _discovery_file.agent_endpoint(environ)
    if base is not None:
        return f"{base}/v1/traces", True
    direct = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if direct:
        return direct, False
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return (f"{base.rstrip('/')}/v1/traces", False) if base else None


def _setup(context: Any) -> Optional[Tracer]:
    """The tracer of this sandbox, set up at the first call that finds a destination; None when off."""
    if _STATE.tracer is not None or _STATE.disabled is not None:
        return _STATE.tracer
    destination = _traces_url(os.environ)
    if destination is None:
        return None
    with _STATE.lock:
        return _setup_locked(context, *destination)


def _setup_locked(context: Any, url: str, to_agent: bool) -> Optional[Tracer]:
    # Another thread may have set up while this one waited for the lock.
    if _STATE.tracer is not None or _STATE.disabled is not None:
        return _STATE.tracer
    try:
        sampler = HeadSampler.from_environ()
    except Exception as exc:  # a ConfigError: tell once, run without telemetry
        _STATE.disabled = str(exc)
        _warn(f"{exc}; handlers run without their span")
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        processor = _processor(url, to_agent)
    except ImportError as exc:
        _STATE.disabled = f"the OpenTelemetry SDK cannot be imported ({exc})"
        _warn(f"{_STATE.disabled}; handlers run without their span")
        return None
    resource = Resource.create()
    name = _call(context, "getFunctionName")
    if name and str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": name}))
    if name and "faas.name" not in resource.attributes:
        resource = resource.merge(Resource({"faas.name": name}))
    provider = TracerProvider(resource=resource, sampler=_sdk_sampler(sampler))
    provider.add_span_processor(processor)
    if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":  # nobody set one yet
        trace.set_tracer_provider(provider)
    _STATE.provider, _STATE.sampler, _STATE.endpoint = provider, sampler, url
    _STATE.tracer = provider.get_tracer("fgext.function")
    return _STATE.tracer


def _processor(url: str, to_agent: bool) -> SpanProcessor:
    """The agent on loopback: fgext's one-POST-per-invocation path; anywhere else: the SDK's exporter."""
    from fgext import _local_export

    if to_agent and _local_export.is_loopback_http(url):
        _STATE.exporter = "loopback"
        # The flush deadline bounds each export; this timeout is for the one at the sandbox's exit.
        exporter = _local_export.LoopbackSpanExporter(url, timeout_s=_flush_budget_ms() / 1000)
        return _local_export.InvocationSpanProcessor(exporter)
    # A remote collector needs what the SDK's exporter does (TLS, OTEL_EXPORTER_OTLP_HEADERS, retries).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    _STATE.exporter = "otlp-http"
    return BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=_EXPORT_TIMEOUT_S))


def _sdk_sampler(head: HeadSampler) -> Sampler:
    """The SDK sampler of fgext's head decision: the rule of :mod:`fgext._sampling` at a root, else the parent's.

    Not the SDK's ``TraceIdRatioBased``: its rule keeps nothing or everything for UUID trace IDs
    (see :mod:`fgext._sampling`). Defined here, at set-up, so that importing this module stays light.
    """
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import get_current_span

    class FgextSampler(Sampler):
        """A span with a valid parent follows the parent's sampled flag; a root gets fgext's decision."""

        def should_sample(self, parent_context: Optional[Context], trace_id: int, name: str,
                          kind: Optional[SpanKind] = None, attributes: Attributes = None,
                          links: Optional[Sequence[Link]] = None,
                          trace_state: Optional[TraceState] = None) -> SamplingResult:
            parent = get_current_span(parent_context).get_span_context()
            if parent is not None and parent.is_valid:
                sampled, state = bool(parent.trace_flags.sampled), parent.trace_state
            else:
                sampled, state = head.sampled(trace_id), None
            return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP,
                                  attributes if sampled else None, state)

        def get_description(self) -> str:
            return f"FgextSampler{{{head.name},ratio={head.ratio}}}"

    return FgextSampler()


def _call(context: Any, getter: str) -> Optional[str]:
    try:
        value = getattr(context, getter)()
    except Exception:
        return None
    return None if value is None else str(value)


def _parent(request_id: str, sampled: bool) -> Context:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span_context = SpanContext(
        trace_id=int.from_bytes(trace_id_for(request_id), "big"),
        span_id=int.from_bytes(invoke_span_id_for(request_id), "big"),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


_SAMPLER_FROM_ENV: List[HeadSampler] = []


def trace_context(request_id: str) -> Context:
    """The OpenTelemetry ``Context`` whose current span is fgext's ``invoke`` span of this request.

    For code that sets up the SDK itself: ``tracer.start_as_current_span("work",
    context=fgext.function.trace_context(context.getRequestID()))``. The span is remote and
    non-recording; its sampled flag is the head decision of ``OTEL_TRACES_SAMPLER``, so a
    ``ParentBased`` sampler (the SDK's default) agrees with the agent. Raises
    :class:`~fgext._errors.ConfigError` when the sampling settings cannot be read.
    """
    if not _SAMPLER_FROM_ENV:
        _SAMPLER_FROM_ENV.append(HeadSampler.from_environ())
    return _parent(request_id, _SAMPLER_FROM_ENV[0].sampled(trace_id_for(request_id)))


def _headers(event: Any) -> Dict[str, str]:
    headers = event.get("headers") if isinstance(event, dict) else None
    if not isinstance(headers, dict):
        return {}
    return {str(key).lower(): value for key, value in headers.items() if isinstance(value, str)}


def _start(tracer: Tracer, name: str, event: Any, context: Any) -> Optional[Tuple[Span, object]]:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    request_id = _call(context, "getRequestID")
    if not request_id:
        _warn("the context has no request ID; the handler runs without its span")
        return None
    assert _STATE.sampler is not None
    parent = _parent(request_id, _STATE.sampler.sampled(trace_id_for(request_id)))
    links = []
    headers = _headers(event)
    if "traceparent" in headers:
        caller = trace.get_current_span(TraceContextTextMapPropagator().extract(headers)).get_span_context()
        if caller.is_valid:
            links.append(Link(caller, {"fgext.link": "traceparent"}))
    attributes = {"faas.invocation_id": request_id, "code.function": name}
    span = tracer.start_span(name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes, links=links)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return span, token


def _finish(span: Span, token: object, error: Optional[BaseException], context: Any) -> None:
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        if error is not None:
            span.record_exception(error, escaped=True)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()
        _flush(context)
    except Exception as exc:
        _warn(f"ending the invocation's span failed ({type(exc).__name__}: {exc})")


def _flush(context: Any) -> None:
    provider = _STATE.provider
    if provider is None:
        return
    budget_ms = _flush_budget_ms(context)
    if not provider.force_flush(timeout_millis=budget_ms):
        _warn(f"spans not flushed within {budget_ms} ms")


def _flush_budget_ms(context: Any = None) -> int:
    """``FGEXT_FUNCTION_FLUSH_MS`` (default 1000), and never beyond the invocation's remaining time."""
    budget_ms = _DEFAULT_FLUSH_MS
    raw = os.environ.get("FGEXT_FUNCTION_FLUSH_MS", "").strip()
    if raw:
        try:
            budget_ms = max(1, int(raw))
        except ValueError:
            _warn(f"FGEXT_FUNCTION_FLUSH_MS must be a whole number of milliseconds, got {raw!r}")
    remaining = None if context is None else _call(context, "getRemainingTimeInMilliSeconds")
    if remaining is not None and remaining.isdigit():
        budget_ms = max(1, min(budget_ms, int(remaining)))
    return budget_ms


def instrument(handler: Handler) -> Handler:
    """Wrap a FunctionGraph handler ``handler(event, context)`` so each invocation runs in its own span."""
    name = getattr(handler, "__qualname__", None) or getattr(handler, "__name__", None) or "handler"

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        started: Optional[Tuple[Span, object]] = None
        try:
            tracer = _setup(context)
            if tracer is not None:
                started = _start(tracer, name, event, context)
        except Exception as exc:
            _warn(f"starting the invocation's span failed ({type(exc).__name__}: {exc}); the handler runs without it")
        if started is None:
            return handler(event, context)
        span, token = started
        try:
            result = handler(event, context)
        except BaseException as error:
            _finish(span, token, error, context)
            raise
        _finish(span, token, None, context)
        return result

    return wrapper  # type: ignore[return-value]


# Kept for the tests of the promises above (where spans go): not public API.
def _destination() -> Optional[str]:
    return _STATE.endpoint


def _exporter() -> Optional[str]:
    return _STATE.exporter

