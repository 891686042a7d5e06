"""Agent settings from the environment: defaults, every validation, the config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict

import pytest

from fgext._config import AgentSettings, DeliverySettings, parse_api_addr
from fgext._errors import ConfigError
from fgext._flush import FlushPolicy
from tests.agentproc import AgentProcess
from tests.platform import RecordingPlatform

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
        assert settings.flush == FlushPolicy("end") and settings.lane_max_bytes == 16 << 20

    def test_flush_policy_is_an_agent_setting(self) -> None:
        """FGEXT_FLUSH is read with the agent's settings, for every sink alike."""
        settings = AgentSettings.from_environ({**BASE, "FGEXT_FLUSH": "continuously,500"})
        assert settings.flush == FlushPolicy("continuously", 0.5)

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("FGEXT_PORT", "9000", "8081 to 8090"), ("FGEXT_REGISTER_TIMEOUT", "-1", "positive"),
        ("FGEXT_REGISTER_TIMEOUT", "soon", "number of seconds"), ("FGEXT_TELEMETRY_TYPES", "platform,logs", "logs"),
        ("FGEXT_MAX_BODY_BYTES", "12", "at least"), ("FGEXT_STRICT", "maybe", "FGEXT_STRICT"),
        ("FGEXT_LOG_LEVEL", "loud", "FGEXT_LOG_LEVEL"), ("FGEXT_SHUTDOWN_TIMEOUT", "nan", "positive"),
        ("FGEXT_FLUSH", "periodically", "FGEXT_FLUSH"), ("FGEXT_LANE_MAX_BYTES", "16MB", "65536"),
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


class TestDeliverySettings:
    def test_defaults(self, tmp_path: Path) -> None:
        """Without variables the documented defaults apply; the spool is fgext-spool under $TMPDIR."""
        got = DeliverySettings.from_environ({"TMPDIR": str(tmp_path)})
        assert got.spool_dir == str(tmp_path / "fgext-spool") and got.spool_max_bytes == 32 << 20
        assert (got.spool_after_ms, got.queue_max_bytes, got.close_margin_ms) == (250.0, 8 << 20, 10_000.0)
        assert (got.max_request_bytes, got.max_pending_bytes, got.max_log_bytes) == (4 << 20, 4 << 20, 256 << 10)
        assert got.metrics_interval_ms == 60_000.0 and got.report_log is True

    def test_a_setting_the_agent_read_wins_over_the_variable(self) -> None:
        """A plugin setting already read (FGEXT_OTLP_<KEY> or the config file) is the value used."""
        got = DeliverySettings.from_environ({"FGEXT_OTLP_MAX_REQUEST_BYTES": "70000"},
                                            {"max_request_bytes": 1 << 20})
        assert got.max_request_bytes == 1 << 20

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("FGEXT_SPOOL_MAX_BYTES", "-3", "from 0 up"),
        ("FGEXT_OTLP_SPOOL_AFTER_MS", "nan", ">= 0"),
        ("FGEXT_OTLP_QUEUE_MAX_BYTES", "8MB", "from 1 up"),
        ("FGEXT_OTLP_CLOSE_MARGIN_MS", "0", "positive number of milliseconds"),
        ("FGEXT_OTLP_MAX_REQUEST_BYTES", "1000", "from 65536 up"),
        ("FGEXT_OTLP_MAX_PENDING_BYTES", "70000", r"from FGEXT_OTLP_MAX_REQUEST_BYTES \(4194304\) up"),
        ("FGEXT_OTLP_MAX_LOG_BYTES", "3000000", r"from 1024 to half of FGEXT_OTLP_MAX_REQUEST_BYTES \(2097152\)"),
        ("FGEXT_OTLP_REPORT_LOG", "maybe", "true/false"),
        ("FGEXT_OTLP_METRICS_INTERVAL_MS", "1m", "positive number of milliseconds"),
    ])
    def test_a_bad_value_names_the_variable_and_the_range(self, key: str, value: str, message: str) -> None:
        """Not a number, out of range or inconsistent with another: a ConfigError naming both."""
        with pytest.raises(ConfigError, match=key) as info:
            DeliverySettings.from_environ({key: value})
        assert info.match(message) and info.value.exit_code == 2

    def test_an_unusable_spool_directory_is_refused(self, tmp_path: Path) -> None:
        """FGEXT_SPOOL_DIR below a regular file cannot be made: refused, naming the variable."""
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError, match="FGEXT_SPOOL_DIR"):
            DeliverySettings.from_environ({"FGEXT_SPOOL_DIR": str(tmp_path / "file" / "spool")})

    def test_checked_with_the_agent_settings_only_when_otlp_is_enabled(self) -> None:
        """The agent checks them with its own settings when the OTLP plugin is enabled, not otherwise."""
        bad = {**BASE, "FGEXT_OTLP_MAX_REQUEST_BYTES": "1000"}
        with pytest.raises(ConfigError, match="FGEXT_OTLP_MAX_REQUEST_BYTES"):
            AgentSettings.from_environ(bad)
        assert AgentSettings.from_environ({**bad, "FGEXT_PLUGINS": "jsonl"}).plugins == ("jsonl",)

    def test_the_config_file_is_checked_unless_a_variable_overrides_it(self, tmp_path: Path) -> None:
        """plugins.otlp.<key> in the config file is checked too; FGEXT_OTLP_<KEY> wins over it."""
        path = tmp_path / "fgext.json"
        path.write_text(json.dumps({"plugins": {"otlp": {"max_log_bytes": 10}}}))
        with pytest.raises(ConfigError, match=r"FGEXT_OTLP_MAX_LOG_BYTES \(or plugins.otlp.max_log_bytes\)"):
            AgentSettings.from_environ({**BASE, "FGEXT_CONFIG": str(path)})
        AgentSettings.from_environ({**BASE, "FGEXT_CONFIG": str(path), "FGEXT_OTLP_MAX_LOG_BYTES": "4096"})


# One bad value per setting of the delivery path, as the real agent process meets it.
BAD_DELIVERY_SETTINGS = [
    ("FGEXT_FLUSH", "every,100", "continuously,<ms>"),
    ("FGEXT_LANE_MAX_BYTES", "1000", "whole number of bytes from 65536 up"),
    ("FGEXT_SPOOL_DIR", "{file}/spool", "cannot be used as a directory"),
    ("FGEXT_SPOOL_MAX_BYTES", "lots", "whole number of bytes from 0 up"),
    ("FGEXT_OTLP_SPOOL_AFTER_MS", "-1", "milliseconds >= 0"),
    ("FGEXT_OTLP_QUEUE_MAX_BYTES", "0", "whole number of bytes from 1 up"),
    ("FGEXT_OTLP_CLOSE_MARGIN_MS", "soon", "positive number of milliseconds"),
    ("FGEXT_OTLP_MAX_REQUEST_BYTES", "4MB", "whole number of bytes from 65536 up"),
    ("FGEXT_OTLP_MAX_PENDING_BYTES", "70000", "from FGEXT_OTLP_MAX_REQUEST_BYTES (4194304) up"),
    ("FGEXT_OTLP_REPORT_LOG", "perhaps", "true/false"),
    ("FGEXT_OTLP_METRICS_INTERVAL_MS", "0", "positive number of milliseconds"),
    ("FGEXT_OTLP_MAX_LOG_BYTES", "3000000", "to half of FGEXT_OTLP_MAX_REQUEST_BYTES (2097152)"),
]


@pytest.mark.agent
@pytest.mark.usefixtures("port_range_lock")
@pytest.mark.parametrize(("key", "value", "accepted"), BAD_DELIVERY_SETTINGS)
def test_a_bad_delivery_setting_stops_the_agent_before_it_registers(
        platform: RecordingPlatform, agents: Callable[[Dict[str, str]], AgentProcess], tmp_path: Path,
        key: str, value: str, accepted: str) -> None:
    """A bad value of a delivery-path setting (the OTLP plugin enabled, as by default): exactly one line on
    stderr naming the variable and what it accepts, no traceback, exit 2, and no request reached the platform."""
    (tmp_path / "file").write_text("")
    env = {"EXTENSION_API_ADDR": platform.addr, "FGEXT_SPOOL_DIR": str(tmp_path / "spool"),
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", key: value.format(file=tmp_path / "file")}
    agent = agents(env)
    assert agent.wait_exit() == 2
    lines = agent.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert key in lines[0] and accepted in lines[0]
    assert "Traceback" not in agent.stderr() and agent.stdout().strip() == ""
    assert platform.paths() == []
