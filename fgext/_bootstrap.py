"""The agent's cold start: bind, register and subscribe with the standard library only.

The platform measures an extension's bootstrap by its registration, and aiohttp alone takes a quarter
of a second to import, so nothing heavy is imported here - not even ``typing``, ``dataclasses`` or
``http.client`` (see :mod:`fgext._http`). The socket is bound and listening before registration: a
request that arrives while aiohttp and the plugins load waits in the listen backlog and is served as
soon as the event loop starts (``web.SockSite`` adopts this very socket). Meanwhile a standard-library
thread answers invokes and telemetry on it and keeps their bodies for the agent (:mod:`fgext._early`).
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
import time

from fgext._config import PORT_RANGE, AgentSettings, ListenerLimits
from fgext._errors import ConfigError, FgextError, RegistrationError
from fgext._http import Redirected, post
from fgext._retry import Backoff, retryable_http

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

    from fgext._early import EarlyResponder
    from fgext._plugin import Plugin, RegistrationInfo

__all__ = [
    "Bootstrap",
    "add_arguments",
    "bind_listener",
    "main_run",
    "register",
    "run_command",
    "subscribe",
]

_LISTEN_BACKLOG = 1024
# Registration is on the cold start's path: retry quickly, the platform's API may come up just after us.
_BACKOFF_FIRST = 0.05
_BACKOFF_CAP = 1.0
_ATTEMPT_TIMEOUT_CAP = 3.0


class Bootstrap:
    """What the cold start achieved, handed to the event loop with the bound socket."""

    def __init__(self, settings: AgentSettings, sock: socket.socket, answer: Dict[str, Any], subscribed: bool,
                 exec_monotonic: float, registered_after: float, stop_requested: List[int]) -> None:
        self.settings = settings
        self.sock = sock
        self.answer = answer  # the platform's answer to /extension/register
        self.subscribed = subscribed
        self.exec_monotonic = exec_monotonic
        self.registered_after = registered_after  # seconds from process start to the registration answer
        self.stop_requested = stop_requested  # signals received before the event loop ran
        self.notes: List[Tuple[str, str, Dict[str, Any]]] = []  # (level, event, fields) to log later
        self.limits = ListenerLimits()  # the listener's, read with the settings before registering
        self.early: Optional[EarlyResponder] = None  # answers on the socket until the listener takes it

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def registration(self) -> RegistrationInfo:
        """The plugins' view of the registration (built after the cold start: it needs dataclasses)."""
        from fgext._plugin import RegistrationInfo

        return RegistrationInfo(
            extension_name=self.settings.name,
            address=self.address,
            function_name=str(self.answer.get("functionName") or ""),
            function_version=str(self.answer.get("functionVersion") or ""),
            telemetry_types=self.settings.telemetry_types if self.subscribed else (),
            subscribed=self.subscribed,
        )

    def note(self, level: str, event: str, **fields: Any) -> None:
        """Remember a log line until structured logging is configured."""
        self.notes.append((level, event, fields))


def bind_listener(port: Optional[int]) -> socket.socket:
    """Bind and listen on 127.0.0.1: the given port, else the first free one of 8081-8090."""
    candidates = [port] if port is not None else list(range(PORT_RANGE[0], PORT_RANGE[1] + 1))
    for candidate in candidates:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR lets a restarted agent take its port back from TIME_WAIT; it never lets two
        # live listeners share a port on Linux.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", candidate))
            sock.listen(_LISTEN_BACKLOG)
        except OSError as error:
            sock.close()
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise ConfigError(f"cannot listen on 127.0.0.1:{candidate}: {error.strerror}") from None
        return sock
    if port is not None:
        raise ConfigError(f"FGEXT_PORT={port}: 127.0.0.1:{port} is already in use")
    raise ConfigError(
        "every extension port 127.0.0.1:8081-8090 is in use: a function runs at most 10 extensions, "
        "and each needs its own port"
    )


def _post(host: str, port: int, path: str, body: bytes, headers: Dict[str, str],
          timeout: float) -> Tuple[int, bytes]:
    return post(host, port, path, body, {"Content-Type": "application/json", **headers}, timeout)


def _error_text(status: int, body: bytes) -> str:
    """The platform's own words for a refusal: ``errorInfo``, ``error_msg`` or the raw body."""
    import json

    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        info = data.get("errorInfo")
        if isinstance(info, dict) and (info.get("errorMessage") or info.get("errorType")):
            return f"HTTP {status}: {info.get('errorType') or ''} {info.get('errorMessage') or ''}".strip()
        for key in ("error_msg", "errorMessage", "message", "error"):
            if isinstance(data.get(key), str) and data[key]:
                code = data.get("error_code") or data.get("errorCode")
                return f"HTTP {status}: {code + ': ' if isinstance(code, str) and code else ''}{data[key]}"
    text = body.decode("utf-8", "replace").strip()
    return f"HTTP {status}: {text[:500]}" if text else f"HTTP {status}"


def _redirect_text(redirect: Redirected) -> str:
    """A refused redirect, its ``Location`` without credentials (only ever built on failure)."""
    from fgext._logging import redact_url

    where = redact_url(redirect.location) if redirect.location else "no Location"
    return f"HTTP {redirect.status} redirect to {where}, which fgext does not follow"


def register(settings: AgentSettings, address: str, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> Tuple[Dict[str, Any], int]:
    """``POST /extension/register``, retrying transient failures until ``register_timeout``.

    What is transient (connection errors, time-outs, 429, 502-504) and how long to back off is
    :mod:`fgext._retry`'s decision: the platform's API may come up after the extension. Any other
    refusal is final. Returns the decoded answer and the number of attempts.
    """
    deadline = clock() + settings.register_timeout
    headers = {
        "FunctionGraph-Extension-Name": settings.name,
        "FunctionGraph-Extension-Address": address,
    }
    backoff = Backoff(_BACKOFF_FIRST, _BACKOFF_CAP)
    attempts = 0
    last = "no attempt made"
    while True:
        attempts += 1
        remaining = deadline - clock()
        try:
            status, body = _post(settings.api_host, settings.api_port, "/extension/register", b"{}", headers,
                                 timeout=max(0.05, min(_ATTEMPT_TIMEOUT_CAP, remaining)))
        except OSError as error:
            last = f"{type(error).__name__}: {error}"
        except Redirected as redirect:
            raise RegistrationError(f"the platform at {settings.api_addr} answered registration of "
                                    f"{settings.name} with {_redirect_text(redirect)}") from None
        else:
            if status == 200:
                # Imported once the platform has the registration: json brings re and its compiler, the
                # largest import left on the path to the first request (bench/RESULTS.md, cold start).
                import json

                try:
                    answer = json.loads(body) if body.strip() else {}
                except ValueError:
                    answer = {}
                return (answer if isinstance(answer, dict) else {}), attempts
            last = _error_text(status, body)
            if not retryable_http(status):
                raise RegistrationError(
                    f"the platform refused registration of {settings.name} at {address}: {last}"
                )
        remaining = deadline - clock()
        if remaining <= 0:
            raise RegistrationError(
                f"could not register with the platform at {settings.api_addr} within "
                f"{settings.register_timeout:g} s ({attempts} attempts); last error: {last}"
            )
        sleep(min(backoff.next_delay(), remaining))


def subscribe(settings: AgentSettings, port: int) -> Tuple[bool, str]:
    """``POST /telemetry``; a refusal is reported, not fatal: invokes are still worth serving."""
    import json

    body = json.dumps({
        "subscriber": {"protocol": "POST", "uri": f"http://127.0.0.1:{port}"},
        "types": list(settings.telemetry_types),
    }).encode()
    headers = {
        "FunctionGraph-Extension-Name": settings.name,
        "FunctionGraph-Extension-Address": f"127.0.0.1:{port}",
    }
    last = ""
    backoff = Backoff(_BACKOFF_FIRST, _BACKOFF_CAP)
    for attempt in range(3):
        try:
            status, answer = _post(settings.api_host, settings.api_port, "/telemetry", body, headers,
                                   timeout=_ATTEMPT_TIMEOUT_CAP)
        except OSError as error:
            last = f"{type(error).__name__}: {error}"
        except Redirected as redirect:
            return False, _redirect_text(redirect)
        else:
            if status == 200:
                return True, ""
            last = _error_text(status, answer)
            if not retryable_http(status):
                break
        if attempt < 2:
            time.sleep(backoff.next_delay())
    return False, last


def _bootstrap(exec_monotonic: float) -> Bootstrap:
    stop_requested: List[int] = []

    def early_stop(signum: int, _frame: Any) -> None:
        # Before the event loop runs, a stop request is remembered and honoured the moment it starts.
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, early_stop)
    signal.signal(signal.SIGINT, early_stop)

    settings = AgentSettings.from_environ()
    limits = ListenerLimits.from_environ(settings.environ)
    sock = bind_listener(settings.port)
    port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    try:
        answer, attempts = register(settings, address)
    except BaseException:
        sock.close()
        raise
    registered_after = time.monotonic() - exec_monotonic

    subscribed, refusal = False, ""
    if settings.telemetry_types:
        subscribed, refusal = subscribe(settings, port)

    boot = Bootstrap(settings, sock, answer, subscribed, exec_monotonic, registered_after, stop_requested)
    boot.limits = limits
    boot.note("info", "registered", address=address, name=settings.name, attempts=attempts,
              function=str(answer.get("functionName") or ""), version=str(answer.get("functionVersion") or ""),
              registered_ms=round(registered_after * 1000, 1))
    if settings.telemetry_types and not subscribed:
        boot.note("error", "telemetry subscription refused; serving invokes without telemetry",
                  reason=refusal, types=list(settings.telemetry_types))
    elif subscribed:
        boot.note("info", "subscribed to telemetry", types=list(settings.telemetry_types),
                  uri=f"http://{address}")
    return boot


def _process_start() -> float:
    """Monotonic time of this process's exec, so the registration figure includes interpreter start."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])
        import os

        with open("/proc/uptime", "rb") as handle:
            uptime = float(handle.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return time.monotonic() - max(0.0, age)
    except (OSError, ValueError, IndexError):
        return time.monotonic()


def _scrubbed(text: str) -> str:
    """``text`` with the environment's secrets masked (the platform's refusal may quote a header)."""
    import os

    from fgext._logging import scrub_text, secret_values

    return scrub_text(text, secret_values(os.environ))


def main_run(plugins: Optional[Sequence[Plugin]] = None) -> int:
    """The agent process: cold start here, then the event loop in :mod:`fgext._agent`.

    ``plugins`` are plugin instances to run besides those named in ``FGEXT_PLUGINS`` (the decorator
    style of writing an extension passes its own here).
    """
    exec_monotonic = _process_start()
    try:
        boot = _bootstrap(exec_monotonic)
    except FgextError as error:
        print(f"fgext run: error: {_scrubbed(str(error))}", file=sys.stderr, flush=True)
        return error.exit_code
    # The platform may wait for the first invoke's answer: give it one while the heavy imports run.
    from fgext._early import EarlyResponder

    boot.early = EarlyResponder(boot.sock, boot.settings.max_body_bytes, header_timeout=boot.limits.header_timeout)
    boot.early.start()
    from fgext._agent import serve  # heavy: aiohttp, structlog, plugins

    return serve(boot, plugins)


def add_arguments(parser: Any) -> None:
    parser.epilog = (
        "Configured by the environment: EXTENSION_API_ADDR (required), FGEXT_NAME, FGEXT_PORT, "
        "FGEXT_REGISTER_TIMEOUT, FGEXT_TELEMETRY_TYPES, FGEXT_MAX_BODY_BYTES, FGEXT_SHUTDOWN_TIMEOUT, "
        "FGEXT_PLUGINS, FGEXT_CONFIG, FGEXT_STRICT, FGEXT_LOG_LEVEL and the standard OTEL_* variables."
    )


def run_command(_args: Any) -> int:
    return main_run()

