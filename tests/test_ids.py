"""The deterministic IDs of a request's trace (fgext._ids)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid

from hypothesis import given
from hypothesis import strategies as st

from fgext import _ids
from fgext._ids import invoke_span_id_for, root_span_id_for, trace_id_for
from fgext.otlp import _ids as otlp_ids

REQUEST_ID = "3da1f2dc-3222-4fd9-9e8a-6d0c1d2e3f40"
request_ids = st.one_of(st.uuids().map(str), st.text(), st.sampled_from(["", str(uuid.UUID(int=0)), "not-a-uuid"]))


class TestTraceId:
    @given(request_ids)
    def test_agrees_with_the_otlp_mapping(self, request_id: str) -> None:
        """The function side's trace ID is the one the agent's OTLP mapping has always used."""
        assert trace_id_for(request_id) == otlp_ids.trace_id_for(request_id)

    @given(st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
           | st.text(alphabet="0123456789abcdefABCDEF-_+ {}g", min_size=32, max_size=40)
           | st.lists(st.sampled_from("0123456789abcdef _+g"), min_size=32, max_size=32).map(
               lambda c: "".join(c[:8]) + "-" + "".join(c[8:12]) + "-" + "".join(c[12:16]) + "-"
               + "".join(c[16:20]) + "-" + "".join(c[20:])))
    def test_the_canonical_fast_path_agrees_with_uuid(self, request_id: str) -> None:
        """Any ID, canonical or nearly (spaces, signs, underscores where uuid.UUID may accept them), gets
        uuid.UUID's bytes when it reads it as a non-nil UUID, else the SHA-256 prefix."""
        try:
            expected = uuid.UUID(request_id).bytes
        except ValueError:
            expected = bytes(16)
        if expected == bytes(16):
            expected = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).digest()[:16]
        assert trace_id_for(request_id) == expected

    def test_a_uuid_request_id_is_its_own_trace_id(self) -> None:
        """A UUID request ID gives its 16 bytes, so the trace is found by the request ID's hex."""
        assert trace_id_for(REQUEST_ID).hex() == REQUEST_ID.replace("-", "")

    def test_other_request_ids_hash(self) -> None:
        """A request ID that is not a UUID (or is the nil UUID) gives the first 16 bytes of its SHA-256."""
        for request_id in ("req-1", str(uuid.UUID(int=0))):
            assert trace_id_for(request_id) == hashlib.sha256(request_id.encode()).digest()[:16]


class TestSpanIds:
    def test_known_values(self) -> None:
        """The documented rule, pinned by values computed with sha256sum: it must never change."""
        assert root_span_id_for(REQUEST_ID).hex() == "a07e0d40d755253d"
        assert invoke_span_id_for(REQUEST_ID).hex() == "0fe34c1a73fbc621"

    @given(request_ids)
    def test_eight_bytes_non_zero_and_distinct(self, request_id: str) -> None:
        """Both span IDs are 8 non-zero bytes, and the root and invoke spans never share one."""
        root, invoke = root_span_id_for(request_id), invoke_span_id_for(request_id)
        assert len(root) == len(invoke) == 8
        assert bytes(8) not in (root, invoke)
        assert root != invoke

    @given(request_ids)
    def test_stable_across_calls(self, request_id: str) -> None:
        """The IDs are a pure function of the request ID."""
        assert root_span_id_for(request_id) == root_span_id_for(request_id)
        assert invoke_span_id_for(request_id) == invoke_span_id_for(request_id)

    def test_all_zero_hash_is_replaced_by_the_documented_retry(self) -> None:
        """An all-zero first hash falls back to SHA-256 of "fgext/retry/<label>" + request ID."""
        def digest(data: bytes) -> bytes:
            return bytes(8) if data.startswith(b"fgext/invoke/") else hashlib.sha256(data).digest()[:8]

        expected = hashlib.sha256(b"fgext/retry/invoke" + b"r1").digest()[:8]
        assert _ids._span_id("invoke", "r1", digest) == expected

    def test_all_zero_twice_gives_one(self) -> None:
        """Should the retry hash be zero too, the ID is 00..01."""
        assert _ids._span_id("root", "r1", lambda data: bytes(8)) == bytes(7) + b"\x01"


def test_import_is_cheap() -> None:
    """fgext._ids pulls in no third-party module (the function side imports it)."""
    code = ("import sys; import fgext._ids; heavy = ('opentelemetry', 'aiohttp', 'google', 'structlog'); "
            "print([m for m in sys.modules if m.split('.')[0] in heavy])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
