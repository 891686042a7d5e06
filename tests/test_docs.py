"""Docs that run: every code block of README.md, docs/*.md and examples/*.md is executed as written.

A block is fenced with its language: ``sh`` blocks run in bash (``-euo pipefail``) with this venv's
``bin`` first on ``PATH``, ``python`` blocks run with this interpreter (a block defining ``test_``
functions runs under pytest), ``json`` and ``toml`` blocks are parsed, ``text`` blocks are sample
output or diagrams and are not code. HTML comments right before a block steer it:

- ``<!-- not-run: REASON -->``: not executed (the reason shows in pytest's skip list);
- ``<!-- file: NAME -->``: the block is also written to NAME, for the blocks after it;
- ``<!-- run-in: checkout -->``: a shell block runs in the checkout instead of a fresh directory.

The blocks of one page share one working directory and run in the page's order, so a recipe can use
what an earlier one built. A shell block that mentions ``$COLLECTOR`` is given an OTLP/HTTP receiver
(oteltap) there; blocks that build or emulate zips (or use dist/) are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*.md"))]
LANGUAGES = {"sh", "python", "json", "toml", "text"}
MARKER = re.compile(r"^\s*<!--\s*(not-run|file|run-in)\s*:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
SLOW = re.compile(r"\bfgext (package|emulate)\b|bench/|dist/")
TIMEOUT = 900


@dataclass
class Block:
    page: Path
    line: int
    language: str
    body: str
    markers: Dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> List[Block]:
    """The fenced blocks of a page, with the markers on the lines right above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: List[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.group(1), opening.group(2)
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[index + 1:end])
        markers: Dict[str, str] = {}
        above = index - 1
        while above >= 0 and MARKER.match(lines[above]):
            kind, value = MARKER.match(lines[above]).groups()  # type: ignore[union-attr]
            markers[kind] = value
            above -= 1
        found.append(Block(page, index + 1, language, body + "\n", markers))
        index = end + 1
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]
RUNNABLE = [block for block in ALL_BLOCKS if block.language != "text"]


def test_every_block_says_what_it_is() -> None:
    """Every block names a language the doc test knows, and every not-run block gives its reason."""
    unknown = [f"{b.id} ```{b.language}" for b in ALL_BLOCKS if b.language not in LANGUAGES]
    assert not unknown, f"blocks without a known language (use text for sample output): {unknown}"
    unexplained = [b.id for b in ALL_BLOCKS if "not-run" in b.markers and len(b.markers["not-run"]) < 10]
    assert not unexplained, unexplained
    assert len(RUNNABLE) > 20  # the parser found the pages' blocks


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> Dict[Path, Path]:
    """One working directory per page, shared by its blocks in order, with the checkout's examples/."""
    dirs = {page: tmp_path_factory.mktemp(page.stem) for page in PAGES}
    for workdir in dirs.values():
        # Recipes name the repository's examples (examples/sqlite_sink.py) as a checkout has them.
        (workdir / "examples").symlink_to(ROOT / "examples")
    return dirs


def python39_dir() -> Optional[str]:
    """The folder of a real python3.9 (not a pyenv shim), for recipes that name python3.9."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(root.glob("3.9.*/bin/python3.9")):
        return str(candidate.parent)
    return None


def environment(extra: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FGEXT_", "OTEL_", "PYTHONPATH"))}
    path = [str(Path(sys.executable).parent)]
    found39 = python39_dir()
    if found39:
        path.append(found39)
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    env.update(extra)
    return env


def parse_json_values(text: str) -> List[object]:
    """One JSON value, or several one after another (JSON Lines as the pages show exported records)."""
    decoder = json.JSONDecoder()
    values, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return values
        value, position = decoder.raw_decode(text, position)
        values.append(value)


def write_files(block: Block, workdir: Path) -> None:
    """Write every ``file:`` block of the page up to and including this one."""
    for earlier in blocks_of(block.page):
        if earlier.line > block.line:
            break
        name = earlier.markers.get("file")
        if name:
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(earlier.body)


def run(args: List[str], cwd: Path, env: Dict[str, str]) -> None:
    done = subprocess.run(args, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n" \
                                 f"{done.stderr[-4000:]}"


@pytest.fixture
def collector(tap_factory: Callable[[int], object]) -> Iterator[Callable[[], str]]:
    """An oteltap receiver started on demand; its OTLP/HTTP endpoint."""
    from tests.test_otlp_plugin import free_port

    def start() -> str:
        tap = tap_factory(free_port())
        tap.start()  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{tap.port}"  # type: ignore[attr-defined]

    yield start


def params() -> List[object]:
    out = []
    for block in RUNNABLE:
        marks = [pytest.mark.slow] if SLOW.search(block.body) else []
        out.append(pytest.param(block, id=block.id, marks=marks))
    return out


@pytest.mark.parametrize("block", params())
def test_block_runs_as_written(block: Block, workdirs: Dict[Path, Path], request: pytest.FixtureRequest) -> None:
    """The block does what the page says: it runs (sh, python) or parses (json, toml) without an error."""
    if "not-run" in block.markers:
        pytest.skip(f"not run: {block.markers['not-run']}")
    workdir = workdirs[block.page]
    write_files(block, workdir)
    if SLOW.search(block.body):  # it runs extensions on 8081-8090
        request.getfixturevalue("port_range_lock")
    if block.language == "json":
        parse_json_values(block.body)
    elif block.language == "toml":
        if sys.version_info < (3, 11):
            pytest.skip("tomllib needs Python 3.11")
        import tomllib

        tomllib.loads(block.body)
    elif block.language == "python":
        name = block.markers.get("file") or f"doc_block_{block.line}.py"
        if re.search(r"^(async )?def test_", block.body, re.MULTILINE):
            name = name if name.startswith("test_") else f"test_{name}"
            (workdir / name).write_text(block.body)
            run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(workdir),
                 "-c", os.devnull, name], workdir, environment({"PYTHONPATH": str(workdir)}))
        else:
            (workdir / name).write_text(block.body)
            # As an import, not as __main__: `if __name__ == "__main__": ext.run()` would start an agent.
            run([sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='doc')", name],
                workdir, environment({"PYTHONPATH": str(workdir)}))
    elif block.language == "sh":
        extra: Dict[str, str] = {}
        if "$COLLECTOR" in block.body:
            extra["COLLECTOR"] = request.getfixturevalue("collector")()
        cwd = ROOT if block.markers.get("run-in") == "checkout" else workdir
        run(["bash", "-euo", "pipefail", "-c", block.body], cwd, environment(extra))
