"""The agent's own logs: structlog, JSON lines on stderr (console rendering on a terminal).

Two guarantees, both processors in the chain below:

- no secret leaves in a log line: values of ``OTEL_EXPORTER_OTLP_*HEADERS`` and of variables whose
  names say they hold a secret are replaced wherever they appear, and so are values under keys such
  as ``authorization`` or ``headers``;
- no log line of the agent is collected back as telemetry: the platform collects lines that carry
  ``[Extension]``; the agent subscribes to extension logs, so a line of its own that quoted the marker
  would come back to it as an event, and any line about that event would come back again.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Iterable, List, Mapping, MutableMapping, Optional, TextIO
from urllib.parse import unquote

import structlog

__all__ = ["configure_logging", "get_logger", "neutralise_markers", "secret_values"]

_MARKERS = ("[Extension]", "[Function]")
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|AUTH|CREDENTIAL|_SK$|SECRET_KEY)", re.I)
_SECRET_KEYS = {"authorization", "headers", "password", "token", "secret", "api_key", "apikey", "cookie"}
_MASK = "***"


def secret_values(environ: Mapping[str, str]) -> List[str]:
    """Every value in the environment that a log line must never show."""
    secrets: List[str] = []
    for key, value in environ.items():
        if not value:
            continue
        if key.startswith("OTEL_EXPORTER_OTLP") and key.endswith("HEADERS"):
            for pair in value.split(","):
                _, sep, header_value = pair.partition("=")
                if sep and header_value.strip():
                    secrets.append(header_value.strip())
                    secrets.append(unquote(header_value.strip()))
            secrets.append(value)
        elif _SECRET_NAME.search(key) and len(value) >= 4:
            secrets.append(value)
    # Longest first, so that a secret containing another is masked whole.
    return sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)


def neutralise_markers(text: str) -> str:
    """Break ``[Extension]``/``[Function]`` so the platform does not collect the line back."""
    for marker in _MARKERS:
        if marker in text:
            text = text.replace(marker, marker[0] + "\u2060" + marker[1:])
    return text


class _Scrub:
    """structlog processor: masks secrets and markers in every string of the event dict."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = list(secrets)

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, _MASK)
            return neutralise_markers(value)
        if depth < 4 and isinstance(value, dict):
            return {k: (_MASK if str(k).lower() in _SECRET_KEYS else self._clean(v, depth + 1))
                    for k, v in value.items()}
        if depth < 4 and isinstance(value, (list, tuple)):
            return [self._clean(v, depth + 1) for v in value]
        return value

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        for key in list(event_dict):
            if key.lower() in _SECRET_KEYS:
                event_dict[key] = _MASK
            else:
                event_dict[key] = self._clean(event_dict[key])
        return event_dict


def configure_logging(level: str = "info", environ: Optional[Mapping[str, str]] = None,
                      stream: Optional[TextIO] = None) -> None:
    """Set up structlog for the agent process (idempotent)."""
    out = stream if stream is not None else sys.stderr
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if out.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _Scrub(secret_values(environ or {})),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: Any) -> Any:
    """A structlog logger bound to ``initial`` (``logger="fgext"`` unless given)."""
    initial.setdefault("logger", "fgext")
    return structlog.get_logger().bind(**initial)
