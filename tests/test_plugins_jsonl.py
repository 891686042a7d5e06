"""The jsonl plugin: one JSON line per event, narrowed by type, safe to print on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fgext._errors import PluginError
from fgext._pipeline import PluginFailure
from fgext._plugintest import make_invocation, make_invoke, make_log, run_plugin
from fgext.plugins.jsonl import JsonlPlugin


def test_writes_invokes_and_events(tmp_path: Path) -> None:
    """Each invoke and event becomes one JSON line holding its type and raw object."""
    out = tmp_path / "e.jsonl"
    run_plugin(JsonlPlugin(), make_invocation("r1", logs=["hi"]), invokes=[make_invoke("r1")],
               config={"path": str(out)})
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["Invoke", "Start", "FunctionLog", "RuntimeDone", "Report"]
    assert lines[0]["request_id"] == "r1" and lines[2]["raw"]["logs"] == "[Function]hi"


def test_types_setting_narrows_output(tmp_path: Path) -> None:
    """types=function writes only function logs; invokes=false leaves invokes out."""
    out = tmp_path / "e.jsonl"
    run_plugin(JsonlPlugin(), make_invocation("r1", logs=["hi"]), invokes=[make_invoke("r1")],
               environ={"FGEXT_JSONL_PATH": str(out), "FGEXT_JSONL_TYPES": "function", "FGEXT_JSONL_INVOKES": "0"})
    assert [json.loads(line)["type"] for line in out.read_text().splitlines()] == ["FunctionLog"]


def test_unknown_type_refused() -> None:
    """An unknown category in types stops the plugin with its name and the key."""
    with pytest.raises(PluginFailure) as info:
        run_plugin(JsonlPlugin(), [make_log("x")], config={"types": ["metrics"]})
    assert isinstance(info.value.__cause__, PluginError) and "'types'" in str(info.value.__cause__)


def test_stdout_lines_carry_no_collectable_marker(capsys: pytest.CaptureFixture[str]) -> None:
    """On stdout the [Extension]/[Function] markers are broken so the platform does not collect them back."""
    run_plugin(JsonlPlugin(), [make_log("echo", category="extension"), make_log("fn")], config={"path": "-"})
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2
    assert "[Extension]" not in out and "[Function]" not in out
    assert json.loads(out.splitlines()[0])["message"] == "echo"


def test_lone_surrogates_are_escaped_and_the_batch_is_kept(tmp_path: Path) -> None:
    """A log line carrying a lone surrogate (valid JSON, not UTF-8) is written as a JSON escape: the file stays
    UTF-8, the line reads back exactly as the platform sent it, and its batch is not lost."""
    out = tmp_path / "e.jsonl"
    run_plugin(JsonlPlugin(), [make_log("bad \ud800 char"), make_log("fine")], config={"path": str(out)})
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["message"] for line in lines] == ["bad \ud800 char", "fine"]
    assert "\\ud800" in out.read_text(encoding="utf-8")


def test_the_functions_own_otlp_data_is_written_as_its_size(tmp_path: Path) -> None:
    """An OtlpPayload becomes one line with its type, signal and size in bytes (the message is not JSON)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from fgext._events import OtlpPayload

    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="work")
    out = tmp_path / "e.jsonl"
    run_plugin(JsonlPlugin(), [OtlpPayload("traces", request, 1)], config={"path": str(out)})
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]
    assert (line["type"], line["category"], line["signal"], line["bytes"]) == (
        "OtlpPayload", "otlp", "traces", request.ByteSize())
