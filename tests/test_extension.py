"""The decorator style: slots, sync and async handlers, and a real agent subprocess running one."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from fgext._errors import PluginError
from fgext._events import AnyEvent, FunctionLog, Invoke, LogEvent, Report
from fgext._extension import Extension
from fgext._pipeline import PluginFailure
from fgext._plugin import PluginContext
from fgext._plugintest import make_invocation, make_invoke, make_log, run_plugin
from tests.agentproc import AgentProcess
from tests.conftest import LAUNCHER, ROOT, agent_python
from tests.platform import RecordingPlatform
from tests.test_parse import FUNCTION_LOG, REPORT, START


class TestSlots:
    def test_sync_and_async_handlers_with_context_and_config(self) -> None:
        """Sync handlers run in worker threads, async ones on the loop; start gets the context and config."""
        ext = Extension(name="both", config={"prefix": str})
        seen: Dict[str, Any] = {}
        main = threading.main_thread().name

        @ext.on_start
        async def start(context: PluginContext) -> None:
            seen["start"] = (context.name, dict(context.config), threading.current_thread().name)

        @ext.on_invoke
        def invoke(inv: Invoke) -> None:
            seen["invoke"] = (inv.request_id, threading.current_thread().name)

        @ext.on_telemetry
        async def telemetry(events: List[AnyEvent]) -> None:
            seen.setdefault("telemetry", []).extend(
                ext.config["prefix"] + e.message for e in events if isinstance(e, FunctionLog))

        run_plugin(ext, [make_log("a"), make_log("b")], invokes=[make_invoke("r1")], config={"prefix": ">"})
        assert seen["start"] == ("both", {"prefix": ">"}, main)
        assert seen["invoke"][0] == "r1" and seen["invoke"][1] != main
        assert seen["telemetry"] == [">a", ">b"]

    def test_on_event_changes_drops_and_filters_by_type(self) -> None:
        """on_event returns a changed event or None to drop; types= keeps other events away from it."""
        ext = Extension(name="upper")

        @ext.on_event(types=(LogEvent,))
        def upper(event: AnyEvent) -> Any:
            assert isinstance(event, FunctionLog)
            return None if event.message == "noise" else replace(event, message=event.message.upper())

        result = run_plugin(ext, make_invocation("r", logs=["hi", "noise"]))
        assert result.messages == ["HI"]
        assert [type(e).__name__ for e in result.events] == ["Start", "FunctionLog", "RuntimeDone", "Report"]
        assert [type(e).__name__ for e in result.dropped] == ["FunctionLog"]

    def test_telemetry_types_filter(self) -> None:
        """on_telemetry(types=...) receives only those events."""
        ext = Extension(name="reports")
        got: List[str] = []

        @ext.on_telemetry(types=(Report,))
        def reports(events: List[AnyEvent]) -> None:
            got.extend(type(e).__name__ for e in events)

        run_plugin(ext, make_invocation("r", logs=["x"]))
        assert got == ["Report"]

    def test_argumentless_lifecycle_handlers(self) -> None:
        """on_start, on_flush and on_shutdown may take no argument, sync or async."""
        ext = Extension(name="bare")
        calls: List[str] = []

        @ext.on_start
        def start() -> None:
            calls.append("start")

        @ext.on_flush
        async def flush() -> None:
            calls.append("flush")

        @ext.on_shutdown
        def shutdown() -> None:
            calls.append("shutdown")

        run_plugin(ext, [make_log("x")])
        assert calls == ["start", "flush", "shutdown"]

    def test_processor_and_sink_run_lifecycle_once(self) -> None:
        """With on_event and on_telemetry the extension is two plugins, but on_start and on_invoke run once."""
        ext = Extension(name="pair", order=5)
        calls: List[str] = []
        ext.on_start(lambda ctx: calls.append("start"))
        ext.on_invoke(lambda inv: calls.append("invoke"))
        ext.on_event(lambda e: e)
        ext.on_telemetry(lambda events: calls.append(f"telemetry:{len(events)}"))
        plugins = ext.as_plugins()
        assert [(p.role, p.order) for p in plugins] == [("processor", 5), ("sink", 5)]
        run_plugin(ext, [make_log("x")], invokes=[make_invoke()])
        assert calls == ["start", "invoke", "telemetry:1"]
        with pytest.raises(ValueError, match="use as_plugins"):
            ext.as_plugin()

    def test_processor_only_extension_is_one_plugin(self) -> None:
        """An extension with on_event and lifecycle handlers only is a single processor."""
        ext = Extension(name="p")
        ext.on_event(lambda e: e)
        ext.on_start(lambda: None)
        assert ext.as_plugin().role == "processor"

    def test_registration_mistakes(self) -> None:
        """A slot filled twice, a non-callable or a bad types= is refused when decorating."""
        ext = Extension(name="x")
        ext.on_invoke(lambda inv: None)
        with pytest.raises(ValueError, match="already has an on_invoke"):
            ext.on_invoke(lambda inv: None)
        with pytest.raises(TypeError, match="tuple of event classes"):
            ext.on_telemetry(types=("Report",))(lambda events: None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="decorates a function"):
            ext.on_start(42)  # type: ignore[type-var]
        with pytest.raises(ValueError, match="on_error"):
            Extension(name="y", on_error="explode")

    def test_failures_isolated_or_strict(self) -> None:
        """A raising handler is isolated (pass policy) and disabled after max_failures; strict raises."""
        ext = Extension(name="flaky", max_failures=2)

        @ext.on_event
        def boom(event: AnyEvent) -> AnyEvent:
            raise RuntimeError("flaky")

        result = run_plugin(ext, batches=[[make_log("a")], [make_log("b")], [make_log("c")]], strict=False)
        assert result.messages == ["a", "b", "c"]
        assert [f.plugin for f in result.failures] == ["flaky", "flaky"] and result.disabled == ["flaky"]
        with pytest.raises(PluginFailure, match="'flaky' failed in process"):
            run_plugin(ext, [make_log("a")])

    def test_config_checked_against_schema(self) -> None:
        """An extension's settings are validated like any plugin's, naming the extension."""
        ext = Extension(name="cfg", config={"limit": int})
        ext.on_telemetry(lambda events: None)
        with pytest.raises(PluginError, match=r"'cfg': setting 'limit'.*must be int"):
            run_plugin(ext, [make_log("x")], environ={"FGEXT_CFG_LIMIT": "many"})

    def test_context_before_start(self) -> None:
        """Reading the context before the agent started it says so."""
        with pytest.raises(RuntimeError, match="has not started"):
            _ = Extension(name="early").context
        assert Extension(name="early").config == {}


# -------------------------------------------------------------------------------- real agent process

EXTENSION_SOURCE = '''\
import dataclasses
import json

from fgext._events import LogEvent
from fgext._extension import Extension

ext = Extension(name="mine", config={"out": str})


def write(record):
    with open(ext.config["out"], "a") as handle:
        handle.write(json.dumps(record) + "\\n")


@ext.on_start
async def started(context):
    write({"start": context.registration.function_name})


@ext.on_invoke
def invoked(invoke):  # a plain function: runs in a worker thread
    write({"invoke": invoke.request_id})


@ext.on_event(types=(LogEvent,))
def shout(event):
    if "drop" in event.message:
        return None
    return dataclasses.replace(event, message=event.message.upper())


@ext.on_telemetry
async def telemetry(events):
    write({"telemetry": [getattr(event, "message", event.name) for event in events]})


@ext.on_shutdown
def stopped():
    write({"shutdown": True})


if __name__ == "__main__":
    ext.run()
'''

OWN_LAUNCHER = '''#!/bin/sh
# A user's own launcher: the platform identifies the extension by this file's name.
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
FGEXT_NAME=$(basename -- "$0")
export FGEXT_NAME
exec "$FGEXT_PYTHON" "$here/myext.py"
'''


def records(path: Path, predicate: Callable[[List[Dict[str, Any]]], bool],
            timeout: float = 15.0) -> List[Dict[str, Any]]:
    deadline = time.monotonic() + timeout
    lines: List[Dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if predicate(lines):
                return lines
        time.sleep(0.02)
    raise AssertionError(f"records in {path} never matched; got {lines}")


def drive(agent: AgentProcess, out: Path) -> List[Dict[str, Any]]:
    """Send one invoke and one telemetry batch; stop with SIGTERM; return what the extension wrote."""
    agent.wait_log("pipeline started")
    port = int(agent.wait_log("listening")["address"].rsplit(":", 1)[1])
    status, _ = agent.post(port, "/extension/invoke", json.dumps(
        {"tracelId": "req-1", "invokedFunctionUrn": "sn:cn:yrk:1111:function:0@test@hello:latest"}).encode())
    assert status == 200
    batch = [START, dict(FUNCTION_LOG, logs="[Function]hello"), dict(FUNCTION_LOG, logs="[Function]drop me"), REPORT]
    status, answer = agent.post(port, "/", json.dumps(batch).encode())
    assert status == 200 and answer["accepted"] == 4
    records(out, lambda lines: any("telemetry" in line for line in lines))
    assert agent.stop(signal.SIGTERM) == 0
    return records(out, lambda lines: {"shutdown": True} in lines)


@pytest.mark.agent
@pytest.mark.usefixtures("port_range_lock")
class TestAsAgent:
    def test_script_with_ext_run(self, platform: RecordingPlatform, agents: Callable[..., AgentProcess],
                                 tmp_path: Path) -> None:
        """A one-file extension started by its own launcher registers under that launcher's name and runs."""
        home = tmp_path / "extension"
        home.mkdir()
        (home / "myext.py").write_text(EXTENSION_SOURCE)
        launcher = home / "extensionMine.sh"
        launcher.write_text(OWN_LAUNCHER)
        launcher.chmod(0o755)
        out = tmp_path / "mine.jsonl"
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_MINE_OUT": str(out),
                        "PYTHONPATH": str(ROOT), "FGEXT_PYTHON": agent_python()}, launcher=launcher)
        lines = drive(agent, out)
        assert platform.requests[0].headers["FunctionGraph-Extension-Name"] == "extensionMine.sh"
        assert lines == [{"start": "helloWorld"}, {"invoke": "req-1"},
                         {"telemetry": ["platform.initStart", "HELLO", "platform.initReport"]}, {"shutdown": True}]
        assert "otlp" not in agent.wait_log("pipeline started")["plugins"]

    def test_named_in_fgext_plugins_from_packaged_layout(self, platform: RecordingPlatform,
                                                          agents: Callable[..., AgentProcess], tmp_path: Path) -> None:
        """The same file in extension/fgext-plugins, named module:ext in FGEXT_PLUGINS, runs under fgext's launcher."""
        home = tmp_path / "unpacked" / "extension"
        (home / "fgext-plugins").mkdir(parents=True)
        (home / "fgext-plugins" / "myext.py").write_text(EXTENSION_SOURCE)
        # The source tree stands in for fgext-lib; its dependencies are in this interpreter's
        # site-packages, which the launcher skips for a real fgext-lib unless told otherwise.
        (home / "fgext-lib").symlink_to(ROOT)
        launcher = home / "extensionFgext.sh"
        launcher.write_bytes(LAUNCHER.read_bytes())
        launcher.chmod(0o755)
        out = tmp_path / "mine.jsonl"
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "myext:ext,jsonl",
                        "FGEXT_MINE_OUT": str(out), "FGEXT_JSONL_PATH": str(tmp_path / "all.jsonl"),
                        "FGEXT_PYTHON_FLAGS": ""}, launcher=launcher)
        lines = drive(agent, out)
        assert lines[1:] == [{"invoke": "req-1"},
                             {"telemetry": ["platform.initStart", "HELLO", "platform.initReport"]}, {"shutdown": True}]
        # The extension's processor ran before the other sink too: jsonl saw the changed, shortened batch.
        written = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
        assert [w.get("message") for w in written if w["type"] == "FunctionLog"] == ["HELLO"]
        assert agent.wait_log("pipeline started")["plugins"] == ["mine", "mine", "jsonl"]


def test_run_outside_sandbox_explains(tmp_path: Path) -> None:
    """ext.run() without EXTENSION_API_ADDR exits 2 with the reason, not a traceback."""
    import subprocess
    import sys

    script = tmp_path / "myext.py"
    script.write_text(EXTENSION_SOURCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FGEXT_", "EXTENSION_API_ADDR"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "EXTENSION_API_ADDR is not set" in done.stderr and "Traceback" not in done.stderr




def test_processor_only_extension_gets_flush_and_shutdown() -> None:
    """Lifecycle handlers riding on a processor-only extension are called on flush and shutdown."""
    ext = Extension(name="proc")
    calls: List[str] = []
    ext.on_event(lambda e: e)
    ext.on_flush(lambda: calls.append("flush"))
    ext.on_shutdown(lambda timeout: calls.append(f"shutdown<={timeout:g}"))
    run_plugin(ext, [make_log("x")], shutdown_timeout=3.0)
    assert calls[0] == "flush" and calls[1].startswith("shutdown<=") and len(calls) == 2
