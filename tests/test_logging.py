"""The agent's own logs: JSON lines, no secrets, no telemetry markers."""

from __future__ import annotations

import io
import json

from fgext._logging import configure_logging, get_logger, neutralise_markers, secret_values


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
