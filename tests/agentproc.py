"""Start the agent as the platform would: the real launcher script, in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tests.conftest import LAUNCHER, agent_python


class AgentProcess:
    """One agent subprocess; output goes to files so a chatty agent never blocks on a full pipe."""

    def __init__(self, tmp: Path, env: Dict[str, str], launcher: Path = LAUNCHER) -> None:
        self.tmp = tmp
        self.stdout_path = tmp / "agent.stdout"
        self.stderr_path = tmp / "agent.stderr"
        full_env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("FGEXT_", "OTEL_", "EXTENSION_API_ADDR", "PYTHONPATH"))
        }
        full_env.update({"FGEXT_PYTHON": agent_python(), "FGEXT_REGISTER_TIMEOUT": "10"})
        full_env.update(env)
        self.started = time.monotonic()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen([str(launcher)], env=full_env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, cwd=str(tmp))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def logs(self) -> List[Dict[str, Any]]:
        """The agent's structured log lines (JSON on stderr when not a terminal)."""
        lines = []
        for line in self.stderr().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def wait_log(self, event: str, timeout: float = 20.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.logs():
                if line.get("event") == event:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"agent never logged {event!r}; exit={self.proc.poll()} stderr:\n{self.stderr()}")

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent did not exit in {timeout}s; stderr:\n{self.stderr()}") from None

    def post(self, port: int, path: str, body: bytes, timeout: float = 10.0) -> Tuple[int, Any]:
        """POST to the agent's listener; return (status, decoded JSON answer or text)."""
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[int]:
        """Stop by PID: the signal, then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def ready(agent: AgentProcess) -> int:
    """Wait until the agent's plugins run; return the port it listens on."""
    agent.wait_log("pipeline started")
    return int(agent.wait_log("listening")["address"].rsplit(":", 1)[1])
