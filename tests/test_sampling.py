"""Head sampling from the trace ID (the SDK's decision exactly) and the tail rule (fgext._sampling)."""

from __future__ import annotations

import uuid
from typing import Dict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.trace import SpanKind

from fgext._errors import ConfigError
from fgext._ids import trace_id_for
from fgext._sampling import SAMPLERS, HeadSampler, TailRule, is_timeout

trace_ids = st.integers(min_value=1, max_value=(1 << 128) - 1)
ratios = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([0.0, 1.0, 0.5, 1e-19, 1 - 1e-16]))


def sdk_decision(sampler: sdk_sampling.Sampler, trace_id: int) -> bool:
    result = sampler.should_sample(None, trace_id, "root", SpanKind.SERVER)
    return result.decision.is_sampled()


def sdk_sampler_from(env: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> sdk_sampling.Sampler:
    for key in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return sdk_sampling._get_from_env_or_default()


class TestHeadSampler:
    @given(trace_ids, ratios)
    def test_ratio_decision_is_the_sdks(self, trace_id: int, ratio: float) -> None:
        """traceidratio decides exactly as the SDK's TraceIdRatioBased, for any trace ID and ratio."""
        ours = HeadSampler("traceidratio", ratio)
        assert ours.sampled(trace_id) == sdk_decision(sdk_sampling.TraceIdRatioBased(ratio), trace_id)
        assert ours.sampled(trace_id.to_bytes(16, "big")) == ours.sampled(trace_id)

    @given(trace_ids, st.floats(min_value=0.0, max_value=1.0))
    def test_parent_based_ratio_on_a_root_is_the_sdks(self, trace_id: int, ratio: float) -> None:
        """parentbased_traceidratio decides an invocation (a root) as the SDK's sampler does."""
        sdk = sdk_sampling.ParentBasedTraceIdRatio(ratio)
        assert HeadSampler("parentbased_traceidratio", ratio).sampled(trace_id) == sdk_decision(sdk, trace_id)

    @pytest.mark.parametrize("name", SAMPLERS)
    def test_every_sampler_from_the_environment_is_the_sdks(self, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """For each known sampler, the environment gives the SDK's decision on many request IDs."""
        env = {"OTEL_TRACES_SAMPLER": name.upper(), "OTEL_TRACES_SAMPLER_ARG": "0.25"}
        ours = HeadSampler.from_environ(env)
        sdk = sdk_sampler_from(env, monkeypatch)
        decisions = []
        for n in range(400):
            trace_id = trace_id_for(f"request-{n}")  # hashed: uniform lower 64 bits
            decision = ours.sampled(trace_id)
            assert decision == sdk_decision(sdk, int.from_bytes(trace_id, "big"))
            decisions.append(decision)
        if name.endswith("traceidratio"):
            assert True in decisions and False in decisions

    @given(st.uuids(version=4), st.floats(min_value=0.0, max_value=1.0))
    def test_uuid_request_ids_skew_the_ratio_as_in_the_sdk(self, request_id: uuid.UUID, ratio: float) -> None:
        """A UUID4's variant bits fix the top of its lower 64 bits: below 0.5 none is sampled, from 0.75 all.

        This is the SDK's decision on such trace IDs, kept on purpose so that both sides agree; the
        effective rate for UUID request IDs is ``clamp(4 * (ratio - 0.5), 0, 1)`` (docs/function.md).
        """
        sampled = HeadSampler("traceidratio", ratio).sampled(trace_id_for(str(request_id)))
        if ratio <= 0.5:
            assert not sampled
        elif ratio >= 0.75:
            assert sampled

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
