"""The real fgext agent, started through its launcher, under the emulator: the platform for its e2e tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from fgext.emulator._demo import otlp_plugin_available
from fgext.testing import run_emulator
from tests.conftest import ROOT, agent_python

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]


def agent_env(tmp_path: Path) -> Dict[str, str]:
    return {"FGEXT_PYTHON": agent_python(), "FGEXT_PLUGINS": "jsonl",
            "FGEXT_JSONL_PATH": str(tmp_path / "agent.jsonl")}


def written(tmp_path: Path) -> List[Dict[str, Any]]:
    path = tmp_path / "agent.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("spec_typos", [True, False])
def test_agent_gets_every_invoke_and_event(tmp_path: Path, spec_typos: bool) -> None:
    """The agent registers, subscribes to all types, answers every invoke, and parses every event sent."""
    report = run_emulator(ROOT, events=[{"n": 1}, {"fail": True}, {"n": 3}], env=agent_env(tmp_path),
                          spec_typos=spec_typos, register_timeout_s=20.0)
    assert report.ok, report.problems
    agent = report.extensions[0]
    assert agent.name == "extensionFgext.sh" and agent.subscribed == ("platform", "function", "extension")
    assert agent.exit_code == 0  # SIGTERM is its normal end of life
    assert all(a.status == 200 for r in report.invocations for a in r.answers)
    assert report.telemetry.events_dropped == 0 and report.telemetry.events_delivered > 0

    records = written(tmp_path)
    request_ids = [r.request_id for r in report.invocations]
    assert [r["request_id"] for r in records if r["type"] == "Invoke"] == request_ids
    for request_id, result in zip(request_ids, report.invocations):
        mine = [r["type"] for r in records if r.get("request_id") == request_id and r["type"] != "Invoke"]
        expected = ["Start", "RuntimeDone", "Report"]
        if result.cold:
            expected = ["InitStart", "InitRuntimeDone", "InitReport", *expected]
        assert mine == expected
    done = [r["status"] for r in records if r["type"] == "RuntimeDone"]
    assert done == ["success", "failure", "success"]
    assert sum(r["type"] == "FunctionLog" for r in records) >= 6
    assert not any(r["type"] in ("UnknownEvent", "MalformedEvent") for r in records)


def test_agent_survives_freezes(tmp_path: Path) -> None:
    """SIGSTOP and SIGCONT between invocations lose nothing: every event still reaches the agent."""
    report = run_emulator(ROOT, invocations=3, freeze_s=0.3, env=agent_env(tmp_path), register_timeout_s=20.0)
    assert report.ok, report.problems
    assert report.freezes == 2
    reports = [r for r in written(tmp_path) if r["type"] == "Report"]
    assert [r["request_id"] for r in reports] == [r.request_id for r in report.invocations]


def test_demo_end_to_end() -> None:
    """`fgext emulate --demo` exits 0 and shows the run; with the OTLP plugin present, each trace's spans."""
    result = subprocess.run([sys.executable, "-m", "fgext", "emulate", "--demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "extensionFgext.sh  127.0.0.1:80" in out and "no problems" in out
    assert out.count("success") >= 3 and "the sample function was asked to fail" in out
    if not otlp_plugin_available():
        assert "no traces received within" in out and "is the OTLP plugin enabled?" in out
        pytest.skip("the agent's OTLP plugin (fgext.otlp) is not on this branch yet: trace part not checked")
    traces = out.split("traces (", 1)[1]
    assert len(re.findall(r"^trace [0-9a-f]{32}  ", traces, re.MULTILINE)) >= 4
    assert "fgext-demo  SERVER" in traces and "├─ init" in traces and "invoke" in traces
    assert "ERROR" in traces  # the invocation that failed
    assert "metrics:" in out and "faas." in out


FAILING_PLUGIN = '''
import fgext

ext = fgext.Extension(name="boom")


@ext.on_telemetry
def fail(events):
    raise ValueError("boom on every batch: disk quota exceeded")
'''


def failing_plugin_env(tmp_path: Path, **extra: str) -> Dict[str, str]:
    (tmp_path / "boom_plugin.py").write_text(FAILING_PLUGIN)
    return {"FGEXT_PYTHON": agent_python(), "FGEXT_PLUGINS": "jsonl,boom_plugin:ext",
            "FGEXT_JSONL_PATH": str(tmp_path / "agent.jsonl"), "PYTHONPATH": str(tmp_path), **extra}


class TestProblemsThatLoseTelemetry:
    """Whatever would lose telemetry in the cloud makes the run not ok, named in the problems."""

    @pytest.mark.parametrize(("variable", "value"), [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ])
    def test_bad_exporter_setting(self, variable: str, value: str) -> None:
        """A bad OTLP setting disables the otlp plugin: a problem quoting the user's own value."""
        report = run_emulator(ROOT, invocations=1, env={"FGEXT_PYTHON": agent_python(), variable: value},
                              register_timeout_s=20.0)
        assert not report.ok
        text = "\n".join(report.problems)
        assert f"{variable}={value!r}" in text and "/v1/traces" not in text, text
        assert "plugin disabled" in text and "plugin=otlp" in text

    def test_conflicting_credentials(self) -> None:
        """Credentials in the endpoint URL and an Authorization header: the otlp plugin is not started, the
        run is a problem saying why, and neither secret is shown."""
        env = {"FGEXT_PYTHON": agent_python(), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:PASSWORD-9@127.0.0.1:4318",
               "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20TOKEN-XYZ-9"}
        report = run_emulator(ROOT, invocations=1, env=env, register_timeout_s=20.0)
        assert not report.ok
        text = "\n".join(report.problems)
        assert "credentials in the URL" in text and "plugin=otlp" in text, text
        assert "PASSWORD-9" not in text and "TOKEN-XYZ-9" not in text

    def test_plugin_failing_on_every_batch(self, tmp_path: Path) -> None:
        """A plugin that raises on every batch is a problem, with its exception, counted."""
        report = run_emulator(ROOT, invocations=2, env=failing_plugin_env(tmp_path), register_timeout_s=20.0)
        assert not report.ok
        text = "\n".join(report.problems)
        assert "plugin failed (plugin=boom" in text
        assert "ValueError: boom on every batch: disk quota exceeded" in text

    def test_strict_failure_shows_the_original_exception(self, tmp_path: Path) -> None:
        """FGEXT_STRICT=1: the agent stops on the first failure and the problem carries the exception."""
        report = run_emulator(ROOT, invocations=2, env=failing_plugin_env(tmp_path, FGEXT_STRICT="1"),
                              register_timeout_s=20.0)
        assert not report.ok
        text = "\n".join(report.problems)
        assert "ValueError: boom on every batch: disk quota exceeded" in text and "strict=True" in text
        agent = report.extensions[0]
        assert agent.exit_code == 1, agent

    def test_cli_exits_1_and_lists_the_problem(self) -> None:
        """`fgext emulate` with a bad endpoint prints the problem and exits 1 (it used to say no problems)."""
        result = subprocess.run([sys.executable, "-m", "fgext", "emulate", str(ROOT), "-n", "1",
                                 "--env", f"FGEXT_PYTHON={agent_python()}",
                                 "--env", "OTEL_EXPORTER_OTLP_ENDPOINT=localhost:4318"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "problems:" in result.stdout and "no problems" not in result.stdout
        assert "OTEL_EXPORTER_OTLP_ENDPOINT='localhost:4318'" in result.stdout


def test_summary_shows_what_the_agent_said_of_itself(tmp_path: Path) -> None:
    """The summary shows the agent's own counters at exit (its `stopped` line): events received, plugin
    failures, and what the OTLP sink spooled by signal when its collector was down, with no collector."""
    from fgext.emulator._render import render_summary
    from tests.test_otlp_plugin import free_port

    env = failing_plugin_env(tmp_path, FGEXT_PLUGINS="otlp,boom_plugin:ext",
                             FGEXT_SPOOL_DIR=str(tmp_path / "spool"),
                             OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    report = run_emulator(ROOT, invocations=2, env=env, register_timeout_s=20.0)
    agent = report.extensions[0]
    stopped = agent.self_report
    assert stopped is not None, agent.last_lines
    assert stopped["events_received"] == report.telemetry.events_delivered > 0
    assert stopped["plugin_failures"] >= 1
    assert stopped["otlp"]["spooled"]["traces"]["items"] >= 4  # root and invoke spans of each invocation
    text = render_summary(report)
    assert f"agent extensionFgext.sh at exit: {stopped['events_received']} events received (0 malformed)" in text
    assert f"{stopped['plugin_failures']} hook failures" in text
    assert "otlp spooled: " in text and "traces " in text.split("otlp spooled: ", 1)[1]
    spooled = next(p for p in report.problems if "otlp data spooled at the shutdown deadline" in p)
    assert "'traces': {'requests': " in spooled and "'items': " in spooled and "'bytes': " in spooled
