"""``fgext emulate`` on the command line: exit codes, the summary, JSON, and the progress line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from fgext.emulator._render import Progress
from fgext.emulator._report import InvocationResult
from fgext.emulator._telemetry import TelemetryStats
from tests.emulator_helpers import add_extension, extension_ports, records

ROOT = Path(__file__).resolve().parent.parent


def fgext(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fgext", "emulate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


class TestUsageErrors:
    @pytest.mark.parametrize(("args", "message"), [
        (["/nonexistent/ext.zip"], "does not exist"),
        ([], "give a TARGET"),
        (["--demo", "some.zip"], "--demo takes no other arguments"),
        (["TMP", "--function", "/nonexistent.py:handler"], "does not exist"),
        (["TMP", "--function", "nohandler"], "FILE.py:HANDLER"),
        (["TMP", "--event", "TMP/bad.json"], "not valid JSON"),
        (["TMP", "--env", "NOEQUALS"], "KEY=VALUE"),
        (["TMP", "--port", "8085"], "8081-8090"),
        (["TMP"], "no extension/ folder"),
        (["TMP", "--invocations", "0"], "must be at least 1"),
        (["TMP", "--timeout", "-1"], "must be positive"),
    ])
    def test_exit_2_with_a_clear_message(self, tmp_path: Path, args: List[str], message: str) -> None:
        """A user's mistake exits 2 with a one-line reason and no traceback."""
        (tmp_path / "bad.json").write_text("{nope")
        result = fgext(*[arg.replace("TMP", str(tmp_path)) for arg in args])
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("port_range_lock")
class TestRuns:
    def test_summary_table_and_exit_0(self, tmp_path: Path) -> None:
        """A good run prints the extension table, one row per invocation, telemetry counts; exits 0."""
        root = add_extension(tmp_path / "ext", subscribe=["platform"])
        result = fgext(str(root), "-n", "2")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        port = extension_ports(root)["extensionTest.sh"]
        assert f"extensionTest.sh  127.0.0.1:{port}  platform" in out
        rows = [line for line in out.splitlines() if line[:2] in ("1 ", "2 ")]
        assert len(rows) == 2 and "cold (init" in rows[0] and "warm" in rows[1]
        assert all("success" in row and " 200 " in row for row in rows)
        assert "0 batches (0 events) dropped" in out and out.rstrip().endswith("no problems")
        assert "\x1b[2K" not in result.stderr  # no progress line when stderr is not a terminal

    def test_json_report(self, tmp_path: Path) -> None:
        """--json writes the report as JSON: invocations, answers, telemetry, problems."""
        root = add_extension(tmp_path / "ext", subscribe=["platform", "function"])
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"fail": True}))
        result = fgext(str(root), "-n", "2", "--json", "--event", str(event), "--no-spec-typos")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["spec_typos"] is False
        assert [i["status"] for i in report["invocations"]] == ["failure", "failure"]
        assert report["invocations"][0]["answers"]["extensionTest.sh"]["status"] == 200
        assert report["telemetry"]["events_delivered"] > 0 and report["telemetry"]["events_dropped"] == 0
        assert report["extensions"][0]["subscribed"] == ["platform", "function"]

    def test_never_registering_exits_1_naming_the_script(self, tmp_path: Path) -> None:
        """An extension that does not register ends the run with exit 1 and its name and output."""
        root = add_extension(tmp_path / "ext", never_register=True)
        result = fgext(str(root), "--register-timeout", "1")
        assert result.returncode == 1
        assert "extensionTest.sh did not register within 1 s" in result.stderr
        assert "recorder extensionTest.sh starting" in result.stderr
        assert "Traceback" not in result.stderr

    def test_crash_exits_1_and_lists_the_problem(self, tmp_path: Path) -> None:
        """An extension that crashes mid-run makes the exit code 1; the summary names it."""
        root = add_extension(tmp_path / "ext", crash_after_invokes=1)
        result = fgext(str(root), "-n", "2")
        assert result.returncode == 1
        assert "crashed (exit 3)" in result.stdout
        assert "extensionTest.sh exited with code 3 while the function was running" in result.stdout

    def test_verbose_echoes_output(self, tmp_path: Path) -> None:
        """--verbose shows each extension's and the function's lines, prefixed with their source."""
        root = add_extension(tmp_path / "ext")
        result = fgext(str(root), "-n", "1", "-v")
        assert result.returncode == 0
        assert "[extensionTest.sh] recorder extensionTest.sh starting" in result.stderr
        assert "[function] [Function] handling request" in result.stderr


@pytest.mark.usefixtures("port_range_lock")
def test_sigterm_stops_every_process_and_still_reports(tmp_path: Path) -> None:
    """SIGTERM to the emulator stops the extensions (none orphaned), prints the summary, exits 130."""
    root = add_extension(tmp_path / "ext", subscribe=["platform"])
    process = subprocess.Popen([sys.executable, "-m", "fgext", "emulate", str(root), "-n", "1000", "--freeze", "0.3"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while len(records(root, "invoke")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(records(root, "invoke")) >= 2, "the run did not get going"
        process.terminate()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        # Whatever happened to the emulator, no extension it started outlives the test (nor stays frozen
        # holding a port that the next test needs); which ones were still alive is asserted below.
        orphans = []
        for started in records(root, "start"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(started["pid"], signal.SIGCONT)
                orphans.append(started["pid"])
                os.kill(started["pid"], signal.SIGKILL)
    assert process.returncode == 130, err
    assert "interrupted after" in err and "extensionTest.sh" in out
    assert records(root, "start") and orphans == []


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _result(status: str) -> InvocationResult:
    return InvocationResult(index=0, request_id="r", status=status, duration_ms=1.0, billed_ms=1.0,
                            memory_used_mb=1.0, cold=False, started_at=0.0)


class TestProgress:
    def test_updates_one_line_on_a_terminal(self) -> None:
        """On a TTY the line is rewritten in place and cleared at the end."""
        stream = _Tty()
        stats = TelemetryStats(events_delivered=7, events_dropped=1)
        progress = Progress(stream, total=2, telemetry=lambda: stats)
        progress.update(_result("success"))
        progress.update(_result("timeout"))
        progress.clear()
        text = stream.getvalue()
        assert "invocations 1/2  not ok 0" in text and "invocations 2/2  not ok 1" in text
        assert "telemetry events delivered 7, dropped 1" in text
        assert text.endswith("\r\x1b[2K") and "\n" not in text

    def test_silent_when_not_a_terminal(self) -> None:
        """Piped output gets no progress line at all."""
        stream = io.StringIO()
        progress = Progress(stream, total=1)
        progress.update(_result("success"))
        progress.clear()
        assert stream.getvalue() == "" and progress.done == 1


def test_an_answers_error_is_shown_whole() -> None:
    """An extension's failed answer reads in full in its row (it was cut at 32 characters)."""
    from fgext.emulator._render import _invocation_row
    from fgext.emulator._report import ExtensionAnswer, InvocationResult

    error = "process was killed by SIGKILL while the invocation waited for its answer"
    result = InvocationResult(index=0, request_id="r" * 36, status="success", duration_ms=1.0, billed_ms=1.0,
                              memory_used_mb=30.0, cold=False, started_at=0.0,
                              answers=[ExtensionAnswer("extensionA.sh", None, 0.0, error)])
    assert error in _invocation_row(result, ["extensionA.sh"])
