"""The emulated platform as one object with an explicit lifecycle, like aiohttp's ``AppRunner``::

    emulator = Emulator(EmulatorConfig(target="my-extension.zip"))
    await emulator.start()          # API server, sandbox, extension processes, registrations
    result = await emulator.invoke({"hello": "world"})
    report = await emulator.stop()  # telemetry flushed, every process stopped, sandbox removed

``async with Emulator(config) as emulator:`` does the same. Per invocation the platform
1. POSTs ``/extension/invoke`` to every registered extension and waits (bounded) for the answers,
2. on a cold instance runs the init phase (``restore`` with ``snapshot``): ``initStart``,
   ``initRuntimeDone``, ``initReport``, all carrying this request's ID,
3. runs the handler between ``platform.start`` and ``platform.RuntimeDone``, then sends
   ``platform.report`` with the measured duration, billed duration, max RSS and pod name.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import sys
import time
import uuid
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Set, Type

import aiohttp

from fgext._errors import ConfigError
from fgext.emulator._config import EmulatorConfig
from fgext.emulator._extensions import ExtensionSupervisor, ended
from fgext.emulator._function import FunctionInstance, InitOutcome
from fgext.emulator._platform import PlatformApi
from fgext.emulator._report import (
    EmulatorReport,
    ExtensionAnswer,
    ExtensionStatus,
    InvocationResult,
    PhaseResult,
)
from fgext.emulator._sandbox import Sandbox, prepare_sandbox
from fgext.emulator._telemetry import EventFactory, TelemetrySender, TelemetryStats

__all__ = ["Emulator"]

OutputCallback = Callable[[str, str], None]  # (source, line): an extension's script name or "function"


class Emulator:
    """One function instance's platform: start, invoke any number of times, stop."""

    def __init__(self, config: EmulatorConfig, on_output: Optional[OutputCallback] = None) -> None:
        self.config = config
        self.on_output = on_output
        self.events = EventFactory(spec_typos=config.spec_typos)
        # Shaped like the spec's example pod name; one pod per emulator, as one instance is emulated.
        self.pod_name = (f"pool22-300-{config.memory_mb}-fusion-{secrets.token_hex(4)}"
                         f"-{secrets.token_hex(3)[:5]}")
        self.platform = PlatformApi(config.function_name, config.function_version)
        self.telemetry = TelemetrySender(config.batch_max_items, config.batch_timeout_ms,
                                         config.delivery_timeout_s, config.delivery_retries,
                                         config.delivery_backoff_s)
        self.sandbox: Optional[Sandbox] = None
        self.supervisor: Optional[ExtensionSupervisor] = None
        self.results: List[InvocationResult] = []
        self.freezes = 0
        self.interrupted = False  # set by a SIGTERM handler: run() stops at the next wave
        self._invocations = 0
        self._instance: Optional[FunctionInstance] = None
        self._retiring: Set[asyncio.Task[None]] = set()
        self._retired: Set[FunctionInstance] = set()  # discarded instances not stopped yet
        # Created in start(): on Python 3.9 an asyncio primitive binds to the loop current at creation.
        self._init_lock: Optional[asyncio.Lock] = None
        self._api_address = ""
        self._active: List[str] = []
        self._session: Optional[aiohttp.ClientSession] = None
        self._started = False
        self._report: Optional[EmulatorReport] = None
        self._env: Dict[str, str] = {}

    # ---------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Serve the API, start every extension script and wait until all of them registered.

        Raises :class:`ConfigError` for a bad configuration or target and
        :class:`~fgext.emulator.ExtensionError` when an extension does not register; everything
        started so far is stopped again before either leaves this method.
        """
        if self._started:
            raise RuntimeError("the emulator is already started")
        self.config.validated()
        self._started = True
        self._init_lock = asyncio.Lock()
        try:
            # Unpacking a large zip takes a while: keep the loop (and whatever else runs on it) responsive.
            loop = asyncio.get_running_loop()
            self.sandbox = await loop.run_in_executor(None, prepare_sandbox, self.config.target)
            address = self._api_address = await self.platform.start(self.config.host, self.config.port)
            self.platform.on_subscribe = self.telemetry.subscribe
            await self.telemetry.start()
            self._session = aiohttp.ClientSession()
            self._env = self.config.sandbox_env(self.sandbox.code_root, self.sandbox.root)
            extension_env = {**self._env, "EXTENSION_API_ADDR": address}
            self.supervisor = ExtensionSupervisor(
                self.sandbox.scripts, self.sandbox.cwd, extension_env, self.config.keep_lines,
                on_log=self._extension_log, on_output=self.on_output,
            )
            self.platform.started_scripts.update(path.name for path in self.sandbox.scripts)
            await self.supervisor.start()
            await self.supervisor.wait_registered(self.platform, self.config.register_timeout_s)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> EmulatorReport:
        """Flush telemetry, stop the function and every extension, remove the sandbox; idempotent."""
        if self._report is not None:
            return self._report
        if self.supervisor is not None and self.supervisor.frozen:
            self.supervisor.thaw()
            self.telemetry.resume()
        await self.telemetry.flush(self._flush_budget())
        for task in list(self._retiring):
            task.cancel()
        instances = [*self._retired, *([self._instance] if self._instance is not None else [])]
        await asyncio.gather(*(instance.stop() for instance in instances))
        # The telemetry listener is an extension: deliver to it before the extensions are stopped.
        undelivered = 0 if self.telemetry.subscription is not None else self.telemetry.pending
        await self.telemetry.stop(timeout=0.0)
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self._session is not None:
            await self._session.close()
        await self.platform.stop()
        self._report = self._build_report(undelivered)
        if self.sandbox is not None:
            self.sandbox.cleanup()
        return self._report

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        await self.stop()

    @property
    def api_address(self) -> str:
        return self.platform.address

    @property
    def report(self) -> Optional[EmulatorReport]:
        """The final report, once :meth:`stop` has run."""
        return self._report

    # -------------------------------------------------------------------------------- invocations

    async def invoke(self, event: Any = None) -> InvocationResult:
        """Run one invocation through the whole platform sequence and return what happened."""
        if self._report is not None or self.supervisor is None or self._init_lock is None:
            raise RuntimeError("invoke() needs a started emulator")
        request_id = str(uuid.uuid4())
        index = self._invocations
        self._invocations += 1
        started_at = time.time()
        self._active.append(request_id)
        try:
            answers = await self._send_invokes(request_id)
            init: Optional[PhaseResult] = None
            cold = False
            async with self._init_lock:  # one cold start, however many invocations arrive at once
                if self._instance is None or not self._instance.alive:
                    cold = True
                    init = await self._cold_start(request_id)
                instance = self._instance
            assert instance is not None
            if init is not None and init.status != "success":
                result = InvocationResult(
                    index=index, request_id=request_id, status="failure", duration_ms=0.0, billed_ms=0.0,
                    memory_used_mb=round(instance.maxrss_kb / 1024, 1), cold=True, started_at=started_at,
                    init=init, error=init.error, answers=answers,
                )
            else:
                result = await self._run_handler(instance, request_id, index, event, started_at, cold, init,
                                                 answers)
        finally:
            self._active.remove(request_id)
        result.telemetry = self.telemetry.per_invocation.of(request_id)
        self.results.append(result)
        self.results.sort(key=lambda done: done.index)
        return result

    async def run(self, invocations: int, concurrency: int = 1, event: Any = None,
                  events: Optional[List[Any]] = None,
                  on_result: Optional[Callable[[InvocationResult], None]] = None) -> List[InvocationResult]:
        """Run ``invocations`` in waves of ``concurrency`` overlapping ones; freeze between waves if asked.

        ``events`` gives each invocation its own payload (cycled); otherwise every one gets ``event``.
        """
        if invocations < 1 or concurrency < 1:
            raise ConfigError("invocations and concurrency must be at least 1")
        done: List[InvocationResult] = []
        for wave_start in range(0, invocations, concurrency):
            if self.interrupted:
                # A cancellation can be lost inside Python 3.9's wait_for (bpo-42130); the flag is not.
                raise asyncio.CancelledError()
            size = min(concurrency, invocations - wave_start)
            payloads = [events[(wave_start + i) % len(events)] if events else event for i in range(size)]
            wave = await asyncio.gather(*(self.invoke(payload) for payload in payloads))
            for result in sorted(wave, key=lambda r: r.index):
                done.append(result)
                if on_result is not None:
                    on_result(result)
            if self.config.freeze_s is not None and wave_start + size < invocations:
                await self.freeze(self.config.freeze_s)
        return done

    async def freeze(self, seconds: float) -> None:
        """Deliver pending telemetry, then SIGSTOP every extension for ``seconds`` and SIGCONT them."""
        assert self.supervisor is not None
        await self.telemetry.flush(self._flush_budget())
        self.telemetry.pause()
        self.supervisor.freeze()
        self.freezes += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.supervisor.thaw()
            self.telemetry.resume()

    # ----------------------------------------------------------------------------------- internals

    async def _send_invokes(self, request_id: str) -> List[ExtensionAnswer]:
        assert self.supervisor is not None and self._session is not None
        body = {"traceId": request_id, "tracelId": request_id, "invokedFunctionUrn": self.config.urn}
        timeout = aiohttp.ClientTimeout(total=self.config.invoke_timeout_s)

        async def one(name: str, address: str) -> ExtensionAnswer:
            assert self.supervisor is not None and self._session is not None
            ext = self.supervisor.processes.get(name)
            if ext is not None and ext.exit_code is not None:
                return ExtensionAnswer(name, None, 0.0, f"process {ended(ext.exit_code)}")
            started = time.monotonic()
            try:
                async with self._session.post(f"http://{address}/extension/invoke", json=body,
                                              timeout=timeout) as response:
                    await response.read()
                    return ExtensionAnswer(name, response.status, (time.monotonic() - started) * 1000)
            except asyncio.TimeoutError:
                return ExtensionAnswer(name, None, (time.monotonic() - started) * 1000,
                                       f"no answer within {self.config.invoke_timeout_s:g} s")
            except aiohttp.ClientError as error:
                return ExtensionAnswer(name, None, (time.monotonic() - started) * 1000,
                                       f"{type(error).__name__}: {error}")

        registrations = sorted(self.platform.registrations.values(), key=lambda r: r.name)
        return list(await asyncio.gather(*(one(r.name, r.address) for r in registrations)))

    async def _cold_start(self, request_id: str) -> PhaseResult:
        assert self.sandbox is not None
        old = self._instance
        if old is not None:
            self._retire(old)
        phase = "restore" if self.config.snapshot else "init"
        instance = FunctionInstance(
            self.config.function_spec, self.sandbox.cwd, self._env, self.config.python or sys.executable,
            on_log=self._function_log, on_output=self._function_output, keep_lines=self.config.keep_lines,
        )
        self._instance = instance
        start = time.time()
        self.telemetry.emit("platform", self.events.start(phase, request_id, start), request_id)
        outcome: InitOutcome = await instance.start(timeout=max(self.config.timeout_s, 30.0))
        end = time.time()
        status = "success" if outcome.ok else "failure"
        self.telemetry.emit("platform", self.events.done(phase, request_id, end, status), request_id)
        duration_ms = (end - start) * 1000
        self.telemetry.emit("platform", self.events.report(
            phase, request_id, start, end, status, self._metrics(duration_ms, outcome.maxrss_kb)), request_id)
        return PhaseResult(phase=phase, status=status, duration_ms=duration_ms, error=outcome.error)

    async def _run_handler(self, instance: FunctionInstance, request_id: str, index: int, event: Any,
                           started_at: float, cold: bool, init: Optional[PhaseResult],
                           answers: List[ExtensionAnswer]) -> InvocationResult:
        config = self.config
        request = {
            "op": "invoke", "request_id": request_id, "event": event, "function_name": config.function_name,
            "function_version": config.function_version, "package": config.package,
            "project_id": config.project_id, "memory_mb": config.memory_mb,
            "cpu_millicores": config.cpu_millicores,
        }
        start = time.time()
        self.telemetry.emit("platform", self.events.start("invoke", request_id, start), request_id)
        outcome = await instance.invoke(request, config.timeout_s)
        end = time.time()
        duration_ms = (end - start) * 1000
        self.telemetry.emit("platform", self.events.done("invoke", request_id, end, outcome.status),
                            request_id)
        metrics = self._metrics(duration_ms, outcome.maxrss_kb)
        self.telemetry.emit("platform", self.events.report("invoke", request_id, start, end, outcome.status,
                                                           metrics), request_id)
        if instance.poisoned and instance is self._instance and instance.in_flight == 0:
            assert self._init_lock is not None
            async with self._init_lock:
                if instance is self._instance:
                    self._instance = None
                    self._retire(instance)
        return InvocationResult(
            index=index, request_id=request_id, status=outcome.status, duration_ms=duration_ms,
            billed_ms=metrics["billingDurationMS"], memory_used_mb=metrics["memoryUsed"], cold=cold,
            started_at=started_at, init=init, result=outcome.result, error=outcome.error, answers=answers,
        )

    def _metrics(self, duration_ms: float, maxrss_kb: int) -> Dict[str, Any]:
        return {"durationMs": round(duration_ms, 3), "billingDurationMS": float(math.ceil(duration_ms)),
                "memoryUsed": round(maxrss_kb / 1024, 1), "memorySize": self.config.memory_mb,
                "podName": self.pod_name}

    def _retire(self, instance: FunctionInstance) -> None:
        """Stop an instance once its in-flight invocations have ended (or timed out themselves)."""
        self._retired.add(instance)

        async def retire() -> None:
            deadline = time.monotonic() + self.config.timeout_s + 1.0
            while instance.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await instance.stop()
            self._retired.discard(instance)

        task = asyncio.ensure_future(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _request_for_log(self) -> Optional[str]:
        # Log events carry no request ID; attribute one only while exactly one request runs.
        return self._active[0] if len(self._active) == 1 else None

    def _function_log(self, line: str) -> None:
        self.telemetry.emit("function", self.events.log("function", line, time.time()),
                            self._request_for_log())

    def _function_output(self, line: str) -> None:
        if self.on_output is not None:
            self.on_output("function", line)

    def _extension_log(self, name: str, line: str) -> None:
        self.telemetry.emit("extension", self.events.log("extension", line, time.time()),
                            self._request_for_log())

    def _flush_budget(self) -> float:
        """The longest one batch can take through every retry, plus the batch timer; at most 30 s."""
        config = self.config
        backoff = sum(config.delivery_backoff_s * 2 ** i for i in range(config.delivery_retries))
        one_batch = (config.delivery_retries + 1) * config.delivery_timeout_s + backoff
        batches = max(1, math.ceil(self.telemetry.pending / config.batch_max_items))
        return float(min(30.0, batches * one_batch + config.batch_timeout_ms / 1000 + 0.5))

    def _build_report(self, undelivered: int) -> EmulatorReport:
        extensions: List[ExtensionStatus] = []
        problems: List[str] = []
        subscription = self.platform.subscription
        for ext in (self.supervisor.processes.values() if self.supervisor is not None else []):
            registration = self.platform.registrations.get(ext.name)
            extensions.append(ExtensionStatus(
                name=ext.name, pid=ext.pid, address=registration.address if registration else None,
                subscribed=subscription.types if subscription and subscription.extension == ext.name else (),
                exit_code=ext.exit_code, crashed=ext.crashed, run_via_sh=ext.run_via_sh,
                last_lines=tuple(ext.last_lines(self.config.keep_lines)), self_report=ext.self_report,
            ))
            if ext.crashed:
                problems.append(f"{ext.name} {ended(ext.exit_code)} while the function was "
                                f"running; its last output:\n{ext.describe_output()}")
            elif ext.exit_code is not None and ext.exit_code > 0:
                # Stopped with SIGTERM, it should flush and exit 0: anything else (a strict-mode failure,
                # a flush that failed) is what the platform would see at every shutdown.
                problems.append(f"{ext.name} exited with code {ext.exit_code} when stopped with SIGTERM; "
                                f"its last output:\n{ext.describe_output()}")
            logged = ext.problem_lines()
            if logged:
                total = sum(count for _, count in logged)
                problems.append(f"{ext.name} logged {total} error(s) or warning(s) of lost telemetry:\n" + "\n".join(
                                    f"  | {line}" + (f"  (x{count})" if count > 1 else "") for line, count in logged))
        failed: Dict[str, List[ExtensionAnswer]] = {}
        for result in self.results:
            for answer in result.answers:
                if not answer.ok:
                    failed.setdefault(answer.extension, []).append(answer)
        crashed = {ext.name for ext in extensions if ext.crashed}
        for name, answers in failed.items():
            if name not in crashed:  # a crash is reported once, above
                problems.append(f"{name} answered /extension/invoke with an error {len(answers)} of "
                                f"{len(self.results)} times (last: {answers[-1].summary()})")
        stats: TelemetryStats = self.telemetry.stats
        if stats.events_dropped:
            problems.append(f"{stats.events_dropped} telemetry events in {stats.batches_dropped} batches "
                            f"were dropped after {self.config.delivery_retries} retries (last error: "
                            f"{stats.last_error})")
        return EmulatorReport(
            function_name=self.config.function_name, function_version=self.config.function_version,
            urn=self.config.urn,
            api_address=self._api_address,
            spec_typos=self.config.spec_typos, invocations=list(self.results), extensions=extensions,
            telemetry=stats, events_filtered=self.telemetry.events_filtered, events_undelivered=undelivered,
            freezes=self.freezes,
            rejections=[{"path": r.path, "extension": r.extension, "errorType": r.error_type,
                         "errorMessage": r.message} for r in self.platform.rejections],
            problems=problems,
        )

