"""Function URNs in every documented form."""

from __future__ import annotations

import pytest

from fgext._errors import UrnError
from fgext._urn import parse_urn


class TestParseUrn:
    def test_public_with_version(self) -> None:
        """The 8-field public form gives region, project, package, name and version."""
        urn = parse_urn("urn:fss:cn-north-4:0a1b2c:function:default:hello:v20230201-000350")
        assert (urn.form, urn.region, urn.project_id, urn.package, urn.function_name, urn.version) == (
            "public", "cn-north-4", "0a1b2c", "default", "hello", "v20230201-000350")
        assert urn.alias is None and urn.qualifier == "v20230201-000350"

    def test_public_with_alias(self) -> None:
        """A leading ``!`` marks an alias, not a version."""
        urn = parse_urn("urn:fss:cn-north-4:0a1b2c:function:default:hello:!prod")
        assert urn.alias == "prod" and urn.version is None and urn.qualifier == "!prod"

    def test_public_without_version(self) -> None:
        """The 7-field public form means latest."""
        urn = parse_urn("urn:fss:cn-north-4:0a1b2c:function:pkg:hello")
        assert urn.version is None and urn.qualifier == "latest" and urn.package == "pkg"

    def test_internal_form_from_spec(self) -> None:
        """The invoke example's internal URN splits its 0@package@name field."""
        urn = parse_urn("sn:cn:yrk:1111:function:0@test@hello:latest")
        assert (urn.form, urn.region, urn.project_id, urn.package, urn.function_name, urn.version) == (
            "internal", "yrk", "1111", "test", "hello", "latest")

    @pytest.mark.parametrize(("text", "project", "package", "name", "version"), [
        ("hello", None, "default", "hello", None),
        ("pkg:hello", None, "pkg", "hello", None),
        ("proj:pkg:hello", "proj", "pkg", "hello", None),
        ("proj:pkg:hello:latest", "proj", "pkg", "hello", "latest"),
    ])
    def test_short_forms(self, text: str, project: object, package: str, name: str, version: object) -> None:
        """The function model's 1-4 field short forms fill what they carry and default the rest."""
        urn = parse_urn(text)
        assert (urn.form, urn.project_id, urn.package, urn.function_name, urn.version) == (
            "short", project, package, name, version)

    @pytest.mark.parametrize("text", [
        "", "   ", "urn:fss:r:p:function:pkg", "urn:fss:r:p:notfunction:pkg:name", "urn:xyz:r:p:function:pkg:n",
        "sn:cn:yrk:1111:function:test@hello:latest", "a:b:c:d:e", "pkg::hello", "urn:fss:r:p:function:pkg:n:!",
        "urn:fss:r:p:function:pkg:n:",
    ])
    def test_invalid(self, text: str) -> None:
        """Anything else is refused with an UrnError (also a ValueError) that quotes the input."""
        with pytest.raises(UrnError):
            parse_urn(text)

    def test_not_a_string(self) -> None:
        """A non-string is refused, not crashed on."""
        with pytest.raises(ValueError, match="string"):
            parse_urn(42)  # type: ignore[arg-type]
