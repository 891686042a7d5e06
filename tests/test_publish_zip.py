"""``fgext publish`` on a real ``fgext package`` zip, with the commands of docs/packaging.md "Publish it".

The zip is built by the real packager in an environment where the publish extra is installed, so this
also shows that the extra stays out of the agent's zip.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from fgext.packager._runtimes import RUNTIMES, find_interpreter
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow]

PIP_CACHE = os.environ.get("FGEXT_TEST_PIP_CACHE", "/tmp/fgext-test-pip-cache")
DOCS = ROOT / "docs" / "packaging.md"
CREDENTIALS = {"HUAWEICLOUD_SDK_AK": "AKDOCSTEST0000000001", "HUAWEICLOUD_SDK_SK": "SKdocsTestSecret000000000000001"}


def fgext(*args: str, cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fgext", *args], capture_output=True, text=True, cwd=str(cwd),
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=900, check=False)


def clean_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_")}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """`fgext package -o fgext-py39.zip`, as the README says, with the publish extra importable here."""
    pytest.importorskip("huaweicloudsdkfunctiongraph", reason="the publish extra is not installed")
    if find_interpreter(RUNTIMES["Python3.9"]) is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    folder = tmp_path_factory.mktemp("publish")
    done = fgext("package", "-o", "fgext-py39.zip", "--quiet", cwd=folder,
                 env={**clean_env(), "PIP_CACHE_DIR": PIP_CACHE})
    assert done.returncode == 0, done.stderr
    yield folder, done.stdout


def docs_commands() -> List[str]:
    """The command lines of the first sh block of the "Publish it" section, comments removed."""
    text = DOCS.read_text()
    section = text.split("## Publish it", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "docs/packaging.md: no sh block in 'Publish it'"
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


class Lines:
    """The lines a process prints, read by a thread (a pipe's buffer hides lines from select)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: [self._queue.put(line.rstrip("\n")) for line in stream], daemon=True).start()

    def take(self, count: int, timeout: float = 30.0) -> List[str]:
        """``count`` lines, waiting at most ``timeout`` seconds in all."""
        lines: List[str] = []
        deadline = time.monotonic() + timeout
        while len(lines) < count and time.monotonic() < deadline:
            try:
                lines.append(self._queue.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        return lines


def test_the_extra_stays_out_of_the_agents_zip(built: tuple[Path, str]) -> None:
    """A zip built where the SDK is installed holds no huaweicloudsdk* module or distribution."""
    folder, _ = built
    with zipfile.ZipFile(folder / "fgext-py39.zip") as archive:
        names = archive.namelist()
    assert "extension/fgext-lib/fgext/__init__.py" in names
    assert not [n for n in names if any(part.startswith("huaweicloudsdk") for part in n.split("/"))]


def test_package_report_points_to_fgext_publish(built: tuple[Path, str]) -> None:
    """The report's "Add it to a function" checklist starts with the `fgext publish` command for the zip."""
    _, report = built
    checklist = report.split("Add it to a function:", 1)[1]
    assert checklist.splitlines()[1].strip() == \
        "fgext publish fgext-py39.zip --function <function URN> --region <region>"
    assert "pip install 'fgext[publish]'" in checklist


def test_docs_publish_commands_run_as_documented(built: tuple[Path, str]) -> None:
    """Every command of docs/packaging.md "Publish it" runs: the dry run, the stand-in, the real run."""
    folder, _ = built
    commands = docs_commands()
    assert commands[0] == "fgext publish fgext-py39.zip --function <urn> --dry-run"
    assert commands[1] == "python -m tests.fg_api"
    server = subprocess.Popen([sys.executable, "-m", "tests.fg_api"], cwd=str(ROOT), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**clean_env(), "PYTHONPATH": str(ROOT)})
    try:
        output = Lines(server)
        head = output.take(4)
        values = dict(line.split(" ", 1) for line in head[:3])
        assert set(values) == {"endpoint", "project_id", "function"}, head
        earlier, other = re.findall(r"[0-9a-f-]{36}", head[3])[::-1]
        fill = {"<urn>": values["function"], "<endpoint>": values["endpoint"], "<project_id>": values["project_id"]}
        outputs = []
        for command in commands[2:] + commands[:1]:
            for placeholder, value in fill.items():
                command = command.replace(placeholder, value)
            assert command.startswith("fgext publish "), command
            done = fgext(*command.split()[1:], cwd=folder, env={**clean_env(), **CREDENTIALS})
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        real, dry = outputs
        created = re.search(r"Created dependency fgext-py39 version 2: id ([0-9a-f-]{36}), ", real)
        assert created, real
        assert f"replacing {earlier}" in real and "runtime Python3.9" in real
        served = output.take(4)
        assert [line.split()[0:1] + line.split()[2:4] for line in served] == [
            ["POST", "->", "200"], ["GET", "->", "200"], ["PUT", "->", "200"], ["GET", "->", "200"]]
        put = json.loads(served[2].split(" -> 200 ", 1)[1])
        assert put["depend_version_list"] == [other, created.group(1)]
        assert "Dry run: no request is sent." in dry and "fgext-py39.zip, base64" in dry
        for secret in CREDENTIALS.values():
            assert secret not in real + dry
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()
