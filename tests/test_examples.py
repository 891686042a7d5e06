"""Every example in examples/ does what its README says, through the real pipeline (and one as an agent)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, List, Optional

import pytest
from aiohttp import web

from fgext._errors import PluginError
from fgext._pipeline import PluginFailure
from fgext._plugintest import arun_plugin, make_invocation, make_invoke, make_log, run_plugin
from tests.agentproc import AgentProcess
from tests.conftest import LAUNCHER, ROOT
from tests.platform import RecordingPlatform

EXAMPLES = ROOT / "examples"


@pytest.fixture
def load_example() -> Iterator[Callable[[str], ModuleType]]:
    """Import an example file fresh (its module-level state starts clean), removed after the test."""
    loaded: List[str] = []

    def load(stem: str) -> ModuleType:
        name = f"fgext_example_{stem}_{len(loaded)}"
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{stem}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        loaded.append(name)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


class TestSqliteSink:
    def test_reports_and_logs_stored_and_trimmed(self, load_example: Callable[[str], ModuleType],
                                                 tmp_path: Path) -> None:
        """Reports and function log lines land in SQLite; only the newest ``keep`` rows stay."""
        module = load_example("sqlite_sink")
        db = tmp_path / "inv.db"
        batches = [make_invocation(f"r{i}", logs=[f"line {i}"], duration_ms=10.0 * i,
                                   status="error" if i == 3 else "success") for i in range(5)]
        run_plugin(module.SqliteSink(), batches=batches, config={"path": str(db), "keep": 3})
        with sqlite3.connect(str(db)) as conn:
            reports = conn.execute("SELECT request_id, status, duration_ms FROM reports ORDER BY rowid").fetchall()
            logs = [row[0] for row in conn.execute("SELECT message FROM logs ORDER BY rowid")]
        assert reports == [("r2", "success", 20.0), ("r3", "error", 30.0), ("r4", "success", 40.0)]
        assert logs == ["line 2", "line 3", "line 4"]

    def test_bad_keep_refused(self, load_example: Callable[[str], ModuleType], tmp_path: Path) -> None:
        """keep below 1 stops the plugin at start, naming it."""
        module = load_example("sqlite_sink")
        with pytest.raises(PluginFailure) as info:
            run_plugin(module.SqliteSink(), [make_log("x")], config={"path": str(tmp_path / "d.db"), "keep": 0})
        assert "plugin 'sqlite'" in str(info.value.__cause__)


class TestRedactRules:
    def test_company_rules_and_defaults(self, load_example: Callable[[str], ModuleType]) -> None:
        """Order IDs, OpenIDs, internal hosts and Luhn-valid cards are masked, and so is everything by default."""
        module = load_example("redact_rules")
        line = ("paid 4111 1111 1111 1111 for ORD-20250208 by oABCDEFGHIJKLMNOPQRSTUVWXYZa "
                "via api.corp.example.com, receipt to li.na@example.cn")
        result = run_plugin(module.AcmeRedact(), [make_log(line)])
        assert result.messages == [
            "paid [REDACTED:bank_card] for [REDACTED:order_id] by [REDACTED:openid] via "
            "[REDACTED:internal_host], receipt to [REDACTED:email]"]

    @pytest.mark.parametrize("text", [
        "card 4111111111111112 fails the check digit",
        "epoch micros 1732233445123456 and millis 1732233445123",
        "ORD-123 is too short",
    ])
    def test_lookalikes_left_alone(self, load_example: Callable[[str], ModuleType], text: str) -> None:
        """Numbers that fail Luhn or start like timestamps, and short order numbers, stay readable."""
        module = load_example("redact_rules")
        plugin = module.AcmeRedact()
        plugin.configure({})
        assert plugin.redact(text) == text

    def test_settings_under_its_own_name(self, load_example: Callable[[str], ModuleType]) -> None:
        """The rule set takes the built-in's settings under the name acme_redact."""
        module = load_example("redact_rules")
        result = run_plugin(module.AcmeRedact(), [make_log("ORD-20250208 to a@b.cn")],
                            environ={"FGEXT_ACME_REDACT_DISABLE": "email", "FGEXT_ACME_REDACT_MASK": "#"})
        assert result.messages == ["# to a@b.cn"]


class ConfigServer:
    """A configuration service on 127.0.0.1: each GET returns the next version, or fails when told."""

    def __init__(self) -> None:
        self.version = 0
        self.failing = False
        self.url = ""
        self._runner: Optional[web.AppRunner] = None

    async def handle(self, request: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503)
        self.version += 1
        return web.json_response({"version": self.version, "feature_x": True})

    async def start(self) -> ConfigServer:
        app = web.Application()
        app.router.add_get("/config", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/config"
        return self

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class TestPrefetchConfig:
    def test_fetch_at_start_and_refresh_when_stale(self, load_example: Callable[[str], ModuleType],
                                                   tmp_path: Path) -> None:
        """The document is written at start; with ttl 0 every invoke refreshes it; a long ttl does not."""
        path = tmp_path / "config.json"

        async def go() -> List[int]:
            server = await ConfigServer().start()
            try:
                fresh = load_example("prefetch_config")
                await arun_plugin(fresh.ext, invokes=[make_invoke(), make_invoke()],
                                  config={"url": server.url, "path": str(path), "ttl": 0.0})
                after_fresh = json.loads(path.read_text())["version"]
                cached = load_example("prefetch_config")
                await arun_plugin(cached.ext, invokes=[make_invoke(), make_invoke()],
                                  config={"url": server.url, "path": str(path), "ttl": 3600.0})
                return [after_fresh, json.loads(path.read_text())["version"], cached.state["fetches"]]
            finally:
                await server.stop()

        assert asyncio.run(go()) == [3, 4, 1]

    def test_failure_keeps_last_good_copy(self, load_example: Callable[[str], ModuleType], tmp_path: Path) -> None:
        """When the service fails, the last copy stays in place and the failure is logged, not raised."""
        path = tmp_path / "config.json"
        module = load_example("prefetch_config")

        async def go() -> None:
            server = await ConfigServer().start()
            try:
                await arun_plugin(module.ext, invokes=[make_invoke()],
                                  config={"url": server.url, "path": str(path), "ttl": 0.0})
            finally:
                await server.stop()

        asyncio.run(go())
        assert json.loads(path.read_text())["version"] == 2

        async def failing() -> Any:
            server = await ConfigServer().start()
            server.failing = True
            try:
                return await arun_plugin(load_example("prefetch_config").ext, invokes=[make_invoke()],
                                         config={"url": server.url, "path": str(path), "ttl": 0.0})
            finally:
                await server.stop()

        result = asyncio.run(failing())
        assert json.loads(path.read_text())["version"] == 2
        assert [e for _lv, e, _f in result.log].count("configuration fetch failed; keeping the last copy") == 2
        assert result.failures == []

    def test_url_required(self, load_example: Callable[[str], ModuleType]) -> None:
        """Without a url the extension refuses to start, naming the setting."""
        with pytest.raises(PluginFailure) as info:
            run_plugin(load_example("prefetch_config").ext, invokes=[make_invoke()])
        assert isinstance(info.value.__cause__, PluginError) and "'url' is required" in str(info.value.__cause__)

    @pytest.mark.agent
    @pytest.mark.usefixtures("port_range_lock")
    def test_runs_in_the_agent_from_the_packaged_layout(self, platform: RecordingPlatform,
                                                        agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
        """Copied to extension/fgext-plugins and named in FGEXT_PLUGINS, it fetches at start and on invoke."""
        home = tmp_path / "unpacked" / "extension"
        (home / "fgext-plugins").mkdir(parents=True)
        (home / "fgext-plugins" / "prefetch_config.py").write_bytes((EXAMPLES / "prefetch_config.py").read_bytes())
        # The source tree stands in for fgext-lib; its dependencies are in this interpreter's
        # site-packages, which the launcher skips for a real fgext-lib unless told otherwise.
        (home / "fgext-lib").symlink_to(ROOT)
        launcher = home / "extensionFgext.sh"
        launcher.write_bytes(LAUNCHER.read_bytes())
        launcher.chmod(0o755)
        path = tmp_path / "config.json"

        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(ConfigServer().start())
        import threading

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "prefetch_config:ext",
                            "FGEXT_PREFETCH_URL": server.url, "FGEXT_PREFETCH_PATH": str(path),
                            "FGEXT_PREFETCH_TTL": "0", "FGEXT_PYTHON_FLAGS": ""}, launcher=launcher)
            agent.wait_log("pipeline started")
            assert json.loads(path.read_text())["version"] == 1
            port = int(agent.wait_log("listening")["address"].rsplit(":", 1)[1])
            status, _ = agent.post(port, "/extension/invoke", json.dumps({"traceId": "r1"}).encode())
            assert status == 200
            deadline = time.monotonic() + 10
            while json.loads(path.read_text())["version"] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert json.loads(path.read_text()) == {"version": 2, "feature_x": True}
            assert agent.stop(signal.SIGTERM) == 0
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


class TestReadme:
    @pytest.mark.parametrize("stem", ["sqlite_sink", "redact_rules", "prefetch_config"])
    def test_each_example_has_a_section_and_a_package_command(self, stem: str) -> None:
        """examples/README.md documents every example with the packager command that bundles it."""
        readme = (EXAMPLES / "README.md").read_text()
        assert f"fgext package --plugin examples/{stem}.py" in readme
        assert f"`{stem}.py`" in readme
