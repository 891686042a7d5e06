"""Tests for fgext.otlp._config: standard OTEL_* variables, FGEXT_* settings, clear errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from fgext._errors import ConfigError
from fgext.otlp._config import load_config
from fgext.otlp._transports import build_transports


def config(**environ: str):  # type: ignore[no-untyped-def]
    return load_config(environ)


class TestEndpoints:
    def test_defaults(self) -> None:
        """With nothing set: http/protobuf to localhost:4318, per-signal paths, 10 s timeout, no gzip."""
        cfg = config()
        assert {s: c.endpoint for s, c in cfg.signals.items()} == {
            "traces": "http://localhost:4318/v1/traces", "logs": "http://localhost:4318/v1/logs",
            "metrics": "http://localhost:4318/v1/metrics",
        }
        assert all(c.protocol == "http/protobuf" and c.enabled for c in cfg.signals.values())
        assert cfg.signals["traces"].timeout_s == 10.0
        assert cfg.signals["logs"].compression == "none"
        assert str(cfg.spool_dir) == "/tmp/fgext-spool"
        assert not cfg.disabled

    def test_base_endpoint_gets_signal_paths_and_specific_endpoint_is_used_as_is(self) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/<signal>; a per-signal endpoint is taken verbatim."""
        cfg = config(OTEL_EXPORTER_OTLP_ENDPOINT="https://collector:4318/",
                     OTEL_EXPORTER_OTLP_LOGS_ENDPOINT="http://logs:9000/custom")
        assert cfg.signals["traces"].endpoint == "https://collector:4318/v1/traces"
        assert cfg.signals["logs"].endpoint == "http://logs:9000/custom"

    def test_headers_compression_timeout_per_signal(self) -> None:
        """Headers merge (signal wins), compression and timeout (milliseconds) may differ per signal."""
        cfg = config(OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer%20abc,x-team=a",
                     OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-team=b", OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
                     OTEL_EXPORTER_OTLP_METRICS_COMPRESSION="none", OTEL_EXPORTER_OTLP_TIMEOUT="2500",
                     OTEL_EXPORTER_OTLP_LOGS_TIMEOUT="500")
        assert cfg.signals["traces"].headers == {"authorization": "Bearer abc", "x-team": "b"}
        assert cfg.signals["logs"].headers == {"authorization": "Bearer abc", "x-team": "a"}
        assert cfg.signals["traces"].compression == "gzip"
        assert cfg.signals["metrics"].compression == "none"
        assert cfg.signals["traces"].timeout_s == 2.5
        assert cfg.signals["logs"].timeout_s == 0.5

    def test_grpc_endpoint_and_insecure(self) -> None:
        """For grpc the endpoint is a target; http:// means plaintext, https:// TLS, bare uses INSECURE."""
        cfg = config(OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317",
                     OTEL_EXPORTER_OTLP_LOGS_ENDPOINT="collector:4317",
                     OTEL_EXPORTER_OTLP_LOGS_INSECURE="true",
                     OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="https://collector:4317")
        assert cfg.signals["traces"].insecure is True
        assert cfg.signals["logs"].endpoint == "collector:4317" and cfg.signals["logs"].insecure is True
        assert cfg.signals["metrics"].insecure is False
        assert cfg.uses_grpc

    def test_signal_switched_off_and_sdk_disabled(self) -> None:
        """OTEL_<SIGNAL>_EXPORTER=none turns one signal off; OTEL_SDK_DISABLED=true turns all off."""
        cfg = config(OTEL_LOGS_EXPORTER="none", OTEL_METRICS_EXPORTER="otlp")
        assert [s for s, c in cfg.signals.items() if not c.enabled] == ["logs"]
        assert config(OTEL_SDK_DISABLED="true").disabled

    def test_resource_attributes_and_service_name(self) -> None:
        """OTEL_RESOURCE_ATTRIBUTES is split and percent-decoded; OTEL_SERVICE_NAME is kept."""
        cfg = config(OTEL_RESOURCE_ATTRIBUTES="team=a%20b, deployment.environment=prod",
                     OTEL_SERVICE_NAME="svc")
        assert cfg.resource_attributes == {"team": "a b", "deployment.environment": "prod"}
        assert cfg.service_name == "svc"

    def test_wait_bound_from_runtime_timeout(self) -> None:
        """The wait for a missing end is the function timeout (RUNTIME_TIMEOUT) plus the margin."""
        cfg = config(RUNTIME_TIMEOUT="3", FGEXT_OTLP_CLOSE_MARGIN_MS="500")
        assert cfg.open_wait_s == 3.5


class TestErrors:
    @pytest.mark.parametrize(("environ", "names"), [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, ["OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli"}, ["OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"]),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, ["OTEL_EXPORTER_OTLP_TIMEOUT", "milliseconds"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, ["OTEL_EXPORTER_OTLP_ENDPOINT", "http://"]),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, ["OTEL_TRACES_EXPORTER", "zipkin"]),
        ({"OTEL_SDK_DISABLED": "maybe"}, ["OTEL_SDK_DISABLED"]),
        ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, ["OTEL_RESOURCE_ATTRIBUTES", "novalue"]),
        ({"FGEXT_SPOOL_MAX_BYTES": "lots"}, ["FGEXT_SPOOL_MAX_BYTES"]),
        ({"FGEXT_OTLP_MAX_REQUEST_BYTES": "4MB"}, ["FGEXT_OTLP_MAX_REQUEST_BYTES", "whole number"]),
        ({"FGEXT_OTLP_MAX_REQUEST_BYTES": "1000"}, ["FGEXT_OTLP_MAX_REQUEST_BYTES", "65536"]),
        ({"FGEXT_OTLP_MAX_LOG_BYTES": "-5"}, ["FGEXT_OTLP_MAX_LOG_BYTES", "1024"]),
        ({"FGEXT_OTLP_MAX_LOG_BYTES": "3000000"}, ["FGEXT_OTLP_MAX_LOG_BYTES", "half"]),
        ({"FGEXT_OTLP_MAX_PENDING_BYTES": "1e9"}, ["FGEXT_OTLP_MAX_PENDING_BYTES"]),
        ({"FGEXT_OTLP_MAX_PENDING_BYTES": "70000"}, ["FGEXT_OTLP_MAX_PENDING_BYTES",
                                                    "FGEXT_OTLP_MAX_REQUEST_BYTES"]),
        ({"RUNTIME_TIMEOUT": "-1"}, ["RUNTIME_TIMEOUT"]),
        ({"FGEXT_OTLP_METRICS_INTERVAL_MS": "0"}, ["FGEXT_OTLP_METRICS_INTERVAL_MS", "positive"]),
        ({"FGEXT_OTLP_METRICS_INTERVAL_MS": "1m"}, ["FGEXT_OTLP_METRICS_INTERVAL_MS", "milliseconds"]),
    ])
    def test_bad_value_names_the_variable(self, environ: Dict[str, str], names: List[str]) -> None:
        """Every bad value is a ConfigError whose message names the variable and what is accepted."""
        with pytest.raises(ConfigError) as caught:
            load_config(environ)
        for name in names:
            assert name in str(caught.value)

    @pytest.fixture
    def without_grpc(self) -> Iterator[None]:
        """Make ``import grpc`` fail the way it does when the extra is not installed."""
        if importlib.util.find_spec("grpc") is None:
            yield  # really missing (the Python 3.9 environment): nothing to simulate
            return
        saved = {name: module for name, module in sys.modules.items()
                 if name == "grpc" or name.startswith("grpc.")}
        for name in saved:
            del sys.modules[name]
        sys.modules["grpc"] = None  # type: ignore[assignment]  # Python's documented import blocker
        try:
            yield
        finally:
            del sys.modules["grpc"]
            sys.modules.update(saved)

    def test_grpc_without_the_extra_names_the_extra(self, without_grpc: None) -> None:
        """Asking for grpc without grpcio installed is a ConfigError naming fgext[grpc]."""
        cfg = load_config({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        with pytest.raises(ConfigError, match=r"fgext\[grpc\]"):
            build_transports(cfg)

    def test_grpc_not_needed_when_grpc_signals_are_off(self, without_grpc: None) -> None:
        """A grpc protocol on a switched-off signal does not require the extra."""
        cfg = load_config({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "none"})
        transports, _close = build_transports(cfg)
        assert set(transports) == {"logs", "metrics"}


class TestDeliverySettings:
    def test_defaults(self) -> None:
        """Write-ahead after 250 ms, 8 MiB of requests in memory, the spool under /tmp/fgext-spool."""
        cfg = config()
        assert cfg.spool_after_s == 0.25 and cfg.queue_max_bytes == 8 * 1024 * 1024
        assert str(cfg.spool_dir) == "/tmp/fgext-spool"

    def test_spool_dir_follows_tmpdir_unless_set(self, tmp_path: Path) -> None:
        """$FGEXT_SPOOL_DIR is used as given; otherwise fgext-spool under $TMPDIR."""
        assert config(TMPDIR=str(tmp_path)).spool_dir == tmp_path / "fgext-spool"
        assert config(TMPDIR=str(tmp_path), FGEXT_SPOOL_DIR="/x/y").spool_dir == Path("/x/y")

    @pytest.mark.parametrize("name,value", [
        ("FGEXT_OTLP_SPOOL_AFTER_MS", "-1"), ("FGEXT_OTLP_SPOOL_AFTER_MS", "soon"),
        ("FGEXT_OTLP_SPOOL_AFTER_MS", "nan"), ("FGEXT_OTLP_QUEUE_MAX_BYTES", "0"),
        ("FGEXT_OTLP_QUEUE_MAX_BYTES", "8MB"), ("FGEXT_SPOOL_MAX_BYTES", "-3"),
    ])
    def test_bad_values_name_the_variable(self, name: str, value: str) -> None:
        """A bad delivery setting is a ConfigError naming the variable."""
        with pytest.raises(ConfigError, match=name):
            config(**{name: value})

    @pytest.mark.parametrize("value", ["Authorization:Bearer SECRET-1", "x-key=a,SECRET-2", "=v"])
    def test_malformed_headers_are_an_error_that_does_not_show_the_value(self, value: str) -> None:
        """A *_HEADERS value that is not name=value pairs is a ConfigError naming the variable, not the value."""
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_LOGS_HEADERS") as raised:
            config(OTEL_EXPORTER_OTLP_LOGS_HEADERS=value)
        assert "SECRET" not in str(raised.value)

    @pytest.mark.parametrize("value", ["authorization=Bearer%20SECRET-1%0D%0AX-Injected:%201",
                                       "x-key=SECRET-2%0Aa", "x-key=SECRET-3%00"])
    def test_line_breaks_in_a_header_value_are_refused_without_showing_it(self, value: str) -> None:
        """A percent-encoded CR, LF or NUL in a header value (which would end the header) is a ConfigError
        naming the variable and the header, not the value."""
        with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_HEADERS: entry 1 .* line break") as raised:
            config(OTEL_EXPORTER_OTLP_HEADERS=value)
        assert "SECRET" not in str(raised.value)

    @pytest.mark.parametrize("headers_var", ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"])
    def test_credentials_in_the_url_and_an_authorization_header_conflict(self, headers_var: str) -> None:
        """User-info in the endpoint plus an Authorization header is a ConfigError that shows neither."""
        with pytest.raises(ConfigError, match="credentials in the URL") as raised:
            config(OTEL_EXPORTER_OTLP_ENDPOINT="http://me:PASSWORD@collector:4318",
                   **{headers_var: "authorization=Basic%20SECRET"})
        assert "PASSWORD" not in str(raised.value) and "SECRET" not in str(raised.value)

    def test_tls_files_per_signal_first(self, tmp_path: Path) -> None:
        """The per-signal TLS variables win over the general ones; each file must be readable."""
        general, traces = tmp_path / "ca.pem", tmp_path / "traces-ca.pem"
        general.write_text("x")
        traces.write_text("y")
        cfg = config(OTEL_EXPORTER_OTLP_CERTIFICATE=str(general), OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE=str(traces))
        assert cfg.signals["traces"].certificate == str(traces)
        assert cfg.signals["logs"].certificate == str(general)

    @pytest.mark.parametrize("name", ["OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                                      "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY"])
    def test_unreadable_tls_file_names_the_variable_and_path(self, name: str, tmp_path: Path) -> None:
        """A TLS file that cannot be read is a ConfigError naming the variable and the path."""
        missing = tmp_path / "missing.pem"
        with pytest.raises(ConfigError) as raised:
            config(**{name: str(missing)})
        assert name in str(raised.value) and str(missing) in str(raised.value)

    def test_client_key_without_certificate(self, tmp_path: Path) -> None:
        """A client key without a client certificate is a ConfigError."""
        key = tmp_path / "client.key"
        key.write_text("k")
        with pytest.raises(ConfigError, match="without a client certificate"):
            config(OTEL_EXPORTER_OTLP_CLIENT_KEY=str(key))


class TestByteBounds:
    def test_defaults(self) -> None:
        """Requests of at most 4 MiB (well under the Collector's 20 MiB), 4 MiB pending, 256 KiB a log line."""
        cfg = load_config({})
        assert (cfg.max_request_bytes, cfg.max_pending_bytes, cfg.max_log_bytes) == (4 << 20, 4 << 20, 256 << 10)

    def test_settings_are_read(self) -> None:
        """The three FGEXT_OTLP_MAX_*_BYTES variables set the bounds; a small request limit lowers the
        default log-line bound to half of it."""
        cfg = load_config({"FGEXT_OTLP_MAX_REQUEST_BYTES": "1048576", "FGEXT_OTLP_MAX_PENDING_BYTES": "2097152",
                           "FGEXT_OTLP_MAX_LOG_BYTES": "4096"})
        assert (cfg.max_request_bytes, cfg.max_pending_bytes, cfg.max_log_bytes) == (1 << 20, 2 << 20, 4096)
        small = load_config({"FGEXT_OTLP_MAX_REQUEST_BYTES": "65536"})
        assert small.max_log_bytes == 32768 and small.max_pending_bytes == 4 << 20
        big = load_config({"FGEXT_OTLP_MAX_REQUEST_BYTES": str(8 << 20)})
        assert big.max_pending_bytes == 8 << 20  # never below one request

    def test_metrics_interval(self) -> None:
        """Metrics leave every 60 s by default; FGEXT_OTLP_METRICS_INTERVAL_MS (or the plugin setting the
        agent already read, which wins) sets another cadence."""
        assert load_config({}).metrics_interval_s == 60.0
        assert load_config({"FGEXT_OTLP_METRICS_INTERVAL_MS": "1500"}).metrics_interval_s == 1.5
        given = load_config({"FGEXT_OTLP_METRICS_INTERVAL_MS": "1500"}, settings={"metrics_interval_ms": 250.0})
        assert given.metrics_interval_s == 0.25
        with pytest.raises(ConfigError, match="FGEXT_OTLP_METRICS_INTERVAL_MS"):
            load_config({}, settings={"metrics_interval_ms": -1.0})

    def test_flush_policy_is_not_the_plugins(self) -> None:
        """FGEXT_FLUSH is the pipeline's setting now: the plugin's configuration neither reads nor rejects it."""
        cfg = load_config({"FGEXT_FLUSH": "sometimes"})
        assert not hasattr(cfg, "flush")
