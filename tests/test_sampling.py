"""Head sampling from the trace ID (fgext's SHA-256 rule, fair for UUIDs) and the tail rule (fgext._sampling)."""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import Callable, Dict, List

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.trace import SpanKind

from fgext._errors import ConfigError
from fgext._ids import trace_id_for
from fgext._sampling import SAMPLERS, HeadSampler, TailRule, is_timeout, sampling_value

trace_ids = st.integers(min_value=1, max_value=(1 << 128) - 1)
ratios = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.0, 1.0, 0.5, 1e-19, 1 - 1e-16]))
ID_COUNT = 20_000


def sdk_decision(sampler: sdk_sampling.Sampler, trace_id: int) -> bool:
    result = sampler.should_sample(None, trace_id, "root", SpanKind.SERVER)
    return result.decision.is_sampled()


def sdk_sampler_from(env: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> sdk_sampling.Sampler:
    for key in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return sdk_sampling._get_from_env_or_default()


def uuid4_request_ids(seed: int) -> List[str]:
    """Fixed pseudo-random UUIDv4 request IDs: the same on every run."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(ID_COUNT)]


def uuid1_request_ids(seed: int) -> List[str]:
    """UUIDv1 request IDs as one host makes them: rising timestamps, one clock sequence, one node."""
    rng = random.Random(seed)
    node, clock_seq = rng.getrandbits(48), rng.getrandbits(14)
    timestamp = 0x1EF0000000000000 + rng.getrandbits(40)
    ids = []
    for _ in range(ID_COUNT):
        timestamp += rng.randint(1, 50_000)  # 100 ns ticks: requests a few ms apart
        fields = (timestamp & 0xFFFFFFFF, (timestamp >> 32) & 0xFFFF, (timestamp >> 48) & 0x0FFF,
                  clock_seq >> 8, clock_seq & 0xFF, node)
        ids.append(str(uuid.UUID(fields=fields, version=1)))
    return ids


class TestHeadSampler:
    @given(trace_ids, ratios)
    def test_ratio_decision_is_the_documented_rule(self, trace_id: int, ratio: float) -> None:
        """traceidratio samples when the first 8 bytes of SHA-256 of the trace ID are below round(ratio * 2**64)."""
        trace_bytes = trace_id.to_bytes(16, "big")
        value = int.from_bytes(hashlib.sha256(trace_bytes).digest()[:8], "big")
        ours = HeadSampler("traceidratio", ratio)
        assert ours.sampled(trace_bytes) == (value < round(ratio * 2**64))
        assert ours.sampled(trace_id) == ours.sampled(trace_bytes)
        assert sampling_value(trace_id) == value

    @given(trace_ids)
    def test_ratio_0_keeps_none_and_1_keeps_all(self, trace_id: int) -> None:
        """The ends of the ratio are exact: 0.0 keeps no trace and 1.0 every trace."""
        assert not HeadSampler("traceidratio", 0.0).sampled(trace_id)
        assert HeadSampler("traceidratio", 1.0).sampled(trace_id)

    @given(trace_ids)
    def test_keeps_all_only_when_every_trace_is_sampled(self, trace_id: int) -> None:
        """keeps_all says the sampler samples every trace: always_on, parent-based or not, and a ratio of 1;
        never a ratio just below 1 or always_off (the assembler then does not ask per trace)."""
        for sampler in (HeadSampler("always_on"), HeadSampler(), HeadSampler("traceidratio", 1.0)):
            assert sampler.keeps_all and sampler.sampled(trace_id)
        for sampler in (HeadSampler("traceidratio", 1 - 2**-53), HeadSampler("always_off")):
            assert not sampler.keeps_all

    @pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.9])
    @pytest.mark.parametrize("make_ids", [uuid4_request_ids, uuid1_request_ids])
    def test_the_kept_share_of_uuid_request_ids_is_the_ratio(self, ratio: float,
                                                             make_ids: Callable[[int], List[str]]) -> None:
        """For 20,000 fixed UUIDv4 or one host's UUIDv1 request IDs, the share kept is the ratio within 0.015."""
        sampler = HeadSampler("parentbased_traceidratio", ratio)
        request_ids = make_ids(12)
        kept = sum(sampler.sampled(trace_id_for(request_id)) for request_id in request_ids)
        assert abs(kept / len(request_ids) - ratio) < 0.015

    @pytest.mark.parametrize("make_ids", [uuid4_request_ids, uuid1_request_ids])
    def test_the_sdks_ratio_rule_is_unfair_to_uuid_request_ids(self, make_ids: Callable[[int], List[str]]) -> None:
        """Why fgext does not use the SDK's rule: at 0.5 it keeps no UUIDv4 and all-or-none of one host's UUIDv1."""
        sdk = sdk_sampling.TraceIdRatioBased(0.5)
        kept = {sdk_decision(sdk, int.from_bytes(trace_id_for(rid), "big")) for rid in make_ids(12)[:2000]}
        assert len(kept) == 1  # every request ID the same decision
        ours = HeadSampler("traceidratio", 0.5)
        assert {ours.sampled(trace_id_for(rid)) for rid in make_ids(12)[:2000]} == {True, False}

    @pytest.mark.parametrize("name", SAMPLERS)
    def test_the_environment_is_read_as_the_sdk_reads_it(self, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Each sampler name gives the SDK's ratio, and the always_* ones the SDK's decision on many IDs."""
        env = {"OTEL_TRACES_SAMPLER": name.upper(), "OTEL_TRACES_SAMPLER_ARG": "0.25"}
        ours = HeadSampler.from_environ(env)
        sdk = sdk_sampler_from(env, monkeypatch)
        root = getattr(sdk, "_root", sdk)
        if name.endswith("traceidratio"):
            assert ours.ratio == root.rate == 0.25
            return
        for n in range(400):
            trace_id = trace_id_for(f"request-{n}")
            assert ours.sampled(trace_id) == sdk_decision(sdk, int.from_bytes(trace_id, "big"))

    def test_defaults(self) -> None:
        """Unset variables give parentbased_always_on; an unset ratio is 1.0, as in the specification."""
        assert HeadSampler.from_environ({}).name == "parentbased_always_on"
        assert HeadSampler.from_environ({}).sampled(trace_id_for("r"))
        assert HeadSampler.from_environ({"OTEL_TRACES_SAMPLER": "traceidratio"}).ratio == 1.0

    def test_argument_ignored_by_samplers_without_ratio(self) -> None:
        """always_off ignores OTEL_TRACES_SAMPLER_ARG, even an unreadable one."""
        sampler = HeadSampler.from_environ({"OTEL_TRACES_SAMPLER": "always_off", "OTEL_TRACES_SAMPLER_ARG": "x"})
        assert not sampler.sampled(1)

    @pytest.mark.parametrize(("env", "words"), [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER must be one of"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "from 0 to 1"),
        ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "-0.1"}, "from 0 to 1"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"}, "from 0 to 1"),
    ])
    def test_bad_values_are_one_line_config_errors(self, env: Dict[str, str], words: str) -> None:
        """A sampler or ratio that cannot be read is a ConfigError of one line naming the variable."""
        with pytest.raises(ConfigError) as info:
            HeadSampler.from_environ(env)
        assert words in str(info.value)
        assert "\n" not in str(info.value)

    def test_trace_id_must_have_16_bytes(self) -> None:
        """A trace ID of the wrong length is refused rather than silently decided."""
        with pytest.raises(ValueError, match="16 bytes"):
            HeadSampler().sampled(b"\x01" * 8)
        with pytest.raises(ValueError, match="128-bit"):
            HeadSampler().sampled(1 << 128)


class TestTailRule:
    def test_head_sampled_is_always_kept(self) -> None:
        """A trace the head kept stays kept, whatever the rule."""
        rule = TailRule(keep_errors=False, keep_timeouts=False, keep_cold_starts=False)
        assert rule.keep(sampled=True, status="success")
        assert not rule.keep(sampled=False, status="error", cold_start=True, duration_ms=10_000)

    def test_defaults_keep_errors_timeouts_and_cold_starts(self) -> None:
        """By default a dropped trace is kept for an error, a timeout or a cold start, not for speed."""
        rule = TailRule.from_environ({})
        assert rule.keep(sampled=False, status="error")
        assert rule.keep(sampled=False, status="Timeout")
        assert rule.keep(sampled=False, status="success", cold_start=True)
        assert not rule.keep(sampled=False, status="success", duration_ms=1e9)
        assert not rule.keep(sampled=False, status="")

    def test_each_flag_is_separate(self) -> None:
        """Turning errors off still keeps timeouts, and the other way round."""
        no_errors = TailRule.from_environ({"FGEXT_SAMPLE_KEEP_ERRORS": "off"})
        assert not no_errors.keep(sampled=False, status="error")
        assert no_errors.keep(sampled=False, status="timed out")
        no_timeouts = TailRule.from_environ({"FGEXT_SAMPLE_KEEP_TIMEOUTS": "0"})
        assert not no_timeouts.keep(sampled=False, status="timeout")
        assert no_timeouts.keep(sampled=False, status="failed")
        no_cold = TailRule.from_environ({"FGEXT_SAMPLE_KEEP_COLD_STARTS": "false"})
        assert not no_cold.keep(sampled=False, status="success", cold_start=True)

    def test_slow_threshold(self) -> None:
        """FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS keeps invocations at least that slow."""
        rule = TailRule.from_environ({"FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS": "250"})
        assert rule.slower_than_ms == 250.0
        assert rule.keep(sampled=False, status="success", duration_ms=250)
        assert not rule.keep(sampled=False, status="success", duration_ms=249.9)
        assert not rule.keep(sampled=False, status="success", duration_ms=None)

    @pytest.mark.parametrize(("env", "words"), [
        ({"FGEXT_SAMPLE_KEEP_ERRORS": "maybe"}, "FGEXT_SAMPLE_KEEP_ERRORS must be 1/0"),
        ({"FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS": "slow"}, "FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS must be a positive"),
        ({"FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS": "0"}, "FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS must be a positive"),
        ({"FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS": "inf"}, "FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS must be a positive"),
    ])
    def test_bad_values_are_config_errors(self, env: Dict[str, str], words: str) -> None:
        """An unreadable tail setting is a one-line ConfigError naming the variable."""
        with pytest.raises(ConfigError, match=words):
            TailRule.from_environ(env)

    def test_timeout_statuses(self) -> None:
        """Both spellings of a timeout status are recognised, and an error is not one."""
        assert is_timeout("Timeout") and is_timeout("function timed out")
        assert not is_timeout("error")
