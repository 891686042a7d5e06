"""The agent's discovery file: where the function finds the agent's receiver (fgext._discovery_file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fgext._discovery_file import DEFAULT_PATH, agent_endpoint, agent_file_path, read_agent_file, write_agent_file


def test_written_then_read(tmp_path: Path) -> None:
    """What the agent writes, the function reads: version, port and PID as one JSON object."""
    path = str(tmp_path / "agent.json")
    assert write_agent_file(8085, path=path) == path
    assert json.loads(Path(path).read_text()) == {"version": 1, "port": 8085, "pid": os.getpid()}
    assert read_agent_file(path) == 8085
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("content", ["", "not json", "[8085]", '{"port": "8085"}', '{"port": 0}',
                                     '{"port": 70000}', '{"port": true}'])
def test_malformed_files_mean_no_agent(tmp_path: Path, content: str) -> None:
    """A file that does not hold a valid port reads as no agent, never as an error."""
    path = tmp_path / "agent.json"
    path.write_text(content)
    assert read_agent_file(str(path)) is None


def test_missing_file_means_no_agent(tmp_path: Path) -> None:
    """No file: no agent."""
    assert read_agent_file(str(tmp_path / "absent.json")) is None


def test_dead_agent_means_no_agent(tmp_path: Path) -> None:
    """A file whose PID belongs to no process is stale."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    path = str(tmp_path / "agent.json")
    write_agent_file(8085, pid=dead.pid, path=path)
    assert read_agent_file(path) is None


def test_bad_port_is_refused_when_writing(tmp_path: Path) -> None:
    """The agent cannot write a port outside 1-65535."""
    with pytest.raises(ValueError, match="1-65535"):
        write_agent_file(0, path=str(tmp_path / "agent.json"))


def test_path_and_endpoint_from_the_environment(tmp_path: Path) -> None:
    """FGEXT_AGENT_FILE moves the file; FGEXT_AGENT_ENDPOINT overrides it; the default is /tmp/fgext-agent.json."""
    assert agent_file_path({}) == DEFAULT_PATH == "/tmp/fgext-agent.json"
    path = str(tmp_path / "agent.json")
    env = {"FGEXT_AGENT_FILE": path}
    assert agent_endpoint(env) is None
    write_agent_file(8086, path=path)
    assert agent_endpoint(env) == "http://127.0.0.1:8086"
    assert agent_endpoint({**env, "FGEXT_AGENT_ENDPOINT": "http://127.0.0.1:9999/"}) == "http://127.0.0.1:9999"


def test_the_agent_removes_only_its_own_file(tmp_path: Path) -> None:
    """remove_agent_file deletes the file when its pid is ours, and leaves another agent's file alone."""
    from fgext._discovery_file import remove_agent_file

    path = str(tmp_path / "agent.json")
    write_agent_file(8085, pid=os.getpid() + 1, path=path)
    assert not remove_agent_file(path) and os.path.exists(path)
    write_agent_file(8085, path=path)
    assert remove_agent_file(path) and not os.path.exists(path)
    assert not remove_agent_file(path)  # already gone: nothing to do
