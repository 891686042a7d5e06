"""The emulator end to end, with hand-written extensions (POSIX sh + Python) as any user would write."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from fgext._urn import parse_urn
from fgext.emulator import Emulator, EmulatorConfig, ExtensionError
from fgext.testing import emulate, run_emulator
from tests.conftest import ROOT
from tests.emulator_helpers import (
    add_extension,
    extension_ports,
    function_file,
    records,
    telemetry_events,
    zip_dir,
)

ALL = ["platform", "function", "extension"]

HANDLER = """
import time
def handler(event, context):
    print("[Function] start " + context.getRequestID())
    mode = (event or {}).get("mode")
    if mode == "raise":
        raise ValueError("asked to raise")
    if mode == "sleep":
        time.sleep(float(event.get("seconds", 2)))
    print("not a marked line")
    return {"name": context.getFunctionName(), "memory": context.getMemorySize(),
            "remaining": context.getRemainingTimeInMilliSeconds(), "version": context.getVersion()}
"""


def names(events: List[Dict[str, Any]]) -> List[str]:
    return [event["name"] for event in events]


def of_request(events: List[Dict[str, Any]], request_id: str) -> List[Dict[str, Any]]:
    """The platform events of one request, and the function log lines that name it."""
    return [e for e in events if request_id in (e.get("traceId"), e.get("tracelId"))
            or (e["name"] == "function" and request_id in e["logs"])]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_public_surface() -> None:
    """fgext.emulator exports exactly its documented names, and each one exists."""
    import fgext.emulator

    assert set(fgext.emulator.__all__) == {
        "SAMPLE_FUNCTION", "Emulator", "EmulatorConfig", "EmulatorReport", "EventFactory", "ExtensionAnswer",
        "ExtensionError", "ExtensionStatus", "FunctionSpec", "InvocationResult", "PhaseResult", "Registration",
        "Rejection", "Subscription", "TelemetryStats", "parse_function_spec"}
    assert all(hasattr(fgext.emulator, name) for name in fgext.emulator.__all__)


@pytest.mark.usefixtures("port_range_lock")
class TestLifecycle:
    def test_runs_extension_and_function_like_the_sandbox(self, tmp_path: Path) -> None:
        """Extensions start with the sandbox's cwd and variables, get invokes; telemetry arrives in order."""
        root = add_extension(tmp_path / "ext", subscribe=ALL, extension_logs=["ready"])
        spec = function_file(tmp_path, HANDLER)

        async def main() -> Any:
            async with emulate(root, function=spec, function_name="hello", memory_mb=256) as emu:
                address = emu.api_address
                sandbox_cwd = emu.sandbox.cwd if emu.sandbox else None
                first = await emu.invoke({"n": 1})
                second = await emu.invoke({"n": 2})
            return emu, address, sandbox_cwd, first, second

        emu, address, cwd, first, second = run(main())
        report = emu.report
        assert report.ok, report.problems
        start = records(root, "start")[0]
        assert start["cwd"] == str(cwd) and start["env"]["EXTENSION_API_ADDR"] == address
        env = start["env"]
        assert env["RUNTIME_FUNC_NAME"] == "hello" and env["RUNTIME_MEMORY"] == "256"
        assert env["RUNTIME_CODE_ROOT"] == str(root.resolve()) and env["RUNTIME_HANDLER"] == "func.handler"
        assert {"RUNTIME_PROJECT_ID", "RUNTIME_FUNC_VERSION", "RUNTIME_PACKAGE", "RUNTIME_TIMEOUT",
                "RUNTIME_USERDATA", "RUNTIME_CPU", "RUNTIME_ROOT", "RUNTIME_LOG_DIR"} <= set(env)
        answer = records(root, "register")[0]
        assert answer["status"] == 200 and answer["answer"]["functionName"] == "hello"
        assert records(root, "subscribe")[0]["status"] == 200

        invokes = [r["body"] for r in records(root, "invoke")]
        assert [i["traceId"] for i in invokes] == [first.request_id, second.request_id]
        assert all(i["tracelId"] == i["traceId"] for i in invokes)
        urn = parse_urn(invokes[0]["invokedFunctionUrn"])
        assert urn.form == "public" and urn.function_name == "hello"

        assert first.ok and first.cold and first.init is not None and first.init.phase == "init"
        assert second.ok and not second.cold and second.init is None
        assert first.result["name"] == "hello" and first.result["memory"] == 256
        assert 0 < first.result["remaining"] <= 3000
        assert [a.status for a in first.answers] == [200]

        events = telemetry_events(root)
        assert "[Extension]ready" in [e.get("logs") for e in events]
        assert names(of_request(events, first.request_id)) == [
            "platform.initStart", "platform.initRuntimeDone", "platform.initReport", "platform.start",
            "function", "platform.RuntimeDone", "platform.report"]
        assert names(of_request(events, second.request_id)) == [
            "platform.start", "function", "platform.RuntimeDone", "platform.report"]
        assert "not a marked line" not in str(events)
        start_event, done_event, report_event = (e for e in of_request(events, first.request_id)[3:]
                                                  if e["name"] != "function")
        assert report_event["startTime"] == start_event["startTime"] <= done_event["startTime"]
        assert done_event["startTime"] == report_event["endTime"]  # a done event is stamped when it happens
        metrics = report_event["reportMetrics"]
        assert metrics["memorySize"] == 256 and metrics["memoryUsed"] > 1
        assert metrics["durationMs"] > 0 and metrics["billingDurationMS"] >= metrics["durationMs"]
        assert metrics["podName"].startswith("pool22-300-256-fusion-")
        assert report.telemetry.events_dropped == 0 and report.telemetry.events_delivered == len(events)

    def test_zip_target_runs_through_the_sync_helper(self, tmp_path: Path) -> None:
        """A dependency zip of a hand-written extension runs; its launcher keeps its executable bit."""
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        archive = zip_dir(root, tmp_path / "ext.zip")
        report = run_emulator(archive, events=[{}, {"fail": True}])
        assert report.ok, report.problems
        assert [r.status for r in report.invocations] == ["success", "failure"]
        port = extension_ports(root)["extensionTest.sh"]
        assert report.extensions[0].address == f"127.0.0.1:{port}" and not report.extensions[0].run_via_sh
        assert records(root, "start")[0]["argv0"].endswith("/function/code/extension/recorder.py")

    def test_script_without_executable_bit_runs_through_sh(self, tmp_path: Path) -> None:
        """A launcher that lost its executable bit is still started, through /bin/sh."""
        root = add_extension(tmp_path / "ext")
        script = root / "extension" / "extensionTest.sh"
        script.chmod(stat.S_IRUSR | stat.S_IWUSR)
        report = run_emulator(root)
        assert report.ok and report.extensions[0].run_via_sh

    def test_every_extension_gets_invokes_one_subscribes(self, tmp_path: Path) -> None:
        """Two extensions register on their own ports; both answer every invoke."""
        root = add_extension(tmp_path / "ext", subscribe=ALL)
        add_extension(root, name="extensionTwo.sh")
        report = run_emulator(root, invocations=2)
        assert report.ok, report.problems
        assert {e.name: e.subscribed for e in report.extensions} == {"extensionTest.sh": tuple(ALL),
                                                                     "extensionTwo.sh": ()}
        assert len(records(root, "invoke", "extensionTwo.sh")) == 2
        assert all(len(r.answers) == 2 for r in report.invocations)


@pytest.mark.usefixtures("port_range_lock")
class TestRegistrationFailures:
    def test_extension_that_never_registers_is_named_with_its_output(self, tmp_path: Path) -> None:
        """A script that does not register in time fails start() with its name and last lines."""
        root = add_extension(tmp_path / "ext", never_register=True)
        started = time.monotonic()
        with pytest.raises(ExtensionError) as caught:
            run_emulator(root, register_timeout_s=1.0)
        assert time.monotonic() - started < 8
        message = str(caught.value)
        assert "extensionTest.sh did not register within 1 s" in message
        assert "recorder extensionTest.sh starting" in message

    def test_extension_that_exits_before_registering(self, tmp_path: Path) -> None:
        """A script that exits early is reported with its exit code, without waiting for the timeout."""
        root = add_extension(tmp_path / "ext", exit_before_register=4)
        started = time.monotonic()
        with pytest.raises(ExtensionError, match=r"exited with code 4 before it registered[\s\S]*giving up"):
            run_emulator(root, register_timeout_s=30.0)
        assert time.monotonic() - started < 10

    def test_refused_registration_is_explained(self, tmp_path: Path) -> None:
        """When the platform refused the extension, the error says why."""
        root = add_extension(tmp_path / "ext", register_address="127.0.0.1:9999")
        with pytest.raises(ExtensionError, match="the platform refused it: InvalidAddress"):
            run_emulator(root, register_timeout_s=1.5)
        assert records(root, "register")[0]["status"] == 400


@pytest.mark.usefixtures("port_range_lock")
class TestFailures:
    def test_extension_crashing_mid_run_is_a_problem(self, tmp_path: Path) -> None:
        """An extension dying during the run is reported with its exit code; later invokes note it."""
        root = add_extension(tmp_path / "ext", crash_after_invokes=2)
        report = run_emulator(root, invocations=3)
        assert not report.ok
        assert report.extensions[0].crashed and report.extensions[0].exit_code == 3
        assert any("extensionTest.sh exited with code 3" in p and "crashing on purpose" in p
                   for p in report.problems)
        third = report.invocations[2].answers[0]
        assert third.status is None and third.error
        assert all(r.ok for r in report.invocations)  # the function itself is unaffected

    def test_slow_subscriber_is_retried_then_counted_as_dropped(self, tmp_path: Path) -> None:
        """A listener slower than the delivery timeout is retried, then its batches are dropped, counted."""
        root = add_extension(tmp_path / "ext", subscribe=["platform"], telemetry_delay_s=0.6)
        report = run_emulator(root, invocations=1, delivery_timeout_s=0.2, delivery_retries=1,
                              delivery_backoff_s=0.05)
        assert not report.ok
        assert report.telemetry.events_dropped >= 1 and report.telemetry.attempts_failed >= 2
        assert any("dropped after 1 retries" in p for p in report.problems)
        assert len(records(root, "telemetry")) >= 2  # the subscriber did receive the attempts

    def test_invoke_answered_with_an_error_is_a_problem(self, tmp_path: Path) -> None:
        """An extension answering an invoke with a non-200 status is reported."""
        root = add_extension(tmp_path / "ext", invoke_status=500)
        report = run_emulator(root, invocations=2)
        assert [a.status for r in report.invocations for a in r.answers] == [500, 500]
        assert report.problems == ["extensionTest.sh answered /extension/invoke with an error 2 of 2 times "
                                   "(last: 500)"]


@pytest.mark.usefixtures("port_range_lock")
class TestFunction:
    def test_concurrent_invocations_overlap_on_one_instance(self, tmp_path: Path) -> None:
        """With concurrency 3 the handlers run at the same time, after a single cold start."""
        spec = function_file(tmp_path, """
import time
def handler(event, context):
    started = time.time()
    time.sleep(0.4)
    return {"start": started, "end": time.time()}
""")
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        report = run_emulator(root, function=spec, invocations=3, concurrency=3)
        assert report.ok, report.problems
        results = [r.result for r in report.invocations]
        assert max(r["start"] for r in results) < min(r["end"] for r in results)
        assert sum(r.cold for r in report.invocations) == 1
        assert sorted(r.index for r in report.invocations) == [0, 1, 2]
        inits = [e for e in telemetry_events(root) if e["name"] == "platform.initStart"]
        assert len(inits) == 1

    def test_error_and_timeout_statuses(self, tmp_path: Path) -> None:
        """A raising handler gives failure, a slow one timeout; after a timeout the instance starts cold."""
        spec = function_file(tmp_path, HANDLER)
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        report = run_emulator(root, function=spec, timeout_s=0.5,
                              events=[{}, {"mode": "raise"}, {"mode": "sleep", "seconds": 3}, {}])
        statuses = [r.status for r in report.invocations]
        assert statuses == ["success", "failure", "timeout", "success"]
        failure, timeout, after = report.invocations[1:]
        assert failure.error["type"] == "ValueError" and "asked to raise" in failure.error["message"]
        assert timeout.error["type"] == "Timeout" and 450 < timeout.duration_ms < 2500
        assert after.cold and after.init is not None
        done = [e["status"] for e in telemetry_events(root) if e["name"] == "platform.RuntimeDone"]
        assert done == statuses

    def test_context_has_functiongraphs_getters(self, tmp_path: Path) -> None:
        """The handler's context answers FunctionGraph's getters from the emulated configuration."""
        spec = function_file(tmp_path, """
import os
def handler(event, context):
    log = context.getLogger()
    log.info("[Function] via the logger %s", "ok")
    log.setLevel("ERROR")
    log.info("[Function] filtered out")
    return {"request": context.getRequestID(), "name": context.getFunctionName(),
            "version": context.getVersion(), "package": context.getPackage(),
            "project": context.getProjectID(), "memory": context.getMemorySize(),
            "cpu": context.getCPUNumber(), "running": context.getRunningTimeInSeconds(),
            "remaining": context.getRemainingTimeInMilliSeconds(), "user": context.getUserData("color", "none"),
            "ak": context.getAccessKey(), "token": context.getSecurityToken(), "cwd": os.getcwd(),
            "handler_env": os.environ["RUNTIME_HANDLER"], "api": os.environ.get("EXTENSION_API_ADDR")}
""")
        root = add_extension(tmp_path / "ext", subscribe=["function"])
        report = run_emulator(root, function=spec, function_name="ctx", function_version="v1", package="pkg",
                              project_id="p1", memory_mb=512, cpu_millicores=600, timeout_s=5)
        result = report.invocations[0]
        assert result.result == {
            "request": result.request_id, "name": "ctx", "version": "v1", "package": "pkg", "project": "p1",
            "memory": 512, "cpu": 600, "running": 5, "remaining": result.result["remaining"], "user": "none",
            "ak": "", "token": "", "cwd": result.result["cwd"], "handler_env": "func.handler", "api": None}
        assert 4000 < result.result["remaining"] <= 5000 and result.result["cwd"].endswith("/function")
        logs = [e["logs"] for e in telemetry_events(root)]
        assert any(line.endswith(f"{result.request_id} INFO [Function] via the logger ok") for line in logs)
        assert not any("filtered out" in line for line in logs)

    def test_no_function_process_outlives_the_emulator(self, tmp_path: Path) -> None:
        """A handler still running after its timeout does not keep its process alive past stop()."""
        pid_file = tmp_path / "pid"
        spec = function_file(tmp_path, f"""
import os, time
def handler(event, context):
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
""")
        root = add_extension(tmp_path / "ext")
        started = time.monotonic()
        report = run_emulator(root, function=spec, timeout_s=0.3)
        assert report.invocations[0].status == "timeout"
        assert time.monotonic() - started < 20
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)

    def test_init_failure_fails_the_invocation(self, tmp_path: Path) -> None:
        """A module that raises on import fails its init phase and the invocation that carried it."""
        spec = function_file(tmp_path, "raise ImportError('no such dependency')\n"
                                       "def handler(e, c):\n    pass\n")
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        report = run_emulator(root, function=spec, invocations=2)
        first = report.invocations[0]
        assert first.status == "failure" and first.init is not None and first.init.status == "failure"
        assert "no such dependency" in first.error["message"]
        assert report.invocations[1].cold  # the platform tries a fresh instance
        events = telemetry_events(root)
        init_done = [e["status"] for e in events if e["name"] == "platform.initRuntimeDone"]
        assert init_done == ["failure", "failure"]

    def test_snapshot_emits_restore_instead_of_init(self, tmp_path: Path) -> None:
        """With snapshot the cold start is a restore phase."""
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        report = run_emulator(root, snapshot=True)
        assert report.invocations[0].init is not None and report.invocations[0].init.phase == "restore"
        assert names(telemetry_events(root))[:3] == [
            "platform.restoreStart", "platform.restoreRuntimeDone", "platform.restoreReport"]

    def test_spec_typos_off_uses_regular_spellings(self, tmp_path: Path) -> None:
        """With spec typos off the subscriber gets platform.runtimeDone, traceId and metrics."""
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        run_emulator(root, spec_typos=False)
        events = telemetry_events(root)
        assert "platform.runtimeDone" in names(events) and "platform.RuntimeDone" not in names(events)
        assert all("tracelId" not in e for e in events)
        report_event = next(e for e in events if e["name"] == "platform.report")
        assert "metrics" in report_event and "reportMetrics" not in report_event


@pytest.mark.usefixtures("port_range_lock")
class TestFreeze:
    def test_freeze_stops_and_resumes_every_extension(self, tmp_path: Path) -> None:
        """During a freeze the extension process is stopped (state T); afterwards it answers again."""
        root = add_extension(tmp_path / "ext", subscribe=ALL)

        def state(pid: int) -> str:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

        async def main() -> Any:
            async with Emulator(EmulatorConfig(target=root)) as emu:
                assert emu.supervisor is not None
                pid = emu.supervisor.processes["extensionTest.sh"].pid
                await emu.invoke({})
                freeze = asyncio.ensure_future(emu.freeze(1.0))
                during = state(pid)
                for _ in range(200):  # the freeze starts once pending telemetry is delivered
                    if during == "T" or freeze.done():
                        break
                    await asyncio.sleep(0.01)
                    during = state(pid)
                await freeze
                after = state(pid)
                result = await emu.invoke({})
            return during, after, result, emu.report

        during, after, result, report = run(main())
        assert during == "T" and after != "T"
        assert result.answers[0].status == 200
        assert report.ok and report.freezes == 1

    def test_run_freezes_between_waves(self, tmp_path: Path) -> None:
        """run() with freeze_s freezes between waves, and telemetry still all arrives."""
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        report = run_emulator(root, invocations=3, freeze_s=0.2)
        assert report.ok, report.problems
        assert report.freezes == 2
        assert names(telemetry_events(root)).count("platform.report") == 3


class TestExtensionOutput:
    def test_signal_exit_is_named(self) -> None:
        """A process a signal ended reads as the signal's name, not asyncio's negative code."""
        from fgext.emulator._extensions import describe_exit, ended

        assert describe_exit(-15) == "SIGTERM" and describe_exit(3) == "exit 3"
        assert ended(-9) == "was killed by SIGKILL" and ended(3) == "exited with code 3"

    @pytest.mark.parametrize(("line", "expected"), [
        ('{"event": "plugin disabled", "level": "warning", "plugin": "otlp", "timestamp": "t"}',
         "warning: plugin disabled (plugin=otlp)"),
        ('{"event": "slow invocation", "level": "warning", "plugin": "alert"}', None),
        ('{"event": "plugin failed", "level": "error", "error": "ValueError: x"}',
         "error: plugin failed (error=ValueError: x)"),
        ('{"event": "listening", "level": "info"}', None),
        ("[Extension] error: not JSON", None),
        ("[1, 2]", None),
    ])
    def test_structured_warnings_and_errors_are_problems(self, line: str, expected: object) -> None:
        """Errors and the agent's lost-telemetry warnings become one readable line; anything else is not."""
        from fgext.emulator._extensions import logged_problem

        assert logged_problem(line) == expected

    def test_every_agent_warning_is_sorted(self) -> None:
        """Each warning the agent's code logs is either a lost-telemetry problem or known to be harmless."""
        from fgext.emulator._extensions import LOSING_WARNINGS

        harmless = {"listener did not close in time", "otlp spool cannot write; spooling in memory from now on",
                    "otlp spool directory unusable; spooling in memory", "slow invocation",
                    # the listener protecting itself from clients that are not the platform
                    "listener at its connection cap; closing the longest-quiet connections to ",
                    "listener closed a connection that sent no complete request head in time"}
        function_side = ("function.py", "_local_export.py")  # run in the function's process, not the agent's
        logged = set()
        for path in (ROOT / "fgext").rglob("*.py"):
            if path.parent.name not in ("emulator", "packager") and path.name not in function_side:
                text = path.read_text()
                logged |= set(re.findall(r"log\.warning\(\s*\"([^\"]+)\"", text))
                logged |= {"telemetry body rejected" for _ in re.findall(r"log\.warning\(f\"\{what\} body", text)}
        unsorted = logged - LOSING_WARNINGS - harmless
        assert not unsorted, f"sort these into LOSING_WARNINGS (fgext/emulator/_extensions.py) or harmless: {unsorted}"
        assert logged >= LOSING_WARNINGS, LOSING_WARNINGS - logged  # no stale names

    def test_export_failure_taken_back_when_the_collector_answers_again(self, tmp_path: Path) -> None:
        """A failed export followed by 'reachable again' is no problem; one never followed by it stays one."""
        from collections import deque

        from fgext.emulator._extensions import ExtensionProcess, ExtensionSupervisor

        failed = ('{"event": "otlp export failed; spooling and retrying with backoff", "level": "warning", '
                  '"signal": "%s"}')
        back = '{"event": "otlp collector reachable again", "level": "info", "failed_attempts": 1}'
        supervisor = ExtensionSupervisor([], tmp_path, {}, 10, on_log=lambda name, line: None)
        ext = ExtensionProcess(script=tmp_path / "extensionX.sh", process=None, output=deque(),  # type: ignore[arg-type]
                               started=0.0)
        handle = supervisor._line_handler(ext)
        handle(failed % "traces")
        handle(back)
        assert ext.problem_lines() == []
        handle(failed % "logs")
        assert [line for line, _ in ext.problem_lines()] == [
            "warning: otlp export failed; spooling and retrying with backoff (signal=logs)"]
