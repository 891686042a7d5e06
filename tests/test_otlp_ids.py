"""Tests for fgext.otlp._ids: trace IDs from request IDs, span IDs, attributes OTLP can carry."""

from __future__ import annotations

import hashlib
import uuid

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fgext.otlp._ids import _PARTS_MAX, keep_part, kv, put_attributes, span_id, span_id_for, trace_id_for
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



class TestAttributes:
    def test_ints_beyond_int64_become_doubles(self) -> None:
        """An int OTLP's int_value cannot hold (2**70, -2**64) is written as a double, not an exception."""
        span = Span()
        put_attributes(span.attributes, [("big", 2**70), ("low", -(2**64)), ("edge", 2**63 - 1), ("flag", True)])
        values = {kv.key: kv.value for kv in span.attributes}
        assert values["big"].double_value == float(2**70)
        assert values["low"].double_value == float(-(2**64))
        assert values["edge"].int_value == 2**63 - 1
        assert values["flag"].bool_value is True

    def test_values_of_subclasses_take_the_general_path_and_keep_their_kind(self) -> None:
        """Values whose class is not exactly str/float/bool/int (an IntEnum, a str subclass, a float subclass,
        None) are written by their kind, or as text, like exact ones; a bool is never an int."""
        import enum

        class Level(enum.IntEnum):
            HIGH = 3

        class Name(str):
            pass

        class Ratio(float):
            pass

        span = Span()
        put_attributes(span.attributes, [("level", Level.HIGH), ("name", Name("n")), ("ratio", Ratio(0.5)),
                                         ("none", None), ("no", False), ("surrogate", Name("a\ud800"))])  # type: ignore[list-item]
        values = {kv.key: kv.value for kv in span.attributes}
        assert values["level"].WhichOneof("value") == "int_value" and values["level"].int_value == 3
        assert values["name"].string_value == "n" and values["ratio"].double_value == 0.5
        assert values["none"].string_value == "None"
        assert values["no"].WhichOneof("value") == "bool_value" and values["no"].bool_value is False
        assert values["surrogate"].string_value == "a\\ud800"

    def test_text_utf8_cannot_encode_is_escaped(self) -> None:
        """A lone surrogate in an attribute value is written as its escape."""
        span = Span()
        put_attributes(span.attributes, [("text", "a\ud800b")])
        assert span.attributes[0].value.string_value == "a\\ud800b"
        assert kv("k", "x\udcff").value.string_value == "x\\udcff"


class TestSpanId:
    def test_random_and_never_zero(self) -> None:
        """Span IDs are 8 random bytes, never the invalid all-zero ID."""
        ids = {span_id() for _ in range(100)}
        assert len(ids) == 100 and all(len(i) == 8 and i != bytes(8) for i in ids)


class TestDerivedSpanIds:
    def test_root_and_invoke_ids_follow_the_documented_derivation(self) -> None:
        """The first 8 bytes of SHA-256("fgext/<role>/<request ID>"), the rule fgext.function shares."""
        digest = hashlib.sha256(f"fgext/invoke/{INVOKE_ID}".encode()).digest()
        assert span_id_for(INVOKE_ID, "invoke") == digest[:8]
        assert span_id_for(INVOKE_ID, "root") == hashlib.sha256(f"fgext/root/{INVOKE_ID}".encode()).digest()[:8]
        assert span_id_for(INVOKE_ID, "root") != span_id_for(INVOKE_ID, "invoke")
        assert span_id_for("req-\ud800", "root") != bytes(8)  # any text, lone surrogates included


class TestKeepPart:
    def test_a_cache_of_shared_parts_never_outgrows_its_bound(self) -> None:
        """A part kept is returned and found under its key; a cache at the bound starts over instead of growing."""
        cache: dict = {}  # type: ignore[type-arg]
        for n in range(3 * _PARTS_MAX):
            assert keep_part(cache, n, b"part %d" % n) == b"part %d" % n
            assert cache[n] == b"part %d" % n and len(cache) <= _PARTS_MAX

