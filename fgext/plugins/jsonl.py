"""``jsonl``: every invoke and telemetry event as one JSON line, to a file or to stdout.

For a log shipper that tails a file, or for seeing exactly what the agent received. Settings
(``FGEXT_JSONL_<KEY>`` or ``plugins.jsonl`` in the config file): ``path`` (default ``-``, stdout;
inside the sandbox only ``/tmp`` is writable), ``invokes`` (default true: write invokes too),
``types`` (default all: the categories to write, any of ``platform``, ``function``, ``extension``).

On stdout the ``[Function]``/``[Extension]`` markers inside the JSON are broken with an invisible
character: the platform collects any extension output line carrying a marker back as telemetry, and
an echoed extension log would then come back to this very sink, again and again.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, Any, ClassVar, Dict, Optional, Sequence

from fgext._errors import PluginError
from fgext._events import AnyEvent, Invoke, event_to_dict
from fgext._plugin import Plugin, PluginContext

__all__ = ["JsonlPlugin"]


class JsonlPlugin(Plugin):
    """Writes events as JSON lines; each batch is written and flushed in one call."""

    name: ClassVar[str] = "jsonl"
    role: ClassVar[str] = "sink"
    config_schema: ClassVar[Dict[str, type]] = {"path": str, "invokes": bool, "types": list}

    def __init__(self) -> None:
        self._out: Optional[IO[str]] = None
        self._owned = False
        self._invokes = True
        self._types: Optional[Sequence[str]] = None
        self._lock = threading.Lock()  # sync hooks run in worker threads

    def start(self, context: PluginContext) -> None:
        path = str(context.config.get("path", "-"))
        self._invokes = bool(context.config.get("invokes", True))
        if "types" in context.config:
            types = [str(t).strip().lower() for t in context.config["types"]]
            unknown = [t for t in types if t not in ("platform", "function", "extension", "unknown")]
            if unknown:
                raise PluginError(f"plugin 'jsonl': setting 'types' has unknown type(s) {', '.join(unknown)}; "
                                  "use platform, function, extension")
            self._types = types
        if path == "-":
            self._out = sys.stdout
        else:
            self._out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown
            self._owned = True

    def _write(self, records: Sequence[Dict[str, Any]]) -> None:
        if self._out is None or not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate from the JSON ("\\ud800") cannot be written as UTF-8: escape it rather than
            # lose the whole batch to the write's error.
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if not self._owned:
            from fgext._logging import neutralise_markers

            text = neutralise_markers(text)
        with self._lock:
            self._out.write(text)
            self._out.flush()

    def on_invoke(self, invoke: Invoke) -> None:
        if self._invokes:
            self._write([event_to_dict(invoke)])

    def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        chosen = events if self._types is None else [e for e in events if e.category in self._types]
        self._write([event_to_dict(e) for e in chosen])

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            if self._out is not None and self._owned:
                self._out.close()
            self._out = None
