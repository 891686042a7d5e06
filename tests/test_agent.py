"""The agent process end to end: the real launcher, a real subprocess, a recording platform."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

from tests.agentproc import AgentProcess, ready
from tests.conftest import EXTENSION_PORTS, LAUNCHER, ROOT, free_extension_ports, port_free
from tests.platform import RecordingPlatform, free_port
from tests.test_parse import DONE, EXTENSION_LOG, FUNCTION_LOG, REPORT, START, UUID

pytestmark = [pytest.mark.agent, pytest.mark.usefixtures("port_range_lock")]
Start = Callable[..., AgentProcess]


def jsonl_env(platform: RecordingPlatform, out: Path, **extra: str) -> Dict[str, str]:
    return {"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "jsonl", "FGEXT_JSONL_PATH": str(out), **extra}



def records(path: Path, count: int, timeout: float = 10.0) -> List[Dict[str, object]]:
    deadline = time.monotonic() + timeout
    lines: List[Dict[str, object]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if len(lines) >= count:
                return lines
        time.sleep(0.02)
    raise AssertionError(f"expected {count} records in {path}, got {lines}")


@pytest.fixture
def hold_ports() -> Iterator[Callable[[List[int]], None]]:
    held: List[socket.socket] = []

    def hold(ports: List[int]) -> None:
        for port in ports:
            sock = socket.socket()
            # Earlier tests leave connections to these ports in TIME_WAIT; a live listener still blocks.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
            held.append(sock)

    yield hold
    for sock in held:
        sock.close()


class TestRegistration:
    def test_registers_with_both_headers_and_subscribes(self, platform: RecordingPlatform, agents: Start,
                                                        tmp_path: Path) -> None:
        """Register carries the launcher's file name and the first free port; subscribe the documented body."""
        port = free_extension_ports()[0]  # 8081 unless other software listens there
        agent = agents(jsonl_env(platform, tmp_path / "out.jsonl"))
        seen = platform.wait_for(lambda r: len(r) >= 2)
        register, subscribe = seen[0], seen[1]
        assert register.path == "/extension/register"
        assert register.headers["FunctionGraph-Extension-Name"] == "extensionFgext.sh"
        assert register.headers["FunctionGraph-Extension-Address"] == f"127.0.0.1:{port}"
        assert subscribe.path == "/telemetry"
        assert subscribe.json() == {"subscriber": {"protocol": "POST", "uri": f"http://127.0.0.1:{port}"},
                                    "types": ["platform", "function", "extension"]}
        note = agent.wait_log("registered")
        assert note["function"] == "helloWorld" and note["version"] == "$LATEST"

    def test_name_follows_launcher_file_from_any_directory(self, platform: RecordingPlatform, agents: Start,
                                                            tmp_path: Path) -> None:
        """A launcher renamed and unpacked elsewhere registers under its own full file name."""
        unpacked = tmp_path / "somewhere" / "extension"
        unpacked.mkdir(parents=True)
        launcher = unpacked / "extension_1.sh"
        launcher.write_bytes(LAUNCHER.read_bytes())
        launcher.chmod(0o755)
        (unpacked.parent / "fgext").symlink_to(ROOT / "fgext")  # a checkout's layout, elsewhere
        agents(jsonl_env(platform, tmp_path / "o.jsonl"), launcher=launcher)
        seen = platform.wait_for(lambda r: len(r) >= 1)
        assert seen[0].headers["FunctionGraph-Extension-Name"] == "extension_1.sh"

    def test_types_from_environment(self, platform: RecordingPlatform, agents: Start, tmp_path: Path) -> None:
        """FGEXT_TELEMETRY_TYPES narrows the subscription; the order is the documented one."""
        agents(jsonl_env(platform, tmp_path / "o.jsonl", FGEXT_TELEMETRY_TYPES="function, platform"))
        seen = platform.wait_for(lambda r: len(r) >= 2)
        assert seen[1].json()["types"] == ["platform", "function"]

    def test_port_fallback_when_first_free_port_taken(self, platform: RecordingPlatform, agents: Start,
                                                      tmp_path: Path, hold_ports: Callable[[List[int]], None]) -> None:
        """With the first free port (8081 on a quiet machine) taken, the agent takes the next free one."""
        first, second = free_extension_ports(2)
        hold_ports([first])
        agent = agents(jsonl_env(platform, tmp_path / "o.jsonl"))
        seen = platform.wait_for(lambda r: len(r) >= 2)
        assert seen[0].headers["FunctionGraph-Extension-Address"] == f"127.0.0.1:{second}"
        assert seen[1].json()["subscriber"]["uri"] == f"http://127.0.0.1:{second}"
        assert ready(agent) == second

    def test_all_ports_taken(self, platform: RecordingPlatform, agents: Start, tmp_path: Path,
                             hold_ports: Callable[[List[int]], None]) -> None:
        """With 8081-8090 all in use the agent says so and exits 2 without registering."""
        # Ports other software listens on are taken already; the test holds the rest.
        hold_ports([port for port in EXTENSION_PORTS if port_free(port)])
        agent = agents(jsonl_env(platform, tmp_path / "o.jsonl"))
        assert agent.wait_exit() == 2
        assert "8081-8090 is in use" in agent.stderr()
        assert platform.paths() == []

    def test_explicit_port(self, platform: RecordingPlatform, agents: Start, tmp_path: Path) -> None:
        """FGEXT_PORT picks the port inside the range, even when a lower one is free."""
        port = free_extension_ports(2)[1]
        agents(jsonl_env(platform, tmp_path / "o.jsonl", FGEXT_PORT=str(port)))
        seen = platform.wait_for(lambda r: len(r) >= 1)
        assert seen[0].headers["FunctionGraph-Extension-Address"] == f"127.0.0.1:{port}"

    @pytest.mark.parametrize(("value", "message"), [("8080", "from 8081 to 8090"), ("80x", "port number")])
    def test_bad_port_setting(self, platform: RecordingPlatform, agents: Start, tmp_path: Path, value: str,
                              message: str) -> None:
        """FGEXT_PORT outside 8081-8090 or not a number: one clear line, exit 2."""
        agent = agents(jsonl_env(platform, tmp_path / "o.jsonl", FGEXT_PORT=value))
        assert agent.wait_exit() == 2
        assert message in agent.stderr() and len(agent.stderr().strip().splitlines()) == 1

    def test_bad_flush_setting(self, platform: RecordingPlatform, agents: Start, tmp_path: Path) -> None:
        """FGEXT_FLUSH that is no flush policy: one line naming it and the accepted forms, exit 2, no register."""
        agent = agents(jsonl_env(platform, tmp_path / "o.jsonl", FGEXT_FLUSH="every,100"))
        assert agent.wait_exit() == 2
        lines = agent.stderr().strip().splitlines()
        assert len(lines) == 1 and "FGEXT_FLUSH='every,100'" in lines[0] and "continuously,<ms>" in lines[0]
        assert platform.paths() == []

    @pytest.mark.parametrize(("value", "message"), [(None, "EXTENSION_API_ADDR is not set"),
                                                    ("localhost", "must be host:port"),
                                                    ("127.0.0.1:99999", "1-65535")])
    def test_missing_or_malformed_address(self, agents: Start, value: object, message: str) -> None:
        """No usable EXTENSION_API_ADDR: one clear line on stderr and exit 2."""
        agent = agents({} if value is None else {"EXTENSION_API_ADDR": str(value)})
        assert agent.wait_exit() == 2
        assert message in agent.stderr()
        assert "Traceback" not in agent.stderr() and len(agent.stderr().strip().splitlines()) == 1

    def test_address_with_scheme(self, platform: RecordingPlatform, agents: Start, tmp_path: Path) -> None:
        """An address written as the document writes URLs, with http://, works too."""
        env = jsonl_env(platform, tmp_path / "o.jsonl")
        env["EXTENSION_API_ADDR"] = f"http://{platform.addr}/"
        agents(env)
        platform.wait_for(lambda r: len(r) >= 2)

    def test_platform_down_then_up(self, agents: Start, tmp_path: Path) -> None:
        """Connection refused is retried with backoff until the platform comes up."""
        port = free_port()
        agent = agents({"EXTENSION_API_ADDR": f"127.0.0.1:{port}", "FGEXT_PLUGINS": "jsonl",
                        "FGEXT_JSONL_PATH": str(tmp_path / "o.jsonl")})
        time.sleep(1.0)
        assert agent.proc.poll() is None
        platform = RecordingPlatform(port=port).start()
        try:
            platform.wait_for(lambda r: len(r) >= 2)
            assert agent.wait_log("registered")["attempts"] > 1
        finally:
            platform.stop()

    def test_transient_5xx_retried(self, agents: Start, tmp_path: Path) -> None:
        """503 answers are retried; the first 200 registers."""
        platform = RecordingPlatform(register_statuses=[503, 503, 200]).start()
        try:
            agent = agents(jsonl_env(platform, tmp_path / "o.jsonl"))
            assert agent.wait_log("registered")["attempts"] == 3
        finally:
            platform.stop()

    def test_platform_never_up(self, agents: Start) -> None:
        """Past FGEXT_REGISTER_TIMEOUT the agent exits 3 with the last error."""
        agent = agents({"EXTENSION_API_ADDR": f"127.0.0.1:{free_port()}", "FGEXT_REGISTER_TIMEOUT": "0.8"})
        assert agent.wait_exit() == 3
        assert "could not register" in agent.stderr() and "ConnectionRefusedError" in agent.stderr()

    def test_refusal_is_final_with_platform_text(self, agents: Start) -> None:
        """A 4xx refusal is not retried; the platform's errorInfo is in the one error line."""
        platform = RecordingPlatform(register_statuses=[400]).start()
        try:
            agent = agents({"EXTENSION_API_ADDR": platform.addr})
            assert agent.wait_exit() == 3
            assert "InvalidExtension" in agent.stderr() and "name header does not match" in agent.stderr()
            assert platform.paths() == ["/extension/register"]
        finally:
            platform.stop()

    def test_subscription_refused_still_serves_invokes(self, agents: Start, tmp_path: Path) -> None:
        """A 400 on /telemetry is logged with the platform's reason and invokes are still served."""
        platform = RecordingPlatform(subscribe_status=400).start()
        try:
            out = tmp_path / "o.jsonl"
            agent = agents(jsonl_env(platform, out))
            refusal = agent.wait_log("telemetry subscription refused; serving invokes without telemetry")
            assert "types must not be empty" in str(refusal["reason"])
            port = ready(agent)
            assert agent.post(port, "/extension/invoke", json.dumps({"traceId": "r1"}).encode())[0] == 200
            assert records(out, 1)[0]["request_id"] == "r1"
        finally:
            platform.stop()


class TestListener:
    @pytest.fixture
    def running(self, platform: RecordingPlatform, agents: Start, tmp_path: Path) -> Iterator[tuple]:  # type: ignore[type-arg]
        out = tmp_path / "events.jsonl"
        agent = agents(jsonl_env(platform, out, FGEXT_MAX_BODY_BYTES="65536"))
        yield agent, ready(agent), out

    @pytest.mark.parametrize("key", ["tracelId", "traceId"])
    def test_invoke_both_spellings(self, running: tuple, key: str) -> None:  # type: ignore[type-arg]
        """Invoke answers 200 and hands the request ID and URN to the plugins."""
        agent, port, out = running
        urn = "sn:cn:yrk:1111:function:0@test@hello:latest"
        body = json.dumps({key: UUID, "invokedFunctionUrn": urn}).encode()
        assert agent.post(port, "/extension/invoke", body)[0] == 200
        record = records(out, 1)[0]
        assert record["type"] == "Invoke" and record["request_id"] == UUID and record["function_urn"] == urn

    @pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b'"x"'])
    def test_invoke_bad_body(self, running: tuple, body: bytes) -> None:  # type: ignore[type-arg]
        """An invoke body that is not a JSON object gets 400 with a JSON error."""
        agent, port, _ = running
        status, answer = agent.post(port, "/extension/invoke", body)
        assert status == 400 and "error" in answer

    def test_every_documented_event(self, running: tuple) -> None:  # type: ignore[type-arg]
        """The spec's examples posted as one array arrive typed, in order, at the plugins."""
        agent, port, out = running
        status, answer = agent.post(port, "/", json.dumps([START, DONE, REPORT, FUNCTION_LOG, EXTENSION_LOG]).encode())
        assert status == 200 and answer["accepted"] == 5 and answer["malformed"] == 0
        got = records(out, 5)
        assert [r["type"] for r in got] == ["InitStart", "InitRuntimeDone", "InitReport", "FunctionLog", "ExtensionLog"]
        assert got[2]["metrics"]["billing_duration_ms"] == 11.0 and got[1]["request_id"] == UUID

    def test_malformed_event_skipped_rest_kept(self, running: tuple) -> None:  # type: ignore[type-arg]
        """A bad object in an array is counted and reported; the good ones go on."""
        agent, port, out = running
        status, answer = agent.post(port, "/", json.dumps([START, {"logs": "no name"}, "x", FUNCTION_LOG]).encode())
        assert status == 200 and answer["accepted"] == 2 and answer["malformed"] == 2
        assert [r["type"] for r in records(out, 2)] == ["InitStart", "FunctionLog"]
        assert agent.wait_log("malformed telemetry events skipped")["count"] == 2

    def test_unknown_event_kept(self, running: tuple) -> None:  # type: ignore[type-arg]
        """An unknown event name reaches the plugins whole."""
        agent, port, out = running
        raw = {"name": "platform.future", "startTime": "2023-02-01T00:03:50Z", "detail": {"a": 1}}
        assert agent.post(port, "/", json.dumps([raw]).encode())[0] == 200
        record = records(out, 1)[0]
        assert record["type"] == "UnknownEvent" and record["raw"] == raw

    @pytest.mark.parametrize(("body", "status"), [
        (b"{not json", 400), (b'{"name": "function"}', 400), (b"[" * 30_000 + b"]" * 30_000, 400),
        (b"[" + b'"x",' * 40_000 + b'"x"]', 413),
    ], ids=["not-json", "not-array", "too-deep", "too-large"])
    def test_bad_bodies_rejected_and_agent_survives(self, running: tuple, body: bytes, status: int) -> None:  # type: ignore[type-arg]
        """Not JSON, not an array, too deep or too large: a clear 4xx, and the next batch still works."""
        agent, port, out = running
        got, answer = agent.post(port, "/", body)
        assert got == status and "error" in answer
        assert agent.post(port, "/", json.dumps([FUNCTION_LOG]).encode())[0] == 200
        assert records(out, 1)[0]["type"] == "FunctionLog"
        assert agent.proc.poll() is None


class TestLifecycle:
    def test_sigterm_flushes_and_exits_zero_within_deadline(self, platform: RecordingPlatform, agents: Start,
                                                            tmp_path: Path) -> None:
        """SIGTERM: everything accepted reaches the plugins, then exit 0 within FGEXT_SHUTDOWN_TIMEOUT."""
        out = tmp_path / "o.jsonl"
        agent = agents(jsonl_env(platform, out, FGEXT_SHUTDOWN_TIMEOUT="2"))
        port = ready(agent)
        batch = json.dumps([FUNCTION_LOG] * 50).encode()
        for _ in range(10):
            assert agent.post(port, "/", batch)[0] == 200
        sent = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.wait_exit(10) == 0
        assert time.monotonic() - sent < 2.0 + 1.0  # the deadline plus process exit
        assert len(out.read_text().splitlines()) == 500
        assert agent.wait_log("stopped")["events"] == 500

    def test_sigterm_during_cold_start(self, agents: Start) -> None:
        """A stop request while still registering ends the process cleanly, never with a traceback."""
        agent = agents({"EXTENSION_API_ADDR": f"127.0.0.1:{free_port()}", "FGEXT_REGISTER_TIMEOUT": "1.5"})
        time.sleep(0.5)
        agent.proc.send_signal(signal.SIGTERM)
        code = agent.wait_exit(10)
        assert code in (0, 3) and "Traceback" not in agent.stderr()

    def test_unknown_plugin_is_a_configuration_error(self, platform: RecordingPlatform, agents: Start) -> None:
        """FGEXT_PLUGINS naming nothing installed: a clear error naming it and exit 2."""
        agent = agents({"EXTENSION_API_ADDR": platform.addr, "FGEXT_PLUGINS": "nosuchplugin"})
        assert agent.wait_exit() == 2
        assert "nosuchplugin" in agent.stderr()

    def test_logs_are_json_lines_without_markers_or_secrets(self, platform: RecordingPlatform, agents: Start,
                                                            tmp_path: Path) -> None:
        """The agent's stderr is JSON lines, never carries [Extension], never shows header secrets."""
        secret = "Bearer s3cr3t-t0ken-value"
        out = tmp_path / "o.jsonl"
        agent = agents(jsonl_env(platform, out, OTEL_EXPORTER_OTLP_HEADERS=f"authorization={secret}"))
        port = ready(agent)
        agent.post(port, "/", json.dumps([{"name": 5, "logs": f"[Extension] {secret}"}, EXTENSION_LOG]).encode())
        agent.stop()
        text = agent.stderr()
        assert text and all(json.loads(line) for line in text.splitlines())
        assert "[Extension]" not in text and "s3cr3t" not in text


def test_launcher_is_posix_and_executable() -> None:
    """The launcher is executable and uses only POSIX sh (checked by dash when it is installed)."""
    assert os.access(LAUNCHER, os.X_OK)
    assert LAUNCHER.read_text().startswith("#!/bin/sh\n")
