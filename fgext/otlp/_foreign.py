"""The function's own telemetry (what the agent's OTLP receiver took) on its way out through the OTLP sink.

The receiver decodes a request and submits it to the pipeline as an :class:`~fgext._events.OtlpPayload`;
``OtlpPlugin.on_telemetry`` hands it here. Items (spans, log records, metrics) are kept with the
resource and scope they came with and leave at the sink's flush like fgext's own records: encoded into
requests of at most ``max_request_bytes`` (split by item), shipped through the same shipper (spool,
retries, freeze-aware timeouts). The function's resource is kept as it was sent; fgext's detected
attributes (``faas.*``, ``cloud.*``, ``service.name`` ...) are added only where the function's resource
lacks that key. No I/O, no asyncio: the plugin decides when this is taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from fgext._events import OtlpPayload
from fgext.otlp._requests import Encoded, _encode_split

__all__ = ["ForeignTelemetry", "merge_resource"]

# signal -> (request type, resource list field, scope list field, item list field)
_LAYOUT: Dict[str, Tuple[Any, str, str, str]] = {
    "traces": (ExportTraceServiceRequest, "resource_spans", "scope_spans", "spans"),
    "logs": (ExportLogsServiceRequest, "resource_logs", "scope_logs", "log_records"),
    "metrics": (ExportMetricsServiceRequest, "resource_metrics", "scope_metrics", "metrics"),
}
# Room for a resource and scope envelope when items are grouped by their size.
_ENVELOPE_ROOM = 4096


def merge_resource(function_resource: Resource, detected: Resource) -> Resource:
    """The function's resource, with each of fgext's attributes added only where its key is missing."""
    merged = Resource()
    merged.CopyFrom(function_resource)
    present = {attribute.key for attribute in function_resource.attributes}
    for attribute in detected.attributes:
        if attribute.key not in present:
            merged.attributes.append(attribute)
    return merged


@dataclass
class _Item:
    """One span, log record or metric, with the envelope it came in (shared by its siblings)."""

    resource: Any  # the Resource* container (its items are not read: only resource and schema_url)
    scope: Any  # the Scope* container, likewise
    item: Any
    size: int


@dataclass
class _Signal:
    items: List[_Item] = field(default_factory=list)
    size: int = 0


class ForeignTelemetry:
    """Pending items of the function's own export requests, per signal, until the sink takes them."""

    def __init__(self) -> None:
        self._signals: Dict[str, _Signal] = {signal: _Signal() for signal in _LAYOUT}
        self.received_items: Dict[str, int] = {signal: 0 for signal in _LAYOUT}

    @property
    def pending_bytes(self) -> int:
        return sum(pending.size for pending in self._signals.values())

    def pending_items(self, signal: str) -> int:
        return len(self._signals[signal].items)

    def add(self, payload: OtlpPayload) -> int:
        """Keep the payload's items; the number kept (an unknown signal keeps none)."""
        layout = _LAYOUT.get(payload.signal)
        if layout is None:
            return 0
        _, resources_field, scopes_field, items_field = layout
        pending = self._signals[payload.signal]
        kept = 0
        for resource in getattr(payload.request, resources_field):
            for scope in getattr(resource, scopes_field):
                for item in getattr(scope, items_field):
                    size = item.ByteSize()
                    pending.items.append(_Item(resource, scope, item, size))
                    pending.size += size
                    kept += 1
        self.received_items[payload.signal] += kept
        return kept

    def drop(self, signal: str) -> int:
        """Let go of a signal's pending items without encoding them (its export is disabled)."""
        pending = self._signals[signal]
        count = len(pending.items)
        self._signals[signal] = _Signal()
        return count

    def encode(self, signal: str, detected: Resource, max_bytes: int) -> Encoded:
        """Take a signal's pending items as serialized requests of at most ``max_bytes`` each."""
        request_type, resources_field, scopes_field, items_field = _LAYOUT[signal]
        items = self._signals[signal].items
        self._signals[signal] = _Signal()  # taken: the encoded bytes are what the shipper holds now
        merged: Dict[int, Resource] = {}

        def build(first: int, last: int) -> bytes:
            request = request_type()
            resource_out: Any = None
            scope_out: Any = None
            last_resource: Any = None
            last_scope: Any = None
            for entry in items[first:last]:
                if entry.resource is not last_resource:
                    last_resource, last_scope = entry.resource, None
                    resource_out = getattr(request, resources_field).add()
                    key = id(entry.resource)
                    if key not in merged:
                        merged[key] = merge_resource(entry.resource.resource, detected)
                    resource_out.resource.CopyFrom(merged[key])
                    resource_out.schema_url = entry.resource.schema_url
                if entry.scope is not last_scope:
                    last_scope = entry.scope
                    scope_out = getattr(resource_out, scopes_field).add()
                    scope_out.scope.CopyFrom(entry.scope.scope)
                    scope_out.schema_url = entry.scope.schema_url
                getattr(scope_out, items_field).add().CopyFrom(entry.item)
            data: bytes = request.SerializeToString()
            return data

        out = Encoded()
        budget = max(1, max_bytes - _ENVELOPE_ROOM)
        first = 0
        total = 0
        for index, entry in enumerate(items):
            if index > first and total + entry.size > budget:
                _encode_split(first, index, build, max_bytes, out)
                first, total = index, 0
            total += entry.size
        if items:
            _encode_split(first, len(items), build, max_bytes, out)
        return out
