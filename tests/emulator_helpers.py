"""Builders for the emulator's tests: hand-written extensions in a temp dir, zips of them, and records."""

from __future__ import annotations

import json
import shutil
import stat
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from tests.conftest import free_extension_ports

HERE = Path(__file__).resolve().parent
RECORDER = HERE / "emulator_recorder.py"

LAUNCHER = """#!/bin/sh
# A third-party extension's launcher: plain POSIX sh, files found relative to this script.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
exec {python} "$here/recorder.py" "$here/$(basename -- "$0").json"
"""


def add_extension(root: Path, name: str = "extensionTest.sh", port: Optional[int] = None, **behaviour: Any) -> Path:
    """Add one recorder extension called ``name`` under ``root/extension``; return ``root``.

    Without ``port`` it listens on a free port of 8081-8090 that no other extension under ``root`` uses
    (other software may hold 8081: a test never assumes it is free).
    """
    folder = root / "extension"
    folder.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = extension_port(root)
    shutil.copy(RECORDER, folder / "recorder.py")
    script = folder / name
    script.write_text(LAUNCHER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    config = {"name": name, "port": port, "record": str(root / "record.jsonl"), **behaviour}
    (folder / f"{name}.json").write_text(json.dumps(config))
    return root


def extension_port(root: Path) -> int:
    """The port ``add_extension`` gave the first extension under ``root``, else a free one for the next."""
    used = [json.loads(p.read_text())["port"] for p in sorted((root / "extension").glob("*.sh.json"))]
    free = [port for port in free_extension_ports(len(used) + 1) if port not in used]
    return free[0]


def extension_ports(root: Path) -> Dict[str, int]:
    """Each recorder extension's name under ``root`` and the port it listens on."""
    configs = [json.loads(p.read_text()) for p in sorted((root / "extension").glob("*.sh.json"))]
    return {config["name"]: int(config["port"]) for config in configs}


def records(root: Path, kind: str = "", extension: str = "") -> List[Dict[str, Any]]:
    """Every line the recorder(s) under ``root`` wrote, optionally of one kind and one extension."""
    path = root / "record.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines
            if (not kind or r["kind"] == kind) and (not extension or r["extension"] == extension)]


def telemetry_events(root: Path) -> List[Dict[str, Any]]:
    """All telemetry events the recorder received, in arrival order."""
    return [event for batch in records(root, "telemetry") for event in batch["events"]]


def zip_dir(root: Path, dest: Path) -> Path:
    """Zip ``root`` the way ``zip -r`` would, keeping Unix file modes."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.name == "record.jsonl":
                continue
            info = zipfile.ZipInfo.from_file(path, str(path.relative_to(root)))
            if path.is_dir():
                archive.writestr(info, b"")
            else:
                archive.writestr(info, path.read_bytes())
    return dest


def function_file(root: Path, body: str, name: str = "func.py") -> str:
    """Write a handler module and return its ``FILE.py:handler`` spec."""
    path = root / name
    path.write_text(body)
    return f"{path}:handler"


