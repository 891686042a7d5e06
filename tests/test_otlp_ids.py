"""Tests for fgext.otlp._ids: trace IDs from request IDs, span IDs, attributes OTLP can carry."""

from __future__ import annotations

import hashlib
import uuid

from fgext.otlp._ids import trace_id_for
from tests.otlp_helpers import (
    INVOKE_ID,
)


class TestTraceId:
    def test_uuid_request_id_gives_its_own_bytes(self) -> None:
        """A UUID request ID becomes the trace ID byte for byte (hex without dashes)."""
        assert trace_id_for(INVOKE_ID).hex() == INVOKE_ID.replace("-", "")

    def test_other_request_id_gives_sha256_prefix(self) -> None:
        """A request ID that is not a UUID gives the first 16 bytes of its SHA-256."""
        assert trace_id_for("req-42") == hashlib.sha256(b"req-42").digest()[:16]

    def test_nil_uuid_is_not_an_invalid_trace_id(self) -> None:
        """The all-zero UUID would be an invalid trace ID, so it is hashed instead."""
        nil = str(uuid.UUID(int=0))
        assert trace_id_for(nil) == hashlib.sha256(nil.encode()).digest()[:16]

