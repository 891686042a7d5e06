"""The disk spool: serialized export requests that could not be sent yet, oldest first, bounded.

One file per request, named ``<sequence>-<pid>-<signal>-<items>.pb`` and holding exactly the bytes that
would have been POSTed, so replaying is reading and sending, nothing to re-encode. Files are written
to a temporary name and renamed, so an agent killed mid-write leaves no half request behind; a new
agent started on the same directory picks the files up and sends them.

Past ``max_bytes`` the oldest requests are dropped to make room: each drop is reported through
``on_drop`` (a warning and the ``fgext.otlp.dropped`` self-metric), never silent. If the directory
cannot be used (read-only, disk full), the spool keeps requests in memory under the same bound.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

__all__ = ["Spool", "SpoolEntry"]

# <sequence>-<pid>-<signal>-<items>.pb: the writer's PID keeps two agents sharing a directory (an old
# one still shutting down, a new one starting) from overwriting each other's files.
_NAME = re.compile(r"^(\d{1,20})-(\d{1,10})-(traces|logs|metrics)-(\d{1,12})\.pb$")

DropCallback = Callable[[str, int, int], None]  # signal, items, bytes
_WARN_EVERY_S = 10.0


@dataclass
class SpoolEntry:
    """One spooled request; ``data`` is set only when the spool runs in memory."""

    sequence: int
    signal: str
    items: int
    size: int
    path: Optional[Path] = None
    data: Optional[bytes] = None


class Spool:
    """A bounded FIFO of serialized requests on disk (or in memory when the disk fails)."""

    def __init__(self, directory: Path, max_bytes: int, on_drop: DropCallback, logger: Any) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._on_drop = on_drop
        self._log = logger
        self._entries: List[SpoolEntry] = []
        self._bytes = 0
        self._sequence = 0
        self._on_disk = False
        self._opened = False
        self._last_warning = float("-inf")
        self._unreported: List[int] = [0, 0]  # drops (requests, items) since the last warning
        self.added = 0  # requests ever spooled: a spool used while the collector is up is a finding

    @property
    def size(self) -> int:
        """Bytes currently spooled."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def on_disk(self) -> bool:
        return self._on_disk

    def open(self) -> None:
        """Create the directory, adopt requests an earlier agent left, and clear half-written files."""
        if self._opened:
            return
        self._opened = True
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            names = sorted(os.listdir(self.directory))
        except OSError as error:
            self._log.warning("otlp spool directory unusable; spooling in memory",
                              directory=str(self.directory), error=str(error))
            return
        self._on_disk = True
        found: List[SpoolEntry] = []
        for name in names:
            path = self.directory / name
            match = _NAME.match(name)
            if match is None:
                if name.endswith(".tmp"):
                    self._unlink(path)
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            found.append(SpoolEntry(int(match.group(1)), match.group(3), int(match.group(4)), size, path))
        found.sort(key=lambda entry: entry.sequence)
        self._entries = found
        self._bytes = sum(entry.size for entry in found)
        self._sequence = found[-1].sequence + 1 if found else 0
        if found:
            self._log.info("otlp spool holds requests from an earlier run", requests=len(found),
                           bytes=self._bytes)
        self._enforce(0)

    def add(self, signal: str, data: bytes, items: int) -> None:
        """Keep one request; drop the oldest ones (counted) if the bound would be exceeded."""
        self.open()
        self.added += 1
        size = len(data)
        if size > self.max_bytes:
            self._drop(SpoolEntry(-1, signal, items, size))
            return
        self._enforce(size)
        entry = SpoolEntry(self._sequence, signal, items, size)
        self._sequence += 1
        if self._on_disk:
            path = self.directory / f"{entry.sequence:016d}-{os.getpid()}-{signal}-{items}.pb"
            temporary = path.with_name(path.name + ".tmp")
            try:
                with open(temporary, "wb") as handle:
                    handle.write(data)
                os.replace(temporary, path)
                entry.path = path
            except OSError as error:
                self._unlink(temporary)
                self._on_disk = False
                self._log.warning("otlp spool cannot write; spooling in memory from now on",
                                  directory=str(self.directory), error=str(error))
        if entry.path is None:
            entry.data = data
        self._entries.append(entry)
        self._bytes += size

    def entries(self) -> List[SpoolEntry]:
        """The spooled requests, oldest first (a copy: the caller may remove while iterating)."""
        self.open()
        return list(self._entries)

    def read(self, entry: SpoolEntry) -> Optional[bytes]:
        """The request's bytes, or ``None`` (and the entry forgotten) if its file is gone or unreadable."""
        if entry.data is not None:
            return entry.data
        assert entry.path is not None
        try:
            return entry.path.read_bytes()
        except OSError as error:
            self._log.warning("otlp spool file unreadable; dropping it", path=str(entry.path),
                              error=str(error))
            self.remove(entry)
            self._on_drop(entry.signal, entry.items, entry.size)
            return None

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a request (it was sent, or rejected for good)."""
        try:
            self._entries.remove(entry)
        except ValueError:
            return
        self._bytes -= entry.size
        if entry.path is not None:
            self._unlink(entry.path)

    def _enforce(self, incoming: int) -> None:
        while self._entries and self._bytes + incoming > self.max_bytes:
            oldest = self._entries[0]
            self.remove(oldest)
            self._drop(oldest)

    def _drop(self, entry: SpoolEntry) -> None:
        # Every drop is counted (the self-metric); the warning is repeated at most every 10 s with the
        # totals since the last one, so a long outage does not flood the function's logs.
        self._on_drop(entry.signal, entry.items, entry.size)
        self._unreported[0] += 1
        self._unreported[1] += entry.items
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._log.warning("otlp spool full: dropped the oldest telemetry", requests=self._unreported[0],
                              items=self._unreported[1], last_signal=entry.signal, max_bytes=self.max_bytes)
            self._last_warning = now
            self._unreported = [0, 0]

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
