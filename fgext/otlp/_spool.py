"""The disk spool: serialized export requests not yet acknowledged, oldest first, bounded in bytes.

One file per request, named ``<sequence>-<owner>-<signal>-<items>.pb`` and holding exactly the bytes
that would be POSTed, so replaying is reading and sending, nothing to re-encode. Files are written to
a temporary name and renamed, so an agent killed mid-write leaves no half request behind.

Ownership: ``<owner>`` is the writing agent's PID and the start time of that process
(``<pid>.<ticks since boot>``, so a recycled PID is not mistaken for its earlier owner). An agent reads
and deletes only its own files. Files whose owner is gone are *claimed* - renamed, atomically, to the
claiming agent's owner id - before they are read: when two agents race for one orphan, one rename
succeeds and the other finds the file gone and leaves it, so nothing is sent twice or reported lost.

Past ``max_bytes`` the oldest requests are dropped to make room: each drop is reported through
``on_drop`` (a warning and the ``fgext.agent.dropped`` self-metric), never silent. If the directory
cannot be used (read-only, disk full), the spool keeps requests in memory under the same bound.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["Spool", "SpoolEntry", "owner_alive", "owner_id"]

# <sequence>-<pid>[.<start ticks>]-<signal>-<items>.pb; files of older agents have no start ticks.
_NAME = re.compile(r"^(\d{1,20})-(\d{1,10})(?:\.(\d{1,20}))?-(traces|logs|metrics)-(\d{1,12})\.pb$")

DropCallback = Callable[[str, int, int], None]  # signal, items, bytes
_WARN_EVERY_S = 10.0


def _start_ticks(pid: int) -> Optional[int]:
    """Field 22 of ``/proc/<pid>/stat``: when the process started, in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_id() -> Tuple[int, Optional[int]]:
    """This process's owner id: its PID and start time (``None`` where ``/proc`` is not available)."""
    pid = os.getpid()
    return pid, _start_ticks(pid)


def owner_alive(pid: int, start: Optional[int]) -> bool:
    """Whether the process that wrote a file still runs (the same PID *and* the same start time)."""
    if os.path.isdir("/proc/self"):
        ticks = _start_ticks(pid)
        if ticks is None:
            return False
        return start is None or ticks == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


@dataclass
class SpoolEntry:
    """One spooled request; ``data`` is set only when the spool runs in memory."""

    sequence: int
    signal: str
    items: int
    size: int
    path: Optional[Path] = None
    data: Optional[bytes] = None
    removed: bool = False  # sent, rejected or dropped for the bound: never to be read again


class Spool:
    """A bounded FIFO of serialized requests on disk (or in memory when the disk fails)."""

    def __init__(self, directory: Path, max_bytes: int, on_drop: DropCallback, logger: Any, *,
                 owner: Optional[str] = None) -> None:
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
        if owner is None:
            pid, start = owner_id()
            owner = f"{pid}" if start is None else f"{pid}.{start}"
        self._owner = owner  # "<pid>.<start ticks>"; tests name other owners
        self.added = 0  # requests ever spooled: a spool used while the collector is up is a finding
        self.claimed = 0  # requests taken over from agents that are gone

    @property
    def size(self) -> int:
        """Bytes currently spooled."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def on_disk(self) -> bool:
        return self._on_disk

    def open(self) -> List[SpoolEntry]:
        """Create the directory and claim the requests agents that are gone left; return those."""
        if self._opened:
            return []
        self._opened = True
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            self._log.warning("otlp spool directory unusable; spooling in memory",
                              directory=str(self.directory), error=str(error))
            return []
        self._on_disk = True
        found = self.claim_orphans()
        if found:
            self._log.info("otlp spool holds requests from an earlier run", requests=len(found),
                           bytes=sum(entry.size for entry in found))
        return found

    def claim_orphans(self) -> List[SpoolEntry]:
        """Take over, oldest first, the files of agents that are no longer running; return them.

        Another live agent's files are never touched. The new entries join this spool (and its bound).
        """
        if not self._on_disk:
            return []
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        found: List[SpoolEntry] = []
        known = {entry.path.name for entry in self._entries if entry.path is not None}
        alive: Dict[str, bool] = {}
        for name in names:
            temporary = name.endswith(".tmp")
            match = _NAME.match(name[:-4] if temporary else name)
            if match is None:
                continue
            pid = int(match.group(2))
            start = int(match.group(3)) if match.group(3) else None
            owner = f"{pid}" if start is None else f"{pid}.{start}"
            if owner == self._owner:
                if not temporary and name not in known:  # ours, from an earlier spool of this process
                    path = self.directory / name
                    with contextlib.suppress(OSError):
                        found.append(SpoolEntry(int(match.group(1)), match.group(4), int(match.group(5)),
                                                path.stat().st_size, path))
                continue
            if owner not in alive:
                alive[owner] = owner_alive(pid, start)
            if alive[owner]:
                continue  # a live agent's file: its business alone
            path = self.directory / name
            if temporary:
                self._unlink(path)  # a write its owner never finished
                continue
            sequence, signal, items = int(match.group(1)), match.group(4), int(match.group(5))
            mine = self.directory / f"{sequence:020d}-{self._owner}-{signal}-{items}.pb"
            try:
                os.rename(path, mine)
                size = mine.stat().st_size
            except OSError:
                continue  # another agent claimed it first
            found.append(SpoolEntry(sequence, signal, items, size, mine))
        found.sort(key=lambda entry: entry.sequence)
        self._entries.extend(found)
        self._bytes += sum(entry.size for entry in found)
        self.claimed += len(found)
        self._enforce(0)
        return [entry for entry in found if not entry.removed]

    def _next_sequence(self) -> int:
        # Wall-clock nanoseconds, so files of different agents sort by age when one claims another's.
        self._sequence = max(self._sequence + 1, time.time_ns())
        return self._sequence

    def add(self, signal: str, data: bytes, items: int) -> Optional[SpoolEntry]:
        """Keep one request; drop the oldest ones (counted) if the bound would be exceeded.

        Returns the entry, or ``None`` when the request alone is larger than the bound (dropped, counted).
        """
        self.open()
        self.added += 1
        size = len(data)
        if size > self.max_bytes:
            self._drop(SpoolEntry(-1, signal, items, size))
            return None
        self._enforce(size)
        entry = SpoolEntry(self._next_sequence(), signal, items, size)
        if self._on_disk:
            path = self.directory / f"{entry.sequence:020d}-{self._owner}-{signal}-{items}.pb"
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
        return entry

    def entries(self) -> List[SpoolEntry]:
        """The spooled requests, oldest first (a copy: the caller may remove while iterating)."""
        return list(self._entries)

    def read(self, entry: SpoolEntry) -> Optional[bytes]:
        """The request's bytes, or ``None`` if it was removed (already counted) or its file is unreadable
        (then it is counted as dropped here)."""
        if entry.removed:
            return None
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
        if entry.removed:
            return
        entry.removed = True
        with contextlib.suppress(ValueError):
            self._entries.remove(entry)
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
