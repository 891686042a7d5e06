"""The agent's own logs: structlog, JSON lines on stderr (console rendering on a terminal).

Three guarantees, all kept by the processors and the handler set up below:

- no secret leaves in a log line: the values of every ``*_HEADERS`` variable (whole, url-decoded, and
  each token inside them, so a collector that quotes ``tok-...`` back is masked too), the user-info
  and query values of every URL in the environment or the config file, and the values of variables
  whose names say they hold a key, token, secret or password are replaced wherever they appear, and
  so are values under keys such as ``authorization`` or ``headers``;
- third-party libraries logging through the standard ``logging`` module (the OpenTelemetry SDK
  quotes a malformed headers variable, asyncio logs accept errors) go through the same chain, and a
  message repeated in a burst (``accept`` failing while file descriptors run out) is logged once per
  interval with a count, not thousands of times a second;
- no log line of the agent is collected back as telemetry: the platform collects lines that carry
  ``[Extension]``; the agent subscribes to extension logs, so a line of its own that quoted the marker
  would come back to it as an event, and any line about that event would come back again.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional, TextIO, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import structlog

__all__ = ["configure_logging", "get_logger", "neutralise_markers", "redact_url", "scrub_text", "secret_values"]

_MARKERS = ("[Extension]", "[Function]")
_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH|CREDENTIAL|COOKIE|"
    r"_SK$|(^|_)KEY$)", re.I)
# The OTLP client key variables hold a file path, not a key: masking the path would only hide which
# file could not be read.
_PATH_NAME = re.compile(r"^OTEL_EXPORTER_OTLP_(\w+_)?CLIENT_KEY$")
_SECRET_KEYS = {"authorization", "headers", "password", "token", "secret", "api_key", "apikey", "cookie",
                "x-api-key", "api-key"}
_MASK = "***"
_SPLIT = re.compile(r"[\s,;=:]+")
_MIN_WHOLE = 4
_MIN_PIECE = 6
# Words that make up header values without being secret; masking them would only garble the logs.
_COMMON_WORDS = frozenset({
    "bearer", "basic", "digest", "negotiate", "token", "apikey", "api-key", "api_key", "x-api-key",
    "authorization", "signature", "credential", "application", "content-type", "x-protobuf",
    "application/json", "application/x-protobuf", "charset", "utf-8", "secret", "password",
})


def _pieces(value: str) -> List[str]:
    """``value`` whole, url-decoded, and every token of it long enough to be a secret on its own."""
    found = [value, unquote(value)]
    for text in (value, unquote(value)):
        for piece in _SPLIT.split(text):
            piece = piece.strip("\"'")
            if len(piece) >= _MIN_PIECE and piece.lower() not in _COMMON_WORDS:
                found.append(piece)
    return found


def _url_secrets(value: str) -> List[str]:
    """User-info and query values of every URL in ``value`` (a list of URLs is fine)."""
    found: List[str] = []
    for word in re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", value):
        try:
            parts = urlsplit(word.rstrip(",;"))
        except ValueError:
            continue
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        if userinfo:
            found.append(userinfo)
            found.append(unquote(userinfo))
            user, _, password = userinfo.partition(":")
            if password:
                found += [password, unquote(password)]
            if len(user) >= _MIN_PIECE:
                found += [user, unquote(user)]
        for _name, query_value in parse_qsl(parts.query, keep_blank_values=False):
            found += _pieces(query_value)
        if parts.query:
            for pair in parts.query.split("&"):
                raw = pair.partition("=")[2]
                if raw:
                    found.append(raw)
    return found


def _config_secrets(value: Any, key: str = "", depth: int = 0) -> List[str]:
    """Secrets in a config file section: header values, secret-named keys, URL credentials."""
    found: List[str] = []
    if depth > 8:
        return found
    if isinstance(value, dict):
        for name, item in value.items():
            name = str(name)
            if name.lower() == "headers" and isinstance(item, dict):
                for header_value in item.values():
                    if isinstance(header_value, str):
                        found += _pieces(header_value)
            else:
                found += _config_secrets(item, name, depth + 1)
    elif isinstance(value, list):
        for item in value:
            found += _config_secrets(item, key, depth + 1)
    elif isinstance(value, str) and value:
        if _SECRET_NAME.search(key) or key.lower() in _SECRET_KEYS:
            found += _pieces(value)
        found += _url_secrets(value)
    return found


def secret_values(environ: Mapping[str, str], config: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Every value in the environment (and the config file) that a log line must never show."""
    secrets: List[str] = []
    for key, value in environ.items():
        if not value:
            continue
        if key.upper().endswith("HEADERS"):
            for pair in value.split(","):
                _, sep, header_value = pair.partition("=")
                if sep and header_value.strip():
                    secrets += _pieces(header_value.strip())
            # A malformed value (``Authorization:Bearer x``) has no '=': its tokens are masked all the same.
            secrets += _pieces(value)
        elif _SECRET_NAME.search(key) and not _PATH_NAME.match(key):
            secrets += _pieces(value)
        if "://" in value:
            secrets += _url_secrets(value)
    if config:
        secrets += _config_secrets(dict(config))
    # Longest first, so that a secret containing another is masked whole.
    return sorted({s for s in secrets if len(s) >= _MIN_WHOLE}, key=len, reverse=True)


def redact_url(url: str) -> str:
    """``url`` fit for a log line: user-info replaced by ``***``, every query value by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = _MASK + "@" + netloc.rpartition("@")[2]
    query = "&".join(
        (pair.partition("=")[0] + "=" + _MASK) if "=" in pair else pair for pair in parts.query.split("&")
    ) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment and _MASK))


_secrets: List[str] = []  # what configure_logging found; scrub_text masks these


def scrub_text(text: str, secrets: Optional[Iterable[str]] = None) -> str:
    """``text`` with every secret masked and the telemetry markers broken."""
    for secret in (_secrets if secrets is None else secrets):
        if secret in text:
            text = text.replace(secret, _MASK)
    return neutralise_markers(text)


def neutralise_markers(text: str) -> str:
    """Break ``[Extension]``/``[Function]`` so the platform does not collect the line back."""
    for marker in _MARKERS:
        if marker in text:
            text = text.replace(marker, marker[0] + "\u2060" + marker[1:])
    return text


class _Scrub:
    """structlog processor: masks secrets and markers in every key and string of the event dict."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = list(secrets)

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return scrub_text(value, self._secrets)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if depth < 4 and isinstance(value, dict):
            return {self._clean(str(k)): (_MASK if str(k).lower() in _SECRET_KEYS else self._clean(v, depth + 1))
                    for k, v in value.items()}
        if depth < 4 and isinstance(value, (list, tuple, set, frozenset)):
            return [self._clean(v, depth + 1) for v in value]
        # What the JSON renderer would print for it (repr), masked like any other text.
        return scrub_text(repr(value), self._secrets)

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        cleaned: Dict[str, Any] = {}
        for key, value in event_dict.items():
            name = self._clean(str(key))
            cleaned[name] = _MASK if str(key).lower() in _SECRET_KEYS else self._clean(value)
        return cleaned


class _StdlibBridge(logging.Handler):
    """Routes records of the standard ``logging`` module into the agent's structlog chain.

    A message that repeats within ``interval`` seconds (same logger, same format string) is counted
    instead of printed, and the next one printed after the interval says how many were held back.
    """

    def __init__(self, interval: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__(logging.NOTSET)
        self._interval = interval
        self._clock = clock
        self._seen: Dict[Tuple[str, str], Tuple[float, int]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            key = (record.name, str(record.msg).split("\n", 1)[0][:200])
            now = self._clock()
            last, held = self._seen.get(key, (float("-inf"), 0))
            if now - last < self._interval:
                self._seen[key] = (last, held + 1)
                return
            if len(self._seen) > 256:
                self._seen.clear()
            self._seen[key] = (now, 0)
            fields: Dict[str, Any] = {"logger": record.name}
            if held:
                fields["repeated"] = held
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = repr(record.exc_info[1])
                # An OSError (EMFILE on accept, a reset peer) is a condition, not a bug: its traceback
                # through the event loop tells nothing more than the error itself.
                if not isinstance(record.exc_info[1], OSError):
                    fields["exc_info"] = record.exc_info
            level = record.levelname.lower()
            method = getattr(structlog.get_logger(), level if level in ("debug", "info", "warning", "error",
                                                                       "critical") else "warning")
            method(record.getMessage(), **fields)
        except Exception:  # a log line must never take the agent down
            self.handleError(record)


def configure_logging(level: str = "info", environ: Optional[Mapping[str, str]] = None,
                      stream: Optional[TextIO] = None, config: Optional[Mapping[str, Any]] = None) -> None:
    """Set up structlog for the agent process, and route the standard ``logging`` module into it.

    Idempotent. Records of third-party libraries below WARNING (or below ``level`` if higher) are not
    shown: the agent's own lines say what it does.
    """
    out = stream if stream is not None else sys.stderr
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if out.isatty() else structlog.processors.JSONRenderer()
    )
    found = secret_values(environ or {}, config)
    _secrets[:] = found
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _Scrub(found),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(max(numeric, logging.WARNING))
    # Without a handler of its own a library's warning would go to logging.lastResort, unmasked.
    logging.lastResort = None
    logging.captureWarnings(True)


def get_logger(**initial: Any) -> Any:
    """A structlog logger bound to ``initial`` (``logger="fgext"`` unless given)."""
    initial.setdefault("logger", "fgext")
    return structlog.get_logger().bind(**initial)
