"""Cold start pieces in-process: port binding and the registration retry policy."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

from fgext._bootstrap import bind_listener, register, subscribe
from fgext._config import AgentSettings
from fgext._errors import ConfigError, RegistrationError
from tests.conftest import free_extension_ports
from tests.platform import RecordingPlatform, free_port
from tests.test_drills_security import Peer


@pytest.fixture
def settings_for() -> Iterator:  # type: ignore[type-arg]
    def make(addr: str, timeout: str = "2") -> AgentSettings:
        return AgentSettings.from_environ({"EXTENSION_API_ADDR": addr, "FGEXT_REGISTER_TIMEOUT": timeout})

    yield make


class TestBind:
    @pytest.mark.usefixtures("port_range_lock")
    def test_binds_loopback_only_in_range(self) -> None:
        """The listener is on 127.0.0.1, on the first free port of 8081-8090, and already listening."""
        first = free_extension_ports()[0]
        sock = bind_listener(None)
        try:
            host, port = sock.getsockname()
            assert host == "127.0.0.1" and port == first
            with socket.create_connection((host, port), timeout=2):
                pass  # accepted into the backlog before any event loop exists
        finally:
            sock.close()

    @pytest.mark.usefixtures("port_range_lock")
    def test_explicit_port_in_use(self) -> None:
        """An explicit port that is taken is a configuration error naming it."""
        port = free_extension_ports()[0]
        first = bind_listener(port)
        try:
            with pytest.raises(ConfigError, match=str(port)):
                bind_listener(port)
        finally:
            first.close()


class TestRegister:
    def test_backoff_is_capped_and_bounded(self, settings_for) -> None:  # type: ignore[no-untyped-def]
        """Against a dead address, attempts back off exponentially, capped, until the timeout."""
        clock = [0.0]
        sleeps = []

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            clock[0] += seconds

        with pytest.raises(RegistrationError, match="within 5 s"):
            register(settings_for(f"127.0.0.1:{free_port()}", "5"), "127.0.0.1:8081",
                     clock=lambda: clock[0], sleep=sleep)
        # fgext._retry's jittered backoff: each wait in [base / 2, base], the base doubling from 0.05 s
        for sleep_s, base in zip(sleeps, [0.05, 0.1, 0.2, 0.4, 0.8]):
            assert base / 2 <= sleep_s <= base
        assert max(sleeps) <= 1.0 and abs(sum(sleeps) - 5.0) < 1e-6

    def test_transient_answers_are_retried_until_registered(self, settings_for) -> None:  # type: ignore[no-untyped-def]
        """503, 429 and 502 (retryable for fgext._retry) are asked again; the 200 that follows registers."""
        platform = RecordingPlatform(register_statuses=[503, 429, 502, 200]).start()
        try:
            answer, attempts = register(settings_for(platform.addr, "10"), "127.0.0.1:8081")
            assert attempts == 4 and answer["functionName"] == "helloWorld"
        finally:
            platform.stop()

    def test_a_final_answer_is_not_retried(self, settings_for) -> None:  # type: ignore[no-untyped-def]
        """A 500 is not in the retry policy: registration fails at once with the platform's own words."""
        platform = RecordingPlatform(register_statuses=[500, 200]).start()
        try:
            with pytest.raises(RegistrationError, match="refused registration"):
                register(settings_for(platform.addr, "10"), "127.0.0.1:8081")
            assert len([r for r in platform.requests if r.path == "/extension/register"]) == 1
        finally:
            platform.stop()

    def test_answer_returned(self, settings_for) -> None:  # type: ignore[no-untyped-def]
        """A 200 returns the platform's answer and the attempt count."""
        platform = RecordingPlatform().start()
        try:
            answer, attempts = register(settings_for(platform.addr), "127.0.0.1:8081")
            assert answer["functionName"] == "helloWorld" and attempts == 1
        finally:
            platform.stop()

    def test_subscribe_refusal_reason(self, settings_for) -> None:  # type: ignore[no-untyped-def]
        """A refused subscription returns False with the platform's error_code and error_msg."""
        platform = RecordingPlatform(subscribe_status=400).start()
        try:
            ok, reason = subscribe(settings_for(platform.addr), 8081)
            assert not ok and "FSS.0400" in reason and "types must not be empty" in reason
        finally:
            platform.stop()

    def test_subscribe_redirect_is_a_refusal(self, settings_for) -> None:  # type: ignore[no-untyped-def]
        """A 307 to /telemetry is a refusal naming the Location without credentials; its target gets nothing."""
        elsewhere = Peer(200)
        api = Peer(307, b"", {"Location": f"http://u:PASSWORD-5678@127.0.0.1:{elsewhere.port}/t?k=KEY-1234567"})
        try:
            ok, reason = subscribe(settings_for(f"127.0.0.1:{api.port}"), 8081)
            assert not ok and f"redirect to http://***@127.0.0.1:{elsewhere.port}/t?k=***" in reason
            assert len(api.requests) == 1 and not elsewhere.requests
        finally:
            api.stop()
            elsewhere.stop()
