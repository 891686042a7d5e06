"""The OTLP resource: who produced the telemetry, learnt piece by piece as the sandbox reveals it.

The function's name and version come with registration, the region and project only with the first
invoke's URN, the pod name only with the first report. The resource is therefore rebuilt when a
piece arrives (rarely: a handful of times per sandbox) and the encoded message is cached in between,
so the export path never rebuilds it. In the OTLP sink's path (listener handler -> parse -> pipeline
-> ``OtlpPlugin.on_telemetry`` -> assembler -> flush: take -> encode -> shipper -> transport) the
assembler feeds it what reports reveal and the encode step copies its message into every request; an
attribute value OTLP cannot carry is left out or made a double, never a reason for an encode to fail.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Mapping, Optional, Union

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from fgext._urn import FunctionUrn

__all__ = ["ResourceBuilder", "any_value"]

AttributeValue = Union[str, bool, int, float]

PROVIDER = "huawei_cloud"
PLATFORM = "huawei_cloud.functiongraph"
PROJECT_ID = "huawei_cloud.project.id"
PACKAGE = "huawei_cloud.functiongraph.package"
_MB = 1024 * 1024
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _fgext_version() -> str:
    from fgext import __version__

    return __version__


def any_value(value: AttributeValue) -> AnyValue:
    """One OTLP ``AnyValue`` for a scalar; bool is tested first because it is an int in Python.

    An int beyond int64 becomes a double, as in :func:`fgext.otlp._ids.put_attributes`: no value may
    make the resource (and with it every later export) unencodable."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return AnyValue(int_value=value)
        return AnyValue(double_value=float(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=safe_text(str(value)))


def safe_text(text: str) -> str:
    """``text`` fit for a protobuf string field. JSON may carry a lone surrogate (``"\\ud800"``), and an
    environment variable undecodable bytes (as surrogates): UTF-8 cannot encode either, and one such
    character must not cost an export, so it is written as its escape sequence instead."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class ResourceBuilder:
    """Collects resource attributes from every source; user-given ``OTEL_RESOURCE_ATTRIBUTES`` win."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        function_name: str = "",
        function_version: str = "",
        service_name: Optional[str] = None,
        user_attributes: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._service_name = service_name
        self._user: Dict[str, str] = dict(user_attributes or {})
        self._detected: Dict[str, AttributeValue] = {
            "cloud.provider": PROVIDER,
            "cloud.platform": PLATFORM,
            "telemetry.sdk.name": "fgext",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": _fgext_version(),
        }
        name = function_name or environ.get("RUNTIME_FUNC_NAME", "").strip()
        version = function_version or environ.get("RUNTIME_FUNC_VERSION", "").strip()
        if name:
            self._detected["faas.name"] = name
        if version:
            self._detected["faas.version"] = version
        project = environ.get("RUNTIME_PROJECT_ID", "").strip()
        if project:
            self._detected[PROJECT_ID] = project
        package = environ.get("RUNTIME_PACKAGE", "").strip()
        if package:
            self._detected[PACKAGE] = package
        memory = environ.get("RUNTIME_MEMORY", "").strip()
        if memory:
            # a malformed platform variable costs this attribute only
            with contextlib.suppress(ValueError, OverflowError):
                memory_bytes = int(float(memory) * _MB)
                if 0 < memory_bytes <= INT64_MAX:
                    self._detected["faas.max_memory"] = memory_bytes
        self._message: Optional[Resource] = None

    @property
    def function_name(self) -> str:
        """The function's name for span names: the user's ``faas.name`` if set, else the detected one."""
        return str(self._user.get("faas.name") or self._detected.get("faas.name") or "function")

    def _set(self, key: str, value: Optional[AttributeValue], *, overwrite: bool = True) -> None:
        if value is None or value == "":
            return
        if not overwrite and key in self._detected:
            return
        if self._detected.get(key) != value:
            self._detected[key] = value
            self._message = None

    def note_urn(self, urn: FunctionUrn) -> None:
        """Learn region, project, package and name from an invoked function's URN."""
        self._set("cloud.region", urn.region)
        self._set(PROJECT_ID, urn.project_id, overwrite=False)
        self._set(PACKAGE, urn.package, overwrite=False)
        self._set("faas.name", urn.function_name, overwrite=False)
        self._set("faas.version", urn.version, overwrite=False)
        if urn.form != "short":
            self._set("cloud.resource_id", urn.raw, overwrite=False)

    def note_report(self, pod_name: Optional[str], memory_size_mb: Optional[int]) -> None:
        """Learn the pod name (``faas.instance``) and memory size from a report's metrics."""
        self._set("faas.instance", pod_name)
        if memory_size_mb is not None and 0 < memory_size_mb * _MB <= INT64_MAX:
            self._set("faas.max_memory", memory_size_mb * _MB, overwrite=False)

    def attributes(self) -> Dict[str, Any]:
        """The merged attributes: detected, then the service name, then the user's on top."""
        merged: Dict[str, Any] = dict(self._detected)
        merged["service.name"] = self._service_name or self._user.get("service.name") or self.function_name
        merged.update(self._user)
        if self._service_name:
            merged["service.name"] = self._service_name  # OTEL_SERVICE_NAME beats the attribute (SDK rule)
        return merged

    def message(self) -> Resource:
        """The resource as an OTLP message, rebuilt only when an attribute changed."""
        if self._message is None:
            attributes = self.attributes()
            self._message = Resource(
                attributes=[KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]
            )
        return self._message
