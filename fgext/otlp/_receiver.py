"""The agent's local OTLP/HTTP receiver: ``POST /v1/traces``, ``/v1/logs`` and ``/v1/metrics``.

The function (``fgext.function``, or any OTLP/HTTP exporter) posts here on 127.0.0.1; each request
that decodes is handed, as an ``Export*ServiceRequest``, to the ``on_export(signal, request)``
callback given at construction (``signal`` is ``"traces"``, ``"logs"`` or ``"metrics"``), which
feeds the delivery path. What the receiver answers, per the OTLP/HTTP specification:

======================================== ===== ==========================================================
request                                  code  body
======================================== ===== ==========================================================
decoded, every item accepted              200  ``Export*ServiceResponse`` in the request's encoding
decoded, some items rejected (bad IDs)    200  the same, with ``partial_success`` counting the rejected
``Content-Type`` not protobuf or JSON     415  the reason, as text
``Content-Encoding`` not gzip/identity    415  the reason, as text
body above ``max_body_bytes``             413  a ``google.rpc.Status`` with the reason
decompressed body above the bound         413  the same: a gzip bomb stops at the bound, read in chunks
not gzip, not protobuf, not OTLP JSON     400  the same
``on_export`` raised :class:`Refused`     503  the same, with ``Retry-After`` (the client retries)
``on_export`` raised anything else        500  the same (not retryable: the data would fail again)
======================================== ===== ==========================================================

Rejected items are removed before the callback sees the request: a span whose trace ID is not 16
non-zero bytes, whose span ID is not 8 non-zero bytes, or whose parent span ID is neither empty nor
8 bytes; a log record whose trace or span ID is present with the wrong length. Metrics carry no IDs
that could be invalid this way and are passed whole.

OTLP JSON differs from protobuf's canonical JSON in its IDs (hex, not base64): they are converted
before ``google.protobuf.json_format.Parse``, which handles the rest (enum names or numbers, 64-bit
integers as strings, lowerCamelCase names); unknown fields are ignored, as the specification asks.

aiohttp decompresses request bodies itself unless the runner is made with
``auto_decompress=False``; the receiver works either way (a gzip body is recognised by its magic
bytes, which neither protobuf nor JSON can start with) and bounds what it reads in both cases. Make
the runner with ``auto_decompress=False`` all the same: aiohttp's decompressor turns a body that is
not gzip at all into an empty one without an error (answered 200, nothing delivered), where the
receiver's own answers 400 with the reason.

An empty request (no resource at all, which OTLP allows) is answered 200 and not delivered.
"""

from __future__ import annotations

import base64
import inspect
import json
import zlib
from typing import Any, Awaitable, Callable, Dict, List, Tuple, Type, Union

from aiohttp import web
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_DECOMPRESSED_BYTES", "SIGNALS", "OnExport", "Receiver", "Refused"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_GZIP_MAGIC = b"\x1f\x8b"
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_INVALID_ID = base64.b64encode(b"\x00").decode()  # one byte: no ID field accepts it, so the item is rejected

# google.rpc.Code values for the Status bodies of errors
_INVALID_ARGUMENT, _RESOURCE_EXHAUSTED, _INTERNAL, _UNAVAILABLE = 3, 8, 13, 14

SIGNALS: Dict[str, Tuple[Type[Message], Type[Message]]] = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}

OnExport = Callable[[str, Message], Union[Awaitable[None], None]]


class Refused(Exception):
    """Raised by ``on_export`` when the data cannot be taken now: the client gets 503 and retries."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class _Rejected(Exception):
    def __init__(self, status: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP JSON's hex IDs as protobuf JSON's base64, in place, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode() if value else ""
                except ValueError:
                    node[key] = _INVALID_ID
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
    return node


def _valid_id(value: bytes, size: int) -> bool:
    return len(value) == size and value != bytes(size)


def _span_ok(span: Any) -> bool:
    return (_valid_id(span.trace_id, 16) and _valid_id(span.span_id, 8)
            and (not span.parent_span_id or len(span.parent_span_id) == 8))


def _record_ok(record: Any) -> bool:
    return (not record.trace_id or len(record.trace_id) == 16) and (not record.span_id or len(record.span_id) == 8)


def _remove(items: Any, ok: Callable[[Any], bool]) -> int:
    removed = 0
    for index in reversed(range(len(items))):
        if not ok(items[index]):
            del items[index]
            removed += 1
    return removed


def _drop_invalid(request: Message) -> Tuple[int, str]:
    """Remove the items with invalid IDs; the count and a reason for partial success."""
    rejected = 0
    if isinstance(request, ExportTraceServiceRequest):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                rejected += _remove(scope_spans.spans, _span_ok)
        return rejected, f"{rejected} span(s) with an invalid trace, span or parent span ID" if rejected else ""
    if isinstance(request, ExportLogsServiceRequest):
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                rejected += _remove(scope_logs.log_records, _record_ok)
        return rejected, f"{rejected} log record(s) with an invalid trace or span ID" if rejected else ""
    return 0, ""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


class Receiver:
    """aiohttp handlers for the three OTLP/HTTP paths; ``on_export(signal, request)`` gets what decodes."""

    def __init__(self, on_export: OnExport, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES) -> None:
        if max_body_bytes < 1 or max_decompressed_bytes < 1:
            raise ValueError("the receiver's size bounds must be positive")
        self._on_export = on_export
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = max_decompressed_bytes

    def routes(self) -> List[web.RouteDef]:
        """The routes to add to the agent's application: ``app.router.add_routes(receiver.routes())``."""
        return [web.post(f"/v1/{signal}", self._handler(signal)) for signal in SIGNALS]

    def _handler(self, signal: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.handle(signal, request)

        return handle

    async def handle(self, signal: str, request: web.Request) -> web.StreamResponse:
        """Answer one export request of ``signal``."""
        media = _media_type(request)
        if media not in (_PROTOBUF, _JSON):
            return web.Response(status=415, text=f"Content-Type must be {_PROTOBUF} or {_JSON}, got {media!r}")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            return web.Response(status=415, text=f"Content-Encoding must be gzip or identity, got {encoding!r}")
        request_type, response_type = SIGNALS[signal]
        try:
            body = await self._read(request, gzip=encoding == "gzip")
            message = self._decode(request_type, body, media)
            rejected, reason = _drop_invalid(message)
            if message.ByteSize():  # an empty request (allowed) has nothing to deliver
                await self._deliver(signal, message)
        except _Rejected as rejection:
            return self._status(rejection.status, rejection.code, str(rejection), media)
        except Refused as refusal:
            response = self._status(503, _UNAVAILABLE, f"not accepted now: {refusal}", media)
            response.headers["Retry-After"] = str(refusal.retry_after_s)
            return response
        answer = response_type()
        if rejected:
            partial = answer.partial_success
            if isinstance(answer, ExportTraceServiceResponse):
                partial.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=reason))
            elif isinstance(answer, ExportLogsServiceResponse):
                partial.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=reason))
        return self._message(200, answer, media)

    async def _read(self, request: web.Request, *, gzip: bool) -> bytes:
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise _Rejected(413, _RESOURCE_EXHAUSTED,
                            f"body of {declared} bytes exceeds the receiver's bound of {self.max_body_bytes} bytes")
        # With aiohttp's own decompression on, the stream is already decompressed: bound it by that size.
        limit = max(self.max_body_bytes, self.max_decompressed_bytes) if gzip else self.max_body_bytes
        chunks: List[bytes] = []
        size = 0
        try:
            while True:
                chunk = await request.content.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    what = "decompressed body" if gzip else "body"
                    raise _Rejected(413, _RESOURCE_EXHAUSTED, f"{what} exceeds the receiver's bound of {limit} bytes")
                chunks.append(chunk)
        except (_Rejected, ConnectionError):
            raise
        except Exception as exc:  # aiohttp's own decompression failed
            cause = exc.__cause__
            if cause is not None and type(cause).__name__ == "DecompressSizeError":  # aiohttp >= 3.13's own bound
                raise _Rejected(413, _RESOURCE_EXHAUSTED, "decompressed body exceeds aiohttp's bound") from None
            raise _Rejected(400, _INVALID_ARGUMENT, f"body could not be read as {'gzip' if gzip else 'sent'}: "
                                                   f"{type(exc).__name__}") from None
        body = b"".join(chunks)
        if gzip and body.startswith(_GZIP_MAGIC):
            if len(body) > self.max_body_bytes:
                raise _Rejected(413, _RESOURCE_EXHAUSTED,
                                f"body exceeds the receiver's bound of {self.max_body_bytes} bytes")
            body = self._gunzip(body)
        elif gzip and len(body) > self.max_decompressed_bytes:
            raise _Rejected(413, _RESOURCE_EXHAUSTED, "decompressed body exceeds the receiver's bound of "
                                                      f"{self.max_decompressed_bytes} bytes")
        return body

    def _gunzip(self, data: bytes) -> bytes:
        """Decompress in bounded steps: a gzip bomb stops at the bound instead of filling memory."""
        out: List[bytes] = []
        size = 0
        pending = data
        while pending:
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                while True:
                    piece = decompressor.decompress(pending, _CHUNK)
                    size += len(piece)
                    if size > self.max_decompressed_bytes:
                        raise _Rejected(413, _RESOURCE_EXHAUSTED, "decompressed body exceeds the receiver's bound of "
                                                                  f"{self.max_decompressed_bytes} bytes (gzip bomb?)")
                    out.append(piece)
                    pending = decompressor.unconsumed_tail
                    if decompressor.eof or not (pending or piece):
                        break
            except zlib.error as exc:
                raise _Rejected(400, _INVALID_ARGUMENT, f"body is not valid gzip: {exc}") from None
            if not decompressor.eof:
                raise _Rejected(400, _INVALID_ARGUMENT, "body is not valid gzip: it ends before the gzip stream does")
            pending = decompressor.unused_data  # a further gzip member, as RFC 1952 allows
        return b"".join(out)

    def _decode(self, request_type: Type[Message], body: bytes, media: str) -> Message:
        name = request_type.DESCRIPTOR.name
        message = request_type()
        if media == _PROTOBUF:
            try:
                message.ParseFromString(body)
            except DecodeError as exc:
                raise _Rejected(400, _INVALID_ARGUMENT, f"body is not a protobuf {name}: {exc}") from None
            if body:
                known = request_type()
                known.CopyFrom(message)
                known.DiscardUnknownFields()
                if known.ByteSize() == 0:
                    raise _Rejected(400, _INVALID_ARGUMENT, f"body is protobuf but has no field of {name}")
            return message
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _Rejected(400, _INVALID_ARGUMENT, f"body is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise _Rejected(400, _INVALID_ARGUMENT, f"body is not an OTLP JSON {name}: not an object")
        fields = {field.json_name for field in request_type.DESCRIPTOR.fields} | {
            field.name for field in request_type.DESCRIPTOR.fields}
        if document and not fields & set(document):
            raise _Rejected(400, _INVALID_ARGUMENT,
                            f"body is not an OTLP JSON {name}: none of {sorted(fields)} in it")
        try:
            json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise _Rejected(400, _INVALID_ARGUMENT, f"body is not an OTLP JSON {name}: {exc}") from None
        return message

    async def _deliver(self, signal: str, message: Message) -> None:
        try:
            outcome = self._on_export(signal, message)
            if inspect.isawaitable(outcome):
                await outcome
        except Refused:
            raise
        except Exception as exc:
            raise _Rejected(500, _INTERNAL, f"the agent failed to take the data: {type(exc).__name__}") from None

    def _status(self, status: int, code: int, reason: str, media: str) -> web.Response:
        # google.rpc.Status written by hand (code = field 1, message = field 2): its message class lives
        # in googleapis-common-protos, a package the agent's zip would carry for these two fields only.
        if media == _JSON:
            return web.Response(status=status, body=json.dumps({"code": code, "message": reason}).encode(),
                                content_type=_JSON)
        text = reason.encode("utf-8")
        return web.Response(status=status, body=b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text,
                            content_type=_PROTOBUF)

    @staticmethod
    def _message(status: int, message: Message, media: str) -> web.Response:
        if media == _JSON:
            # OTLP JSON: enum and field names as the proto says; IDs never occur in responses.
            text = json_format.MessageToJson(message, indent=None)
            return web.Response(status=status, body=text.encode(), content_type=_JSON)
        return web.Response(status=status, body=message.SerializeToString(), content_type=_PROTOBUF)
