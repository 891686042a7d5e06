"""The OTLP plugin's configuration, read from standard ``OTEL_*`` variables and a few ``FGEXT_*`` ones.

Nothing is invented where OpenTelemetry has a standard variable; the variable names are those of the SDK's
``opentelemetry.sdk.environment_variables``, kept in ``_env`` (tested against the SDK's own) so that the
agent needs no SDK. Every bad value raises :class:`fgext.ConfigError` naming the variable, so the agent
refuses to start with a clear message instead of exporting to the wrong place. The ``FGEXT_SPOOL_*`` and
``FGEXT_OTLP_*`` settings of the delivery path are read by :class:`fgext._config.DeliverySettings`, which
the agent also runs before registering (a bad value there is exit 2 before the platform sees the agent).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import unquote, urlsplit

from fgext._config import (
    DEFAULT_MAX_LOG_BYTES,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_METRICS_INTERVAL_MS,
    DeliverySettings,
)
from fgext._errors import ConfigError
from fgext._sampling import HeadSampler, TailRule
from fgext.otlp import _env as env

__all__ = ["SIGNALS", "OtlpConfig", "SignalConfig", "load_config", "parse_headers"]

SIGNALS: Tuple[str, ...] = ("traces", "logs", "metrics")

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"
_DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
_DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
_DEFAULT_TIMEOUT_MS = 10_000.0
# FunctionGraph's largest synchronous timeout; used when RUNTIME_TIMEOUT is absent.
_DEFAULT_FUNCTION_TIMEOUT_S = 900.0

# Per-signal variable names (the SDK's): (endpoint, protocol, headers, compression, timeout,
# insecure, exporter selector).
_PER_SIGNAL: Dict[str, Tuple[str, str, str, str, str, str, str]] = {
    "traces": (
        env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
        env.OTEL_EXPORTER_OTLP_TRACES_HEADERS, env.OTEL_EXPORTER_OTLP_TRACES_COMPRESSION,
        env.OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, env.OTEL_EXPORTER_OTLP_TRACES_INSECURE,
        env.OTEL_TRACES_EXPORTER,
    ),
    "logs": (
        env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, env.OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
        env.OTEL_EXPORTER_OTLP_LOGS_HEADERS, env.OTEL_EXPORTER_OTLP_LOGS_COMPRESSION,
        env.OTEL_EXPORTER_OTLP_LOGS_TIMEOUT, env.OTEL_EXPORTER_OTLP_LOGS_INSECURE,
        env.OTEL_LOGS_EXPORTER,
    ),
    "metrics": (
        env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
        env.OTEL_EXPORTER_OTLP_METRICS_HEADERS, env.OTEL_EXPORTER_OTLP_METRICS_COMPRESSION,
        env.OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, env.OTEL_EXPORTER_OTLP_METRICS_INSECURE,
        env.OTEL_METRICS_EXPORTER,
    ),
}


# TLS files, per signal then general: (CA bundle, client key, client certificate).
_TLS: Dict[str, Tuple[str, str, str]] = {
    "": (env.OTEL_EXPORTER_OTLP_CERTIFICATE, env.OTEL_EXPORTER_OTLP_CLIENT_KEY,
         env.OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE),
    "traces": (env.OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE, env.OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY,
               env.OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE),
    "logs": (env.OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE, env.OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY,
             env.OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE),
    "metrics": (env.OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, env.OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY,
                env.OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE),
}
# An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class SignalConfig:
    """Where and how one signal (traces, logs or metrics) is exported."""

    signal: str
    enabled: bool
    protocol: str
    endpoint: str  # a full URL for http/protobuf, a URL or host:port target for grpc
    headers: Mapping[str, str] = field(default_factory=dict)
    compression: str = "none"  # "gzip" or "none"
    timeout_s: float = _DEFAULT_TIMEOUT_MS / 1000
    insecure: bool = False  # grpc only: plaintext instead of TLS
    certificate: Optional[str] = None  # CA bundle (PEM) to trust instead of the system's
    client_key: Optional[str] = None  # PEM private key for a client certificate
    client_certificate: Optional[str] = None  # PEM client certificate (may hold the key too)


@dataclass(frozen=True)
class OtlpConfig:
    """Everything the OTLP plugin needs to know, validated."""

    disabled: bool
    signals: Mapping[str, SignalConfig]
    service_name: Optional[str]
    resource_attributes: Mapping[str, str]
    spool_dir: Path
    spool_max_bytes: int
    spool_after_s: float  # FGEXT_OTLP_SPOOL_AFTER_MS: unacknowledged this long -> written ahead to the spool
    queue_max_bytes: int  # FGEXT_OTLP_QUEUE_MAX_BYTES: serialized requests held in memory at most
    temporality: str  # "cumulative" or "delta"
    function_timeout_s: float
    init_timeout_s: float
    close_margin_s: float
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    report_log: bool = True  # FGEXT_OTLP_REPORT_LOG: one log record per invocation report
    #: OTEL_TRACES_SAMPLER/_ARG and the FGEXT_SAMPLE_KEEP_* tail rule (fgext._sampling), for fgext's own traces
    head: HeadSampler = field(default_factory=HeadSampler)
    tail: TailRule = field(default_factory=TailRule)
    metrics_interval_s: float = DEFAULT_METRICS_INTERVAL_MS / 1000  # FGEXT_OTLP_METRICS_INTERVAL_MS

    @property
    def open_wait_s(self) -> float:
        """How long a request may wait for its next event before its spans are closed as incomplete."""
        return max(self.function_timeout_s, self.init_timeout_s) + self.close_margin_s

    @property
    def uses_grpc(self) -> bool:
        return any(s.enabled and s.protocol == GRPC for s in self.signals.values())


def _get(environ: Mapping[str, str], name: str) -> Optional[str]:
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _bool(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = _get(environ, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use true or false)")


def _positive(environ: Mapping[str, str], name: str, default: float, *, unit: str) -> float:
    value = _get(environ, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number of {unit}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive number of {unit}")
    return number


def _exporter_enabled(environ: Mapping[str, str], name: str) -> bool:
    value = _get(environ, name)
    if value is None:
        return True
    names = {part.strip().lower() for part in value.split(",") if part.strip()}
    unknown = names - {"otlp", "none"}
    if unknown:
        raise ConfigError(
            f"{name}={value!r}: the fgext OTLP plugin supports only 'otlp' or 'none' "
            f"(unsupported: {', '.join(sorted(unknown))})"
        )
    return "otlp" in names


def _protocol(environ: Mapping[str, str], name: str) -> str:
    value = _get(environ, name) or _get(environ, env.OTEL_EXPORTER_OTLP_PROTOCOL) or HTTP_PROTOBUF
    lowered = value.lower()
    if lowered in (HTTP_PROTOBUF, GRPC):
        return lowered
    source = name if _get(environ, name) else env.OTEL_EXPORTER_OTLP_PROTOCOL
    raise ConfigError(f"{source}={value!r} is not supported: use http/protobuf (the default) or grpc")


def _http_endpoint(environ: Mapping[str, str], signal: str, name: str) -> str:
    specific = _get(environ, name)
    if specific is not None:
        url = given = specific  # a per-signal endpoint is used exactly as given (OTLP exporter spec)
        source = name
    else:
        given = _get(environ, env.OTEL_EXPORTER_OTLP_ENDPOINT) or _DEFAULT_HTTP_ENDPOINT
        url = given.rstrip("/") + "/v1/" + signal
        source = env.OTEL_EXPORTER_OTLP_ENDPOINT
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The user's own value, not the URL derived from it: that is what they look for in their settings.
        raise ConfigError(f"{source}={given!r} is not an http:// or https:// URL "
                          "(give the scheme, e.g. http://collector:4318)")
    return url


def _grpc_endpoint(environ: Mapping[str, str], name: str) -> str:
    value = _get(environ, name) or _get(environ, env.OTEL_EXPORTER_OTLP_ENDPOINT) or _DEFAULT_GRPC_ENDPOINT
    return value


def _compression(environ: Mapping[str, str], name: str) -> str:
    source = name if _get(environ, name) else env.OTEL_EXPORTER_OTLP_COMPRESSION
    value = (_get(environ, source) or "none").lower()
    if value not in ("gzip", "none"):
        raise ConfigError(f"{source}={value!r} is not supported: use gzip or none")
    return value


def parse_headers(name: str, value: str) -> Dict[str, str]:
    """Parse a ``*_HEADERS`` value (``key=value`` pairs, comma separated, values percent-decoded).

    A malformed pair is a :class:`ConfigError` naming the variable and the pair's position, never its
    text: header values are credentials. (The SDK's parser logs the bad pair and skips it, which both
    prints the secret and exports without it.)
    """
    headers: Dict[str, str] = {}
    for position, item in enumerate(value.split(","), 1):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key = unquote(key.strip())
        if not sep or not _HEADER_NAME.match(key):
            raise ConfigError(
                f"{name}: entry {position} is not a header: use name=value pairs separated by commas "
                "(value not shown: it may be a secret)"
            )
        decoded = unquote(raw.strip())
        if any(character in decoded for character in "\r\n\0"):  # would end the header, or the head
            raise ConfigError(f"{name}: entry {position} ({key}) has a line break or NUL in its value "
                              "(value not shown: it may be a secret)")
        headers[key.lower()] = decoded
    return headers


def _headers(environ: Mapping[str, str], name: str) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for source in (env.OTEL_EXPORTER_OTLP_HEADERS, name):
        value = _get(environ, source)
        if value is not None:
            headers.update(parse_headers(source, value))
    return headers


def _tls_file(environ: Mapping[str, str], signal: str, index: int) -> Optional[str]:
    """One TLS file setting (per-signal variable first), checked readable; ``None`` when unset."""
    name = _TLS[signal][index] if _get(environ, _TLS[signal][index]) else _TLS[""][index]
    path = _get(environ, name)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise ConfigError(f"{name}={path!r} cannot be read: {error.strerror or error}") from None
    return path


def _check_credentials(signal: str, endpoint: str, endpoint_source: str, headers: Mapping[str, str]) -> None:
    """Credentials given two ways are a configuration error, not something to retry forever."""
    parts = urlsplit(endpoint) if "://" in endpoint else None
    if parts is not None and (parts.username or parts.password) and "authorization" in headers:
        raise ConfigError(
            f"{endpoint_source} has credentials in the URL and an Authorization header is set for {signal}: "
            "use one or the other"
        )


def _resource_attributes(environ: Mapping[str, str]) -> Dict[str, str]:
    """Parse ``OTEL_RESOURCE_ATTRIBUTES`` the way the SDK's detector does (key=value, percent-decoded)."""
    value = _get(environ, env.OTEL_RESOURCE_ATTRIBUTES)
    attributes: Dict[str, str] = {}
    if value is None:
        return attributes
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{env.OTEL_RESOURCE_ATTRIBUTES}: {item.strip()!r} is not key=value")
        attributes[key.strip()] = unquote(raw.strip())
    return attributes


def _signal(environ: Mapping[str, str], signal: str) -> SignalConfig:
    endpoint_var, protocol_var, headers_var, compression_var, timeout_var, insecure_var, exporter_var = (
        _PER_SIGNAL[signal]
    )
    enabled = _exporter_enabled(environ, exporter_var)
    protocol = _protocol(environ, protocol_var)
    if protocol == GRPC:
        endpoint = _grpc_endpoint(environ, endpoint_var)
        scheme = urlsplit(endpoint).scheme if "://" in endpoint else ""
        if scheme == "http":
            insecure = True
        elif scheme == "https":
            insecure = False
        else:
            insecure = _bool(environ, insecure_var, _bool(environ, env.OTEL_EXPORTER_OTLP_INSECURE))
    else:
        endpoint = _http_endpoint(environ, signal, endpoint_var)
        insecure = False
    headers = _headers(environ, headers_var)
    endpoint_source = endpoint_var if _get(environ, endpoint_var) else env.OTEL_EXPORTER_OTLP_ENDPOINT
    _check_credentials(signal, endpoint, endpoint_source, headers)
    certificate, client_key, client_certificate = (_tls_file(environ, signal, index) for index in range(3))
    if client_key is not None and client_certificate is None:
        raise ConfigError(
            f"{_TLS[signal][1]} or {_TLS[''][1]} is set without a client certificate "
            f"({_TLS[''][2]} or its per-signal form)"
        )
    timeout_source = timeout_var if _get(environ, timeout_var) else env.OTEL_EXPORTER_OTLP_TIMEOUT
    timeout_ms = _positive(environ, timeout_source, _DEFAULT_TIMEOUT_MS, unit="milliseconds")
    return SignalConfig(
        signal=signal, enabled=enabled, protocol=protocol, endpoint=endpoint,
        headers=headers, compression=_compression(environ, compression_var),
        timeout_s=timeout_ms / 1000, insecure=insecure, certificate=certificate, client_key=client_key,
        client_certificate=client_certificate,
    )


def load_config(environ: Mapping[str, str], *, close_margin_ms: Optional[float] = None,
                settings: Optional[Mapping[str, Any]] = None) -> OtlpConfig:
    """Read and validate the plugin's configuration; raise :class:`ConfigError` on any bad value.

    ``close_margin_ms`` and ``settings`` (``max_request_bytes``, ``max_pending_bytes``, ``max_log_bytes``,
    ``metrics_interval_ms``) are the plugin settings the agent already read (from the config file or
    ``FGEXT_OTLP_<KEY>``). The ``FGEXT_SPOOL_*`` and ``FGEXT_OTLP_*`` settings are read by
    :class:`fgext._config.DeliverySettings`, which the agent ran before registering; the standard
    ``OTEL_*`` variables are read here, when the plugin starts.
    """
    given = dict(settings or {})
    if close_margin_ms is not None:
        given["close_margin_ms"] = close_margin_ms
    delivery = DeliverySettings.from_environ(environ, given, check_spool=False)
    disabled = _bool(environ, env.OTEL_SDK_DISABLED)
    signals = {signal: _signal(environ, signal) for signal in SIGNALS}
    temporality_var = env.OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE
    temporality = (_get(environ, temporality_var) or "cumulative").lower()
    if temporality not in ("cumulative", "delta", "lowmemory"):
        raise ConfigError(
            f"{env.OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE}={temporality!r}: "
            "use cumulative, delta or lowmemory"
        )
    function_timeout = _positive(environ, "RUNTIME_TIMEOUT", _DEFAULT_FUNCTION_TIMEOUT_S, unit="seconds")
    return OtlpConfig(
        disabled=disabled,
        signals=signals,
        service_name=_get(environ, env.OTEL_SERVICE_NAME),
        resource_attributes=_resource_attributes(environ),
        spool_dir=Path(delivery.spool_dir),
        spool_max_bytes=delivery.spool_max_bytes,
        spool_after_s=delivery.spool_after_ms / 1000,
        queue_max_bytes=delivery.queue_max_bytes,
        # lowmemory means delta for counters and histograms, which is all fgext exports
        temporality="cumulative" if temporality == "cumulative" else "delta",
        function_timeout_s=function_timeout,
        init_timeout_s=_positive(environ, "RUNTIME_INITIALIZER_TIMEOUT", function_timeout, unit="seconds"),
        close_margin_s=delivery.close_margin_ms / 1000,
        max_request_bytes=delivery.max_request_bytes,
        max_pending_bytes=delivery.max_pending_bytes,
        max_log_bytes=delivery.max_log_bytes,
        report_log=delivery.report_log,
        head=HeadSampler.from_environ(environ),
        tail=TailRule.from_environ(environ),
        metrics_interval_s=delivery.metrics_interval_ms / 1000,
    )
