"""Trace and span IDs, and attributes written straight into protobuf messages.

Used by every step of the OTLP sink's path (listener handler -> parse -> pipeline ->
``OtlpPlugin.on_telemetry`` -> assembler -> flush: take -> encode -> shipper -> transport) that names a
trace or writes an attribute; it calls nothing above it. ``put_attributes`` is where a value that OTLP
cannot carry (an int beyond int64, text UTF-8 cannot encode) is made representable, so that no
attribute can make an encode raise.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Tuple, TypeVar, Union

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from fgext._ids import invoke_span_id_for, root_span_id_for, trace_id_for
from fgext.otlp._resource import INT64_MAX, INT64_MIN, any_value, safe_text

__all__ = ["TRACE_FLAG_SAMPLED", "Attribute", "keep_part", "kv", "put_attributes", "span_id", "span_id_for",
           "trace_id_for"]

TRACE_FLAG_SAMPLED = 0x01  # and never 0x02 ("random"): derived IDs are not random
SECOND_NS = 1_000_000_000

Attribute = Tuple[str, Union[str, bool, int, float]]

_Key = TypeVar("_Key")
#: serialized parts kept per cache of ``keep_part``: a sandbox's records share a handful of combinations;
#: more means values that vary, which caching would only let grow
_PARTS_MAX = 64


def keep_part(cache: Dict[_Key, bytes], key: _Key, data: bytes) -> bytes:
    """Keep ``data``, the serialized part of a message that many records or spans share, as ``cache[key]``
    (callers look it up with ``cache.get(key)`` first); the cache is emptied first when it holds
    ``_PARTS_MAX``. Returns ``data``."""
    if len(cache) >= _PARTS_MAX:
        cache.clear()
    cache[key] = data
    return data


def span_id_for(request_id: str, role: str) -> bytes:
    """The span ID of a request's ``root`` or ``invoke`` span: derived from the request ID by
    ``fgext._ids``, the one owner of the rule that the function side (``fgext.function``) shares."""
    return root_span_id_for(request_id) if role == "root" else invoke_span_id_for(request_id)


def span_id() -> bytes:
    """A random, non-zero span ID."""
    while True:
        value = os.urandom(8)
        if value != bytes(8):
            return value


def kv(key: str, value: Union[str, bool, int, float]) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def put_attributes(container: Any, attributes: Iterable[Attribute]) -> None:
    """Write attributes straight into a repeated KeyValue field: no intermediate messages to copy.

    An int outside int64 (an extra report metric of 2**70) is written as a double: OTLP's int_value
    cannot hold it, and the value is worth more approximately than not at all.
    """
    add = container.add
    for key, value in attributes:
        entry = add()
        entry.key = key
        kind = value.__class__  # the exact class first: one comparison for the usual values
        if kind is str:
            try:
                entry.value.string_value = value
            except UnicodeEncodeError:  # rare: only ever pay for the check when it fails
                entry.value.string_value = safe_text(value)  # type: ignore[arg-type]
        elif kind is float:
            entry.value.double_value = value
        elif kind is bool:
            entry.value.bool_value = value
        elif kind is int and INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            entry.value.int_value = value
        else:
            _put_other(entry.value, value)


def _put_other(target: Any, value: Any) -> None:
    """A value of a subclass (an IntEnum, a str subclass), an int beyond int64, or anything else as text."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            target.int_value = value
        else:
            target.double_value = float(value)
    elif isinstance(value, float):
        target.double_value = value
    else:
        try:
            target.string_value = value
        except (UnicodeEncodeError, TypeError):
            target.string_value = safe_text(str(value))
