"""fgext.otlp._env: the standard OTEL_* variable names, the same as the OpenTelemetry SDK's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fgext.otlp import _config, _env


def test_every_name_is_the_sdks() -> None:
    """Each constant is spelled like its name and is the same string in the SDK's (or the API's) list."""
    sdk_env = pytest.importorskip("opentelemetry.sdk.environment_variables")
    api_env = pytest.importorskip("opentelemetry.environment_variables")
    assert _env.__all__, "the list is empty"
    for name in _env.__all__:
        value = getattr(_env, name)
        assert value == name
        assert getattr(sdk_env, name, None) == value or getattr(api_env, name, None) == value, name


def test_the_config_reads_every_name_it_lists() -> None:
    """Every listed name is read by the OTLP configuration (no stale entries) and nothing else is listed."""
    source = Path(_config.__file__).read_text(encoding="utf-8")
    used = {name for name in _env.__all__ if f"env.{name}" in source}
    assert used == set(_env.__all__)
    assert sorted(name for name in vars(_env) if name.startswith("OTEL_")) == sorted(_env.__all__)


def test_the_agent_and_its_otlp_plugin_import_no_opentelemetry_sdk() -> None:
    """Importing the agent, its OTLP plugin and configuration loads neither the SDK nor the API (only
    opentelemetry.proto, in the shared namespace package)."""
    code = ("import sys, fgext._agent, fgext.otlp._plugin, fgext.otlp._config;"
            "from fgext.otlp._config import load_config; load_config({});"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.')"
            " and not m.startswith('opentelemetry.proto')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
