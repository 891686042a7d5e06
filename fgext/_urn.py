"""Function URNs in every form the FunctionGraph documents name.

Public form: ``urn:fss:<region>:<project>:function:<package>:<name>[:<version or !alias>]``.
Internal form (seen in invoke bodies): ``sn:cn:<region>:<tenant>:function:0@<package>@<name>:<version>``.
Short forms allowed where a URN is a parameter: ``name``, ``package:name``, ``project:package:name``,
``project:package:name:version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fgext._errors import UrnError

__all__ = ["FunctionUrn", "parse_urn"]

_DEFAULT_PACKAGE = "default"
_DEFAULT_VERSION = "latest"


@dataclass(frozen=True)
class FunctionUrn:
    """A parsed function URN; fields the form does not carry are ``None``."""

    raw: str
    form: str  # "public", "internal" or "short"
    function_name: str
    package: str = _DEFAULT_PACKAGE
    region: Optional[str] = None
    project_id: Optional[str] = None
    version: Optional[str] = None
    alias: Optional[str] = None

    @property
    def qualifier(self) -> str:
        """The version or alias the URN points at, ``latest`` when it names none."""
        if self.alias is not None:
            return "!" + self.alias
        return self.version or _DEFAULT_VERSION


def _qualifier(value: str, raw: str) -> tuple[Optional[str], Optional[str]]:
    """Split a version-or-alias field into (version, alias)."""
    if not value:
        raise UrnError(f"empty version in function URN {raw!r}")
    if value.startswith("!"):
        if len(value) == 1:
            raise UrnError(f"empty alias in function URN {raw!r}")
        return None, value[1:]
    return value, None


def _require(fields: list[str], raw: str) -> None:
    for field in fields:
        if not field:
            raise UrnError(f"empty field in function URN {raw!r}")


def parse_urn(value: str) -> FunctionUrn:
    """Parse any documented URN form; raise :class:`UrnError` with the reason otherwise."""
    if not isinstance(value, str):
        raise UrnError(f"function URN must be a string, not {type(value).__name__}")
    raw = value.strip()
    if not raw:
        raise UrnError("function URN is empty")
    parts = raw.split(":")

    if parts[0] == "urn":
        if len(parts) not in (7, 8) or parts[1] != "fss" or parts[4] != "function":
            raise UrnError(
                f"public function URN must be urn:fss:<region>:<project>:function:<package>:<name>"
                f"[:<version>], got {raw!r}"
            )
        _require(parts[2:7], raw)
        version, alias = _qualifier(parts[7], raw) if len(parts) == 8 else (None, None)
        return FunctionUrn(
            raw=raw, form="public", region=parts[2], project_id=parts[3], package=parts[5],
            function_name=parts[6], version=version, alias=alias,
        )

    if parts[0] == "sn":
        if len(parts) not in (6, 7) or parts[4] != "function":
            raise UrnError(
                f"internal function URN must be sn:cn:<region>:<tenant>:function:0@<package>@<name>"
                f"[:<version>], got {raw!r}"
            )
        tail = parts[5].split("@")
        if len(tail) != 3:
            raise UrnError(f"internal function URN needs 0@<package>@<name>, got {parts[5]!r} in {raw!r}")
        _require([parts[2], parts[3], tail[1], tail[2]], raw)
        version, alias = _qualifier(parts[6], raw) if len(parts) == 7 else (None, None)
        return FunctionUrn(
            raw=raw, form="internal", region=parts[2], project_id=parts[3], package=tail[1],
            function_name=tail[2], version=version, alias=alias,
        )

    if len(parts) > 4:
        raise UrnError(f"unrecognised function URN {raw!r}: expected urn:fss:..., sn:cn:... or a short form")
    _require(parts, raw)
    if len(parts) == 1:
        return FunctionUrn(raw=raw, form="short", function_name=parts[0])
    if len(parts) == 2:
        return FunctionUrn(raw=raw, form="short", package=parts[0], function_name=parts[1])
    version, alias = _qualifier(parts[3], raw) if len(parts) == 4 else (None, None)
    return FunctionUrn(
        raw=raw, form="short", project_id=parts[0], package=parts[1], function_name=parts[2],
        version=version, alias=alias,
    )
