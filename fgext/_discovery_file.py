"""The small file through which the agent tells the function where its OTLP receiver listens.

The agent writes it once its listener is up; ``fgext.function`` reads it at an invocation. Format
(JSON, one object)::

    {"version": 1, "port": 8085, "pid": 42}

``port`` is the agent's listener on 127.0.0.1 (its OTLP/HTTP receiver answers ``/v1/traces`` there)
and ``pid`` the agent's process, so that a file left by an agent that died is recognised as stale.
The path is ``/tmp/fgext-agent.json`` unless ``FGEXT_AGENT_FILE`` names another; it is written to a
temporary name and renamed, so a reader never sees half a file. ``FGEXT_AGENT_ENDPOINT`` (a base URL
such as ``http://127.0.0.1:8085``) overrides the file on the function's side.

Standard library only: the function side imports this module.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional

__all__ = [
    "DEFAULT_PATH", "agent_endpoint", "agent_file_path", "read_agent_file", "remove_agent_file", "write_agent_file",
]

DEFAULT_PATH = "/tmp/fgext-agent.json"
VERSION = 1


def agent_file_path(environ: Optional[Mapping[str, str]] = None) -> str:
    """Where the discovery file is: ``FGEXT_AGENT_FILE`` or ``/tmp/fgext-agent.json``."""
    env = os.environ if environ is None else environ
    return env.get("FGEXT_AGENT_FILE", "").strip() or DEFAULT_PATH


def write_agent_file(port: int, pid: Optional[int] = None, path: Optional[str] = None) -> str:
    """Write the discovery file atomically (the agent's side); returns its path."""
    if not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(f"port must be 1-65535, got {port!r}")
    target = path or agent_file_path()
    temporary = f"{target}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"version": VERSION, "port": port, "pid": os.getpid() if pid is None else pid}, handle)
    os.replace(temporary, target)
    return target


def remove_agent_file(path: str, pid: Optional[int] = None) -> bool:
    """Remove the file at exit if it is still this process's (another agent may have written it since)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("pid") != (os.getpid() if pid is None else pid):
        return False
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def read_agent_file(path: Optional[str] = None) -> Optional[int]:
    """The port the file announces, or None when it is missing, malformed, or its agent is gone."""
    try:
        with open(path or agent_file_path(), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    port, pid = data.get("port"), data.get("pid")
    if type(port) is not int or not 0 < port < 65536:
        return None
    if type(pid) is int and pid > 0 and not _alive(pid):
        return None
    return port


def agent_endpoint(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The agent's base URL: ``FGEXT_AGENT_ENDPOINT``, else from the discovery file, else None."""
    env = os.environ if environ is None else environ
    override = env.get("FGEXT_AGENT_ENDPOINT", "").strip()
    if override:
        return override.rstrip("/")
    port = read_agent_file(agent_file_path(env))
    return None if port is None else f"http://127.0.0.1:{port}"
