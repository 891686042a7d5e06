"""Which traces are kept: the head decision from the trace ID, and the tail rule applied at close.

**Head.** ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` are read as the OpenTelemetry
specification defines them (``always_on``, ``always_off``, ``traceidratio``,
``parentbased_always_on`` — the default —, ``parentbased_always_off``,
``parentbased_traceidratio``; the argument is the ratio, 1.0 when unset). The decision is a pure
function of the 16-byte trace ID, and this is the rule, exactly, so that any process that knows the
request ID can compute it::

    h = int.from_bytes(hashlib.sha256(trace_id).digest()[:8], "big")   # unsigned, big-endian
    sampled = h < round(ratio * 2**64)

(``ratio`` 1.0 keeps every trace, 0.0 none.) Since the trace ID derives from the request ID
(:mod:`fgext._ids`), the agent and ``fgext.function`` reach the same decision without talking.

**Why not the SDK's TraceIdRatioBased rule.** The SDK compares the trace ID's *lower 64 bits*
with ``round(ratio * 2**64)``, which is fair only for trace IDs whose lower bits are uniformly
random. FunctionGraph's request IDs are UUIDs and become trace IDs as they are. In a UUIDv4 the
variant bits (``10``) are the top of the lower 64 bits, which therefore lie in
``[2**63, 3 * 2**62)``: a ratio up to 0.5 keeps nothing and from 0.75 keeps everything. In a
UUIDv1 the lower 64 bits are the clock sequence and the node, constant for a host, so every
request of a sandbox gets the same decision. Hashing the whole trace ID first makes the decision
uniform for any trace ID. The price: a process that samples the same trace IDs with the SDK's
``TraceIdRatioBased`` as its *root* sampler decides differently. ``fgext.function`` therefore
installs its own SDK sampler (this rule at the root, the parent's decision otherwise), and
``fgext.function.trace_context`` gives the ``invoke`` span the sampled flag of this rule, so an
SDK set up by the user with a ``ParentBased`` sampler (the default) follows it.

An invocation's root span never has a parent (an incoming ``traceparent`` becomes a link, see
:mod:`fgext.function`), so a ``parentbased_*`` sampler decides the invocation by its root sampler:
``parentbased_traceidratio`` decides like ``traceidratio``. The function's own spans are children
of the ``invoke`` span and follow its decision, which is this one.

Unlike the SDK, which logs a warning and falls back to a default, a value this module cannot read is
a :class:`~fgext._errors.ConfigError` with one line that names the variable: a typo in a sampling
setting should not silently keep (or drop) every trace.

**Tail.** When an invocation's trace closes, the agent keeps it even if the head decision dropped it
when the :class:`TailRule` says so. Its settings (a flag is ``1/0``, ``true/false``, ``yes/no`` or
``on/off``):

==================================== ======= ============================================================
``FGEXT_SAMPLE_KEEP_ERRORS``         ``1``   keep invocations whose status is neither success nor timeout
``FGEXT_SAMPLE_KEEP_TIMEOUTS``       ``1``   keep invocations that timed out
``FGEXT_SAMPLE_KEEP_COLD_STARTS``    ``1``   keep invocations that followed an ``init`` (or ``restore``)
``FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS`` unset   keep invocations that lasted at least this many milliseconds
==================================== ======= ============================================================

The tail rule can only keep what was recorded: the function side decides at the head (it has to,
its spans are exported before the invocation ends), so a trace kept by the tail rule alone carries
the agent's spans and not the function's.

Standard library only: ``fgext.function`` imports this module in the user's sandbox.
"""

from __future__ import annotations

import math
import os

from fgext._config import _bool
from fgext._errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping, Optional, Union

__all__ = [
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "HeadSampler",
    "TailRule",
    "is_timeout",
    "ratio_bound",
    "sampling_value",
]

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_SAMPLER = "parentbased_always_on"
_LOWER_64 = (1 << 64) - 1


def ratio_bound(ratio: float) -> int:
    """The bound for a ratio: a trace is sampled when its :func:`sampling_value` is below it."""
    return round(ratio * (_LOWER_64 + 1))


def sampling_value(trace_id: Union[bytes, int]) -> int:
    """The number the decision compares: the first 8 bytes of SHA-256 of the 16 trace-ID bytes, unsigned."""
    if isinstance(trace_id, int):
        if not 0 <= trace_id < 1 << 128:
            raise ValueError(f"a trace ID is a 128-bit unsigned number, got {trace_id!r}")
        trace_id = trace_id.to_bytes(16, "big")
    elif len(trace_id) != 16:
        raise ValueError(f"a trace ID has 16 bytes, got {len(trace_id)}")
    # Imported here: hashlib loads OpenSSL, milliseconds this module would add before registration
    # (fgext._config validates the sampling settings there); fgext._ids has it loaded by the first trace.
    from hashlib import sha256

    return int.from_bytes(sha256(trace_id).digest()[:8], "big")


class HeadSampler:
    """The head decision configured by ``OTEL_TRACES_SAMPLER``/``_ARG``: :meth:`sampled` of a trace ID."""

    __slots__ = ("bound", "keeps_all", "name", "ratio")

    def __init__(self, name: str = DEFAULT_SAMPLER, ratio: Optional[float] = None) -> None:
        if name not in SAMPLERS:
            raise ConfigError(f"OTEL_TRACES_SAMPLER must be one of {', '.join(SAMPLERS)}, got {name!r}")
        if name.endswith("always_on"):
            ratio = 1.0
        elif name.endswith("always_off"):
            ratio = 0.0
        elif ratio is None:
            ratio = 1.0
        elif not (0.0 <= ratio <= 1.0):  # also refuses NaN
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1 for {name}, got {ratio!r}")
        self.name = name
        self.ratio = float(ratio)
        self.bound = ratio_bound(self.ratio)
        #: every trace is sampled (no sampling value reaches the bound): asking per trace would decide nothing
        self.keeps_all = self.bound > _LOWER_64

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> HeadSampler:
        """Read the sampler from the environment (``os.environ`` by default); ConfigError when unreadable."""
        env = os.environ if environ is None else environ
        name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or DEFAULT_SAMPLER
        raw = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        ratio: Optional[float] = None
        if raw and name.endswith("traceidratio"):
            try:
                ratio = float(raw)
            except ValueError:
                raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, got {raw!r}") from None
            if math.isnan(ratio):
                raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, got {raw!r}")
        return cls(name, ratio)

    def sampled(self, trace_id: Union[bytes, int]) -> bool:
        """Whether the trace is sampled at the head: its :func:`sampling_value` is below :attr:`bound`."""
        return sampling_value(trace_id) < self.bound

    def __repr__(self) -> str:
        return f"HeadSampler({self.name!r}, ratio={self.ratio!r})"


def is_timeout(status: str) -> bool:
    """Whether a report's status says the invocation timed out."""
    status = status.lower()
    return "timeout" in status or "timed out" in status


class TailRule:
    """Keeps, when a trace closes, what the head decision dropped but someone will want to see."""

    __slots__ = ("keep_cold_starts", "keep_errors", "keep_timeouts", "slower_than_ms")

    def __init__(self, *, keep_errors: bool = True, keep_timeouts: bool = True, keep_cold_starts: bool = True,
                 slower_than_ms: Optional[float] = None) -> None:
        if slower_than_ms is not None and not (0 < slower_than_ms < math.inf):
            raise ConfigError(f"FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS must be a positive number, got {slower_than_ms!r}")
        self.keep_errors = keep_errors
        self.keep_timeouts = keep_timeouts
        self.keep_cold_starts = keep_cold_starts
        self.slower_than_ms = slower_than_ms

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> TailRule:
        """Read the rule from the ``FGEXT_SAMPLE_KEEP_*`` variables; ConfigError when one is unreadable."""
        env = os.environ if environ is None else environ

        def flag(key: str) -> bool:
            return _bool(env, key) if env.get(key, "").strip() else True

        raw = env.get("FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS", "").strip()
        slower: Optional[float] = None
        if raw:
            try:
                slower = float(raw)
            except ValueError:
                raise ConfigError(f"FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS must be a positive number, got {raw!r}") from None
            if not (0 < slower < math.inf):  # also refuses NaN
                raise ConfigError(f"FGEXT_SAMPLE_KEEP_SLOWER_THAN_MS must be a positive number, got {raw!r}")
        return cls(keep_errors=flag("FGEXT_SAMPLE_KEEP_ERRORS"), keep_timeouts=flag("FGEXT_SAMPLE_KEEP_TIMEOUTS"),
                   keep_cold_starts=flag("FGEXT_SAMPLE_KEEP_COLD_STARTS"), slower_than_ms=slower)

    def keep(self, *, sampled: bool, status: str = "", cold_start: bool = False,
             duration_ms: Optional[float] = None) -> bool:
        """Whether a closing trace is exported: the head said so, or the invocation matches the rule.

        ``status`` is the invoke report's status (empty when unknown, which is no error).
        """
        if sampled:
            return True
        status = status.strip().lower()
        if status and status != "success":
            if is_timeout(status):
                if self.keep_timeouts:
                    return True
            elif self.keep_errors:
                return True
        if cold_start and self.keep_cold_starts:
            return True
        return self.slower_than_ms is not None and duration_ms is not None and duration_ms >= self.slower_than_ms

    def __repr__(self) -> str:
        return (f"TailRule(keep_errors={self.keep_errors}, keep_timeouts={self.keep_timeouts}, "
                f"keep_cold_starts={self.keep_cold_starts}, slower_than_ms={self.slower_than_ms!r})")
