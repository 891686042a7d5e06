"""The staging tree: what is removed from installed wheels, and which distribution owns each file.

Removed, because nothing imports them at run time and every file costs unpack time and counts against
the 30,000-file limit: the build machine's byte code (``__pycache__``, stray ``.pyc``), ``tests`` and
``test`` folders, ``docs``/``doc``/``examples`` folders that are not Python packages, type stubs
(``.pyi``), C and Cython sources and headers (``.c``, ``.h``, ``.pyx``, ``.pxd``), console scripts
(``bin/``), editor backups (``*~``, which the platform refuses).

Each ``*.dist-info`` keeps what ``importlib.metadata`` reads (``METADATA`` without the long
description, ``entry_points.txt``, ``top_level.txt``) and the licence files the licences ask to ship.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

__all__ = ["PruneStats", "owners", "prune", "strip_debug", "trim_dist_info"]

_ALWAYS_DIRS = {"__pycache__", "tests", "test"}
_DOC_DIRS = {"docs", "doc", "examples"}
_SUFFIXES = (".pyc", ".pyo", ".pyi", ".c", ".h", ".pyx", ".pxd", "~")
_DIST_INFO_KEEP = {"METADATA", "entry_points.txt", "top_level.txt"}
_LICENCE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)


@dataclass
class PruneStats:
    """What pruning removed: file count and bytes, by reason."""

    files: int = 0
    size: int = 0
    reasons: Dict[str, int] = field(default_factory=dict)

    def add(self, path: Path, reason: str) -> None:
        if path.is_dir():
            for inner in path.rglob("*"):
                if inner.is_file():
                    self._count(inner.stat().st_size, reason)
        else:
            self._count(path.stat().st_size, reason)

    def _count(self, size: int, reason: str) -> None:
        self.files += 1
        self.size += size
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _remove(path: Path, reason: str, stats: PruneStats) -> None:
    stats.add(path, reason)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def prune(root: Path, stats: PruneStats, *, drop: Sequence[str] = ()) -> None:
    """Remove from ``root`` everything the sandbox never uses (see the module docstring)."""
    for relative in drop:
        target = root / relative
        if target.exists():
            _remove(target, "build tools", stats)
    for folder, dirs, files in os.walk(root, topdown=True):
        here = Path(folder)
        for name in sorted(dirs):
            path = here / name
            if name.endswith(".dist-info"):
                continue
            if name in _ALWAYS_DIRS or (name in _DOC_DIRS and not (path / "__init__.py").exists()):
                _remove(path, f"{name}/", stats)
                dirs.remove(name)
            elif path == root / "bin":
                _remove(path, "scripts", stats)
                dirs.remove(name)
        for name in files:
            if name.endswith(_SUFFIXES) and not here.name.endswith(".dist-info"):
                _remove(here / name, "*" + os.path.splitext(name)[1] if "." in name else name, stats)


def trim_dist_info(root: Path, stats: PruneStats) -> None:
    """Keep only what importlib.metadata and the licences need in every ``*.dist-info`` below ``root``."""
    for info in sorted(root.glob("*.dist-info")):
        for path in sorted(info.iterdir()):
            if path.name == "METADATA":
                _strip_description(path)
            elif path.name in _DIST_INFO_KEEP or _LICENCE.match(path.name) or path.name == "licenses":
                continue
            else:
                _remove(path, "dist-info", stats)


def _strip_description(path: Path) -> None:
    # The long description (the body after the headers, or a Description header) is the package's
    # README: often the largest file of the dist-info, and nothing at run time reads it.
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    headers = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0].splitlines()
    kept: List[str] = []
    skipping = False
    for line in headers:
        if line[:1] in (" ", "\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith("description:")
        if not skipping:
            kept.append(line)
    path.write_text("\n".join(kept) + "\n", encoding="utf-8", errors="surrogateescape")


def owners(root: Path) -> Dict[str, str]:
    """Map each installed file (path relative to ``root``, with ``/``) to ``name version`` of its owner.

    Read from every ``RECORD`` before :func:`trim_dist_info` removes them.
    """
    found: Dict[str, str] = {}
    for record in sorted(root.glob("*.dist-info/RECORD")):
        owner = _dist_label(record.parent.name)
        with record.open(newline="", encoding="utf-8") as handle:
            for row in csv.reader(handle):
                if row and not row[0].startswith(".."):
                    found[row[0]] = owner
    return found


def _dist_label(dist_info: str) -> str:
    name, _, version = dist_info[: -len(".dist-info")].partition("-")
    return f"{name} {version}"


def strip_debug(root: Path, tool: str) -> Tuple[int, int, List[str]]:
    """Remove debug sections from every shared library below ``root`` with binutils' ``strip``.

    Many manylinux wheels ship their extension modules with DWARF debug info (aiohttp's HTTP parser is
    2.7 MB, 0.5 MB without it). Nothing reads it at run time; ``--strip-debug`` keeps the symbol table,
    so native backtraces still name functions. Returns (files stripped, bytes saved, failures).
    """
    stripped, saved, failures = 0, 0, []
    for path in sorted(root.rglob("*.so*")):
        if not path.is_file() or path.is_symlink():
            continue
        before = path.stat().st_size
        temporary = path.with_name(path.name + ".stripped")
        done = subprocess.run([tool, "--strip-debug", "-o", str(temporary), str(path)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0 or not temporary.is_file():
            failures.append(f"{path.relative_to(root).as_posix()}: {done.stderr.strip()[:200]}")
            if temporary.exists():
                temporary.unlink()
            continue
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
        stripped += 1
        saved += before - path.stat().st_size
    return stripped, saved, failures
