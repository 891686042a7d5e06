"""The agent's settings, read once from the environment (and the optional JSON config file).

This runs on the cold-start path before registration, where every import counts: no ``typing`` and
no ``dataclasses`` at run time (together about 20 ms on the sandbox's fraction of a core).
"""

from __future__ import annotations

import os

from fgext._errors import ConfigError
from fgext._flush import FlushPolicy, parse_flush

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = [
    "DEFAULT_NAME",
    "PORT_RANGE",
    "TELEMETRY_TYPES",
    "AgentSettings",
    "DeliverySettings",
    "ListenerLimits",
    "load_config_file",
    "parse_api_addr",
]

PORT_RANGE: Tuple[int, int] = (8081, 8090)
#: what one sink's lane holds at most, in raw bytes of telemetry (``FGEXT_LANE_MAX_BYTES``)
DEFAULT_LANE_MAX_BYTES = 16 * 1024 * 1024
MIN_LANE_MAX_BYTES = 64 * 1024
TELEMETRY_TYPES: Tuple[str, ...] = ("platform", "function", "extension")
DEFAULT_NAME = "extensionFgext.sh"


def parse_api_addr(value: Optional[str]) -> Tuple[str, int]:
    """Read ``EXTENSION_API_ADDR``: ``host:port``, with or without an ``http://`` scheme."""
    if value is None or not value.strip():
        raise ConfigError("EXTENSION_API_ADDR is not set: the platform gives the Extension API address in it")
    text = value.strip()
    for scheme in ("http://", "HTTP://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or "/" in text or " " in text:
        raise ConfigError(f"EXTENSION_API_ADDR must be host:port, got {value!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"EXTENSION_API_ADDR must be host:port, got {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"EXTENSION_API_ADDR port must be 1-65535, got {value!r}")
    return host, port


def _float(environ: Mapping[str, str], key: str, default: float) -> float:
    raw = environ.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{key} must be a positive number of seconds, got {raw!r}")
    return value


def _int(environ: Mapping[str, str], key: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {raw!r}")
    return value


def _bool(environ: Mapping[str, str], key: str) -> bool:
    raw = environ.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{key} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def load_config_file(path: Optional[str]) -> Dict[str, Any]:
    """Read the optional JSON config file (``FGEXT_CONFIG``); missing path means no file."""
    if not path:
        return {}
    import json  # only with a config file: json costs milliseconds before registering (re, enum)

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"FGEXT_CONFIG names {path!r}, which does not exist") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"config file {path!r} could not be read as JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a JSON object at the top level")
    return data


class AgentSettings:
    """Everything ``fgext run`` reads from its environment, validated; read-only after creation."""

    __slots__ = ("api_host", "api_port", "config", "environ", "flush", "lane_max_bytes", "log_level",
                 "max_body_bytes", "name", "plugins", "port", "register_timeout", "shutdown_timeout", "strict",
                 "telemetry_types")

    api_host: str
    api_port: int
    name: str
    port: Optional[int]
    register_timeout: float
    telemetry_types: Tuple[str, ...]
    max_body_bytes: int
    shutdown_timeout: float
    plugins: Tuple[str, ...]
    strict: bool
    flush: FlushPolicy
    lane_max_bytes: int
    log_level: str
    config: Mapping[str, Any]
    environ: Mapping[str, str]

    def __init__(self, api_host: str, api_port: int, *, name: str = DEFAULT_NAME, port: Optional[int] = None,
                 register_timeout: float = 10.0, telemetry_types: Tuple[str, ...] = TELEMETRY_TYPES,
                 max_body_bytes: int = 6 * 1024 * 1024, shutdown_timeout: float = 2.0,
                 plugins: Tuple[str, ...] = ("otlp",), strict: bool = False, flush: Optional[FlushPolicy] = None,
                 log_level: str = "info", config: Optional[Mapping[str, Any]] = None,
                 environ: Optional[Mapping[str, str]] = None, lane_max_bytes: int = DEFAULT_LANE_MAX_BYTES) -> None:
        values = {
            "api_host": api_host, "api_port": api_port, "name": name, "port": port,
            "register_timeout": register_timeout, "telemetry_types": telemetry_types,
            "max_body_bytes": max_body_bytes, "shutdown_timeout": shutdown_timeout, "plugins": plugins,
            "strict": strict, "flush": flush or FlushPolicy(), "log_level": log_level, "config": config or {},
            "environ": environ or {}, "lane_max_bytes": lane_max_bytes,
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"AgentSettings is read-only: cannot set {key!r}")

    def __repr__(self) -> str:
        # The environment holds secrets: it is never part of the representation.
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if k not in ("environ", "config"))
        return f"AgentSettings({shown})"

    @property
    def api_addr(self) -> str:
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"{host}:{self.api_port}"

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> AgentSettings:
        env = dict(os.environ if environ is None else environ)
        host, api_port = parse_api_addr(env.get("EXTENSION_API_ADDR"))

        port: Optional[int] = None
        raw_port = env.get("FGEXT_PORT", "").strip()
        if raw_port:
            try:
                port = int(raw_port)
            except ValueError:
                raise ConfigError(f"FGEXT_PORT must be a port number from 8081 to 8090, got {raw_port!r}") from None
            if not PORT_RANGE[0] <= port <= PORT_RANGE[1]:
                raise ConfigError(
                    f"FGEXT_PORT must be from 8081 to 8090 (the platform accepts no other), got {port}"
                )

        raw_types = env.get("FGEXT_TELEMETRY_TYPES")
        types: Tuple[str, ...] = TELEMETRY_TYPES
        if raw_types is not None:
            chosen = tuple(t.strip().lower() for t in raw_types.split(",") if t.strip())
            if chosen in ((), ("none",)):
                types = ()
            else:
                unknown = [t for t in chosen if t not in TELEMETRY_TYPES]
                if unknown:
                    raise ConfigError(
                        f"FGEXT_TELEMETRY_TYPES: unknown type(s) {', '.join(unknown)}; "
                        f"use any of platform, function, extension, or none"
                    )
                types = tuple(t for t in TELEMETRY_TYPES if t in chosen)

        config = load_config_file(env.get("FGEXT_CONFIG", "").strip() or None)
        # FGEXT_PLUGINS wins; otherwise the config file's "enable" list, so a zip can be self-contained.
        enable = config.get("enable")
        if "FGEXT_PLUGINS" in env:
            plugins = tuple(p.strip() for p in env["FGEXT_PLUGINS"].split(",") if p.strip())
        elif enable is not None:
            if not isinstance(enable, list) or not all(isinstance(p, str) and p.strip() for p in enable):
                raise ConfigError('config file: "enable" must be a list of plugin names')
            plugins = tuple(p.strip() for p in enable)
        else:
            plugins = ("otlp",)
        level = env.get("FGEXT_LOG_LEVEL", "info").strip().lower() or "info"
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"FGEXT_LOG_LEVEL must be debug, info, warning, error or critical, got {level!r}")
        # Sampling is the OTLP sink's to apply, but a value it cannot read stops the agent here (exit 2),
        # not later as a disabled plugin. Imported here: fgext._sampling imports this module.
        from fgext._sampling import HeadSampler, TailRule

        HeadSampler.from_environ(env)
        TailRule.from_environ(env)
        if "otlp" in plugins:
            # So are the delivery path's own settings: checked before registering, read again by the plugin.
            DeliverySettings.from_environ(env, _otlp_file_settings(config, env))

        return cls(
            api_host=host,
            api_port=api_port,
            name=env.get("FGEXT_NAME", "").strip() or DEFAULT_NAME,
            port=port,
            register_timeout=_float(env, "FGEXT_REGISTER_TIMEOUT", 10.0),
            telemetry_types=types,
            max_body_bytes=_int(env, "FGEXT_MAX_BODY_BYTES", 6 * 1024 * 1024, minimum=1024),
            shutdown_timeout=_float(env, "FGEXT_SHUTDOWN_TIMEOUT", 2.0),
            plugins=plugins,
            strict=_bool(env, "FGEXT_STRICT"),
            flush=parse_flush(env.get("FGEXT_FLUSH")),
            lane_max_bytes=_whole("FGEXT_LANE_MAX_BYTES", env.get("FGEXT_LANE_MAX_BYTES", "").strip() or None,
                                  DEFAULT_LANE_MAX_BYTES, MIN_LANE_MAX_BYTES),
            log_level=level,
            config=config,
            environ=env,
        )


class ListenerLimits:
    """The listener's limits (``FGEXT_HEADER_TIMEOUT``, ``FGEXT_IDLE_TIMEOUT``, ``FGEXT_MAX_CONNECTIONS``)
    and whether it answers the platform's plain requests itself (``FGEXT_FAST_PATH``, fgext._listener).

    ``max_connections`` None means the default the listener derives from the file-descriptor limit.
    """

    __slots__ = ("fast_path", "header_timeout", "idle_timeout", "max_connections")

    def __init__(self, header_timeout: float = 10.0, idle_timeout: float = 30.0,
                 max_connections: Optional[int] = None, fast_path: bool = True) -> None:
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.fast_path = fast_path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ListenerLimits:
        header = _float(environ, "FGEXT_HEADER_TIMEOUT", 10.0)
        idle = _float(environ, "FGEXT_IDLE_TIMEOUT", 30.0)
        for name, value in (("FGEXT_HEADER_TIMEOUT", header), ("FGEXT_IDLE_TIMEOUT", idle)):
            if not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value:g}")
        raw = environ.get("FGEXT_MAX_CONNECTIONS", "").strip()
        fast = environ.get("FGEXT_FAST_PATH", "").strip() == "" or _bool(environ, "FGEXT_FAST_PATH")
        return cls(header, idle, _int(environ, "FGEXT_MAX_CONNECTIONS", 0, minimum=2) if raw else None, fast)


def _otlp_file_settings(config: Mapping[str, Any], env: Mapping[str, str]) -> Mapping[str, Any]:
    """The config file's ``plugins.otlp`` settings that no ``FGEXT_OTLP_<KEY>`` overrides (as the plugin sees them)."""
    plugins = config.get("plugins")
    section = plugins.get("otlp") if isinstance(plugins, dict) else None
    if not isinstance(section, dict):
        return {}
    return {str(key): value for key, value in section.items() if f"FGEXT_OTLP_{str(key).upper()}" not in env}


# The delivery path's defaults (docs/otlp.md). Byte bounds: a request well under the OpenTelemetry
# Collector's default 20 MiB body limit; pending data one request's worth, so that an early export fits
# beside what the shipper may hold (it starts holding the platform back at 4 MiB and spills to disk past
# 8 MiB: bigger bursts went to disk, and a request spilled while in flight was sent twice); one log line
# small enough that many fit in a request. A request the collector has not acknowledged within
# SPOOL_AFTER_MS is written ahead to the spool: well under a second, so a sandbox killed 1 s after an
# invocation's report loses nothing. Metrics leave on the SDK's PeriodicExportingMetricReader default.
DEFAULT_SPOOL_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_SPOOL_AFTER_MS = 250.0
DEFAULT_QUEUE_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_CLOSE_MARGIN_MS = 10_000.0
DEFAULT_METRICS_INTERVAL_MS = 60_000.0
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_PENDING_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_LOG_BYTES = 256 * 1024
MIN_REQUEST_BYTES = 64 * 1024
MIN_LOG_BYTES = 1024
_SPOOL_SUBDIR = "fgext-spool"


class DeliverySettings:
    """The OTLP sink's delivery settings (``FGEXT_SPOOL_*``, ``FGEXT_OTLP_*``), each checked against its range.

    The one reader of these variables: the agent calls :meth:`from_environ` before registering, so a bad
    value is one line and exit 2 (the platform never sees a half-configured extension), and the OTLP
    plugin calls it again for the values (``fgext.otlp._config``). ``given`` holds the plugin settings
    the agent read (``FGEXT_OTLP_<KEY>``, else ``plugins.otlp.<key>`` in the config file), which win over
    the variable read here. A :class:`ConfigError` names the variable and the accepted range.
    """

    __slots__ = ("close_margin_ms", "max_log_bytes", "max_pending_bytes", "max_request_bytes",
                 "metrics_interval_ms", "queue_max_bytes", "report_log", "spool_after_ms", "spool_dir",
                 "spool_max_bytes")

    spool_dir: str
    spool_max_bytes: int
    spool_after_ms: float
    queue_max_bytes: int
    close_margin_ms: float
    max_request_bytes: int
    max_pending_bytes: int
    max_log_bytes: int
    metrics_interval_ms: float
    report_log: bool

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], given: Optional[Mapping[str, Any]] = None,
                     *, check_spool: bool = True) -> DeliverySettings:
        self = cls()
        given = given or {}

        def raw(name: str, key: Optional[str] = None) -> Tuple[str, Optional[str]]:
            if key is not None and given.get(key) is not None:
                return f"{name} (or plugins.otlp.{key})", str(given[key]).strip()
            return name, environ.get(name, "").strip() or None

        explicit = environ.get("FGEXT_SPOOL_DIR", "").strip()
        self.spool_dir = explicit or os.path.join(environ.get("TMPDIR", "").strip() or "/tmp", _SPOOL_SUBDIR)
        if explicit and check_spool:
            _check_directory("FGEXT_SPOOL_DIR", explicit)
        self.spool_max_bytes = _whole(*raw("FGEXT_SPOOL_MAX_BYTES"), DEFAULT_SPOOL_MAX_BYTES, 0)
        self.spool_after_ms = _millis(*raw("FGEXT_OTLP_SPOOL_AFTER_MS", "spool_after_ms"), DEFAULT_SPOOL_AFTER_MS,
                                     zero=True)
        self.queue_max_bytes = _whole(*raw("FGEXT_OTLP_QUEUE_MAX_BYTES", "queue_max_bytes"), DEFAULT_QUEUE_MAX_BYTES, 1)
        self.close_margin_ms = _millis(*raw("FGEXT_OTLP_CLOSE_MARGIN_MS", "close_margin_ms"), DEFAULT_CLOSE_MARGIN_MS)
        self.metrics_interval_ms = _millis(*raw("FGEXT_OTLP_METRICS_INTERVAL_MS", "metrics_interval_ms"),
                                           DEFAULT_METRICS_INTERVAL_MS)
        request = self.max_request_bytes = _whole(*raw("FGEXT_OTLP_MAX_REQUEST_BYTES", "max_request_bytes"),
                                                  DEFAULT_MAX_REQUEST_BYTES, MIN_REQUEST_BYTES)
        self.max_log_bytes = _whole(*raw("FGEXT_OTLP_MAX_LOG_BYTES", "max_log_bytes"),
                                    min(DEFAULT_MAX_LOG_BYTES, request // 2), MIN_LOG_BYTES,
                                    request // 2, "half of FGEXT_OTLP_MAX_REQUEST_BYTES")
        self.max_pending_bytes = _whole(*raw("FGEXT_OTLP_MAX_PENDING_BYTES", "max_pending_bytes"),
                                        max(DEFAULT_MAX_PENDING_BYTES, request), request,
                                        floor_name="FGEXT_OTLP_MAX_REQUEST_BYTES")
        name, text = raw("FGEXT_OTLP_REPORT_LOG", "report_log")
        self.report_log = _bool({name: text}, name) if text else True
        return self


def _whole(name: str, text: Optional[str], default: int, floor: int, ceiling: Optional[int] = None,
           ceiling_name: str = "", floor_name: str = "") -> int:
    """A whole number of bytes in [floor, ceiling]; the error names the variable and the range."""
    if text is None:
        return default
    low = f"{floor_name} ({floor})" if floor_name else str(floor)
    accepted = f"a whole number of bytes from {low}" + (
        f" to {ceiling_name} ({ceiling})" if ceiling is not None else " up")
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not {accepted}") from None
    if value < floor or (ceiling is not None and value > ceiling):
        raise ConfigError(f"{name}={text!r} must be {accepted}")
    return value


def _millis(name: str, text: Optional[str], default: float, *, zero: bool = False) -> float:
    """A finite number of milliseconds, positive (or, with ``zero``, at least 0)."""
    if text is None:
        return default
    accepted = "a number of milliseconds >= 0" if zero else "a positive number of milliseconds"
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not {accepted}") from None
    if value != value or value == float("inf") or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name}={text!r} must be {accepted}")
    return value


def _check_directory(name: str, path: str) -> None:
    """``path`` is a directory this process can write to (made if missing); else a ConfigError naming it."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{name}={path!r} cannot be used as a directory: {error.strerror or error}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}={path!r} cannot be used as a directory: not writable")
