"""The redact plugin: real-looking secrets and personal data never reach a sink."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fgext._errors import PluginError
from fgext._events import FunctionLog, UnknownEvent
from fgext._plugintest import make_event, make_invocation, make_log, make_report, run_plugin
from fgext.plugins.jsonl import JsonlPlugin
from fgext.plugins.redact import RedactPlugin

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
       "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
AK = "HPUAXK2N7QZ1Y8WPLM3R"
SK = "Zk8pQ2rT5vX9bN3mL6hJ1gF4dS7aW0eR2tY5uI8o"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpF\n"
       "q1w8W3WxG4m5Jx0mQZ7gI5Y2b3d4AqFl8mO9h2a0b1c2d3e4f5g6h7i8j9k0l1m2n3\n-----END RSA PRIVATE KEY-----")

# (text, the secret that must disappear, the rule that names it)
CASES = [
    (f"Authorization: Bearer {JWT}", JWT, "jwt"),
    ("calling api with Authorization: Bearer 8f3b2c1d9e7a6b5c4d3e2f1a0b9c8d7e", "8f3b2c1d9e7a6b5c4d3e2f1a0b9c8d7e",
     "bearer"),
    (f"obs client AK={AK}", AK, "secret_value"),
    (f"using credentials {AK} / {SK} for obs", AK, "huawei_ak"),
    (f"using credentials {AK} / {SK} for obs", SK, "huawei_sk"),
    ("connect postgres://admin:S3cr3tPassw0rd@db.internal:5432/app", "S3cr3tPassw0rd", "url_password"),
    ("redis url is redis://:hunter22@10.0.0.5:6379/0", "hunter22", "url_password"),
    ("mail sent to zhang.wei@example.com.cn", "zhang.wei@example.com.cn", "email"),
    ("user phone 13812345678 registered", "13812345678", "phone_cn"),
    ("user phone +86 138-1234-5678 registered", "138-1234-5678", "phone_cn"),
    ("support line +1 415 555 2671", "415 555 2671", "phone"),
    ('body {"user": "bob", "password": "hunter2xx"}', "hunter2xx", "secret_value"),
    ("retry with api_key=sk_live_51Habcdefgh12345", "sk_live_51Habcdefgh12345", "secret_value"),
    ("id card 11010519900307851X on file", "11010519900307851X", "cn_id"),
    (f"loaded key\n{PEM}\nok", "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn", "private_key"),
]


@pytest.fixture
def redact() -> RedactPlugin:
    plugin = RedactPlugin()
    plugin.configure({})
    return plugin


class TestDefaults:
    @pytest.mark.parametrize(("text", "secret", "rule"), CASES)
    def test_secret_is_masked_by_its_rule(self, redact: RedactPlugin, text: str, secret: str, rule: str) -> None:
        """Each real-looking secret is replaced by the mask naming the rule that caught it."""
        out = redact.redact(text)
        assert secret not in out
        assert f"[REDACTED:{rule}]" in out

    @pytest.mark.parametrize("text", [
        "commit 3f786850e387550fdab836ed7e6dc881de23001b deployed",  # a git SHA-1 is 40 chars of lower hex
        "request 69be64a7-0233-11e8-82e4-e5d37911193e took 12.5 ms",
        "started at 2023-02-01T00:03:50.000Z, epoch 1732233445123",
        "pod pool22-300-128-fusion-64774779-4g77v used 23.4 MB",
        "HTTP 200 OK in 35 ms, 1024 bytes; total=15 items=3",
        "the ORDERSTATUSUPDATED event fired",
    ])
    def test_ordinary_text_is_left_alone(self, redact: RedactPlugin, text: str) -> None:
        """IDs, timestamps, hashes and metrics that merely look long are not masked."""
        assert redact.redact(text) == text

    def test_log_event_message_logs_and_raw_all_masked(self) -> None:
        """A log event's message, its logs text and the raw object a jsonl sink writes are all masked."""
        result = run_plugin(RedactPlugin(), events=[make_log("login alice@example.org password=Tr0ub4dor!3")])
        event = result.events[0]
        assert isinstance(event, FunctionLog)
        for text in (event.message, event.logs, json.dumps(dict(event.raw))):
            assert "alice@example.org" not in text and "Tr0ub4dor" not in text
        assert event.message == "login [REDACTED:email] password=[REDACTED:secret_value]"

    def test_secret_keys_in_attributes_masked_whole(self) -> None:
        """Values under keys that name a secret are masked whole, at any depth of the raw object."""
        event = make_event({"name": "custom.audit", "startTime": "2023-02-01T00:03:50Z",
                            "attributes": {"user": "bob", "Secret-Key": "x", "nested": [{"token": "abc"}]}})
        result = run_plugin(RedactPlugin(), events=[event])
        raw = result.events[0].raw
        assert isinstance(result.events[0], UnknownEvent)
        assert raw["attributes"]["user"] == "bob"
        assert raw["attributes"]["Secret-Key"] == "[REDACTED:key]"
        assert raw["attributes"]["nested"][0]["token"] == "[REDACTED:key]"

    def test_clean_events_pass_unchanged(self) -> None:
        """Events with nothing to mask are passed on as the very same objects."""
        events = make_invocation("r1", logs=["hello"])
        result = run_plugin(RedactPlugin(), events=events)
        assert all(a is b for a, b in zip(result.events, events))


class TestSettings:
    def test_disable_and_custom_mask(self) -> None:
        """Disabled rules stop masking; the mask template is applied with the rule's name."""
        result = run_plugin(RedactPlugin(), events=[make_log("to bob@example.com at 13812345678")],
                            config={"disable": ["email"], "mask": "<{rule}>"})
        assert result.messages == ["to bob@example.com at <phone_cn>"]

    def test_extra_patterns_from_environment_and_file(self) -> None:
        """Extra patterns come as a comma list from the environment or as named regexes from the file."""
        env = run_plugin(RedactPlugin(), events=[make_log("order ORD-123456 for CUST-99")],
                         environ={"FGEXT_REDACT_PATTERNS": r"ORD-\d+, CUST-\d+"})
        assert env.messages == ["order [REDACTED:pattern1] for [REDACTED:pattern2]"]
        named = run_plugin(RedactPlugin(), events=[make_log("card holder id=4242")],
                           config={"patterns": {"holder": r"id=(?P<secret>\d+)"}})
        assert named.messages == ["card holder id=[REDACTED:holder]"]

    def test_extra_keys(self) -> None:
        """Keys added by setting are masked whole like the built-in ones."""
        event = make_event({"name": "x.y", "startTime": "2023-02-01T00:03:50Z", "customer_ref": "C-1"})
        result = run_plugin(RedactPlugin(), events=[event], config={"keys": ["customer-ref"]})
        assert result.events[0].raw["customer_ref"] == "[REDACTED:key]"

    @pytest.mark.parametrize(("config", "message"), [
        ({"disable": ["nosuch"]}, "unknown rule"),
        ({"patterns": ["(unclosed"]}, "not a valid regular expression"),
        ({"mask": "{other}"}, "not a valid template"),
    ])
    def test_bad_settings_name_plugin_and_key(self, config: dict, message: str) -> None:  # type: ignore[type-arg]
        """A bad setting stops the plugin at start with an error naming the plugin and the problem."""
        with pytest.raises(PluginError, match=f"plugin 'redact'.*{message}"):
            RedactPlugin().configure(config)

    def test_runs_before_every_sink(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """Whatever order plugins are enabled in, a sink writing files only ever sees masked text."""
        out = tmp_path / "events.jsonl"
        run_plugin([JsonlPlugin(), RedactPlugin()], events=[make_log(f"key {SK}"), make_report("r9")],
                   configs={"jsonl": {"path": str(out)}})
        text = out.read_text()
        assert SK not in text and "[REDACTED:huawei_sk]" in text


class TestProperties:
    @given(before=st.text(max_size=60), after=st.text(max_size=60),
           user=st.from_regex(r"[a-z][a-z0-9._]{0,15}[a-z0-9]", fullmatch=True),
           domain=st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.(com|cn|org|com\.cn)", fullmatch=True),
           mobile=st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
    @settings(max_examples=200, deadline=None)
    def test_embedded_email_and_mobile_never_survive(self, before: str, after: str, user: str, domain: str,
                                                     mobile: str) -> None:
        """An e-mail address and a mobile number set off by spaces anywhere in arbitrary text are always masked."""
        plugin = RedactPlugin()
        plugin.configure({})
        email = f"{user}@{domain}"
        out = plugin.redact(f"{before} {email} {mobile} {after}")
        assert email not in out and mobile not in out

    @given(text=st.text(max_size=300))
    @settings(max_examples=300, deadline=None)
    def test_any_text_is_handled_and_masking_is_stable(self, text: str) -> None:
        """Arbitrary text never makes the plugin raise, and masking what is already masked changes nothing."""
        plugin = RedactPlugin()
        plugin.configure({})
        once = plugin.redact(text)
        assert plugin.redact(once) == once


def test_the_functions_own_otlp_data_passes_unchanged() -> None:
    """An OtlpPayload has no log text or raw object to mask: redact hands the same event on."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from fgext._events import OtlpPayload

    payload = OtlpPayload("traces", ExportTraceServiceRequest(), 1)
    result = run_plugin(RedactPlugin(), events=[payload], config={"raw": True})
    assert result.events[0] is payload
