"""OpenTelemetry export for fgext: FunctionGraph telemetry as OTLP spans, logs and metrics.

Enable with ``FGEXT_PLUGINS=otlp`` and point the standard ``OTEL_EXPORTER_OTLP_*`` variables at a
collector; the mapping and every setting are documented in ``docs/otlp.md``.
"""

from __future__ import annotations

from fgext.otlp._plugin import OtlpPlugin

__all__ = ["OtlpPlugin"]
