"""Tests for fgext.otlp._spool: a bounded, ordered, restart-proof store of serialized requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

from fgext.otlp._spool import Spool, owner_alive

# No Linux PID is this large (pid_max is at most 2^22): the owner of these files is certainly gone.
GONE = "999999999.1"


class RecordingLogger:
    """Collects log calls so tests can check that drops are reported, not silent."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, str, Any]] = []

    def __getattr__(self, level: str) -> Any:
        def log(message: str, **fields: Any) -> None:
            self.calls.append((level, message, fields))
        return log


def make(directory: Path, max_bytes: int = 1000,
         owner: Optional[str] = None) -> Tuple[Spool, List[Tuple[str, int, int]], RecordingLogger]:
    drops: List[Tuple[str, int, int]] = []
    logger = RecordingLogger()
    spool = Spool(directory, max_bytes, lambda s, i, b: drops.append((s, i, b)), logger, owner=owner)
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
    """An agent restarted on the same directory claims what the gone one spooled, in order."""
    first, _, _ = make(tmp_path, owner=GONE)
    first.add("metrics", b"m1", 8)
    first.add("traces", b"t2", 2)
    (tmp_path / "0000000000000099-999999999.1-logs-1.pb.tmp").write_bytes(b"half")  # killed mid-write
    (tmp_path / "unrelated.txt").write_bytes(b"keep")
    second, _, _ = make(tmp_path)
    assert [(e.signal, second.read(e)) for e in second.entries()] == [("metrics", b"m1"), ("traces", b"t2")]
    assert not any(GONE in name for name in os.listdir(tmp_path))  # renamed to the new owner
    assert not (tmp_path / "0000000000000099-999999999.1-logs-1.pb.tmp").exists()
    assert (tmp_path / "unrelated.txt").exists()
    second.add("logs", b"l3", 1)
    assert [e.signal for e in second.entries()] == ["metrics", "traces", "logs"]


def test_adopted_files_over_a_smaller_bound_are_trimmed(tmp_path: Path) -> None:
    """Restarting with a smaller FGEXT_SPOOL_MAX_BYTES drops (and counts) the oldest leftovers."""
    first, _, _ = make(tmp_path, owner=GONE)
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


def test_files_of_an_agent_from_before_owner_ids_are_claimed(tmp_path: Path) -> None:
    """Files named by an older agent (``<seq>-<pid>-...``, no start time) of a gone PID are claimed too."""
    (tmp_path / "0000000000000003-999999999-traces-4.pb").write_bytes(b"old")
    spool, drops, _ = make(tmp_path)
    assert [(e.signal, e.items, spool.read(e)) for e in spool.entries()] == [("traces", 4, b"old")]
    assert drops == []


def test_a_live_agents_files_are_left_alone(tmp_path: Path) -> None:
    """Files of a process that still runs are neither read, counted nor deleted; once it is gone, they
    are claimed."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = int(Path(f"/proc/{proc.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])
        owner = f"{proc.pid}.{ticks}"
        assert owner_alive(proc.pid, ticks) and not owner_alive(proc.pid, ticks + 1)  # PID reuse is not life
        live, _, _ = make(tmp_path, owner=owner)
        live.add("logs", b"theirs", 3)
        other, drops, logger = make(tmp_path)
        assert len(other) == 0 and drops == [] and os.listdir(tmp_path) != []
        assert not [c for c in logger.calls if c[0] == "warning"]
    finally:
        proc.kill()
        proc.wait(5)
    assert [other.read(e) for e in other.claim_orphans()] == [b"theirs"]


CLAIMER = """
import json, sys
from pathlib import Path
from fgext.otlp._spool import Spool
class Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None
drops = []
spool = Spool(Path(sys.argv[1]), 10**9, lambda *a: drops.append(a), Quiet())
spool.open()
got = []
for entry in spool.entries():  # as a shipper does: read, send, then remove once acknowledged
    got.append(spool.read(entry))
    spool.remove(entry)
print(json.dumps({"got": [g.decode() for g in got if g is not None], "drops": len(drops),
                  "unread": sum(1 for g in got if g is None)}))
"""


def test_two_agents_claiming_at_once_neither_lose_nor_duplicate(tmp_path: Path) -> None:
    """Two processes opening one spool of 300 orphaned requests at once (each sending and removing what it
    claimed): each request is claimed by exactly one, and neither reports a drop or an unreadable file."""
    gone, _, _ = make(tmp_path, owner=GONE)
    for index in range(300):
        gone.add("logs", str(index).encode(), 1)
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path)], stdout=subprocess.PIPE)
             for _ in range(2)]
    results = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    claimed = results[0]["got"] + results[1]["got"]
    assert sorted(claimed, key=int) == [str(index) for index in range(300)]
    assert [r["drops"] for r in results] == [0, 0] and [r["unread"] for r in results] == [0, 0]
