"""Tests for fgext.otlp._spool: a bounded, ordered, restart-proof store of serialized requests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from fgext.otlp._spool import Spool


class RecordingLogger:
    """Collects log calls so tests can check that drops are reported, not silent."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, str, Any]] = []

    def __getattr__(self, level: str) -> Any:
        def log(message: str, **fields: Any) -> None:
            self.calls.append((level, message, fields))
        return log


def make(directory: Path, max_bytes: int = 1000) -> Tuple[Spool, List[Tuple[str, int, int]], RecordingLogger]:
    drops: List[Tuple[str, int, int]] = []
    logger = RecordingLogger()
    spool = Spool(directory, max_bytes, lambda s, i, b: drops.append((s, i, b)), logger)
    spool.open()
    return spool, drops, logger


def test_requests_come_back_oldest_first(tmp_path: Path) -> None:
    """Requests are read back in the order they were added, with their signal and item count."""
    spool, _, _ = make(tmp_path)
    spool.add("traces", b"one", 1)
    spool.add("logs", b"two", 2)
    entries = spool.entries()
    assert [(e.signal, e.items, spool.read(e)) for e in entries] == [("traces", 1, b"one"),
                                                                     ("logs", 2, b"two")]
    spool.remove(entries[0])
    assert [spool.read(e) for e in spool.entries()] == [b"two"]
    assert len(os.listdir(tmp_path)) == 1


def test_bound_drops_the_oldest_and_reports_it(tmp_path: Path) -> None:
    """Past max_bytes the oldest requests go, each drop counted and warned about."""
    spool, drops, logger = make(tmp_path, max_bytes=100)
    for index in range(5):
        spool.add("logs", bytes([index]) * 40, 10 + index)
    assert spool.size <= 100
    assert [spool.read(e) for e in spool.entries()] == [bytes([3]) * 40, bytes([4]) * 40]
    assert drops == [("logs", 10, 40), ("logs", 11, 40), ("logs", 12, 40)]
    warnings = [fields for level, _, fields in logger.calls if level == "warning"]
    assert warnings and warnings[0]["items"] == 10  # the first drop is reported at once
    assert len(warnings) == 1  # later ones within 10 s only counted, not repeated


def test_request_larger_than_the_bound_is_dropped_and_counted(tmp_path: Path) -> None:
    """A single request over the bound cannot be kept; the drop is reported."""
    spool, drops, _ = make(tmp_path, max_bytes=10)
    spool.add("traces", b"x" * 11, 3)
    assert len(spool) == 0 and drops == [("traces", 3, 11)]


def test_a_new_spool_on_the_same_directory_adopts_the_files(tmp_path: Path) -> None:
    """An agent restarted on the same directory finds what the last one spooled, in order."""
    first, _, _ = make(tmp_path)
    first.add("metrics", b"m1", 8)
    first.add("traces", b"t2", 2)
    (tmp_path / "0000000000000099-7-logs-1.pb.tmp").write_bytes(b"half")  # killed mid-write
    (tmp_path / "unrelated.txt").write_bytes(b"keep")
    second, _, _ = make(tmp_path)
    assert [(e.signal, second.read(e)) for e in second.entries()] == [("metrics", b"m1"), ("traces", b"t2")]
    assert not (tmp_path / "0000000000000099-7-logs-1.pb.tmp").exists()
    assert (tmp_path / "unrelated.txt").exists()
    second.add("logs", b"l3", 1)
    assert [e.signal for e in second.entries()] == ["metrics", "traces", "logs"]


def test_adopted_files_over_a_smaller_bound_are_trimmed(tmp_path: Path) -> None:
    """Restarting with a smaller FGEXT_SPOOL_MAX_BYTES drops (and counts) the oldest leftovers."""
    first, _, _ = make(tmp_path)
    for _ in range(4):
        first.add("logs", b"y" * 30, 1)
    second, drops, _ = make(tmp_path, max_bytes=60)
    assert len(second) == 2 and len(drops) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unusable_directory_falls_back_to_memory(tmp_path: Path) -> None:
    """A directory that cannot be created keeps requests in memory under the same bound, with a warning."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    spool, _, logger = make(locked / "spool")
    spool.add("traces", b"abc", 1)
    assert not spool.on_disk
    assert [spool.read(e) for e in spool.entries()] == [b"abc"]
    assert any(level == "warning" for level, _, _ in logger.calls)


def test_file_in_place_of_directory_falls_back_to_memory(tmp_path: Path) -> None:
    """A path that is a file, not a directory, also leaves the spool working in memory."""
    blocker = tmp_path / "spool"
    blocker.write_bytes(b"")
    spool, _, logger = make(blocker)
    spool.add("logs", b"abc", 1)
    assert not spool.on_disk and len(spool) == 1
    assert any(level == "warning" for level, _, _ in logger.calls)
