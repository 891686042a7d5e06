"""The emulated Extension and Telemetry API: ``POST /extension/register`` and ``POST /telemetry``.

Every rule the spec states is enforced, and a request that breaks one is answered the way the spec
documents errors: status 400 ("bad request, with an error message"), or 500 when the emulator itself
fails. The body of every answer has the shape of register's documented success body, so a client
reads one shape everywhere::

    {"errorInfo": {"errorType": "AddressInUse", "errorMessage": "127.0.0.1:8081 is taken by ..."}}

Register's success adds ``functionName`` and ``functionVersion``; a success has empty error fields.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

from aiohttp import web
from yarl import URL

from fgext._errors import ConfigError

__all__ = [
    "EXTENSION_PORTS",
    "MAX_EXTENSIONS",
    "TELEMETRY_TYPES",
    "PlatformApi",
    "Registration",
    "Rejection",
    "Subscription",
]

NAME_HEADER = "FunctionGraph-Extension-Name"
ADDRESS_HEADER = "FunctionGraph-Extension-Address"
EXTENSION_PORTS = range(8081, 8091)
MAX_EXTENSIONS = 10
TELEMETRY_TYPES = ("platform", "function", "extension")


@dataclass(frozen=True)
class Registration:
    """One extension that registered: its script name and the address of its invoke server."""

    name: str
    host: str
    port: int
    at: float

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Subscription:
    """The one telemetry subscriber: which extension, where to POST, which event types."""

    extension: str
    uri: str
    types: Tuple[str, ...]


@dataclass(frozen=True)
class Rejection:
    """A request the platform refused, kept for the run's report."""

    path: str
    extension: str
    error_type: str
    message: str
    at: float = field(default_factory=time.time)


class _Refused(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _body(error_type: str = "", message: str = "", **extra: Any) -> Dict[str, Any]:
    return {**extra, "errorInfo": {"errorType": error_type, "errorMessage": message}}


def _parse_address(value: str) -> Tuple[str, int]:
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or host != "127.0.0.1" or not port_text.isdigit():
        raise _Refused("InvalidAddress",
                       f"{ADDRESS_HEADER} must be 127.0.0.1:<port> with a port 8081-8090, got {value!r}")
    port = int(port_text)
    if port not in EXTENSION_PORTS:
        raise _Refused("InvalidAddress", f"{ADDRESS_HEADER} port must be 8081-8090, got {port}")
    return host, port


class PlatformApi:
    """The HTTP side of the emulated platform; the emulator tells it which scripts it started.

    Lifecycle like aiohttp's ``AppRunner``: :meth:`start` binds and reports the real port,
    :meth:`stop` releases it. ``changed`` is set after every successful registration or
    subscription so that waiters can look at the new state.
    """

    def __init__(self, function_name: str, function_version: str) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.started_scripts: Set[str] = set()
        self.registrations: Dict[str, Registration] = {}
        self.subscription: Optional[Subscription] = None
        self.rejections: List[Rejection] = []
        # Created in start(): on Python 3.9 an asyncio primitive binds to the loop current at creation.
        self.changed: asyncio.Event
        #: called with each accepted subscription (the telemetry sender starts delivering to it)
        self.on_subscribe: Optional[Callable[[Subscription], None]] = None
        self._runner: Optional[web.AppRunner] = None
        self._address: Optional[Tuple[str, int]] = None
        self.app = web.Application(middlewares=[self._errors])
        self.app.router.add_post("/extension/register", self._register)
        self.app.router.add_post("/telemetry", self._telemetry)

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port); return ``host:port`` as actually bound."""
        self.changed = asyncio.Event()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"cannot serve the platform API on {host}:{port}: {error}") from None
        bound = self._runner.addresses[0]
        self._address = (str(bound[0]), int(bound[1]))
        return self.address

    @property
    def address(self) -> str:
        """``host:port`` as exported in ``EXTENSION_API_ADDR``."""
        if self._address is None:
            raise RuntimeError("the platform API is not started")
        return f"{self._address[0]}:{self._address[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---------------------------------------------------------------------------------- handlers

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        extension = request.headers.get(NAME_HEADER, "").strip()
        try:
            return await handler(request)
        except _Refused as refused:
            self.rejections.append(Rejection(request.path, extension, refused.error_type, refused.message))
            return web.json_response(_body(refused.error_type, refused.message), status=400)
        except web.HTTPException:
            raise
        except Exception as error:  # the documented "500 service error"
            message = f"{type(error).__name__}: {error}"
            self.rejections.append(Rejection(request.path, extension, "ServiceError", message))
            return web.json_response(_body("ServiceError", message), status=500)

    async def _register(self, request: web.Request) -> web.Response:
        name = request.headers.get(NAME_HEADER, "").strip()
        address = request.headers.get(ADDRESS_HEADER, "").strip()
        if not name:
            raise _Refused("MissingName", f"the {NAME_HEADER} header is required")
        if not address:
            raise _Refused("MissingAddress", f"the {ADDRESS_HEADER} header is required")
        if name not in self.started_scripts:
            started = ", ".join(sorted(self.started_scripts)) or "none"
            raise _Refused("UnknownExtension",
                           f"{NAME_HEADER} must be the full file name of a started extension script "
                           f"(started: {started}), got {name!r}")
        if name in self.registrations:
            raise _Refused("AlreadyRegistered", f"{name} is already registered")
        if len(self.registrations) >= MAX_EXTENSIONS:
            raise _Refused("TooManyExtensions", f"a function has at most {MAX_EXTENSIONS} extensions")
        host, port = _parse_address(address)
        for other in self.registrations.values():
            if other.port == port:
                raise _Refused("AddressInUse", f"{host}:{port} is already used by {other.name}")
        self.registrations[name] = Registration(name=name, host=host, port=port, at=time.time())
        await self._changed()
        return web.json_response(_body(functionName=self.function_name,
                                       functionVersion=self.function_version))

    async def _telemetry(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError as error:
            raise _Refused("InvalidRequestBody", f"body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise _Refused("InvalidRequestBody", "body must be a JSON object with subscriber and types")
        extension = self._subscriber_name(request.headers.get(NAME_HEADER, "").strip())
        subscriber = body.get("subscriber")
        if not isinstance(subscriber, dict):
            raise _Refused("InvalidRequestBody", "subscriber must be an object with protocol and uri")
        protocol = subscriber.get("protocol")
        if not isinstance(protocol, str) or protocol.strip() != "POST":
            raise _Refused("InvalidProtocol", f"subscriber.protocol must be \"POST\", got {protocol!r}")
        uri = self._checked_uri(subscriber.get("uri"), extension)
        types = body.get("types")
        if not isinstance(types, list) or not types:
            raise _Refused("InvalidTypes", f"types must be a non-empty array of {list(TELEMETRY_TYPES)}")
        cleaned: List[str] = []
        for item in types:
            if not isinstance(item, str) or item.strip() not in TELEMETRY_TYPES:
                raise _Refused("InvalidTypes", f"type {item!r} is not one of {list(TELEMETRY_TYPES)}")
            if item.strip() not in cleaned:
                cleaned.append(item.strip())
        if self.subscription is not None and self.subscription.extension != extension:
            raise _Refused("SubscriberExists",
                           f"at most one extension may subscribe to telemetry; "
                           f"{self.subscription.extension} already did")
        # The same extension subscribing again (say, after a timed-out answer) replaces its subscription.
        self.subscription = Subscription(extension=extension, uri=uri, types=tuple(cleaned))
        if self.on_subscribe is not None:
            self.on_subscribe(self.subscription)
        await self._changed()
        return web.json_response(_body())

    # ---------------------------------------------------------------------------------- helpers

    def _subscriber_name(self, header: str) -> str:
        """Who subscribes: the name header when sent, else the only registered extension."""
        if header:
            if header not in self.registrations:
                raise _Refused("NotRegistered", f"{header} must register before it subscribes to telemetry")
            return header
        if not self.registrations:
            raise _Refused("NotRegistered", "an extension must register before it subscribes to telemetry")
        if len(self.registrations) == 1:
            return next(iter(self.registrations))
        raise _Refused("MissingName",
                       f"several extensions are registered: send {NAME_HEADER} to say which one subscribes")

    def _checked_uri(self, value: Any, extension: str) -> str:
        if not isinstance(value, str):
            raise _Refused("InvalidUri",
                           f"subscriber.uri must be http://127.0.0.1:<8081-8090>, got {value!r}")
        text = value.strip()
        try:
            url = URL(text)
            port = url.port
        except ValueError:
            raise _Refused("InvalidUri", f"subscriber.uri {text!r} is not a URL") from None
        if (url.scheme != "http" or url.host != "127.0.0.1" or url.explicit_port is None
                or port not in EXTENSION_PORTS or url.user or url.query_string or url.fragment):
            raise _Refused("InvalidUri", f"subscriber.uri must be http://127.0.0.1:<8081-8090>, got {text!r}")
        for other in self.registrations.values():
            if other.port == port and other.name != extension:
                raise _Refused("AddressInUse", f"port {port} of {text} belongs to {other.name}")
        return text

    async def _changed(self) -> None:
        # Waiters clear the event, look at the state, and wait again: no callback registry needed.
        self.changed.set()
