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
