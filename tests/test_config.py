"""Agent settings from the environment: defaults, every validation, the config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fgext._config import AgentSettings, parse_api_addr
from fgext._errors import ConfigError
from fgext._flush import FlushPolicy

BASE = {"EXTENSION_API_ADDR": "127.0.0.1:9000"}


class TestApiAddr:
    @pytest.mark.parametrize(("value", "expected"), [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)), ("http://10.0.0.1:80", ("10.0.0.1", 80)),
        (" platform.local:8080/ ", ("platform.local", 8080)), ("[::1]:9000", ("::1", 9000)),
    ])
    def test_accepted_forms(self, value: str, expected: tuple) -> None:  # type: ignore[type-arg]
        """host:port, with or without http:// and a trailing slash, IPv6 in brackets."""
        assert parse_api_addr(value) == expected

    @pytest.mark.parametrize("value", [None, "", "host", "host:", ":80", "host:abc", "host:0", "http://h:1/x"])
    def test_refused_forms(self, value: object) -> None:
        """Anything else is a ConfigError (exit 2) that quotes the value."""
        with pytest.raises(ConfigError) as info:
            parse_api_addr(value)  # type: ignore[arg-type]
        assert info.value.exit_code == 2


class TestSettings:
    def test_defaults(self) -> None:
        """Without FGEXT_* variables the documented defaults apply."""
        settings = AgentSettings.from_environ(BASE)
        assert settings.name == "extensionFgext.sh" and settings.port is None
        assert settings.register_timeout == 10.0 and settings.shutdown_timeout == 2.0
        assert settings.telemetry_types == ("platform", "function", "extension")
        assert settings.max_body_bytes == 6 * 1024 * 1024 and settings.plugins == ("otlp",)
        assert settings.flush == FlushPolicy("end")

    def test_flush_policy_is_an_agent_setting(self) -> None:
        """FGEXT_FLUSH is read with the agent's settings, for every sink alike."""
        settings = AgentSettings.from_environ({**BASE, "FGEXT_FLUSH": "continuously,500"})
        assert settings.flush == FlushPolicy("continuously", 0.5)

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("FGEXT_PORT", "9000", "8081 to 8090"), ("FGEXT_REGISTER_TIMEOUT", "-1", "positive"),
        ("FGEXT_REGISTER_TIMEOUT", "soon", "number of seconds"), ("FGEXT_TELEMETRY_TYPES", "platform,logs", "logs"),
        ("FGEXT_MAX_BODY_BYTES", "12", "at least"), ("FGEXT_STRICT", "maybe", "FGEXT_STRICT"),
        ("FGEXT_LOG_LEVEL", "loud", "FGEXT_LOG_LEVEL"), ("FGEXT_SHUTDOWN_TIMEOUT", "nan", "positive"),
        ("FGEXT_FLUSH", "periodically", "FGEXT_FLUSH"),
    ])
    def test_invalid_values_name_the_variable(self, key: str, value: str, message: str) -> None:
        """Each invalid setting is refused with a message naming it."""
        with pytest.raises(ConfigError, match=message):
            AgentSettings.from_environ({**BASE, key: value})

    def test_types_none_disables_subscription(self) -> None:
        """FGEXT_TELEMETRY_TYPES=none means no telemetry subscription at all."""
        assert AgentSettings.from_environ({**BASE, "FGEXT_TELEMETRY_TYPES": "none"}).telemetry_types == ()

    def test_config_file(self, tmp_path: Path) -> None:
        """FGEXT_CONFIG names a JSON object file that is loaded whole."""
        path = tmp_path / "fgext.json"
        path.write_text(json.dumps({"plugins": {"jsonl": {"path": "/tmp/x"}}}))
        settings = AgentSettings.from_environ({**BASE, "FGEXT_CONFIG": str(path)})
        assert settings.config["plugins"]["jsonl"]["path"] == "/tmp/x"

    @pytest.mark.parametrize("content", ["[1]", "{bad", None])
    def test_bad_config_file(self, tmp_path: Path, content: object) -> None:
        """A missing, non-JSON or non-object config file is a ConfigError naming the file."""
        path = tmp_path / "fgext.json"
        if content is not None:
            path.write_text(str(content))
        with pytest.raises(ConfigError, match=r"fgext\.json"):
            AgentSettings.from_environ({**BASE, "FGEXT_CONFIG": str(path)})


class TestEnable:
    def test_config_file_enables_plugins(self, tmp_path: Path) -> None:
        """Without FGEXT_PLUGINS, the config file's "enable" list names the plugins."""
        path = tmp_path / "fgext.json"
        path.write_text(json.dumps({"enable": ["redact", "jsonl"]}))
        assert AgentSettings.from_environ({**BASE, "FGEXT_CONFIG": str(path)}).plugins == ("redact", "jsonl")

    def test_environment_wins(self, tmp_path: Path) -> None:
        """FGEXT_PLUGINS overrides the config file's list."""
        path = tmp_path / "fgext.json"
        path.write_text(json.dumps({"enable": ["redact"]}))
        env = {**BASE, "FGEXT_CONFIG": str(path), "FGEXT_PLUGINS": "jsonl"}
        assert AgentSettings.from_environ(env).plugins == ("jsonl",)

    def test_bad_enable(self, tmp_path: Path) -> None:
        """An "enable" that is not a list of names is a configuration error."""
        path = tmp_path / "fgext.json"
        path.write_text(json.dumps({"enable": "redact"}))
        with pytest.raises(ConfigError, match="enable"):
            AgentSettings.from_environ({**BASE, "FGEXT_CONFIG": str(path)})
