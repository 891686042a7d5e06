"""The benchmark harness (bench/run.py) still runs: a --smoke run completes and reports every key.

Nothing here is about speed: only that each section ran and produced its figures and target verdicts.
The zip section builds the default Python3.9 zip once per source tree (pip, cached under /tmp).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.conftest import ROOT, agent_python, require_free_ports

pytestmark = [pytest.mark.agent, pytest.mark.slow]

EXPECTED = {
    "coldstart": {"floor_python_pass_ms", "bare_floor_import_ms", "otlp_floor_import_ms",
                  "bare_register_ms", "bare_subscribe_ms", "bare_first_batch_ms", "otlp_register_ms",
                  "otlp_subscribe_ms", "otlp_first_batch_ms", "bare_first_batch_over_import_floor",
                  "otlp_first_batch_over_import_floor", "bare_first_invoke_ms", "otlp_first_invoke_ms"},
    "cpu": {"events", "floor_events_per_s", "floor_cpu_us_per_event", "agent_events_per_s",
            "agent_cpu_us_per_event", "agent_over_floor_events_per_s", "periodic_cpu_us_per_event"},
    "memory": {"rss_start_mb", "rss_after_20_mb", "rss_after_60_mb", "rss_peak_mb", "growth_first_to_second_mb",
               "rss_steady_mb", "floor_rss_after_20_mb", "floor_rss_after_60_mb", "over_floor_after_60_mb",
               "rss_steady_over_floor_mb"},
    "latency": {"floor_invoke_p50_ms", "floor_invoke_p99_ms", "agent_invoke_p50_ms", "agent_invoke_p99_ms",
                "agent_sequential_p99_ms", "end_flush_p50_ms", "end_flush_p99_ms"},
    "zip": {"zip_bytes", "unpacked_bytes", "files", "pyc_register_ms", "pyc_first_batch_ms",
            "source_register_ms", "source_first_batch_ms", "pyc_files_pyc", "source_files_pyc"},
    "peer": {f"l{lines}_{key}" for lines in (0, 7, 50) for key in (
        "floor_cpu_us", "fgext_cpu_us", "periodic_cpu_us", "peer_cpu_us", "fgext_rss_mb", "periodic_rss_mb",
        "peer_rss_mb", "peer_exports", "fgext_over_floor_min", "fgext_over_floor_max", "periodic_over_floor_min",
        "periodic_over_floor_max", "peer_over_fgext_min", "peer_over_fgext_max", "fgext_over_floor_spread",
        "periodic_over_floor_spread", "peer_over_fgext_spread", "floor_outside_chunks_pct",
        "fgext_outside_chunks_pct", "periodic_outside_chunks_pct", "peer_outside_chunks_pct")},
}


def test_smoke_run_produces_every_key(tmp_path: Path) -> None:
    """bench/run.py --smoke exits 0, prints the table, and its JSON has every section's keys and verdicts."""
    from bench._agents import AGENT_PORT, port_range_lock

    with port_range_lock():  # bench/run.py takes the lock itself while its agents run
        require_free_ports([AGENT_PORT])
    out = tmp_path / "bench.json"
    # The harness's own interpreter, and the agent legs' one (FGEXT_TEST_PYTHON) when that differs.
    pythons = list(dict.fromkeys([sys.executable, agent_python()]))
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--json", str(out)]
    for python in pythons:
        command += ["--python", python]
    done = subprocess.run(command, cwd=str(ROOT), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "targets" in done.stdout and "[coldstart]" in done.stdout
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["machine"]["nproc"] >= 1
    assert len(result["runs"]) == len(pythons)
    for version, sections in result["runs"].items():
        wanted = dict(EXPECTED)
        if not version.startswith("3.9."):
            wanted.pop("zip")  # the default build is Python3.9: measured with a 3.9 interpreter only
        for section, keys in wanted.items():
            missing = keys - set(sections.get(section, {}))
            assert not missing, (version, section, missing)
            assert all(isinstance(v, (int, float)) for v in sections[section].values())
    verdicts = {(v["python"], v["key"]) for v in result["targets"]}
    assert len(verdicts) == 12 * len(pythons)
    assert all(isinstance(v["met"], bool) for v in result["targets"])


def test_unknown_section_is_a_usage_error() -> None:
    """--only with a section that does not exist exits 2 with the list of sections, no traceback."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--only", "speed"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "coldstart" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("value", ["1000", "10000,1000", "1000,x"])
def test_memory_checkpoints_must_be_two_increasing_counts(value: str) -> None:
    """--memory-checkpoints with fewer than two counts, counts that do not increase, or a word exits 2 with a
    clear line, no traceback."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--only", "memory",
                           "--memory-checkpoints", value], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "at least two increasing counts" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("option", ["--peer-chunk", "--peer-invocations"])
def test_peer_counts_must_be_positive(option: str) -> None:
    """--peer-chunk or --peer-invocations below 1 exits 2 with a clear line, no traceback."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--only", "peer", option, "0"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give a count of at least 1" in done.stderr and "Traceback" not in done.stderr


def test_agent_env_must_be_name_equals_value() -> None:
    """--agent-env without NAME=VALUE exits 2 with a clear line, no traceback."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--only", "cpu", "--agent-env", "X"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "give NAME=VALUE" in done.stderr and "Traceback" not in done.stderr


def test_agent_env_reaches_every_agent_and_a_sections_own_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run-wide setting is in every agent's environment; what a section sets itself takes precedence."""
    from bench import _agents

    monkeypatch.setattr(_agents, "AGENT_EXTRA_ENV", {"FGEXT_OTLP_REPORT_LOG": "0", "FGEXT_FLUSH": "end"})
    env = _agents.agent_env("python3", "127.0.0.1:1", "otlp", {"FGEXT_FLUSH": "periodically,1000"})
    assert env["FGEXT_OTLP_REPORT_LOG"] == "0" and env["FGEXT_FLUSH"] == "periodically,1000"


def test_packaged_needs_python_39() -> None:
    """--packaged with an interpreter that is not a 3.9 exits 2 naming it (the default zip is Python3.9's)."""
    if sys.version_info[:2] == (3, 9):
        pytest.skip("the harness runs on 3.9 here: there is no other interpreter at hand to refuse")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--packaged", "--only", "memory",
                           "--python", sys.executable], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not a Python 3.9" in done.stderr and "Traceback" not in done.stderr


def test_packaged_run_starts_the_agents_from_the_unpacked_zip(tmp_path: Path) -> None:
    """--packaged builds the default zip, and the agents of the run start from its launcher, unpacked: the
    memory section's figures come from that agent, and nothing of the unpacked copy is left behind."""
    from bench._agents import AGENT_PORT, port_range_lock

    python = agent_python()
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != "True":
        pytest.skip("--packaged needs a Python 3.9 agent interpreter (FGEXT_TEST_PYTHON, as CI's 3.9 leg sets)")
    with port_range_lock():
        require_free_ports([AGENT_PORT])
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--packaged", "--only",
                           "memory", "--python", python, "--json", str(out)], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    launcher = Path(result["launcher"])
    assert launcher.name == "extensionFgext.sh" and "fgext-bench-packaged-" in str(launcher)
    assert not launcher.exists()  # the unpacked copy went with the run
    (sections,) = result["runs"].values()
    assert EXPECTED["memory"] <= set(sections["memory"])


@pytest.mark.parametrize("script,args", [
    ("hook_call.py", ["--calls", "20", "--rounds", "1"]),
    ("inline_hooks.py", ["--invocations", "20", "--rounds", "1"]),
    ("http_client.py", ["--posts", "20", "--rounds", "1"]),
    ("flush_path.py", ["--flushes", "20", "--rounds", "1"]),
])
def test_micro_benchmarks_run(script: str, args: List[str]) -> None:
    """The micro-benchmarks bench/RESULTS.md quotes still run with tiny counts and print their figures."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\bus\b", done.stdout), done.stdout  # figures in microseconds


def test_flush_path_counts_what_a_flush_costs_the_event_loop() -> None:
    """bench/flush_path.py --count prints, per checkout, loop turns, tasks and futures per flush (a flush
    waits for two answers, so at least two loop turns)."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "flush_path.py"), "--flushes", "20", "--count"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"per flush _run_once ([0-9.]+),.* create_future ([0-9.]+)", done.stdout)
    assert found is not None, done.stdout
    assert float(found.group(1)) >= 2 and float(found.group(2)) >= 2


def test_a_taken_agent_port_is_one_line_and_exit_2() -> None:
    """When other software listens on the port the bench gives its agent, the run stops with one line naming
    the port and exit 2, rather than measuring whoever answers there."""
    from bench._agents import AGENT_PORT

    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            holder.bind(("127.0.0.1", AGENT_PORT))
        except OSError:
            pytest.skip(f"127.0.0.1:{AGENT_PORT} is taken already: this test needs to hold it itself")
        holder.listen()
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--only", "cpu",
                               "--python", sys.executable], cwd=str(ROOT), capture_output=True, text=True,
                              timeout=300)
    finally:
        holder.close()
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"127.0.0.1:{AGENT_PORT} is taken by other software" in done.stderr
    assert "Traceback" not in done.stderr
