"""The agent's event loop: serve invokes and telemetry on the socket bound at cold start.

Lifecycle, in order (each step undone in reverse at the end):

1. configure structured logging and replay the cold start's notes;
2. adopt the bound socket with ``web.SockSite`` - requests waiting in its backlog are served now;
3. load, configure and start plugins, then the pipeline's dispatcher and lanes (the pipeline, and its
   bounded queue, exist from the first request: what arrives before the plugins start waits there);
4. run until SIGTERM/SIGINT (the platform documents no shutdown event) or a strict-mode failure;
5. stop accepting, hand the pipeline one deadline (``FGEXT_SHUTDOWN_TIMEOUT`` from the signal) to
   dispatch, flush and shut plugins down, and exit 0.

The first step of every event's path (**listener handler** -> parse -> pipeline -> chain -> a lane per
sink -> the sink): :meth:`Agent._take` has :mod:`fgext._parse` turn a POST's body into typed events and
submits the batch to the pipeline (:mod:`fgext._pipeline`), which answers at once. The body comes from
aiohttp (:meth:`Agent.handle_telemetry`) or, for the platform's plain requests, from the listener's fast
path (:mod:`fgext._listener`, :meth:`Agent.fast_request`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import time
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

from aiohttp import web

from fgext._bootstrap import _LISTEN_BACKLOG, Bootstrap
from fgext._deadline import Deadline
from fgext._discovery import load_plugins, plugin_config
from fgext._discovery_file import agent_file_path, remove_agent_file, write_agent_file
from fgext._errors import EXIT_OK, EXIT_PROBLEMS, FgextError, MalformedEvent
from fgext._events import OtlpPayload
from fgext._listener import ConnectionGuard, GuardedSockSite
from fgext._logging import configure_logging, get_logger
from fgext._parse import parse_batch, parse_invoke
from fgext._pipeline import Pipeline, PluginFailure
from fgext._plugin import Plugin, PluginContext
from fgext._selfstats import AgentStats, event_kind

if TYPE_CHECKING:
    from fgext.otlp._receiver import Receiver

__all__ = ["Agent", "serve"]

_MAX_ERROR_DETAILS = 5
_INVOKE_OK = json.dumps({"status": "ok"})  # the invoke answer, the same every time
# At shutdown, the longest the listener may take to close (in-flight requests get aiohttp's own 0.2 s).
_LISTENER_CLOSE_S = 0.5


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class _Reject(Exception):
    """A request body the agent refuses, with the status and the reason to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _NotPlain(Exception):
    """A body the fast path hands to aiohttp: its answer is not the usual one."""


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise _Reject(400, f"body is not valid gzip: {error}") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise _Reject(413, f"decompressed body exceeds the limit of {limit} bytes (FGEXT_MAX_BODY_BYTES)")
    return out


class Agent:
    """One agent process: HTTP listener, pipeline and lifecycle around a bootstrapped socket."""

    def __init__(self, boot: Bootstrap, plugins: Optional[Sequence[Plugin]] = None) -> None:
        self.boot = boot
        self.registration = boot.registration()
        self._given_plugins = list(plugins or [])
        self.settings = boot.settings
        self.log = get_logger()
        self.limits = boot.limits
        self.guard: Optional[ConnectionGuard] = None
        # Made in run(), before the listener starts: asyncio queues bind to the running loop on 3.9.
        self.pipeline: Optional[Pipeline] = None
        self.stats: Dict[str, int] = {
            "invokes_received": 0, "telemetry_posts": 0, "events_received": 0, "events_malformed": 0,
            "bodies_rejected": 0, "otlp_requests": 0, "otlp_refused": 0,
        }
        self.events_by_kind: Dict[str, int] = {}
        #: what every plugin's context holds as ``stats``: these counters and the pipeline's, read live
        self.stats_view = AgentStats(self.stats, self.events_by_kind, lambda: self.pipeline)
        # Created in run(): on Python 3.9 an Event binds to the loop current at its creation.
        self._stop: Optional[asyncio.Event] = None
        self._exit_code = EXIT_OK
        self._deadline: Optional[Deadline] = None  # set by request_stop
        # Set once what the early responder kept is submitted: requests aiohttp serves wait for it (order).
        self._replayed: Optional[asyncio.Event] = None
        self._replay: Optional[asyncio.Task[None]] = None
        self._waiting: Optional[asyncio.Future[None]] = None  # the last submission waiting its turn (_submit)
        self._receiver: Optional[Receiver] = None  # made by the first export

    # ------------------------------------------------------------------------------ HTTP handlers

    async def _read_body(self, request: web.Request) -> bytes:
        """Read a body (gunzipped), or raise the 4xx response that explains why not."""
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Reject(413, f"body of {request.content_length} bytes exceeds the limit of {limit} bytes "
                               f"(FGEXT_MAX_BODY_BYTES)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Reject(413, f"body exceeds the limit of {limit} bytes (FGEXT_MAX_BODY_BYTES)") from None
        if request.headers.get("Content-Encoding", "").strip().lower() == "gzip":
            # The server runs with auto_decompress=False (the OTLP receiver bounds its own gzip): a gzip
            # body here is decompressed by the same limit, so a bomb stops at it.
            body = _gunzip(body, limit)
        return body

    async def handle_invoke(self, request: web.Request) -> web.Response:
        return await self._handle("invoke", request, time.time_ns())

    async def handle_telemetry(self, request: web.Request) -> web.Response:
        return await self._handle("telemetry", request, 0)

    async def _handle(self, kind: str, request: web.Request, received_ns: int) -> web.Response:
        try:
            answer, wait = self._take(kind, await self._read_body(request), received_ns, request.content_length)
        except _Reject as reject:
            return self._rejected(kind, reject)
        if wait is not None:
            await wait
        return web.Response(text=answer, content_type="application/json")

    def fast_request(self, invoke: bool, body: bytes) -> Optional[Tuple[str, Optional[asyncio.Future[None]]]]:
        """The listener's fast path (fgext._listener): take a plain request's body as :meth:`_handle` would,
        or None - nothing counted or submitted - when the answer would be anything but the usual 200: the
        listener then hands the request to aiohttp, which answers it through :meth:`_handle`."""
        try:
            return self._take("invoke" if invoke else "telemetry", body, time.time_ns(), len(body), plain=True)
        except (_Reject, _NotPlain):
            return None

    def _take(self, kind: str, body: bytes, received_ns: int, size: Optional[int],
              plain: bool = False) -> Tuple[str, Optional[asyncio.Future[None]]]:
        """A body's bytes -> parsed, counted, submitted: the JSON answer, and what to wait for before sending
        it (None: submitted already). Raises :class:`_Reject` for a body refused; with ``plain``,
        :class:`_NotPlain` for one whose answer is not the usual one (some events malformed), before anything
        is counted."""
        answer, payload = self._accept(kind, body, received_ns, plain)
        return answer, self._submit(kind, payload, size)

    def _accept(self, kind: str, body: bytes, received_ns: int, plain: bool = False) -> Tuple[str, Any]:
        """A body's bytes -> parsed and counted, malformed events warned about: the JSON answer and what to
        submit (an invocation, or a telemetry POST's events). The one owner of this step for the listener's
        two paths (:meth:`_take`) and the replay of what the early responder answered (:meth:`_submit_kept`).
        Raises as :meth:`_take` does."""
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise _Reject(400, f"body is not valid JSON: {error}") from None
        try:
            if kind == "invoke":
                invoke = parse_invoke(data, received_ns)
            else:
                batch = parse_batch(data)
        except MalformedEvent as error:
            raise _Reject(400, str(error)) from None
        if kind == "invoke":
            self.stats["invokes_received"] += 1
            return _INVOKE_OK, invoke
        if batch.errors:
            if plain:
                raise _NotPlain  # aiohttp answers it: its warning and answer have one owner
            self._count(batch.events)
            self.stats["events_malformed"] += batch.malformed
            self.log.warning("malformed telemetry events skipped", count=batch.malformed,
                             kept=len(batch.events), errors=batch.errors[:_MAX_ERROR_DETAILS])
            return json.dumps({"accepted": len(batch.events), "malformed": batch.malformed,
                               "errors": batch.errors[:_MAX_ERROR_DETAILS]}), batch.events
        self._count(batch.events)
        # the usual answer, written without json.dumps (the same JSON)
        return f'{{"accepted": {len(batch.events)}, "malformed": 0, "errors": []}}', batch.events

    def _count(self, events: Sequence[Any]) -> None:
        """A telemetry POST's events in the counters, by kind (:func:`event_kind`)."""
        self.stats["telemetry_posts"] += 1
        self.stats["events_received"] += len(events)
        by_kind = self.events_by_kind
        # the kind is a property of the class: counting classes keeps the per-event work in C
        for cls, count in Counter(map(type, events)).items():
            kind = event_kind(cls)
            by_kind[kind] = by_kind.get(kind, 0) + count

    def _rejected(self, what: str, reject: _Reject) -> web.Response:
        self.stats["bodies_rejected"] += 1
        self.log.warning(f"{what} body rejected", status=reject.status, reason=reject.message[:300])
        return _error(reject.status, reject.message)

    def _on_export(self, signal_name: str, request: Any) -> None:
        """The OTLP receiver's callback: the function's export enters the pipeline, or is refused (503)."""
        from fgext.otlp._receiver import Refused

        assert self.pipeline is not None  # made before the listener starts
        if not self.pipeline.offer_telemetry([OtlpPayload(signal_name, request, time.time_ns())]):
            self.stats["otlp_refused"] += 1
            raise Refused("the agent's queue is full", retry_after_s=1)
        self.stats["otlp_requests"] += 1

    async def _handle_export(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/{traces,logs,metrics}``: the receiver (fgext.otlp._receiver) answers. It is made on the
        first export: with it comes protobuf, a megabyte kept for the process's life, which an agent whose
        function never exports (and whose plugins do not speak OTLP) does without."""
        if self._receiver is None:
            from fgext.otlp._receiver import Receiver

            self._receiver = Receiver(self._on_export)
        return await self._receiver.handle(request.match_info["signal"], request)

    def _submit(self, kind: str, payload: Any, size: Optional[int] = None) -> Optional[asyncio.Future[None]]:
        """Submit now, or return what to await until submitted: while the early responder's bodies are being
        replayed, or a submission waits for room in the queue, the next waits behind it (arrival order)."""
        assert self.pipeline is not None  # made before the listener starts
        waiting = self._waiting
        if (waiting is None or waiting.done()) and (self._replayed is None or self._replayed.is_set()) \
                and self.pipeline.submit_now(kind, payload, size):
            return None
        self._waiting = task = asyncio.ensure_future(self._submit_after(waiting, kind, payload, size))
        return task

    async def _submit_after(self, before: Optional[asyncio.Future[None]], kind: str, payload: Any,
                            size: Optional[int]) -> None:
        assert self.pipeline is not None
        if before is not None and not before.done():
            await asyncio.wait((before,))
        if self._replayed is not None and not self._replayed.is_set():
            await self._replayed.wait()
        if kind == "invoke":
            await self.pipeline.submit_invoke(payload)
        else:
            await self.pipeline.submit_telemetry(payload, size)

    async def _submit_kept(self, kept: Sequence[Tuple[str, int, bytes]]) -> None:
        """Submit, in arrival order, the bodies the early responder answered (fgext._early), parsed and
        counted as the listener would have (:meth:`_accept`); one it would have refused is counted and logged
        as rejected. The pipeline is awaited directly: :meth:`_submit` would queue behind this very replay."""
        assert self.pipeline is not None and self._replayed is not None
        try:
            for kind, received_ns, body in kept:
                try:
                    _, payload = self._accept(kind, body, received_ns)
                except _Reject as reject:
                    reason = f"answered before the listener started: {reject.message}"
                    self._rejected(kind, _Reject(reject.status, reason))
                    continue
                if kind == "invoke":
                    await self.pipeline.submit_invoke(payload)
                else:
                    await self.pipeline.submit_telemetry(payload, len(body))
        finally:
            self._replayed.set()

    # --------------------------------------------------------------------------------- lifecycle

    def request_stop(self, reason: str, exit_code: int = EXIT_OK) -> None:
        if self._stop is not None and not self._stop.is_set():
            # The shutdown deadline counts from the signal, not from when the loop gets round to it.
            self._deadline = Deadline.after(self.settings.shutdown_timeout)
            self.log.info("stopping", reason=reason)
            self._exit_code = exit_code
            self._stop.set()
        elif exit_code != EXIT_OK and self._exit_code == EXIT_OK:
            # A failure found while stopping (a strict plugin failing on the last batch, which is dispatched
            # after SIGTERM) still decides the exit status.
            self.log.info("stopping", reason=reason)
            self._exit_code = exit_code

    def _context(self, plugin: Plugin) -> PluginContext:
        name = plugin.name or type(plugin).__name__
        return PluginContext(
            name=name,
            registration=self.registration,
            config=plugin_config(plugin, self.settings.config, self.settings.environ),
            logger=get_logger(plugin=name),
            stats=self.stats_view,
            environ=self.settings.environ,
        )

    async def _start_pipeline(self) -> None:
        # An extension written with fgext's API brings its own plugins; FGEXT_PLUGINS adds to them only
        # when it is set explicitly, so such an extension does not also start the default OTLP export.
        named = self.settings.plugins
        if self._given_plugins and "FGEXT_PLUGINS" not in self.settings.environ:
            named = ()
        plugins = [*self._given_plugins, *load_plugins(named)]
        contexts = {id(p): self._context(p) for p in plugins}  # validate every config before any start
        pipeline = self.pipeline
        assert pipeline is not None
        await pipeline.start(lambda p: contexts[id(p)], plugins)
        # What is loaded by now (modules, protobuf descriptors, plugin state) lives as long as the process.
        # Out of the collector's sight, a full collection no longer walks its ~40,000 objects: 15-20 ms
        # of a stopped loop on the development machine, now ~0 (bench/RESULTS.md, latency).
        gc.freeze()
        self.log.info("pipeline started", plugins=[p.name or type(p).__name__ for p in plugins],
                      flush=str(pipeline.policy),
                      ready_ms=round((time.monotonic() - self.boot.exec_monotonic) * 1000, 1))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        if self.boot.stop_requested:
            self.request_stop(signal.Signals(self.boot.stop_requested[0]).name)

        self.pipeline = Pipeline(logger=self.log, strict=self.settings.strict, flush=self.settings.flush,
                                 lane_max_bytes=self.settings.lane_max_bytes)
        self.pipeline.on_fatal = lambda failure: self.request_stop(f"strict mode: {failure}", EXIT_PROBLEMS)
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post("/extension/invoke", self.handle_invoke)
        app.router.add_post("/", self.handle_telemetry)
        # The function's own OTLP/HTTP exports (fgext.function, or any exporter) on the same listener.
        app.router.add_post("/v1/{signal:traces|logs|metrics}", self._handle_export)
        # In-flight requests get a short grace period at shutdown; the flush deadline matters more.
        # auto_decompress=False: the receiver and _read_json bound gzip themselves (aiohttp's own turns
        # a body that is not gzip into an empty one).
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2,
                               keepalive_timeout=self.limits.idle_timeout, auto_decompress=False)
        await runner.setup()
        assert runner.server is not None
        self.guard = ConnectionGuard(runner.server, self.limits, self.log,
                                     fast=self.fast_request if self.limits.fast_path else None,
                                     max_body=self.settings.max_body_bytes)
        site = GuardedSockSite(runner, self.boot.sock, self.guard, _LISTEN_BACKLOG)
        handed: Sequence[Tuple[Any, bytes, Optional[float]]] = ()
        if self.boot.early is not None:
            early, self.boot.early = self.boot.early, None
            kept = early.stop()  # at once: the socket is ours again, with the connections it had not finished
            handed = early.handed
            if early.answered or handed:
                first = early.first_answer
                self.log.info("answered before the listener started", answered=early.answered, kept=len(kept),
                              handed_over=len(handed),
                              first_answer_ms=round((first - self.boot.exec_monotonic) * 1000, 1) if first else None)
            if kept:
                self._replayed = asyncio.Event()
                self._replay = asyncio.ensure_future(self._submit_kept(kept))
        await site.start()
        for sock, read, head_timeout in handed:
            await self.guard.adopt(sock, read, head_timeout)
        self.log.info("listening", address=self.registration.address,
                      subscribed=self.registration.subscribed)
        agent_file = self._write_agent_file()
        try:
            # What the early responder answered 200 is delivered even if SIGTERM came first (a platform that
            # got its invoke answered early may run the function and stop us before the plugins started).
            if not self._stop.is_set() or self._replay is not None:
                try:
                    await self._start_pipeline()
                except FgextError as error:
                    self.log.error("cannot start plugins", error=str(error))
                    self.request_stop("plugins could not start", error.exit_code)
                except PluginFailure as failure:  # strict mode: a plugin's start raised
                    cause = failure.__cause__
                    # The hook already logged the cause (once, with strict=true): this line says what follows.
                    self.log.error("cannot start plugins", plugin=failure.plugin, hook=failure.hook)
                    # a configuration error stays one (exit 2), whichever plugin found it
                    self.request_stop("plugins could not start",
                                      cause.exit_code if isinstance(cause, FgextError) else EXIT_PROBLEMS)
            await self._stop.wait()
        finally:
            await self._shutdown(runner)
            if agent_file is not None:
                remove_agent_file(agent_file)
            # Stopping is done: a SIGTERM from here on (a supervisor stopping a process that is already
            # exiting on its own) must not turn the exit status into "killed by SIGTERM". Removing the
            # loop's handler restores the default action, so ignore the signals right after.
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)
        return self._exit_code

    def _write_agent_file(self) -> Optional[str]:
        """Tell the function where the receiver is (fgext._discovery_file); None if it cannot be written."""
        port = self.boot.sock.getsockname()[1]
        try:
            return write_agent_file(port)
        except OSError as error:
            self.log.warning("cannot write the agent file: the function will not find the receiver",
                             path=agent_file_path(), error=error.strerror or str(error))
            return None

    async def _shutdown(self, runner: web.AppRunner) -> None:
        deadline = self._deadline or Deadline.after(self.settings.shutdown_timeout)
        # Stop accepting first: what is in flight finishes, nothing new arrives after the flush.
        try:
            await asyncio.wait_for(runner.cleanup(), timeout=deadline.earliest(_LISTENER_CLOSE_S).remaining())
        except asyncio.TimeoutError:
            self.log.warning("listener did not close in time")
        for pending in (self._replay, self._waiting):
            if pending is not None and not pending.done():
                # Kept bodies still waiting for room in the pipeline's queue (its plugins never started), or
                # a fast-path request's (fgext._listener) whose connection aiohttp's shutdown closed.
                done, _ = await asyncio.wait({pending}, timeout=deadline.remaining())
                if not done:
                    pending.cancel()
        if self.pipeline is not None:
            # The pipeline holds every lane and hook to the deadline itself; a hook stuck in a thread
            # does not hold the process either (fgext._hooks.HookThread).
            await self.pipeline.shutdown(deadline)
        # One line that says what this agent received, sent, spooled and dropped (plugins' summaries, such
        # as the OTLP sink's by signal, under their names).
        fields: Dict[str, Any] = dict(self.stats_view)
        fields["events_by_kind"] = self.stats_view.events_by_kind()
        for name, summary in self.stats_view.summaries().items():
            fields.setdefault(name, summary)
        self.log.info("stopped", **fields)


def serve(boot: Bootstrap, plugins: Optional[Sequence[Plugin]] = None) -> int:
    """Run the agent's event loop until it is told to stop; return the exit code."""
    configure_logging(boot.settings.log_level, boot.settings.environ, config=boot.settings.config)
    log = get_logger()
    for level, event, fields in boot.notes:
        getattr(log, level)(event, **fields)
    return asyncio.run(Agent(boot, plugins).run())

