"""The agent's own logs: JSON lines, no secrets, no telemetry markers."""

from __future__ import annotations

import io
import json
import logging
from typing import Iterator

import pytest

from fgext._logging import _StdlibBridge, configure_logging, get_logger, neutralise_markers, redact_url, secret_values


@pytest.fixture(autouse=True)
def restore_stdlib_logging() -> Iterator[None]:
    """configure_logging takes over the root logger, as the agent process wants; give it back after each test."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.lastResort)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.lastResort = saved[2]
    logging.captureWarnings(False)


def capture(environ: dict) -> tuple:  # type: ignore[type-arg]
    stream = io.StringIO()
    configure_logging("debug", environ, stream=stream)
    return get_logger(), stream


class TestSecrets:
    def test_header_values_are_secrets(self) -> None:
        """Values of OTEL_EXPORTER_OTLP_*HEADERS, url-decoded too, are collected as secrets."""
        secrets = secret_values({"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Basic%20abcd1234,x-team=zzzz9",
                                 "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=k3yk3y", "HOME": "/root"})
        assert {"Basic%20abcd1234", "Basic abcd1234", "zzzz9", "k3yk3y"} <= set(secrets)
        assert "/root" not in secrets

    def test_secret_never_rendered(self) -> None:
        """A secret inside any logged value, nested or not, is masked; secret-named keys are masked whole."""
        log, stream = capture({"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer t0p-s3cret",
                               "MY_API_TOKEN": "tok-123456"})
        log.info("sending", url="http://x?auth=Bearer t0p-s3cret", nested={"a": ["tok-123456"]}, headers={"a": 1})
        line = json.loads(stream.getvalue())
        text = stream.getvalue()
        assert "t0p-s3cret" not in text and "tok-123456" not in text
        assert line["headers"] == "***" and line["event"] == "sending"


class TestMarkers:
    def test_markers_broken(self) -> None:
        """Neither marker survives in the agent's own output, so the platform never collects it back."""
        log, stream = capture({})
        log.warning("got [Extension]hello and [Function]x", raw="[Extension]y")
        text = stream.getvalue()
        assert "[Extension]" not in text and "[Function]" not in text
        assert json.loads(text)["level"] == "warning"

    def test_neutralise_is_visible_text(self) -> None:
        """The neutralised marker still reads the same to a person."""
        assert neutralise_markers("[Extension]x").replace("\u2060", "") == "[Extension]x"


class TestTokensAndUrls:
    def test_each_token_of_a_header_value_is_a_secret(self) -> None:
        """'Bearer tok-SECRET-1234' yields the token alone too; common words such as Bearer do not."""
        secrets = secret_values({"FGEXT_WEBHOOK_HEADERS": "authorization=Bearer tok-SECRET-1234,x=short"})
        assert {"Bearer tok-SECRET-1234", "tok-SECRET-1234"} <= set(secrets)
        assert "Bearer" not in secrets and "authorization" not in secrets

    def test_malformed_header_value_is_still_a_secret(self) -> None:
        """A pair written with ':' instead of '=' has its token masked all the same."""
        environ = {"OTEL_EXPORTER_OTLP_LOGS_HEADERS": "Authorization:Bearer tok-SECRET-1234"}
        assert "tok-SECRET-1234" in secret_values(environ)

    def test_url_user_info_and_query_values(self) -> None:
        """Password, user-info and query values of a URL in any variable or in the config file are secrets."""
        secrets = secret_values({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pa55word@h:1/v1?api_key=KEY-9999&b=2"},
                                {"plugins": {"webhook": {"url": "https://h/?sig=SIG-777777",
                                                         "headers": {"x-api-key": "HOOK-55555"}}}})
        assert {"pa55word", "user:pa55word", "KEY-9999", "SIG-777777", "HOOK-55555"} <= set(secrets)

    def test_key_named_variables_are_secrets_but_key_paths_are_not(self) -> None:
        """FOO_KEY and ACCESS_KEY values are masked; the OTLP client key variable names a file, not a key."""
        secrets = secret_values({"RUNTIME_SECURITY_ACCESS_KEY": "AKIA12345678", "SOME_KEY": "k-1234567",
                                 "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/etc/client.key"})
        assert "AKIA12345678" in secrets and "k-1234567" in secrets and "/etc/client.key" not in secrets

    @pytest.mark.parametrize("url, shown", [
        ("http://user:pw@127.0.0.1:4318/v1/traces?api_key=K&x", "http://***@127.0.0.1:4318/v1/traces?api_key=***&x"),
        ("https://collector:4318", "https://collector:4318"),
        ("/relative?token=abc", "/relative?token=***"),
    ])
    def test_redact_url(self, url: str, shown: str) -> None:
        """redact_url drops user-info and query values and keeps everything else."""
        assert redact_url(url) == shown


class TestStandardLogging:
    def test_library_records_are_scrubbed_json(self) -> None:
        """A warning of a third-party library through logging comes out as a masked JSON line."""
        _log, stream = capture({"OTEL_EXPORTER_OTLP_HEADERS": "Authorization:Bearer tok-SECRET-1234"})
        logging.getLogger("opentelemetry.util.re").warning("Header format invalid! %s",
                                                           "Authorization:Bearer tok-SECRET-1234")
        line = json.loads(stream.getvalue())
        assert line["logger"] == "opentelemetry.util.re" and line["level"] == "warning"
        assert "SECRET" not in stream.getvalue() and "Header format invalid" in line["event"]

    def test_bursts_are_one_line_with_a_count(self) -> None:
        """The same message repeated within the interval is held back and counted on the next line."""
        stream = io.StringIO()
        configure_logging("info", {}, stream=stream)
        clock = [0.0]
        bridge = _StdlibBridge(interval=10.0, clock=lambda: clock[0])
        record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system "
                                   "resource", None, (OSError, OSError(24, "Too many open files"), None))
        for _ in range(1000):
            bridge.emit(record)
        clock[0] = 11.0
        bridge.emit(record)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert len(lines) == 2 and lines[1]["repeated"] == 999
        assert "Too many open files" in lines[0]["error"] and "exception" not in lines[0]
