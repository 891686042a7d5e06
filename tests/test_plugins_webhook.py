"""The webhook plugin against a real HTTP receiver on 127.0.0.1: what it sends, retries and never blocks."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable, List, Optional

import pytest
from aiohttp import web

from fgext._errors import PluginError
from fgext._pipeline import Pipeline, PluginFailure
from fgext._plugin import PluginContext, RegistrationInfo
from fgext._plugintest import arun_plugin, make_invocation, make_log, make_report, make_start, run_plugin
from fgext.plugins.webhook import WebhookPlugin


class Receiver:
    """A real aiohttp server answering with ``statuses`` in turn (the last repeating)."""

    def __init__(self, statuses: Optional[List[int]] = None, gate: Optional[asyncio.Event] = None,
                 retry_after: Optional[str] = None) -> None:
        self.statuses = statuses or [200]
        self.gate = gate
        self.retry_after = retry_after
        self.arrivals: List[float] = []
        self.bodies: List[Any] = []
        self.headers: List[dict] = []  # type: ignore[type-arg]
        self.arrived = asyncio.Event()
        self._runner: Optional[web.AppRunner] = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.read()))
        self.arrivals.append(time.monotonic())
        self.headers.append(dict(request.headers))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        status = self.statuses[min(len(self.bodies) - 1, len(self.statuses) - 1)]
        if status >= 400 and self.retry_after is not None:
            return web.Response(status=status, headers={"Retry-After": self.retry_after})
        return web.Response(status=status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


class TestAlerts:
    def test_failed_and_slow_invocations_are_posted(self) -> None:
        """One POST per failed or slow report, with the summary and the function's last log lines."""

        async def go() -> Receiver:
            async with Receiver() as receiver:
                events = [*make_invocation("ok", duration_ms=20, logs=["fine"]),
                          *make_invocation("bad", status="error", duration_ms=40, logs=["step", "ERROR boom"]),
                          *make_invocation("slow", duration_ms=5000)]
                await arun_plugin(WebhookPlugin(), events,
                                  config={"url": receiver.url, "slow_ms": 1000, "headers": {"X-Token": "t0k"}})
                return receiver

        receiver = run(go())
        assert [(b["request_id"], b["reasons"]) for b in receiver.bodies] == [("bad", ["failed"]), ("slow", ["slow"])]
        bad = receiver.bodies[0]
        assert bad["recent_logs"] == ["step", "ERROR boom"] and bad["status"] == "error"
        assert bad["function"] == "hello" and bad["phase"] == "invoke" and bad["duration_ms"] == 40
        assert receiver.headers[0]["X-Token"] == "t0k"

    def test_lone_surrogate_in_a_log_line_still_alerts(self) -> None:
        """A failed invocation whose log line holds a lone surrogate is still posted (UTF-8, the character as a
        JSON escape, so the receiver reads the line as sent)."""

        async def go() -> Receiver:
            async with Receiver() as receiver:
                await arun_plugin(WebhookPlugin(), make_invocation("bad", status="error", logs=["oops \udcff"]),
                                  config={"url": receiver.url})
                return receiver

        receiver = run(go())
        assert [b["recent_logs"] for b in receiver.bodies] == [["oops \udcff"]]

    def test_thresholds_and_phases(self) -> None:
        """slow_ms 0 turns slow alerts off, failures=false turns failure alerts off, phases narrow reports."""

        async def go() -> Receiver:
            async with Receiver() as receiver:
                events = [make_report("init-bad", status="error", phase="init"),
                          make_report("slow", duration_ms=9000), make_report("bad", status="timeout")]
                await arun_plugin(WebhookPlugin(), events,
                                  config={"url": receiver.url, "slow_ms": 0, "phases": ["invoke"]})
                await arun_plugin(WebhookPlugin(), events,
                                  config={"url": receiver.url, "failures": False, "slow_ms": 100})
                return receiver

        receiver = run(go())
        assert [b["request_id"] for b in receiver.bodies] == ["bad", "slow"]


class TestDelivery:
    def test_retries_transient_errors_with_backoff(self) -> None:
        """503 and 429 are retried until a 2xx; the alert is then counted as sent."""
        plugin = WebhookPlugin()

        async def go() -> Receiver:
            async with Receiver(statuses=[503, 429, 200]) as receiver:
                await arun_plugin(plugin, [make_report("bad", status="error")],
                                  config={"url": receiver.url, "retries": 3, "backoff": 0.01})
                return receiver

        receiver = run(go())
        assert len(receiver.bodies) == 3
        assert plugin.stats["sent"] == 1 and plugin.stats["attempts"] == 3

    def test_client_error_is_not_retried(self) -> None:
        """A 400 is final: one attempt, counted as failed, and a warning names the URL."""
        plugin = WebhookPlugin()

        async def go() -> Any:
            async with Receiver(statuses=[400]) as receiver:
                result = await arun_plugin(plugin, [make_report("bad", status="error")],
                                           config={"url": receiver.url, "retries": 3, "backoff": 0.01})
                return receiver, result

        receiver, result = run(go())
        assert len(receiver.bodies) == 1 and plugin.stats["failed"] == 1
        assert any(event == "webhook alert not delivered" and f["error"] == "HTTP 400"
                   for _lv, event, f in result.log)

    def test_500_is_final_under_the_shared_retry_policy(self) -> None:
        """HTTP 500 is not retryable in fgext._retry (only 429 and 502-504 are): one attempt, counted failed."""
        plugin = WebhookPlugin()

        async def go() -> Receiver:
            async with Receiver(statuses=[500, 200]) as receiver:
                await arun_plugin(plugin, [make_report("bad", status="error")],
                                  config={"url": receiver.url, "retries": 3, "backoff": 0.01})
                return receiver

        receiver = run(go())
        assert len(receiver.bodies) == 1 and plugin.stats["failed"] == 1

    def test_retry_after_is_honoured(self) -> None:
        """A 503 with Retry-After: 1 is asked again no sooner than a second later, whatever the backoff."""
        plugin = WebhookPlugin()

        async def go() -> Receiver:
            async with Receiver(statuses=[503, 200], retry_after="1") as receiver:
                await arun_plugin(plugin, [make_report("bad", status="error")],
                                  config={"url": receiver.url, "retries": 3, "backoff": 0.01})
                return receiver

        receiver = run(go())
        assert len(receiver.arrivals) == 2 and plugin.stats["sent"] == 1
        assert receiver.arrivals[1] - receiver.arrivals[0] >= 0.99

    def test_unreachable_url_gives_up_after_retries(self) -> None:
        """Connection refused is retried ``retries`` times, then the alert is counted failed."""
        plugin = WebhookPlugin()

        async def go() -> None:
            async with Receiver() as receiver:
                url = receiver.url
            # The receiver is closed now: its port refuses connections.
            await arun_plugin(plugin, [make_report("bad", status="error")],
                              config={"url": url, "retries": 2, "backoff": 0.01})

        run(go())
        assert plugin.stats["attempts"] == 3 and plugin.stats["failed"] == 1 and plugin.stats["sent"] == 0

    def test_pipeline_does_not_wait_for_the_url(self) -> None:
        """Telemetry dispatch returns while the webhook's POST is still unanswered."""
        plugin = WebhookPlugin()
        states: List[bool] = []

        async def go() -> None:
            gate = asyncio.Event()
            async with Receiver(gate=gate) as receiver:
                ctx = PluginContext(name="webhook", registration=RegistrationInfo("extensionX.sh", "127.0.0.1:8081"),
                                    config={"url": receiver.url, "timeout": 30.0})
                pipeline = Pipeline([plugin], logger=_Quiet())
                await pipeline.start(lambda _p: ctx)
                await pipeline.dispatch_telemetry([make_report("bad", status="error")])
                await asyncio.wait_for(receiver.arrived.wait(), 10)
                # dispatch has returned and the receiver holds the request unanswered
                states.append(plugin.stats["sent"] == 0)
                gate.set()
                await pipeline.shutdown(5)
                states.append(plugin.stats["sent"] == 1)

        run(go())
        assert states == [True, True]

    def test_full_queue_drops_and_counts(self) -> None:
        """With max_queue alerts pending, further alerts are dropped and counted, not held."""
        plugin = WebhookPlugin()

        async def go() -> None:
            gate = asyncio.Event()
            async with Receiver(gate=gate) as receiver:
                ctx = PluginContext(name="webhook", registration=RegistrationInfo("extensionX.sh", "127.0.0.1:8081"),
                                    config={"url": receiver.url, "max_queue": 2, "timeout": 30.0})
                pipeline = Pipeline([plugin], logger=_Quiet())
                await pipeline.start(lambda _p: ctx)
                await pipeline.dispatch_telemetry([make_report("r0", status="error")])
                await asyncio.wait_for(receiver.arrived.wait(), 10)  # r0 in flight, queue empty
                await pipeline.dispatch_telemetry([make_report(f"r{i}", status="error") for i in range(1, 5)])
                gate.set()
                await pipeline.shutdown(5)

        run(go())
        assert plugin.stats == {"alerts": 5, "sent": 3, "failed": 0, "dropped": 2, "attempts": 3}


class TestConfig:
    @pytest.mark.parametrize(("config", "message"), [
        ({}, "'url' is required"), ({"url": "ftp://x"}, "http:// or https://"),
        ({"url": "http://127.0.0.1:1/x", "phases": ["boot"]}, "unknown phase"),
        ({"url": "http://127.0.0.1:1/x", "retries": -1}, "'retries' must be at least 0"),
    ])
    def test_bad_settings(self, config: dict, message: str) -> None:  # type: ignore[type-arg]
        """A missing or bad setting stops the plugin at start with a message naming plugin and key."""
        with pytest.raises(PluginFailure) as info:
            run_plugin(WebhookPlugin(), [make_log("x")], config=config)
        assert isinstance(info.value.__cause__, PluginError)
        assert "plugin 'webhook'" in str(info.value.__cause__) and message in str(info.value.__cause__)

    def test_only_reports_logs_and_starts_are_delivered(self) -> None:
        """accepts limits the sink to the events it uses; a batch of others does not call it."""
        calls: List[int] = []

        class Counting(WebhookPlugin):
            async def on_telemetry(self, events: Any) -> None:
                calls.append(len(events))
                await super().on_telemetry(events)

        async def go() -> None:
            async with Receiver() as receiver:
                await arun_plugin(Counting(), batches=[[make_log("x", category="extension")], [make_start("r")]],
                                  config={"url": receiver.url})

        run(go())
        assert calls == [1]


class _Quiet:
    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *a, **k: None
