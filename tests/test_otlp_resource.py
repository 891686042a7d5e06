"""Tests for fgext.otlp._resource: the resource from every source, and only values OTLP can carry."""

from __future__ import annotations

import pytest

from fgext._urn import parse_urn
from fgext.otlp._resource import ResourceBuilder, any_value
from tests.otlp_helpers import (
    POD,
)


class TestResource:
    def test_resource_from_every_source(self) -> None:
        """Registration, RUNTIME_* variables, the invoked URN and reports all fill resource attributes."""
        builder = ResourceBuilder(
            {"RUNTIME_MEMORY": "256", "RUNTIME_PROJECT_ID": "proj-env", "RUNTIME_PACKAGE": "default"},
            function_name="hello", function_version="v1",
        )
        builder.note_urn(parse_urn("urn:fss:cn-north-4:proj-urn:function:default:hello:latest"))
        builder.note_report(POD, 128)
        values = builder.attributes()
        assert values["service.name"] == "hello"
        assert values["faas.name"] == "hello" and values["faas.version"] == "v1"
        assert values["faas.max_memory"] == 256 * 1024 * 1024  # RUNTIME_MEMORY first, in bytes
        assert values["faas.instance"] == POD
        assert values["cloud.provider"] == "huawei_cloud"
        assert values["cloud.platform"] == "huawei_cloud.functiongraph"
        assert values["cloud.region"] == "cn-north-4"
        assert values["huawei_cloud.project.id"] == "proj-env"
        assert values["cloud.resource_id"] == "urn:fss:cn-north-4:proj-urn:function:default:hello:latest"

    def test_user_attributes_and_service_name_win(self) -> None:
        """OTEL_RESOURCE_ATTRIBUTES overrides detected values and OTEL_SERVICE_NAME beats both."""
        builder = ResourceBuilder({}, function_name="hello", service_name="svc",
                                  user_attributes={"cloud.region": "mine", "service.name": "ignored",
                                                   "team": "a"})
        builder.note_urn(parse_urn("sn:cn:cn-east-3:tenant:function:0@pkg@hello:latest"))
        values = builder.attributes()
        assert values["cloud.region"] == "mine" and values["team"] == "a"
        assert values["service.name"] == "svc"

    def test_message_is_rebuilt_when_an_attribute_changes(self) -> None:
        """The cached resource message reflects the region learnt from a later invoke."""
        builder = ResourceBuilder({}, function_name="hello")
        first = builder.message()
        assert builder.message() is first
        builder.note_urn(parse_urn("urn:fss:ap-southeast-1:p:function:default:hello"))
        assert "cloud.region" in {kv.key for kv in builder.message().attributes}


class TestResourceBounds:
    def test_report_memory_beyond_int64_bytes_never_breaks_the_message(self) -> None:
        """With RUNTIME_MEMORY unset, a memory size whose bytes overflow int64 is ignored: the resource (in
        every later export) still encodes."""
        builder = ResourceBuilder({}, function_name="hello")
        builder.note_report(POD, 10**15)
        builder.message().SerializeToString()
        assert "faas.max_memory" not in builder.attributes()
        builder.note_report(POD, 256)
        assert builder.attributes()["faas.max_memory"] == 256 * 1024 * 1024

    @pytest.mark.parametrize("memory", ["inf", "1e300", "-5", "nan", "lots"])
    def test_bad_runtime_memory_costs_only_its_attribute(self, memory: str) -> None:
        """A RUNTIME_MEMORY that is not a size OTLP can carry is left out; the builder still works."""
        builder = ResourceBuilder({"RUNTIME_MEMORY": memory}, function_name="hello")
        assert "faas.max_memory" not in builder.attributes()
        builder.message().SerializeToString()

    def test_any_value_of_a_huge_int_is_a_double(self) -> None:
        """A resource attribute int beyond int64 is carried as a double."""
        assert any_value(2**70).double_value == float(2**70)
        assert any_value(-(2**63)).int_value == -(2**63)
