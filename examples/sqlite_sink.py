"""A custom sink, class style: every invocation's report and log lines in a SQLite database.

The function (or a later extension hook) can query recent invocations locally, for example to
adapt its batch size to how long the last ten invocations took, without any network call.

Settings: ``path`` (default ``/tmp/fgext-invocations.db``; only ``/tmp`` is writable in the
sandbox) and ``keep`` (default 1000: rows kept per table, oldest deleted first).

Enable with ``FGEXT_PLUGINS=sqlite_sink:SqliteSink`` once packaged with
``fgext package --plugin examples/sqlite_sink.py``.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import ClassVar, Dict, Optional, Sequence

import fgext
from fgext import AnyEvent, EventTypes, FunctionLog, PluginContext, ReportEvent, Sink

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    request_id TEXT, phase TEXT, status TEXT, start_time TEXT, duration_ms REAL,
    billing_duration_ms REAL, memory_used_mb REAL, memory_size_mb INTEGER);
CREATE TABLE IF NOT EXISTS logs (start_time TEXT, message TEXT);
"""


class SqliteSink(Sink):
    """Stores reports and function log lines; hooks are plain functions, so they run off the event loop."""

    name: ClassVar[str] = "sqlite"
    accepts: ClassVar[EventTypes] = (ReportEvent, FunctionLog)
    config_schema: ClassVar[Dict[str, type]] = {"path": str, "keep": int}

    def __init__(self) -> None:
        self._db: Optional[sqlite3.Connection] = None
        self._keep = 1000
        # Sync hooks run in worker threads; one connection shared under a lock keeps writes in order.
        self._lock = threading.Lock()

    def start(self, context: PluginContext) -> None:
        self._keep = int(context.config.get("keep", 1000))
        if self._keep < 1:
            raise fgext.PluginError(f"plugin 'sqlite': setting 'keep' must be at least 1, got {self._keep}")
        self._db = sqlite3.connect(str(context.config.get("path", "/tmp/fgext-invocations.db")),
                                   check_same_thread=False)
        with self._lock:
            self._db.executescript(SCHEMA)

    def on_telemetry(self, events: Sequence[AnyEvent]) -> None:
        reports = [(e.request_id, e.phase, e.status, e.start_time.isoformat(), e.metrics.duration_ms,
                    e.metrics.billing_duration_ms, e.metrics.memory_used_mb, e.metrics.memory_size_mb)
                   for e in events if isinstance(e, ReportEvent)]
        logs = [(e.start_time.isoformat(), e.message) for e in events if isinstance(e, FunctionLog)]
        assert self._db is not None
        with self._lock, self._db:  # one transaction per batch
            self._db.executemany("INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?)", reports)
            self._db.executemany("INSERT INTO logs VALUES (?, ?)", logs)
            for table in ("reports", "logs"):
                self._db.execute(f"DELETE FROM {table} WHERE rowid <= (SELECT MAX(rowid) FROM {table}) - ?",
                                 (self._keep,))

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
