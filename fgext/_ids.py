"""The IDs of a request's trace, derived from its request ID so that any process can compute them.

The agent and the function never talk, yet the function's spans must land in the agent's trace under
its ``invoke`` span. Both sides therefore derive every ID from the one thing they share, the request
ID (``context.getRequestID()`` in the function, the invoke event's ``requestId`` in the agent):

- **trace ID** (16 bytes): the request ID's UUID bytes, so ``3da1f2dc-3222-...`` is trace
  ``3da1f2dc3222...``; a request ID that is not a UUID, or the nil UUID, gives the first 16 bytes of
  the SHA-256 of its UTF-8 encoding (``surrogatepass``, so no string is rejected).
- **root span ID** (8 bytes): the first 8 bytes of SHA-256 of ``"fgext/root/" + request_id``.
- **invoke span ID** (8 bytes): the first 8 bytes of SHA-256 of ``"fgext/invoke/" + request_id``.

An all-zero ID is invalid in OpenTelemetry. A hash result that is all zero (about one request in
2**64) is replaced by the first 8 bytes of SHA-256 of ``"fgext/retry/" + <the label> + request_id``,
and, should that be zero too, by ``00 00 00 00 00 00 00 01``. The rule is a pure function of the
request ID, so every implementation of it agrees.

Standard library only: the function side imports this module, and it must stay cheap to import.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Callable, Optional

__all__ = ["invoke_span_id_for", "root_span_id_for", "trace_id_for"]

_ZERO_SPAN = bytes(8)
_LAST_RESORT_SPAN = (1).to_bytes(8, "big")


def _encode(request_id: str) -> bytes:
    return request_id.encode("utf-8", "surrogatepass")


def trace_id_for(request_id: str) -> bytes:
    """The trace ID of a request: its UUID's bytes, else the first 16 bytes of its SHA-256."""
    value = b""
    if len(request_id) == 36 and request_id[8] == request_id[13] == request_id[18] == request_id[23] == "-":
        # The canonical form (every platform request ID): 32 hex digits are exactly what uuid.UUID reads,
        # at a fifth of its cost; anything else (spaces, signs, underscores) is left to uuid.UUID below.
        try:
            value = bytes.fromhex(request_id.replace("-", ""))
        except ValueError:
            value = b""
    if len(value) != 16:
        try:
            value = uuid.UUID(request_id).bytes
        except ValueError:
            value = b""
    if len(value) != 16 or value == bytes(16):
        value = hashlib.sha256(_encode(request_id)).digest()[:16]
    return value


def _sha256_8(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:8]


_sha256 = hashlib.sha256
# Encoded once: every request computes both of its span IDs.
_PREFIXES = {"root": b"fgext/root/", "invoke": b"fgext/invoke/"}


def _span_id(label: str, request_id: str, digest: Optional[Callable[[bytes], bytes]] = None) -> bytes:
    # ``digest`` is a parameter only so that a test can reach the all-zero branches.
    data = (_PREFIXES.get(label) or _encode(f"fgext/{label}/")) + request_id.encode("utf-8", "surrogatepass")
    if digest is None:
        value = _sha256(data).digest()[:8]
        if value != _ZERO_SPAN:
            return value
        digest = _sha256_8
    else:
        value = digest(data)
    if value == _ZERO_SPAN:
        value = digest(_encode(f"fgext/retry/{label}") + _encode(request_id))
    return value if value != _ZERO_SPAN else _LAST_RESORT_SPAN


def root_span_id_for(request_id: str) -> bytes:
    """The span ID of the request's root span: SHA-256 of ``"fgext/root/" + request_id``, first 8 bytes."""
    return _span_id("root", request_id)


def invoke_span_id_for(request_id: str) -> bytes:
    """The span ID of the request's ``invoke`` span: SHA-256 of ``"fgext/invoke/" + request_id``, first 8 bytes."""
    return _span_id("invoke", request_id)
