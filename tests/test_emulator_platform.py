"""The emulated Extension and Telemetry API: each documented rule, and the shape of its answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

import aiohttp
import pytest

from fgext.emulator._platform import PlatformApi, Subscription

Call = Callable[..., Awaitable[Tuple[int, Any]]]
STARTED = {f"extension{i}.sh" for i in range(12)}


def with_platform(test: Callable[[PlatformApi, Call], Awaitable[None]]) -> None:
    """Run ``test`` against a started platform and a client for it (no extension port is bound)."""

    async def main() -> None:
        platform = PlatformApi("helloWorld", "v20240101-000000")
        platform.started_scripts.update(STARTED)
        address = await platform.start()
        async with aiohttp.ClientSession() as session:

            async def call(path: str, headers: Optional[Dict[str, str]] = None, body: Any = None,
                           raw: Optional[bytes] = None, method: str = "POST") -> Tuple[int, Any]:
                data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
                async with session.request(method, f"http://{address}{path}", headers=headers or {},
                                           data=data) as response:
                    text = await response.text()
                    return response.status, json.loads(text) if text.startswith("{") else text

            try:
                await test(platform, call)
            finally:
                await platform.stop()

    asyncio.run(main())


def reg(name: str = "extension1.sh", address: str = "127.0.0.1:8081") -> Dict[str, str]:
    return {"FunctionGraph-Extension-Name": name, "FunctionGraph-Extension-Address": address,
            "Content-Type": "application/json"}


def sub(uri: str = "http://127.0.0.1:8081", types: Any = ("platform",),
        protocol: Any = "POST") -> Dict[str, Any]:
    return {"subscriber": {"protocol": protocol, "uri": uri},
            "types": list(types) if isinstance(types, tuple) else types}


def assert_refused(status: int, body: Any, error_type: str) -> None:
    assert status == 400
    assert set(body) == {"errorInfo"}
    assert body["errorInfo"]["errorType"] == error_type
    assert body["errorInfo"]["errorMessage"]


class TestRegister:
    def test_success_answers_the_function_config(self) -> None:
        """A valid registration gets 200 with functionName, functionVersion and empty errorInfo."""
        async def test(platform: PlatformApi, call: Call) -> None:
            status, body = await call("/extension/register", reg())
            assert status == 200
            assert body == {"functionName": "helloWorld", "functionVersion": "v20240101-000000",
                            "errorInfo": {"errorType": "", "errorMessage": ""}}
            assert platform.registrations["extension1.sh"].address == "127.0.0.1:8081"
        with_platform(test)

    @pytest.mark.parametrize(("headers", "error_type"), [
        ({"FunctionGraph-Extension-Address": "127.0.0.1:8081"}, "MissingName"),
        ({"FunctionGraph-Extension-Name": "extension1.sh"}, "MissingAddress"),
        (reg(name="extensionNope.sh"), "UnknownExtension"),
        (reg(name="extension1"), "UnknownExtension"),
        (reg(address="localhost:8081"), "InvalidAddress"),
        (reg(address="0.0.0.0:8081"), "InvalidAddress"),
        (reg(address="127.0.0.1:8080"), "InvalidAddress"),
        (reg(address="127.0.0.1:8091"), "InvalidAddress"),
        (reg(address="127.0.0.1"), "InvalidAddress"),
    ])
    def test_header_rules(self, headers: Dict[str, str], error_type: str) -> None:
        """A missing or wrong name or address header is refused with 400 and the documented body shape."""
        async def test(platform: PlatformApi, call: Call) -> None:
            status, body = await call("/extension/register", headers)
            assert_refused(status, body, error_type)
            assert platform.registrations == {}
            assert platform.rejections[-1].error_type == error_type
        with_platform(test)

    def test_address_must_be_unique(self) -> None:
        """Two extensions may not share a port."""
        async def test(platform: PlatformApi, call: Call) -> None:
            assert (await call("/extension/register", reg("extension1.sh", "127.0.0.1:8085")))[0] == 200
            status, body = await call("/extension/register", reg("extension2.sh", "127.0.0.1:8085"))
            assert_refused(status, body, "AddressInUse")
            assert "extension1.sh" in body["errorInfo"]["errorMessage"]
        with_platform(test)

    def test_registering_twice_is_refused(self) -> None:
        """One script registers once."""
        async def test(platform: PlatformApi, call: Call) -> None:
            assert (await call("/extension/register", reg()))[0] == 200
            assert_refused(*(await call("/extension/register", reg(address="127.0.0.1:8082"))),
                           "AlreadyRegistered")
        with_platform(test)

    def test_at_most_ten_extensions(self) -> None:
        """The eleventh registration is refused, whatever its address."""
        async def test(platform: PlatformApi, call: Call) -> None:
            for i in range(10):
                headers = reg(f"extension{i}.sh", f"127.0.0.1:{8081 + i}")
                status, _ = await call("/extension/register", headers)
                assert status == 200
            assert_refused(*(await call("/extension/register", reg("extension10.sh", "127.0.0.1:8081"))),
                           "TooManyExtensions")
            assert len(platform.registrations) == 10
        with_platform(test)

    def test_only_post(self) -> None:
        """GET on the register path is not accepted."""
        async def test(platform: PlatformApi, call: Call) -> None:
            status, _ = await call("/extension/register", reg(), method="GET")
            assert status == 405
        with_platform(test)


class TestTelemetry:
    def test_success_records_the_subscription(self) -> None:
        """A registered extension subscribes with 200; duplicate types collapse and spaces are trimmed."""
        async def test(platform: PlatformApi, call: Call) -> None:
            seen = []
            platform.on_subscribe = seen.append
            await call("/extension/register", reg())
            status, body = await call("/telemetry", {"FunctionGraph-Extension-Name": "extension1.sh"},
                                      sub(types=["platform", " function ", "platform"]))
            assert status == 200 and body["errorInfo"]["errorType"] == ""
            expected = Subscription("extension1.sh", "http://127.0.0.1:8081", ("platform", "function"))
            assert platform.subscription == expected and seen == [expected]
        with_platform(test)

    @pytest.mark.parametrize(("body", "error_type"), [
        (sub(protocol="GET"), "InvalidProtocol"),
        (sub(protocol=None), "InvalidProtocol"),
        (sub(types=[]), "InvalidTypes"),
        (sub(types=["platform", "logs"]), "InvalidTypes"),
        (sub(types="platform"), "InvalidTypes"),
        (sub(types=[1]), "InvalidTypes"),
        (sub(uri="https://127.0.0.1:8081"), "InvalidUri"),
        (sub(uri="http://localhost:8081"), "InvalidUri"),
        (sub(uri="http://127.0.0.1"), "InvalidUri"),
        (sub(uri="http://127.0.0.1:9000"), "InvalidUri"),
        (sub(uri=8081), "InvalidUri"),
        ({"types": ["platform"]}, "InvalidRequestBody"),
        ([sub()], "InvalidRequestBody"),
    ])
    def test_body_rules(self, body: Any, error_type: str) -> None:
        """Protocol POST, a non-empty subset of the three types and a 127.0.0.1:8081-8090 URI are required."""
        async def test(platform: PlatformApi, call: Call) -> None:
            await call("/extension/register", reg())
            status, answer = await call("/telemetry", {"FunctionGraph-Extension-Name": "extension1.sh"}, body)
            assert_refused(status, answer, error_type)
            assert platform.subscription is None
        with_platform(test)

    def test_invalid_json_is_a_bad_request(self) -> None:
        """A body that is not JSON gets 400 with the reason."""
        async def test(platform: PlatformApi, call: Call) -> None:
            await call("/extension/register", reg())
            assert_refused(*(await call("/telemetry", {}, raw=b"{nope")), "InvalidRequestBody")
        with_platform(test)

    def test_subscriber_must_register_first(self) -> None:
        """Subscribing before any registration, or under an unregistered name, is refused."""
        async def test(platform: PlatformApi, call: Call) -> None:
            assert_refused(*(await call("/telemetry", {}, sub())), "NotRegistered")
            await call("/extension/register", reg())
            assert_refused(*(await call("/telemetry", {"FunctionGraph-Extension-Name": "extension2.sh"},
                                        sub(uri="http://127.0.0.1:8082"))), "NotRegistered")
        with_platform(test)

    def test_without_a_name_the_only_registered_extension_subscribes(self) -> None:
        """No name header is fine while exactly one extension is registered, and ambiguous after that."""
        async def test(platform: PlatformApi, call: Call) -> None:
            await call("/extension/register", reg())
            assert (await call("/telemetry", {}, sub()))[0] == 200
            assert platform.subscription is not None and platform.subscription.extension == "extension1.sh"
            platform.subscription = None
            await call("/extension/register", reg("extension2.sh", "127.0.0.1:8082"))
            assert_refused(*(await call("/telemetry", {}, sub())), "MissingName")
        with_platform(test)

    def test_at_most_one_subscriber(self) -> None:
        """A second extension cannot subscribe; the first may subscribe again."""
        async def test(platform: PlatformApi, call: Call) -> None:
            await call("/extension/register", reg())
            await call("/extension/register", reg("extension2.sh", "127.0.0.1:8082"))
            first = {"FunctionGraph-Extension-Name": "extension1.sh"}
            assert (await call("/telemetry", first, sub()))[0] == 200
            assert_refused(*(await call("/telemetry", {"FunctionGraph-Extension-Name": "extension2.sh"},
                                        sub(uri="http://127.0.0.1:8082"))), "SubscriberExists")
            assert (await call("/telemetry", first, sub(types=["function"])))[0] == 200
            assert platform.subscription is not None and platform.subscription.types == ("function",)
        with_platform(test)

    def test_uri_may_not_take_another_extensions_port(self) -> None:
        """The listener port must not be another registered extension's address."""
        async def test(platform: PlatformApi, call: Call) -> None:
            await call("/extension/register", reg())
            await call("/extension/register", reg("extension2.sh", "127.0.0.1:8082"))
            assert_refused(*(await call("/telemetry", {"FunctionGraph-Extension-Name": "extension1.sh"},
                                        sub(uri="http://127.0.0.1:8082"))), "AddressInUse")
        with_platform(test)
