"""The public surface is exactly what ``fgext.__all__`` says, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import fgext
from tests.conftest import ROOT

PUBLIC = {
    "__version__", "AnyEvent", "ConfigError", "DropEvent", "Event", "EventTypes", "Extension", "ExtensionLog",
    "FgextError", "FunctionLog", "FunctionUrn", "InitReport", "InitRuntimeDone", "InitStart", "Invoke", "LogEvent",
    "MalformedEvent", "OtlpPayload", "PackageError", "PlatformError", "PlatformEvent", "Plugin", "PluginContext",
    "PluginError",
    "Processor", "RegistrationError", "RegistrationInfo", "Report", "ReportEvent", "ReportMetrics", "RestoreReport",
    "RestoreRuntimeDone", "RestoreStart", "RuntimeDone", "RuntimeDoneEvent", "Sink", "Start", "StartEvent",
    "UnknownEvent", "UrnError", "parse_batch", "parse_event", "parse_urn",
}


def test_all_is_the_public_surface() -> None:
    """``__all__`` lists exactly the documented names, and each one resolves."""
    assert set(fgext.__all__) == PUBLIC
    for name in fgext.__all__:
        assert getattr(fgext, name) is not None


def test_unknown_attribute() -> None:
    """A name outside the surface is an AttributeError, as for any module."""
    try:
        fgext.nope  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as error:
        assert "nope" in str(error)
    else:
        raise AssertionError("fgext.nope resolved")


def test_import_is_light() -> None:
    """The cold-start path (fgext, its bootstrap) loads nothing that registration does not need.

    aiohttp, structlog and OpenTelemetry come after registration; typing, dataclasses and http.client
    cost together about half of the 60 ms budget from exec to registration on the sandbox's CPU share,
    and json (with re and its compiler) is imported once the registration request is sent.
    """
    code = ("import sys, fgext, fgext._bootstrap; "
            "heavy = [m for m in ('aiohttp', 'structlog', 'opentelemetry', 'typing', 'dataclasses', 'http.client',"
            " 'email', 'json', 're') if m in sys.modules]; "
            "print(','.join(heavy))")
    # -S as the packaged launcher runs it: an editable install's import hook (site) would import typing itself.
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
