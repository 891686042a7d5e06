"""Misbehaving sinks the isolation drills load into a real agent (``FGEXT_PLUGINS=otlp,tests.isolation_plugins:X``).

Standard library and fgext only: the agent imports this module, possibly on Python 3.9.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Sequence

from fgext import Plugin


class SlowSink(Plugin):
    """A synchronous sink that takes 8 seconds per batch."""

    name: ClassVar[str] = "slow"

    def on_telemetry(self, events: Sequence[Any]) -> None:
        time.sleep(8)


class RaisingSink(Plugin):
    """A sink that raises on every batch, while its ``on_invoke`` always succeeds."""

    name: ClassVar[str] = "raising"
    max_failures: ClassVar[int] = 3

    def on_invoke(self, invoke: Any) -> None:
        return None

    def on_telemetry(self, events: Sequence[Any]) -> None:
        raise RuntimeError("this sink fails every batch")
